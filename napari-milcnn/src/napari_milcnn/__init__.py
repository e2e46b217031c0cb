"""napari plugin for milcnn: a widget that runs a zoo model (or a model folder) on an image layer and adds
its mask as a Labels layer named by class, and a reader for ``milzoo predict`` output folders."""

__version__ = "0.1.0"

from napari_milcnn._layers import prediction_layers

__all__ = ["prediction_layers", "__version__"]
