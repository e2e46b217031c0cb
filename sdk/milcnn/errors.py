"""Typed errors of milcnn. Each inherits a stdlib base, so ``except ValueError`` still works,
and each message quotes the offending value."""

from __future__ import annotations

__all__ = ["MilcnnError", "ImageReadError"]


class MilcnnError(Exception):
    """Base class of milcnn's own errors."""


class ImageReadError(MilcnnError, ValueError):
    """An image file is missing, empty, truncated or not an image milcnn can read."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
