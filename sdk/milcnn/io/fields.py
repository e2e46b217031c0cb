"""Fields stored as one file per channel (what most HCS microscopes write), grouped into one input each.

``--channel NAME=GLOB`` (one per model channel, one ``*`` per glob) groups the files whose names match
by what the ``*`` matched, in each folder: ``--channel gfp='*_w1.tif' --channel rfp='*_w2.tif'`` makes
``B03_s1_w1.tif`` and ``B03_s1_w2.tif`` one field, ``B03_s1``. ``--layout imagexpress`` and
``--layout operetta`` know those microscopes' names (``<field>_w<n>[<GUID>].tif``,
``r01c01f01p01-ch<n>...tiff``) and map their channel numbers to the model's channels in order, or as
``--channel NAME=<n>`` says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChannelFiles", "FieldPath", "LAYOUTS", "channel_rules", "group_channels"]

LAYOUTS = {
    "imagexpress": re.compile(r"^(?P<field>.+)_w(?P<channel>\d{1,2})(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                              r"[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?\.tiff?$", re.IGNORECASE),
    "operetta": re.compile(r"^(?P<field>r\d{1,2}c\d{1,2}f\d{1,3}p\d{1,3})-ch(?P<channel>\d{1,2})(?P<rest>[^.]*)\.tiff?$",
                           re.IGNORECASE),
}


class FieldPath:
    """Path-like behaviour, from ``self.id``, for inputs that are not one file (``ChannelFiles``,
    ``milcnn.io.omezarr.ZarrField``): outputs, stems, locations and rows name them by ``id``."""

    id: Path

    @property
    def name(self) -> str:
        return self.id.name

    @property
    def stem(self) -> str:
        return self.name

    @property
    def parent(self) -> Path:
        return self.id.parent

    def relative_to(self, other) -> Path:
        return self.id.relative_to(other)

    def is_relative_to(self, other) -> bool:
        return self.id.is_relative_to(other)

    def resolve(self) -> Path:
        return self.id.resolve()

    def absolute(self) -> Path:
        return self.id.absolute()

    def __str__(self) -> str:
        return str(self.id)

    def __fspath__(self) -> str:
        return str(self.id)


@dataclass(frozen=True)
class ChannelFiles(FieldPath):
    """One field given as one file per model channel: ``files`` in the model's channel order.
    ``id`` (the folder and the shared part of the names) names it in every output."""

    id: Path
    files: tuple[Path, ...]

    def read(self, channels: tuple[str, ...]):
        """The channel files stacked as (C, H, W) (``milcnn.io.readers.Readable``), with the pixel size the
        first file declares."""
        import numpy as np

        from milcnn.io.images import open_image
        from milcnn.io.lazy import LazyTiff
        from milcnn.io.readers import ReadImage

        planes, sizes = [], []
        for channel, path in zip(channels, self.files):
            plane, meta = open_image(path)
            sizes.append(meta.pixel_size)
            if isinstance(plane, LazyTiff) or np.squeeze(np.asarray(plane)).ndim != 2:
                raise ValueError(f"{path}: the {channel} file of {self.id.name} holds an image of shape "
                                 f"{plane.shape}; one plane per channel file is expected")
            planes.append(np.squeeze(np.asarray(plane)))
        if len({p.shape for p in planes}) > 1:
            raise ValueError(f"{self.id}: its channel files differ in size "
                             f"({', '.join(f'{c} {p.shape}' for c, p in zip(channels, planes))})")
        dtype = np.result_type(*planes)
        return ReadImage(np.stack([p.astype(dtype, copy=False) for p in planes]), str(self), sizes[0])


def channel_rules(model_channels: tuple[str, ...], channels: tuple[str, ...] = (), layout: str | None = None):
    """The rule that names each file's field and channel: ``(regex, {key: model channel})``.

    Args:
        model_channels: the model's channels, in order.
        channels: ``NAME=GLOB`` (no layout) or ``NAME=<n>`` (with a layout), as given.
        layout: ``imagexpress`` or ``operetta``.

    Raises:
        ValueError: a malformed ``--channel``, an unknown channel name, a glob without exactly one ``*``,
            or not every model channel given.
    """
    pairs = []
    for spec in channels:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"--channel {spec!r}: expected NAME=GLOB (e.g. gfp='*_w1.tif')")
        if name not in model_channels:
            raise ValueError(f"--channel {spec!r}: the model's channels are {', '.join(model_channels)}")
        pairs.append((name, value))
    if layout is not None:
        if layout not in LAYOUTS:
            raise ValueError(f"--layout {layout!r}: choose {', '.join(LAYOUTS)}")
        if pairs:
            bad = [v for _, v in pairs if not v.isdigit()]
            if bad:
                raise ValueError(f"--channel with --layout takes the channel number, e.g. gfp=1 (got {bad[0]!r})")
            mapping = {int(v): name for name, v in pairs}
            if sorted(mapping.values()) != sorted(model_channels):
                raise ValueError(f"--channel must give every model channel once: {', '.join(model_channels)}")
        else:
            mapping = None  # by order of the channel numbers found
        return LAYOUTS[layout], mapping
    if not pairs:
        return None, None
    if sorted(name for name, _ in pairs) != sorted(model_channels):
        raise ValueError(f"--channel must give every model channel once: {', '.join(model_channels)}")
    alternatives = []
    mapping = {}
    for k, (name, glob) in enumerate(pairs):
        if glob.count("*") != 1 or any(ch in glob for ch in "?[]/\\"):
            raise ValueError(f"--channel {name}={glob!r}: the pattern needs exactly one * (and no ?, [ or /)")
        before, after = glob.split("*")
        alternatives.append(f"{re.escape(before)}(?P<field{k}>.+){re.escape(after)}")
        mapping[k] = name
    return re.compile("^(?:" + "|".join(alternatives) + ")$"), mapping


def group_channels(paths: list[Path], model_channels: tuple[str, ...], rule, mapping) -> tuple[
        list[ChannelFiles], list[tuple[str, str]], int]:
    """Files -> fields. Returns (complete fields in the order of their first file, ``(field, problem)``
    for fields with a channel missing or given twice, files that match no channel)."""
    groups: dict[Path, dict[str, list[Path]]] = {}
    order: list[Path] = []
    unmatched = 0
    numbers: set[int] = set()
    found = []
    for path in paths:
        m = rule.match(path.name)
        if not m:
            unmatched += 1
            continue
        groups_found = {k: v for k, v in m.groupdict().items() if v is not None}
        if "channel" in groups_found:  # a layout
            key = int(groups_found["channel"])
            numbers.add(key)
            field = groups_found["field"] + groups_found.get("rest", "")
        else:
            k = next(int(g[5:]) for g in groups_found if g.startswith("field"))
            key, field = k, groups_found[f"field{k}"]
        found.append((path, path.parent / field, key))
    if mapping is None:  # a layout without --channel: the channel numbers found, in order
        if len(numbers) < len(model_channels):
            raise ValueError(f"found channels {sorted(numbers)} but the model needs {len(model_channels)} "
                             f"({', '.join(model_channels)}); map them with --channel NAME=<n>")
        mapping = {n: model_channels[i] for i, n in enumerate(sorted(numbers)[:len(model_channels)])}
    for path, field_id, key in found:
        channel = mapping.get(key)
        if channel is None:
            unmatched += 1
            continue
        if field_id not in groups:
            groups[field_id] = {}
            order.append(field_id)
        groups[field_id].setdefault(channel, []).append(path)
    fields, problems = [], []
    for field_id in order:
        files = groups[field_id]
        missing = [c for c in model_channels if c not in files]
        twice = [c for c in model_channels if len(files.get(c, [])) > 1]
        if missing:
            problems.append((str(field_id), f"channel {', '.join(missing)} missing (has "
                                            f"{', '.join(f.name for fs in files.values() for f in fs)})"))
        elif twice:
            problems.append((str(field_id), f"channel {', '.join(twice)} given by several files "
                                            f"({', '.join(f.name for c in twice for f in files[c])})"))
        else:
            fields.append(ChannelFiles(field_id, tuple(files[c][0] for c in model_channels)))
    return fields, problems, unmatched
