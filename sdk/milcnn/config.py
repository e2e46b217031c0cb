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

    Identity: name, version. Input: channels, normalization, min_size. Head: classes,
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
                                                                  constants.DEFAULT_RECEPTIVE_FIELD)), raw=d,
            )
        except (TypeError, ValueError) as exc:
            raise ModelConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path) -> "ModelInfo":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))
        except FileNotFoundError:
            raise ModelConfigError(f"{path}: not found") from None
        except json.JSONDecodeError as exc:
            raise ModelConfigError(f"{path}: not valid JSON ({exc})") from None
