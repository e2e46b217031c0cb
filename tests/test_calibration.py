"""Calls a user can trust: calibrated probabilities, one decision rule, qc, and the scale read from the image."""

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from milcnn import Classifier
from milcnn.process.calibration import Calibration
from milcnn.cli import main
from milcnn.model.config import CONFIG_FORMAT, ModelInfo
from milcnn.process.decision import UNASSIGNED, decide
from milcnn.errors import ModelConfigError
from milcnn.io.images import open_image, write_tiff
from milcnn.process.quality import QC_OK, Features, QualityLimits, assess

ZOO = Path(__file__).resolve().parents[1] / "zoo"
SAMPLE = ZOO / "yeast-loc" / "sample_input.tif"


def _copy_model(tmp_path, name="yeast-loc") -> Path:
    folder = tmp_path / name
    shutil.copytree(ZOO / name, folder)
    return folder


def _edit_config(folder: Path, change) -> None:
    """``change`` the folder's config.json, its checksum made again (what is tested is the check of the
    content: an edit without it is refused first, tests/test_sdk.py)."""
    from milcnn.model.config import content_sha256

    config = json.loads((folder / "config.json").read_text())
    change(config)
    config["checksum"] = f"sha256:{content_sha256(config)}"
    (folder / "config.json").write_text(json.dumps(config))


# ---------------------------------------------------------------------------------------- calibration

def test_calibrated_probabilities_sum_to_one_and_temperature_keeps_the_ranking():
    raw = np.array([[0.3, 0.45, 0.05], [0.9, 0.99, 0.2]])
    for method, weight in (("temperature", (0.5,) * 3), ("vector_scaling", (0.5, 2.0, 1.0))):
        p = Calibration(method, weight, (0.0, 0.1, -0.1)).apply(raw)
        np.testing.assert_allclose(p.sum(axis=1), 1.0)
    p = Calibration("temperature", (0.5,) * 3, (0.0,) * 3).apply(raw)
    assert (p.argmax(axis=1) == raw.argmax(axis=1)).all()
    platt = Calibration("platt", (2.0, 2.0, 2.0), (0.0, 0.0, 0.0)).apply(np.array([0.5, 0.9, 0.1]))
    np.testing.assert_allclose(platt, [0.5, 0.9 ** 2 / (0.9 ** 2 + 0.1 ** 2), 0.1 ** 2 / (0.1 ** 2 + 0.9 ** 2)])


def test_the_zoo_models_are_calibrated_and_give_their_sample_with_confidence():
    for name in ("yeast-loc", "yeast-loc-gfp", "mcf7-moa"):
        clf = Classifier.from_hub(name)
        assert clf.info.calibration is not None and clf.info.qc is not None
        pred = clf.predict(ZOO / name / "sample_input.tif")
        expected = json.loads((ZOO / name / "sample_output.json").read_text())
        assert pred.label == expected["true_label"] and pred.qc == QC_OK
        assert sum(pred.probabilities.values()) == pytest.approx(1.0)
        assert pred.probabilities[pred.label] > 0.9 > max(pred.raw_probabilities.values())


