import torch
from torch import nn

from ..pooling._mask import expand_mask, masked_mean


class GeneralizedMeanPool(nn.Module):
    r"""Generalized-mean pooling: :math:`P_i = \left(\frac{1}{N} \sum_j p_{ij}^r\right)^{1/r}`.

    ``r = 1`` is the mean, ``r -> inf`` the max.

    Args:
        r: the exponent, > 0 (default 2.5).
        eps: floor on instance probabilities, for a finite gradient at 0.
    """

    def __init__(self, *, r: float = 2.5, eps: float = 1e-6):
        super().__init__()
        if r <= 0:
            raise ValueError(f"generalized-mean exponent r must be positive, got {r}")
        self.r = float(r)
        self.eps = float(eps)

    def forward(self, maps: torch.Tensor, features: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        powered = maps.clamp(min=self.eps).pow(self.r)  # (B, C, h, w)
        return masked_mean(powered, expand_mask(mask, maps)).pow(1.0 / self.r).clamp(0.0, 1.0)  # (B, C)
