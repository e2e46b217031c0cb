"""MIL pooling: class maps of instance probabilities (B, C, h, w) -> bag probabilities (B, C).

Every operator has ``forward(maps, features=None, mask=None)``: ``mask`` (B, h, w) bool marks the
instances that come from the image (False: padding added to reach the model's minimum size), and
only those are pooled. ``build_pooling`` makes one from the name and parameters stored in a
model's config.
"""

from __future__ import annotations

from torch import nn

from ..pooling.attention_pool import GatedAttentionPool
from ..pooling.gm_pool import GeneralizedMeanPool
from ..pooling.lse_pool import LogSumExpPool
from ..pooling.max_pool import MaxPool
from ..pooling.mean_pool import MeanPool
from ..pooling.noisy_and import NoisyAndPool

__all__ = [
    "POOLINGS",
    "build_pooling",
    "NoisyAndPool",
    "MaxPool",
    "MeanPool",
    "LogSumExpPool",
    "GeneralizedMeanPool",
    "GatedAttentionPool",
]

POOLINGS = ("noisy_and", "max", "mean", "lse", "gm", "attention")


def build_pooling(name: str, *, n_classes: int, in_features: int, params: dict | None = None) -> nn.Module:
    """Make the pooling layer ``name`` with ``params`` (e.g. ``{"a": 10}`` for Noisy-AND).

    Raises:
        ValueError: unknown name, or a parameter the operator does not take.
    """
    params = dict(params or {})
    try:
        if name == "noisy_and":
            return NoisyAndPool(n_classes, **params)
        if name == "max":
            return MaxPool(**params)
        if name == "mean":
            return MeanPool(**params)
        if name == "lse":
            return LogSumExpPool(**params)
        if name == "gm":
            return GeneralizedMeanPool(**params)
        if name == "attention":
            return GatedAttentionPool(in_features, n_classes, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters {params} for pooling {name!r}: {exc}") from None
    raise ValueError(f"unknown pooling {name!r}; choose from {', '.join(POOLINGS)}")
