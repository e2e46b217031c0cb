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


def _edge_pad(maps: np.ndarray) -> np.ndarray:
    """(K, h, w) -> (K, h+2, w+2), each border repeating its edge (``np.pad(mode="edge")``, 5x faster here)."""
    K, h, w = maps.shape
    out = np.empty((K, h + 2, w + 2), np.float32)
    out[:, 1:-1, 1:-1] = maps
    out[:, 0, 1:-1], out[:, -1, 1:-1] = maps[:, 0], maps[:, -1]
    out[:, :, 0], out[:, :, -1] = out[:, :, 1], out[:, :, -2]
    return out


def _interpolate(c: np.ndarray, omt: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A cell's bilinear values from its corners ``c`` (4, ...): top-left, bottom-left, top-right,
    bottom-right -> (s rows, s cols, ...), in ``upsample_maps``'s order of operations. The cells
    stay on the last axes, so numpy's inner loops run over them rather than over s values."""
    lead = (slice(None),) + (None,) * (c.ndim - 1)  # (s, 1, ...): broadcast over the cells
    left = omt[lead] * c[0] + t[lead] * c[1]  # (s, ...): the left edge at each in-cell row
    right = omt[lead] * c[2] + t[lead] * c[3]
    return omt[(None,) + lead] * left[:, None] + t[(None,) + lead] * right[:, None]  # (s rows, s cols, ...)


def mask_from_maps(maps, stride: int, out_shape: tuple[int, int], threshold: float = constants.DEFAULT_THRESHOLD,
                   *, band: int = 1024) -> np.ndarray:
    """``label_mask(upsample_maps(maps, stride, out_shape), threshold)`` without upsampling every map.

    Bilinear values inside a cell (between four map pixels) are convex mixes of its corners. So a
    cell where no class reaches ``threshold`` at a corner is background; a cell where only class k
    does is k wherever its interpolated value reaches ``threshold`` (everywhere, when all four
    corners do); only cells where several classes compete are interpolated for each of them (the
    two that meet, in the usual case). The result is identical to the dense computation (the same
    float32 operations in the same order; tested), and the work follows the class boundaries.

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
    s, half = stride, stride // 2
    cells = np.zeros((h + 1, s, w + 1, s), dtype=dtype)  # cell rows x in-cell rows x cell cols x in-cell cols
    padded = _edge_pad(maps)  # (K, h+2, w+2): cell (a, b) has corners padded[:, a:a+2, b:b+2]
    for a0 in range(0, h + 1, band):
        _mask_cells(padded[:, a0:a0 + band + 1], cells[a0:a0 + band], threshold, stride)
    return np.ascontiguousarray(cells.reshape((h + 1) * s, (w + 1) * s)[half:half + H, half:half + W])


def _mask_cells(padded: np.ndarray, cells: np.ndarray, threshold: float, stride: int) -> None:
    """Label the cells between the rows of ``padded`` (K, r+1, w+2) into ``cells`` (r, s, w+1, s)."""
    K, _, cols = padded.shape
    dtype = cells.dtype
    omt, t = _interp_weights(stride)
    # float32 rounding can lift an interpolated value by an ulp above its corners: keep a margin
    select = np.float32(threshold) - np.float32(1e-6)
    safe = np.float32(threshold) + np.float32(1e-6)
    padded = np.ascontiguousarray(padded)
    above = padded >= select  # classes that may reach the threshold near each map pixel
    count_t = np.uint8 if K < 255 else np.uint16
    count = above.sum(axis=0, dtype=count_t)
    code_t = np.int8 if K < 127 else np.int16 if K < 32767 else np.int32
    # where one class is above, the sum of k over the classes above is that class (einsum: 20x argmax)
    index = np.einsum("k,kij->ij", np.arange(K, dtype=count_t), above.view(np.uint8), dtype=count_t)
    # per map pixel: its one candidate class k, none -1, several -2
    cls = np.where(count == 1, index.astype(code_t), np.where(count == 0, -1, -2).astype(code_t))
    c4 = np.stack([cls[:-1, :-1], cls[1:, :-1], cls[:-1, 1:], cls[1:, 1:]])  # (4, r, w+1): each cell's corners
    hi = c4.max(axis=0)
    lo = np.where(c4 >= 0, c4, code_t(K)).min(axis=0)  # the lowest class among the corners (K: none)
    several = (c4.min(axis=0) == -2) | ((hi >= 0) & (lo < hi))  # several classes may compete in the cell
    single = ~several & (hi >= 0)
    # a cell whose four corners all hold its one class at >= threshold is that class throughout (a
    # convex mix of values above the threshold): one broadcast write for all of them
    strong = (count == 1) & (padded.max(axis=0) >= safe)
    inside = single & (lo == hi) & strong[:-1, :-1] & strong[1:, :-1] & strong[:-1, 1:] & strong[1:, 1:]
    label = np.where(inside, hi.astype(np.int32) + 1, 0).astype(dtype)  # (r, w+1)
    cells[...] = np.repeat(label, stride, axis=1).reshape(label.shape[0], 1, -1, stride)  # 10x a plain broadcast
    flat = padded.reshape(K, -1)
    row = cols
    a, b = np.nonzero(single & ~inside)
    if a.size:
        k = hi[a, b].astype(np.intp)
        i = a * row + b
        c = flat[k[None, :], np.stack([i, i + row, i + 1, i + row + 1])]  # (4, N): class k's corners
        values = _interpolate(c, omt, t)  # (s, s, N)
        _put_cells(cells, a, b, (values >= threshold).astype(dtype) * (k + 1).astype(dtype))
    a, b = np.nonzero(several)
    if a.size:
        i = a * row + b
        corners = np.take(flat, np.stack([i, i + row, i + 1, i + row + 1]), axis=1)  # (K, 4, N)
        candidate = (corners >= select).any(axis=1).T  # (N, K)
        n = candidate.sum(axis=1)
        pick = np.flatnonzero(n == 2)  # the usual case: two classes meet; interpolate those two only
        if pick.size:
            k1 = candidate[pick].argmax(axis=1)
            k2 = K - 1 - candidate[pick, ::-1].argmax(axis=1)  # k1 < k2
            v1 = _interpolate(corners[k1, :, pick].T, omt, t)  # (s, s, N)
            v2 = _interpolate(corners[k2, :, pick].T, omt, t)
            best = np.where(v2 > v1, k2, k1)  # ties go to the lower class, as argmax over all classes
            peak = np.maximum(v1, v2)
            _put_cells(cells, a[pick], b[pick], np.where(peak >= threshold, best + 1, 0).astype(dtype))
        pick = np.flatnonzero(n != 2)
        if pick.size:
            values = _interpolate(corners[:, :, pick].transpose(1, 2, 0), omt, t)  # (s, s, N, K)
            best = values.argmax(axis=-1)
            peak = values.max(axis=-1)
            _put_cells(cells, a[pick], b[pick], np.where(peak >= threshold, best + 1, 0).astype(dtype))


def _put_cells(cells: np.ndarray, a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> None:
    """Write ``labels`` (s, s, N) into cells ``(a, b)`` of ``cells`` (r, s, w+1, s) by flat index
    (several times faster than ``cells[a, :, b, :] = ...``)."""
    _, s, w1, _ = cells.shape
    flat = cells.view()
    flat.shape = (-1,)  # raises rather than copy: the writes must land in ``cells``
    within = np.arange(s)[:, None] * (w1 * s) + np.arange(s)  # (s, s): in-cell row and column
    flat[within[:, :, None] + ((a * s * w1 + b) * s)[None, None, :]] = labels


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
