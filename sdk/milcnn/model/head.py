"""``config.json``'s ``head`` block: where a model's head (the 1 x 1 convolution from features to class-map
logits) lies in ``model.onnx``, and the second graph that gives its features (``python -m training.features``).
``milzoo adapt`` (``milcnn.predict.adapt``) fits new head weights and writes them at these offsets."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HeadRecord"]


@dataclass(frozen=True)
class HeadRecord:
    """features_file: the graph whose output ``features`` is (1, F, h, w); weight: (K, F, 1, 1) float32 and bias:
    (K,) float32, each at its byte ``offset`` in ``model.onnx`` (raw, little-endian)."""

    features_file: str
    features_output: str
    weight_shape: tuple[int, ...]
    weight_offset: int
    bias_offset: int

    @property
    def features(self) -> int:
        return self.weight_shape[1]

    def to_dict(self) -> dict:
        return {"features_file": self.features_file, "features_output": self.features_output,
                "weight": {"shape": list(self.weight_shape), "offset": self.weight_offset},
                "bias": {"shape": [self.weight_shape[0]], "offset": self.bias_offset}}

    @classmethod
    def from_dict(cls, d: dict, *, n_classes: int) -> "HeadRecord":
        """Raises ValueError for shapes that are not this model's (K classes), or offsets that are not byte counts."""
        try:
            shape = tuple(int(v) for v in d["weight"]["shape"])
            record = cls(str(d["features_file"]), str(d.get("features_output", "")), shape,
                         int(d["weight"]["offset"]), int(d["bias"]["offset"]))
            bias = [int(v) for v in d["bias"]["shape"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"head: malformed ({type(exc).__name__}: {exc})") from None
        if len(shape) == 4 and shape[0] != n_classes:
            raise ValueError(f"the config lists {n_classes} classes but model.onnx outputs {shape[0]} (its head)")
        if len(shape) != 4 or shape[2:] != (1, 1) or bias != [n_classes]:
            raise ValueError(f"head: weight shape {list(shape)} and bias shape {bias} are not a 1 x 1 convolution to "
                             f"{n_classes} classes")
        if min(record.weight_offset, record.bias_offset) < 0:
            raise ValueError("head: offsets must be byte counts")
        if "/" in record.features_file or "\\" in record.features_file or record.features_file in ("", ".", ".."):
            raise ValueError(f"head.features_file must be a file name inside the model folder, got "
                             f"{record.features_file!r}")
        return record
