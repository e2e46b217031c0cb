import torch
from torch import nn


class MaxPool(nn.Module):
    r"""Max pooling: :math:`P_i = \max_j p_{ij}`. A bag is positive if any instance is
    (the standard MIL assumption), so a single bright outlier can flip it."""

    def forward(self, maps: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        return maps.flatten(2).amax(dim=2)  # (B, C)
