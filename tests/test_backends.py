"""The OpenVINO backend, backend choice, the bf16 variant and int8 in QDQ form."""

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from milcnn import Classifier
from milcnn.runtime import openvino as backends
from milcnn.runtime.openvino import OpenVinoModel, bf16_supported
from milcnn.runtime.select import choose_backend
from milcnn.errors import ModelConfigError

ZOO = Path(__file__).resolve().parents[1] / "zoo"
SAMPLE = ZOO / "yeast-loc" / "sample_input.tif"


def test_auto_picks_the_fastest_installed_backend_per_precision(monkeypatch):
    assert choose_backend("auto", "fp32") == "onnxruntime"
    assert choose_backend("auto", "int8") == "openvino" and choose_backend("auto", "bf16") == "openvino"
    assert choose_backend("auto", "int8", on_gpu=True) == "onnxruntime"
    monkeypatch.setattr("milcnn.runtime.select.openvino_available", lambda: False)
    assert choose_backend("auto", "int8") == "onnxruntime"
    with pytest.raises(ImportError, match=r"bf16 runs on OpenVINO, which is not installed: pip install 'milcnn-sdk\[openvino\]'"):
        choose_backend("auto", "bf16")


@pytest.mark.parametrize("backend, precision, says", [
    ("onnxruntime", "bf16", "precision bf16 runs on the OpenVINO backend only"),
    ("openvino", "fp16", "the fp16 variant is for GPUs"),
    ("tensorflow", "fp32", "backend 'tensorflow' is not one of auto, onnxruntime, openvino")])
def test_backend_precision_mismatches_are_one_clear_line(backend, precision, says):
    with pytest.raises(ValueError, match=says):
        choose_backend(backend, precision)


@pytest.mark.needs_openvino
def test_openvino_fp32_equals_onnxruntime_fp32(clf):
    image = tifffile.imread(SAMPLE)
    ov = Classifier.from_hub("yeast-loc", device="cpu", precision="fp32", backend="openvino")
    assert ov.model.backend == "openvino" and ov.precision == "fp32"
    a, b = clf.predict(image), ov.predict(image)
    assert a.label == b.label and np.abs(a.maps - b.maps).max() < 1e-4
    assert (a.mask == b.mask).mean() > 0.999


@pytest.mark.needs_openvino
def test_bf16_on_a_cpu_without_bf16_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(backends, "bf16_supported", lambda: False)
    with pytest.raises(ValueError, match=r"^this CPU has no bf16 instructions \(AVX512-BF16 or AMX\); use fp32 or int8$"):
        Classifier.from_hub("yeast-loc", device="cpu", precision="bf16")


@pytest.mark.needs_openvino
def test_bf16_variant_keeps_labels_and_masks(clf):
    if not bf16_supported():
        pytest.skip("this CPU has no bf16 instructions")
    bf16 = Classifier.from_hub("yeast-loc", device="cpu", precision="bf16")
    assert bf16.model.backend == "openvino" and bf16.model.path.name == "model.onnx"
    assert bf16.info.variants["bf16"].metrics["mask_iou_vs_fp32"] >= 0.95  # recorded by training.quantize
    image = tifffile.imread(SAMPLE)
    a, b = clf.predict(image), bf16.predict(image)
    assert a.label == b.label and max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < 0.02
    assert (a.mask == b.mask).mean() > 0.98


@pytest.mark.needs_openvino
def test_openvino_streams_run_side_by_side_with_the_same_results():
    model = OpenVinoModel(ZOO / "yeast-loc" / "model.int8.onnx", precision="int8", threads=2)
    two = model.with_threads(1)
    assert two.streams == 2 and model.with_threads(1) is two and model.with_threads(2) is model
    rng = np.random.default_rng(0)
    batches = [rng.random((1, 2, 96 + 32 * i, 128), dtype=np.float32) for i in range(4)]
    expected = [two.run(x)[1] for x in batches]
    got = {}

    def worker(i):
        got[i] = two.run(batches[i])[1]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(got[i], expected[i])
    assert len(two._compiled) == backends.COMPILED_SHAPES  # one compiled model per shape, the oldest dropped


