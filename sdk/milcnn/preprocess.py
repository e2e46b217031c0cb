"""Pre-processing shared by training and inference: one definition, numpy only.

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
    "to_chw",
    "normalize",
    "channel_ranges",
    "apply_ranges",
    "upsample_maps",
    "mask_from_maps",
    "label_mask",
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
            raise ValueError(f"image of shape {image.shape} has 1 channel but {needs}; "
                             f"save them as one C x H x W or H x W x C image")
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
        hint = (f"an RGB or {small}-channel image: save the channels the model needs as a {n_channels}-channel image"
                if small <= 4 else "a Z stack or time series: save one plane or a projection first")
        raise ValueError(f"image of shape {image.shape} has no axis of length {n_channels}: {needs} ({hint}; "
                         "or pass channel_axis / --channel-axis)")
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
    cumulative = np.cumsum(counts)
    rank = q / 100.0 * (flat.size - 1)  # the (fractional) position in the sorted values
    below = np.floor(rank)
    frac = rank - below
    order = np.stack([below, np.minimum(below + 1, flat.size - 1)]).astype(np.int64)
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
        lo, hi = percentiles(values.astype(np.float32, copy=False) if image.dtype.kind == "f" else values,
                             (config.low, config.high))
        low[c] = np.float32(lo)
        scale[c] = np.float32(1.0 / max(float(hi - lo), config.eps))
    return low, scale


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


def _interp_weights(stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(1 - t, t) in float32 for the ``stride`` output pixels inside one interpolation cell.

    With half-pixel centres and an even stride, output rows ``[s*a - s/2, s*a + s/2)`` all lie
    between rows ``a - 1`` and ``a`` of the map (edge-padded by one on each side, so ``a`` runs
    over ``0..h``), at fractions ``t_j = (j + 0.5) / s``. Both the dense upsampling and the
    sparse mask below use these weights in the same order, so they agree bit for bit.
    """
    t = ((np.arange(stride, dtype=np.float64) + 0.5) / stride).astype(np.float32)
    return (np.float32(1.0) - t), t


