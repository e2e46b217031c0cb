"""What a prediction becomes in napari: layer data tuples (no Qt, no viewer), shared by the widget and the
reader."""

from __future__ import annotations

import numpy as np

BACKGROUND = "background"


def class_colours(classes) -> dict:
    """Label -> RGBA in 0..1: milcnn's overlay palette (``milcnn.outputs.overlay.PALETTE``), background transparent."""
    from milcnn.outputs.overlay import PALETTE

    colours = {0: (0.0, 0.0, 0.0, 0.0), None: (0.0, 0.0, 0.0, 0.0)}
    for k, _ in enumerate(classes):
        r, g, b = (int(v) for v in PALETTE[k % len(PALETTE)])
        colours[k + 1] = (r / 255, g / 255, b / 255, 1.0)
    return colours


def labels_layer(mask: np.ndarray, classes, *, name: str, probabilities: dict | None = None,
                 label: str | None = None, model: str | None = None, qc: str | None = None) -> tuple:
    """A Labels layer data tuple: the mask (0 background, k + 1 class k), coloured as milcnn's overlays,
    with a ``features`` table naming each label's class and the image's probabilities in ``metadata``."""
    from napari.utils.colormaps import DirectLabelColormap

    classes = list(classes)
    features = {"index": np.arange(len(classes) + 1), "class": [BACKGROUND, *classes]}
    if probabilities is not None:
        features["probability"] = [float("nan"), *(float(probabilities[c]) for c in classes)]
    metadata = {"milcnn": {"classes": classes, "label": label, "qc": qc, "probabilities": probabilities,
                           "model": model}}
    return (mask, {"name": name, "features": features, "metadata": metadata,
                   "colormap": DirectLabelColormap(color_dict=class_colours(classes))}, "labels")


def prediction_layers(pred, classes, *, name: str, model: str | None = None) -> list[tuple]:
    """The layers of one ``milcnn`` Prediction: its mask as a Labels layer."""
    return [labels_layer(pred.mask, classes, name=f"{name} milcnn mask", probabilities=pred.probabilities,
                         label=pred.label, model=model, qc=pred.qc)]
