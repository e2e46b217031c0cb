"""Reading images and writing outputs safely.

Every file milcnn writes goes to a temporary name in the same folder and is renamed into
place when complete, so a killed process never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import logging
import tempfile
import threading
from pathlib import Path

import numpy as np

from milcnn.errors import ImageReadError
from milcnn.io.metadata import ImageMeta, ome_names, ome_pixels, tiff_pixel_size

log = logging.getLogger(__name__)

__all__ = ["read_image", "open_image", "write_tiff", "write_label_tiff", "write_atomic",
           "TIFF_SUFFIXES", "PIL_SUFFIXES"]

TIFF_SUFFIXES = (".tif", ".tiff")
_UMASK = os.umask(0)
os.umask(_UMASK)
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")


class _ReadingFilter(logging.Filter):
    """Drops tifffile's log records in a thread while milcnn reads a file with it: what is wrong
    with the file becomes one ImageReadError instead. Thread-local, so other threads keep their logs."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_TIFFFILE_FILTER = _ReadingFilter()


@contextlib.contextmanager
def _quiet_tifffile():
    logger = logging.getLogger("tifffile")
    if _TIFFFILE_FILTER not in logger.filters:
        logger.addFilter(_TIFFFILE_FILTER)
    _ReadingFilter.active.on = True
    try:
        yield
    finally:
        _ReadingFilter.active.on = False


def read_image(path, *, max_values: int | None = None) -> np.ndarray:
    """Read a TIFF, PNG or JPEG image into a numpy array, keeping its dtype and axes.

    The size the file declares is checked against ``max_values`` (pixels x channels x pages) from its
    header, before any pixel is read, so a small file that would decompress to gigabytes is refused
    at once. TIFFs that tifffile cannot decode without an optional codec (LZW, JPEG, zstd) are read
    through Pillow's libtiff.

    Args:
        path: the file.
        max_values: the budget (default ``constants.MAX_IMAGE_VALUES``, env ``MILCNN_MAX_IMAGE_VALUES``).

    Returns:
        the pixel array as stored (H x W, C x H x W, H x W x C, ...).

    Raises:
        ImageReadError: the file is missing, not a regular file, empty, over the budget, truncated, or not
            a supported image.
    """
    return _read(path, max_values)[0]


def _read(path, max_values: int | None) -> tuple[np.ndarray, "ImageMeta"]:
    """``read_image``, and what the file says of itself (``ImageMeta``), from the one opening of the file."""
    from milcnn import constants

    path = Path(path)
    budget = constants.MAX_IMAGE_VALUES if max_values is None else max_values
    if not path.exists():
        if path.is_symlink():
            raise ImageReadError(path, "not a regular file (a symbolic link that leads nowhere: broken or looping)")
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, f"not a regular file ({_kind(path)})")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path, budget)
    if suffix in PIL_SUFFIXES:
        return _read_pil(path, budget), ImageMeta()
    raise ImageReadError(
        path, f"unsupported file type {suffix or '(no extension)'!r}; use {', '.join(TIFF_SUFFIXES + PIL_SUFFIXES)}"
    )


def open_image(path, *, max_values: int | None = None, max_lazy_pixels: int | None = None):
    """``read_image``, except that a TIFF over the budget is opened to be read a window at a time
    (``milcnn.io.lazy.LazyTiff``) when its layout allows and each plane holds at most
    ``max_lazy_pixels`` (default ``constants.MAX_LAZY_PIXELS``, env ``MILCNN_MAX_LAZY_PIXELS``).

    Returns:
        (image, meta): a numpy array or a ``LazyTiff`` (C, H, W); and what the file declares of itself
        (``ImageMeta``: channel names and their axis, pixel size).

    Raises:
        ImageReadError: as ``read_image``; over the budget and not readable lazily (says why).
    """
    from milcnn import constants

    budget = constants.MAX_IMAGE_VALUES if max_values is None else max_values
    try:
        return _read(path, budget)
    except ImageReadError as exc:
        path = Path(path)
        if "over the budget" not in exc.reason or path.suffix.lower() not in TIFF_SUFFIXES:
            raise
        from milcnn.errors import NotLazy
        from milcnn.io.lazy import LazyTiff

        lazy_budget = constants.MAX_LAZY_PIXELS if max_lazy_pixels is None else max_lazy_pixels
        try:
            with _quiet_tifffile():
                image = LazyTiff(path)
        except NotLazy as why:
            raise ImageReadError(path, f"{exc.reason}; it cannot be read a tile at a time either ({why})") from None
        plane = image.shape[1] * image.shape[2]
        if plane > lazy_budget:
            image.close()
            raise ImageReadError(path, f"{exc.reason}; read a tile at a time, its {image.shape[1]} x {image.shape[2]} "
                                       f"px planes are over the {lazy_budget:,} px its outputs may take (set "
                                       "MILCNN_MAX_LAZY_PIXELS to raise it)") from None
        return image, ImageMeta()


def _kind(path: Path) -> str:
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as exc:  # a symlink loop, a dangling link
        return f"cannot be opened: {exc.strerror or exc}"
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def _over_budget(path: Path, shape, budget: int) -> None:
    n = int(np.prod([int(v) for v in shape], dtype=np.float64))
    if n > budget:
        raise ImageReadError(path, f"declares {' x '.join(map(str, shape))} = {n:,} values, over the budget of "
                                   f"{budget:,} (set MILCNN_MAX_IMAGE_VALUES to raise it, if the memory is there)")


