import math

import torch
from torch import nn

from ..pooling._mask import expand_mask


class LogSumExpPool(nn.Module):
    r"""Log-sum-exp pooling (Ramon & De Raedt 2000):
    :math:`P_i = \frac{1}{r} \log \frac{1}{N} \sum_j e^{r p_{ij}}`.

    A smooth maximum: ``r -> 0`` gives the mean, ``r -> inf`` the max; the output stays in
    [min, max] of the instances, so in [0, 1].

    Args:
        r: sharpness, > 0 (the paper compares r = 0.5 to 5; default 5).
    """

    def __init__(self, *, r: float = 5.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"log-sum-exp sharpness r must be positive, got {r}")
        self.r = float(r)

    def forward(self, maps: torch.Tensor, features: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = expand_mask(mask, maps)
        flat = self.r * maps.flatten(2)  # (B, C, N)
        if mask is None:
            return (torch.logsumexp(flat, dim=2) - math.log(flat.shape[2])) / self.r  # (B, C)
        valid = mask.flatten(2)  # (B, 1, N)
        flat = flat.masked_fill(~valid, float("-inf"))
        count = valid.sum(dim=2).clamp(min=1).to(maps.dtype)  # (B, 1)
        return (torch.logsumexp(flat, dim=2) - torch.log(count)) / self.r  # (B, C)
