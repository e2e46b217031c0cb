"""From the network's outputs to the ``Prediction`` a user reads: the image's own instances pooled,
calibration, qc's reading and verdict, the scale notice and the one label rule (``milcnn.process.decision``)."""

from __future__ import annotations

import logging

import numpy as np

from milcnn import constants
from milcnn.io.lazy import LazyTiff
from milcnn.model.config import ModelInfo
from milcnn.predict.prediction import Prediction
from milcnn.predict.prepare import PreparedInput
from milcnn.process.cells import count_cells, counting_plane
from milcnn.process.decision import decide
from milcnn.process.preprocess import channel_ranges
from milcnn.process.quality import Features, QualityLimits, assess, measure
from milcnn.process.scale import SCALE_TOLERANCE, zoomed_shape

__all__ = ["ResultMaker", "qc_limits"]

log = logging.getLogger(__name__)


def qc_limits(info: ModelInfo) -> QualityLimits | None:
    """The limits qc checks against: the model's fitted ``qc`` block, else (older exports) its recorded
    cell-size reading with its tolerance."""
    return info.qc or QualityLimits.from_scale(info.measured_cell_diameter, info.measured_tolerance)


class ResultMaker:
    """Makes each image's ``Prediction`` for one model; keeps the count of images left to measure for the
    scale notice (one per model: a screen is imaged at one scale)."""

    def __init__(self, info: ModelInfo, pool):
        """``pool(maps, fallback)``: the model's pooling layer on the image's own class maps."""
        self.info, self.pool = info, pool
        self.limits = qc_limits(info)
        self.scale_checks_left = constants.SCALE_CHECKS

    def make(self, probs: np.ndarray, maps: np.ndarray, item: PreparedInput, *, threshold: float) -> Prediction:
        info, classes = self.info, self.info.classes
        stride = info.output_stride
        shape = item.chw.shape[1:]
        h, w = zoomed_shape(shape, item.zoom) if item.zoom != 1.0 else shape
        valid = maps[:, : -(-h // stride), : -(-w // stride)]
        if valid.shape != maps.shape:  # padded to min_size: pool the image's own instances only
            probs = self.pool(valid, probs)
        maps = valid
        raw = np.asarray(probs, dtype=np.float64)
        calibrated = raw if info.calibration is None else info.calibration.apply(raw)
        features = None if min(h, w) < info.min_size else self.features(item, maps, (h, w))
        if features is not None and not item.tiled and item.scale_source == "model":
            self.scale_notice(features.diameter, item.source)
        smallest = self.limits.min_side if self.limits is not None and self.limits.min_side else info.min_size
        qc = assess(features, self.limits, shape=(h, w), min_size=smallest, raw=raw,
                    top=classes[int(np.argmax(raw))])
        call = decide(calibrated, classes, threshold=threshold, multi_label=info.multi_label, qc=qc)
        return Prediction(
            label=call.label, probabilities={c: float(p) for c, p in zip(classes, calibrated)}, classes=classes,
            maps=np.ascontiguousarray(maps, dtype=np.float32), stride=stride, shape=(int(shape[0]), int(shape[1])),
            threshold=threshold, source=item.source, zoom=item.zoom,
            raw_probabilities={c: float(p) for c, p in zip(classes, raw)}, qc=qc, features=features,
            labels=call.labels, top=call.top, scale_source=item.scale_source, n_cells=self.count(item))

    def count(self, item: PreparedInput) -> int | None:
        """The cells in the image, in the channel and at the size the model's ``cells`` block gives (at the
        network's scale: ``item.zoom`` brings the size to the image's own)."""
        cells = self.info.cells
        if cells is None:
            return None
        plane, diameter, _ = counting_plane(item.chw, self.info.channels.index(cells.channel),
                                            cells.diameter / item.zoom)
        return count_cells(plane, diameter)

    def features(self, item: PreparedInput, maps: np.ndarray, shape: tuple[int, int]) -> Features | None:
        """qc's reading of an image at the network's scale (``milcnn.process.quality.measure``); a tiled image
        is read in its central ``constants.DEFAULT_TILE_SIZE`` square, an image read a tile at a time not at all."""
        h, w = shape
        if item.tiled:
            if isinstance(item.chw, LazyTiff):
                return None
            t = constants.DEFAULT_TILE_SIZE
            top, left = max(0, (h - t) // 2), max(0, (w - t) // 2)
            window = (slice(None), slice(top, top + t), slice(left, left + t))
            if item.resized is not None:
                return measure(item.resized[window], None, maps, normalized=True)
            crop = item.chw[window]
            return measure(crop, channel_ranges(crop, self.info.normalization), maps)
        if item.zoom != 1.0:
            return measure(item.x[:, :h, :w], None, maps, normalized=True)
        return measure(item.chw, item.ranges, maps)

    def scale_notice(self, measured: float | None, source: str | None) -> None:
        """One notice per model when one of its first ``constants.SCALE_CHECKS`` images whose scale was
        guessed has cells far from the training images' (``measured``: qc's reading of it, the same
        ``milcnn.process.scale.estimate_cell_diameter``)."""
        info = self.info
        expected = info.measured_cell_diameter
        if self.scale_checks_left <= 0 or not expected or not info.cell_diameter:
            return
        self.scale_checks_left -= 1
        tolerance = info.measured_tolerance or SCALE_TOLERANCE
        if measured is None or 1 / tolerance <= measured / expected <= tolerance:
            return
        self.scale_checks_left = 0
        diameter = info.cell_diameter * measured / expected
        pixel = f" or the pixel size in um (model: {info.pixel_size:g})" if info.pixel_size else ""
        log.warning(f"{source or 'image'}: cells look about {measured / expected:.1f}x the size {info.name} was "
                    f"trained at (about {diameter:.0f} px across, the model expects {info.cell_diameter:.0f} px); "
                    f"results may be wrong. Pass cell_diameter={diameter:.0f} (--cell-diameter {diameter:.0f})"
                    f"{pixel} to rescale. Not reported again for this model.")
