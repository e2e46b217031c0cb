"""Calibrated probabilities: a model's raw pooled outputs mapped so that "p = 0.8" is right 80 % of the time.

A MIL model's Noisy-AND outputs are independent sigmoids trained on bags; their sizes say little about how
often a call is right (a simulated-only model gives its right class 0.25-0.5 on most images). Calibration
(Guo et al. 2017, "On calibration of modern neural networks") is a small map fitted after training, at
export, on images the model was not trained on (``training/calibrate.py``), and stored in ``config.json``
(``calibration``). Methods, on ``z_k = logit(p_k)`` of the raw probabilities:

- ``temperature``: ``softmax(z / T)`` (one parameter; single-label models);
- ``vector_scaling``: ``softmax(w_k * z_k + b_k)`` (single-label models);
- ``platt``: ``sigmoid(w_k * z_k + b_k)`` per class (multi-label models: classes are not exclusive).

A single-label model's calibrated probabilities sum to 1 over its classes; which method a model uses was
chosen by measurement (the lowest cross-validated negative log-likelihood, recorded with the block).
numpy only: the SDK applies it to every probability it reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Calibration", "METHODS", "logit", "CLIP"]

#: the methods ``Calibration.apply`` knows, and whether each is for single-label (exclusive) classes
METHODS = {"temperature": True, "vector_scaling": True, "platt": False}
#: raw probabilities are clipped to [CLIP, 1 - CLIP] before the logit (float32 sigmoids saturate at 1.0)
CLIP = 1e-6


def logit(p) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities clipped to [CLIP, 1 - CLIP], float64."""
    p = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1.0 - CLIP)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    """``config.json``'s ``calibration`` block: method, per-class ``weight`` and ``bias`` (``temperature``:
    every weight ``1 / T``, biases 0) and ``fitted_on`` (what it was fitted on, with the measurements that
    chose the method: kept as written, for the card)."""

    method: str
    weight: tuple[float, ...]
    bias: tuple[float, ...]
    fitted_on: dict = field(default_factory=dict, compare=False)

    @property
    def exclusive(self) -> bool:
        """Whether the calibrated probabilities of one image sum to 1 (single-label methods)."""
        return METHODS[self.method]

    def apply(self, raw) -> np.ndarray:
        """Calibrated probabilities of raw ones, (..., K) -> (..., K) float64."""
        z = logit(raw) * np.asarray(self.weight) + np.asarray(self.bias)
        if self.exclusive:
            z = z - z.max(axis=-1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=-1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return {"method": self.method, "weight": [float(w) for w in self.weight],
                "bias": [float(b) for b in self.bias], "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d, *, n_classes: int, multi_label: bool) -> "Calibration":
        """Read and check a ``calibration`` block against the model's classes.

        Raises:
            ValueError: what is wrong, naming the field (``config.read`` adds the file).
        """
        if not isinstance(d, dict):
            raise ValueError(f"calibration must be an object, got {type(d).__name__}")
        method = d.get("method")
        if method not in METHODS:
            raise ValueError(f"calibration.method must be one of {', '.join(METHODS)}, got {method!r}")
        if METHODS[method] and multi_label:
            raise ValueError(f"calibration.method {method!r} makes the classes exclusive, but the model is multi-label "
                             "(use 'platt')")
        values = {}
        for key in ("weight", "bias"):
            v = d.get(key)
            if not isinstance(v, list) or len(v) != n_classes:
                got = f"{len(v)} values" if isinstance(v, list) else repr(v)
                raise ValueError(f"calibration.{key} must list one number per class ({n_classes}), got {got}")
            try:
                arr = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"calibration.{key} must hold numbers, got {v!r}") from None
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"calibration.{key} must hold finite numbers, got {v!r}")
            values[key] = tuple(float(x) for x in arr)
        if method != "platt" and not all(w > 0 for w in values["weight"]):
            raise ValueError(f"calibration.weight must be positive for {method!r} (a larger raw probability must not give a smaller calibrated one)")
        return cls(method=method, weight=values["weight"], bias=values["bias"], fitted_on=dict(d.get("fitted_on") or {}))
