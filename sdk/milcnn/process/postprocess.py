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
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    _check_geometry(maps, stride, out_shape)
    K, h, w = maps.shape
    H, W = out_shape
    dtype = np.uint8 if K < 255 else np.uint16
    s, half = stride, stride // 2
    # cell rows x in-cell rows x cell cols x in-cell cols; cell (a, b) lies between map rows a - 1, a and
    # columns b - 1, b (clamped at the borders: the map's edge repeats); every cell is written below
    cells = np.empty((h + 1, s, w + 1, s), dtype=dtype)
    for a0 in range(0, h + 1, band):
        _mask_cells(maps, a0, cells[a0:a0 + band], threshold, stride)
    return np.ascontiguousarray(cells.reshape((h + 1) * s, (w + 1) * s)[half:half + H, half:half + W])


def _mask_cells(maps: np.ndarray, a0: int, cells: np.ndarray, threshold: float, stride: int) -> None:
    """Label cell rows ``a0 ..`` (as many as ``cells``, (r, s, w+1, s), holds) from ``maps`` (K, h, w)."""
    K, h, w = maps.shape
    dtype = cells.dtype
    omt, t = _interp_weights(stride)
    # float32 rounding can lift an interpolated value by an ulp above its corners: keep a margin
    select = np.float32(threshold) - np.float32(1e-6)
    safe = np.float32(threshold) + np.float32(1e-6)
    rows = np.clip(np.arange(a0, a0 + cells.shape[0] + 1) - 1, 0, h - 1)  # the corners' map rows, edge repeated
    cols = np.clip(np.arange(w + 2) - 1, 0, w - 1)
    r0 = int(rows[0])
    near = maps[:, r0:int(rows[-1]) + 1]  # (K, n, w): the map rows these cells touch
    above = near >= select  # classes that may reach the threshold near each map pixel
    count_t = np.uint8 if K < 255 else np.uint16
    count = above.sum(axis=0, dtype=count_t)
    code_t = np.int8 if K < 127 else np.int16 if K < 32767 else np.int32
    # where one class is above, the sum of k over the classes above is that class (einsum: 20x argmax)
    index = np.einsum("k,kij->ij", np.arange(K, dtype=count_t), above.view(np.uint8), dtype=count_t)
    # per map pixel: its one candidate class k, none -1, several -2
    cls = np.where(count == 1, index.astype(code_t), np.where(count == 0, -1, -2).astype(code_t))
    # a map pixel where only its class reaches the threshold, with a margin
    strong = (count == 1) & (near.max(axis=0) >= safe)
    cls, strong = _edge_padded(cls, rows - r0), _edge_padded(strong, rows - r0)  # cell (a, b): [a:a+2, b:b+2]
    lowest = np.where(cls >= 0, cls, code_t(K))  # a pixel's class, K where none or several
    tl, bl, tr, br = (slice(None, -1), slice(None, -1)), (slice(1, None), slice(None, -1)), \
        (slice(None, -1), slice(1, None)), (slice(1, None), slice(1, None))
    hi = np.maximum(np.maximum(cls[tl], cls[bl]), np.maximum(cls[tr], cls[br]))
    lo = np.minimum(np.minimum(lowest[tl], lowest[bl]), np.minimum(lowest[tr], lowest[br]))  # K: none
    none_several = np.minimum(np.minimum(cls[tl], cls[bl]), np.minimum(cls[tr], cls[br])) == -2
    several = none_several | ((hi >= 0) & (lo < hi))  # several classes may compete in the cell
    single = ~several & (hi >= 0)
    # a cell whose four corners all hold its one class at >= threshold is that class throughout (a
    # convex mix of values above the threshold): one broadcast write for all of them
    inside = single & (lo == hi) & strong[tl] & strong[bl] & strong[tr] & strong[br]
    label = np.where(inside, hi.astype(np.int32) + 1, 0).astype(dtype)  # (r, w+1)
    cells[...] = np.repeat(label, stride, axis=1).reshape(label.shape[0], 1, -1, stride)  # 10x a plain broadcast
    flat = maps.reshape(K, -1)

    def corner_index(a, b):  # (4, N) flat map indices of cells (a, b): top-left, bottom-left, top-right, bottom-right
        top, bottom = rows[a] * w, rows[a + 1] * w
        left, right = cols[b], cols[b + 1]
        return np.stack([top + left, bottom + left, top + right, bottom + right])

    a, b = _nonzero(single & ~inside)
    if a.size:
        k = hi[a, b].astype(np.intp)
        c = flat[k[None, :], corner_index(a, b)]  # (4, N): class k's corners
        values = _interpolate(c, omt, t)  # (s, s, N)
        _put_cells(cells, a, b, (values >= threshold).astype(dtype) * (k + 1).astype(dtype))
    a, b = _nonzero(several)
    if a.size:
        corners = np.take(flat, corner_index(a, b), axis=1)  # (K, 4, N)
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


def _nonzero(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D array, through its flat indices (twice as fast)."""
    return np.divmod(np.flatnonzero(flags), flags.shape[1])


def _edge_padded(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(n, w) -> (len(rows), w + 2): rows ``rows`` of ``x``, each with its first and last value repeated."""
    out = np.empty((len(rows), x.shape[1] + 2), x.dtype)
    out[:, 1:-1] = x[rows]
    out[:, 0], out[:, -1] = out[:, 1], out[:, -2]
    return out


def _put_cells(cells: np.ndarray, a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> None:
    """Write ``labels`` (s, s, N) into cells ``(a, b)`` of ``cells`` (r, s, w+1, s) by flat index
    (several times faster than ``cells[a, :, b, :] = ...``); a cell's row of s labels is one machine
    word where its bytes make one (s = 4: 4 bytes), so the index has s, not s * s, entries per cell."""
    _, s, w1, _ = cells.shape
    word = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(s * cells.itemsize)
    flat = cells.view()
    if word is not None:
        flat = flat.view(word)
        labels = np.ascontiguousarray(labels.transpose(0, 2, 1), dtype=cells.dtype).view(word)[..., 0]  # (s, N)
        within = np.arange(s)[:, None] * w1  # (s, 1): in-cell row
        index = within + (a * s * w1 + b)[None, :]
    else:
        within = np.arange(s)[:, None] * (w1 * s) + np.arange(s)  # (s, s): in-cell row and column
        index = within[:, :, None] + ((a * s * w1 + b) * s)[None, None, :]
    flat.shape = (-1,)  # raises rather than copy: the writes must land in ``cells``
    flat[index] = labels


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
