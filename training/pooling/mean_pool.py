import torch
from torch import nn


class MeanPool(nn.Module):
    r"""Mean pooling: :math:`P_i = \frac{1}{N} \sum_j p_{ij}`. Every instance, background
    included, votes; a phenotype in few cells gives a low bag probability."""

    def forward(self, maps: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        return maps.mean(dim=(2, 3))  # (B, C)
