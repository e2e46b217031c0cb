"""OME-Zarr HCS plates (NGFF 0.4 and 0.5): read every field, write the masks back as label images, and
validate both plates with ome-zarr-models."""

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

zarr = pytest.importorskip("zarr")  # the optional extra milcnn-sdk[zarr]; the test dependencies have it
ome_zarr_models = pytest.importorskip("ome_zarr_models")

from milcnn.cli import main  # noqa: E402


def _rebuild_validators() -> None:
    """ome-zarr-models 1.6 (the newest that installs beside olah's pydantic >= 2.13) leaves its models
    'not fully defined' under pydantic 2.13+: rebuild them with pydantic-zarr's types in scope. Under 2.13
    the v0.4 ones still fail (a generic's definition goes missing), hence pydantic >= 2.14 in the test extra."""
    import importlib

    import pydantic_zarr.v2 as spec2
    import pydantic_zarr.v3 as spec3

    for version, spec in (("v04", spec2), ("v05", spec3)):
        for name in ("image", "labels", "image_label", "well", "plate", "hcs"):
            module = importlib.import_module(f"ome_zarr_models.{version}.{name}")
            for obj in list(vars(module).values()):
                if isinstance(obj, type) and hasattr(obj, "model_rebuild") and obj.__module__ == module.__name__:
                    obj.model_rebuild(_types_namespace=vars(spec))


_rebuild_validators()

ZOO = Path(__file__).resolve().parents[1] / "zoo"
SAMPLE = ZOO / "yeast-loc" / "sample_input.tif"
WELLS = [("A", "1"), ("A", "2"), ("B", "1")]


def _ome(group, meta: dict, version: str) -> None:
    if version == "0.5":
        group.attrs["ome"] = {"version": "0.5", **meta}
    else:
        for key, value in meta.items():
            group.attrs[key] = value


def make_plate(path: Path, version: str) -> Path:
    """3 wells x 2 fields of 2 x 256 x 256, channels stored (rfp, dapi, gfp): the model's two by name."""
    sample = tifffile.imread(SAMPLE)
    fmt = 3 if version == "0.5" else 2
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    rows, cols = ["A", "B"], ["1", "2"]
    wells = [{"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": cols.index(c)} for r, c in WELLS]
    plate = {"name": "test-plate", "rows": [{"name": r} for r in rows], "columns": [{"name": c} for c in cols],
             "wells": wells, "field_count": 2}
    if version == "0.4":
        plate["version"] = "0.4"
    _ome(root, {"plate": plate}, version)
    for i, (r, c) in enumerate(WELLS):
        well = root.require_group(r).require_group(c)
        well_meta = {"images": [{"path": "0"}, {"path": "1"}]}
        if version == "0.4":
            well_meta["version"] = "0.4"
        _ome(well, {"well": well_meta}, version)
        for f in range(2):
            y, x = 128 * (i % 2), 128 * f
            gfp, rfp = sample[0, y:y + 256, x:x + 256], sample[1, y:y + 256, x:x + 256]
            data = np.stack([rfp, np.zeros_like(gfp), gfp])  # c, y, x
            image = well.create_group(str(f))
            names = {"dimension_names": ("c", "y", "x")} if version == "0.5" else {}  # NGFF 0.5 needs them
            image.create_array("0", data=data, chunks=(1, 256, 256), **names)
            ms = {"name": "field", "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
                                            {"name": "x", "type": "space"}],
                  "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.5]}]}]}
            if version == "0.4":
                ms["version"] = "0.4"
            omero = {"channels": [{"label": name, "color": "FFFFFF", "window": {"start": 0, "end": 65535, "min": 0,
                                                                                "max": 65535}, "active": True}
                                  for name in ("RFP", "DAPI", "GFP")]}
            if version == "0.4":
                omero["version"] = "0.4"
            _ome(image, {"multiscales": [ms], "omero": omero}, version)
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_plate_is_read_by_channel_name_and_labels_are_written_valid(tmp_path, version):
    from ome_zarr_models import open_ome_zarr

    plate = make_plate(tmp_path / "plate.zarr", version)
    open_ome_zarr(zarr.open_group(str(plate), mode="r"), version=version)  # a valid plate to start from
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(plate), "--out", str(out), "--write-labels", "--no-overlays",
                                       "--cell-diameter", "42"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 6 and {(r["plate"], r["well"], r["field"]) for r in rows} == {
        ("test-plate", f"{r}0{c}", str(f)) for r, c in WELLS for f in (1, 2)}
    assert len(list(csv.DictReader(open(out / "wells.csv")))) == 3
    from milcnn.outputs.layout import RunLayout  # what the napari reader opens them by

    layout = RunLayout(out)
    stems = layout.stems(rows)
    assert sorted(stems.values()) == sorted(p.stem for p in (out / "masks").iterdir())
    assert all(layout.mask(stems[r["image"]]).is_file() for r in rows)
    # the gfp and rfp channels were picked by name: the same field as a 2-channel array gives the same row
    from milcnn import Classifier

    clf = Classifier.from_hub("yeast-loc")
    field = np.asarray(zarr.open_group(str(plate / "A/1/0"), mode="r")["0"])
    direct = clf.predict(field[[2, 0]], cell_diameter=42)
    row = next(r for r in rows if r["image"].endswith("A/1/0"))
    assert float(row["p_ER"]) == pytest.approx(direct.probabilities["ER"], abs=1e-6)
    # labels: one per field, the mask written to the TIFF, and the plate still valid
    opened = zarr.open_group(str(plate / "A/1/0"), mode="r")
    label = np.asarray(opened["labels"]["milcnn"]["0"])
    np.testing.assert_array_equal(label, tifffile.imread(out / "masks" / "test-plate_A01_f1.tif"))
    meta = dict(opened["labels"]["milcnn"].attrs)
    meta = meta.get("ome", meta)
    assert [p["class"] for p in meta["image-label"]["properties"]] == list(clf.classes)
    open_ome_zarr(zarr.open_group(str(plate), mode="r"), version=version)
    from ome_zarr_models.v04.image_label import ImageLabel as Label04
    from ome_zarr_models.v05.image_label import ImageLabel as Label05

    (Label05 if version == "0.5" else Label04).from_zarr(opened["labels"]["milcnn"])


def test_without_write_labels_the_plate_is_not_modified(tmp_path):
    plate = make_plate(tmp_path / "plate.zarr", "0.5")
    before = {p: p.stat().st_mtime_ns for p in plate.rglob("*")}
    result = CliRunner().invoke(main, ["predict", str(plate), "--out", str(tmp_path / "out"), "--no-overlays"])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in plate.rglob("*")} == before
