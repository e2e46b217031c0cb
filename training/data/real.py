"""The real labelled cells of ``../shared/realdata-labelled``: which field means which class.

Each file is one microscope field, stored as a stack of its single-cell crops
``(cells, C, h, w)`` in their original order (see that folder's README). A field is scored
cell by cell, or as mosaics of ``k x k`` of its own cells: consecutive cells in their stored
order, no cell in two mosaics, fields never mixed, leftover cells unused.

The table of which protein (yeast) or treatment folder (MCF-7) counts as which zoo class is
here, from the README's table; nothing else in the project hard-codes it. numpy and tifffile
only: the SDK-side benchmark uses it without torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["RealGroup", "RealSet", "Field", "REAL_SETS", "DEFAULT_REAL_DATA", "RealDataMissingError",
           "load_fields", "mosaics", "shuffled_mosaics", "applicable_sets"]

DEFAULT_REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata-labelled"


class RealDataMissingError(FileNotFoundError):
    """The real labelled data (or one of its sets) is not where it was looked for."""


@dataclass(frozen=True)
class RealGroup:
    """Fields of one protein or treatment.

    Attributes:
        name: the protein's ORF or the treatment folder.
        accepted: zoo classes counted as right (AAH1 is right as ``cytosol`` or ``nucleus``).
        description: what the source says it is.
    """

    name: str
    accepted: tuple[str, ...]
    description: str

    @property
    def label(self) -> str:
        """The manifest label for fine-tuning (``a|b`` where two classes are right)."""
        return "|".join(self.accepted)


@dataclass(frozen=True)
class RealSet:
    """One folder of real fields.

    Attributes:
        name: the folder under the real-data root.
        channels: channel names in the stored order (matched by name to a model's channels).
        groups: the proteins or treatments, in report order.
        field_glob: how field files are found, ``{group}`` filled in.
        cell_diameter: typical cell diameter in px, from the source README (None: not stated).
        simulator: the project's simulator of this kind of cell (``training.simulate`` name).
        validation: the validation half for choosing settings of models trained without real
            labels: group -> how many of its first fields (in file-name order) belong to it;
            every other field is the test half.
    """

    name: str
    channels: tuple[str, ...]
    groups: tuple[RealGroup, ...]
    field_glob: str
    cell_diameter: float | None
    simulator: str
    validation: tuple[tuple[str, int], ...] = ()

    def half(self, f: "Field") -> str:
        """``"validation"`` or ``"test"``: the half a field belongs to."""
        return "validation" if f.index <= dict(self.validation).get(f.group.name, 0) else "test"

    def group(self, name: str) -> RealGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"{self.name} has no group {name!r}; it has {', '.join(g.name for g in self.groups)}")

    @property
    def classes(self) -> set[str]:
        return {c for g in self.groups for c in g.accepted}


YEAST_CHONG = RealSet(
    name="yeast-chong",
    channels=("gfp", "rfp"),
    groups=(
        RealGroup("AAC1", ("mitochondria",), "mitochondrial inner membrane"),
        RealGroup("AAC3", ("mitochondria",), "mitochondrial inner membrane"),
        RealGroup("AAP1", ("cytosol",), "cytoplasm"),
        RealGroup("AAH1", ("cytosol", "nucleus"), "cytoplasm and nucleus"),
        RealGroup("AAR2", ("cytosol", "nucleus"), "cytoplasm and nucleus"),
    ),
    field_glob="{group}_*.tif",
    cell_diameter=42.0,  # README: "cells here are about 35-50 px across"
    simulator="yeast",
    validation=(("AAC1", 4), ("AAP1", 4), ("AAH1", 4)),
)

BBBC021_CELLS = RealSet(
    name="bbbc021-cells",
    channels=("dna", "tubulin", "actin"),
    groups=(
        RealGroup("DMSO", ("DMSO",), "untreated, solvent only"),
        RealGroup("Protein_synthesis", ("Protein synthesis",), "protein synthesis inhibitors"),
    ),
    field_glob="{group}/*.tif",
    # not stated by the source: the SDK's cell-size reading of these fields (median over all 172
    # mosaics, 29.7 px; no labels used) against that of mcf7-moa's simulated images (16.3 px over
    # 32 of its 160 test images when this was set; 16.5 over all 160), times its 47 px
    cell_diameter=85.0,
    simulator="mcf7",
    validation=(("DMSO", 4), ("Protein_synthesis", 6)),
)

REAL_SETS: dict[str, RealSet] = {s.name: s for s in (YEAST_CHONG, BBBC021_CELLS)}


@dataclass(eq=False)
class Field:
    """One real field: its cells (N, C, h, w) in the channel order of ``channels``."""

    set: RealSet
    group: RealGroup
    path: Path
    cells: np.ndarray
    channels: tuple[str, ...]
    index: int  # the field's number within its group, 1-based, in file-name order

    @property
    def name(self) -> str:
        return self.path.stem


def _natural(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def load_fields(real_set: RealSet | str, root=None, *, channels: tuple[str, ...] | None = None,
                groups: tuple[str, ...] | None = None) -> list[Field]:
    """Read every field of a real set.

    Args:
        real_set: a ``RealSet`` or its name.
        root: the real-data folder (default ``../shared/realdata-labelled``).
        channels: the channels to keep, by name, in this order (a model's channels).
        groups: only these proteins / treatments.

    Raises:
        RealDataMissingError: the folder, the set or a group's fields are missing (names the path).
        ValueError: a channel the set does not have.
    """
    import tifffile

    rs = REAL_SETS[real_set] if isinstance(real_set, str) else real_set
    root = Path(root) if root is not None else DEFAULT_REAL_DATA
    folder = root / rs.name
    if not folder.is_dir():
        raise RealDataMissingError(f"real data not found: {folder} is not a folder (pass --data DIR, the folder "
                                   f"that holds {', '.join(REAL_SETS)})")
    channels = tuple(channels) if channels is not None else rs.channels
    missing = [c for c in channels if c not in rs.channels]
    if missing:
        raise ValueError(f"{rs.name} has channels {', '.join(rs.channels)}, not {', '.join(missing)}")
    take = [rs.channels.index(c) for c in channels]
    fields: list[Field] = []
    for g in rs.groups:
        if groups is not None and g.name not in groups:
            continue
        paths = sorted(folder.glob(rs.field_glob.format(group=g.name)), key=_natural)
        if not paths:
            raise RealDataMissingError(f"no fields of {g.name} in {folder} ({rs.field_glob.format(group=g.name)})")
        for i, p in enumerate(paths, 1):
            cells = tifffile.imread(p)
            if cells.ndim != 4 or cells.shape[1] != len(rs.channels):
                raise ValueError(f"{p}: expected (cells, {len(rs.channels)}, h, w), got shape {cells.shape}")
            fields.append(Field(rs, g, p, cells[:, take], channels, i))
    return fields


def mosaics(cells: np.ndarray, k: int) -> list[np.ndarray]:
    """Mosaics of ``k x k`` consecutive cells, (C, k*h, k*w) each; leftover cells are not used."""
    n, c, h, w = cells.shape
    out = []
    for start in range(0, n - k * k + 1, k * k):
        block = cells[start:start + k * k].reshape(k, k, c, h, w)
        out.append(np.ascontiguousarray(block.transpose(2, 0, 3, 1, 4).reshape(c, k * h, k * w)))
    return out


def field_mosaic(cells: np.ndarray) -> np.ndarray:
    """All of a field's cells as one image: a near-square grid of ``r = floor(sqrt(n))`` rows of
    ``n // r`` cells (C, r*h, (n//r)*w), as a field of the screen would be predicted as a whole;
    the last ``n - r * (n // r)`` cells (fewer than ``r``) are left out."""
    n, c, h, w = cells.shape
    r = max(1, math.isqrt(n))
    q = n // r
    block = cells[:r * q].reshape(r, q, c, h, w)
    return np.ascontiguousarray(block.transpose(2, 0, 3, 1, 4).reshape(c, r * h, q * w))


def shuffled_mosaics(cells: np.ndarray, k: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` mosaics of ``k x k`` cells drawn in new random orders (training views of one field)."""
    out: list[np.ndarray] = []
    while len(out) < n:
        out += mosaics(cells[rng.permutation(len(cells))], k)
    return out[:n]


def applicable_sets(channels: tuple[str, ...], classes: tuple[str, ...]) -> list[RealSet]:
    """The real sets a model can be scored on: its channels present, every accepted class known."""
    return [rs for rs in REAL_SETS.values()
            if set(channels) <= set(rs.channels) and all(any(c in classes for c in g.accepted) for g in rs.groups)]
