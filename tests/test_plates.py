"""Plates: one file per channel, well folders, file-name layouts, per-well results and the plate map."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from milcnn.cli import main
from milcnn.io.fields import channel_rules, group_channels
from milcnn.io.locations import locate

ZOO = Path(__file__).resolve().parents[1] / "zoo"
SAMPLE = ZOO / "yeast-loc" / "sample_input.tif"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def fields():
    """Four different 128 x 128 two-channel crops of the sample: enough variety for a plate."""
    s = tifffile.imread(SAMPLE)
    return [s[:, y:y + 128, x:x + 128] for y in (0, 256) for x in (0, 256)]


def test_locations_from_names_and_folders():
    root = Path("/data/plate1")
    assert locate(root / "P1_B03_s2_w1.tif", root=root)[1:] == ("B03", "2")
    assert locate(root / "r03c11f04p01-ch2sk1fk1fl1.tiff", root=root)[1:] == ("C11", "4")
    assert locate(root / "H12" / "field_3.tif", root=root) == ("plate1", "H12", "3")
    assert locate(root / "cells.tif", root=root) is None
    import re

    custom = re.compile(r"well(?P<row>\d+)x(?P<col>\d+)_(?P<field>\d+)")
    assert locate(root / "well2x5_7.tif", root=root, pattern=custom)[1:] == ("B05", "7")


def test_channel_files_group_by_what_the_star_matched(tmp_path):
    names = ["B03_s1_w1.tif", "B03_s1_w2.tif", "B03_s2_w1.tif", "B03_s2_w2.tif", "B04_s1_w1.tif", "notes.tif"]
    paths = [tmp_path / n for n in names]
    rule, mapping = channel_rules(("gfp", "rfp"), ("gfp=*_w1.tif", "rfp=*_w2.tif"))
    fields, problems, unmatched = group_channels(paths, ("gfp", "rfp"), rule, mapping)
    assert [(f.id.name, [p.name for p in f.files]) for f in fields] == [
        ("B03_s1", ["B03_s1_w1.tif", "B03_s1_w2.tif"]), ("B03_s2", ["B03_s2_w1.tif", "B03_s2_w2.tif"])]
    assert problems == [(str(tmp_path / "B04_s1"), "channel rfp missing (has B04_s1_w1.tif)")] and unmatched == 1
    rule, mapping = channel_rules(("gfp", "rfp"), ("gfp=2", "rfp=1"), "imagexpress")
    guid = "B2D7F0A6-1C4E-4F2B-9A55-0123456789AB"
    fields, _, _ = group_channels([tmp_path / f"P_B03_s1_w1{guid}.tif", tmp_path / f"P_B03_s1_w2{guid}.tif"],
                                  ("gfp", "rfp"), rule, mapping)
    assert [p.name[:11] for p in fields[0].files] == ["P_B03_s1_w2", "P_B03_s1_w1"]  # gfp is w2 here
    for bad in (("gfp=*_w1.tif",), ("gfp=*_w1.tif", "rfp=w2.tif"), ("dna=*.tif", "rfp=*_w2.tif")):
        with pytest.raises(ValueError, match="--channel"):
            channel_rules(("gfp", "rfp"), bad)


def test_a_96_well_plate_of_channel_files_in_well_folders(tmp_path, fields):
    """2 x 192 single-channel files (2 fields per well) in well subfolders, one command: one row per field,
    96 rows in wells.csv, a plate.png, and treatments.csv from a plate map."""
    plate = tmp_path / "plate1"
    wells = [f"{r}{c:02d}" for r in "ABCDEFGH" for c in range(1, 13)]
    for i, well in enumerate(wells):
        (plate / well).mkdir(parents=True)
        for f in (1, 2):
            image = fields[(i + f) % 4]
            for w in (1, 2):
                tifffile.imwrite(plate / well / f"{well}_s{f}_w{w}.tif", image[w - 1])
    plate_map = tmp_path / "map.csv"
    plate_map.write_text("well,compound,concentration,moa\n" + "".join(
        f"{w},{'DMSO' if int(w[1:]) <= 6 else 'drug'},{0 if int(w[1:]) <= 6 else 1},x\n" for w in wells))
    out = tmp_path / "out"
    result = run("predict", plate, "--recursive", "--layout", "imagexpress", "--out", out, "--plate-map", plate_map,
                 "--no-overlays")
    assert result.exit_code == 0, result.output
    assert "384 files grouped into 192 fields of 2 channels" in result.output
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 192 and {r["well"] for r in rows} == set(wells) and {r["plate"] for r in rows} == {"plate1"}
    assert {r["field"] for r in rows} == {"1", "2"} and all(r["image"].endswith(("_s1", "_s2")) for r in rows)
    table = list(csv.DictReader(open(out / "wells.csv")))
    assert len(table) == 96 and all(r["fields"] == "2" for r in table)
    a01 = [r for r in rows if r["well"] == "A01"]
    p_er = np.mean([float(r["p_ER"]) for r in a01])
    assert float(next(r for r in table if r["well"] == "A01")["p_ER"]) == pytest.approx(p_er, abs=1e-6)
    treatments = list(csv.DictReader(open(out / "treatments.csv")))
    assert [(t["compound"], t["wells"], t["fields"]) for t in treatments] == [("DMSO", "48", "96"), ("drug", "48", "96")]
    png = out / "plate.png"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_a_missing_channel_file_is_an_error_row_and_the_rest_predicted(tmp_path, fields):
    folder = tmp_path / "plate"
    folder.mkdir()
    for name, image in (("A01_s1", fields[0]), ("A02_s1", fields[1])):
        for w in (1, 2):
            tifffile.imwrite(folder / f"{name}_w{w}.tif", image[w - 1])
    (folder / "A02_s1_w2.tif").unlink()
    out = tmp_path / "out"
    result = run("predict", folder, "--channel", "gfp=*_w1.tif", "--channel", "rfp=*_w2.tif", "--out", out)
    assert result.exit_code == 1, result.output
    errors = list(csv.DictReader(open(out / "errors.csv")))
    assert len(errors) == 1 and errors[0]["image"].endswith("A02_s1") and "channel rfp missing" in errors[0]["error"]
    assert len(list(csv.DictReader(open(out / "predictions.csv")))) == 1
    shutil.copy(folder / "A02_s1_w1.tif", folder / "A02_s1_w2.tif")  # the file arrives: --resume takes it
    assert run("predict", folder, "--channel", "gfp=*_w1.tif", "--channel", "rfp=*_w2.tif", "--out", out,
               "--resume").exit_code == 0
    assert not (out / "errors.csv").exists() and len(list(csv.DictReader(open(out / "predictions.csv")))) == 2


def test_a_manifest_gives_inputs_and_its_other_columns_are_carried(tmp_path, fields):
    for name, image in (("a", fields[0]), ("b", fields[1])):
        tifffile.imwrite(tmp_path / f"{name}_gfp.tif", image[0])
        tifffile.imwrite(tmp_path / f"{name}_rfp.tif", image[1])
    (tmp_path / "m.csv").write_text("path_gfp,path_rfp,label,compound,well\n"
                                    "a_gfp.tif,a_rfp.tif,ER,taxol,B03\nb_gfp.tif,b_rfp.tif,cytosol,dmso,B04\n")
    result = run("predict", "--manifest", tmp_path / "m.csv", "--out", tmp_path / "out", "--no-overlays")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert [(r["well"], r["manifest_label"], r["compound"]) for r in rows] == [("B03", "ER", "taxol"),
                                                                              ("B04", "cytosol", "dmso")]
    stacked = np.stack([tifffile.imread(tmp_path / "a_gfp.tif"), tifffile.imread(tmp_path / "a_rfp.tif")])
    from milcnn import Classifier

    p = Classifier.from_hub("yeast-loc").predict(stacked).probabilities["ER"]
    assert float(rows[0]["p_ER"]) == pytest.approx(p, abs=1e-6)


def test_ome_channel_names_and_channel_index_pick_the_models_channels(tmp_path, fields):
    """A 4-channel OME-TIFF (dapi, rfp, bf, gfp) gives gfp and rfp by name; names that are not the model's
    are a clear error; --channel-index picks them by position instead."""
    from milcnn import Classifier

    clf = Classifier.from_hub("yeast-loc")
    gfp, rfp = fields[0]
    four = np.stack([np.zeros_like(gfp), rfp, np.full_like(gfp, 7), gfp])
    tifffile.imwrite(tmp_path / "named.ome.tif", four, ome=True, photometric="minisblack",
                     metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "RFP", "BF", "GFP"]}})
    want = clf.predict(np.stack([gfp, rfp])).probabilities
    assert clf.predict(tmp_path / "named.ome.tif").probabilities == pytest.approx(want, abs=1e-6)
    tifffile.imwrite(tmp_path / "other.ome.tif", four, ome=True, photometric="minisblack",
                     metadata={"axes": "CYX", "Channel": {"Name": ["c1", "c2", "c3", "c4"]}})
    with pytest.raises(ValueError, match="none of the model's"):
        clf.predict(tmp_path / "other.ome.tif")
    assert clf.predict(tmp_path / "other.ome.tif", channel_index=(3, 1)).probabilities == pytest.approx(want, abs=1e-6)
    result = run("predict", tmp_path / "other.ome.tif", "--channel-index", "3,1", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert run("predict", tmp_path / "other.ome.tif", "--channel-index", "3", "--out", tmp_path / "o2").exit_code == 2


def test_an_operetta_plate_folder(tmp_path, fields):
    """Operetta/Opera names (r<row>c<col>f<field>p<plane>-ch<n>...): channels by number, wells from the name."""
    folder = tmp_path / "Images"
    folder.mkdir()
    for i, (r, c) in enumerate([(1, 1), (2, 11)]):
        for f in (1, 2):
            image = fields[(i + f) % 4]
            for ch, plane in ((1, image[1]), (2, image[0])):  # ch1 is rfp, ch2 gfp here
                tifffile.imwrite(folder / f"r{r:02d}c{c:02d}f{f:02d}p01-ch{ch}sk1fk1fl1.tiff", plane)
    out = tmp_path / "out"
    result = run("predict", folder, "--layout", "operetta", "--channel", "gfp=2", "--channel", "rfp=1", "--out", out,
                 "--no-overlays")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert sorted((r["well"], r["field"]) for r in rows) == [("A01", "1"), ("A01", "2"), ("B11", "1"), ("B11", "2")]
    from milcnn import Classifier

    first = next(r for r in rows if r["well"] == "A01" and r["field"] == "1")
    want = Classifier.from_hub("yeast-loc").predict(fields[1]).probabilities["ER"]  # gfp from ch2, rfp from ch1
    assert float(first["p_ER"]) == pytest.approx(want, abs=1e-6)
    assert len(list(csv.DictReader(open(out / "wells.csv")))) == 2
