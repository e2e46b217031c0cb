"""milcnn: classify and segment high-content-screening images with multiple-instance learning CNNs.

>>> from milcnn import Classifier
>>> clf = Classifier.from_hub("yeast-loc")
>>> pred = clf.predict("image.tif")

The layers, lowest first (each imports only from those below it; ``tests/test_architecture.py`` checks):
``constants``, ``errors``, ``logs``; ``process`` (array steps); ``io`` (reading inputs, writing files);
``runtime`` (onnxruntime, OpenVINO); ``model`` (config.json, checksums, zoo, Hub); ``predict`` (the
``Classifier`` facade and what it delegates to); ``outputs`` (results folder, overlays, plate tables);
``batch`` (``milzoo predict``'s run, its pipeline, Dask); ``cli``.
"""

from __future__ import annotations

import logging

from milcnn.errors import *  # noqa: F401,F403  every error where users catch it: ``from milcnn import ImageReadError``
from milcnn.errors import __all__ as _errors

logging.getLogger("milcnn").addHandler(logging.NullHandler())  # silent unless the application says otherwise

__version__ = "0.2.0"
__all__ = ["Classifier", "Prediction", "PredictOptions", "adapt", "__version__", *_errors]

_LAZY = {"Classifier": "milcnn.predict.classifier", "Prediction": "milcnn.predict.prediction",
         "PredictOptions": "milcnn.predict.options", "adapt": "milcnn.predict.adapt"}


def __getattr__(name: str):
    # lazy, so `import milcnn` stays fast and loads onnxruntime only when a model is used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'milcnn' has no attribute {name!r}")
