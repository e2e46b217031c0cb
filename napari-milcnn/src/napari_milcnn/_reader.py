"""Read a ``milzoo predict`` output folder: each image's mask as a Labels layer (classes and probabilities
from ``predictions.csv`` and ``run.json``) and its overlay PNG as an RGB image layer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from napari_milcnn._layers import labels_layer


def _is_results_folder(path) -> bool:
    path = Path(path) if isinstance(path, (str, Path)) else None
    return path is not None and path.is_dir() and (path / "predictions.csv").is_file() and (path / "masks").is_dir()


def get_reader(path):
    """napari's reader hook: a function that reads ``path`` when it is a milzoo output folder, else None."""
    if isinstance(path, list):
        path = path[0] if len(path) == 1 else None
    return read_results if _is_results_folder(path) else None


def read_results(path) -> list[tuple]:
    """Layer data tuples for every image in the folder: overlay (RGB) first, then its mask."""
    import tifffile
    from PIL import Image

    folder = Path(path[0] if isinstance(path, list) else path)
    classes = _classes(folder)
    layers = []
    with open(folder / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        stem = Path(row["image"]).stem
        mask_path = folder / "masks" / f"{stem}.tif"
        if not mask_path.is_file():
            continue
        overlay = folder / "overlays" / f"{stem}.png"
        if overlay.is_file():
            layers.append((np.asarray(Image.open(overlay).convert("RGB")),
                           {"name": f"{stem} overlay", "rgb": True, "visible": False}, "image"))
        probabilities = {c: float(row[f"p_{c}"]) for c in classes if f"p_{c}" in row}
        layers.append(labels_layer(tifffile.imread(mask_path), classes, name=f"{stem} milcnn mask",
                                   probabilities=probabilities, label=row.get("label"), model=_model(folder),
                                   qc=row.get("qc")))
    return layers


def _classes(folder: Path) -> list[str]:
    with open(folder / "predictions.csv", newline="") as fh:
        header = next(csv.reader(fh))
    return [h[2:] for h in header if h.startswith("p_")]


def _model(folder: Path) -> str | None:
    try:
        record = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    model = record.get("model", {})
    return f"{model.get('name')} {model.get('version')}".strip() or None
