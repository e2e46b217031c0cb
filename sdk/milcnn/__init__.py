"""milcnn: classify and segment high-content-screening images with multiple-instance learning CNNs.

>>> from milcnn import Classifier
>>> clf = Classifier.from_hub("yeast-loc")
>>> pred = clf.predict("image.tif")
"""

from __future__ import annotations

import logging

logging.getLogger("milcnn").addHandler(logging.NullHandler())  # silent unless the application says otherwise

__version__ = "0.2.0"
__all__ = ["Classifier", "Prediction", "__version__"]


def __getattr__(name: str):
    # lazy, so `import milcnn` stays fast and loads onnxruntime only when a model is used
    if name in ("Classifier", "Prediction"):
        from milcnn import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'milcnn' has no attribute {name!r}")
