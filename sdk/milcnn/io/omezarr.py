"""OME-Zarr HCS plates (NGFF 0.4 and 0.5): every field of every well as an input, and each field's mask
written back as the NGFF label image ``labels/milcnn`` (``--write-labels``).

Needs the optional extra ``milcnn-sdk[zarr]`` (zarr-python 3, which reads both the zarr v2 files of NGFF
0.4 and the zarr v3 files of 0.5). A field is read at its full resolution (the first dataset of its
multiscales), at the first time point and z plane, with the model's channels picked by name from the
``omero`` channel labels when they name them (in order otherwise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from milcnn.errors import ImageReadError
from milcnn.io.fields import FieldPath
from milcnn.io.locations import parse_well

__all__ = ["ZarrField", "is_plate", "plate_fields", "LABEL_NAME"]

LABEL_NAME = "milcnn"


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError("reading OME-Zarr plates needs zarr: pip install 'milcnn-sdk[zarr]'") from None
    return zarr


def _ome_attrs(attrs) -> tuple[dict, str]:
    """(the NGFF metadata, its version) of a group's attributes: 0.5 nests it under ``ome``."""
    attrs = dict(attrs)
    if "ome" in attrs:
        return dict(attrs["ome"]), str(attrs["ome"].get("version", "0.5"))
    version = ""
    for key in ("plate", "well", "multiscales"):
        if key in attrs:
            meta = attrs[key]
            meta = meta[0] if isinstance(meta, list) and meta else meta
            version = str(meta.get("version", "0.4")) if isinstance(meta, dict) else "0.4"
            break
    return attrs, version or "0.4"


