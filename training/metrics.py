"""Image-level and segmentation metrics, in numpy."""

from __future__ import annotations

import numpy as np

from milcnn import constants

__all__ = ["predicted_labels", "image_accuracy", "confusion_matrix", "precision_recall_f1", "otsu_threshold", "IoU",
           "expected_calibration_error"]


def predicted_labels(probs: np.ndarray, *, multi_label: bool, threshold: float = constants.LABEL_THRESHOLD) -> np.ndarray:
    """(N, C) 0/1 predictions: the arg-max class, or every class >= threshold for multi-label."""
    probs = np.asarray(probs)
    if multi_label:
        return (probs >= threshold).astype(np.int8)
    out = np.zeros(probs.shape, dtype=np.int8)
    out[np.arange(len(probs)), probs.argmax(1)] = 1
    return out


def image_accuracy(probs: np.ndarray, targets: np.ndarray, *, multi_label: bool) -> float:
    """Fraction of images whose predicted label set equals the true one."""
    pred = predicted_labels(probs, multi_label=multi_label)
    return float(np.mean(np.all(pred == (np.asarray(targets) > 0.5), axis=1)))


def confusion_matrix(true_idx: np.ndarray, pred_idx: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts, rows true class, columns predicted class."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(true_idx), np.asarray(pred_idx)), 1)
    return m


def precision_recall_f1(pred: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from (N, C) 0/1 arrays; 0 where undefined."""
    pred, truth = np.asarray(pred) > 0, np.asarray(targets) > 0.5
    tp = (pred & truth).sum(0).astype(float)
    fp = (pred & ~truth).sum(0).astype(float)
    fn = (~pred & truth).sum(0).astype(float)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": truth.sum(0)}


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance) of an array of values."""
    values = np.asarray(values, dtype=np.float64).ravel()
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


class IoU:
    """Per-class intersection over union, accumulated over images (pooled pixels)."""

    def __init__(self, n_classes: int):
        self.inter = np.zeros(n_classes, dtype=np.int64)
        self.union = np.zeros(n_classes, dtype=np.int64)

    def add(self, k: int, pred: np.ndarray, truth: np.ndarray) -> None:
        self.inter[k] += int(np.count_nonzero(pred & truth))
        self.union[k] += int(np.count_nonzero(pred | truth))

    def per_class(self) -> np.ndarray:
        return np.divide(self.inter, self.union, out=np.full(len(self.inter), np.nan), where=self.union > 0)

    def mean(self) -> float:
        v = self.per_class()
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def expected_calibration_error(probabilities: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """ECE of the largest probability (``bins`` equal-width bins; Guo et al. 2017): the mean gap between
    confidence and accuracy, weighted by the share of images in each bin."""
    conf = np.asarray(probabilities, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    index = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for i in range(bins):
        sel = index == i
        if sel.any():
            total += sel.mean() * abs(conf[sel].mean() - right[sel].mean())
    return float(total)