def test_a_folder_without_calibration_loads_with_one_notice_and_raw_probabilities(tmp_path, caplog):
    folder = _copy_model(tmp_path)
    _edit_config(folder, lambda c: (c.pop("calibration"), c.pop("qc"), c.update(format_version=2)))
    with caplog.at_level(logging.WARNING, logger="milcnn"):
        clf = Classifier.from_dir(folder)
    notices = [r.getMessage() for r in caplog.records if "no calibration" in r.getMessage()]
    assert len(notices) == 1 and str(folder / "config.json") in notices[0]
    pred = clf.predict(SAMPLE)
    assert pred.probabilities == pred.raw_probabilities
    network, _ = clf.model.run(clf.prepare_input(SAMPLE).x[None])  # the network's own pooled outputs
    np.testing.assert_allclose([pred.probabilities[c] for c in clf.classes], network[0], atol=1e-6)
    assert pred.label == (pred.top if max(network[0]) >= 0.5 else UNASSIGNED)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["calibration"].update(weight=c["calibration"]["weight"][:-1]),
     "calibration.weight must list one number per class (11), got 10 values"),
    (lambda c: c["calibration"].update(method="isotonic"), "calibration.method must be one of"),
    (lambda c: c["calibration"].update(bias=[float("nan")] * 11), "calibration.bias must hold finite numbers"),
    (lambda c: c["qc"]["distance"].update(means=c["qc"]["distance"]["means"][:-1]),
     "qc.distance.means must be 11 x 15 finite numbers (the model has 11 classes)"),
    (lambda c: c["qc"].update(cell_diameter_px=[40, 8]), "qc.cell_diameter_px must be [low, high]"),
    (lambda c: c["qc"].update(coverage_max=2), "qc.coverage_max must be a number in [0, 1]"),
    (lambda c: c["qc"]["cell_diameter_px_by_class"].update(nope=[1, 2]),
     "qc.cell_diameter_px_by_class names 'nope', not a class of the model"),
])
def test_a_calibration_or_qc_block_that_does_not_fit_is_refused_naming_the_file_and_field(tmp_path, change, message):
    folder = _copy_model(tmp_path)
    _edit_config(folder, change)
    with pytest.raises(ModelConfigError) as info:
        Classifier.from_dir(folder)
    text = str(info.value)
    assert text.startswith(str(folder / "config.json")) and message in text and "\n" not in text


def test_fit_calibration_recovers_a_temperature_and_chooses_by_likelihood():
    from training.calibrate import fit_calibration
    from training.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    n, k = 600, 4
    y = rng.integers(0, k, n)
    z = rng.normal(0, 1, (n, k))
    z[np.arange(n), y] += 2.0  # true logits; the "network" reports them at 3x, over-confident, as sigmoids
    truth = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in truth])
    raw = 1 / (1 + np.exp(-3 * z))
    targets = np.eye(k)[labels]
    cal, record = fit_calibration(raw, targets, multi_label=False)
    assert cal.method in ("temperature", "vector_scaling")
    assert record["cross_validated"][cal.method]["nll"] < record["cross_validated"]["none"]["nll"]
    p = cal.apply(raw)
    right = p.argmax(axis=1) == labels
    assert expected_calibration_error(p.max(axis=1), right) < 0.06
    if cal.method == "temperature":
        assert cal.weight[0] == pytest.approx(1 / 3, rel=0.2)


# ---------------------------------------------------------------------------------------- decision and qc

def test_one_decision_rule():
    classes = ("a", "b", "c")
    assert decide([0.2, 0.7, 0.1], classes, threshold=0.5).label == "b"
    assert decide([0.4, 0.45, 0.15], classes, threshold=0.5).label == UNASSIGNED
    assert decide([0.4, 0.45, 0.15], classes, threshold=0.5, argmax=True).label == "b"
    assert decide([0.2, 0.7, 0.1], classes, threshold=0.5, qc="off_scale").label == UNASSIGNED
    assert decide([0.2, 0.7, 0.1], classes, threshold=0.5, qc="off_scale", argmax=True).label == UNASSIGNED
    multi = decide([0.9, 0.6, 0.1], classes, threshold=0.5, multi_label=True)
    assert (multi.label, multi.labels) == ("a", "a|b")
    assert decide([0.1, 0.2, 0.3], classes, threshold=0.5, multi_label=True).labels == UNASSIGNED


