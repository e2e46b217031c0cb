"""Training manifests: a CSV naming the images, their labels and optional masks.

Columns:

=================  ===========================================================================
``path``           one multi-channel image (C x H x W or H x W x C TIFF), relative to the CSV
``path_<channel>`` instead of ``path``: one single-channel file per channel, e.g. ``path_gfp``
``label``          a class name; ``a|b`` for several labels (multi-label training)
``mask_path``      optional ground-truth mask (0 background, k+1 class k, 255 other objects)
``split``          optional ``train``, ``val`` or ``test``
``group``          optional grouping (plate, compound...) kept together when splitting
=================  ===========================================================================

Every bad row is reported with its line number in the CSV, all at once, before any
training starts; none is skipped silently.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from milcnn.errors import ImageReadError
from milcnn.io.images import TIFF_SUFFIXES, read_image
from milcnn.process.preprocess import to_chw

__all__ = ["Sample", "ManifestError", "read_manifest", "load_image", "load_mask", "SPLITS"]

SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """One or more rows of a manifest are unusable; ``problems`` lists ``(line, message)``."""

    def __init__(self, manifest: Path, problems: list[tuple[int, str]]):
        self.manifest = manifest
        self.problems = problems
        lines = [f"{manifest}: {len(problems)} bad row(s)"] + [f"  line {n}: {msg}" for n, msg in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Sample:
    paths: tuple[Path, ...]  # one multi-channel file, or one file per channel
    labels: tuple[str, ...]
    mask_path: Path | None
    split: str | None
    group: str | None
    line: int  # line number in the CSV, for messages

    @property
    def name(self) -> str:
        return self.paths[0].name


def _tiff_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of a TIFF's first series from its header, without reading pixels."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tuple(tif.series[0].shape)


def _channel_problem(shape: tuple[int, ...], n_channels: int) -> str | None:
    try:
        to_chw(np.empty(shape, dtype=np.uint8), n_channels)
    except ValueError as exc:
        return str(exc)
    return None


def read_manifest(
    path,
    *,
    channels: tuple[str, ...] | None = None,
    classes: tuple[str, ...] | None = None,
    check_images: bool = True,
) -> tuple[list[Sample], tuple[str, ...], tuple[str, ...]]:
    """Read and validate a manifest.

    Args:
        path: the CSV file.
        channels: channel names; required with a ``path`` column, taken from the
            ``path_<channel>`` columns otherwise (and checked against them if given).
        classes: known class names; ``None`` takes the sorted labels found.
        check_images: check that every file exists and has the right channel count.

    Returns:
        (samples, channels, classes).

    Raises:
        ManifestError: listing every bad row with its line number.
        FileNotFoundError: the manifest itself is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    root = path.parent
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        rows = [(i + 2, row) for i, row in enumerate(reader)]  # line 1 is the header
    per_channel = [h[len("path_"):] for h in header if h.startswith("path_")]
    if "label" not in header:
        raise ManifestError(path, [(1, f"no 'label' column (columns: {', '.join(header) or 'none'})")])
    if "path" in header and per_channel:
        raise ManifestError(path, [(1, "use either a 'path' column or 'path_<channel>' columns, not both")])
    if "path" not in header and not per_channel:
        raise ManifestError(path, [(1, "no 'path' column and no 'path_<channel>' columns")])
    if per_channel:
        if channels is not None and tuple(channels) != tuple(per_channel):
            raise ManifestError(path, [(1, f"columns give channels {per_channel}, expected {list(channels)}")])
        channels = tuple(per_channel)
    elif channels is None:
        raise ValueError(f"{path}: a 'path' column holds multi-channel images; say which channels they hold (channels=...)")
    channels = tuple(channels)
    if not rows:
        raise ManifestError(path, [(2, "the manifest has no rows")])

    found = sorted({lab.strip() for _, row in rows for lab in (row.get("label") or "").split("|") if lab.strip()})
    classes = tuple(classes) if classes is not None else tuple(found)
    problems: list[tuple[int, str]] = []
    samples: list[Sample] = []
    for line, row in rows:
        bad = []
        labels = tuple(lab.strip() for lab in (row.get("label") or "").split("|") if lab.strip())
        if not labels:
            bad.append("empty label")
        unknown = [lab for lab in labels if lab not in classes]
        if unknown:
            bad.append(f"unknown label(s) {', '.join(map(repr, unknown))} (known: {', '.join(classes)})")
        cols = [f"path_{c}" for c in channels] if per_channel else ["path"]
        files = []
        for col in cols:
            value = (row.get(col) or "").strip()
            if not value:
                bad.append(f"empty {col}")
                continue
            files.append(root / value)
        mask = (row.get("mask_path") or "").strip()
        mask_path = root / mask if mask else None
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            bad.append(f"split {split!r} is not one of {', '.join(SPLITS)}")
        if check_images and not bad:
            for f in files + ([mask_path] if mask_path else []):
                if not f.is_file():
                    bad.append(f"file {f} not found")
            if not bad:
                try:
                    shapes = [_tiff_shape(f) for f in files]
                except Exception as exc:
                    bad.append(f"cannot read TIFF header of {files[0]}: {exc}")
                    shapes = []
                for f, shape in zip(files, shapes):
                    if shape is None:
                        continue
                    problem = _channel_problem(shape, 1 if per_channel else len(channels))
                    if problem:
                        bad.append(f"{f.name}: {problem}")
        if bad:
            problems.append((line, "; ".join(bad)))
            continue
        group = (row.get("group") or "").strip() or None
        samples.append(Sample(tuple(files), labels, mask_path, split, group, line))
    if problems:
        raise ManifestError(path, problems)
    return samples, channels, classes


def load_image(sample: Sample, n_channels: int) -> np.ndarray:
    """The sample's image as (C, H, W), in its stored dtype."""
    if len(sample.paths) == 1:
        return to_chw(read_image(sample.paths[0]), n_channels)
    planes = []
    for p in sample.paths:
        plane = read_image(p)
        if plane.ndim != 2:
            raise ImageReadError(p, f"expected a single-channel image, got shape {plane.shape}")
        planes.append(plane)
    if len({pl.shape for pl in planes}) != 1:
        raise ImageReadError(sample.paths[0], f"channel files differ in size: {[pl.shape for pl in planes]}")
    return np.stack(planes)


def load_mask(sample: Sample) -> np.ndarray | None:
    return None if sample.mask_path is None else np.asarray(read_image(sample.mask_path))
