"""Hostile inputs (issue 40): nothing written outside --out, no file clobbered through a planted link, every
file name and well name handled, every table error one line naming the file, line and field."""

import csv
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from milcnn.cli import main
from milcnn.outputs.layout import output_stems, safe_stem

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "zoo" / "yeast-loc" / "sample_input.tif"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_output_names_stay_unique_across_the_whole_run():
    """folder1/x.tif, folder2/x.tif and folder1__x.tif: three inputs, three names (no mask overwritten)."""
    paths = [Path("folder1/x.tif"), Path("folder2/x.tif"), Path("folder1__x.tif"), Path("FOLDER2__X.tif")]
    stems = output_stems(paths)
    assert len({s.lower() for s in stems.values()}) == len(paths)


@pytest.mark.parametrize("text", ["../../ESCAPED_A01_f1", "/../../x", "a\\b", ".hidden", "x\x00y", "b_\udcff\udcfe",
                                  "n" * 300])
def test_a_stem_is_one_safe_bounded_component(text):
    stem = safe_stem(text)
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".") and "\x00" not in stem
    assert len(stem.encode("utf-8")) <= 180 and os.path.basename(stem) == stem


def test_a_planted_lock_link_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".milzoo.lock").symlink_to(target)
    result = run("predict", SAMPLE, "--out", out)
    assert result.exit_code == 2 and "a link, not milzoo's lock file" in result.output
    assert target.read_text() == "keep me"


def test_a_planted_masks_link_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "masks").symlink_to(elsewhere, target_is_directory=True)
    result = run("predict", SAMPLE, "--out", out)
    assert result.exit_code != 0 and not any(elsewhere.iterdir())


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    folder = shutil.copytree(ROOT / "zoo" / "yeast-loc", tmp_path / "model")
    (folder / "config.json").unlink()
    if kind == "fifo":
        os.mkfifo(folder / "config.json")
    else:
        (folder / "config.json").symlink_to("/dev/zero")
    result = run("predict", SAMPLE, "--model", folder, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "not a regular file" in result.output


def test_a_file_name_that_is_not_utf8_is_predicted_and_resumed(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, os.fsencode(folder) + b"/b_\xff\xfe.tif")
    shutil.copy(SAMPLE, folder / "ok.tif")
    out = tmp_path / "out"
    assert run("predict", folder, "--out", out).exit_code == 0
    rows = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
    assert len(rows) == 2 and any("\\udcff" in r["image"] for r in rows)
    assert len(list((out / "masks").iterdir())) == 2
    again = run("predict", folder, "--out", out, "--resume")
    assert again.exit_code == 0 and "already predicted" not in again.output.split("resuming")[0]
    assert len(list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))) == 2


def test_a_long_file_name_is_written_under_a_shortened_name(tmp_path):
    name = "f" * 240 + ".tif"
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / name)
    out = tmp_path / "out"
    assert run("predict", folder, "--out", out).exit_code == 0
    (mask,) = (out / "masks").iterdir()
    assert len(mask.name.encode()) < 200


def test_brackets_in_a_file_name_are_not_a_glob(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "field[1].tif")
    shutil.copy(SAMPLE, tmp_path / "field1.tif")
    out = tmp_path / "out"
    assert run("predict", tmp_path / "field[1].tif", "--out", out).exit_code == 0
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [Path(r["image"]).name for r in rows] == ["field[1].tif"]


def test_out_inside_an_input_folder_is_not_read_as_input_on_resume(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "a.tif")
    out = tmp_path / "out"
    assert run("predict", tmp_path, "--recursive", "--out", out).exit_code == 0
    again = run("predict", tmp_path, "--recursive", "--out", out, "--resume")
    assert again.exit_code == 0
    assert len(list(csv.DictReader(open(out / "predictions.csv")))) == 1


def test_1536_well_rows_make_plate_outputs(tmp_path):
    """Rows past P (AA..AF) in well folders: located, tabled and drawn."""
    for well in ("A01", "AB48", "AF01"):
        (tmp_path / "plate" / well).mkdir(parents=True)
        shutil.copy(SAMPLE, tmp_path / "plate" / well / "f1.tif")
    from milcnn.io.locations import split_well, well_name

    assert split_well("AB48") == (27, 47) and well_name(27, 47) == "AB48"
    out = tmp_path / "out"
    plate_map = tmp_path / "map.csv"
    plate_map.write_text("well,compound,concentration\nAB48,x,1\n")
    result = run("predict", tmp_path / "plate", "--recursive", "--plate-map", plate_map, "--out", out)
    assert result.exit_code == 0, result.output
    wells = {r["well"] for r in csv.DictReader(open(out / "wells.csv"))}
    assert wells == {"A01", "AB48", "AF01"} and (out / "plate.png").is_file()


@pytest.mark.parametrize("text, says", [
    ("well,compound,concentration\nB03,,1\n", "line 2: no compound"),
    ("well,compound,concentration\nB03,x\n", "line 2: no concentration"),
    ("well,compound,concentration\nB03,x,1\nB03,y,1\n", "line 3: well B03 is given again with another treatment"),
    ("well,compound,concentration\nB03,x," + "1" * (1 << 20) + "\n", "line 2"),
])
def test_plate_map_errors_name_the_file_line_and_field(tmp_path, text, says):
    from milcnn.errors import PlateMapError
    from milcnn.outputs.plates import read_plate_map

    path = tmp_path / "map.csv"
    path.write_text(text)
    with pytest.raises(PlateMapError, match=says) as err:
        read_plate_map(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, says", [
    ("path,treatment\na.tif,x\na.tif,y\n", "line 3: a.tif is listed again with other values"),
    ("path,note\na.tif," + "n" * (1 << 20) + "\n", "line 2"),
])
def test_manifest_errors_name_the_line(tmp_path, text, says):
    from milcnn.batch.inputs import read_input_manifest

    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=says):
        read_input_manifest(path, ("gfp", "rfp"), [])