def test_assess_gives_the_first_reason():
    limits = QualityLimits(diameter=(10.0, 40.0), texture_min=0.5, coverage_max=0.4, similarity=(0.1, 0.9))
    good = Features(diameter=20.0, texture=0.9, coverage=0.2, similarity=0.5)
    assert assess(good, limits, shape=(256, 256), min_size=64) == QC_OK
    assert assess(good, limits, shape=(40, 256), min_size=64) == "too_small"
    assert assess(Features(None, 0.0, 0.0), limits, shape=(256, 256), min_size=64) == "no_cells"
    assert assess(Features(5.0, 0.01, 0.3, 0.0), limits, shape=(256, 256), min_size=64) == "no_cells"  # camera noise
    assert assess(Features(60.0, 0.9, 0.2, 0.5), limits, shape=(256, 256), min_size=64) == "off_scale"
    for bad in (Features(20.0, 0.3, 0.2, 0.5), Features(20.0, 0.9, 0.9, 0.5), Features(20.0, 0.9, 0.2, 1.0)):
        assert assess(bad, limits, shape=(256, 256), min_size=64) == "out_of_distribution"
    own = QualityLimits(diameter=(10.0, 40.0), texture_min=0.5, coverage_max=0.4, diameter_by_class={"a": (10.0, 25.0)})
    assert assess(Features(30.0, 0.9, 0.2), own, shape=(256, 256), min_size=64, top="a") == "off_scale"
    assert assess(Features(30.0, 0.9, 0.2), own, shape=(256, 256), min_size=64, top="b") == QC_OK


