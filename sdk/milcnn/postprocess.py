"""Post-processing shared by training and inference: class maps at the model's resolution to
per-pixel maps and label masks at the input's (numpy only)."""

from __future__ import annotations

import numpy as np

from milcnn import constants

__all__ = ["upsample_maps", "mask_from_maps", "label_mask"]


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


def mask_from_maps(maps, stride: int, out_shape: tuple[int, int], threshold: float = constants.DEFAULT_THRESHOLD,
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


def label_mask(maps_chw, threshold: float = constants.DEFAULT_THRESHOLD) -> np.ndarray:
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
