"""milzoo adapt: a zoo model's head fitted to a few labelled images with numpy, written as a model folder."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from milcnn.cli import main
from milcnn.predict.adapt import adapt, read_examples

ROOT = Path(__file__).resolve().parents[1]
YEAST = ROOT / "zoo" / "yeast-loc"


@pytest.fixture
def examples(tmp_path):
    """Four crops of the yeast sample (the model calls them ER), two labelled vacuole and two ER."""
    sample = tifffile.imread(YEAST / "sample_input.tif")
    rows = ["path,label"]
    for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        tifffile.imwrite(tmp_path / f"crop{i}.tif", sample[:, y:y + 256, x:x + 256], photometric="minisblack")
        rows.append(f"crop{i}.tif,{'vacuole' if i < 2 else 'ER'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "labels.csv"


def test_the_head_follows_the_examples_and_only_the_fitted_classes_change(examples, tmp_path):
    from milcnn import Classifier
    from milcnn.predict.adapt import _head

    out = adapt("yeast-loc", examples, tmp_path / "adapted")
    clf = Classifier.from_dir(out)
    tops = [clf.predict(tifffile.imread(tmp_path / f"crop{i}.tif")).top for i in range(4)]
    assert tops == ["vacuole", "vacuole", "ER", "ER"]
    assert [Classifier.from_dir(YEAST).predict(tifffile.imread(tmp_path / f"crop{i}.tif")).top
            for i in range(4)] == ["ER"] * 4
    w0, b0 = _head(YEAST, clf.info.head)
    w, b = _head(out, clf.info.head)
    fitted = [clf.info.classes.index(c) for c in ("ER", "vacuole")]
    others = [k for k in range(len(clf.info.classes)) if k not in fitted]
    assert np.array_equal(w[others], w0[others]) and np.array_equal(b[others], b0[others])
    assert not np.allclose(w[fitted], w0[fitted])
    old, new = (YEAST / "model.onnx").read_bytes(), (out / "model.onnx").read_bytes()
    changed = np.flatnonzero(np.frombuffer(old, np.uint8) != np.frombuffer(new, np.uint8))
    head = clf.info.head
    assert len(old) == len(new) and changed.min() >= min(head.weight_offset, head.bias_offset)
    assert changed.max() < max(head.weight_offset + w.size * 4, head.bias_offset + b.size * 4)
    assert clf.info.training["adapted_from"] == {"name": "yeast-loc", "version": clf.info.training["adapted_from"]
                                                 ["version"]} and "adapted by milzoo adapt" in clf.info.summary
    assert "crop0.tif" in (out / "README.md").read_text() and clf.info.variants == {}


@pytest.mark.parametrize("text, says", [
    ("path,label\ncrop0.tif,golgi\n", "line 2: label 'golgi' is not among the model's classes"),
    ("path,label\nnothere.tif,ER\ncrop0.tif,vacuole\n", "line 2: 'nothere.tif' is not a file"),
    ("path,label\ncrop0.tif,ER\ncrop1.tif,ER\n", "examples of one class only (ER)"),
    ("file,class\ncrop0.tif,ER\n", "needs columns path,label"),
])
def test_bad_examples_are_one_line_naming_the_row_and_nothing_is_written(examples, tmp_path, text, says):
    bad = examples.parent / "bad.csv"
    bad.write_text(text)
    result = CliRunner().invoke(main, ["adapt", "--model", "yeast-loc", "--examples", str(bad), "--out",
                                       str(tmp_path / "adapted")])
    assert result.exit_code == 2 and says in result.output, result.output
    assert not (tmp_path / "adapted").exists()


def test_milzoo_adapt_then_predict_with_the_folder(examples, tmp_path):
    out = tmp_path / "adapted"
    result = CliRunner().invoke(main, ["adapt", "--model", "yeast-loc", "--examples", str(examples), "--out", str(out),
                                       "--name", "my-screen"])
    assert result.exit_code == 0 and f"milzoo predict IMAGES --model {out}" in result.output, result.output
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "crop0.tif"), "--model", str(out), "--out",
                                       str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "my-screen" in (tmp_path / "results" / "run.json").read_text()
    assert read_examples(examples, ("ER", "vacuole"))[0].labels == ("vacuole",)


def test_a_folder_that_is_not_empty_is_refused(examples, tmp_path):
    (tmp_path / "adapted").mkdir()
    (tmp_path / "adapted" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        adapt("yeast-loc", examples, tmp_path / "adapted")
    assert (tmp_path / "adapted" / "mine.txt").read_text() == "keep"


@pytest.mark.slow
@pytest.mark.needs_realdata
def test_real_yeast_one_mosaic_per_training_protein_keeps_the_held_out_proteins(real_labelled, tmp_path):
    """The issue's target: one 4 x 4 mosaic each of AAC1, AAP1, AAH1 as examples; the held-out proteins' mosaics
    (AAC3, AAR2: the test half) >= 95 % right (``python -m benchmarks.adapt``)."""
    from benchmarks.adapt import real_yeast

    r = real_yeast(real_labelled, tmp_path)
    assert r["right"]["adapted"] >= 0.95 * r["held_out"], r
