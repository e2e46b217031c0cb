"""Read a ``milzoo predict`` output folder: each image's mask as a Labels layer (classes and probabilities
from ``predictions.csv`` and ``run.json``) and its overlay PNG as an RGB image layer. The folder's files
are found by ``milcnn.outputs.layout.RunLayout``, as the run named them (plate outputs included)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from milcnn.outputs.layout import RunLayout
from napari_milcnn._layers import labels_layer


def _is_results_folder(path) -> bool:
    return isinstance(path, (str, Path)) and Path(path).is_dir() and RunLayout(Path(path)).is_results()


def get_reader(path):
    """napari's reader hook: a function that reads ``path`` when it is a milzoo output folder, else None."""
    if isinstance(path, list):
        path = path[0] if len(path) == 1 else None
    return read_results if _is_results_folder(path) else None


def read_results(path) -> list[tuple]:
    """Layer data tuples for every image in the folder: overlay (RGB) first, then its mask."""
    import tifffile
    from PIL import Image

    layout = RunLayout(Path(path[0] if isinstance(path, list) else path))
    classes = _classes(layout)
    layers = []
    with open(layout.predictions, newline="") as fh:
        rows = list(csv.DictReader(fh))
    stems = layout.stems(rows)
    for row in rows:
        stem = stems[row["image"]]
        mask_path = layout.mask(stem)
        if not mask_path.is_file():
            continue
        overlay = layout.overlay(stem)
        if overlay.is_file():
            layers.append((np.asarray(Image.open(overlay).convert("RGB")),
                           {"name": f"{stem} overlay", "rgb": True, "visible": False}, "image"))
        probabilities = {c: float(row[f"p_{c}"]) for c in classes if f"p_{c}" in row}
        layers.append(labels_layer(tifffile.imread(mask_path), classes, name=f"{stem} milcnn mask",
                                   probabilities=probabilities, label=row.get("label"), model=_model(layout),
                                   qc=row.get("qc")))
    return layers


def _classes(layout: RunLayout) -> list[str]:
    with open(layout.predictions, newline="") as fh:
        header = next(csv.reader(fh))
    return [h[2:] for h in header if h.startswith("p_")]


def _model(layout: RunLayout) -> str | None:
    try:
        record = json.loads(layout.run.read_text())
    except (OSError, ValueError):
        return None
    model = record.get("model", {})
    return f"{model.get('name')} {model.get('version')}".strip() or None
