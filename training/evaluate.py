"""Evaluate a checkpoint on a manifest: classification, and segmentation where masks exist.

Usage::

    python -m training.evaluate runs/yeast-loc/best.pt --data data/yeast-test/manifest.csv --out runs/yeast-loc/eval

Writes to ``--out``:

- ``metrics.json``: image accuracy, macro F1, per-class precision/recall/F1, mean and
  per-class segmentation IoU of the model and of the Otsu baseline;
- ``per_class.csv``, ``confusion.csv`` (rows true, columns predicted) and ``confusion.png``.

Segmentation IoU, per class ``k``, pooled over the images labelled ``k``: the pixels the
model assigns to ``k`` (``milcnn.preprocess.mask_from_maps``, the label mask of the upsampled class maps: ``k``'s
map is the largest and >= 0.5) against the pixels of cells showing ``k`` (mask value
``k + 1``). The baseline thresholds the marker channel (``rfp`` if present, else the
first) with Otsu's method after a 1-px Gaussian smoothing: it finds cells, not phenotypes,
so it cannot tell cells showing the pattern from cells that do not.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from milcnn.io import write_atomic
from milcnn.preprocess import mask_from_maps
from training.data.dataset import ImageSet
from training.data.manifest import load_image, load_mask, read_manifest
from training.metrics import IoU, confusion_matrix, image_accuracy, otsu_threshold, precision_recall_f1, predicted_labels
from training.model import MILCNN
from training.treatments import read_treatments, treatment_metrics

__all__ = ["predict_set", "evaluate", "MARKER_CHANNELS"]

MARKER_CHANNELS = ("rfp", "tubulin", "actin")  # channels that outline whole cells, in order of preference


@torch.no_grad()
def predict_set(model: MILCNN, images: ImageSet, *, device=torch.device("cpu")) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bag probabilities (N, C) and class maps (C, h, w) per image, whole images one at a time."""
    model.eval()
    probs, maps = [], []
    for img in images.images:
        out = model(torch.from_numpy(img.astype(np.float32))[None].to(device))
        probs.append(out.probabilities[0].cpu().numpy())
        maps.append(out.class_maps[0].cpu().numpy())
    return np.stack(probs), maps


def otsu_cells(channel: np.ndarray) -> np.ndarray:
    smooth = ndimage.gaussian_filter(channel.astype(np.float32), 1.0)
    return smooth > otsu_threshold(smooth)


def evaluate(model: MILCNN, manifest, out, *, device=torch.device("cpu"), threshold: float = 0.5) -> dict:
    """Evaluate ``model`` on every image of ``manifest``; write reports to ``out``; return the metrics."""
    cfg = model.config
    samples, channels, classes = read_manifest(manifest, channels=cfg.channels, classes=cfg.classes)
    if tuple(channels) != tuple(cfg.channels):
        raise ValueError(f"manifest channels {channels} differ from the model's {cfg.channels}")
    t0 = time.time()
    images = ImageSet(samples, cfg.channels, cfg.classes, cfg.normalization)
    probs, maps = predict_set(model, images, device=device)
    seconds_per_image = (time.time() - t0) / len(samples)
    n = len(cfg.classes)
    pred = predicted_labels(probs, multi_label=cfg.multi_label)
    prf = precision_recall_f1(pred, images.targets)
    confusion = confusion_matrix(images.targets.argmax(1), probs.argmax(1), n)

    marker = next((cfg.channels.index(c) for c in MARKER_CHANNELS if c in cfg.channels), 0)
    model_iou, otsu_iou = IoU(n), IoU(n)
    n_masks = 0
    for sample, class_maps, target in zip(samples, maps, images.targets):
        truth = load_mask(sample)
        if truth is None:
            continue
        n_masks += 1
        mask = mask_from_maps(class_maps, cfg.output_stride, truth.shape, threshold)
        cells = otsu_cells(load_image(sample, len(cfg.channels))[marker])
        for k in np.flatnonzero(target):
            showing = truth == k + 1
            model_iou.add(k, mask == k + 1, showing)
            otsu_iou.add(k, cells, showing)

    metrics = {
        "n_images": len(samples),
        "accuracy": image_accuracy(probs, images.targets, multi_label=cfg.multi_label),
        "macro_f1": float(prf["f1"].mean()),
        "per_class": {
            c: {"precision": float(prf["precision"][i]), "recall": float(prf["recall"][i]), "f1": float(prf["f1"][i]),
                "support": int(prf["support"][i])}
            for i, c in enumerate(cfg.classes)
        },
        "seconds_per_image": seconds_per_image,
    }
    treatments = read_treatments(manifest)
    if treatments is not None and not cfg.multi_label:
        t = treatment_metrics(probs, treatments, ["|".join(s.labels) for s in samples], cfg.classes)
        metrics["treatments"] = {k: t[k] for k in ("n_treatments", "treatment_accuracy", "treatment_confusion")}
    if n_masks:
        metrics["segmentation"] = {
            "n_images": n_masks,
            "threshold": threshold,
            "mean_iou": model_iou.mean(),
            "otsu_mean_iou": otsu_iou.mean(),
            "per_class_iou": dict(zip(cfg.classes, map(_finite, model_iou.per_class()))),
            "otsu_per_class_iou": dict(zip(cfg.classes, map(_finite, otsu_iou.per_class()))),
        }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with write_atomic(out / "metrics.json", "w") as fh:
        json.dump(metrics, fh, indent=2)
    with write_atomic(out / "per_class.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["class", "precision", "recall", "f1", "support", "iou", "otsu_iou"])
        seg = metrics.get("segmentation", {})
        for c, m in metrics["per_class"].items():
            w.writerow([c, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"],
                        _fmt(seg.get("per_class_iou", {}).get(c)), _fmt(seg.get("otsu_per_class_iou", {}).get(c))])
    with write_atomic(out / "confusion.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["true \\ predicted", *cfg.classes])
        for c, row in zip(cfg.classes, confusion):
            w.writerow([c, *row.tolist()])
    plot_confusion(confusion, cfg.classes, out / "confusion.png", title=f"accuracy {metrics['accuracy']:.3f}")
    return metrics


def _finite(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}"


def plot_confusion(confusion: np.ndarray, classes, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.55 * n + 3, 0.55 * n + 2.5), dpi=110)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    with write_atomic(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from training.train import load_checkpoint

    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="manifest CSV")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threshold", type=float, default=0.5, help="class-map threshold for segmentation (0.5)")
    args = parser.parse_args(argv)
    try:
        model, _ = load_checkpoint(args.checkpoint)
        metrics = evaluate(model, args.data, args.out, threshold=args.threshold)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seg = metrics.get("segmentation")
    line = f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}"
    if seg:
        line += f", mean IoU {seg['mean_iou']:.3f} (Otsu baseline {seg['otsu_mean_iou']:.3f})"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
