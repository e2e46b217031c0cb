"""BBBC021 (Ljosa et al. 2013; MCF-7 cells, Caie et al. 2010) as published, to a training manifest.

Usage::

    python -m training.data.bbbc021 /data/BBBC021 --out data/bbbc021/manifest.csv

``ROOT`` holds ``BBBC021_v1_image.csv``, ``BBBC021_v1_moa.csv`` and the image folders the
first names (``Image_PathName_DAPI`` etc., relative to ``ROOT``). Each field of view is one
row with its three single-channel files, in the channel order ``dna, tubulin, actin``
(DAPI, beta-tubulin, F-actin). Only the treatments annotated in the MOA file are kept (that
is the benchmark's labelled subset, DMSO controls included); the label is the MOA, the
``group`` the compound, so leave-one-compound-out splits never put a compound on both sides.
The manifest also carries ``compound``, ``concentration``, ``plate`` and ``well`` for
treatment-level evaluation (``training.treatments``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Field", "BBBC021Error", "read_bbbc021", "write_manifest", "CHANNELS", "IMAGE_CSV", "MOA_CSV"]

IMAGE_CSV = "BBBC021_v1_image.csv"
MOA_CSV = "BBBC021_v1_moa.csv"
CHANNELS = ("dna", "tubulin", "actin")
_STAINS = {"dna": "DAPI", "tubulin": "Tubulin", "actin": "Actin"}
IMAGE_COLUMNS = (
    *[f"Image_{kind}_{stain}" for stain in _STAINS.values() for kind in ("FileName", "PathName")],
    "Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Image_Metadata_Compound",
    "Image_Metadata_Concentration",
)
MOA_COLUMNS = ("compound", "concentration", "moa")


class BBBC021Error(ValueError):
    """A BBBC021 file or column is missing, or rows are unusable; the message lists them all."""


@dataclass(frozen=True)
class Field:
    """One field of view: its three channel files and its treatment."""

    paths: dict[str, Path]  # channel -> file
    compound: str
    concentration: float
    moa: str
    plate: str
    well: str

    @property
    def treatment(self) -> tuple[str, float]:
        return self.compound, self.concentration


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise BBBC021Error(f"{path}: not found (expected the file as published with BBBC021)")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise BBBC021Error(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def _concentration(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BBBC021Error(f"{where}: concentration {text!r} is not a number") from None


def read_bbbc021(root, *, check_files: bool = True) -> list[Field]:
    """The annotated fields of view of a BBBC021 download.

    Args:
        root: the folder with ``BBBC021_v1_image.csv``, ``BBBC021_v1_moa.csv`` and the images.
        check_files: fail if any referenced image file is missing.

    Returns:
        one Field per image row whose (compound, concentration) has an MOA, in file order.

    Raises:
        BBBC021Error: a CSV or column is missing, a concentration is not a number, no
            treatment matches, or image files are missing (all of them are listed).
    """
    root = Path(root)
    moa_rows = _read_csv(root / MOA_CSV, MOA_COLUMNS)
    moa = {}
    for n, row in enumerate(moa_rows, start=2):
        key = (row["compound"].strip(), round(_concentration(row["concentration"], f"{MOA_CSV} line {n}"), 9))
        moa[key] = row["moa"].strip()
    fields, missing = [], []
    for n, row in enumerate(_read_csv(root / IMAGE_CSV, IMAGE_COLUMNS), start=2):
        compound = row["Image_Metadata_Compound"].strip()
        concentration = _concentration(row["Image_Metadata_Concentration"], f"{IMAGE_CSV} line {n}")
        label = moa.get((compound, round(concentration, 9)))
        if label is None:
            continue  # not in the annotated subset
        paths = {c: root / row[f"Image_PathName_{s}"].strip() / row[f"Image_FileName_{s}"].strip()
                 for c, s in _STAINS.items()}
        if check_files:
            missing += [f"{IMAGE_CSV} line {n}: {p}" for p in paths.values() if not p.is_file()]
        fields.append(Field(paths, compound, concentration, label, row["Image_Metadata_Plate_DAPI"].strip(),
                            row["Image_Metadata_Well_DAPI"].strip()))
    if missing:
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise BBBC021Error(f"{root}: {len(missing)} image file(s) not found:\n  {shown}{more}")
    if not fields:
        raise BBBC021Error(f"{root}: no image row matches a (compound, concentration) of {MOA_CSV}")
    return fields


def write_manifest(fields: list[Field], out) -> Path:
    """Write a training manifest (``path_dna, path_tubulin, path_actin, label, group`` and the
    treatment columns); paths are written relative to the manifest's folder when possible."""
    from milcnn.io.images import write_atomic

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()

    def rel(p: Path) -> str:
        p = p.resolve()
        try:
            return str(p.relative_to(base))
        except ValueError:
            return str(p)

    with write_atomic(out, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*(f"path_{c}" for c in CHANNELS), "label", "group", "compound", "concentration", "plate",
                         "well"])
        for f in fields:
            writer.writerow([*(rel(f.paths[c]) for c in CHANNELS), f.moa, f.compound, f.compound,
                             repr(f.concentration), f.plate, f.well])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.bbbc021", description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder with BBBC021_v1_image.csv, BBBC021_v1_moa.csv and images")
    parser.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    args = parser.parse_args(argv)
    try:
        fields = read_bbbc021(args.root)
    except BBBC021Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_manifest(fields, args.out)
    treatments = {f.treatment for f in fields}
    moas = sorted({f.moa for f in fields})
    print(f"{args.out}: {len(fields)} fields of view, {len(treatments)} treatments, "
          f"{len({f.compound for f in fields})} compounds, {len(moas)} MOAs ({', '.join(moas)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
