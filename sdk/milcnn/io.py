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

__all__ = ["read_image", "write_tiff", "write_atomic", "TIFF_SUFFIXES", "PIL_SUFFIXES"]

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


def read_image(path) -> np.ndarray:
    """Read a TIFF, PNG or JPEG image into a numpy array, keeping its dtype and axes.

    Args:
        path: the file.

    Returns:
        the pixel array as stored (H x W, C x H x W, H x W x C, ...).

    Raises:
        ImageReadError: the file is missing, empty, truncated, or not a supported image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            with _quiet_tifffile():
                array = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise ImageReadError(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from None
        if array.size == 0 or array.ndim < 2:
            raise ImageReadError(path, f"not a readable TIFF (no image data: shape {array.shape})")
        return array
    if suffix in PIL_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
                return np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(path, f"not a readable {suffix[1:].upper()} ({exc})") from None
    raise ImageReadError(
        path, f"unsupported file type {suffix or '(no extension)'!r}; use {', '.join(TIFF_SUFFIXES + PIL_SUFFIXES)}"
    )


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
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


def write_tiff(path, array: np.ndarray, *, durable: bool = True) -> None:
    """Write ``array`` as a plain (deterministic, uncompressed-metadata-free) TIFF, atomically
    (``durable``: see ``write_atomic``)."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.asarray(array), photometric="minisblack", metadata=None)
    with write_atomic(path, "wb", durable=durable) as fh:
        fh.write(buffer.getbuffer())
