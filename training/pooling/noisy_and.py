import torch
from torch import nn

from ..pooling._mask import expand_mask, masked_mean


class NoisyAndPool(nn.Module):
    r"""Noisy-AND pooling (Kraus, Ba & Frey, Bioinformatics 2016, eq. 3).

    .. math::
        P_i = \frac{\sigma(a(\bar p_i - b_i)) - \sigma(-a b_i)}{\sigma(a(1 - b_i)) - \sigma(-a b_i)}

    where :math:`\bar p_i` is the mean of class ``i``'s instance probabilities, ``a`` a fixed
    slope and ``b_i`` a learned per-class threshold in [0, 1] (stored as a logit, so it can
    never leave the interval). A bag is positive when more than about a fraction ``b_i``
    of its instances are, so a few outlier cells do not flip it.

    Args:
        n_classes: number of classes (one threshold each).
        a: the fixed slope; the paper uses 5, 7.5 or 10.
        b_init: initial threshold, in (0, 1).
    """

    def __init__(self, n_classes: int, *, a: float = 10.0, b_init: float = 0.1):
        super().__init__()
        if a <= 0:
            raise ValueError(f"Noisy-AND slope a must be positive, got {a}")
        if not 0.0 < b_init < 1.0:
            raise ValueError(f"Noisy-AND b_init must be in (0, 1), got {b_init}")
        self.a = float(a)
        self.b_logit = nn.Parameter(torch.full((n_classes,), float(torch.logit(torch.tensor(b_init)))))

    @property
    def b(self) -> torch.Tensor:
        return torch.sigmoid(self.b_logit)  # (C,)

    def forward(self, maps: torch.Tensor, features: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        mean = masked_mean(maps, expand_mask(mask, maps))  # (B, C), over the image's instances only
        b = self.b  # (C,)
        low = torch.sigmoid(-self.a * b)  # (C,)
        high = torch.sigmoid(self.a * (1 - b))  # (C,)
        return ((torch.sigmoid(self.a * (mean - b)) - low) / (high - low)).clamp(0.0, 1.0)  # (B, C)
