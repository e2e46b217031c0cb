"""What an image file says of itself: OME-TIFF channel names and the pixel size of OME-TIFF, ImageJ TIFF
(and, through ``pixel_size_um``, OME-Zarr) metadata, in um."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ImageMeta", "pixel_size_um", "ome_pixels", "tiff_pixel_size", "ome_names"]


@dataclass(frozen=True)
class ImageMeta:
    """What an image file declares of itself: the channel names of an OME-TIFF with the array axis that
    holds them (None for other files, or when they are incomplete), and the pixel size in um (OME-TIFF
    ``PhysicalSizeX``/``Y`` with their units, ImageJ TIFF resolution and unit; None where it gives none)."""

    channel_names: tuple[str, ...] | None = None
    channel_axis: int | None = None
    pixel_size: float | None = None


#: length units to um, by the names OME (UnitsLength), ImageJ and OME-Zarr (UDUNITS-2) give them
_UNITS_UM = {"um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
             "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "mm": 1e3, "millimeter": 1e3,
             "millimetre": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6, "metre": 1e6,
             "\u00e5": 1e-4, "angstrom": 1e-4,
             "\\u00b5m": 1.0}  # the last: ImageJ's escaped micro sign, as some writers store it


def pixel_size_um(sizes, unit, *, source) -> float | None:
    """One pixel size in um from the x and y sizes a file gives (None where missing) in ``unit``.

    A size that is not a positive finite number, or a unit that is not a length (ImageJ's ``pixel``,
    ``inch`` DPI defaults), gives None with a logged notice naming ``source``: the image then runs at the
    model's default scale. Anisotropic pixels give their geometric mean."""
    factor = _UNITS_UM.get(str(unit).strip().lower() if unit is not None else "um")
    if factor is None:
        if str(unit).strip().lower() not in ("pixel", "pixels", "px", "", "none", "inch"):
            log.info("%s: pixel size unit %r is not a length milcnn knows; its scale is not used", source, unit)
        return None
    values = []
    for v in sizes:
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            v = float("nan")
        if not (np.isfinite(v) and v > 0):
            log.info("%s: declares a pixel size of %r; its scale is not used", source, v)
            return None
        values.append(v * factor)
    if not values:
        return None
    size = float(np.exp(np.mean(np.log(values))))
    return size if 1e-4 <= size <= 1e4 else None  # beyond: a placeholder, not a microscope's pixel


def ome_pixels(tif) -> dict | None:
    """The ``Pixels`` element of an open OME-TIFF's first image, parsed once; None when it is not OME or
    its OME-XML is unreadable."""
    import tifffile

    if not tif.is_ome:
        return None
    try:
        image = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image", {})
    except Exception:  # noqa: BLE001 - unreadable OME-XML: no names or scale to use
        return None
    image = image[0] if isinstance(image, list) else image
    return image.get("Pixels", {}) if isinstance(image, dict) else None


def tiff_pixel_size(tif, pixels: dict | None, path) -> float | None:
    """The pixel size of an open TIFF: OME-XML's PhysicalSize (``pixels``), else ImageJ's resolution and unit."""
    if tif.is_ome:
        if not isinstance(pixels, dict):
            return None
        x, y = pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeY")
        unit = pixels.get("PhysicalSizeXUnit", "um")  # OME's default unit
        return pixel_size_um((x, y), unit, source=path) if (x is not None or y is not None) else None
    if tif.is_imagej:
        unit = (tif.imagej_metadata or {}).get("unit")
        if unit is None:
            return None
        page = tif.pages.first
        sizes = []
        for tag in ("XResolution", "YResolution"):
            value = page.tags.get(tag)
            if value is None:
                continue
            num, den = value.value if isinstance(value.value, tuple) else (value.value, 1)
            sizes.append(den / num if num else None)
        return pixel_size_um(sizes, unit, source=path) if sizes else None
    return None


def ome_names(tif, pixels: dict | None) -> tuple[list[str], int] | None:
    """The channel names an open OME-TIFF declares (``pixels``: ``ome_pixels``) and the axis of its first
    series that holds them; None when it is not OME or the names are missing or incomplete."""
    if pixels is None or not tif.series or "C" not in tif.series[0].axes:
        return None
    channels = pixels.get("Channel", [])
    channels = channels if isinstance(channels, list) else [channels]
    names = [str(c.get("Name", "")) for c in channels if isinstance(c, dict)]
    if not names or not all(names):
        return None
    return names, tif.series[0].axes.index("C")