@pytest.mark.needs_openvino
@pytest.mark.parametrize("precision, dtype", [("int8", np.uint16), ("fp32", np.uint8), ("int8", np.int16)])
def test_openvino_normalising_in_its_graph_gives_what_numpy_normalising_gives(precision, dtype):
    from milcnn.process.preprocess import normalize

    clf = Classifier.from_hub("yeast-loc", device="cpu", precision=precision, backend="openvino")
    clf.results.scale_checks_left = 0  # the scale notice would make x to measure it
    sample = tifffile.imread(SAMPLE)
    image = (sample >> 4).astype(dtype) if dtype == np.uint8 else sample.astype(dtype) - (1000 if dtype == np.int16 else 0)
    item = clf.prepare_input(image)
    assert clf.model.normalizes_in_graph and item.normalized is None and item.ranges is not None
    graph = clf.model.run_normalizing(image[None], item.ranges[0][None], item.ranges[1][None])
    numpy = clf.model.run(normalize(image)[None])
    for a, b in zip(graph, numpy):
        np.testing.assert_array_equal(a, b)  # the same float32 operations: identical, not just close
    pred = clf.predict_prepared([item])[0]
    assert item.normalized is None  # the network took the integer pixels; x was never made
    np.testing.assert_array_equal(item.x, normalize(image))  # made on first use, as normalize makes it
    again = clf.predict_prepared([item])[0]  # now through x
    assert pred.label == again.label and np.array_equal(pred.mask, again.mask)
    np.testing.assert_array_equal(pred.maps, again.maps)


@pytest.mark.needs_openvino
def test_a_batch_of_mixed_pixel_types_runs_each_image_as_alone():
    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="int8", backend="openvino")
    clf.results.scale_checks_left = 0
    sample = tifffile.imread(SAMPLE)
    images = [sample, (sample >> 8).astype(np.int8)]  # one batch's stack would be int32: numpy normalises
    together = clf.predict_prepared([clf.prepare_input(image) for image in images])
    for image, pred in zip(images, together):
        alone = clf.predict(image)
        assert pred.label == alone.label and np.array_equal(pred.mask, alone.mask)


@pytest.mark.needs_openvino
def test_images_openvino_cannot_take_as_they_are_are_normalised_first():
    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="int8", backend="openvino")
    clf.results.scale_checks_left = 0
    sample = tifffile.imread(SAMPLE)
    for image in (sample.astype(np.float32), sample.astype(np.int32), sample[:, :40, :40]):  # 40 px: padded
        item = clf.prepare_input(image)
        assert item.normalized is not None  # made by numpy, and the network takes it
    if bf16_supported():  # at bf16 OpenVINO would normalise in bf16: numpy normalises
        bf16 = Classifier.from_hub("yeast-loc", device="cpu", precision="bf16")
        assert not bf16.model.normalizes_in_graph and bf16.prepare_input(sample).normalized is not None


@pytest.mark.needs_openvino
def test_openvino_that_cannot_load_a_file_falls_back_or_says_so(monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("Conversion is failed for: QLinearConv-18")

    monkeypatch.setattr("milcnn.runtime.select.OpenVinoModel", refuse)
    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="int8")
    assert clf.model.backend == "onnxruntime" and "OpenVINO cannot run model.int8.onnx" in caplog.text
    with pytest.raises(ModelConfigError, match="model.int8.onnx: OpenVINO cannot run it: Conversion is failed"):
        Classifier.from_hub("yeast-loc", device="cpu", precision="int8", backend="openvino")


@pytest.mark.needs_openvino
@pytest.mark.slow
def test_qlinearconv_rewritten_as_qdq_gives_the_same_outputs_and_loads_in_openvino(tmp_path):
    """quantize_static's QLinearConv form, rewritten as QDQ: onnxruntime's outputs are bit for bit the same,
    and OpenVINO, which refuses the QLinearConv file, runs the QDQ one."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from training.quantize import qoperator_to_qdq

    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": rng.random((1, 2, 64, 64), dtype=np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.items, None)

    qop, qdq = tmp_path / "qop.onnx", tmp_path / "qdq.onnx"
    quantize_static(str(ZOO / "yeast-loc" / "model.onnx"), str(qop), Reader(), quant_format=QuantFormat.QOperator,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "Relu"])
    qoperator_to_qdq(qop, qdq)
    x = rng.random((1, 2, 128, 96), dtype=np.float32)
    a = ort.InferenceSession(str(qop), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    b = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(RuntimeError, match="QLinearConv"):
        OpenVinoModel(qop, precision="int8")
    probabilities, maps = OpenVinoModel(qdq, precision="int8").run(x)
    assert np.abs(maps - a[1]).max() < 0.1 and np.abs(probabilities - a[0]).max() < 0.02
