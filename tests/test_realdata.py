"""Real labelled cells: the scorer, image scale, and fine-tuning a zoo model on real fields."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from milcnn import Classifier
from training.checkpoint import read_checkpoint
from training.data.real import (REAL_SETS, RealDataMissingError, applicable_sets, load_fields,
                                mosaics, shuffled_mosaics)

ZOO = Path(__file__).resolve().parents[1] / "zoo"


# ------------------------------------------------------------------------------------ the real sets

@pytest.mark.needs_realdata
@pytest.mark.slow
def test_every_set_loads_with_its_readme_counts(real_labelled):
    counts = {"yeast-chong": (20, 1642), "bbbc021-cells": (20, 2910)}
    for name, (n_fields, n_cells) in counts.items():
        fields = load_fields(name, real_labelled)
        assert len(fields) == n_fields and sum(len(f.cells) for f in fields) == n_cells
        assert {f.group.name for f in fields} == {g.name for g in REAL_SETS[name].groups}
    yeast = load_fields("yeast-chong", real_labelled, channels=("gfp",), groups=("AAH1",))
    assert len(yeast) == 4 and yeast[0].cells.shape[1:] == (1, 64, 64)
    assert REAL_SETS["yeast-chong"].group("AAH1").accepted == ("cytosol", "nucleus")


def test_mosaics_use_each_cell_once_in_order():
    cells = np.arange(37 * 2 * 3 * 3, dtype=np.float32).reshape(37, 2, 3, 3)
    out = mosaics(cells, 2)
    assert len(out) == 9 and out[0].shape == (2, 6, 6)  # 36 cells used, the 37th left over
    for m, mosaic in enumerate(out):
        for i in range(2):
            for j in range(2):
                assert np.array_equal(mosaic[:, 3 * i:3 * i + 3, 3 * j:3 * j + 3], cells[4 * m + 2 * i + j])
    shuffled = shuffled_mosaics(cells, 2, 12, np.random.default_rng(0))
    assert len(shuffled) == 12 and all(s.shape == (2, 6, 6) for s in shuffled)


def test_models_are_matched_to_the_sets_they_can_read():
    assert [s.name for s in applicable_sets(("gfp", "rfp"), ("cytosol", "mitochondria", "nucleus"))] == ["yeast-chong"]
    assert [s.name for s in applicable_sets(("gfp",), ("cytosol", "mitochondria", "nucleus"))] == ["yeast-chong"]
    assert applicable_sets(("gfp", "rfp"), ("cytosol",)) == []  # cannot say mitochondria
    assert [s.name for s in applicable_sets(("dna", "tubulin", "actin"), ("DMSO", "Protein synthesis"))] == [
        "bbbc021-cells"]


@pytest.mark.slow
def test_missing_real_data_names_the_path(tmp_path):
    with pytest.raises(RealDataMissingError, match=str(tmp_path / "yeast-chong")):
        load_fields("yeast-chong", tmp_path)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.realdata", "--data", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and str(tmp_path / "nowhere") in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ the scorer

def test_score_units_counts_accuracy_and_balance():
    from benchmarks.realdata_scoring import score_units

    units = [("A", "x", ("x",)), ("A", "x", ("x",)), ("A", "y", ("x",)), ("A", "x", ("x",)),
             ("B", "y", ("y", "z")), ("B", "x", ("y", "z"))]
    s = score_units(units, ["A", "B"])
    assert (s["n"], s["correct"], s["accuracy"]) == (6, 4, round(4 / 6, 4))
    assert s["balanced_accuracy"] == round((0.75 + 0.5) / 2, 4)
    assert s["groups"]["A"]["called"] == {"x": 3, "y": 1}


@pytest.mark.needs_realdata
@pytest.mark.slow
@pytest.mark.parametrize("model,set_name", [("yeast-loc", "yeast-chong"), ("mcf7-moa", "bbbc021-cells")])
def test_scorer_on_two_fields_per_set(real_labelled, model, set_name):
    from benchmarks.realdata_scoring import score_model

    clf = Classifier.from_hub(model, device="cpu", precision="fp32")
    fields = load_fields(set_name, real_labelled, channels=clf.channels)
    groups = REAL_SETS[set_name].groups
    two = [next(f for f in fields if f.group == groups[0]), next(f for f in fields if f.group == groups[-1])]
    r = score_model(clf, two, k=4)
    assert r["cells"]["n"] == sum(len(f.cells) for f in two)
    assert r["mosaics"]["n"] == sum(len(f.cells) // 16 for f in two) == sum(f["n_mosaics"] for f in r["fields"])
    for unit in ("cells", "mosaics"):
        groups_seen = r[unit]["groups"]
        assert set(groups_seen) == {groups[0].name, groups[-1].name}
        assert sum(sum(g["called"].values()) for g in groups_seen.values()) == r[unit]["n"]
        assert r[unit]["correct"] == sum(g["correct"] for g in groups_seen.values())
    # the right answers are exactly the labels the set accepts for the group
    for f in r["fields"]:
        accepted = REAL_SETS[set_name].group(f["group"]).accepted
        assert f["mosaics_correct"] == sum(n for label, n in f["called"].items() if label in accepted)
    # one whole-field call per field, the one the field's record names
    assert r["whole_fields"]["n"] == 2
    assert r["whole_fields"]["correct"] == sum(f["whole_field"] in REAL_SETS[set_name].group(f["group"]).accepted
                                               for f in r["fields"])
    # each field is in one half, and the halves add up to the whole
    for unit in ("cells", "mosaics", "whole_fields"):
        assert sum(h[unit]["n"] for h in r["halves"].values()) == r[unit]["n"]
        assert sum(h[unit]["correct"] for h in r["halves"].values()) == r[unit]["correct"]


def test_field_mosaic_tiles_every_cell_in_order():
    from training.data.real import field_mosaic

    cells = np.arange(11 * 2 * 3 * 4).reshape(11, 2, 3, 4)  # 11 cells of 2 x 3 x 4: 3 rows of 3, 2 left out
    m = field_mosaic(cells)
    assert m.shape == (2, 9, 12) and m.flags.c_contiguous
    for i in range(9):
        r, q = divmod(i, 3)
        assert np.array_equal(m[:, 3 * r:3 * r + 3, 4 * q:4 * q + 4], cells[i])
    assert field_mosaic(cells[:1]).shape == (2, 3, 4)  # one cell: itself


@pytest.mark.needs_realdata
@pytest.mark.slow
def test_validation_halves_are_the_issue_s(real_labelled):
    """Settings of models trained without real labels are chosen on AAC1, AAP1, AAH1 and on the first
    4 DMSO and 6 protein-synthesis fields; everything else is the test half."""
    halves = {}
    for set_name in REAL_SETS:
        for f in load_fields(set_name, real_labelled):
            halves.setdefault((f.group.name, f.set.half(f)), []).append(f.index)
    assert {k: len(v) for k, v in halves.items()} == {
        ("AAC1", "validation"): 4, ("AAP1", "validation"): 4, ("AAH1", "validation"): 4,
        ("AAC3", "test"): 4, ("AAR2", "test"): 4,
        ("DMSO", "validation"): 4, ("DMSO", "test"): 4,
        ("Protein_synthesis", "validation"): 6, ("Protein_synthesis", "test"): 6}
    assert halves[("DMSO", "validation")] == [1, 2, 3, 4]


@pytest.mark.needs_realdata
@pytest.mark.slow
def test_benchmark_command_writes_json_and_markdown(real_labelled, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "yeast-chong").symlink_to(real_labelled / "yeast-chong")  # one set only: the other skipped
    proc = subprocess.run([sys.executable, "-m", "benchmarks.realdata", "--model", "yeast-loc-gfp", "mcf7-moa",
                           "--k", "8", "--data", str(tmp_path / "data"), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "realdata.json").read_text())
    assert results["scores"]["mcf7-moa"]["sets"] == {} and "no bbbc021-cells" in proc.stderr
    modes = results["scores"]["yeast-loc-gfp"]["sets"]["yeast-chong"]
    assert set(modes) == {"as is", "cell_diameter=42"}  # the set states its size, the model records its own
    assert modes["as is"]["mosaics"]["n"] == sum(len(f.cells) // 64 for f in load_fields("yeast-chong", real_labelled))
    md = (tmp_path / "realdata.md").read_text()
    assert "| `yeast-loc-gfp` |" in md and "AAC1" in md
    # a candidate scored on the validation half only, filed under the ablation table
    proc = subprocess.run([sys.executable, "-m", "benchmarks.realdata", "--model", "yeast-loc-gfp", "--k", "8",
                           "--half", "validation", "--record", "candidate A", "--data", str(tmp_path / "data"),
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "realdata.json").read_text())
    entry = results["zoo_ablation"]["candidate A"]
    scored = entry["sets"]["yeast-chong"]["as is"]
    assert entry["half"] == "validation" and set(scored["halves"]) == {"validation"}
    assert set(scored["cells"]["groups"]) == {"AAC1", "AAP1", "AAH1"}
    assert results["scores"]["yeast-loc-gfp"]["sets"]["yeast-chong"] == modes  # the released figures untouched
    assert "| candidate A | yeast-chong | validation |" in (tmp_path / "realdata.md").read_text()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.realdata", "--half", "test", "--update-zoo",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "--update-zoo" in proc.stderr


# ------------------------------------------------------------------------------------ scale

def _enlarged(image: np.ndarray, f: int) -> np.ndarray:
    return np.repeat(np.repeat(image, f, axis=-2), f, axis=-1)


def test_rescaled_input_gives_the_same_label_and_an_aligned_mask():
    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="fp32")
    image = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")
    base = clf.predict(image)
    big = _enlarged(image, 2)
    for kwargs in ({"pixel_size": clf.info.pixel_size / 2}, {"cell_diameter": clf.info.cell_diameter * 2}):
        pred = clf.predict(big, **kwargs)
        assert pred.zoom == pytest.approx(0.5)
        assert pred.label == base.label
        assert pred.mask.shape == big.shape[1:] and pred.class_maps.shape == (len(clf.classes), *big.shape[1:])
        fg_big, fg = pred.mask[::2, ::2] > 0, base.mask > 0
        assert (fg_big & fg).sum() / (fg_big | fg).sum() > 0.8  # the mask lies on the same cells
        assert pred.probabilities[base.label] == pytest.approx(base.probabilities[base.label], abs=0.1)
    # unscaled, the enlarged image reads as cells twice the model's size, and the notice says what to pass
    assert clf.zoom_for() == 1.0


def test_scale_notice_once_and_not_when_scale_given(caplog):
    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="fp32")
    big = _enlarged(tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif"), 3)  # beyond its 1.8x own spread
    clf.predict(big, cell_diameter=3 * clf.info.cell_diameter)
    assert "cells look" not in caplog.text
    clf.predict(big)
    clf.predict(big)
    assert caplog.text.count("cells look about") == 1 and "--cell-diameter" in caplog.text
    assert [r.name for r in caplog.records if "cells look" in r.getMessage()] == ["milcnn.predict.result"]
    caplog.clear()
    clf2 = Classifier.from_hub("yeast-loc", device="cpu", precision="fp32")
    clf2.predict(tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif"))
    assert "cells look" not in caplog.text  # the model's own scale: nothing to say


def test_scale_arguments_are_checked():
    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="fp32")
    image = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")
    with pytest.raises(ValueError, match="not both"):
        clf.predict(image, pixel_size=0.1, cell_diameter=30)
    with pytest.raises(ValueError, match="pixel_size must be a positive number, got -1"):
        clf.predict(image, pixel_size=-1)


def test_tiled_rescaled_matches_whole(monkeypatch):
    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="fp32")
    big = _enlarged(tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif"), 2)
    whole = clf.predict(big, cell_diameter=54)
    tiled = clf.predict(big, cell_diameter=54, tile_size=128)
    assert tiled.label == whole.label and np.abs(tiled.maps - whole.maps).max() < 1e-4
    assert tiled.mask.shape == whole.mask.shape == big.shape[1:]


@pytest.mark.slow
def test_cli_rescales_and_refuses_bad_scale(tmp_path):
    image = _enlarged(tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif"), 2)
    tifffile.imwrite(tmp_path / "big.tif", image)
    milzoo = [sys.executable, "-m", "milcnn.cli"]
    ok = subprocess.run([*milzoo, "predict", str(tmp_path / "big.tif"), "--out", str(tmp_path / "out"),
                         "--pixel-size", "0.085", "--no-overlays"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert tifffile.imread(tmp_path / "out" / "masks" / "big.tif").shape == image.shape[1:]
    bad = subprocess.run([*milzoo, "predict", str(tmp_path / "big.tif"), "--out", str(tmp_path / "out2"),
                          "--pixel-size", "0.1", "--cell-diameter", "30"], capture_output=True, text=True)
    assert bad.returncode == 2 and "not both" in bad.stderr
    info = subprocess.run([*milzoo, "info", "yeast-loc"], capture_output=True, text=True)
    cell_diameter = Classifier.from_hub("yeast-loc").info.cell_diameter
    assert "0.17 um per pixel" in info.stdout and f"{cell_diameter:g} px" in info.stdout


@pytest.mark.slow
def test_scale_round_trips_through_training_and_export(tiny_yeast, tmp_path):
    from milcnn.model.config import ModelInfo
    from training.export import export_folder
    from training.checkpoint import load_checkpoint
    from training.train import TrainConfig, train

    cfg = TrainConfig(data=str(tiny_yeast), val=str(tiny_yeast), out=str(tmp_path / "run"), channels="gfp,rfp",
                      epochs=1, steps_per_epoch=2, batch_size=4, crop=64, width=4, threads=2,
                      pixel_size=0.2, cell_diameter=23.0)
    best = train(cfg, progress=False)
    model, _ = load_checkpoint(best)
    assert (model.config.pixel_size, model.config.cell_diameter) == (0.2, 23.0)
    out = export_folder(best, tmp_path / "model", name="tiny", version="0.0.1", eval_data=str(tiny_yeast))
    info = ModelInfo.from_file(out / "config.json")
    assert (info.pixel_size, info.cell_diameter) == (0.2, 23.0) and info.measured_cell_diameter > 0
    from milcnn.process.scale import SCALE_TOLERANCE

    assert info.measured_tolerance >= SCALE_TOLERANCE
    assert "0.2 um per pixel" in (out / "README.md").read_text()
    assert Classifier.from_dir(out).zoom_for(pixel_size=0.1) == pytest.approx(0.5)
    out2 = export_folder(best, tmp_path / "model2", name="tiny", version="0.0.1", pixel_size=0.3)
    assert ModelInfo.from_file(out2 / "config.json").pixel_size == 0.3


@pytest.mark.slow
def test_input_cell_diameter_is_the_default_zoom_and_round_trips(tiny_yeast, tmp_path):
    """A model that records the cell size of the screen it is for resizes unscaled images by default (as if
    that cell_diameter were passed; an explicit scale wins); its sample input is drawn at that scale and
    passes the self-test; the card says where the value comes from; --update-scale keeps it and will not
    change it under a sample drawn at the old scale."""
    from milcnn.model.config import ModelInfo
    from training.export import export_folder
    from training.export import main as export_main
    from training.train import TrainConfig, train

    best = train(TrainConfig(data=str(tiny_yeast), val=str(tiny_yeast), out=str(tmp_path / "run"), channels="gfp,rfp",
                             epochs=1, steps_per_epoch=2, batch_size=4, crop=64, width=4, threads=2,
                             cell_diameter=20.0), progress=False)
    out = export_folder(best, tmp_path / "model", name="tiny", version="0.0.1", eval_data=str(tiny_yeast),
                        input_cell_diameter=40.0, input_cell_diameter_from="the screen's nuclei")
    info = ModelInfo.from_file(out / "config.json")
    assert info.input_cell_diameter == 40 and info.scale_dict()["input_cell_diameter_px"] == 40
    assert tifffile.imread(out / "sample_input.tif").shape[1:] == (256, 256)  # 128 px drawn at 2x
    clf = Classifier.from_dir(out, device="cpu", precision="fp32")
    clf.self_test()
    assert clf.zoom_for() == pytest.approx(0.5) and clf.zoom_for(cell_diameter=20) == 1.0
    big = tifffile.imread(out / "sample_input.tif")
    default, told = clf.predict(big), clf.predict(big, cell_diameter=40)
    assert default.zoom == told.zoom == 0.5 and np.array_equal(default.mask, told.mask)
    assert default.mask.shape == big.shape[1:]
    card = (out / "README.md").read_text()
    assert "about 40 px across (from the screen's nuclei)" in card and "resized by 0.50" in card
    assert export_main(["--update-scale", str(out), "--eval-data", str(tiny_yeast)]) == 0  # kept, with its note
    assert json.loads((out / "config.json").read_text())["scale"]["input_cell_diameter_from"] == "the screen's nuclei"
    assert export_main(["--update-scale", str(out), "--input-cell-diameter", "60"]) == 1  # the sample would be wrong
    from training.export import scale_block

    with pytest.raises(ValueError, match="give that too"):  # a note needs a value
        scale_block(0.2, 20.0, None, info.channels, info.classes, info.normalization, input_cell_diameter_from="x")


# ------------------------------------------------------------------------------------ fine-tuning

@pytest.mark.parametrize("name", ["yeast-loc", "yeast-loc-gfp", "mcf7-moa"])
def test_zoo_models_rebuild_from_onnx(name):
    import onnxruntime as ort

    from training.finetune import model_from_onnx

    model = model_from_onnx(ZOO / name)
    x = np.random.default_rng(1).random((1, len(model.config.channels), 80, 72), dtype=np.float32)
    session = ort.InferenceSession(str(ZOO / name / "model.onnx"), providers=["CPUExecutionProvider"])
    probs, maps = session.run(None, {"image": x})
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    assert np.abs(out.probabilities.numpy() - probs).max() < 1e-4
    assert np.abs(out.class_maps.numpy() - maps).max() < 1e-4


@pytest.mark.needs_realdata
@pytest.mark.slow
def test_finetune_on_two_real_fields_lowers_the_loss_and_exports(real_labelled, tmp_path):
    from benchmarks.realdata_curve import write_manifest
    from training.data.dataset import ImageSet
    from training.data.manifest import read_manifest
    from training.export import export_folder
    from training.finetune import FinetuneConfig, finetune, load_source
    from training.checkpoint import load_checkpoint
    from training.train import evaluate_loss_accuracy

    fields = [f for f in load_fields("yeast-chong", real_labelled) if f.name in ("AAC1_1", "AAP1_1")]
    rows = [(m, f.group.label) for f in fields for m in mosaics(f.cells, 4)]
    manifest = write_manifest(rows, tmp_path / "train")
    cfg = FinetuneConfig(source="yeast-loc", data=str(manifest), out=str(tmp_path / "run"), cell_diameter=42,
                         steps=12, steps_per_epoch=6, batch_size=8, lr=1e-3, rehearsal=0, threads=2)
    before, _ = load_source("yeast-loc")
    samples, _, _ = read_manifest(manifest, channels=before.config.channels, classes=before.config.classes)
    images = ImageSet(samples, before.config.channels, before.config.classes, before.config.normalization,
                      zoom=before.config.cell_diameter / 42)
    loss_before, _ = evaluate_loss_accuracy(before, images, torch.device("cpu"))
    best = finetune(cfg)
    after, ckpt = load_checkpoint(best)
    loss_after, _ = evaluate_loss_accuracy(after, images, torch.device("cpu"))
    assert loss_after < loss_before
    assert [h["epoch"] for h in ckpt["history"]] == [1, 2]
    assert after.config.cell_diameter == before.config.cell_diameter  # the model keeps its scale; images resized to it
    out = export_folder(best, tmp_path / "model", name="my-screen", version="0.1.0")
    clf = Classifier.from_dir(out)
    assert str(manifest) in clf.info.training_data["real_images"]  # the card says which real images it saw
    card = (out / "README.md").read_text()  # and what fine-tuning it had, not the source's epochs as its own
    assert "Fine-tuned from `yeast-loc` for 12 steps (8 crops of 128 px)" in card
    assert "best validation accuracy" not in card
    pred = clf.predict(rows[0][0], cell_diameter=42)
    assert pred.label in clf.classes and pred.mask.shape == rows[0][0].shape[1:]


@pytest.mark.slow
def test_finetune_resumes_and_refuses_unknown_labels(tmp_path, tiny_yeast):
    from training.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(source="yeast-loc", data=str(tiny_yeast), out=str(tmp_path / "run"), steps=4,
                         steps_per_epoch=2, batch_size=2, crop=64, rehearsal=0, threads=2)
    finetune(cfg, stop_after=1)
    resumed = finetune(cfg, resume=str(tmp_path / "run" / "last.pt"))
    history = read_checkpoint(resumed)["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\n" + Path(tiny_yeast).read_text().splitlines()[1].split(",")[0] + ",golgi\n")
    (tmp_path / "images").symlink_to(Path(tiny_yeast).parent / "images")
    proc = subprocess.run([sys.executable, "-m", "training.finetune", "--from", "yeast-loc", "--data", str(bad),
                           "--out", str(tmp_path / "run2")], capture_output=True, text=True)
    assert proc.returncode == 2 and "golgi" in proc.stderr


def test_distillation_holds_only_rehearsal_crops_to_the_starting_model():
    from training.finetune import _distillation_loss, load_source

    teacher, _ = load_source("yeast-loc")
    teacher.eval()
    x = torch.from_numpy(np.random.default_rng(2).random((3, 2, 64, 64), dtype=np.float32))
    rehearsed = torch.tensor([False, True, True])
    loss = _distillation_loss(teacher, x, rehearsed, 2.0)
    with torch.no_grad():
        same = teacher(x)
        moved = teacher(x)
    moved.class_maps[0] = 0.5  # a user crop: not held
    assert abs(loss(moved).item() - loss(same).item()) < 1e-6
    moved.class_maps[1] = 0.5  # a rehearsal crop moved away from what the starting model said: costs more
    assert loss(moved).item() > loss(same).item() + 1e-3
    assert _distillation_loss(teacher, x, torch.zeros(3, dtype=torch.bool), 2.0) is None
    assert _distillation_loss(None, x, rehearsed, 2.0) is None


@pytest.mark.slow
def test_finetune_with_distillation_runs_and_checks_its_weight(tmp_path, tiny_yeast):
    from training.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(source="yeast-loc", data=str(tiny_yeast), out=str(tmp_path / "run"), steps=2,
                         steps_per_epoch=2, batch_size=4, crop=64, rehearsal_data=str(tiny_yeast),
                         distillation=1.0, threads=2)
    history = read_checkpoint(finetune(cfg))["history"]
    assert np.isfinite(history[0]["train_loss"])
    with pytest.raises(ValueError, match="distillation must be in"):
        finetune(FinetuneConfig(source="yeast-loc", data=str(tiny_yeast), out=str(tmp_path / "bad"),
                                distillation=1.5))


def test_photometric_augmentation_is_seeded_and_range_checked():
    from training.data.dataset import Photometric

    x = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    a = Photometric()(x, np.random.default_rng(3))
    b = Photometric()(x, np.random.default_rng(3))
    assert a.shape == x.shape and a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, x)
    assert np.array_equal(Photometric(gain=0, field=0, gamma=0, noise=0, blur=0)(x, np.random.default_rng(1)), x)
    for bad in ({"noise": -0.1}, {"blur": 6.0}, {"field": 1.5}):
        with pytest.raises(ValueError, match="out of range"):
            Photometric(**bad)


def test_scale_jitter_zooms_crops_within_its_range():
    """A crop of a disk image under scale jitter keeps the crop size and shows the disk at a zoom
    within [1/(1+j), 1+j]; without jitter the crop is an exact window."""
    from types import SimpleNamespace

    from training.data.dataset import CropDataset

    yy, xx = np.mgrid[0:256, 0:256]
    stripes = ((xx // 8) % 2).astype(np.float16)[None]  # period 16 px
    images = SimpleNamespace(images=[stripes], targets=np.ones((1, 1), np.float32))
    plain = CropDataset(images, 64, seed=0)
    assert set(np.unique(plain[0][0].numpy())) <= {0.0, 1.0}
    jittered = CropDataset(images, 64, seed=0, scale_jitter=0.5)
    periods = []
    for epoch in range(12):
        jittered.reseed(epoch)
        x = jittered[0][0].numpy()[0]
        assert x.shape == (64, 64)
        profile = x.mean(axis=0) if x.std(axis=0).mean() < x.std(axis=1).mean() else x.mean(axis=1)
        crossings = np.flatnonzero(np.diff(np.sign(profile - profile.mean())))
        periods.append(2 * np.median(np.diff(crossings)))
    assert min(periods) >= 16 / 1.5 - 1.5 and max(periods) <= 16 * 1.5 + 1.5 and max(periods) > 1.15 * min(periods)
    with pytest.raises(ValueError, match="scale_jitter"):
        CropDataset(images, 64, seed=0, scale_jitter=2.0)


def test_cell_mosaic_tiles_come_from_the_images_objects():
    """Every tile of a cell mosaic is centred on one of the image's objects: an image of bright disks with
    distinct values gives mosaics whose tiles each hold exactly one disk's value, at the tile centre."""
    from types import SimpleNamespace

    from training.data.dataset import CellMosaic, CropDataset, object_centres

    img = np.zeros((1, 200, 200), np.float16)
    yy, xx = np.mgrid[0:200, 0:200]
    centres = [(40, 50), (100, 150), (160, 60), (60, 160)]
    for i, (cy, cx) in enumerate(centres):
        img[0][(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 0.7 + 0.1 * i
    assert sorted(map(tuple, object_centres(img[0]))) == sorted(centres)
    images = SimpleNamespace(images=[img], targets=np.ones((1, 1), np.float32))
    ds = CropDataset(images, 64, seed=0, mosaic=CellMosaic(p=1.0, tile=(1.0, 1.0), cell_diameter=32))
    for epoch in range(4):
        ds.reseed(epoch)
        x = ds[0][0].numpy()[0]
        assert x.shape == (64, 64)
        for ty in range(2):
            for tx in range(2):
                tile = x[32 * ty:32 * ty + 32, 32 * tx:32 * tx + 32]
                values = set(np.unique(tile)) - {0.0}
                assert len(values) == 1 and tile[15:17, 15:17].min() > 0
    assert CropDataset(images, 64, seed=0, mosaic=CellMosaic(p=0.0)).centres is None
    for bad in ({"p": 1.5}, {"tile": (0.9, 0.5)}, {"cell_diameter": 0}):
        with pytest.raises(ValueError, match="cell mosaic"):
            CellMosaic(**bad)


@pytest.mark.needs_realdata
@pytest.mark.slow
def test_learning_curve_command_scores_only_unseen_fields(real_labelled, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.realdata", "--learning-curve", "--quick",
                           "--only", "yeast-B-1", "--only", "mcf7-validation-half", "--out", str(tmp_path),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {r["name"]: r for r in json.loads((tmp_path / "realdata.json").read_text())["learning_curve"]["runs"]}
    assert set(runs) == {"yeast-B-1", "mcf7-validation-half"}
    yeast = runs["yeast-B-1"]
    assert yeast["train_fields"] == ["AAC3_1.tif", "AAP1_1.tif", "AAR2_1.tif"]
    assert sorted(yeast["scored_fields"]) == sorted(f"{g}_{i}.tif" for g in ("AAC1", "AAH1") for i in range(1, 5))
    mcf7 = runs["mcf7-validation-half"]
    assert len(mcf7["train_fields"]) == 2 + 3 and len(mcf7["scored_fields"]) == 2 + 3
    assert not set(mcf7["train_fields"]) & set(mcf7["scored_fields"])
    for r in runs.values():
        assert r["mosaics"]["n"] > 0 and "accuracy" in r["simulated_test"]
    assert "yeast-B-1" not in (tmp_path / "realdata.md").read_text()  # rendered by fold and size
    version = Classifier.from_hub("yeast-loc").info.version
    assert f"| yeast (yeast-loc {version}) | B | 1 |" in (tmp_path / "realdata.md").read_text()


@pytest.mark.needs_realdata
@pytest.mark.slow
def test_real_yeast_scale_notice(real_labelled, caplog):
    """yeast-loc 2.0 was trained across cell sizes (its own images read within 1.8x), so the real yeast, about
    42 px across, is inside and gets no notice; the same cells enlarged 2x do, with a suggestion near 84 px."""
    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="fp32")
    field = load_fields("yeast-chong", real_labelled, groups=("AAP1",))[0]
    clf.predict(mosaics(field.cells, 4)[0])
    assert "cells look" not in caplog.text
    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="fp32")
    clf.predict(_enlarged(mosaics(field.cells, 4)[0], 2))
    err = caplog.text
    assert "cells look about" in err
    suggested = float(err.split("--cell-diameter ")[1].split(")")[0])
    assert 2 * 34 <= suggested <= 2 * 50  # the source says 35-50 px


def test_sim_vs_real_measures_a_known_cell():
    """A disk of known diameter blurred by a known sigma, on a flat background, measures back."""
    from scipy import ndimage

    from benchmarks.sim_vs_real import measure_crop

    yy, xx = np.mgrid[0:64, 0:64]
    disk = (np.hypot(yy - 32, xx - 32) < 15).astype(np.float32)
    crop = np.stack([ndimage.gaussian_filter(disk, 2.0) * 100 + 10] * 2)
    m = measure_crop(crop, 1)
    assert abs(m["diameter"] - 30) < 2 and abs(m["blur"] - 2.0) < 0.5
    assert m["peakiness"][0] < 1.3 and m["background"][0] < 0.05
    spots = crop.copy()
    spots[0, 28:31, 28:31] += 400  # a bright dot in one channel only
    assert measure_crop(spots, 1)["peakiness"][0] > 2 * m["peakiness"][0]
    assert measure_crop(np.zeros((2, 64, 64), np.float32) + 5, 1) is None


def test_rounded_share_counts_cells_bright_in_both_channels():
    from benchmarks.sim_vs_real import rounded_share

    rng = np.random.default_rng(0)
    crops = rng.uniform(0, 5, (10, 3, 68, 68)).astype(np.float32)
    crops[:, :2, 24:44, 24:44] += 100  # every cell's centre
    crops[:2, :2, 24:44, 24:44] += 200  # two rounded cells: 3x in DNA and tubulin
    crops[2, 0, 24:44, 24:44] += 200  # bright DNA only: not rounded
    crops[3, 2] += 500  # bright actin only: not counted either
    assert rounded_share(crops) == 0.2
    assert rounded_share(crops, factor=4.0) == 0.0


def test_rehearsal_set_is_resimulated_when_the_simulator_changed(tmp_path):
    """A cached rehearsal set is reused only if the same simulator code and settings made it (a set made by an
    older simulator once made fine-tuned models forget the classes they were meant to keep)."""
    import json

    from training.data.mcf7 import MCF7Params
    from training.finetune import rehearsal_set
    from training.simulate import simulator_fingerprint

    assert simulator_fingerprint("mcf7", MCF7Params()) == simulator_fingerprint("mcf7", MCF7Params())
    assert simulator_fingerprint("mcf7", MCF7Params()) != simulator_fingerprint("mcf7", MCF7Params(blur=(1.0, 1.0)))
    manifest = rehearsal_set("yeast", 2, seed=5, channels=("gfp", "rfp"), folder=tmp_path / "r")
    first = manifest.stat().st_mtime_ns
    assert rehearsal_set("yeast", 2, seed=5, channels=("gfp", "rfp"), folder=tmp_path / "r").stat().st_mtime_ns == first
    stamp = tmp_path / "r" / "settings.json"
    stale = {**json.loads(stamp.read_text()), "simulator": "0" * 16}
    stamp.write_text(json.dumps(stale))
    assert rehearsal_set("yeast", 2, seed=5, channels=("gfp", "rfp"), folder=tmp_path / "r").stat().st_mtime_ns > first
    assert json.loads(stamp.read_text())["simulator"] != "0" * 16


def test_ensemble_scores_the_mean_of_its_members():
    from benchmarks.realdata_ensemble import combinations, score

    classes = ("a", "b")
    units = [("A", ("a",)), ("B", ("b",))]
    probs = np.zeros((2, 4, 2, 2))  # models, flips, mosaics, classes
    probs[0, :, 0] = (0.9, 0.1)  # model 1: right on both mosaics
    probs[0, :, 1] = (0.4, 0.6)
    probs[1, :, 0] = (0.2, 0.8)  # model 2: wrong on both, and surer on the first
    probs[1, :, 1] = (0.9, 0.1)
    probs[1, 1:, 1] = (0.1, 0.9)  # ... unless its mosaic is flipped
    one = score(probs, units, classes, (0,), (0,), ["A", "B"])
    assert (one["correct"], one["n"]) == (2, 2)
    both = score(probs, units, classes, (0, 1), (0,), ["A", "B"])  # means (0.55, 0.45) and (0.65, 0.35)
    assert both["correct"] == 1 and both["groups"]["B"]["called"] == {"a": 1}
    flipped = score(probs, units, classes, (0, 1), (0, 1, 2, 3), ["A", "B"])
    assert flipped["correct"] == 2
    assert [m for _, m in combinations(3)] == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


def test_a_normalisation_probe_is_never_filed_as_the_released_model(capsys):
    from benchmarks.realdata import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", "mcf7-moa", "--norm-high", "99"])
    assert exc.value.code == 2 and "--record" in capsys.readouterr().err


def test_sim_vs_real_takes_simulator_settings(capsys):
    from benchmarks.sim_vs_real import main, simulated_crops

    plain = simulated_crops("mcf7", ["DMSO"], n_images=1, zoom=1.0, size=48)["DMSO"]
    changed = simulated_crops("mcf7", ["DMSO"], n_images=1, zoom=1.0, size=48,
                              settings={"expression": (1.0, 1.0)})["DMSO"]
    assert plain and changed and not np.array_equal(np.stack(plain[:1]), np.stack(changed[:1]))
    for bad, message in (("bogus=1", "bogus"), ("expression=3,4", "expression must be a range"),
                         ("expression", "SETTING=VALUE")):
        with pytest.raises(SystemExit):
            main(["--kind", "mcf7", "--sim", bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--sim", "expression=0.2,0.5"])  # both kinds: which simulator is meant?


def test_finetune_names_an_unknown_source_in_one_line(tmp_path, capsys):
    from training.finetune import main

    assert main(["--from", str(tmp_path / "nothing"), "--data", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model") and "nothing" in err and len(err.splitlines()) == 1
