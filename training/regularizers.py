"""Edge-aware smoothness of class maps, a regularised loss for weakly supervised segmentation.

Image-level labels never say where a class is, and a mean-based MIL pooling (Noisy-AND,
mean, GM) rewards every extra positive instance, so class maps spread into the
background next to positive cells, as far as the receptive field lets a pixel see the
cell. Following Tang et al. (ECCV 2018, "On regularized losses for weakly-supervised CNN
segmentation"), we add a pairwise term that makes a map boundary cheap where the image has
an edge (the cell wall) and costly across uniform regions:

.. math::
    L_s = \\frac{1}{|\\mathcal{N}|} \\sum_{(i, j) \\in \\mathcal{N}} w_{ij} \\sum_k (p_{ik} - p_{jk})^2,
    \\qquad w_{ij} = \\exp\\left(-\\frac{\\lVert f_i - f_j \\rVert^2}{2 \\sigma^2}\\right)

over pairs of map pixels ``i, j`` at most ``radius`` apart, with ``f`` the normalised
image averaged over each map pixel's input pixels. Weight 0 gives the paper's objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["edge_aware_smoothness"]


def _pairs(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(0, radius + 1) for dx in range(-radius, radius + 1)
            if (dy > 0 or dx > 0) and dy * dy + dx * dx <= radius * radius]


def edge_aware_smoothness(maps: torch.Tensor, image: torch.Tensor, *, stride: int, sigma: float = 0.1,
                          radius: int = 2) -> torch.Tensor:
    """The pairwise loss above, averaged over pairs and the batch.

    Args:
        maps: (B, K, h, w) instance probabilities.
        image: (B, C, H, W) normalised input, ``H <= h * stride``.
        stride: the model's output stride.
        sigma: intensity scale of an edge, in normalised units.
        radius: largest pixel offset of a pair, on the map grid.
    """
    h, w = maps.shape[-2:]
    pad_h, pad_w = h * stride - image.shape[-2], w * stride - image.shape[-1]
    feats = F.avg_pool2d(F.pad(image, (0, pad_w, 0, pad_h)), stride)  # (B, C, h, w)
    total = maps.new_zeros(())
    count = 0
    for dy, dx in _pairs(radius):
        ys, yd = slice(0, h - dy), slice(dy, h)
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        affinity = torch.exp(-((feats[..., ys, xs] - feats[..., yd, xd]) ** 2).sum(1) / (2 * sigma**2))  # (B, h', w')
        diff = ((maps[..., ys, xs] - maps[..., yd, xd]) ** 2).sum(1)  # (B, h', w')
        total = total + (affinity * diff).mean()
        count += 1
    return total / count