def test_junk_gets_no_label_and_the_reason():
    clf = Classifier.from_hub("yeast-loc")
    rng = np.random.default_rng(1)
    blank = np.zeros((2, 256, 256), np.uint16)
    noise = rng.integers(0, 65535, (2, 256, 256)).astype(np.uint16)
    tiny = rng.integers(0, 65535, (2, 12, 12)).astype(np.uint16)
    xx = np.arange(256)[None, :].repeat(256, 0)
    stripes = np.stack([(xx // 8) % 2 * 3000 + 100] * 2).astype(np.uint16)
    got = {name: clf.predict(image) for name, image in
           {"blank": blank, "noise": noise, "tiny": tiny, "stripes": stripes}.items()}
    assert {n: p.qc for n, p in got.items()} == {"blank": "no_cells", "noise": "no_cells", "tiny": "too_small",
                                                 "stripes": "out_of_distribution"}
    assert all(p.label == UNASSIGNED for p in got.values())
    assert max(got["stripes"].probabilities.values()) > 0.9  # confident, and still not called


# ---------------------------------------------------------------------------------------- API and CLI agree

def test_python_api_and_milzoo_give_the_same_label_and_qc(tmp_path):
    rng = np.random.default_rng(2)
    images = tmp_path / "images"
    images.mkdir()
    sample = tifffile.imread(SAMPLE)
    write_tiff(images / "sample.tif", sample)
    write_tiff(images / "crop.tif", sample[:, :200, :300])
    write_tiff(images / "blank.tif", np.zeros_like(sample))
    write_tiff(images / "noise.tif", rng.integers(0, 4000, sample.shape).astype(np.uint16))
    write_tiff(images / "tiny.tif", sample[:, :20, :20])
    write_tiff(images / "scaled.tif", sample, pixel_size=0.34)  # declares 2x the model's pixel size
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(images), "--out", str(out), "--no-overlays"])
    assert result.exit_code == 0, result.output
    rows = {Path(r["image"]).name: r for r in csv.DictReader(open(out / "predictions.csv"))}
    clf = Classifier.from_hub("yeast-loc")
    for name, row in rows.items():
        pred = clf.predict(images / name)
        assert (row["label"], row["qc"], row["scale_source"]) == (pred.label, pred.qc, pred.scale_source), name
        assert float(row["max_probability"]) == pytest.approx(max(pred.probabilities.values()), abs=1e-6)
    assert rows["sample.tif"]["label"] == "ER" and rows["sample.tif"]["qc"] == QC_OK
    assert (rows["blank.tif"]["qc"], rows["tiny.tif"]["qc"]) == ("no_cells", "too_small")
    assert rows["scaled.tif"]["scale_source"] == "image" and rows["sample.tif"]["scale_source"] == "model"
    run = json.loads((out / "run.json").read_text())
    assert run["calibration"] == "vector_scaling" and "own pixel size" in run["scale"]["otherwise"]
    assert run["counts"]["scale_source"] == {"image": 1, "model": 5}
    assert run["counts"]["qc"] == {r: sum(row["qc"] == r for row in rows.values()) for r in run["counts"]["qc"]}
    assert run["counts"]["unassigned"] == sum(row["label"] == UNASSIGNED for row in rows.values())


def test_wells_average_only_fields_that_passed_qc():
    from milcnn.outputs.plates import well_table

    classes = ("a", "b")
    rows = [{"plate": "p", "well": "A01", "qc": "ok", "p_a": "0.9", "p_b": "0.1"},
            {"plate": "p", "well": "A01", "qc": "no_cells", "p_a": "0.0", "p_b": "1.0"},
            {"plate": "p", "well": "A02", "qc": "off_scale", "p_a": "0.99", "p_b": "0.01"}]
    table = {r["well"]: r for r in well_table(rows, classes, threshold=0.5)}
    assert (table["A01"]["label"], table["A01"]["fields"], table["A01"]["fields_qc_ok"]) == ("a", 2, 1)
    assert table["A01"]["p_a"] == pytest.approx(0.9)
    assert (table["A02"]["label"], table["A02"]["qc"]) == (UNASSIGNED, "off_scale")


# ---------------------------------------------------------------------------------------- scale from the image

def test_pixel_size_is_read_from_imagej_and_ome_tiffs(tmp_path):
    image = tifffile.imread(SAMPLE)
    write_tiff(tmp_path / "imagej.tif", image, pixel_size=0.25)
    assert open_image(tmp_path / "imagej.tif")[1].pixel_size == pytest.approx(0.25)
    tifffile.imwrite(tmp_path / "ome.ome.tif", image, ome=True, metadata={
        "axes": "CYX", "PhysicalSizeX": 340.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 340.0,
        "PhysicalSizeYUnit": "nm"})
    assert open_image(tmp_path / "ome.ome.tif")[1].pixel_size == pytest.approx(0.34)
    tifffile.imwrite(tmp_path / "plain.tif", image)
    assert open_image(tmp_path / "plain.tif")[1].pixel_size is None
    tifffile.imwrite(tmp_path / "pixels.tif", image, imagej=True, resolution=(1.0, 1.0),
                     metadata={"axes": "CYX", "unit": "pixel"})  # ImageJ's uncalibrated default
    assert open_image(tmp_path / "pixels.tif")[1].pixel_size is None
    clf = Classifier.from_hub("yeast-loc")
    pred = clf.predict(tmp_path / "ome.ome.tif")
    assert pred.scale_source == "image" and pred.zoom == pytest.approx(2.0) and pred.mask.shape == image.shape[1:]
    given = clf.predict(tmp_path / "ome.ome.tif", cell_diameter=29)
    assert given.scale_source == "argument" and given.zoom == 1.0
    write_tiff(tmp_path / "absurd.tif", image, pixel_size=50.0)  # 294x the model's: not used, the image is not blown up
    absurd = clf.predict(tmp_path / "absurd.tif")
    assert absurd.scale_source == "model" and absurd.zoom == 1.0 and absurd.mask.shape == image.shape[1:]


def test_the_simulators_write_their_pixel_size_and_the_sdk_reads_it(tmp_path):
    from training.simulate import PIXEL_SIZE_UM, simulate_dataset
    from training.data.mcf7 import MCF7Params

    simulate_dataset("mcf7", n=1, seed=0, out=tmp_path, params=MCF7Params())
    path = next((tmp_path / "images").glob("*.tif"))
    assert open_image(path)[1].pixel_size == pytest.approx(PIXEL_SIZE_UM["mcf7"])
    pred = Classifier.from_hub("mcf7-moa").predict(path)  # at the model's own scale: not resized
    assert pred.scale_source == "image" and pred.zoom == pytest.approx(1.0, abs=1e-4)


def test_pixel_size_is_read_from_ome_zarr_with_a_unit(tmp_path):
    zarr = pytest.importorskip("zarr")
    from milcnn.io.omezarr import ZarrField

    for unit, expected in (("micrometer", 0.5), ("nanometer", 0.0005), (None, None)):
        path = tmp_path / f"{unit}.zarr"
        group = zarr.open_group(str(path), mode="w", zarr_format=2)
        group.create_array("0", data=np.zeros((2, 64, 64), np.uint16), chunks=(1, 64, 64))
        axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
        for a in axes[1:]:
            if unit:
                a["unit"] = unit
        group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.5]}]}]}]
        field = ZarrField(plate_path=tmp_path, image_path=path.name, plate="p", well="A01", field="0",
                          version="0.4")
        got = field.pixel_size()
        assert got == (pytest.approx(expected) if expected else None)


