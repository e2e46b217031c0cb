import csv
import shutil

import numpy as np
import tifffile
from click.testing import CliRunner
from PIL import Image

from milcnn import Classifier
from milcnn.cli import main
from milcnn.registry import lookup

SAMPLE = lookup("yeast-loc").bundled_dir / "sample_input.tif"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_predict_folder_writes_csv_masks_and_overlays(tmp_path):
    images = tmp_path / "plate"
    images.mkdir()
    shutil.copy(SAMPLE, images / "a.tif")
    tifffile.imwrite(images / "b.tif", np.moveaxis(tifffile.imread(SAMPLE), 0, -1)[:200, :300])  # H x W x C
    result = run("predict", images, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["a.tif", "b.tif"]
    assert list(rows[0])[:3] == ["image", "label", "p_ER"] and len(rows[0]) == 13
    mask = tifffile.imread(tmp_path / "out" / "masks" / "b.tif")
    assert mask.shape == (200, 300) and mask.dtype == np.uint8
    overlay = Image.open(tmp_path / "out" / "overlays" / "a.png")
    assert overlay.size[1] >= 512 and overlay.mode == "RGB"
    assert not (tmp_path / "out" / "errors.csv").exists()


def test_bad_files_are_reported_and_the_rest_predicted(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "good.tif")
    (tmp_path / "bad.tif").write_text("not a tiff")
    result = run("predict", tmp_path / "good.tif", tmp_path / "bad.tif", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "bad.tif: not a readable TIFF" in result.output and "Traceback" not in result.output
    errors = list(csv.DictReader(open(tmp_path / "out" / "errors.csv")))
    assert len(errors) == 1 and errors[0]["image"].endswith("bad.tif")
    assert len(list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))) == 1


def test_usage_errors_exit_2(tmp_path):
    result = run("predict", SAMPLE, "--model", "no-such-model", "--out", tmp_path)
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.output
    assert run("predict", tmp_path / "nothing-*.tif", "--out", tmp_path).exit_code == 2


def test_gfp_model_and_models_and_info():
    listing = run("models")
    assert listing.exit_code == 0 and "yeast-loc " in listing.output and "yeast-loc-gfp" in listing.output
    info = run("info", "yeast-loc")
    assert info.exit_code == 0 and "gfp, rfp" in info.output and "SIMULATED" in info.output
    assert "accuracy" in info.output
    int8 = Classifier.from_hub("yeast-loc").info.raw["variants"]["int8"]["metrics"]["accuracy"]
    assert f"precision  int8 (--precision int8): accuracy {int8}" in info.output  # the variant and its figures
    moa = run("info", "mcf7-moa")
    treatments = Classifier.from_hub("mcf7-moa").info.metrics
    assert moa.exit_code == 0
    assert f"treatments accuracy {treatments['treatment_accuracy']} on {treatments['n_treatments']} treatments" in moa.output
