import torch
from torch import nn

from ..pooling._mask import expand_mask, masked_mean


class MeanPool(nn.Module):
    r"""Mean pooling: :math:`P_i = \frac{1}{N} \sum_j p_{ij}`. Every instance, background
    included, votes; a phenotype in few cells gives a low bag probability."""

    def forward(self, maps: torch.Tensor, features: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean(maps, expand_mask(mask, maps))  # (B, C)
