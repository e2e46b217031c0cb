"""Everything before the network for one image: its scale, normalisation, resizing and padding.

``prepare`` turns what ``milcnn.io.readers`` read into a ``PreparedInput``; ``scale_for`` is the one rule
for where an image's scale comes from (the caller, the file, or the model's default). Thread-safe and
mostly outside the GIL, so ``milzoo predict`` prepares the next images while the network runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from milcnn import constants
from milcnn.io.lazy import LazyTiff
from milcnn.io.readers import ReadImage
from milcnn.model.config import ModelInfo
from milcnn.process.preprocess import apply_ranges, channel_ranges
from milcnn.process.scale import resize_chw, zoom_factor, zoomed_shape

__all__ = ["PreparedInput", "prepare", "scale_for", "zoom_for", "padded"]

log = logging.getLogger(__name__)

#: pixel types a backend that normalises inside its graph takes as they are (exact in float32)
GRAPH_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int8), np.dtype(np.int16))


@dataclass
class PreparedInput:
    """An image ready for the network: ``chw`` as read, the file it came from, the per-channel
    ``ranges`` (low, scale) that normalise ``chw`` (``milcnn.process.preprocess.channel_ranges``; None for a
    tiled image at zoom 1, whose tiles get them later), and the network input ``normalized``
    (normalised, resized by ``zoom`` and padded), or None until ``x`` is first asked for: a backend
    that normalises inside its graph (OpenVINO) takes ``chw`` and ``ranges`` as they are. A tiled
    image has ``tile_size`` set and no ``x``; ``resized`` then holds the normalised, resized image
    where ``zoom != 1``."""

    chw: np.ndarray
    normalized: np.ndarray | None = None
    source: str | None = None
    tile_size: int | None = None
    zoom: float = 1.0
    resized: np.ndarray | None = None
    ranges: tuple[np.ndarray, np.ndarray] | None = None
    scale_source: str = "model"

    @property
    def tiled(self) -> bool:
        return self.tile_size is not None

    @property
    def x(self) -> np.ndarray | None:
        """The normalised (C, H, W) float32 network input (made from ``ranges`` on first use); None if tiled."""
        if self.normalized is None and self.ranges is not None and not self.tiled:
            self.normalized = apply_ranges(self.chw, *self.ranges)
        return self.normalized

    @property
    def display(self) -> dict:
        """What overlays (``milcnn.outputs.overlay``) need besides ``chw`` to show it normalised, without
        normalising it again: ``normalized`` where it is ``chw``'s own (not resized), and ``ranges``."""
        return {"normalized": self.normalized if self.zoom == 1.0 else None, "ranges": self.ranges}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of ``x``, without making it."""
        return self.chw.shape if self.normalized is None else self.normalized.shape


def zoom_for(info: ModelInfo, *, pixel_size: float | None = None, cell_diameter: float | None = None) -> float:
    """The factor an image is resized by to match the model's scale; when neither is given, the model's
    default (``ModelInfo.input_cell_diameter``: 1.0 for a model that records none).

    Raises:
        ValueError: both given, a non-positive value, or the model does not record that quantity.
    """
    return zoom_factor(pixel_size=pixel_size, cell_diameter=cell_diameter, model_pixel_size=info.pixel_size,
                       model_cell_diameter=info.cell_diameter, model_input_cell_diameter=info.input_cell_diameter,
                       model_name=info.name)


def scale_for(info: ModelInfo, *, pixel_size: float | None = None, cell_diameter: float | None = None,
              image_pixel_size: float | None = None) -> tuple[float, str]:
    """The zoom an image gets and where its scale came from: the caller's ``pixel_size`` or ``cell_diameter``
    (``argument``), else the image's own pixel size where the model records the one it was trained at and it
    gives a zoom within ``constants.MAX_IMAGE_ZOOM`` either way (``image``: a file that claims 100 um pixels
    must not make a 512 px image 300,000 px wide), else the model's default (``model``: ``zoom_for``).

    Raises:
        ValueError: as ``zoom_for``.
    """
    if pixel_size is not None or cell_diameter is not None:
        return zoom_for(info, pixel_size=pixel_size, cell_diameter=cell_diameter), "argument"
    if image_pixel_size is not None and info.pixel_size:
        zoom = zoom_for(info, pixel_size=image_pixel_size)
        if 1 / constants.MAX_IMAGE_ZOOM <= zoom <= constants.MAX_IMAGE_ZOOM:
            return zoom, "image"
        log.info("an image declares %g um per pixel, %.3gx %s's %g: not used (pass --pixel-size to use it)",
                 image_pixel_size, zoom, info.name, info.pixel_size)
    return zoom_for(info), "model"


def padded(x: np.ndarray, min_size: int) -> np.ndarray:
    """``x`` (C, H, W) padded with background (0 after normalisation) to at least ``min_size`` each way."""
    _, h, w = x.shape
    if h < min_size or w < min_size:
        x = np.pad(x, ((0, 0), (0, max(0, min_size - h)), (0, max(0, min_size - w))))
    return x


def prepare(read: ReadImage, info: ModelInfo, *, zoom: float, scale_source: str, tile_size: int | None = None,
            normalizes_in_graph: bool = False) -> PreparedInput:
    """``read`` made ready for the network: normalised with its own statistics, resized by ``zoom``, padded to
    ``min_size``; an image over ``constants.TILE_THRESHOLD_PIXELS`` (or any, with ``tile_size``) is marked for
    tiling and normalised tile by tile later. ``normalizes_in_graph``: the runtime takes 8- and 16-bit pixels
    with their ranges, so the normalised copy is made only if asked for.

    Raises:
        ValueError: a file read a tile at a time that would need resizing.
    """
    chw, source = read.chw, read.source
    if isinstance(chw, LazyTiff):
        if zoom != 1.0:
            raise ValueError(f"{chw.shape[1]} x {chw.shape[2]} px, read a tile at a time, cannot be resized by "
                             f"{zoom:.3g} to {info.name}'s scale; resize it first, or pass the model's own "
                             f"cell_diameter={info.cell_diameter:g} if it is at that scale")
        return PreparedInput(chw=chw, source=source, tile_size=tile_size or constants.DEFAULT_TILE_SIZE,
                             scale_source=scale_source)
    _, h, w = chw.shape
    resized = x = ranges = None
    if zoom != 1.0:  # normalise with the input's own statistics, then resize (NaN already 0)
        ranges = channel_ranges(chw, info.normalization)
        resized = resize_chw(apply_ranges(chw, *ranges), zoomed_shape((h, w), zoom))
        h, w = resized.shape[1:]
    # tiled where the padded image would pass the threshold: a 1 x 4,000,000 px image padded to min_size rows is
    # 256 million pixels
    if tile_size is None and max(h, info.min_size) * max(w, info.min_size) > constants.TILE_THRESHOLD_PIXELS:
        tile_size = constants.DEFAULT_TILE_SIZE
    if tile_size is None:
        if resized is not None:
            x = padded(resized, info.min_size)
        else:
            ranges = channel_ranges(chw, info.normalization)
            in_graph = normalizes_in_graph and chw.dtype in GRAPH_DTYPES and min(chw.shape[1:]) >= info.min_size
            if not in_graph:  # else x is made only if asked for
                x = padded(apply_ranges(chw, *ranges), info.min_size)
    return PreparedInput(chw=chw, normalized=x, source=source, tile_size=tile_size, zoom=zoom,
                         resized=resized if tile_size is not None else None, ranges=ranges, scale_source=scale_source)
