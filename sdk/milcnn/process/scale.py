"""Image scale: bring an image to the pixel size a model was trained at, and back.

A model records the pixel size (um) and the typical cell diameter (px) of its training
images (``config.json`` -> ``scale``). Given either of those for the user's images, the
input is resized by ``zoom`` before the network and its maps and masks are resized back to
the input's size, as Cellpose does with ``diameter``. Without either, ``estimate_cell_diameter``
measures the cells so that a far-off scale can be reported.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["zoom_factor", "zoomed_shape", "resize_chw", "resize_labels", "estimate_cell_diameter",
           "SCALE_TOLERANCE"]

#: an image whose cells measure more than this factor from the model's gets a warning; a model whose
#: own training images read more widely records a larger factor (``config.json`` scale.measured_tolerance)
SCALE_TOLERANCE = 1.3


def zoom_factor(*, pixel_size: float | None = None, cell_diameter: float | None = None,
                model_pixel_size: float | None = None, model_cell_diameter: float | None = None,
                model_input_cell_diameter: float | None = None, model_name: str = "the model") -> float:
    """The factor to resize an image by (``> 1`` enlarges) so it matches the model's scale.

    Args:
        pixel_size: the image's pixel size in um.
        cell_diameter: the typical cell diameter in the image, in px.
        model_pixel_size, model_cell_diameter: what the model was trained at (``ModelInfo``).
        model_input_cell_diameter: the cell diameter the model assumes of an image given without
            a scale (the screen it was made for; ``ModelInfo.input_cell_diameter``), if any.
        model_name: for messages.

    Returns:
        when neither is given: ``model_cell_diameter / model_input_cell_diameter`` where the model
        records both, else 1.0.

    Raises:
        ValueError: both given, a value that is not a positive finite number, or the model does
            not record the matching quantity.
    """
    if pixel_size is not None and cell_diameter is not None:
        raise ValueError("give pixel_size or cell_diameter, not both")
    for name, value in (("pixel_size", pixel_size), ("cell_diameter", cell_diameter)):
        if value is not None and not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                      and np.isfinite(value) and value > 0):  # numpy scalars welcome
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if pixel_size is not None:
        if not model_pixel_size:
            raise ValueError(f"{model_name} does not record the pixel size it was trained at; "
                             "pass cell_diameter instead")
        return float(pixel_size) / float(model_pixel_size)
    if cell_diameter is not None:
        if not model_cell_diameter:
            raise ValueError(f"{model_name} does not record the cell diameter it was trained at; "
                             "pass pixel_size instead")
        return float(model_cell_diameter) / float(cell_diameter)
    if model_input_cell_diameter and model_cell_diameter:
        return float(model_cell_diameter) / float(model_input_cell_diameter)
    return 1.0


def zoomed_shape(shape: tuple[int, int], zoom: float) -> tuple[int, int]:
    """(H, W) after resizing by ``zoom`` (at least 1 px each)."""
    return max(1, int(round(shape[0] * zoom))), max(1, int(round(shape[1] * zoom)))


def resize_chw(image_chw: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Resize each channel of a (C, H, W) image to ``out_shape`` (bilinear, antialiased when shrinking).

    Pillow's float (``F``) mode does the work: pixel-centre aligned, with the filter widened
    by the shrink factor so a reduced image is an area average, not a subsample.

    Returns:
        float32 (C, *out_shape); NaN pixels should be removed first (they spread).
    """
    from PIL import Image

    image = np.asarray(image_chw)
    h, w = out_shape
    out = np.empty((image.shape[0], h, w), dtype=np.float32)
    for c in range(image.shape[0]):
        plane = np.ascontiguousarray(image[c], dtype=np.float32)
        out[c] = np.asarray(Image.fromarray(plane).resize((w, h), Image.Resampling.BILINEAR))
    return out


def resize_labels(mask: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label mask (pixel-centre aligned), dtype kept."""
    mask = np.asarray(mask)
    h, w = out_shape
    rows = np.minimum(((np.arange(h) + 0.5) * mask.shape[0] / h).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mask.shape[1] / w).astype(np.int64), mask.shape[1] - 1)
    return np.ascontiguousarray(mask[rows[:, None], cols[None, :]])


def estimate_cell_diameter(x_chw: np.ndarray, *, step: int = 2) -> float | None:
    """A rough typical diameter (px) of the objects in a normalised (C, H, W) image.

    Per channel (clipped to [0, 1]), Otsu's threshold splits foreground from background; for
    discs of diameter ``d`` the area over the perimeter is ``d / 4``, and the perimeter is
    counted as foreground/background changes along rows and columns (``4 / pi`` times the
    Euclidean length for round shapes). The largest reading over the channels is returned:
    the channel that fills whole cells (a cytosolic marker, actin) outlines them best.
    Compartments, dark vacuoles and touching cells bias the reading, so it is only compared
    with the same measurement on a model's training images (``measured_cell_diameter``): good
    for telling a 1.5x scale mismatch, not for measuring cells. ``step`` subsamples for speed.

    Returns:
        the reading in px, or None when no channel has enough foreground to tell.
    """
    x = np.clip(np.asarray(x_chw, dtype=np.float32)[:, ::step, ::step], 0.0, 1.0)
    if x.shape[1] * x.shape[2] < 64:
        return None
    readings = [d for d in (_disc_diameter(plane) for plane in x) if d is not None]
    return max(readings) * step if readings else None


_BINS = 64
_CENTRES = (np.arange(_BINS) + 0.5) / _BINS


def otsu_threshold(plane: np.ndarray) -> float:
    """Otsu's threshold of a plane clipped to [0, 1], on a 64-bin histogram (the centre of the best bin)."""
    # np.histogram(plane, 64, (0, 1)) of a plane clipped to [0, 1], by bincount: the same counts (x * 64 is exact
    # in float32), five times faster
    index = np.multiply(plane, np.float32(_BINS), dtype=np.float32).astype(np.intp)
    np.clip(index, 0, _BINS - 1, out=index)
    hist = np.bincount(index.ravel(), minlength=_BINS)
    centres = _CENTRES
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (m0[-1] - m0) / w1) ** 2
    between[~np.isfinite(between)] = -1
    return float(centres[int(np.argmax(between))])


def _disc_diameter(plane: np.ndarray) -> float | None:
    fg = plane > otsu_threshold(plane)
    area = int(np.count_nonzero(fg))
    if area < 16 or area > 0.95 * fg.size:
        return None
    transitions = int(np.count_nonzero(fg[1:] != fg[:-1]) + np.count_nonzero(fg[:, 1:] != fg[:, :-1]))
    return float(16.0 * area / (np.pi * transitions)) if transitions else None