def _check_geometry(maps: np.ndarray, stride: int, out_shape: tuple[int, int]) -> None:
    H, W = out_shape
    h, w = maps.shape[-2:]
    if stride < 2 or stride % 2:
        raise ValueError(f"output stride must be even and >= 2, got {stride}")
    if h != -(-H // stride) or w != -(-W // stride):
        raise ValueError(f"maps of size {h}x{w} do not match an input of {H}x{W} at stride {stride}")


def upsample_maps(maps, stride: int, out_shape: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample class maps by the model's output stride and crop to the input.

    A map pixel ``i`` covers input pixels ``[i * stride, (i + 1) * stride)`` (the model pads
    the input at the bottom and right to a multiple of ``stride``), so its centre is at
    ``(i + 0.5) * stride - 0.5``; this matches ``torch.nn.functional.interpolate(...,
    mode="bilinear", align_corners=False)`` followed by a crop.

    Args:
        maps: (C, h, w) or (B, C, h, w) array of per-instance probabilities.
        stride: the model's output stride (even).
        out_shape: (H, W) of the input image; ``h == ceil(H / stride)``.

    Returns:
        float32 array of shape (C, H, W) or (B, C, H, W).
    """
    maps = np.asarray(maps, dtype=np.float32)
    _check_geometry(maps, stride, out_shape)
    H, W = out_shape
    h, w = maps.shape[-2:]
    lead = maps.shape[:-2]
    omt, t = _interp_weights(stride)
    half = stride // 2
    pad = [(0, 0)] * len(lead) + [(1, 1), (1, 1)]
    p = np.pad(maps, pad, mode="edge")  # (..., h+2, w+2)
    rows = omt[:, None] * p[..., :-1, None, :] + t[:, None] * p[..., 1:, None, :]  # (..., h+1, s, w+2)
    rows = rows.reshape(*lead, (h + 1) * stride, w + 2)[..., half:half + H, :]  # (..., H, w+2)
    out = omt * rows[..., :-1, None] + t * rows[..., 1:, None]  # (..., H, w+1, s)
    return np.ascontiguousarray(out.reshape(*lead, H, (w + 1) * stride)[..., half:half + W])


def mask_from_maps(maps, stride: int, out_shape: tuple[int, int], threshold: float = 0.5,
                   *, band: int = 256) -> np.ndarray:
    """``label_mask(upsample_maps(maps, stride, out_shape), threshold)`` without upsampling every map.

    Bilinear values inside a cell never exceed the cell's four corner values, so a cell
    where no class reaches ``threshold`` at a corner is background, and a cell where one
    class does is that class wherever its interpolated value reaches ``threshold``. Only
    cells where several classes compete are interpolated for every class. The result is
    identical to the dense computation; the work follows the foreground, and memory stays
    at one band of cells.

    Args:
        maps: (K, h, w) class maps at the model's resolution.
        stride: the model's output stride (even).
        out_shape: (H, W) of the input image.
        threshold: minimum probability for a pixel to be labelled.
        band: cell rows processed at a time (bounds the temporary memory).

    Returns:
        (H, W) uint8 mask (uint16 for more than 254 classes): 0 background, ``k + 1`` class ``k``.
    """
    maps = np.asarray(maps, dtype=np.float32)
    _check_geometry(maps, stride, out_shape)
    K, h, w = maps.shape
    H, W = out_shape
    dtype = np.uint8 if K < 255 else np.uint16
    omt, t = _interp_weights(stride)
    s, half = stride, stride // 2
    # float32 rounding can lift an interpolated value by an ulp above its corners: keep a margin
    select = np.float32(threshold) - np.float32(1e-6)
    cells = np.zeros((h + 1, s, w + 1, s), dtype=dtype)  # cell rows x in-cell rows x cell cols x in-cell cols
    # edge-padded, pixel-major (h+2, w+2, K): a cell's four corners are four rows of K values
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1)), mode="edge").transpose(1, 2, 0)
    padded = np.ascontiguousarray(padded).reshape(-1, K)
    top = np.pad(maps.max(axis=0), 1, mode="edge")  # the best class at each map pixel
    reach = np.maximum(np.maximum(top[:-1, :-1], top[1:, :-1]), np.maximum(top[:-1, 1:], top[1:, 1:]))
    row = w + 2
    for a0 in range(0, h + 1, band):
        a, b = np.nonzero(reach[a0:a0 + band] >= select)  # cells where some class may reach the threshold
        if a.size == 0:
            continue
        a += a0
        i = a * row + b
        corners = np.take(padded, np.stack([i, i + row, i + 1, i + row + 1]), axis=0)  # (4, N, K)
        candidate = corners.max(axis=0) >= select  # (N, K)
        n_candidates = candidate.sum(axis=1)
        for single in (True, False):
            pick = np.flatnonzero(n_candidates == 1 if single else n_candidates >= 2)
            if pick.size == 0:
                continue
            if single:
                k = np.argmax(candidate[pick], axis=1)  # (N,)
                c = corners[:, pick, k][..., None]  # (4, N, 1)
            else:
                c = corners[:, pick, :]  # (4, N, K)
            left = omt[:, None] * c[0][..., None, None] + t[:, None] * c[1][..., None, None]  # (N, k, s, 1)
            right = omt[:, None] * c[2][..., None, None] + t[:, None] * c[3][..., None, None]
            values = omt * left + t * right  # (N, k, s, s)
            if single:
                label = np.where(values[:, 0] >= threshold, (k + 1)[:, None, None], 0)
            else:
                best = values.argmax(axis=1)
                peak_value = np.take_along_axis(values, best[:, None], axis=1)[:, 0]
                label = np.where(peak_value >= threshold, best + 1, 0)
            cells[a[pick], :, b[pick], :] = label.astype(dtype)
    return np.ascontiguousarray(cells.reshape((h + 1) * s, (w + 1) * s)[half:half + H, half:half + W])


def label_mask(maps_chw, threshold: float = 0.5) -> np.ndarray:
    """Label mask from class maps: 0 background, ``k + 1`` where class ``k``'s map is the largest and >= threshold.

    Args:
        maps_chw: (C, H, W) class maps at the input's resolution.
        threshold: minimum probability for a pixel to be labelled.

    Returns:
        uint8 (H, W) mask (uint16 when there are more than 254 classes).
    """
    maps = np.asarray(maps_chw)
    dtype = np.uint8 if maps.shape[0] < 255 else np.uint16
    best = maps.argmax(axis=0)
    peak = np.take_along_axis(maps, best[None], axis=0)[0]
    return np.where(peak >= threshold, best + 1, 0).astype(dtype)
