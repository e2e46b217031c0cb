"""``Prediction``: one image's result, as every path (Python, ``milzoo predict``, Dask, napari) returns it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from milcnn import constants
from milcnn.process.postprocess import mask_from_maps, upsample_maps
from milcnn.process.quality import QC_OK, Features
from milcnn.process.scale import resize_chw, resize_labels, zoomed_shape

__all__ = ["Prediction"]


class _computed_once:
    """``functools.cached_property`` without its lock: on Python 3.11 that lock is one per
    class, so ``milzoo predict``'s writer threads would compute every image's mask one at a
    time. Two threads asking at once may both compute the value; both get an equal result."""

    def __init__(self, func):
        self.func, self.name, self.__doc__ = func, func.__name__, func.__doc__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)  # found there from now on
        return value


@dataclass
class Prediction:
    """One image's result.

    Attributes:
        label: the top class where its probability reaches ``threshold`` and ``qc`` is ``ok``, else
            ``unassigned`` (``milcnn.process.decision.decide``: the one rule, as ``milzoo predict`` writes it).
        probabilities: class -> image-level probability, calibrated where the model carries a
            calibration (``config.json`` calibration; single-label models: they sum to 1).
        classes: the model's class order (``mask`` value ``k + 1`` is ``classes[k]``).
        maps: (K, h, w) float32 class maps at the model's resolution (1 / ``stride``).
        stride: the model's output stride.
        shape: (H, W) of the input image.
        threshold: class-map probability for a pixel to enter the mask.
        source: the file it came from, if any.
        zoom: the factor the image was resized by before the network (``pixel_size`` /
            ``cell_diameter``); ``maps`` are at the resized image's resolution, ``mask`` and
            ``class_maps`` at the input's.
        mask: (H, W) uint8: 0 background, ``k + 1`` where class ``k``'s map is largest and >= threshold
            (computed on first access, so a pipeline can do it off the inference thread).
        class_maps: (K, H, W) float32 per-class instance probabilities at the input's resolution,
            computed from ``maps`` on first access (K x H x W x 4 bytes: large for huge images).
        raw_probabilities: the network's own pooled outputs, before calibration.
        qc: ``ok``, or why the call is not to be trusted (``milcnn.process.quality``: ``too_small``, ``no_cells``,
            ``off_scale``, ``out_of_distribution``); not ``ok`` makes ``label`` ``unassigned``.
        features: what qc read of the image (object diameter, texture, coverage), None where not read.
        labels: multi-label models: every class at or above ``threshold``, joined by ``|``; else ``label``.
        top: the most probable class, whatever its probability and qc.
        n_cells: the cells (or nuclei) counted in the image (``milcnn.process.cells``, as the model's ``cells``
            block says), None where the model does not count.
        scale_source: where ``zoom`` came from: ``argument`` (pixel_size / cell_diameter), ``image`` (the
            file's own pixel size) or ``model`` (the model's default).
    """

    label: str
    probabilities: dict[str, float]
    classes: tuple[str, ...]
    maps: np.ndarray = field(repr=False)
    stride: int = field(repr=False)
    shape: tuple[int, int] = (0, 0)
    threshold: float = constants.DEFAULT_THRESHOLD
    source: str | None = None
    zoom: float = 1.0
    raw_probabilities: dict[str, float] = field(default_factory=dict, repr=False)
    qc: str = QC_OK
    features: Features | None = field(default=None, repr=False)
    labels: str = ""
    top: str = ""
    scale_source: str = "model"
    n_cells: int | None = None

    @property
    def network_shape(self) -> tuple[int, int]:
        """(H, W) of the image the network saw (the input resized by ``zoom``)."""
        return self.shape if self.zoom == 1.0 else zoomed_shape(self.shape, self.zoom)

    @_computed_once
    def mask(self) -> np.ndarray:
        mask = mask_from_maps(self.maps, self.stride, self.network_shape, self.threshold)
        return mask if self.zoom == 1.0 else resize_labels(mask, self.shape)

    @_computed_once
    def class_maps(self) -> np.ndarray:
        maps = upsample_maps(self.maps, self.stride, self.network_shape)
        return maps if self.zoom == 1.0 else resize_chw(maps, self.shape)

    @_computed_once
    def areas(self) -> np.ndarray:
        """(K,) the share of the image each class's mask covers (predictions.csv's ``area_<class>``)."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.classes) + 1)
        return counts[1:len(self.classes) + 1] / max(1, self.mask.size)

    def to_dict(self) -> dict:
        """JSON-ready summary: label, probabilities and each class's pixel count in the mask."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.classes) + 1)
        return {
            "image": self.source,
            "label": self.label,
            "labels": self.labels,
            "qc": self.qc,
            "probabilities": {c: round(float(p), 6) for c, p in self.probabilities.items()},
            "mask_pixels": {c: int(counts[k + 1]) for k, c in enumerate(self.classes)},
            "shape": list(self.mask.shape),
        }
