"""Typed errors of milcnn. Each inherits a stdlib base (so ``except KeyError`` or
``except ValueError`` still works), quotes the offending value and says what to do."""

from __future__ import annotations

__all__ = [
    "MilcnnError",
    "ImageReadError",
    "ModelNotFoundError",
    "ModelConfigError",
    "ChecksumMismatchError",
    "SelfTestError",
]


class MilcnnError(Exception):
    """Base class of milcnn's own errors."""


class ImageReadError(MilcnnError, ValueError):
    """An image file is missing, empty, truncated or not an image milcnn can read."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelNotFoundError(MilcnnError, KeyError):
    """No model of that name in the zoo, and it is not an ``org/name`` Hub repo or a folder."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = known
        super().__init__(name)

    def __str__(self) -> str:
        return (f"unknown model {self.name!r}; the zoo has {', '.join(self.known)} "
                "(or give a Hub repo as 'org/name', or a folder with model.onnx and config.json)")


class ModelConfigError(MilcnnError, ValueError):
    """A model folder's ``config.json`` is missing, unreadable or lacks a field."""


class ChecksumMismatchError(MilcnnError, ValueError):
    """A model file's sha256 differs from the one pinned in the registry."""

    def __init__(self, path, expected: str, actual: str):
        self.path, self.expected, self.actual = str(path), expected, actual
        super().__init__(f"{path}: sha256 {actual[:12]}... does not match the pinned {expected[:12]}...; "
                         "the file is corrupt or was changed; nothing was deleted")


class SelfTestError(MilcnnError, AssertionError):
    """A model's output on its bundled sample differs from the recorded output."""
