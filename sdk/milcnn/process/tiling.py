"""Tiled inference, separate from the model adapter: tiles with receptive-field margins, and
the stitching of their class-map cores (as bioimage.io's prediction pipeline keeps tiling and
halos apart from the model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

__all__ = ["Tile", "tiles", "stitch_maps"]


@dataclass(frozen=True)
class Tile:
    """One tile: the input window ``[y0:y1, x0:x1]`` (core plus margin, clipped to the image), and
    its core in class-map pixels, both in the whole map (``map_rows``, ``map_cols``) and in the
    tile's own map (``own_rows``, ``own_cols``)."""

    y0: int
    y1: int
    x0: int
    x1: int
    map_rows: slice
    map_cols: slice
    own_rows: slice
    own_cols: slice


def tiles(height: int, width: int, *, tile_size: int, stride: int, receptive_field: int) -> Iterator[Tile]:
    """The tiles that cover a ``height`` x ``width`` image: cores of ``tile_size`` px, each read with a
    margin of at least the receptive field (a multiple of the stride) on every side, so each core map
    pixel sees exactly what it would in the whole image.

    Raises:
        ValueError: ``tile_size`` is not a positive multiple of ``stride``.
    """
    if tile_size < stride or tile_size % stride:
        raise ValueError(f"tile size {tile_size} must be a positive multiple of the output stride {stride}")
    margin = -(-receptive_field // stride) * stride
    mh, mw = -(-height // stride), -(-width // stride)
    for y0 in range(0, height, tile_size):
        for x0 in range(0, width, tile_size):
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)  # multiples of the stride
            yb, xb = min(height, y0 + tile_size + margin), min(width, x0 + tile_size + margin)
            cy0, cx0 = y0 // stride, x0 // stride
            cy1, cx1 = min(mh, (y0 + tile_size) // stride), min(mw, (x0 + tile_size) // stride)
            yield Tile(ya, yb, xa, xb, slice(cy0, cy1), slice(cx0, cx1),
                       slice(cy0 - ya // stride, cy1 - ya // stride), slice(cx0 - xa // stride, cx1 - xa // stride))


def stitch_maps(chw: np.ndarray, run: Callable[[np.ndarray], np.ndarray], *, n_classes: int, tile_size: int,
                stride: int, receptive_field: int) -> np.ndarray:
    """Class maps (K, ceil(H / stride), ceil(W / stride)) of a whole image, computed tile by tile.

    Args:
        chw: the image (C, H, W).
        run: one input window (C, h, w) -> its class maps (K, ceil(h / stride), ceil(w / stride)).
    """
    _, h, w = chw.shape
    maps = np.empty((n_classes, -(-h // stride), -(-w // stride)), dtype=np.float32)
    for t in tiles(h, w, tile_size=tile_size, stride=stride, receptive_field=receptive_field):
        maps[:, t.map_rows, t.map_cols] = run(chw[:, t.y0:t.y1, t.x0:t.x1])[:, t.own_rows, t.own_cols]
    return maps
