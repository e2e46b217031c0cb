"""Every kind of input read the same way: ``read(channels)`` gives the model's channels as (C, H, W),
the name the outputs use and the pixel size the input declares.

``ChannelFiles`` (one file per channel) and ``milcnn.io.omezarr.ZarrField`` (a field of an OME-Zarr plate)
implement ``read`` themselves; a path or an array is wrapped in an ``ImageInput`` by ``as_input``. A new
kind of input implements ``Readable`` and needs no change to the ``Classifier``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from milcnn.io.images import open_image
from milcnn.io.lazy import LazyTiff
from milcnn.process.preprocess import to_chw

__all__ = ["ReadImage", "Readable", "ImageInput", "as_input"]


@dataclass(frozen=True)
class ReadImage:
    """An input as read: ``chw`` the model's channels in order (a ``LazyTiff`` for a file too large to read
    whole: one page per channel), ``source`` the name the outputs use (None for an array), and
    ``pixel_size`` the um per pixel the input declares (None where it declares none)."""

    chw: np.ndarray | LazyTiff
    source: str | None = None
    pixel_size: float | None = None


@runtime_checkable
class Readable(Protocol):
    def read(self, channels: tuple[str, ...]) -> ReadImage:
        """The model's ``channels``, in order, as (C, H, W).

        Raises:
            ImageReadError: the input cannot be read.
            ValueError: it does not hold the model's channels.
        """


@dataclass(frozen=True)
class ImageInput:
    """A path or an array: H x W (one channel), C x H x W or H x W x C. ``channel_axis`` says which axis holds
    the channels where the shape does not; ``channel_index`` picks the model's channels, in order, from an
    image with more; an OME-TIFF that names its channels gives the model's by name."""

    image: object
    channel_axis: int | None = None
    channel_index: tuple[int, ...] | None = None

    def read(self, channels: tuple[str, ...]) -> ReadImage:
        image, source, meta, axis = self.image, None, None, self.channel_axis
        if isinstance(image, (str, Path)):
            source = str(image)
            image, meta = open_image(image)
        if isinstance(image, LazyTiff):  # too large to read whole: one page per channel, in file order
            if image.shape[0] != len(channels):
                raise ValueError(f"image of shape {image.shape} (read a tile at a time: one page per channel) has "
                                 f"{image.shape[0]} channels but the model needs {len(channels)} "
                                 f"({', '.join(channels)}, in that order)")
            return ReadImage(image, source, None)
        if meta is not None and meta.channel_names is not None and self.channel_index is None:
            image, axis = _by_name(np.asarray(image), list(meta.channel_names), meta.channel_axis, channels)
        elif self.channel_index is not None:
            image, axis = _pick_channels(np.asarray(image), self.channel_index, axis)
        chw = to_chw(image, len(channels), channel_axis=axis, channel_names=channels)
        return ReadImage(chw, source, meta.pixel_size if meta is not None else None)


def as_input(image, *, channel_axis: int | None = None, channel_index: tuple[int, ...] | None = None) -> Readable:
    """``image`` itself where it reads itself (``Readable``), else an ``ImageInput`` of it."""
    if isinstance(image, Readable) and not isinstance(image, (str, Path, np.ndarray)):
        return image
    return ImageInput(image, channel_axis, channel_index)


def _by_name(image: np.ndarray, names: list[str], axis: int, channels: tuple[str, ...]) -> tuple[np.ndarray, int]:
    """The model's channels picked by the names an OME-TIFF gives them (case-insensitive)."""
    lower, wanted = [n.lower() for n in names], [c.lower() for c in channels]
    if axis >= image.ndim or image.shape[axis] != len(names):
        return image, None
    if all(c in lower for c in wanted):
        return np.take(image, [lower.index(c) for c in wanted], axis=axis), axis
    missing = [c for c in channels if c.lower() not in lower]
    if len(missing) < len(channels):
        raise ValueError(f"its channels are named {', '.join(names)}: {', '.join(missing)} missing; the model "
                         f"needs {', '.join(channels)}")
    if len(names) == len(channels):  # names that are not the model's: keep the stored order
        return image, axis
    raise ValueError(f"its channels are named {', '.join(names)}, none of the model's "
                     f"({', '.join(channels)}); pick them with channel_index / --channel-index")


def _pick_channels(image: np.ndarray, index: tuple[int, ...], axis: int | None) -> tuple[np.ndarray, int]:
    """``image``'s channels ``index`` along ``axis`` (default: the first or last axis, whichever is
    shorter: the channels of a C x H x W or H x W x C image)."""
    if image.ndim != 3:
        raise ValueError(f"channel_index {list(index)} needs a 3-D image (C x H x W or H x W x C), got shape "
                         f"{image.shape}")
    if axis is None:
        axis = 0 if image.shape[0] <= image.shape[-1] else image.ndim - 1
    if max(index) >= image.shape[axis] or min(index) < -image.shape[axis]:
        raise ValueError(f"channel_index {list(index)} is out of range for {image.shape[axis]} channels "
                         f"(image of shape {image.shape})")
    return np.take(image, list(index), axis=axis), axis
