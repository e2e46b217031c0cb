import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from milcnn import Classifier
from training.data.dataset import ImageSet
from training.data.manifest import read_manifest
from training.export import ExportError, check_onnx, export_folder
from training.checkpoint import load_checkpoint


pytestmark = pytest.mark.slow  # every test here trains, exports or starts a process


def test_folder_is_complete_and_self_contained(exported):
    _, out = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "model.onnx", "pooling.onnx", "sample_input.tif", "sample_output.json"]
    config = json.loads((out / "config.json").read_text())
    for key in ("name", "version", "classes", "channels", "normalization", "pooling", "output_stride", "min_size",
                "training_data", "metrics"):
        assert key in config
    assert config["channels"] == ["gfp", "rfp"] and len(config["classes"]) == 11
    assert config["export"]["max_abs_difference_vs_pytorch"] <= 1e-4
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\n") and "pipeline_tag: image-classification" in card
    assert "model-index:" in card and "**The training data is simulated**" in card


def test_onnx_has_dynamic_batch_height_and_width(exported):
    import onnxruntime as ort

    _, out = exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for b, h, w in ((1, 64, 64), (3, 100, 131)):
        probs, maps = session.run(None, {"image": np.random.rand(b, 2, h, w).astype(np.float32)})
        assert probs.shape == (b, 11) and maps.shape == (b, 11, -(-h // 4), -(-w // 4))


def test_sdk_matches_pytorch_and_self_tests(exported, tiny_yeast):
    best, out = exported
    model, _ = load_checkpoint(best)
    clf = Classifier.from_dir(out, device="cpu")
    assert clf.self_test()["max_abs_difference"] <= 1e-4
    image = tifffile.imread(out / "sample_input.tif")
    with torch.no_grad():
        ref = model(torch.from_numpy(clf.preprocess(image))[None])
    pred = clf.predict(image)
    np.testing.assert_allclose(list(pred.probabilities.values()), ref.probabilities[0].numpy(), atol=1e-4)


def test_export_refuses_a_graph_that_differs(exported, tmp_path):
    best, out = exported
    model, _ = load_checkpoint(best)
    with torch.no_grad():
        model.head.bias += 0.5  # the file on disk no longer matches this model
    with pytest.raises(ExportError, match="differs from PyTorch"):
        check_onnx(model, out / "model.onnx")


@pytest.mark.needs_realdata
def test_sdk_and_training_normalise_a_real_image_identically(exported, realdata, tmp_path):
    _, out = exported
    field = np.stack([tifffile.imread(realdata / f"AS_09125_050116030001_D03f00d{i}.tif") for i in (0, 2)])
    tifffile.imwrite(tmp_path / "real.tif", field, photometric="minisblack")
    (tmp_path / "m.csv").write_text("path,label\nreal.tif,ER\n")
    clf = Classifier.from_dir(out, device="cpu")
    samples, _, _ = read_manifest(tmp_path / "m.csv", channels=clf.channels, classes=clf.classes)
    training_input = ImageSet(samples, clf.channels, clf.classes, clf.info.normalization).images[0]
    sdk_input = clf.preprocess(tmp_path / "real.tif")
    assert sdk_input.shape == (2, 512, 512) and sdk_input.dtype == np.float32
    # training keeps images as float16 in memory; the same numbers up to that rounding
    np.testing.assert_allclose(training_input.astype(np.float32), sdk_input, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(training_input, sdk_input.astype(np.float16))


def test_failed_export_leaves_the_old_folder(exported, tmp_path, monkeypatch):
    import training.export as export_module

    best, _ = exported
    target = tmp_path / "keep"
    target.mkdir()
    (target / "old.txt").write_text("yesterday")

    def broken(*args, **kwargs):
        raise ExportError("simulated mismatch")

    monkeypatch.setattr(export_module, "check_onnx", broken)
    with pytest.raises(ExportError):
        export_folder(best, target, name="x", version="1")
    assert (target / "old.txt").read_text() == "yesterday"
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


# ---------------------------------------------------------------- push to the Hub
# olah serves but accepts no uploads, so the push code is tested at the HfApi boundary with a recording
# stand-in (every call checked against HfApi's real signatures) that commits and tags into the server's git
# mirror; the pushed model is then downloaded back through the real server.


def test_push_round_trip_through_a_real_server(exported, hub, tmp_path):
    from hub_server import RecordingHfApi, sdk_env
    from test_hub import load_in_process
    from training.export import check_push, push_to_hub

    _, out = exported
    api = RecordingHfApi(hub.mirror)
    assert check_push("lab/tiny", revision="v0.0.1", api=api) is api
    commit = push_to_hub(out, "lab/tiny", revision="v0.0.1", private=True, api=api)
    names = [name for name, _ in api.calls]
    assert names == ["list_repo_refs", "create_repo", "upload_folder", "create_tag"]
    create, upload, tag = (dict(api.calls[i][1]) for i in (1, 2, 3))
    assert create["private"] is True and create["exist_ok"] is True
    assert upload["folder_path"] == str(out) and upload["commit_message"] == "tiny v0.0.1"
    assert tag["tag"] == "v0.0.1" and tag["revision"] == commit
    rc, got, err = load_in_process(sdk_env(hub.endpoint, tmp_path / "hf"), "lab/tiny", revision="v0.0.1")
    assert rc == 0, err
    assert got["commit"] == commit and got["source"] == "hub"
    local = Classifier.from_dir(out, device="cpu").predict(out / "sample_input.tif")
    np.testing.assert_allclose([got["probabilities"][c] for c in local.classes],
                               [local.probabilities[c] for c in local.classes], atol=1e-6)
    with pytest.raises(ExportError, match="tag already exists in lab/tiny"):
        check_push("lab/tiny", revision="v0.0.1", api=api)


def test_export_cli_push_prints_the_commit(exported, hub, tmp_path, monkeypatch, capsys):
    from hub_server import RecordingHfApi, git
    from training import export

    best, _ = exported
    api = RecordingHfApi(hub.mirror)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(export, "_hub_api", lambda token: api)
    rc = export.main([str(best), "--out", str(tmp_path / "pushed"), "--name", "cli", "--push", "lab/cli",
                      "--revision", "v1.0.0"])
    assert rc == 0
    sha = git(hub.mirror.repo_dir("lab/cli"), "rev-parse", "v1.0.0")
    assert f"pushed {tmp_path / 'pushed'} to lab/cli at commit {sha} (tag v1.0.0)" in capsys.readouterr().out
    config = json.loads((tmp_path / "pushed" / "config.json").read_text())
    assert config["repo_id"] == "lab/cli"
    assert 'Classifier.from_hub("lab/cli")' in (tmp_path / "pushed" / "README.md").read_text()


def test_push_without_a_token_fails_before_exporting(exported, tmp_path):
    best, _ = exported
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "empty-hf-home")
    proc = subprocess.run([sys.executable, "-m", "training.export", str(best), "--out", str(tmp_path / "x"),
                           "--push", "lab/x"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "no Hugging Face token found; log in with `hf auth login` or set HF_TOKEN (nothing was exported)" \
        in proc.stderr
    assert not (tmp_path / "x").exists() and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- int8 variant


def test_quantize_adds_a_measured_int8_variant_or_refuses(exported, tiny_yeast, tmp_path):
    import shutil

    from training.quantize import QuantizationError, quantize_folder

    _, out = exported
    folder = shutil.copytree(out, tmp_path / "tiny")
    manifest = str(tiny_yeast)
    with pytest.raises(QuantizationError, match="the int8 variant was not added"):
        quantize_folder(folder, calibration=manifest, eval_data=manifest, n_calibration=4, max_drop=-1.0)
    assert not (folder / "model.int8.onnx").exists()
    assert not json.loads((folder / "config.json").read_text())["variants"]  # none added
    record = quantize_folder(folder, calibration=manifest, eval_data=manifest, n_calibration=4, max_drop=100.0)
    config = json.loads((folder / "config.json").read_text())
    assert config["variants"]["int8"] == record and record["metrics"]["n_images"] == 22
    assert config["files"]["model.int8.onnx"]["sha256"]
    assert "## int8 variant" in (folder / "README.md").read_text()
    clf = Classifier.from_dir(folder, device="cpu", precision="int8")
    assert clf.predict(folder / "sample_input.tif").top in clf.classes


def test_fp16_variant_is_measured_added_beside_int8_and_runs(exported, tiny_yeast, tmp_path):
    import shutil

    from training.quantize import QuantizationError, half_folder, quantize_folder

    _, out = exported
    folder = shutil.copytree(out, tmp_path / "tiny")
    manifest = str(tiny_yeast)
    with pytest.raises(QuantizationError, match="the fp16 variant was not added"):
        half_folder(folder, eval_data=manifest, max_drop=-1.0)
    assert not (folder / "model.fp16.onnx").exists()
    record = half_folder(folder, eval_data=manifest)
    metrics = record["metrics"]
    assert metrics["n_images"] == 22 and metrics["accuracy_drop_points"] <= 1.0 and "calibration" not in record
    quantize_folder(folder, calibration=manifest, eval_data=manifest, n_calibration=4, max_drop=100.0)
    config = json.loads((folder / "config.json").read_text())
    assert set(config["variants"]) == {"fp16", "int8"}  # adding one variant keeps the other
    assert config["files"]["model.fp16.onnx"]["bytes"] < config["files"]["model.onnx"]["bytes"]
    assert "## fp16 variant" in (folder / "README.md").read_text()
    fp32 = Classifier.from_dir(folder, device="cpu", precision="fp32").predict(folder / "sample_input.tif")
    fp16 = Classifier.from_dir(folder, device="cpu", precision="fp16").predict(folder / "sample_input.tif")
    assert fp16.top == fp32.top
    assert max(abs(fp16.probabilities[c] - fp32.probabilities[c]) for c in fp32.classes) < 1e-2
