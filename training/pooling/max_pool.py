import torch
from torch import nn

from ..pooling._mask import expand_mask


class MaxPool(nn.Module):
    r"""Max pooling: :math:`P_i = \max_j p_{ij}`. A bag is positive if any instance is
    (the standard MIL assumption), so a single bright outlier can flip it."""

    def forward(self, maps: torch.Tensor, features: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = expand_mask(mask, maps)
        if mask is not None:
            maps = maps.masked_fill(~mask, 0.0)  # probabilities are >= 0: padding never wins
        return maps.flatten(2).amax(dim=2)  # (B, C)
