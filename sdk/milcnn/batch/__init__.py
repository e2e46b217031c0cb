"""Many images: ``milzoo predict``'s batch run, its thread pipeline and the Dask runner."""
