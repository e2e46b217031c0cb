"""The fast inference path: histogram percentiles, the sparse mask, tiling, int8, batching, the pipeline."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from milcnn import Classifier, constants
from milcnn.cli import main
from milcnn.errors import ChecksumMismatchError, ModelConfigError
from milcnn.process.postprocess import label_mask, mask_from_maps, upsample_maps
from milcnn.process.preprocess import percentiles
from milcnn.runtime.onnx import gpu_providers

ZOO = Path(__file__).resolve().parents[1] / "zoo"


@pytest.fixture(scope="module")
def field():
    """A 600 x 700 two-channel field: the bundled 512 px sample, tiled."""
    sample = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")
    return np.ascontiguousarray(np.tile(sample, (1, 2, 2))[:, :600, :700])


@pytest.mark.parametrize("dtype, low, high", [(np.uint8, 0, 256), (np.uint16, 0, 65536), (np.uint16, 90, 140),
                                              (np.int16, -3000, 3000), (np.int32, -5, 5), (np.int64, -2**40, 2**40),
                                              (np.uint32, 7, 5000), (np.uint64, 2**21, 2**21 + 900),
                                              (np.uint32, 0, 2**31)])
def test_histogram_percentiles_equal_numpy(dtype, low, high):
    rng = np.random.default_rng(int(high) % 1000)
    values = rng.integers(low, high, size=(37, 53)).astype(dtype)
    q = (0.0, 1.0, 37.5, 99.8, 100.0)
    np.testing.assert_allclose(percentiles(values, q), np.percentile(values, q), rtol=1e-12, atol=0)


def test_percentiles_of_bool_float_and_single_values():
    flags = np.zeros((10, 10), bool)
    flags[:3] = True
    np.testing.assert_array_equal(percentiles(flags, (1, 99.8)), np.percentile(flags.astype(np.uint8), (1, 99.8)))
    floats = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    np.testing.assert_allclose(percentiles(floats, (1, 99.8)), np.percentile(floats, (1, 99.8)))
    assert percentiles(np.array([7], np.uint16), (1, 99.8)).tolist() == [7.0, 7.0]


@pytest.mark.parametrize("k, h, w, stride, threshold, band", [
    (11, 64, 80, 4, 0.5, 256), (11, 64, 80, 4, 0.5, 5), (3, 10, 13, 4, 0.3, 256), (5, 17, 9, 8, 0.5, 3),
    (1, 1, 1, 4, 0.5, 256), (2, 30, 5, 2, 0.9, 256), (150, 8, 9, 4, 0.5, 256), (300, 7, 9, 4, 0.5, 2)])
def test_sparse_mask_equals_dense(k, h, w, stride, threshold, band):
    rng = np.random.default_rng(k * h + w)
    maps = rng.random((k, h, w)).astype(np.float32) ** 3
    maps[:, : h // 2] = maps[:, : h // 2] < 0.2  # exact 0/1 plateaus and ties as well as smooth values
    for H, W in ((h * stride, w * stride), (h * stride - stride + 1, w * stride - 1)):
        dense = label_mask(upsample_maps(maps, stride, (H, W)), threshold)
        sparse = mask_from_maps(maps, stride, (H, W), threshold, band=band)
        assert sparse.dtype == dense.dtype and sparse.shape == (H, W)
        np.testing.assert_array_equal(sparse, dense)


def test_sparse_mask_equals_dense_on_exact_threshold_values_and_ties():
    """Values on a grid of quarters: corners exactly at the threshold, cells all above it, and ties between
    two or three classes, where the sparse mask takes its shortcuts."""
    rng = np.random.default_rng(7)
    for trial in range(60):
        k, h, w = int(rng.integers(1, 12)), int(rng.integers(2, 30)), int(rng.integers(2, 30))
        maps = np.round(rng.random((k, h, w), dtype=np.float32) * rng.integers(2, 6)) / 4
        H, W = 4 * h - int(rng.integers(0, 4)), 4 * w - int(rng.integers(0, 4))
        np.testing.assert_array_equal(mask_from_maps(maps, 4, (H, W), 0.5, band=int(rng.integers(1, 9))),
                                      label_mask(upsample_maps(maps, 4, (H, W)), 0.5), err_msg=str(trial))


def test_mask_geometry_errors():
    with pytest.raises(ValueError, match="maps of size 4x4 do not match an input of 40x16 at stride 4"):
        mask_from_maps(np.zeros((2, 4, 4), np.float32), 4, (40, 16))
    with pytest.raises(ValueError, match="output stride must be even"):
        upsample_maps(np.zeros((2, 4, 4), np.float32), 3, (12, 12))


def test_tiled_inference_matches_whole_image(clf, field):
    whole = clf.predict(field)
    for tile in (128, 256):
        tiled = clf.predict(field, tile_size=tile)
        assert tiled.label == whole.label
        np.testing.assert_allclose([tiled.probabilities[c] for c in clf.classes],
                                   [whole.probabilities[c] for c in clf.classes], atol=1e-5)
        np.testing.assert_allclose(tiled.maps, whole.maps, atol=1e-5)
        assert (tiled.mask != whole.mask).mean() < 1e-4


def test_large_images_are_tiled_automatically(clf, field, monkeypatch):
    calls = []
    original = clf.tiles.run_tiled
    monkeypatch.setattr(clf.tiles, "run_tiled", lambda chw, tile, **kw: calls.append(tile) or original(chw, tile, **kw))
    clf.predict(field)
    assert calls == []
    monkeypatch.setattr(constants, "TILE_THRESHOLD_PIXELS", 100_000)
    clf.predict(field)
    assert calls == [constants.DEFAULT_TILE_SIZE]


def test_bad_tile_size(clf, field):
    with pytest.raises(ValueError, match="tile size 30 must be a positive multiple of the output stride 4"):
        clf.predict(field, tile_size=30)


def test_class_maps_are_computed_on_demand(clf, field):
    pred = clf.predict(field)
    assert "class_maps" not in pred.__dict__
    assert pred.class_maps.shape == (11, 600, 700)
    np.testing.assert_array_equal(pred.mask, label_mask(pred.class_maps, 0.5))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_variant(clf, field, backend):
    int8 = Classifier.from_hub("yeast-loc", device="cpu", precision="int8", backend=backend)
    assert int8.available_precisions == ("fp32", "int8", "fp16", "bf16") and int8.precision == "int8"
    assert int8.model.backend == backend
    a, b = clf.predict(field), int8.predict(field)
    assert a.label == b.label
    assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in clf.classes) < 0.05
    assert int8.self_test(tolerance=0.05)["label"] == clf.self_test()["label"]
    assert int8.predict(field, tile_size=256).label == a.label
    with pytest.raises(ModelConfigError, match="yeast-loc has no 'int4' variant; it offers fp32, int8, fp16, bf16"):
        Classifier.from_hub("yeast-loc", device="cpu", precision="int4")


def test_fp16_variant_on_request_with_a_notice_on_a_cpu(clf, field, caplog):
    fp16 = Classifier.from_hub("yeast-loc", device="cpu", precision="fp16")
    assert fp16.precision == "fp16" and fp16.model.path.name == "model.fp16.onnx"
    assert "running the fp16 variant on the CPU; it is meant for GPUs" in caplog.text
    a, b = clf.predict(field), fp16.predict(field)
    assert a.label == b.label
    assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in clf.classes) < 1e-2
    assert (a.mask == b.mask).mean() > 0.99


def test_auto_precision_is_fp32_on_a_cpu_and_fp16_only_where_a_gpu_starts(field, monkeypatch, caplog):
    import onnxruntime

    from milcnn.errors import DeviceFallbackWarning

    assert Classifier.from_hub("yeast-loc").precision == "fp32"  # no GPU provider in this onnxruntime
    with pytest.warns(DeviceFallbackWarning, match="running on the CPU"):  # seen from Python without logging set up
        assert Classifier.from_hub("yeast-loc", device="cuda").precision == "fp32"
    caplog.clear()
    # onnxruntime claims a CUDA provider: auto picks fp16, the session cannot start CUDA and runs
    # on the CPU, so the classifier goes back to fp32 rather than run float16 on a CPU
    real = onnxruntime.get_available_providers()
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    clf = Classifier.from_hub("yeast-loc", device="cuda")
    assert clf.precision == "fp32" and clf.model.path.name == "model.onnx"
    assert clf.model.providers == ["CPUExecutionProvider"]
    assert "running on the CPU" in caplog.text
    with pytest.raises(ModelConfigError, match="yeast-loc-gfp has no 'fp8' variant"):
        Classifier.from_hub("yeast-loc-gfp", precision="fp8")


def test_tampered_int8_and_pooling_files_are_refused(tmp_path, field):
    folder = shutil.copytree(ZOO / "yeast-loc", tmp_path / "m")
    for name in ("model.int8.onnx", "pooling.onnx"):
        data = bytearray((folder / name).read_bytes())
        data[-20] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="model.int8.onnx"):
        Classifier.from_dir(folder, device="cpu", precision="int8")
    clf = Classifier.from_dir(folder, device="cpu")
    clf.predict(field)  # whole-image inference does not need pooling.onnx
    with pytest.raises(ChecksumMismatchError, match="pooling.onnx"):
        clf.predict(field, tile_size=256)


def test_predict_batch_groups_same_sizes(clf, field):
    images = [field, field[:, :300, :420], field, field[:, :300, :420], field[:, 100:400, 50:470]]
    batched = clf.predict_batch(images, batch_size=3)
    for image, pred in zip(images, batched):
        one = clf.predict(image)
        assert pred.label == one.label and pred.mask.shape == image.shape[1:]
        np.testing.assert_allclose(pred.maps, one.maps, atol=1e-5)


def test_gpu_provider_order():
    assert gpu_providers(["CPUExecutionProvider"]) == []
    names = [p[0] for p in gpu_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])]
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_workers_precision_tiles_and_no_overlays(tmp_path, field):
    images = tmp_path / "in"
    images.mkdir()
    for i in range(5):
        tifffile.imwrite(images / f"f{i}.tif", np.roll(field, 97 * i, axis=2))
    (images / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    outputs = {}
    for name, extra in (("w1", ["--workers", "1"]), ("w4", ["--workers", "4", "--batch-size", "2"]),
                        ("tiles", ["--tile-size", "256", "--no-overlays"]), ("int8", ["--precision", "int8"]),
                        ("s1", ["--streams", "1"])):
        result = _run("predict", images, "--out", tmp_path / name, *extra)
        assert result.exit_code == 1, result.output
        assert "broken.tif" in (tmp_path / name / "errors.csv").read_text()
        with open(tmp_path / name / "predictions.csv") as fh:
            outputs[name] = list(csv.reader(fh))
        assert [row[0] for row in outputs[name][1:]] == [str(images / f"f{i}.tif") for i in range(5)]
    assert outputs["w1"] == outputs["w4"]
    label, first = outputs["w1"][0].index("label"), outputs["w1"][0].index("max_probability")
    assert [r[label] for r in outputs["s1"]] == [r[label] for r in outputs["w1"]]  # one session on both cores
    np.testing.assert_allclose(np.array([r[first:] for r in outputs["s1"][1:]], float),
                               np.array([r[first:] for r in outputs["w1"][1:]], float), atol=1e-5)
    assert [r[label] for r in outputs["tiles"]] == [r[label] for r in outputs["w1"]]
    assert [r[label] for r in outputs["int8"]] == [r[label] for r in outputs["w1"]]
    assert not (tmp_path / "tiles" / "overlays").exists() and len(list((tmp_path / "tiles" / "masks").iterdir())) == 5
    assert len(list((tmp_path / "w4" / "overlays").iterdir())) == 5


def test_png_encoder_round_trips():
    import io

    from PIL import Image

    from milcnn.outputs.png import encode_png

    rng = np.random.default_rng(0)
    for shape in ((1, 1, 3), (7, 13, 3), (64, 90, 3)):
        rgb = rng.integers(0, 256, shape, dtype=np.uint8)
        with Image.open(io.BytesIO(encode_png(rgb))) as im:
            assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb)
    with pytest.raises(ValueError, match="expects"):
        encode_png(np.zeros((4, 4), np.uint8))


def test_providers_and_session_options_pass_through_with_a_cpu_fallback(clf, field, caplog):
    """Any onnxruntime execution provider can be asked for; one this onnxruntime lacks is dropped with a
    logged notice and the model runs on the CPU with the same result; session options are the caller's."""
    import onnxruntime

    ref = clf.predict(field).probabilities
    other = Classifier.from_hub("yeast-loc", providers=[("OpenVINOExecutionProvider", {"device_type": "CPU"})])
    assert other.model.providers == ["CPUExecutionProvider"]
    assert "OpenVINOExecutionProvider not in this onnxruntime" in caplog.text and "running without" in caplog.text
    assert other.predict(field).probabilities == pytest.approx(ref, abs=1e-6)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    mine = Classifier.from_hub("yeast-loc", providers=["CPUExecutionProvider"], session_options=options)
    assert mine.model.session.get_session_options().intra_op_num_threads == 1
    assert mine.model.with_threads(2) is mine.model  # the caller's options are kept
    assert mine.predict(field).probabilities == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("flags, says", [
    ("fpu avx2 avx512f avx512_vnni avx512_bf16", "AVX2, AVX-512, AVX-512 VNNI, AVX-512 BF16; no AMX)"),
    ("fpu avx2 fma", "AVX2; no AVX-512, VNNI, BF16 or AMX)"),
    ("avx2 avx_vnni amx_tile avx512f avx512_bf16 avx512_vnni", "AVX2, AVX-512, AVX-512 VNNI, AVX-VNNI, AVX-512 BF16, AMX)")])
def test_benchmarks_name_the_cpu_with_its_int8_and_bf16_instructions(flags, says):
    from benchmarks.machine import cpu_description, has_bf16, has_vnni

    text = cpu_description(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert text.startswith("AMD EPYC (") and text.endswith(says)
    assert has_bf16(f"flags\t: {flags}\n") == ("avx512_bf16" in flags)
    assert has_vnni(f"flags\t: {flags}\n") == ("vnni" in flags)


@pytest.mark.slow
def test_a_missing_gpu_is_said_once_by_milzoo(tmp_path):
    """--device cuda on a machine without one: one line, although milzoo runs two inference sessions."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "milcnn.cli", "predict", str(ZOO / "yeast-loc" / "sample_input.tif"),
                           "--device", "cuda", "--streams", "2", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("running on the CPU") == 1, proc.stderr
