"""Validity masks shared by the pooling operators (padding added to an image is not an instance)."""

from __future__ import annotations

import torch


def expand_mask(mask: torch.Tensor | None, maps: torch.Tensor) -> torch.Tensor | None:
    """``mask`` (B, h, w) or (B, 1, h, w) bool -> (B, 1, h, w) bool matching ``maps`` (B, C, h, w);
    None stays None (every instance is valid)."""
    if mask is None:
        return None
    if mask.dim() == 3:
        mask = mask[:, None]
    if mask.shape[0] != maps.shape[0] or mask.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"instance mask of shape {tuple(mask.shape)} does not fit class maps {tuple(maps.shape)}")
    return mask.to(torch.bool)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` (B, C, h, w) over the valid instances -> (B, C)."""
    if mask is None:
        return x.mean(dim=(2, 3))
    m = mask.to(x.dtype)  # (B, 1, h, w)
    return (x * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3)).clamp(min=1.0)