# ---------------------------------------------------------------------------------------- other paths

def test_the_bioimageio_graph_carries_the_calibration():
    import onnxruntime as ort

    from training.bioimageio import calibrated_graph

    clf = Classifier.from_hub("mcf7-moa", backend="onnxruntime")
    session = ort.InferenceSession(calibrated_graph((clf.folder / "model.onnx").read_bytes(), clf.info.calibration))
    item = clf.prepare_input(clf.folder / "sample_input.tif", cell_diameter=clf.info.cell_diameter)
    names = [o.name for o in session.get_outputs()]
    out = session.run(None, {session.get_inputs()[0].name: item.x[None]})[names.index("probabilities")][0]
    pred = clf.predict_prepared([item])[0]
    np.testing.assert_allclose(out, [pred.probabilities[c] for c in clf.classes], atol=1e-5)


def test_model_info_round_trips_the_new_blocks():
    info = ModelInfo.from_file(ZOO / "yeast-loc" / "config.json")
    again = ModelInfo.from_dict(info.to_dict())
    assert again.calibration == info.calibration and again.qc.diameter == info.qc.diameter
    assert info.format_version == CONFIG_FORMAT


def test_a_multi_label_model_lists_every_class_at_the_threshold(tmp_path):
    """A multi-label model (yeast-loc's network declared multi-label, with a Platt calibration that gives two
    classes >= 0.5): predictions.csv has a labels column 'a|b', label the top class, as Prediction says."""
    folder = _copy_model(tmp_path)
    clf = Classifier.from_hub("yeast-loc")
    raw = clf.predict(SAMPLE).raw_probabilities
    first, second = sorted(raw, key=raw.get, reverse=True)[:2]
    bias = [20.0 if c in (first, second) else -20.0 for c in clf.classes]
    _edit_config(folder, lambda c: (c.update(multi_label=True), c.pop("qc"), c.update(
        calibration={"method": "platt", "weight": [1.0] * 11, "bias": bias})))
    multi = Classifier.from_dir(folder)
    pred = multi.predict(SAMPLE)
    assert pred.label == first and pred.labels == "|".join(c for c in clf.classes if c in (first, second))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(SAMPLE), "--out", str(out), "--model", str(folder),
                                       "--no-overlays"])
    assert result.exit_code == 0, result.output
    row = next(csv.DictReader(open(out / "predictions.csv")))
    assert (row["label"], row["labels"], row["qc"]) == (pred.label, pred.labels, pred.qc)
    with pytest.raises(ModelConfigError, match="makes the classes exclusive, but the model is multi-label"):
        _edit_config(folder, lambda c: c["calibration"].update(method="vector_scaling"))
        Classifier.from_dir(folder)
