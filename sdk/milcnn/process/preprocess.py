"""Pre-processing shared by training and inference: one definition, numpy only.

Post-processing (class maps to masks) is ``milcnn.process.postprocess``.

Training (``training/``) and the SDK both call these functions, and the model's
``config.json`` stores their parameters (``NormalizationConfig``), so an image is
turned into model input the same way wherever it is used.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "NormalizationConfig",
    "percentiles",
    "percentiles_from_counts",
    "range_of",
    "to_chw",
    "normalize",
    "channel_ranges",
    "apply_ranges",
]


@dataclass(frozen=True)
class NormalizationConfig:
    """Per-image, per-channel percentile normalisation (as in CSBDeep/StarDist/Cellpose).

    Each channel ``x`` becomes ``(x - p_low) / (p_high - p_low)`` where ``p_low`` and
    ``p_high`` are the ``low`` and ``high`` percentiles of that channel in the whole
    image, so the camera offset and the exposure drop out. Values are not clipped:
    bright outliers stay bright.

    Args:
        low: lower percentile in [0, 100).
        high: upper percentile in (low, 100].
        eps: floor on ``p_high - p_low`` so a constant channel maps to zeros, not NaN.
    """

    method: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.method != "percentile":
            raise ValueError(f"normalization method {self.method!r} is not supported; use 'percentile'")
        if not (0.0 <= self.low < self.high <= 100.0):
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got low={self.low}, high={self.high}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NormalizationConfig":
        return cls(**d)


def to_chw(image, n_channels: int, *, channel_axis: int | None = None, channel_names=None) -> np.ndarray:
    """Return ``image`` as a (C, H, W) array with ``C == n_channels``.

    Args:
        image: H x W (one channel), C x H x W or H x W x C array.
        n_channels: the number of channels the model needs.
        channel_axis: which axis holds the channels; ``None`` guesses from the shape
            (first axis, then last axis, whichever has ``n_channels`` entries).
        channel_names: the model's channel names, for the error messages.

    Returns:
        a view or copy of ``image`` with shape (n_channels, H, W), dtype unchanged.

    Raises:
        ValueError: the shape cannot be read as ``n_channels`` channels; the message says what
            the model needs and how to give it.
    """
    image = np.asarray(image)
    names = f" ({', '.join(channel_names)}, in that order)" if channel_names else ""
    needs = f"the model needs {n_channels} channel{'s' if n_channels != 1 else ''}{names}"
    if image.ndim == 2:
        if channel_axis is not None:
            raise ValueError(f"channel_axis={channel_axis} given for a 2-D image of shape {image.shape}")
        if n_channels != 1:
            raise ValueError(f"image of shape {image.shape} has 1 channel but {needs}: give one file per channel "
                             "(--layout imagexpress or operetta, or --channel NAME=GLOB per channel) or save them as "
                             "one C x H x W image")
        return image[None]
    if image.ndim != 3:
        raise ValueError(
            f"image of shape {image.shape} has {image.ndim} dimensions; expected H x W, C x H x W or H x W x C "
            f"and {needs} (a Z stack or time series: save one plane or a projection first)"
        )
    if channel_axis is not None:
        if not -3 <= channel_axis <= 2:
            raise ValueError(f"channel_axis={channel_axis} is out of range for a 3-D image")
        image = np.moveaxis(image, channel_axis, 0)
    elif image.shape[0] == n_channels and image.shape[-1] == n_channels and image.shape[0] != image.shape[1]:
        raise ValueError(f"image of shape {image.shape} is ambiguous: both its first and last axes could hold "
                         f"the {n_channels} channels; pass channel_axis (--channel-axis) 0 or 2")
    elif image.shape[0] == n_channels:
        pass
    elif image.shape[-1] == n_channels:
        image = np.moveaxis(image, -1, 0)
    else:
        small = min(image.shape[0], image.shape[-1])
        if n_channels < small <= 4:  # more channels than the model takes: pick them
            picks = tuple(range(n_channels))
            hint = (f"an RGB or {small}-channel image: pick the model's, in its order, with --channel-index "
                    f"{','.join(map(str, picks))} (channel_index={picks})")
        elif small < n_channels:
            hint = (f"an RGB or {small}-channel image: give one file per channel (--layout imagexpress or operetta, "
                    "or --channel NAME=GLOB) or save them as one image")
        else:
            hint = "a Z stack or time series: save one plane or a projection first"
        raise ValueError(f"image of shape {image.shape} has no axis of length {n_channels}: {needs}; {hint}")
    if image.shape[0] != n_channels:
        raise ValueError(f"image has {image.shape[0]} channels on axis {channel_axis} but {needs}")
    return image


_HISTOGRAM_MAX_RANGE = 1 << 20  # integer images spanning fewer values are counted, not sorted


def percentiles(values, q) -> np.ndarray:
    """``np.percentile(values, q)`` (linear interpolation), computed from a histogram for integers.

    Microscopy images are 8- or 16-bit integers: counting their values is one pass, where
    ``np.percentile`` partitions the whole array. Floats (and integers spanning more than
    2**20 values) go to ``np.percentile``. Both give the same order statistics.

    Args:
        values: array of real numbers or bools, any shape, no NaN.
        q: percentiles in [0, 100].

    Returns:
        float64 array of ``len(q)`` values.
    """
    values = np.asarray(values)
    q = np.asarray(q, dtype=np.float64)
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    if not np.issubdtype(values.dtype, np.integer) or values.size == 0:
        return np.percentile(values, q)
    flat = values.ravel()
    if flat.dtype.kind == "u" and (flat.dtype.itemsize <= 2 or int(flat.max()) < _HISTOGRAM_MAX_RANGE):
        # count from 0: a few unused bins cost less than a shifted copy (8- and 16-bit need no max first)
        lowest, counts = 0, np.bincount(flat)
    else:
        lowest, highest = int(flat.min()), int(flat.max())
        if highest - lowest >= _HISTOGRAM_MAX_RANGE:
            return np.percentile(values, q)
        counts = np.bincount(flat.astype(np.int64) - lowest, minlength=highest - lowest + 1)
    return percentiles_from_counts(counts, lowest, q)


def percentiles_from_counts(counts: np.ndarray, lowest: int, q) -> np.ndarray:
    """``np.percentile`` (linear interpolation) of integer values given as a histogram: ``counts[i]``
    values equal ``lowest + i``. Used by ``percentiles`` and by images read a tile at a time
    (``milcnn.io.lazy``), whose histograms add up segment by segment."""
    q = np.asarray(q, dtype=np.float64)
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    rank = q / 100.0 * (n - 1)  # the (fractional) position in the sorted values
    below = np.floor(rank)
    frac = rank - below
    order = np.stack([below, np.minimum(below + 1, n - 1)]).astype(np.int64)
    v = np.searchsorted(cumulative, order, side="right").astype(np.float64) + lowest  # sorted[order]
    return v[0] + frac * (v[1] - v[0])


def normalize(image_chw, config: NormalizationConfig = NormalizationConfig()) -> np.ndarray:
    """Percentile-normalise each channel of a (C, H, W) image to float32.

    Args:
        image_chw: (C, H, W) array of any real or bool dtype.
        config: the percentiles (stored in the model's config).

    Returns:
        float32 array of the same shape; NaN and Inf pixels become 0 (the low percentile).

    Raises:
        ValueError: the array is not 3-D, or is not numeric.
    """
    image = np.asarray(image_chw)
    low, scale = channel_ranges(image, config)
    return apply_ranges(image, low, scale)


def channel_ranges(image_chw, config: NormalizationConfig = NormalizationConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(low, scale)`` of the normalisation: ``x_norm = (x - low) * scale``.

    ``low`` is the ``config.low`` percentile and ``1 / scale`` the distance to the ``config.high``
    percentile (at least ``config.eps``), over the channel's finite pixels. Splitting this from
    ``apply_ranges`` lets a huge image be normalised tile by tile with whole-image statistics.

    Returns:
        two float32 arrays of shape (C,).

    Raises:
        ValueError: the array is not 3-D, or is not numeric.
    """
    image = np.asarray(image_chw)
    if image.ndim != 3:
        raise ValueError(f"normalize expects a (C, H, W) array, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_):
        raise ValueError(f"cannot normalise an image of dtype {image.dtype}; expected integers, floats or bool")
    if np.iscomplexobj(image):
        raise ValueError(f"cannot normalise a complex image (dtype {image.dtype})")
    if image.dtype == np.bool_:
        image = image.view(np.uint8)
    low = np.zeros(image.shape[0], dtype=np.float32)
    scale = np.zeros(image.shape[0], dtype=np.float32)
    warned = False
    for c in range(image.shape[0]):
        values = image[c]
        if image.dtype.kind == "f":  # integers are always finite
            finite = np.isfinite(values)
            if not finite.all():
                if not warned:
                    warnings.warn("image has NaN or Inf pixels; they are set to the channel's low percentile",
                                  stacklevel=3)
                    warned = True
                values = values[finite]
        if values.size == 0:
            continue  # an all-NaN channel: scale 0 maps it to zeros
        low[c], scale[c] = range_of(percentiles(values.astype(np.float32, copy=False) if image.dtype.kind == "f"
                                                else values, (config.low, config.high)), config)
    return low, scale


def range_of(lo_hi, config: NormalizationConfig) -> tuple[np.float32, np.float32]:
    """``(low, scale)`` of the normalisation from a channel's low and high percentiles: ``scale`` is
    ``1 / (high - low)``, the distance at least ``config.eps``."""
    lo, hi = lo_hi
    return np.float32(lo), np.float32(1.0 / max(float(hi - lo), config.eps))


def apply_ranges(image_chw, low: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - low) * scale`` per channel, as float32; NaN and Inf pixels become 0."""
    image = np.asarray(image_chw)
    if image.dtype == np.bool_:
        image = image.view(np.uint8)
    out = np.empty(image.shape, dtype=np.float32)
    for c in range(image.shape[0]):
        np.subtract(image[c], low[c], out=out[c], dtype=np.float32)
        out[c] *= scale[c]
    if image.dtype.kind == "f":
        out[~np.isfinite(out)] = 0.0
    return out
