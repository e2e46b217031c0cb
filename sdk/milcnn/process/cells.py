"""Counting cells (or nuclei) in one channel, classically: no network, numpy only, about a millisecond a field.

The plane is subsampled so that an object spans about ``_SAMPLES`` pixels, clipped to its 0.5-99.5th
percentiles, smoothed by two box filters about half an object wide (close to a Gaussian), and every local
maximum (within ``_PEAK`` of an object's diameter) above Otsu's threshold of the smoothed plane is one object:
blob detection at the object's scale, as CellProfiler's "intensity" declumping does. Touching objects are
counted apart where their centres are brighter than the line between them, which nuclei and
cytosol-filled cells are. Which channel and which diameter a model counts in is its config's ``cells`` block
(``milcnn.model.config.CellCounting``); ``benchmarks/cells.py`` checks the counts against the simulators'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from milcnn.process.scale import otsu_threshold

__all__ = ["count_cells", "counting_plane", "sampling_step", "find_cells", "cell_table", "CellCounting", "OBJECTS"]

OBJECTS = ("nuclei", "cells")


@dataclass(frozen=True)
class CellCounting:
    """A model's ``cells`` block: count ``objects`` (nuclei or whole cells) in ``channel``, about ``diameter`` px
    across at the network's scale; ``validated``: what ``python -m training.cells`` measured against the
    simulator's counts (fields, median and range of the ratio)."""

    channel: str
    diameter: float
    objects: str = "cells"
    validated: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"channel": self.channel, "diameter_px": self.diameter, "objects": self.objects,
                "validated": self.validated}

    @classmethod
    def from_dict(cls, d: dict, *, channels: tuple[str, ...]) -> "CellCounting":
        """Raises ValueError for a channel the model does not take, a diameter that is not a positive number or
        objects other than ``OBJECTS``."""
        if not isinstance(d, dict):
            raise ValueError(f"cells must be an object, got {type(d).__name__}")
        if d.get("channel") not in channels:
            raise ValueError(f"cells.channel must be one of the model's channels {list(channels)}, got "
                             f"{d.get('channel')!r}")
        diameter = d.get("diameter_px")
        if isinstance(diameter, bool) or not isinstance(diameter, (int, float)) or not math.isfinite(diameter) \
                or not 1 <= diameter <= 1000:
            raise ValueError(f"cells.diameter_px must be a number of pixels in 1..1000, got {diameter!r}")
        if d.get("objects", "cells") not in OBJECTS:
            raise ValueError(f"cells.objects must be one of {', '.join(OBJECTS)}, got {d.get('objects')!r}")
        return cls(str(d["channel"]), float(diameter), d.get("objects", "cells"), dict(d.get("validated") or {}))

_SAMPLES = 5.0  # pixels across an object after subsampling
_SMOOTH = 0.5  # box width as a fraction of the diameter (applied twice)
_PEAK = 0.8  # local maxima closer than this fraction of the diameter are one object


