import csv
import shutil

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from milcnn import Classifier
from milcnn.cli import main
from milcnn.model.registry import lookup

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
    assert list(rows[0])[:10] == ["image", "plate", "well", "field", "label", "qc", "scale_source", "n_cells",
                                  "max_probability", "p_ER"]
    assert list(rows[0])[-1] == "area_vacuole_membrane" and len(rows[0]) == 9 + 2 * 11
    assert 20 < int(rows[0]["n_cells"]) < 400  # the sample's cells, counted in rfp (yeast-loc's cells block)
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
    real = Classifier.from_hub("yeast-loc").info.trust["sets"]["real yeast-chong, test half"]["label_accuracy"]
    row = next(line for line in listing.output.splitlines() if line.startswith("yeast-loc "))
    assert f"{real:6.4f}" in row  # the real-image label accuracy, where one was measured
    info = run("info", "yeast-loc")
    assert info.exit_code == 0 and "gfp, rfp" in info.output and "SIMULATED" in info.output
    assert "accuracy" in info.output
    int8 = Classifier.from_hub("yeast-loc").info.variants["int8"].metrics["accuracy"]
    assert f"precision  int8 (--precision int8): accuracy {int8}" in info.output  # the variant and its figures
    moa = run("info", "mcf7-moa")
    treatments = Classifier.from_hub("mcf7-moa").info.metrics
    assert moa.exit_code == 0
    assert f"treatments accuracy {treatments['treatment_accuracy']} on {treatments['n_treatments']} treatments" in moa.output


