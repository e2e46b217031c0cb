"""Reading what users give: image files and their metadata, lazily read TIFFs, one file per channel,
OME-Zarr plates, where an image sits on a plate; and writing files whole or not at all."""