def sampling_step(diameter: float) -> int:
    """Every how many pixels the counter reads: an object spans about ``_SAMPLES`` of them (a reader that can skip
    pixels, as ``milcnn.io.lazy.LazyTiff.strided``, reads only those: the count is the same)."""
    return max(1, int(diameter // _SAMPLES))


def counting_plane(chw, channel: int, diameter: float) -> tuple[np.ndarray, float, int]:
    """(plane, diameter in it, skip): the channel to count in. An image read a tile at a time
    (``milcnn.io.lazy.LazyTiff.strided``) gives only every ``skip``-th pixel, the ones the counter reads."""
    if not hasattr(chw, "strided"):
        return np.asarray(chw[channel]), diameter, 1
    skip = sampling_step(diameter)
    return chw.strided(skip)[channel], diameter / skip, skip


def count_cells(plane: np.ndarray, diameter: float) -> int:
    """The number of objects about ``diameter`` px across in the 2-D ``plane`` (any dtype, any range)."""
    found = _objects(plane, diameter)
    return 0 if found is None else len(found[2])


def find_cells(plane: np.ndarray, diameter: float) -> tuple[np.ndarray, int]:
    """The objects ``count_cells`` counts, as regions: (labels, step), labels an int32 image at 1/``step`` of the
    plane's resolution (0 background, k the k-th object): each foreground pixel (over Otsu's threshold of the
    smoothed plane) joins the nearest object centre within 0.65 of a diameter."""
    found = _objects(plane, diameter)
    if found is None:
        step = sampling_step(diameter)
        return np.zeros(np.asarray(plane[::step, ::step]).shape, np.int32), step
    foreground, step, peaks = found
    h, w = foreground.shape
    reach = int(np.ceil(0.65 * diameter / step))
    labels = np.zeros((h, w), np.int32)
    best = np.full((h, w), np.inf, np.float32)
    for k, (py, px) in enumerate(peaks, 1):
        window = (slice(max(0, py - reach), min(h, py + reach + 1)), slice(max(0, px - reach), min(w, px + reach + 1)))
        yy, xx = np.ogrid[window[0], window[1]]
        d2 = ((yy - py) ** 2 + (xx - px) ** 2).astype(np.float32)
        near = best[window]
        take = (d2 < near) & (d2 <= reach * reach) & foreground[window]
        near[take] = d2[take]
        labels[window][take] = k
    return labels, step


def _objects(plane: np.ndarray, diameter: float):
    """(foreground, step, peaks): the smoothed plane over Otsu's threshold and the object centres (n, 2) at
    1/``step`` resolution, the border's left out; None where nothing stands out."""
    if diameter <= 0:
        raise ValueError(f"diameter must be positive, got {diameter!r}")
    step = sampling_step(diameter)
    x = np.asarray(plane[::step, ::step], dtype=np.float32)
    d = diameter / step
    if x.size < 16 or min(x.shape) < 3:
        return None
    flat = x.ravel().copy()
    k_lo, k_hi = int(0.005 * (flat.size - 1)), int(0.995 * (flat.size - 1))
    flat.partition((k_lo, k_hi))
    lo, hi = float(flat[k_lo]), float(flat[k_hi])
    if not np.isfinite(hi - lo) or hi - lo <= 0:
        return None  # flat: nothing stands out
    x = np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0, dtype=np.float32)
    width = max(1, int(round(d * _SMOOTH)))
    smooth = _box(_box(x, width), width)
    threshold = otsu_threshold(smooth)
    # a tiny ramp makes every value unique, so a flat top (a saturated nucleus) has one maximum
    h, w = smooth.shape
    smooth += np.arange(h * w, dtype=np.float32).reshape(h, w) * np.float32(1e-7 / (h * w))
    radius = max(1, int(round(d * _PEAK / 2)))
    peaks = (smooth >= _max_filter(smooth, radius)) & (smooth > threshold)
    # a maximum on the border is an object whose centre lies outside the field (counted by the next field)
    peaks[0, :] = peaks[-1, :] = peaks[:, 0] = peaks[:, -1] = False
    return smooth > threshold, step, np.argwhere(peaks)


def cell_table(labels: np.ndarray, step: int, maps: np.ndarray, *, zoom: float, stride: int,
               classes: tuple[str, ...], threshold: float) -> list[list]:
    """One row per object of ``find_cells``: cell, y, x (its centroid in the image's pixels), area_px, class (the
    class whose map is highest on average inside it, ``unassigned`` below ``threshold``) and that probability.

    Args:
        maps: (K, h, w) class maps at 1/``stride`` of the network's scale (the image's scale times ``zoom``).
    """
    from milcnn.process.decision import UNASSIGNED

    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return []
    ii, jj = np.nonzero(labels)
    which = labels[ii, jj]
    pixels = np.bincount(which, minlength=n + 1)[1:].astype(np.float64)
    centre = step * (np.array([ii, jj], dtype=np.float64) + 0.5)  # (2, pixels): image coordinates
    mi = np.clip((centre[0] * zoom / stride).astype(np.intp), 0, maps.shape[1] - 1)
    mj = np.clip((centre[1] * zoom / stride).astype(np.intp), 0, maps.shape[2] - 1)
    mean = np.stack([np.bincount(which, weights=maps[k][mi, mj], minlength=n + 1)[1:] for k in range(len(classes))],
                    axis=1) / np.maximum(pixels, 1)[:, None]  # (cells, K)
    cy = np.bincount(which, weights=centre[0], minlength=n + 1)[1:] / np.maximum(pixels, 1)
    cx = np.bincount(which, weights=centre[1], minlength=n + 1)[1:] / np.maximum(pixels, 1)
    rows = []
    for k in range(n):
        if not pixels[k]:
            continue
        top = int(np.argmax(mean[k]))
        p = float(mean[k, top])
        rows.append([k + 1, f"{cy[k]:.1f}", f"{cx[k]:.1f}", int(pixels[k] * step * step),
                     classes[top] if p >= threshold else UNASSIGNED, f"{p:.6f}"])
    return rows


def _box(x: np.ndarray, width: int) -> np.ndarray:
    """The mean over a ``width`` x ``width`` window (edges repeated), by cumulative sums along each axis."""
    if width <= 1:
        return x
    before, after = width // 2 + 1, width - 1 - width // 2
    h, w = x.shape
    c = np.cumsum(np.pad(x, ((before, after), (0, 0)), mode="edge"), axis=0, dtype=np.float32)
    x = c[width:width + h] - c[:h]
    c = np.cumsum(np.pad(x, ((0, 0), (before, after)), mode="edge"), axis=1, dtype=np.float32)
    x = c[:, width:width + w] - c[:, :w]
    x *= np.float32(1 / (width * width))
    return x


def _max_filter(x: np.ndarray, radius: int) -> np.ndarray:
    """The maximum over a (2 radius + 1) square window (edges repeated), one axis at a time."""
    h, w = x.shape
    p = np.pad(x, ((radius, radius), (0, 0)), mode="edge")
    rows = p[:h].copy()
    for k in range(1, 2 * radius + 1):
        np.maximum(rows, p[k:k + h], out=rows)
    p = np.pad(rows, ((0, 0), (radius, radius)), mode="edge")
    out = p[:, :w].copy()
    for k in range(1, 2 * radius + 1):
        np.maximum(out, p[:, k:k + w], out=out)
    return out
