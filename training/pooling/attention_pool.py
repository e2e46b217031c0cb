import torch
from torch import nn

from ..pooling._mask import expand_mask


class GatedAttentionPool(nn.Module):
    r"""Gated attention MIL pooling (Ilse, Tomczak & Welling, ICML 2018), one head per class.

    .. math::
        e_{ij} = w_i^\top \left(\tanh(V h_j) \odot \sigma(U h_j)\right), \quad
        \alpha_{ij} = \mathrm{softmax}_j(e_{ij}), \quad P_i = \sum_j \alpha_{ij} p_{ij}

    ``h_j`` is instance ``j``'s embedding: the backbone's features at that map position when
    the model passes them, otherwise the class probabilities themselves. The output is a
    convex combination of instance probabilities, so it stays in [0, 1]. The last
    attention weights are kept in ``last_weights`` (B, C, h, w) for inspection.

    Args:
        in_features: embedding size ``D`` of ``h_j``.
        n_classes: number of classes (one attention head each).
        hidden: size of the gated attention layer.
    """

    def __init__(self, in_features: int, n_classes: int, *, hidden: int = 64):
        super().__init__()
        if in_features < 1 or n_classes < 1 or hidden < 1:
            raise ValueError(f"in_features, n_classes and hidden must be >= 1, got {in_features}, {n_classes}, {hidden}")
        self.V = nn.Conv2d(in_features, hidden, 1)
        self.U = nn.Conv2d(in_features, hidden, 1)
        self.w = nn.Conv2d(hidden, n_classes, 1)
        self.last_weights: torch.Tensor | None = None

    def weights(self, maps: torch.Tensor, features: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights (B, C, h, w), summing to 1 over each map's valid instances (0 on padding)."""
        h = maps if features is None else features  # (B, D, h, w)
        gated = torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))  # (B, hidden, h, w)
        scores = self.w(gated)  # (B, C, h, w)
        mask = expand_mask(mask, maps)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores.flatten(2), dim=2).view_as(scores)  # (B, C, h, w)

    def forward(self, maps: torch.Tensor, features: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        alpha = self.weights(maps, features, mask)  # (B, C, h, w)
        self.last_weights = alpha.detach()
        return (alpha * maps).sum(dim=(2, 3)).clamp(0.0, 1.0)  # (B, C)
