"""A released model's ``config.json``: the one definition of its schema.

``ModelInfo`` is what the SDK needs to feed a model and read its outputs; ``read_config`` and
``write_config`` are the only readers and writers of the file (``training/export.py``,
``training/quantize.py``, ``training/model_card.py`` and ``training/finetune.py`` go through them);
``migrate_config`` is the one place that brings older files up to ``CONFIG_FORMAT``.

The file carries its own checksum (``checksum``: the sha256 of its content without that field, written
by ``write_config``), beside the weights' (``files``); a file edited by hand (two class names swapped, a
normalisation percentile changed) no longer matches it and is refused at load. A zoo model's registry
entry also pins the file's sha256 (``milcnn.model.registry.ZooEntry.config_sha256``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from milcnn import constants
from milcnn.model.head import HeadRecord
from milcnn.process.calibration import Calibration
from milcnn.process.cells import CellCounting
from milcnn.errors import ChecksumMismatchError, ModelConfigError
from milcnn.process.preprocess import NormalizationConfig
from milcnn.process.quality import QualityLimits

__all__ = ["ModelInfo", "FileRecord", "Variant", "scale_fields", "CONFIG_FORMAT", "migrate_config", "read_config", "write_config", "content_sha256"]

#: the ``format_version`` that ``write_config`` stamps; 1 is every file written before it existed, 2 added
#: scale, files and variants, 3 the optional ``calibration`` and ``qc`` blocks, 4 the ``checksum``
CONFIG_FORMAT = 4
#: the field that holds the file's own checksum (``content_sha256``), from format 4 on
CHECKSUM_KEY = "checksum"


@dataclass(frozen=True)
class FileRecord:
    """A file of the model folder as ``config.json`` ``files`` records it; the SDK checks it on load."""

    sha256: str
    bytes: int

    @classmethod
    def of(cls, path) -> "FileRecord":
        """The record of a file on disk."""
        from milcnn.model.checksums import sha256_of

        return cls(sha256_of(path), Path(path).stat().st_size)

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Variant:
    """Another precision of the network (``config.json`` ``variants.<precision>``, written by
    ``training/quantize.py``): its ``file`` in the folder, how it was made, the metrics measured on it, and
    ``details`` (anything else it records: its quantisation calibration, the seconds it took)."""

    file: str
    method: str = ""
    metrics: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Variant":
        d = dict(d)
        return cls(file=d.pop("file", None), method=d.pop("method", ""), metrics=d.pop("metrics", {}) or {}, details=d)

    def to_dict(self) -> dict:
        return {"file": self.file, "method": self.method, **self.details, "metrics": self.metrics}


#: config.json's top-level keys in the order ``ModelInfo.to_dict`` writes them (absent optional ones left out)
_ORDER = ("name", "version", "summary", "repo_id", "classes", "channels", "normalization", "output_stride", "min_size",
          "multi_label", "pooling", "scale", "architecture", "training", "training_data", "metrics", "export",
          "files", "variants", "real_images", "format_version", "calibration", "qc", "cells", "head", "trust")


@dataclass(frozen=True)
class ModelInfo:
    """``config.json``, typed: what ``training/export.py`` writes and the SDK reads (``write_config`` and
    ``ModelInfo.from_file`` are its one writer and reader).

    Identity: name, version, summary, repo_id. Input: channels, normalization, min_size. Scale (``scale``):
    pixel_size (um per pixel of the training images), cell_diameter (their typical cell
    diameter in px) and measured_cell_diameter (``milcnn.process.scale.estimate_cell_diameter`` on
    them, the yardstick for the scale warning) and measured_tolerance (the factor around it that
    holds the training images' readings), and input_cell_diameter (the cell diameter in px the model
    assumes of an image given without a scale: the SDK resizes such images by cell_diameter /
    input_cell_diameter; ``input_cell_diameter_from`` says how it was measured); each None where unknown.
    Head: classes, multi_label, pooling, output_stride, architecture (width, context, receptive_field,
    parameters). Provenance: training (the run's settings and history), training_data, metrics, export,
    real_images (``benchmarks/realdata.py``). Files: files (name -> ``FileRecord``), variants (precision ->
    ``Variant``). Trust: calibration (``milcnn.process.calibration.Calibration``, None for a model exported
    before it was fitted: raw probabilities), qc (``milcnn.process.quality.QualityLimits``, None likewise)
    and trust (what ``benchmarks/calibration.py`` measured with them). Cells: which channel and object size
    ``n_cells`` counts in (``milcnn.process.cells.CellCounting``; None: not counted). ``format_version``: the schema's
    version (``CONFIG_FORMAT``); ``extra``: keys this SDK does not know, kept as they are.
    """

    name: str
    version: str
    classes: tuple[str, ...]
    channels: tuple[str, ...]
    normalization: NormalizationConfig
    output_stride: int
    min_size: int
    multi_label: bool = False
    summary: str = ""
    repo_id: str | None = None
    pooling: dict = field(default_factory=dict)
    architecture: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    training_data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    real_images: dict | None = None
    trust: dict | None = None
    pixel_size: float | None = None
    cell_diameter: float | None = None
    measured_cell_diameter: float | None = None
    measured_tolerance: float | None = None
    input_cell_diameter: float | None = None
    input_cell_diameter_from: str | None = None
    format_version: int = CONFIG_FORMAT
    variants: dict[str, Variant] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)
    calibration: Calibration | None = None
    qc: QualityLimits | None = None
    cells: CellCounting | None = None
    head: HeadRecord | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def receptive_field(self) -> int:
        return int(self.architecture.get("receptive_field", constants.DEFAULT_RECEPTIVE_FIELD))

    def file_sha256(self, name: str) -> str | None:
        """The sha256 that ``config.json`` records for one of the folder's files, if any."""
        record = self.files.get(name)
        return record.sha256 if record is not None else None

    def with_files(self, *paths) -> "ModelInfo":
        """This config with the records of these files of the folder (added or replaced)."""
        return replace(self, files={**self.files, **{Path(p).name: FileRecord.of(p) for p in paths if p is not None}})

    def with_variant(self, precision: str, variant: Variant, path=None) -> "ModelInfo":
        """This config with ``variant`` as its ``precision`` (and the record of its file at ``path``)."""
        info = self.with_files(path) if path is not None else self
        return replace(info, variants={**info.variants, precision: variant})

    def to_dict(self) -> dict:
        """The whole ``config.json`` (without its checksum), as ``write_config`` writes it."""
        d = {"name": self.name, "version": self.version, "summary": self.summary, "repo_id": self.repo_id,
             "classes": list(self.classes), "channels": list(self.channels),
             "normalization": self.normalization.to_dict(), "output_stride": self.output_stride,
             "min_size": self.min_size, "multi_label": self.multi_label, "pooling": self.pooling,
             "scale": self.scale_dict(), "architecture": self.architecture, "training": self.training,
             "training_data": self.training_data, "metrics": self.metrics, "export": self.export,
             "files": {k: r.to_dict() for k, r in self.files.items()},
             "variants": {k: v.to_dict() for k, v in self.variants.items()}, "real_images": self.real_images,
             "format_version": self.format_version,
             "calibration": None if self.calibration is None else self.calibration.to_dict(),
             "qc": None if self.qc is None else self.qc.to_dict(), "trust": self.trust,
             "cells": None if self.cells is None else self.cells.to_dict(),
             "head": None if self.head is None else self.head.to_dict()}
        optional = ("real_images", "calibration", "qc", "cells", "head", "trust")
        d = {k: d[k] for k in _ORDER if not (k in optional and d[k] is None)}
        return json.loads(json.dumps({**d, **self.extra}))

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> "ModelInfo":
        """Validate and read a ``config.json`` dict (migrated first: ``migrate_config``).

        Raises:
            ModelConfigError: a missing field or a value that cannot be right (one line, naming ``source``).
        """
        d = migrate_config(d, source=source)
        missing = [k for k in ("name", "version", "classes", "channels", "normalization", "output_stride", "min_size")
                   if k not in d]
        if missing:
            raise ModelConfigError(f"{source}: missing field(s) {', '.join(missing)}")
        try:
            info = cls(
                name=str(d["name"]), version=str(d["version"]), classes=tuple(d["classes"]),
                channels=tuple(d["channels"]), normalization=NormalizationConfig.from_dict(d["normalization"]),
                output_stride=int(d["output_stride"]), min_size=int(d["min_size"]),
                multi_label=bool(d.get("multi_label", False)), summary=str(d.get("summary") or ""),
                repo_id=d.get("repo_id"), pooling=dict(d.get("pooling", {})),
                architecture=dict(d.get("architecture") or {}), training=dict(d.get("training") or {}),
                training_data=dict(d.get("training_data", {})), metrics=dict(d.get("metrics", {})),
                export=dict(d.get("export") or {}), real_images=d.get("real_images"), trust=d.get("trust"),
                **scale_fields(d.get("scale") or {}), format_version=int(d["format_version"]),
                variants={str(k): Variant.from_dict(v) for k, v in (d.get("variants") or {}).items()},
                files={str(k): FileRecord(str(v.get("sha256")), int(v.get("bytes", 0)))
                       for k, v in (d.get("files") or {}).items()},
                extra={k: v for k, v in d.items() if k not in _ORDER and k != CHECKSUM_KEY},
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ModelConfigError(f"{source}: {exc}") from None
        problem = info._problem()
        if problem:
            raise ModelConfigError(f"{source}: {problem}")
        try:  # checked against the classes read above: a block of another model is refused here
            calibration = (None if d.get("calibration") is None else
                           Calibration.from_dict(d["calibration"], n_classes=len(info.classes),
                                                 multi_label=info.multi_label))
            qc = None if d.get("qc") is None else QualityLimits.from_dict(d["qc"], classes=info.classes)
            cells = None if d.get("cells") is None else CellCounting.from_dict(d["cells"], channels=info.channels)
            head = None if d.get("head") is None else HeadRecord.from_dict(d["head"], n_classes=len(info.classes))
        except ValueError as exc:
            raise ModelConfigError(f"{source}: {exc}") from None
        return replace(info, calibration=calibration, qc=qc, cells=cells, head=head)

    def _problem(self) -> str | None:
        """What makes this config unusable, in words (None when nothing does)."""
        if not self.classes or len(set(self.classes)) != len(self.classes):
            return f"classes must be distinct and at least one, got {list(self.classes)}"
        if not self.channels:
            return "channels must name at least one channel"
        if self.output_stride <= 0 or self.output_stride & (self.output_stride - 1):
            return f"output_stride must be a positive power of two, got {self.output_stride}"
        if not 0 < self.min_size <= constants.MAX_MIN_SIZE:  # every image is padded to it: 20,000 would be 4 GB
            return f"min_size must be in 1..{constants.MAX_MIN_SIZE}, got {self.min_size}"
        for precision, variant in self.variants.items():
            if not _plain_file_name(variant.file):
                return f"variants.{precision}.file must be a file name inside the model folder, got {variant.file!r}"
        for name in self.files:
            if not _plain_file_name(name):
                return f"files must name files inside the model folder, got {name!r}"
        return None

    def scale_dict(self) -> dict:
        """The ``scale`` block of ``config.json`` (None for what is unknown)."""
        d = {"pixel_size_um": self.pixel_size, "cell_diameter_px": self.cell_diameter,
             "measured_cell_diameter_px": self.measured_cell_diameter, "measured_tolerance": self.measured_tolerance,
             "input_cell_diameter_px": self.input_cell_diameter}
        return d | ({"input_cell_diameter_from": self.input_cell_diameter_from} if self.input_cell_diameter_from
                    else {})

    @classmethod
    def from_file(cls, path, *, sha256: str | None = None) -> "ModelInfo":
        """Read, check, migrate and validate ``config.json``.

        Args:
            sha256: the sha256 the file's bytes must have (a registry pin), if any.

        Raises:
            ModelConfigError: the file is missing, not JSON, edited since it was written (its ``checksum``
                does not match its content), or not a valid config (one line).
            ChecksumMismatchError: its bytes differ from ``sha256``.
        """
        path = Path(path)
        d = _read_json(path, sha256)
        version = d.get("format_version", 1)
        if isinstance(version, int) and 4 <= version <= CONFIG_FORMAT:  # a newer one: migrate_config says so
            stored, actual = d.get(CHECKSUM_KEY), content_sha256(d)
            if stored != f"sha256:{actual}":
                what = "has no checksum" if stored is None else f"does not match its checksum ({str(stored)[:19]}...)"
                raise ModelConfigError(f"{path}: edited since it was written: its content (sha256:{actual[:12]}...) "
                                       f"{what}; restore the file, or write it with "
                                       "milcnn.model.config.write_config if the change is meant")
        return cls.from_dict(d, source=str(path))


def _plain_file_name(name) -> bool:
    return isinstance(name, str) and bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def content_sha256(d: dict) -> str:
    """The hex sha256 of a config's content without its ``checksum`` (keys sorted, compact JSON)."""
    body = {k: v for k, v in d.items() if k != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_json(path: Path, sha256: str | None = None) -> dict:
    import stat

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block, /dev/zero never end
            raise ModelConfigError(f"{path}: not a regular file; a model config is a JSON file")
        size = info.st_size
        if size > constants.MAX_CONFIG_BYTES:  # before parsing: a huge file would take the memory first
            raise ModelConfigError(f"{path}: {size:,} bytes, over the {constants.MAX_CONFIG_BYTES:,} a model config "
                                   "may take; not a milcnn config")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest() if sha256 is not None else None
        if actual != sha256:
            raise ChecksumMismatchError(path, sha256, actual)
        d = json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ModelConfigError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


def migrate_config(d: dict, *, source: str = "config") -> dict:
    """A copy of a ``config.json`` dict brought up to ``CONFIG_FORMAT``; the one place old files are read.

    Format 1 (no ``format_version``; milcnn 1.x exports): ``scale``, ``files`` and ``variants`` may
    be missing and ``architecture`` may lack ``receptive_field``; they become an all-null scale,
    empty records and the SDK's default receptive field (``constants.DEFAULT_RECEPTIVE_FIELD``).
    Format 2 has no ``calibration`` or ``qc``: it is format 3 without them (the SDK then reports raw
    probabilities, with one notice at load). Format 3 has no ``checksum``: format 4 unchecked.

    Raises:
        ModelConfigError: a ``format_version`` newer than this SDK knows (upgrade milcnn-sdk).
    """
    d = json.loads(json.dumps(d))
    version = d.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ModelConfigError(f"{source}: format_version must be a positive integer, got {version!r}")
    if version > CONFIG_FORMAT:
        raise ModelConfigError(f"{source}: format_version {version} is newer than this milcnn-sdk reads "
                               f"({CONFIG_FORMAT}); upgrade milcnn-sdk")
    if version == 1:
        d["scale"] = {key: (d.get("scale") or {}).get(key) for key in SCALE_KEYS} | (d.get("scale") or {})
        d.setdefault("files", {})
        d.setdefault("variants", {})
        arch = d.setdefault("architecture", {})
        if isinstance(arch, dict):
            arch.setdefault("receptive_field", constants.DEFAULT_RECEPTIVE_FIELD)
        version = 2
    if version in (2, 3):  # calibration, qc and checksum are optional in what was written before them
        d["format_version"] = CONFIG_FORMAT
    return d


def read_config(folder) -> dict:
    """``folder/config.json`` as a dict, migrated and validated (``ModelInfo.from_file``)."""
    return ModelInfo.from_file(Path(folder) / constants.CONFIG_FILE).to_dict()


def write_config(folder, config: "dict | ModelInfo") -> dict:
    """Validate ``config``, stamp ``format_version`` and its ``checksum``, and write ``folder/config.json``
    atomically.

    Returns:
        the dict written.

    Raises:
        ModelConfigError: the config is not valid (nothing is written).
    """
    from milcnn.io.images import write_atomic

    path = Path(folder) / constants.CONFIG_FILE
    if isinstance(config, ModelInfo):
        config = config.to_dict()
    config = ModelInfo.from_dict({**config, "format_version": config.get("format_version", CONFIG_FORMAT)},
                                 source=str(path)).to_dict()
    config[CHECKSUM_KEY] = f"sha256:{content_sha256(config)}"
    with write_atomic(path, "w") as fh:
        fh.write(json.dumps(config, indent=2) + "\n")
    return config


SCALE_KEYS = {"pixel_size_um": "pixel_size", "cell_diameter_px": "cell_diameter",
              "measured_cell_diameter_px": "measured_cell_diameter", "measured_tolerance": "measured_tolerance",
              "input_cell_diameter_px": "input_cell_diameter"}


def scale_fields(block: dict) -> dict:
    """``config.json``'s ``scale`` block as ModelInfo fields; every value positive or null."""
    out = {"input_cell_diameter_from": block.get("input_cell_diameter_from") or None}
    for key, attr in SCALE_KEYS.items():
        value = block.get(key)
        if value is not None:
            value = float(value)
            if not value > 0:
                raise ValueError(f"scale.{key} must be positive or null, got {value}")
        out[attr] = value
    return out
