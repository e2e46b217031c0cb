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
    "to_chw",
    "normalize",
    "upsample_maps",
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


def to_chw(image, n_channels: int, *, channel_axis: int | None = None) -> np.ndarray:
    """Return ``image`` as a (C, H, W) array with ``C == n_channels``.

    Args:
        image: H x W (one channel), C x H x W or H x W x C array.
        n_channels: the number of channels the model needs.
        channel_axis: which axis holds the channels; ``None`` guesses from the shape
            (first axis, then last axis, whichever has ``n_channels`` entries).

    Returns:
        a view or copy of ``image`` with shape (n_channels, H, W), dtype unchanged.

    Raises:
        ValueError: the shape cannot be read as ``n_channels`` channels.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        if channel_axis is not None:
            raise ValueError(f"channel_axis={channel_axis} given for a 2-D image of shape {image.shape}")
        if n_channels != 1:
            raise ValueError(
                f"image of shape {image.shape} has 1 channel but the model needs {n_channels}; "
                f"pass a C x H x W or H x W x C array with {n_channels} channels"
            )
        return image[None]
    if image.ndim != 3:
        raise ValueError(
            f"image of shape {image.shape} has {image.ndim} dimensions; expected H x W, C x H x W or H x W x C "
            "(for a Z stack or time series, pick one plane first)"
        )
    if channel_axis is not None:
        if not -3 <= channel_axis <= 2:
            raise ValueError(f"channel_axis={channel_axis} is out of range for a 3-D image")
        image = np.moveaxis(image, channel_axis, 0)
    elif image.shape[0] == n_channels:
        pass
    elif image.shape[-1] == n_channels:
        image = np.moveaxis(image, -1, 0)
    else:
        raise ValueError(
            f"image of shape {image.shape} has no axis of length {n_channels} (the model's channel count); "
            "pass channel_axis to say which axis holds the channels"
        )
    if image.shape[0] != n_channels:
        raise ValueError(
            f"image has {image.shape[0]} channels on axis {channel_axis} but the model needs {n_channels}"
        )
    return image


def normalize(image_chw, config: NormalizationConfig = NormalizationConfig()) -> np.ndarray:
    """Percentile-normalise each channel of a (C, H, W) image to float32.

    Args:
        image_chw: (C, H, W) array of any real or bool dtype.
        config: the percentiles (stored in the model's config).

    Returns:
        float32 array of the same shape.

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
    x = image.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        warnings.warn("image has NaN or Inf pixels; they are set to the channel's low percentile", stacklevel=2)
        x = x.copy()
    out = np.empty(x.shape, dtype=np.float32)
    for c in range(x.shape[0]):
        channel = x[c]
        finite = np.isfinite(channel)
        values = channel[finite] if not finite.all() else channel
        if values.size == 0:
            out[c] = 0.0
            continue
        lo, hi = np.percentile(values, [config.low, config.high])
        scale = np.float32(1.0 / max(float(hi - lo), config.eps))
        np.subtract(channel, np.float32(lo), out=out[c])
        out[c] *= scale
        if not finite.all():
            out[c][~finite] = 0.0
    return out


def _bilinear_matrix(n_out: int, factor: int) -> np.ndarray:
    """(n_out, ceil(n_out / factor)) matrix of bilinear weights, half-pixel centres."""
    n_in = -(-n_out // factor)
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) / factor - 0.5
    centres = np.clip(centres, 0.0, n_in - 1)
    i0 = np.floor(centres).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = centres - i0
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    m[rows, i0] += (1.0 - w1).astype(np.float32)
    m[rows, i1] += w1.astype(np.float32)
    return m


def upsample_maps(maps, stride: int, out_shape: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample class maps by the model's output stride and crop to the input.

    A map pixel ``i`` covers input pixels ``[i * stride, (i + 1) * stride)`` (the model pads
    the input at the bottom and right to a multiple of ``stride``), so its centre is at
    ``(i + 0.5) * stride - 0.5``; this matches ``torch.nn.functional.interpolate(...,
    mode="bilinear", align_corners=False)`` followed by a crop.

    Args:
        maps: (C, h, w) or (B, C, h, w) array of per-instance probabilities.
        stride: the model's output stride.
        out_shape: (H, W) of the input image; ``h == ceil(H / stride)``.

    Returns:
        float32 array of shape (C, H, W) or (B, C, H, W).
    """
    maps = np.asarray(maps, dtype=np.float32)
    H, W = out_shape
    h, w = maps.shape[-2:]
    if h != -(-H // stride) or w != -(-W // stride):
        raise ValueError(f"maps of size {h}x{w} do not match an input of {H}x{W} at stride {stride}")
    mh = _bilinear_matrix(H, stride)  # (H, h)
    mw = _bilinear_matrix(W, stride)  # (W, w)
    return np.matmul(np.matmul(mh, maps), mw.T)  # (..., H, W)


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
