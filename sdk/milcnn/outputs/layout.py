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

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from milcnn.io.fields import FieldPath

__all__ = ["RunLayout", "output_stems", "PREDICTIONS", "ERRORS", "RUN_FILE", "LOCK_FILE", "OUTPUT_FILES",
           "OUTPUT_DIRS"]

PREDICTIONS = "predictions.csv"
ERRORS = "errors.csv"
RUN_FILE = "run.json"
LOCK_FILE = ".milzoo.lock"
WELLS, PLATE_PNG, TREATMENTS = "wells.csv", "plate.png", "treatments.csv"
#: every file a run writes at the top of its folder, and its folders of per-image files
OUTPUT_FILES = (PREDICTIONS, ERRORS, RUN_FILE, WELLS, PLATE_PNG, TREATMENTS)
OUTPUT_DIRS = ("masks", "overlays")


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
    lock = _InFolder(LOCK_FILE)

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))

    def mask(self, stem: str) -> Path:
        return self.out / "masks" / f"{stem}.tif"

    def overlay(self, stem: str) -> Path:
        return self.out / "overlays" / f"{stem}.png"

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


def output_stems(paths: list) -> dict:
    """The output file stem of each input, unique among ``paths``: its own stem; where several inputs
    share a stem, its path relative to their common folder with ``__`` for the separators
    (``plate1__A01``); where that still clashes (``a.tif`` and ``a.tiff`` in one folder), the file
    name with its extension (``a.tif``, ``a.tiff``)."""
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
