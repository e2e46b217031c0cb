"""The output folder of a run (``milzoo predict --out OUT``, ``milcnn.batch.distributed``): the one place its
files are named, for the writers (``milcnn.batch``, ``milcnn.outputs.results``) and the readers (the napari
plugin's reader, ``--resume``)::

    OUT/predictions.csv   one row per image (``milcnn.batch.run.header``)
    OUT/errors.csv        one row per input that failed
    OUT/run.json          the model, the settings and the counts (``milcnn.batch.provenance``)
    OUT/masks/<stem>.tif  each image's mask; OUT/overlays/<stem>.png its overlay
    OUT/wells.csv, OUT/plate.png, OUT/treatments.csv   per well, per plate, per treatment
    OUT/.milzoo.lock      held while a run writes

``<stem>`` is ``output_stems``'s name for the input: unique among the run's inputs, rebuilt from
``predictions.csv`` by ``RunLayout.stems``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from milcnn.io.fields import FieldPath

__all__ = ["RunLayout", "output_stems", "safe_stem", "as_text", "PREDICTIONS", "ERRORS", "RUN_FILE", "LOCK_FILE", "OUTPUT_FILES",
           "OUTPUT_DIRS"]

PREDICTIONS = "predictions.csv"
ERRORS = "errors.csv"
RUN_FILE = "run.json"
LOCK_FILE = ".milzoo.lock"
WELLS, PLATE_PNG, TREATMENTS = "wells.csv", "plate.png", "treatments.csv"
HITS, PLATE_QC, REPORT, CELLS = "hits.csv", "plate_qc.csv", "report.html", "cells.csv"
#: every file a run writes at the top of its folder, and its folders of per-image files
OUTPUT_FILES = (PREDICTIONS, ERRORS, RUN_FILE, WELLS, PLATE_PNG, TREATMENTS, HITS, PLATE_QC, REPORT, CELLS)
OUTPUT_DIRS = ("masks", "overlays", "cells")


class _InFolder:
    """A file of the output folder, as an attribute of ``RunLayout``: its path there."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, layout, owner=None):
        return self if layout is None else layout.out / self.name


@dataclass(frozen=True)
class RunLayout:
    """The paths of one output folder."""

    out: Path
    predictions = _InFolder(PREDICTIONS)
    errors = _InFolder(ERRORS)
    run = _InFolder(RUN_FILE)
    wells = _InFolder(WELLS)
    plate_png = _InFolder(PLATE_PNG)
    treatments = _InFolder(TREATMENTS)
    hits = _InFolder(HITS)
    plate_qc = _InFolder(PLATE_QC)
    report = _InFolder(REPORT)
    cells_csv = _InFolder(CELLS)
    lock = _InFolder(LOCK_FILE)

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))

    def mask(self, stem: str) -> Path:
        return self._inside("masks", f"{stem}.tif")

    def overlay(self, stem: str) -> Path:
        return self._inside("overlays", f"{stem}.png")

    def cell_file(self, stem: str) -> Path:
        return self._inside("cells", f"{stem}.csv")

    def _inside(self, folder: str, name: str) -> Path:
        """``out/folder/name``, refused unless it stays in ``out``: a name is one component (``safe_stem``), and the
        folder must not be a link planted to send the files elsewhere."""
        from milcnn.errors import OutputFolderError

        if name != os.path.basename(name) or name.startswith("."):
            raise OutputFolderError(f"{name!r}: not a plain file name; refused (it would write outside {self.out})")
        where = self.out / folder
        if where.is_symlink():
            raise OutputFolderError(f"{where}: a link, not a folder; refused (its files would be written where it "
                                    "points)")
        return where / name

    def is_results(self) -> bool:
        """Whether the folder holds a run's results (``predictions.csv`` and ``masks/``)."""
        return self.predictions.is_file() and (self.out / "masks").is_dir()

    @staticmethod
    def stems(rows: list[dict]) -> dict[str, str]:
        """``{image: stem}`` for ``predictions.csv``'s rows: the names the run gave the images' files, rebuilt
        from what the rows record (an OME-Zarr field is named by its plate, well and field, as
        ``milcnn.io.omezarr.ZarrField.name``; other inputs by their path), among all the rows as the run
        named them among its inputs."""
        inputs = {row["image"]: _recorded(row) for row in rows}
        return {image: stem for image, stem in zip(inputs, output_stems(list(inputs.values())).values())}


