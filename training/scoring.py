"""Scoring a model on a manifest's images: the one evaluation loop, for PyTorch models and SDK
classifiers alike (``Predictor``), and PyTorch predictions of a whole image set.

Segmentation IoU, per class ``k``, pooled over the images labelled ``k``: the pixels the model
assigns to ``k`` (``milcnn.process.postprocess.mask_from_maps``: ``k``'s upsampled map is the largest and >=
the threshold) against the pixels of cells showing ``k`` (mask value ``k + 1``). The baseline
thresholds the marker channel (``MARKER_CHANNELS``, else the first) with Otsu's method after a 1-px
Gaussian smoothing: it finds cells, not phenotypes, so it cannot tell cells showing the pattern from
cells that do not.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from scipy import ndimage

from milcnn import constants
from milcnn.process.postprocess import mask_from_maps
from .data.dataset import ImageSet, label_vector, prepared_image
from .data.manifest import load_image, load_mask, read_manifest
from .metrics import IoU, confusion_matrix, image_accuracy, otsu_threshold, precision_recall_f1, predicted_labels
from .model import MILCNN

__all__ = ["predict_set", "score_manifest", "torch_predictor", "sdk_predictor", "Predictor", "MARKER_CHANNELS",
           "otsu_cells"]

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
    """The one evaluation of a model on a manifest (``training.evaluate``, ``training.quantize``,
    ``training.treatments`` and the benchmarks use it).

    Args:
        predict: the model, as a ``Predictor`` (``torch_predictor``, ``sdk_predictor``).
        manifest: the CSV; channels and classes: the model's.
        baseline: also score the Otsu baseline's segmentation.

    Returns:
        (metrics, probabilities (N, K)). Metrics: ``n_images``, ``accuracy``, ``macro_f1``,
        ``per_class``, ``seconds_per_image``, ``confusion``; ``segmentation`` where masks exist
        (``mean_iou``, ``per_class_iou`` and, with ``baseline``, the Otsu figures). Treatment-level
        figures come from ``training.treatments`` on the probabilities.
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
    if n_masks:
        metrics["segmentation"] = {"n_images": n_masks, "threshold": threshold, "mean_iou": model_iou.mean(),
                                   "per_class_iou": dict(zip(classes, map(_finite, model_iou.per_class())))}
        if baseline:
            metrics["segmentation"] |= {"otsu_mean_iou": otsu_iou.mean(),
                                        "otsu_per_class_iou": dict(zip(classes, map(_finite, otsu_iou.per_class())))}
    return metrics, probs


def _finite(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)
