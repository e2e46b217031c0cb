"""Checkpoint files (``best.pt``, ``last.pt``): the format, saving and loading, in one place."""

from __future__ import annotations

from pathlib import Path

import torch

from milcnn.io.images import write_atomic
from .model import MILCNN, ModelConfig

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "read_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "milcnn-checkpoint/1"


def read_checkpoint(path) -> dict:
    """A checkpoint's contents (weights only, no pickled code).

    Raises:
        ValueError: the file is not a milcnn checkpoint (names it and the format found).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: not a milcnn checkpoint (format {found!r})")
    return ckpt


def load_checkpoint(path) -> tuple[MILCNN, dict]:
    """Rebuild the model saved in ``path``, in eval mode; returns it and the checkpoint's contents."""
    ckpt = read_checkpoint(path)
    model = MILCNN(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def save_checkpoint(obj: dict, path: Path) -> None:
    """Write a checkpoint atomically (a killed run leaves the previous file whole)."""
    with write_atomic(path, "wb") as fh:
        torch.save(obj, fh)
