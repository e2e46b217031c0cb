"""What a ``milzoo predict`` run reads: files, folders, globs, OME-Zarr plates and manifests expanded into
inputs, channel files grouped into fields, and where each input sits on its plate."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from milcnn.io.images import PIL_SUFFIXES, TIFF_SUFFIXES
from milcnn.io.omezarr import is_plate, plate_fields

__all__ = ["Inputs", "gather_inputs", "expand_inputs", "read_input_manifest", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES


@dataclass
class Inputs:
    """A run's inputs: ``paths`` (files, ``ChannelFiles``, ``ZarrField``), ``missing`` inputs that matched
    nothing, ``problems`` (field name, what is wrong) of channel files that make no field, ``skipped`` images
    in subfolders (no ``--recursive``), ``roots`` the input folder of each image found in one, the
    manifest's carried columns (``extras`` per input, ``extra_names``) and locations, and ``pattern``
    (``--well-pattern``)."""

    paths: list
    missing: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    roots: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    extra_names: list[str] = field(default_factory=list)
    locations: dict = field(default_factory=dict)
    pattern: re.Pattern | None = None

    def location(self, item):
        """Where ``item`` sits: the manifest's, the OME-Zarr field's own, else from its name or folder."""
        from milcnn.io.locations import locate

        return (self.locations.get(item) or getattr(item, "location", None)
                or locate(item, root=self.roots.get(item), pattern=self.pattern))


def gather_inputs(clf, inputs, opts, *, taken: list[str], echo: Callable[[str], None],
                  out_dir: Path | None = None) -> Inputs:
    """``inputs`` (files, folders, globs, plates) and ``opts.manifest``'s, for ``clf`` (a ``milcnn.batch.run.BatchOptions``; ``taken``: the predictions.csv
    columns a manifest's carried column must not reuse).

    Raises:
        ValueError: no input images, a bad ``--well-pattern``, a bad manifest, no file matching the channel
            patterns (one line each).
    """
    paths, missing, skipped, roots = expand_inputs(inputs, recursive=opts.recursive)
    if out_dir is not None:  # --out inside an input folder: its own masks and overlays are not inputs
        out = Path(out_dir).resolve()
        holding = {top for top in set(roots.values()) if _inside(out, top)}
        if holding:  # resolved only then: a plate of 10^5 files elsewhere costs nothing here
            paths = [p for p in paths if roots.get(p) not in holding or not _inside(p, out)]
    found = Inputs(paths, missing, skipped=skipped, roots=roots)
    if opts.manifest is not None:
        listed, found.extras, found.extra_names, found.locations = read_input_manifest(opts.manifest, clf.channels,
                                                                                       taken)
        found.paths += listed
    found.pattern = well_pattern(opts.well_pattern)
    if opts.channels or opts.layout:
        from milcnn.io.fields import channel_rules, group_channels

        rule, mapping = channel_rules(clf.channels, tuple(opts.channels), opts.layout)
        files = found.paths
        found.paths, found.problems, unmatched = group_channels(files, clf.channels, rule, mapping)
        found.roots = {f: roots[f.files[0]] for f in found.paths if f.files[0] in roots}
        echo(f"milzoo: {len(files)} files grouped into {len(found.paths) + len(found.problems)} fields of "
             f"{len(clf.channels)} channels ({', '.join(clf.channels)})"
             + (f"; {unmatched} files match no channel and are ignored" if unmatched else ""))
        if not found.paths and not found.problems:
            raise ValueError("no file matches the channel patterns (--channel / --layout)")
    if len(clf.channels) > 1 and not (opts.channels or opts.layout):
        hint = layout_hint(found.paths)
        if hint:
            echo(hint)
    if skipped:
        echo(f"milzoo: {skipped} images in subfolders were skipped; pass --recursive to include them")
    if not found.paths and not found.problems:
        for item in missing:
            echo(f"milzoo: {item}: no such file, folder or matching files")
        raise ValueError("no input images found")
    if found.pattern is not None:  # every match a well before any image is predicted (one line, the flag named)
        for item in found.paths:
            found.location(item)
    return found


def _inside(path, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):
        return False


def layout_hint(paths: list) -> str | None:
    """A line naming the fix where the files are one microscope's channel files given without ``--layout``."""
    from milcnn.io.fields import LAYOUTS

    for name, pattern in LAYOUTS.items():
        named = [p for p in paths if isinstance(p, Path) and pattern.match(p.name)]
        if len(named) >= 2:
            return (f"milzoo: {len(named)} files are named like {name} channel files ({named[0].name}, ...): pass "
                    f"--layout {name} to read each field's channel files together")
    return None


