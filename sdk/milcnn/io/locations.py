"""Where an image sits on a plate (plate, well, field): the one home of well names and their patterns.

Locations come from the file name (ImageXpress ``..._B03_s1_w1.tif``, Operetta/Opera
``r02c03f01p01-ch1...``, BBBC021 ``..._B02_s1_...``), from a well subfolder (``plate/B03/f1.tif``),
or from ``--well-pattern`` (a regular expression with named groups ``well`` or ``row`` and ``col``,
and optionally ``field`` and ``plate``); a manifest's or plate map's ``well`` column is read by
``parse_well``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

__all__ = ["Location", "locate", "parse_well", "WELL_PATTERNS"]

#: built-in file-name patterns, tried in order
WELL_PATTERNS = {
    "operetta": re.compile(r"r(?P<row>\d{1,2})c(?P<col>\d{1,2})f(?P<field>\d{1,3})", re.IGNORECASE),
    "imagexpress": re.compile(r"(?:^|[_\-\s])(?P<well>[A-Pa-p]\d{1,2})_s(?P<field>\d{1,3})(?=$|[_\-.])"),
    "well_field": re.compile(r"(?:^|[_\-\s])(?P<well>[A-Pa-p]\d{1,2})[_\-](?:f|fld|field|site)?(?P<field>\d{1,3})"
                             r"(?=$|[_\-.])", re.IGNORECASE),
}
_WELL_FOLDER = re.compile(r"^(?:well[_\-]?)?(?P<well>[A-Pa-p]\d{1,2})$", re.IGNORECASE)


class Location(NamedTuple):
    """Where an image sits: plate name, well (``B03``) and field (``""`` when unknown)."""

    plate: str
    well: str  # "B03"
    field: str  # "" when unknown

    @property
    def row(self) -> int:
        return ord(self.well[0]) - ord("A")

    @property
    def col(self) -> int:
        return int(self.well[1:]) - 1


def _well(row_letter: str | None = None, col: str | int | None = None, *, row_number: str | int | None = None) -> str:
    letter = row_letter.upper() if row_letter else chr(ord("A") + int(row_number) - 1)
    return f"{letter}{int(col):02d}"


def locate(path: Path, *, root: Path | None = None, pattern: re.Pattern | None = None) -> Location | None:
    """Where an image sits on its plate, from its name or its well folder; None when nothing matches.

    Args:
        path: the image.
        root: the input folder it was found under (its name is the plate's, unless the pattern says).
        pattern: ``--well-pattern``, tried before the built-in patterns, on the path below ``root``.
    """
    if _WELL_FOLDER.match(path.parent.name):  # plate/B03/field.tif: the plate is the well folder's parent
        plate = path.parent.parent.name
    else:
        plate = root.name if root is not None else path.parent.name
    relative = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else path.name
    if pattern is not None:
        m = pattern.search(relative)
        if m:
            groups = m.groupdict()
            well = (_well(groups["well"][0], groups["well"][1:]) if groups.get("well") else
                    _well(col=groups["col"], row_number=groups["row"]) if groups["row"].isdigit() else
                    _well(groups["row"], groups["col"]))
            return Location(groups.get("plate") or plate, well, str(int(groups["field"])) if groups.get("field") else "")
    name = path.name
    m = WELL_PATTERNS["operetta"].search(name)
    if m:
        return Location(plate, _well(col=m["col"], row_number=m["row"]), str(int(m["field"])))
    for key in ("imagexpress", "well_field"):
        m = WELL_PATTERNS[key].search(Path(name).stem)
        if m:
            return Location(plate, _well(m["well"][0], m["well"][1:]), str(int(m["field"])))
    m = _WELL_FOLDER.match(path.parent.name)
    if m:
        digits = re.findall(r"\d+", path.stem)
        return Location(plate, _well(m["well"][0], m["well"][1:]), str(int(digits[-1])) if digits else path.stem)
    return None


_WELL_NAME = re.compile(r"\s*([A-Pa-p])(\d{1,2})\s*")


def parse_well(text: str | None) -> str | None:
    """A well name as written in a table (``b3``, `` B03 ``) as ``B03``; None when it is not one."""
    m = _WELL_NAME.fullmatch(text or "")
    return _well(m[1], m[2]) if m else None
