"""A released model's ``config.json``: what the SDK needs to feed it and read its outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from milcnn import constants
from milcnn.errors import ModelConfigError
from milcnn.preprocess import NormalizationConfig

__all__ = ["ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """The fields of ``config.json`` (written by ``training/export.py``).

    Identity: name, version. Input: channels, normalization, min_size. Scale (``scale``):
    pixel_size (um per pixel of the training images), cell_diameter (their typical cell
    diameter in px) and measured_cell_diameter (``milcnn.scale.estimate_cell_diameter`` on
    them, the yardstick for the scale warning) and measured_tolerance (the factor around it that
    holds the training images' readings), and input_cell_diameter (the cell diameter in px the model
    assumes of an image given without a scale: the SDK resizes such images by cell_diameter /
    input_cell_diameter); each None where unknown. Head: classes,
    multi_label, pooling, output_stride. Provenance: training_data, metrics.
    """

    name: str
    version: str
    classes: tuple[str, ...]
    channels: tuple[str, ...]
    normalization: NormalizationConfig
    output_stride: int
    min_size: int
    multi_label: bool = False
    pooling: dict = field(default_factory=dict)
    training_data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    receptive_field: int = constants.DEFAULT_RECEPTIVE_FIELD
    pixel_size: float | None = None
    cell_diameter: float | None = None
    measured_cell_diameter: float | None = None
    measured_tolerance: float | None = None
    input_cell_diameter: float | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    def file_sha256(self, name: str) -> str | None:
        """The sha256 that ``config.json`` records for one of the folder's files, if any."""
        entry = self.raw.get("files", {}).get(name)
        return entry.get("sha256") if isinstance(entry, dict) else None

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> "ModelInfo":
        missing = [k for k in ("name", "version", "classes", "channels", "normalization", "output_stride", "min_size")
                   if k not in d]
        if missing:
            raise ModelConfigError(f"{source}: missing field(s) {', '.join(missing)}")
        try:
            return cls(
                name=str(d["name"]), version=str(d["version"]), classes=tuple(d["classes"]),
                channels=tuple(d["channels"]), normalization=NormalizationConfig.from_dict(d["normalization"]),
                output_stride=int(d["output_stride"]), min_size=int(d["min_size"]),
                multi_label=bool(d.get("multi_label", False)), pooling=dict(d.get("pooling", {})),
                training_data=dict(d.get("training_data", {})), metrics=dict(d.get("metrics", {})),
                receptive_field=int(d.get("architecture", {}).get("receptive_field",
                                                                  constants.DEFAULT_RECEPTIVE_FIELD)),
                **_scale_fields(d.get("scale") or {}), raw=d,
            )
        except (TypeError, ValueError) as exc:
            raise ModelConfigError(f"{source}: {exc}") from None

    def scale_dict(self) -> dict:
        """The ``scale`` block of ``config.json`` (None for what is unknown)."""
        return {"pixel_size_um": self.pixel_size, "cell_diameter_px": self.cell_diameter,
                "measured_cell_diameter_px": self.measured_cell_diameter, "measured_tolerance": self.measured_tolerance,
                "input_cell_diameter_px": self.input_cell_diameter}

    @classmethod
    def from_file(cls, path) -> "ModelInfo":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))
        except FileNotFoundError:
            raise ModelConfigError(f"{path}: not found") from None
        except json.JSONDecodeError as exc:
            raise ModelConfigError(f"{path}: not valid JSON ({exc})") from None


SCALE_KEYS = {"pixel_size_um": "pixel_size", "cell_diameter_px": "cell_diameter",
              "measured_cell_diameter_px": "measured_cell_diameter", "measured_tolerance": "measured_tolerance",
              "input_cell_diameter_px": "input_cell_diameter"}


def _scale_fields(block: dict) -> dict:
    """``config.json``'s ``scale`` block as ModelInfo fields; every value positive or null."""
    out = {}
    for key, attr in SCALE_KEYS.items():
        value = block.get(key)
        if value is not None:
            value = float(value)
            if not value > 0:
                raise ValueError(f"scale.{key} must be positive or null, got {value}")
        out[attr] = value
    return out