def well_pattern(text: str | None) -> re.Pattern | None:
    """``--well-pattern`` compiled and checked for its named groups."""
    if not text:
        return None
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ValueError(f"--well-pattern {text!r} is not a regular expression ({exc})") from None
    if not ({"well"} <= set(pattern.groupindex) or {"row", "col"} <= set(pattern.groupindex)):
        raise ValueError(f"--well-pattern {text!r} needs a named group 'well', or 'row' and 'col'")
    return pattern


def expand_inputs(inputs, *, recursive: bool = False) -> tuple[list[Path], list[str], int, dict[Path, Path]]:
    """Files, folders (their images, sorted) and globs -> (image paths, inputs that matched nothing,
    images in subfolders that were skipped because ``recursive`` is off, the input folder of each image
    found in one).

    Entries with an image suffix that are not regular files (a folder named ``x.tif``, a FIFO, a broken
    or looping link) are kept, so that each is reported as a failed image instead of being skipped
    without a word."""
    found, missing, skipped, roots = [], [], 0, {}
    for item in inputs:
        item = str(item)
        if any(ch in item for ch in "*?[") and not Path(item).exists():  # field[1].tif is a file, not a glob
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            files = [p for p in matches if p.is_file() or _looks_like_image(p)]
            found += files
            if not files:
                missing.append(item)
        elif Path(item).is_dir() and is_plate(item):  # an OME-Zarr HCS plate: its fields
            found += plate_fields(item)
        elif Path(item).is_dir():
            top = Path(item)
            if recursive:
                inside = sorted((p for p in top.rglob("*") if _looks_like_image(p)), key=lambda p: p.parts)
            else:
                inside = sorted(p for p in top.iterdir() if _looks_like_image(p))
                skipped += sum(1 for p in top.rglob("*") if p.parent != top and _looks_like_image(p)
                               and p.is_file())
            found += inside
            roots.update((p, top) for p in inside)
        elif Path(item).exists() or Path(item).is_symlink():
            found.append(Path(item))
        else:
            missing.append(item)
    seen, unique = set(), []
    for p in found:
        try:
            key = p.resolve()
        except (OSError, RuntimeError):  # a symlink loop: keep it, reading it will say what it is
            key = p.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, missing, skipped, roots


def _looks_like_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_input_manifest(path: Path, channels: tuple[str, ...], taken: list[str]):
    """Inputs from a manifest in the training format: a ``path`` column (one multi-channel file) or
    ``path_<channel>`` columns (one file per model channel), relative to the manifest's folder.

    Returns:
        (inputs, {input: {column: value}} of the other columns, their names in predictions.csv (a name
        the results already use gets ``manifest_``), {input: Location} where the manifest has a
        ``well`` column).

    Raises:
        ValueError: unreadable, or neither layout of path columns (names the file).
    """
    import csv
    import io

    from milcnn.io.fields import ChannelFiles
    from milcnn.io.locations import Location, parse_well

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--manifest {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    try:
        columns = reader.fieldnames or []
        per_channel = [f"path_{c}" for c in channels]
        if all(c in columns for c in per_channel):
            used = per_channel
        elif "path" in columns:
            used = ["path"]
        else:
            raise ValueError(f"--manifest {path}: needs a 'path' column or {', '.join(per_channel)} (has "
                             f"{', '.join(columns) or 'no columns'})")
        place = {"plate", "well", "field"} if "well" in columns else set()
        carried = [c for c in columns if c not in used and not c.startswith("path_") and c != "path"
                   and c not in place]
        names = [f"manifest_{c}" if c in taken else c for c in carried]
        base = Path(path).parent
        inputs, extras, locations, lines = [], {}, {}, {}
        for line, row in enumerate(reader, 2):
            if any(not row.get(c) for c in used):
                raise ValueError(f"--manifest {path}, line {line}: empty {' or '.join(used)}")
            files = [Path(row[c]) if Path(row[c]).is_absolute() else base / row[c] for c in used]
            item = files[0] if len(files) == 1 else ChannelFiles(files[0].with_suffix(""), tuple(files))
            extra = [row.get(c) or "" for c in carried]
            well = parse_well(row.get("well")) if place else None
            where = Location(row.get("plate") or base.name, well, row.get("field") or "") if well else None
            if item in lines:  # the same image twice: once is enough, two different records are an error
                if extras[item] != extra or locations.get(item) != where:
                    raise ValueError(f"--manifest {path}, line {line}: {row[used[0]]} is listed again with other "
                                     f"values (line {lines[item]})")
                continue
            inputs.append(item)
            lines[item], extras[item] = line, extra
            if where is not None:
                locations[item] = where
    except csv.Error as exc:
        raise ValueError(f"--manifest {path}, line {reader.line_num + 1}: {exc}") from None
    return inputs, extras, names, locations