def is_plate(path) -> bool:
    """Whether ``path`` is a folder holding an OME-Zarr HCS plate (read from its metadata files only)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for name in ("zarr.json", ".zattrs"):
        meta = path / name
        if meta.is_file():
            try:
                data = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False
            attrs = data.get("attributes", data) if name == "zarr.json" else data
            return "plate" in attrs or "plate" in attrs.get("ome", {})
    return False


@dataclass(frozen=True)
class ZarrField(FieldPath):
    """One field of a plate: ``plate/<row>/<col>/<field>``. Path-like for the outputs (``id``)."""

    plate_path: Path
    image_path: str  # "A/1/0", relative to the plate
    plate: str
    well: str  # "A01"
    field: str
    version: str

    @property
    def id(self) -> Path:
        return self.plate_path / self.image_path

    @property
    def name(self) -> str:  # unique within the plate, for the output files
        return f"{self.plate}_{self.well}_f{self.field}"

    @property
    def location(self):
        from milcnn.io.locations import Location

        return Location(self.plate, self.well, self.field)

    # ------------------------------------------------------------------ reading

    def _group(self, mode: str = "r"):
        return _zarr().open_group(str(self.id), mode=mode)

    def read(self, channels: tuple[str, ...]):
        """The field at full resolution as (C, H, W), the model's ``channels`` in order, with its pixel size
        (``milcnn.io.readers.Readable``)."""
        from milcnn.io.readers import ReadImage

        return ReadImage(self._channels(channels), str(self), self.pixel_size())

    def _channels(self, channels: tuple[str, ...]) -> np.ndarray:
        """The model's ``channels`` of the field at full resolution, as (C, H, W).

        Raises:
            ImageReadError: no multiscales, no channel axis of the right size, or omero labels that name
                none of the model's channels.
        """
        group = self._group()
        meta, _ = _ome_attrs(group.attrs)
        multiscales = meta.get("multiscales") or []
        if not multiscales:
            raise ImageReadError(self.id, "no multiscales metadata: not an OME-Zarr image")
        ms = multiscales[0]
        axes = [a["name"] if isinstance(a, dict) else str(a) for a in ms.get("axes", [])]
        array = group[ms["datasets"][0]["path"]]
        if len(axes) != array.ndim:
            axes = ["t", "c", "z", "y", "x"][-array.ndim:]
        index = tuple(0 if a in ("t", "z") else slice(None) for a in axes)
        _within_budget(self.id, array, axes)
        data = np.asarray(array[index])
        kept = [a for a in axes if a not in ("t", "z")]
        if "c" not in kept:
            data, kept = data[None], ["c", *kept]
        data = np.moveaxis(data, kept.index("c"), 0)
        labels = [str(c.get("label", "")) for c in (meta.get("omero") or {}).get("channels", [])]
        if labels and len(labels) == data.shape[0]:
            lower = [label.lower() for label in labels]
            wanted = [c.lower() for c in channels]
            if all(c in lower for c in wanted):
                return data[[lower.index(c) for c in wanted]]
            if any(c in lower for c in wanted):
                raise ImageReadError(self.id, f"its channels are {', '.join(labels)}; the model needs "
                                              f"{', '.join(channels)}")
            if data.shape[0] != len(channels):
                raise ImageReadError(self.id, f"its channels {', '.join(labels)} name none of the model's "
                                              f"({', '.join(channels)})")
        if data.shape[0] < len(channels):
            raise ImageReadError(self.id, f"has {data.shape[0]} channels; the model needs {len(channels)} "
                                          f"({', '.join(channels)})")
        return data[: len(channels)]

    def pixel_size(self) -> float | None:
        """The field's pixel size in um at full resolution: the ``scale`` transformations of its first
        dataset (and of the multiscale, where given) on the y and x axes, in the x axis's ``unit``; None where
        it declares none, no unit (NGFF leaves a scale without a unit in unknown units), or malformed metadata."""
        try:
            return self._pixel_size()
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):  # malformed: no scale to use
            return None

    def _pixel_size(self) -> float | None:
        from milcnn.io.metadata import pixel_size_um

        meta, _ = _ome_attrs(self._group().attrs)
        ms = (meta.get("multiscales") or [{}])[0]
        axes = ms.get("axes") or []
        names = [a.get("name") if isinstance(a, dict) else str(a) for a in axes]
        factors = None
        for transforms in (ms.get("datasets", [{}])[0].get("coordinateTransformations"),
                           ms.get("coordinateTransformations")):
            for t in transforms or []:
                if isinstance(t, dict) and t.get("type") == "scale" and isinstance(t.get("scale"), list):
                    scale = t["scale"]
                    factors = scale if factors is None else [a * b for a, b in zip(factors, scale)]
        if not factors or len(factors) != len(names) or "x" not in names or "y" not in names:
            return None
        unit = next((a.get("unit") for a in axes if isinstance(a, dict) and a.get("name") == "x"), None)
        if unit is None:
            return None
        return pixel_size_um((factors[names.index("y")], factors[names.index("x")]), unit, source=self.id)

    # ------------------------------------------------------------------ writing

    def write_label(self, mask: np.ndarray, classes: tuple[str, ...], colours: np.ndarray) -> None:
        """Write ``mask`` as this field's NGFF label image ``labels/milcnn`` (y, x), with each class's
        colour and name in the label properties; replaces an earlier one."""
        image = self._group("r+")
        labels = image.require_group("labels")
        meta, _ = _ome_attrs(labels.attrs)
        names = list(meta.get("labels", []))
        if LABEL_NAME not in names:
            names.append(LABEL_NAME)
        _set_ome(labels, {"labels": names}, self.version)
        if LABEL_NAME in labels:
            del labels[LABEL_NAME]
        group = labels.create_group(LABEL_NAME)
        names = {"dimension_names": ("y", "x")} if self.version.startswith("0.5") else {}  # NGFF 0.5: zarr v3 names
        group.create_array("0", data=np.ascontiguousarray(mask), chunks=mask.shape, **names)
        image_meta, _ = _ome_attrs(image.attrs)
        transform = (image_meta.get("multiscales") or [{}])[0].get("datasets", [{}])[0].get(
            "coordinateTransformations", [{"type": "scale", "scale": [1.0, 1.0]}])
        scale = [float(v) for v in transform[0].get("scale", [1.0, 1.0])][-2:]
        multiscales = [{"name": LABEL_NAME, "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]
        image_label = {"colors": [{"label-value": k + 1, "rgba": [int(v) for v in colours[k % len(colours)]] + [255]}
                                  for k in range(len(classes))],
                       "properties": [{"label-value": k + 1, "class": c} for k, c in enumerate(classes)],
                       "source": {"image": "../../"}}
        if not self.version.startswith("0.5"):
            multiscales[0]["version"] = "0.4"
            image_label["version"] = "0.4"
        _set_ome(group, {"multiscales": multiscales, "image-label": image_label}, self.version)


def _set_ome(group, meta: dict, version: str) -> None:
    if version.startswith("0.5"):
        current = dict(group.attrs.get("ome", {}))
        current.update(meta, version="0.5")
        group.attrs["ome"] = current
    else:
        for key, value in meta.items():
            group.attrs[key] = value


def plate_fields(path) -> list[ZarrField]:
    """Every field of every well of the plate at ``path``, in the order of its wells.

    Raises:
        ImageReadError: the plate's metadata cannot be read (names the file).
    """
    path = Path(path)
    try:
        group = _zarr().open_group(str(path), mode="r")
        meta, version = _ome_attrs(group.attrs)
        plate = meta["plate"]
        rows = [r["name"] for r in plate.get("rows", [])]
        columns = [c["name"] for c in plate.get("columns", [])]
        fields = []
        for well in plate["wells"]:
            well_path = _inside_plate(well["path"], "well path")
            if "rowIndex" in well and "columnIndex" in well and rows and columns:
                if not (0 <= well["rowIndex"] < len(rows) and 0 <= well["columnIndex"] < len(columns)):
                    raise ValueError(f"well {well_path!r}: rowIndex {well['rowIndex']} / columnIndex "
                                     f"{well['columnIndex']} outside its {len(rows)} rows and {len(columns)} columns")
                row_name, col_name = rows[well["rowIndex"]], columns[well["columnIndex"]]
            else:
                row_name, col_name = well_path.split("/")[:2]
            name = parse_well(f"{row_name}{col_name}")
            if name is None:
                raise ValueError(f"well {well_path!r}: row {row_name!r} and column {col_name!r} are not a well name")
            well_meta, _ = _ome_attrs(group[well_path].attrs)
            for k, image in enumerate(well_meta.get("well", {}).get("images", [])):
                image_path = _inside_plate(f"{well_path}/{image['path']}", "image path")
                fields.append(ZarrField(path, image_path, str(plate.get("name") or path.stem), name, str(k + 1),
                                        version))
    except ImportError:
        raise
    except (KeyError, TypeError, ValueError, OSError, IndexError) as exc:
        raise ImageReadError(path, f"not a readable OME-Zarr plate ({type(exc).__name__}: {exc})") from None
    return fields


def _within_budget(where, array, axes: list[str]) -> None:
    """Refuse a field, from its metadata and before any pixel is read, that declares more values (one plane of
    every channel) than ``constants.MAX_IMAGE_VALUES``, or chunks that large (a chunk is decoded whole)."""
    from milcnn import constants

    budget = constants.MAX_IMAGE_VALUES
    kept = [n for n, a in zip(array.shape, axes) if a not in ("t", "z")]
    chunks = getattr(array, "chunks", None) or array.shape
    declared, chunk = int(np.prod(kept, dtype=np.int64)), int(np.prod(chunks, dtype=np.int64))
    if declared > budget or chunk > budget:
        what = f"{declared:,} values ({' x '.join(map(str, kept))})" if declared > budget else \
            f"chunks of {chunk:,} values ({' x '.join(map(str, chunks))})"
        raise ImageReadError(where, f"declares {what}, over the {budget:,} an image may take (set "
                                    "MILCNN_MAX_IMAGE_VALUES to raise it, if the memory is there)")


def _inside_plate(relative, what: str) -> str:
    """A path of the plate's metadata, refused unless it stays inside the plate (no ``..``, not absolute)."""
    text = str(relative)
    parts = text.replace("\\", "/").split("/")
    if not text or text.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise ValueError(f"{what} {text!r} leaves the plate")
    return text
