"""File checksums: the one place a model file is hashed and checked against its pin."""

from __future__ import annotations

import hashlib
from pathlib import Path

from milcnn import constants
from milcnn.errors import ChecksumMismatchError, ModelConfigError

__all__ = ["sha256_of", "verify_sha256"]


def sha256_of(path, *, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path, expected: str | None) -> None:
    """Check ``path`` against ``expected`` (nothing to check when None).

    Raises:
        ChecksumMismatchError: the file's sha256 differs (names the file and both checksums).
    """
    if expected is None:
        return
    if not Path(path).is_file():  # a FIFO would block the read, a device never end it
        raise ModelConfigError(f"{path}: not a regular file; a model file is one")
    size = Path(path).stat().st_size
    if size > constants.MAX_MODEL_BYTES:  # hashing a (sparse) 50 GB file would take minutes
        raise ModelConfigError(f"{path}: {size:,} bytes, over the {constants.MAX_MODEL_BYTES:,} a self-contained "
                               "ONNX model can hold")
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumMismatchError(Path(path), expected, actual)
