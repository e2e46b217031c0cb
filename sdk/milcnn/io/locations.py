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

__all__ = ["Location", "locate", "parse_well", "split_well", "well_name", "WELL_PATTERNS"]

#: a plate row: A to P, and AA to AF (a 1536-well plate's rows 27 to 32)
_ROW = r"(?:[Aa][A-Fa-f]|[A-Pa-p])"
#: built-in file-name patterns, tried in order
WELL_PATTERNS = {
    "operetta": re.compile(r"r(?P<row>\d{1,2})c(?P<col>\d{1,2})f(?P<field>\d{1,3})", re.IGNORECASE),
    "imagexpress": re.compile(r"(?:^|[_\-\s])(?P<well>" + _ROW + r"\d{1,2})_s(?P<field>\d{1,3})(?=$|[_\-.])"),
    "well_field": re.compile(r"(?:^|[_\-\s])(?P<well>" + _ROW + r"\d{1,2})[_\-](?:f|fld|field|site)?(?P<field>\d{1,3})"
                             r"(?=$|[_\-.])", re.IGNORECASE),
}
_WELL_FOLDER = re.compile(r"^(?:well[_\-]?)?(?P<well>" + _ROW + r"\d{1,2})$", re.IGNORECASE)


class Location(NamedTuple):
    """Where an image sits: plate name, well (``B03``) and field (``""`` when unknown)."""

    plate: str
    well: str  # "B03"
    field: str  # "" when unknown

    @property
    def row(self) -> int:
        return split_well(self.well)[0]

    @property
    def col(self) -> int:
        return split_well(self.well)[1]


_WELL_PARTS = re.compile(r"([A-Za-z]{1,2})(\d{1,3})")


def well_name(row: int, col: int) -> str:
    """(1, 2) -> ``B03``: the name of the 0-based row and column (``split_well``'s inverse)."""
    return _well(row_number=row + 1, col=col + 1)


def split_well(well: str) -> tuple[int, int]:
    """``B03`` -> (1, 2): the 0-based row and column; rows past Z go on as a spreadsheet's (``AA``, ``AB``: the
    1536-well plate's rows 27 to 32).

    Raises:
        ValueError: not a well name (names it).
    """
    m = _WELL_PARTS.fullmatch(well or "")
    if not m or int(m[2]) < 1:
        raise ValueError(f"well {well!r} is not a well name like B03 or AB48")
    letters = m[1].upper()
    row = ord(letters[-1]) - ord("A") + (26 * (ord(letters[0]) - ord("A") + 1) if len(letters) == 2 else 0)
    return row, int(m[2]) - 1


def _well(row_letter: str | None = None, col: str | int | None = None, *, row_number: str | int | None = None) -> str:
    if row_letter:
        letter = row_letter.upper()
    else:
        n = int(row_number) - 1
        letter = chr(ord("A") + n) if n < 26 else chr(ord("A") + n // 26 - 1) + chr(ord("A") + n % 26)
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
            well = (parse_well(groups["well"]) if groups.get("well") else
                    parse_well(f"{groups['row']}{groups['col']}") if not groups["row"].isdigit() else
                    _well(col=groups["col"], row_number=groups["row"]) if groups["col"].isdigit() else None)
            field = groups.get("field") or ""
            if well is None or not (field.isdigit() or not field):
                raise ValueError(f"--well-pattern {pattern.pattern!r} matches {relative!r} as "
                                 f"{ {k: v for k, v in groups.items() if v} }, which is not a well (and field number)")
            return Location(groups.get("plate") or plate, well, str(int(field)) if field else "")
    name = path.name
    m = WELL_PATTERNS["operetta"].search(name)
    if m:
        return Location(plate, _well(col=m["col"], row_number=m["row"]), str(int(m["field"])))
    for key in ("imagexpress", "well_field"):
        m = WELL_PATTERNS[key].search(Path(name).stem)
        if m:
            return Location(plate, parse_well(m["well"]), str(int(m["field"])))
    m = _WELL_FOLDER.match(path.parent.name)
    if m:
        digits = re.findall(r"\d+", path.stem)
        return Location(plate, parse_well(m["well"]), str(int(digits[-1])) if digits else path.stem)
    return None


_WELL_NAME = re.compile(r"\s*([A-Za-z]{1,2})(\d{1,3})\s*")


def parse_well(text: str | None) -> str | None:
    """A well name as written in a table (``b3``, `` B03 ``, ``ab48``) as ``B03`` / ``AB48``; None when it is not
    one."""
    m = _WELL_NAME.fullmatch(text or "")
    return _well(m[1], m[2]) if m else None
