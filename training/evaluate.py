"""Evaluate a checkpoint on a manifest: classification, and segmentation where masks exist.

Usage::

    python -m training.evaluate runs/yeast-loc/best.pt --data data/yeast-test/manifest.csv --out runs/yeast-loc/eval

Writes to ``--out``:

- ``metrics.json``: image accuracy, macro F1, per-class precision/recall/F1, mean and
  per-class segmentation IoU of the model and of the Otsu baseline;
- with ``--calibration MODEL_FOLDER``: the probabilities calibrated as the SDK calibrates them, and
  ``calibration`` in ``metrics.json`` (ECE, label accuracy at ``--threshold``);
- ``per_class.csv``, ``confusion.csv`` (rows true, columns predicted) and ``confusion.png``.

The scores come from ``training.scoring.score_manifest`` (the one evaluation loop; its docstring
defines segmentation IoU and the Otsu baseline); treatment-level figures, where the manifest has
compound and concentration columns, from ``training.treatments``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from milcnn import constants
from milcnn.process.calibration import Calibration
from milcnn.io.images import write_atomic
from .metrics import expected_calibration_error
from .data.manifest import read_manifest
from .model import MILCNN
from .scoring import score_manifest, torch_predictor
from .treatments import read_treatments, treatment_metrics
from .options import prog

__all__ = ["evaluate"]


def evaluate(model: MILCNN, manifest, out, *, device=torch.device("cpu"),
             threshold: float = constants.DEFAULT_THRESHOLD, calibration: Calibration | None = None) -> dict:
    """Evaluate ``model`` on every image of ``manifest``; write reports to ``out``; return the metrics.

    ``calibration``: the exported model's (``config.json``), applied to every probability first, as the SDK
    applies it; the metrics then also hold ``calibration`` (ECE of the largest probability, and the label
    accuracy at ``threshold`` with ``unassigned`` counted wrong; qc is the SDK's and is not applied here)."""
    cfg = model.config
    predict = torch_predictor(model, device=device, threshold=threshold)
    if calibration is not None:
        base = predict

        def predict(image):
            p, mask = base(image)
            return calibration.apply(p), mask

    metrics, probs = score_manifest(predict, manifest, channels=cfg.channels, classes=cfg.classes,
                                    multi_label=cfg.multi_label, threshold=threshold)
    if calibration is not None:
        samples, _, _ = read_manifest(manifest, channels=cfg.channels, classes=cfg.classes)
        top = probs.argmax(axis=1)
        right = np.array([cfg.classes[k] in s.labels for k, s in zip(top, samples)])
        labelled = probs.max(axis=1) >= threshold
        metrics["calibration"] = {"method": calibration.method,
                                  "ece": expected_calibration_error(probs.max(axis=1), right),
                                  "label_accuracy": float(np.mean(right & labelled)),
                                  "unassigned": float(np.mean(~labelled))}
    confusion = np.array(metrics.pop("confusion"))
    treatments = read_treatments(manifest)
    if treatments is not None and not cfg.multi_label:
        samples, _, _ = read_manifest(manifest, channels=cfg.channels, classes=cfg.classes)
        t = treatment_metrics(probs, treatments, ["|".join(s.labels) for s in samples], cfg.classes)
        metrics["treatments"] = {k: t[k] for k in ("n_treatments", "treatment_accuracy", "treatment_confusion")}
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
    from .checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(prog=prog("evaluate"), description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="manifest CSV")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threshold", type=float, default=constants.DEFAULT_THRESHOLD,
                        help=f"class-map threshold for segmentation, and the label's ({constants.DEFAULT_THRESHOLD})")
    parser.add_argument("--calibration", type=Path, metavar="MODEL_FOLDER",
                        help="apply the calibration of this exported model folder (its config.json) to every "
                             "probability, and report ECE and label accuracy")
    args = parser.parse_args(argv)
    try:
        model, _ = load_checkpoint(args.checkpoint)
        calibration = None
        if args.calibration is not None:
            from milcnn.model.config import ModelInfo

            calibration = ModelInfo.from_file(args.calibration / constants.CONFIG_FILE).calibration
            if calibration is None:
                raise ValueError(f"{args.calibration / constants.CONFIG_FILE}: no calibration block")
        metrics = evaluate(model, args.data, args.out, threshold=args.threshold, calibration=calibration)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seg = metrics.get("segmentation")
    line = f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}"
    if seg:
        line += f", mean IoU {seg['mean_iou']:.3f} (Otsu baseline {seg['otsu_mean_iou']:.3f})"
    if "calibration" in metrics:
        c = metrics["calibration"]
        line += f"; calibrated ({c['method']}): ECE {c['ece']:.3f}, label accuracy {c['label_accuracy']:.4f}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