def _too_many_pages(tif, path: Path) -> None:
    """Refuses a TIFF of more than ``constants.MAX_TIFF_PAGES`` pages before its series are parsed."""
    from milcnn import constants

    limit = constants.MAX_TIFF_PAGES
    try:
        tif.pages[limit]  # follows the page offsets up to the limit only
    except IndexError:
        return
    raise ImageReadError(path, f"holds more than {limit:,} pages (a multi-position, Z or time series file?); a field "
                               "is one page per channel: save one field per file, or set MILCNN_MAX_TIFF_PAGES")


def _read_tiff(path: Path, budget: int) -> tuple[np.ndarray, ImageMeta]:
    import tifffile

    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            _too_many_pages(tif, path)
            series = tif.series[0] if tif.series else None
            if series is None:
                raise ImageReadError(path, "not a readable TIFF (no image data)")
            _over_budget(path, series.shape, budget)  # from the header: no pixel read yet
            pixels = ome_pixels(tif)
            named = ome_names(tif, pixels)
            meta = ImageMeta(*(tuple(named[0]), named[1]) if named else (None, None),
                             pixel_size=tiff_pixel_size(tif, pixels, path))
            try:
                array = series.asarray()
            except (ValueError, ImportError) as exc:
                if "imagecodecs" not in str(exc) and not isinstance(exc, ImportError):
                    raise
                array = _read_tiff_with_pillow(path, exc)
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise ImageReadError(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from None
    if array.size == 0 or array.ndim < 2:
        raise ImageReadError(path, f"not a readable TIFF (no image data: shape {array.shape})")
    return array, meta


def _read_tiff_with_pillow(path: Path, cause: Exception) -> np.ndarray:
    """The pages of a TIFF whose compression tifffile cannot decode here, through Pillow's libtiff."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            frames = []
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                frames.append(np.asarray(im))
    except Exception as exc:
        raise ImageReadError(path, f"its compression needs a codec this install lacks ({cause}); Pillow could not "
                                   f"read it either ({exc}); pip install imagecodecs") from None
    return frames[0] if len(frames) == 1 else np.stack(frames)


def _read_pil(path: Path, budget: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            _over_budget(path, (im.height, im.width, len(im.getbands())), budget)
            im.load()
            return np.asarray(im)
    except Image.DecompressionBombError as exc:  # Pillow's own check, in open() for the largest
        size = str(exc).split("(")[1].split(" ")[0] if "(" in str(exc) else ""
        size = f"{int(size):,}" if size.isdigit() else "too many"
        raise ImageReadError(path, f"declares {size} pixels, over the budget of {budget:,} values (Pillow's "
                                   "decompression-bomb check)") from None
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"not a readable {path.suffix[1:].upper()} ({exc})") from None


@contextlib.contextmanager
def write_atomic(path, mode: str = "wb", *, durable: bool = True, **kwargs):
    """Open a temporary file beside ``path``; rename it to ``path`` only if the block succeeds.

    Either way a killed process leaves the old file or the complete new one. ``durable`` also
    fsyncs the data before the rename, so that holds across a power cut too. ``milzoo predict``
    skips it for its per-image masks and overlays, as for its predictions.csv rows: a power cut
    can lose the last few seconds of results, files and rows alike.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name stays short (a long file name plus the prefix and suffix would pass the 255-byte limit)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_tiff(path, array: np.ndarray, *, durable: bool = True, pixel_size: float | None = None) -> None:
    """Write ``array`` as a plain (deterministic, uncompressed-metadata-free) TIFF, atomically
    (``durable``: see ``write_atomic``). With ``pixel_size`` (um) it is an ImageJ TIFF whose resolution
    and unit say so (``open_image`` reads it back), as Fiji and most microscope software write it."""
    import tifffile

    buffer = io.BytesIO()
    array = np.asarray(array)
    if pixel_size is None:
        tifffile.imwrite(buffer, array, photometric="minisblack", metadata=None)
    else:
        axes = {2: "YX", 3: "CYX"}.get(array.ndim)
        if axes is None:
            raise ValueError(f"a TIFF with a pixel size is written from (Y, X) or (C, Y, X), got shape {array.shape}")
        tifffile.imwrite(buffer, array, imagej=True, resolution=(1.0 / pixel_size, 1.0 / pixel_size),
                         metadata={"axes": axes, "unit": "um"})
    with write_atomic(path, "wb", durable=durable) as fh:
        fh.write(buffer.getbuffer())


def write_label_tiff(path, labels: np.ndarray, classes, colours: np.ndarray, *, durable: bool = True) -> None:
    """Write a label mask (0 background, ``k + 1`` class ``k``) as an ImageJ TIFF that opens coloured in
    Fiji: a lookup table with class ``k``'s colour at ``k + 1`` (black background), and the class names
    in the image's Info property (``1 = ER`` ...). Deterministic and atomic, like ``write_tiff``.

    Args:
        labels: (H, W) uint8 or uint16.
        classes: the class names, in label order.
        colours: (n, 3) uint8, class ``k`` takes ``colours[k % n]``.
    """
    import tifffile

    labels = np.asarray(labels)
    lut = np.zeros((3, 256 if labels.dtype == np.uint8 else 65536), dtype=np.uint8)
    for k in range(min(len(classes), lut.shape[1] - 1)):
        lut[:, k + 1] = colours[k % len(colours)]
    info = "milcnn label mask\n0 = background\n" + "\n".join(f"{k + 1} = {c}" for k, c in enumerate(classes))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels, imagej=True, metadata={"LUTs": [lut], "Info": info})
    with write_atomic(path, "wb", durable=durable) as fh:
        fh.write(buffer.getbuffer())
