"""Evaluate a checkpoint on a manifest: classification, and segmentation where masks exist.

Usage::

    python -m training.evaluate runs/yeast-loc/best.pt --data data/yeast-test/manifest.csv --out runs/yeast-loc/eval

Writes to ``--out``:

- ``metrics.json``: image accuracy, macro F1, per-class precision/recall/F1, mean and
  per-class segmentation IoU of the model and of the Otsu baseline;
- ``per_class.csv``, ``confusion.csv`` (rows true, columns predicted) and ``confusion.png``.

Segmentation IoU, per class ``k``, pooled over the images labelled ``k``: the pixels the
model assigns to ``k`` (``milcnn.postprocess.mask_from_maps``, the label mask of the upsampled class maps: ``k``'s
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
from typing import Callable

import numpy as np
import torch
from scipy import ndimage

from milcnn import constants
from milcnn.io import write_atomic
from milcnn.postprocess import mask_from_maps
from training.data.dataset import ImageSet, label_vector, prepared_image
from training.data.manifest import load_image, load_mask, read_manifest
from training.metrics import IoU, confusion_matrix, image_accuracy, otsu_threshold, precision_recall_f1, predicted_labels
from training.model import MILCNN
from training.treatments import read_treatments, treatment_metrics

__all__ = ["predict_set", "evaluate", "score_manifest", "torch_predictor", "sdk_predictor", "Predictor",
           "MARKER_CHANNELS"]

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


#: ``predict(image (C, H, W) as read) -> (probabilities (K,), label mask (H, W))``
Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def torch_predictor(model: MILCNN, *, device=torch.device("cpu"), threshold: float = constants.DEFAULT_THRESHOLD) -> Predictor:
    """A PyTorch model as a ``Predictor``: the training pipeline's normalisation, whole image."""
    cfg = model.config
    model.eval()

    @torch.no_grad()
    def predict(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = prepared_image(image, cfg.normalization).astype(np.float32)
        out = model(torch.from_numpy(x)[None].to(device))
        maps = out.class_maps[0].cpu().numpy()
        return out.probabilities[0].cpu().numpy(), mask_from_maps(maps, cfg.output_stride, image.shape[1:], threshold)

    return predict


def sdk_predictor(clf, *, threshold: float = constants.DEFAULT_THRESHOLD, training_scale: bool = True) -> Predictor:
    """An SDK ``Classifier`` as a ``Predictor``. With ``training_scale`` the images are taken to be at the
    model's training scale (a simulated test set), so a model's default input scale
    (``input_cell_diameter``) is not applied; without it they go in as users' images do."""
    diameter = clf.info.cell_diameter if training_scale else None  # the model's own: zoom 1

    def predict(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred = clf.predict(image, threshold=threshold, cell_diameter=diameter)
        return np.array([pred.probabilities[c] for c in clf.classes]), pred.mask

    return predict


def score_manifest(predict: Predictor, manifest, *, channels: tuple[str, ...], classes: tuple[str, ...],
                   multi_label: bool = False, threshold: float = constants.DEFAULT_THRESHOLD, baseline: bool = True) -> tuple[dict, np.ndarray]:
    """The one evaluation of a model on a manifest (``evaluate``, ``training.quantize``,
    ``training.treatments`` and the benchmarks use it).

    Args:
        predict: the model, as a ``Predictor`` (``torch_predictor``, ``sdk_predictor``).
        manifest: the CSV; channels and classes: the model's.
        baseline: also score the Otsu baseline's segmentation.

    Returns:
        (metrics, probabilities (N, K)). Metrics: ``n_images``, ``accuracy``, ``macro_f1``,
        ``per_class``, ``seconds_per_image``, ``confusion``; ``segmentation`` where masks exist
        (``mean_iou``, ``per_class_iou`` and, with ``baseline``, the Otsu figures); ``treatments``
        where the manifest has compound and concentration columns (single-label models).
    """
    samples, _, _ = read_manifest(manifest, channels=channels, classes=classes)
    n = len(classes)
    marker = next((channels.index(c) for c in MARKER_CHANNELS if c in channels), 0)
    model_iou, otsu_iou = IoU(n), IoU(n)
    probs, n_masks, seconds = [], 0, 0.0
    for sample in samples:
        image = load_image(sample, len(channels))
        t0 = time.perf_counter()
        p, mask = predict(image)
        seconds += time.perf_counter() - t0
        probs.append(p)
        truth = load_mask(sample)
        if truth is None:
            continue
        n_masks += 1
        cells = otsu_cells(image[marker]) if baseline else None
        for label in sample.labels:
            k = classes.index(label)
            showing = truth == k + 1
            model_iou.add(k, mask == k + 1, showing)
            if baseline:
                otsu_iou.add(k, cells, showing)
    probs = np.stack(probs)
    targets = np.stack([label_vector(s.labels, classes) for s in samples])
    pred = predicted_labels(probs, multi_label=multi_label)
    prf = precision_recall_f1(pred, targets)
    metrics = {
        "n_images": len(samples),
        "accuracy": image_accuracy(probs, targets, multi_label=multi_label),
        "macro_f1": float(prf["f1"].mean()),
        "per_class": {
            c: {"precision": float(prf["precision"][i]), "recall": float(prf["recall"][i]), "f1": float(prf["f1"][i]),
                "support": int(prf["support"][i])}
            for i, c in enumerate(classes)
        },
        "seconds_per_image": seconds / len(samples),
        "confusion": confusion_matrix(targets.argmax(1), probs.argmax(1), n).tolist(),
    }
    treatments = read_treatments(manifest)
    if treatments is not None and not multi_label:
        t = treatment_metrics(probs, treatments, ["|".join(s.labels) for s in samples], classes)
        metrics["treatments"] = {k: t[k] for k in ("n_treatments", "treatment_accuracy", "treatment_confusion")}
    if n_masks:
        metrics["segmentation"] = {"n_images": n_masks, "threshold": threshold, "mean_iou": model_iou.mean(),
                                   "per_class_iou": dict(zip(classes, map(_finite, model_iou.per_class())))}
        if baseline:
            metrics["segmentation"] |= {"otsu_mean_iou": otsu_iou.mean(),
                                        "otsu_per_class_iou": dict(zip(classes, map(_finite, otsu_iou.per_class())))}
    return metrics, probs


def evaluate(model: MILCNN, manifest, out, *, device=torch.device("cpu"), threshold: float = constants.DEFAULT_THRESHOLD) -> dict:
    """Evaluate ``model`` on every image of ``manifest``; write reports to ``out``; return the metrics."""
    cfg = model.config
    metrics, _ = score_manifest(torch_predictor(model, device=device, threshold=threshold), manifest,
                                channels=cfg.channels, classes=cfg.classes, multi_label=cfg.multi_label,
                                threshold=threshold)
    confusion = np.array(metrics.pop("confusion"))
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