def test_labels_below_the_threshold_are_unassigned_unless_argmax(tmp_path):
    """No class reaches --threshold: label 'unassigned' (max_probability says how close), or the arg-max
    with --argmax; the mask threshold is the same number."""
    shutil.copy(SAMPLE, tmp_path / "a.tif")
    result = run("predict", tmp_path / "a.tif", "--out", tmp_path / "out", "--threshold", "0.9999")
    assert result.exit_code == 0, result.output
    row = next(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    top = max(float(v) for k, v in row.items() if k.startswith("p_"))
    assert float(row["max_probability"]) == top < 0.9999 and row["label"] == "unassigned"
    result = run("predict", tmp_path / "a.tif", "--out", tmp_path / "argmax", "--threshold", "0.9999", "--argmax")
    row = next(csv.DictReader(open(tmp_path / "argmax" / "predictions.csv")))
    assert row["label"] == Classifier.from_hub("yeast-loc").predict(SAMPLE).label


def test_run_json_records_the_run_and_resume_refuses_other_settings(tmp_path):
    import json

    shutil.copy(SAMPLE, tmp_path / "a.tif")
    out = tmp_path / "out"
    assert run("predict", tmp_path / "a.tif", "--out", out).exit_code == 0
    record = json.loads((out / "run.json").read_text())
    clf = Classifier.from_hub("yeast-loc")
    assert record["model"]["name"] == "yeast-loc" and record["model"]["version"] == clf.info.version
    assert record["model"]["sha256"] == clf.info.file_sha256("model.onnx") and record["precision"] == "fp32"
    assert record["threshold"] == 0.5 and record["finished"] and record["counts"]["predicted"] == 1
    for args, says in ((["--threshold", "0.6"], "threshold 0.5, not 0.6"), (["--precision", "int8"],
                       "precision fp32, not int8"), (["--model", "yeast-loc-gfp"], "model yeast-loc")):
        result = run("predict", tmp_path / "a.tif", "--out", out, "--resume", *args)
        assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    assert run("predict", tmp_path / "a.tif", "--out", out, "--resume").exit_code == 0


def test_subfolders_are_walked_with_recursive_and_counted_without(tmp_path):
    plate = tmp_path / "plate"
    for well in ("A01", "A02"):
        (plate / well).mkdir(parents=True)
        shutil.copy(SAMPLE, plate / well / "f1.tif")
    shutil.copy(SAMPLE, plate / "top.tif")
    result = run("predict", plate, "--out", tmp_path / "flat")
    assert result.exit_code == 0 and "2 images in subfolders were skipped; pass --recursive" in result.output
    result = run("predict", plate, "--out", tmp_path / "all", "--recursive")
    assert result.exit_code == 0 and "skipped" not in result.output
    rows = list(csv.DictReader(open(tmp_path / "all" / "predictions.csv")))
    assert len(rows) == 3
    assert sorted(p.name for p in (tmp_path / "all" / "masks").iterdir()) == ["A01__f1.tif", "A02__f1.tif", "top.tif"]


@pytest.mark.slow
def test_progress_lines_in_a_log_and_repeated_messages_counted(tmp_path, monkeypatch):
    """Not on a terminal: a progress line every PROGRESS_SECONDS (0 here); a message repeated for many
    files is shown three times, then counted in the summary."""
    import subprocess
    import sys

    for i in range(5):
        (tmp_path / f"bad{i}.tif").write_bytes(b"")
    shutil.copy(SAMPLE, tmp_path / "good.tif")
    code = ("import sys; import milcnn.batch.report as b; b.PROGRESS_SECONDS = 0.0; from milcnn.cli import main; "
            "sys.argv = ['milzoo', 'predict', *sys.argv[1:]]; main()")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert sum("file is empty (0 bytes)" in line and "bad" in line for line in lines) == 3
    assert "milzoo: 5 files: file is empty (0 bytes)" in lines
    assert any(line.startswith("milzoo: yeast-loc: ") and " of 6 images, " in line and "left" in line
               for line in lines), proc.stderr


def test_masks_open_coloured_in_fiji_and_legends_scale_with_the_image(tmp_path):
    """Masks carry an ImageJ lookup table (class k's overlay colour at k + 1) and the class names; the
    overlay's legend is magnified on large images."""
    from milcnn.outputs.overlay import PALETTE

    sample = tifffile.imread(SAMPLE)
    tifffile.imwrite(tmp_path / "big.tif", np.tile(sample, (1, 4, 4)), photometric="minisblack")  # 2048 x 2048
    shutil.copy(SAMPLE, tmp_path / "small.tif")
    assert run("predict", tmp_path / "big.tif", tmp_path / "small.tif", "--out", tmp_path / "out").exit_code == 0
    with tifffile.TiffFile(tmp_path / "out" / "masks" / "small.tif") as tif:
        meta = tif.imagej_metadata
        lut = np.asarray(meta["LUTs"]).reshape(3, -1)
        mask = tif.asarray()
    classes = Classifier.from_hub("yeast-loc").classes
    assert meta["Info"].splitlines()[1:4] == ["0 = background", f"1 = {classes[0]}", f"2 = {classes[1]}"]
    assert (lut[:, 0] == 0).all() and all((lut[:, k + 1] == PALETTE[k]).all() for k in range(len(classes)))
    assert mask.dtype == np.uint8 and mask.max() <= len(classes)
    with Image.open(tmp_path / "out" / "overlays" / "small.png") as small, \
            Image.open(tmp_path / "out" / "overlays" / "big.png") as big:
        assert small.size[0] - 512 == 190 and big.size[0] - 2048 == 2 * 190


def test_imagexpress_channel_files_without_a_layout_get_a_hint_that_names_it(tmp_path):
    """Files named B03_s1_w1.tif, B03_s1_w2.tif given to a two-channel model without --layout: each fails (one
    channel), and milzoo says the fix, --layout imagexpress, once."""
    image = tifffile.imread(SAMPLE)
    for w in (1, 2):
        tifffile.imwrite(tmp_path / f"B03_s1_w{w}.tif", image[w - 1])
    result = CliRunner().invoke(main, ["predict", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.count("--layout imagexpress") >= 1 and "named like imagexpress channel files" in result.output


def test_a_finished_run_leaves_no_lock_file(tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["predict", str(SAMPLE), "--out", str(out)]).exit_code == 0
    assert (out / "predictions.csv").is_file() and not (out / ".milzoo.lock").exists()
