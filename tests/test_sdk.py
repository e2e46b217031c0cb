import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from milcnn import Classifier
from milcnn.errors import ChecksumMismatchError, ImageReadError, ModelConfigError, ModelNotFoundError
from milcnn.process.postprocess import label_mask
from milcnn.model.checksums import sha256_of
from milcnn.model.registry import lookup, zoo

ZOO = sorted(zoo())


@pytest.mark.slow
def test_the_sdk_never_imports_torch():
    code = ("import sys, milcnn, milcnn.cli, milcnn.model.hub, milcnn.outputs.overlay; from milcnn import Classifier; "
            "c = Classifier.from_hub('yeast-loc'); c.predict(c.folder / 'sample_input.tif'); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_zoo_has_both_yeast_models():
    assert {"yeast-loc", "yeast-loc-gfp"} <= set(ZOO)
    assert Classifier.from_hub("yeast-loc").channels == ("gfp", "rfp")
    assert Classifier.from_hub("yeast-loc-gfp").channels == ("gfp",)


@pytest.mark.parametrize("name", ZOO)
def test_bundled_models_match_their_pinned_checksum_and_self_test(name):
    entry = lookup(name)
    assert entry.bundled_dir is not None
    assert sha256_of(entry.bundled_dir / "model.onnx") == entry.sha256
    clf = Classifier.from_hub(name)
    assert clf.self_test()["max_abs_difference"] <= 1e-4
    assert len(clf.classes) == {"mcf7-moa": 8}.get(name, 11)


def test_unknown_name_lists_the_zoo():
    with pytest.raises(ModelNotFoundError) as err:
        Classifier.from_hub("yeast-locc")
    assert isinstance(err.value, KeyError)
    assert "unknown model 'yeast-locc'" in str(err.value) and "yeast-loc-gfp" in str(err.value)
    for bad in ("../etc", "a/../b", "org/name/extra", "org/../x"):
        with pytest.raises(ModelNotFoundError):
            Classifier.from_hub(bad)
    with pytest.raises(ModelConfigError, match=r"\.\.: no model.onnx in this folder"):
        Classifier.from_hub("..")  # an existing folder is loaded as a model folder


def test_tampered_model_raises_and_deletes_nothing(tmp_path):
    entry = lookup("yeast-loc")
    copy = tmp_path / "yeast-loc"
    shutil.copytree(entry.bundled_dir, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="does not match the pinned"):
        Classifier.from_dir(copy, sha256=entry.sha256)
    assert (copy / "model.onnx").read_bytes() == bytes(data)


@pytest.fixture(scope="module")
def sample(clf):
    return tifffile.imread(clf.folder / "sample_input.tif")


def test_prediction_contents(clf, sample):
    pred = clf.predict(sample)
    c, h, w = sample.shape
    assert pred.label in clf.classes
    assert set(pred.probabilities) == set(clf.classes)
    assert all(0 <= p <= 1 for p in pred.probabilities.values())
    assert pred.class_maps.shape == (11, h, w) and pred.class_maps.dtype == np.float32
    assert pred.mask.shape == (h, w) and pred.mask.dtype == np.uint8 and pred.mask.max() <= 11
    np.testing.assert_array_equal(pred.mask, label_mask(pred.class_maps, 0.5))
    d = pred.to_dict()
    assert d["label"] == pred.label and sum(d["mask_pixels"].values()) == int((pred.mask > 0).sum())


def test_layouts_and_paths_give_the_same_result(clf, sample, tmp_path):
    ref = clf.predict(sample).probabilities
    tifffile.imwrite(tmp_path / "s.tif", sample, photometric="minisblack")
    for image, axis in ((np.moveaxis(sample, 0, -1), None), (np.moveaxis(sample, 0, 1), 1), (tmp_path / "s.tif", None)):
        got = clf.predict(image, channel_axis=axis).probabilities
        assert got == pytest.approx(ref, abs=1e-6)
    batch = clf.predict_batch([sample, tmp_path / "s.tif"])
    assert [p.label for p in batch] == [clf.predict(sample).label] * 2


def test_wrong_channels_and_bad_files_are_clear_errors(clf, sample, tmp_path):
    with pytest.raises(ValueError, match="has 1 channel but the model needs 2"):
        clf.predict(sample[0])
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.tif: file is empty"):
        clf.predict(tmp_path / "empty.tif")
    (tmp_path / "text.tif").write_text("not an image")
    with pytest.raises(ImageReadError, match="text.tif: not a readable TIFF"):
        clf.predict(tmp_path / "text.tif")


def test_small_images_are_padded_and_pooled_over_their_own_instances(clf, sample):
    """An image below min_size is padded for the network, but its probabilities are the model's
    pooling of the maps it returns (the padding is not an instance); the whole-image path agrees."""
    from milcnn.runtime.onnx import OnnxModel

    small = sample[:, :40, :50]
    pred = clf.predict(small)
    assert pred.class_maps.shape == (11, 40, 50) and pred.mask.shape == (40, 50)
    assert pred.maps.shape == (11, 10, 13)
    pooling = OnnxModel(clf.folder / "pooling.onnx", device="cpu", outputs=("probabilities",))
    (pooled,) = pooling.run(pred.maps[None])
    np.testing.assert_allclose([pred.raw_probabilities[c] for c in clf.classes], pooled[0], atol=1e-6)
    padded_probs, _ = clf.model.run(clf.prepare_input(small).x[None])  # what pooling the padding gives
    assert np.abs(padded_probs[0] - pooled[0]).max() > 1e-3


@pytest.mark.needs_realdata
def test_real_images_give_finite_sane_output(clf, realdata):
    field = np.stack([tifffile.imread(realdata / "W00001_P00001_cherry.tif")] * 2)  # 1024 x 1344 uint16
    pred = clf.predict(field)
    assert np.isfinite(pred.class_maps).all() and pred.mask.shape == (1024, 1344)
    assert all(0.0 <= p <= 1.0 for p in pred.probabilities.values())


def test_masks_are_computed_once_and_in_parallel_across_predictions(clf, sample, monkeypatch):
    """milzoo predict's writer threads compute masks side by side: Python 3.11's cached_property
    would hold one lock for every Prediction, and the barrier below would never fill."""
    import threading

    import milcnn.predict.prediction as classifier

    first, second = clf.predict(sample), clf.predict(sample)
    barrier, calls, real = threading.Barrier(2, timeout=10), [], classifier.mask_from_maps

    def meeting_mask(*args, **kwargs):
        calls.append(1)
        barrier.wait()  # raises BrokenBarrierError if the other thread cannot get here
        return real(*args, **kwargs)

    monkeypatch.setattr(classifier, "mask_from_maps", meeting_mask)
    threads = [threading.Thread(target=lambda p=p: p.mask) for p in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not barrier.broken and len(calls) == 2
    monkeypatch.setattr(classifier, "mask_from_maps", real)
    assert first.mask is first.mask and len(calls) == 2  # cached on the prediction
    np.testing.assert_array_equal(first.mask, label_mask(first.class_maps, first.threshold))


def _copy_zoo_model(tmp_path, name="yeast-loc"):
    copy = tmp_path / name
    shutil.copytree(lookup(name).bundled_dir, copy)
    return copy


def _edit_config(folder, edit, *, restamp: bool = True):
    """``edit`` the folder's config.json; ``restamp``: with its checksum made again (as a tool that writes
    configs does), so what is tested is the check of the content, not the checksum's."""
    import json

    from milcnn.model.config import content_sha256

    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    if restamp:
        config["checksum"] = f"sha256:{content_sha256(config)}"
    path.write_text(json.dumps(config))


def _without_trust_blocks(edit):
    """``edit``, on a config without its calibration and qc (blocks of 11 classes that a changed class list
    would fail first: tests/test_calibration.py checks those)."""
    return lambda c: (c.pop("calibration", None), c.pop("qc", None), edit(c))


@pytest.mark.parametrize("edit, message", [
    (_without_trust_blocks(lambda c: c.update(classes=c["classes"][:3])), "lists 3 classes but model.onnx outputs 11"),
    (lambda c: c.update(output_stride=0), "output_stride must be a positive power of two, got 0"),
    (lambda c: c.update(output_stride=-4), "output_stride must be a positive power of two, got -4"),
    (lambda c: c["variants"]["int8"].update(file="../model.int8.onnx"),
     "variants.int8.file must be a file name inside the model folder, got '../model.int8.onnx'"),
    (lambda c: c.update(format_version=99), "format_version 99 is newer than this milcnn-sdk reads"),
    (lambda c: c.update(classes=["a", "a"]), "classes must be distinct"),
    (lambda c: c.update(classes=c["classes"][:3]), r"calibration\.weight must list one number per class \(3\), got 11"),
])
def test_a_config_that_does_not_fit_its_model_is_refused_at_load(tmp_path, edit, message):
    folder = _copy_zoo_model(tmp_path)
    _edit_config(folder, edit)
    with pytest.raises(ModelConfigError, match=message) as err:
        Classifier.from_dir(folder, device="cpu")
    assert "config.json" in str(err.value) and "\n" not in str(err.value)


def test_an_old_format_config_is_migrated_in_one_place(tmp_path):
    """A 1.x config.json (no format_version, scale, files, variants, calibration or qc records) still loads, as
    the current format, with an unknown scale and raw probabilities; write_config stamps the current format."""
    import json

    from milcnn.model.config import CONFIG_FORMAT, ModelInfo, migrate_config, read_config, write_config

    folder = _copy_zoo_model(tmp_path)

    def old(c):
        for key in ("format_version", "scale", "files", "variants", "calibration", "qc"):
            c.pop(key, None)
        c["architecture"].pop("receptive_field")
    _edit_config(folder, old)
    raw = json.loads((folder / "config.json").read_text())
    migrated = migrate_config(raw)
    assert migrated["format_version"] == CONFIG_FORMAT == 4 and "format_version" not in raw
    info = ModelInfo.from_file(folder / "config.json")
    assert info.format_version == CONFIG_FORMAT and info.calibration is None and info.qc is None and info.cell_diameter is None and info.variants == {} and info.receptive_field == 64
    clf = Classifier.from_dir(folder, device="cpu", precision="fp32")
    pred = clf.predict(tifffile.imread(folder / "sample_input.tif"))
    assert pred.top in clf.classes and pred.probabilities == pred.raw_probabilities
    written = write_config(folder, read_config(folder))
    assert json.loads((folder / "config.json").read_text()) == written and written["format_version"] == CONFIG_FORMAT
    with pytest.raises(ModelConfigError, match="output_stride"):
        write_config(folder, {**written, "output_stride": 3})
    assert json.loads((folder / "config.json").read_text()) == written  # nothing written


@pytest.mark.slow
def test_library_messages_go_to_the_milcnn_logger_and_are_silent_by_default(tmp_path):
    """A script that uses the SDK prints nothing of its own on stderr unless it asks (log_to_stderr)."""
    big = tmp_path / "big.tif"
    sample = tifffile.imread(lookup("yeast-loc").bundled_dir / "sample_input.tif")
    tifffile.imwrite(big, np.repeat(np.repeat(sample, 3, axis=1), 3, axis=2), photometric="minisblack")
    script = ("import sys; from milcnn import Classifier\n"
              "if sys.argv[2] == 'show':\n    from milcnn.logs import log_to_stderr; log_to_stderr()\n"
              "Classifier.from_hub('yeast-loc', device='cpu').predict(sys.argv[1])\n")
    quiet = subprocess.run([sys.executable, "-c", script, str(big), "quiet"], capture_output=True, text=True)
    shown = subprocess.run([sys.executable, "-c", script, str(big), "show"], capture_output=True, text=True)
    assert quiet.returncode == 0 and shown.returncode == 0, quiet.stderr + shown.stderr
    assert "cells look" not in quiet.stderr
    lines = [line for line in shown.stderr.splitlines() if "cells look" in line]
    assert len(lines) == 1 and lines[0].startswith("milcnn: ")


def test_a_huge_config_is_refused_before_parsing(tmp_path):
    """A config.json listing 3 million classes (about 40 MB) is refused from its size, in one line."""
    import json

    folder = _copy_zoo_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["classes"] = [f"class {i}" for i in range(3_000_000)]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match=r"bytes, over the 1,048,576 a model config may take") as err:
        Classifier.from_dir(folder, device="cpu")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("edit", [
    lambda c: c.update(classes=[c["classes"][1], c["classes"][0], *c["classes"][2:]]),  # two names swapped
    lambda c: c["normalization"].update(high=90),
    lambda c: c.pop("checksum"),
])
def test_a_config_edited_by_hand_is_refused_at_load_and_by_milzoo(tmp_path, edit):
    """config.json carries its own checksum: an edit that still parses (two class names swapped, another
    percentile) would load and predict silently; it is refused with one line naming the file."""
    from click.testing import CliRunner

    from milcnn.cli import main

    folder = _copy_zoo_model(tmp_path)
    Classifier.from_dir(folder)  # loads as released
    _edit_config(folder, edit, restamp=False)
    with pytest.raises(ModelConfigError, match=r"config\.json: edited since it was written") as err:
        Classifier.from_dir(folder)
    assert "\n" not in str(err.value)
    result = CliRunner().invoke(main, ["predict", str(folder / "sample_input.tif"), "--model", str(folder),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "edited since it was written" in result.output
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_the_registry_pins_each_zoo_config(tmp_path, monkeypatch):
    """A zoo model's config.json is pinned in the registry beside model.onnx: the bundled copies match, and a
    folder whose config differs from the pin is refused (ChecksumMismatchError names the file)."""
    from milcnn.model.config import ModelInfo
    from milcnn.model.registry import zoo

    for entry in zoo().values():
        assert entry.config_sha256 == sha256_of(entry.bundled_dir / "config.json")
    folder = _copy_zoo_model(tmp_path)
    _edit_config(folder, lambda c: c.update(summary="changed"))  # a valid, re-stamped config: not the pinned one
    ModelInfo.from_file(folder / "config.json")
    with pytest.raises(ChecksumMismatchError, match="config.json: sha256"):
        ModelInfo.from_file(folder / "config.json", sha256=zoo()["yeast-loc"].config_sha256)
