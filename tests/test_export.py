import json

import numpy as np
import pytest
import tifffile
import torch

from milcnn import Classifier
from training.data.dataset import ImageSet
from training.data.manifest import read_manifest
from training.export import ExportError, check_onnx, export_folder
from training.train import TrainConfig, load_checkpoint, train


@pytest.fixture(scope="module")
def exported(tiny_yeast, tmp_path_factory):
    run = tmp_path_factory.mktemp("export_run")
    cfg = TrainConfig(data=str(tiny_yeast), val=str(tiny_yeast), out=str(run), channels="gfp,rfp", epochs=1,
                      steps_per_epoch=3, batch_size=4, crop=64, width=4, seed=1, threads=2)
    best = train(cfg, progress=False)
    out = export_folder(best, run / "zoo" / "tiny", name="tiny", version="0.0.1", eval_data=str(tiny_yeast),
                        training_data={"simulated": True, "description": "22 tiny images"})
    return best, out


def test_folder_is_complete_and_self_contained(exported):
    _, out = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "model.onnx", "sample_input.tif", "sample_output.json"]
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