@dataclass(frozen=True)
class _Recorded(FieldPath):
    """An input as ``predictions.csv`` records it, named as the run named it."""

    id: Path
    own_name: str

    @property
    def name(self) -> str:
        return self.own_name


def _recorded(row: dict):
    path = Path(row["image"])
    if any(part.endswith(".zarr") for part in path.parts[:-1]) and row.get("well") and row.get("field"):
        return _Recorded(path, f"{row.get('plate', '')}_{row['well']}_f{row['field']}")
    return path


#: the longest output stem in bytes (UTF-8): the file system's 255-byte names less the extension and a
#: temporary file's prefix and suffix; a longer one is cut and ends with a hash of the whole
MAX_STEM_BYTES = 180
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def as_text(text: str) -> str:
    """``text`` as it is written into a CSV or a message: bytes of a file name that are not UTF-8 (Python's
    surrogate escapes) as ``\\udcNN``, so any file name can be written and found again."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_stem(text: str) -> str:
    """``text`` as one safe file-name component: no path separator or control character, no leading dot (no
    ``..``, no hidden file), bytes that are not UTF-8 (a file name's surrogate escapes) as ``\\xNN``, and at most
    ``MAX_STEM_BYTES`` (cut, with a hash of the whole)."""
    text = _UNSAFE.sub("_", as_text(text)).lstrip(".") or "_"
    raw = text.encode("utf-8")
    if len(raw) > MAX_STEM_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:12]
        text = raw[: MAX_STEM_BYTES - 13].decode("utf-8", "ignore") + "-" + digest
    return text


def output_stems(paths: list) -> dict:
    """The output file stem of each input, unique among ``paths`` and safe (``safe_stem``): its own stem; where
    several inputs share a stem, its path relative to their common folder with ``__`` for the separators
    (``plate1__A01``); where that still clashes (``a.tif`` and ``a.tiff`` in one folder), the file name with its
    extension (``a.tif``, ``a.tiff``); where names still meet (``f1/x.tif``, ``f2/x.tif`` and ``f1__x.tif``), the
    later ones end with a hash of their path."""
    stems = {p: safe_stem(s) for p, s in _stems(paths).items()}
    seen: set[str] = set()
    for p in paths:
        stem = stems[p]
        if stem.lower() in seen:  # case too: two names that differ only in case meet on macOS and Windows
            stem = safe_stem(f"{stem}-{hashlib.sha256(str(p).encode('utf-8', 'surrogateescape')).hexdigest()[:8]}")
            stems[p] = stem
        seen.add(stem.lower())
    return stems


def _stems(paths: list) -> dict:
    counts = Counter(p.stem for p in paths)
    clashing = [p.absolute() for p in paths if counts[p.stem] > 1]
    root = Path(*_common_parts([p.parent.parts for p in clashing])) if clashing else None
    stems = {}
    for p in paths:
        if counts[p.stem] == 1:
            stems[p] = p.stem
        else:
            relative = p.absolute().relative_to(root) if root is not None else p
            stems[p] = "__".join((*relative.parent.parts, p.stem)) or p.stem
    taken = Counter(stems.values())
    for p in paths:
        if taken[stems[p]] > 1:
            stems[p] = stems[p][: len(stems[p]) - len(p.stem)] + p.name
    return stems


def _common_parts(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    common = parts[0]
    for other in parts[1:]:
        n = 0
        while n < min(len(common), len(other)) and common[n] == other[n]:
            n += 1
        common = common[:n]
    return common