def test_an_identical_duplicate_manifest_row_is_read_once(tmp_path):
    from milcnn.batch.inputs import read_input_manifest

    path = tmp_path / "m.csv"
    path.write_text("path,treatment\na.tif,x\na.tif,x\n")
    inputs, extras, _, _ = read_input_manifest(path, ("gfp", "rfp"), [])
    assert len(inputs) == 1 and extras[inputs[0]] == ["x"]


def test_an_ome_zarr_field_over_the_pixel_budget_is_refused_before_reading(tmp_path, monkeypatch):
    """A plate whose field declares 2 x 30000 x 30000: refused from its metadata in under a second (nothing read)."""
    zarr = pytest.importorskip("zarr")
    import time

    from milcnn.errors import ImageReadError
    from milcnn.io.omezarr import ZarrField

    root = zarr.open_group(str(tmp_path / "big.zarr"), mode="w", zarr_format=2)
    image = root.create_group("A/1/0")
    image.create_array("0", shape=(2, 30000, 30000), chunks=(1, 512, 512), dtype="uint16")
    image.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "c", "type": "channel"},
                                                              {"name": "y", "type": "space"},
                                                              {"name": "x", "type": "space"}],
                                   "datasets": [{"path": "0"}]}]
    field = ZarrField(tmp_path / "big.zarr", "A/1/0", "big", "A01", "1", "0.4")
    t0 = time.perf_counter()
    with pytest.raises(ImageReadError, match="declares 1,800,000,000 values"):
        field.read(("gfp", "rfp"))
    assert time.perf_counter() - t0 < 1.0


def test_a_well_pattern_that_does_not_give_wells_stops_before_anything_is_written(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "plateX_rowQ_colZ.tif")
    result = run("predict", folder, "--well-pattern", "row(?P<row>[A-Z])_col(?P<col>[A-Z])", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "--well-pattern" in result.output and "not a well" in result.output
    assert not (tmp_path / "out").exists()


def test_an_absurd_min_size_is_refused_at_load(tmp_path):
    import json

    from milcnn import Classifier
    from milcnn.errors import ModelConfigError
    from milcnn.model.config import content_sha256

    folder = shutil.copytree(ROOT / "zoo" / "yeast-loc", tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["min_size"] = 20000
    config["checksum"] = f"sha256:{content_sha256(config)}"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match="min_size must be in 1..4096, got 20000"):
        Classifier.from_dir(folder)


def test_a_thin_image_is_tiled_not_padded_to_a_huge_one():
    import numpy as np

    from milcnn import Classifier

    clf = Classifier.from_hub("yeast-loc", device="cpu")
    item = clf.prepare_input(np.ones((2, 8, 70000), np.uint16))  # padded whole: 64 x 70000 > the tile threshold
    assert item.tiled


def test_a_full_disk_leaves_no_header_only_errors_csv(tmp_path, monkeypatch):
    """The first error row cannot be written (ENOSPC): errors.csv is not left holding only its header."""
    import errno

    from milcnn.errors import OutputFolderError
    from milcnn.outputs.results import ResultsFolder

    real = ResultsFolder._append

    def full(fh, *rows):
        if fh.name.endswith("errors.csv"):
            raise OutputFolderError(f"{fh.name}: cannot write ({os.strerror(errno.ENOSPC)})")
        return real(fh, *rows)

    monkeypatch.setattr(ResultsFolder, "_append", staticmethod(full))
    with ResultsFolder(tmp_path / "out", ["image", "label"]) as results:
        with pytest.raises(OutputFolderError, match="No space left"):
            results.add_error("a.tif", "cannot read")
    assert not (tmp_path / "out" / "errors.csv").exists()


def test_a_thin_image_overlay_is_scaled_to_the_overlay_budget():
    """1 x 4,000,000: the legend makes the picture over 200 rows tall, so it is scaled down along its length
    too (drawn whole, it took 1 GB)."""
    import io

    import numpy as np
    from PIL import Image

    from milcnn.outputs.overlay import OVERLAY_MAX_PIXELS, overlay_png

    mask = np.zeros((1, 4_000_000), np.uint8)
    mask[0, ::1000] = 1
    png = b"".join(overlay_png(np.ones((2, 1, 4_000_000), np.float32), mask, ("a", "b"), title="thin"))
    w, h = Image.open(io.BytesIO(png)).size
    assert w * h <= OVERLAY_MAX_PIXELS and w > 10_000


def test_a_model_file_over_the_onnx_size_limit_is_refused_before_hashing(tmp_path):
    """A (sparse) 3 GB model.onnx: refused from its size; hashing it would read 3 GB."""
    from milcnn import Classifier
    from milcnn.errors import ModelConfigError

    folder = shutil.copytree(ROOT / "zoo" / "yeast-loc", tmp_path / "model")
    with open(folder / "model.onnx", "r+b") as fh:
        fh.truncate(3 * 2**30)
    with pytest.raises(ModelConfigError, match="over the 2,147,483,647 a self-contained ONNX model can hold"):
        Classifier.from_dir(folder)
