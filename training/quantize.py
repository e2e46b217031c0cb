"""Add an int8, bf16 or fp16 variant (and the files tiled inference needs) to an exported model folder.

Usage::

    python -m training.quantize zoo/yeast-loc --calibration data/yeast-train/manifest.csv \\
        --eval-data data/yeast-test/manifest.csv
    python -m training.quantize zoo/yeast-loc --rewrite-qdq --eval-data data/yeast-test/manifest.csv
    python -m training.quantize zoo/yeast-loc --precision bf16 --eval-data data/yeast-test/manifest.csv
    python -m training.quantize zoo/yeast-loc --precision fp16 --eval-data data/yeast-test/manifest.csv

Static post-training quantisation with onnxruntime: convolution weights int8 per output channel,
activations uint8 per tensor (the u8 x s8 form that AVX512-VNNI runs fastest), calibrated
(``--method``, default percentile: 99.999th, robust to bright outliers) on ``--n-calibration``
training images (never test images), written as QDQ (``DequantizeLinear -> Conv ->
QuantizeLinear``), the int8 form that onnxruntime and OpenVINO both load. ``--rewrite-qdq`` turns
an older ``QLinearConv`` int8 file into QDQ with the same scales.

Every variant is measured against fp32 through the SDK on ``--eval-data``, on each installed
backend that runs it (int8: OpenVINO and onnxruntime; bf16: OpenVINO; fp16: onnxruntime's CPU
float16 kernels). It is added to the folder (its file, ``config.json`` ``variants.<precision>``
with the measurements per backend, the card) only if on each backend its image accuracy is
within ``--max-drop`` points of fp32 and its masks agree with fp32's at IoU >= 0.95
(``mask_iou``). Otherwise nothing is written and the command fails with the figures.

``--precision bf16`` adds no file: OpenVINO runs ``model.onnx`` in bf16 on CPUs with bf16
instructions (``milcnn.runtime.openvino``). ``--precision fp16`` converts weights and activations to
float16 (inputs and outputs stay float32), the form GPUs run fastest (CUDA, TensorRT);
``milzoo predict --device cuda`` then uses it (``--precision auto``).

It also adds what older exports lack: ``pooling.onnx`` and the receptive field in the config.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from milcnn import constants
from milcnn.model.config import ModelInfo, Variant, write_config
from milcnn.io.images import write_atomic
from .data.manifest import load_image, read_manifest

__all__ = ["quantize_folder", "half_folder", "bf16_folder", "requantize_as_qdq", "qoperator_to_qdq",
           "evaluate_classifier", "mask_iou", "QuantizationError"]


class QuantizationError(RuntimeError):
    """The int8 or fp16 model loses more accuracy than allowed."""


def evaluate_classifier(clf, manifest, *, threshold: float = constants.DEFAULT_THRESHOLD,
                        keep_masks: bool = False) -> dict:
    """Image accuracy and mean segmentation IoU of an SDK ``Classifier`` on a manifest's images
    (with ``keep_masks``, also each image's mask under ``"masks"``).

    IoU is pooled per class over the images of that class, as in ``training.evaluate``. The images are
    taken to be at the model's training scale (a simulated test set), so a model's default input scale
    (``input_cell_diameter``) is not applied to them.
    """
    from .scoring import score_manifest, sdk_predictor

    masks: list = []
    predict = sdk_predictor(clf, threshold=threshold)

    def keeping(image):
        probabilities, mask = predict(image)
        masks.append(mask)
        return probabilities, mask

    metrics, _ = score_manifest(keeping if keep_masks else predict, manifest, channels=clf.channels,
                                classes=clf.classes, multi_label=clf.info.multi_label, threshold=threshold,
                                baseline=False)
    return {"n_images": metrics["n_images"], "accuracy": metrics["accuracy"],
            "mean_iou": metrics.get("segmentation", {}).get("mean_iou", float("nan")),
            **({"masks": masks} if keep_masks else {})}


def mask_iou(reference: list, other: list) -> float:
    """Agreement of two models' masks over a test set: pixels both label with the same class over pixels
    either labels, pooled over all images (1.0 when neither labels any pixel)."""
    same = either = 0
    for a, b in zip(reference, other, strict=True):
        same += int(np.count_nonzero((a == b) & (a > 0)))
        either += int(np.count_nonzero((a > 0) | (b > 0)))
    return same / either if either else 1.0


def ensure_derived_files(folder: Path) -> ModelInfo:
    """Write ``pooling.onnx`` and the receptive field into a folder exported before they existed."""
    from .export import export_pooling
    from .model import ModelConfig, receptive_field

    info = ModelInfo.from_file(folder / constants.CONFIG_FILE)
    if info.pooling["name"] != "attention" and not (folder / constants.POOLING_FILE).is_file():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            export_pooling(folder / constants.MODEL_FILE, Path(tmp) / constants.POOLING_FILE)
            (Path(tmp) / constants.POOLING_FILE).replace(folder / constants.POOLING_FILE)
    arch = info.architecture
    if "receptive_field" not in arch:
        model_cfg = ModelConfig(channels=info.channels, classes=info.classes, width=arch["width"],
                                output_stride=info.output_stride, context=arch["context"])
        info = replace(info, architecture={**arch, "receptive_field": receptive_field(model_cfg)})
    return info.with_files(*(folder / n for n in (constants.MODEL_FILE, constants.POOLING_FILE)
                             if (folder / n).is_file()))


METHODS = ("percentile", "minmax", "entropy")


def qoperator_to_qdq(src, dst) -> None:
    """Rewrite every ``QLinearConv`` of ``src`` as ``DequantizeLinear -> Conv -> QuantizeLinear`` with the
    same scales and zero points (the int32 bias as a DequantizeLinear of scale ``x_scale * w_scale``),
    into one self-contained ``dst``. onnxruntime fuses the pattern back into its int8 convolution (the
    same outputs, bit for bit); OpenVINO, which does not load ``QLinearConv`` with per-channel scales,
    reads QDQ."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes, extra = [], []
    for node in graph.node:
        if node.op_type != "QLinearConv":
            nodes.append(node)
            continue
        x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = node.input[:8]
        bias = node.input[8] if len(node.input) > 8 and node.input[8] else None
        p = node.output[0] + "_qdq"
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node("DequantizeLinear", [x, x_scale, x_zero], [p + "_x"]))
        nodes.append(helper.make_node("DequantizeLinear", [w, w_scale, w_zero], [p + "_w"], axis=0))
        conv_inputs = [p + "_x", p + "_w"]
        if bias:
            scale = (numpy_helper.to_array(initializers[x_scale]).astype(np.float32)
                     * numpy_helper.to_array(initializers[w_scale]).astype(np.float32)).reshape(-1)
            count = numpy_helper.to_array(initializers[bias]).shape
            extra += [numpy_helper.from_array(scale, p + "_bias_scale"),
                      numpy_helper.from_array(np.zeros(count, np.int32), p + "_bias_zero")]
            nodes.append(helper.make_node("DequantizeLinear", [bias, p + "_bias_scale", p + "_bias_zero"],
                                          [p + "_b"], axis=0))
            conv_inputs.append(p + "_b")
        nodes.append(helper.make_node("Conv", conv_inputs, [p + "_y"], **attributes))
        nodes.append(helper.make_node("QuantizeLinear", [p + "_y", y_scale, y_zero], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(extra)
    standard = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]  # the quantiser lists many
    del model.opset_import[:]
    model.opset_import.extend(standard)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


INT8_METHOD = ("onnxruntime static quantisation written as QDQ (DequantizeLinear -> Conv -> QuantizeLinear, Relu "
               "folded into each layer's output range), weights int8 per channel, activations uint8, {method} "
               "calibration")


def requantize_as_qdq(folder, *, eval_data, max_drop: float = 1.0) -> dict:
    """Rewrite a folder's released ``QLinearConv`` int8 model as QDQ (same scales: onnxruntime's outputs do
    not change) and measure it again on every backend, as ``quantize_folder`` does."""
    folder = Path(folder)
    config = write_config(folder, ensure_derived_files(folder))
    old = config.get("variants", {}).get("int8")
    if old is None:
        raise ValueError(f"{folder} has no int8 variant to rewrite")
    from milcnn import Classifier

    fp32_clf = Classifier.from_dir(folder, device="cpu", precision="fp32", backend="onnxruntime")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = Path(tmp) / constants.INT8_MODEL_FILE
        qoperator_to_qdq(folder / old["file"], out)
        method = old.get("method", "").split(", ")[-1].replace(" calibration", "") or "percentile"
        return _add_variant(folder, config, fp32_clf, out, "int8", eval_data=eval_data, max_drop=max_drop,
                            method=INT8_METHOD.format(method=method), calibration=old.get("calibration"),
                            seconds=old.get("quantize_seconds"))


def bf16_folder(folder, *, eval_data, max_drop: float = 1.0, min_mask_iou: float = 0.95) -> dict:
    """Measure ``model.onnx`` run in bf16 by OpenVINO against fp32 and add the ``bf16`` variant (no new file)
    if it keeps accuracy and masks. Needs OpenVINO and a CPU with bf16 instructions."""
    from milcnn import Classifier
    from milcnn.runtime.openvino import bf16_supported

    if not bf16_supported():
        raise ValueError("bf16 needs OpenVINO (pip install 'milcnn-sdk[openvino]') and a CPU with bf16 instructions")
    folder = Path(folder)
    config = write_config(folder, ensure_derived_files(folder))
    fp32_clf = Classifier.from_dir(folder, device="cpu", precision="fp32", backend="onnxruntime")
    return _add_variant(folder, config, fp32_clf, folder / constants.MODEL_FILE, "bf16", eval_data=eval_data,
                        max_drop=max_drop, min_mask_iou=min_mask_iou,
                        method="model.onnx run by OpenVINO with bf16 inference precision (weights and activations "
                               "bf16, accumulation in float32)")


def quantize_folder(folder, *, calibration, eval_data, n_calibration: int = 64, max_drop: float = 1.0,
                    seed: int = 0, method: str = "percentile") -> dict:
    """Quantise ``folder/model.onnx`` to int8, measure it, and add it if it keeps accuracy.

    Returns:
        the ``variants.int8`` record written to config.json.

    Raises:
        QuantizationError: accuracy drops by more than ``max_drop`` points (nothing written).
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from milcnn import Classifier
    from milcnn.process.preprocess import normalize

    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    calibrate_method = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
                        "entropy": CalibrationMethod.Entropy}[method]
    folder = Path(folder)
    config = write_config(folder, ensure_derived_files(folder))
    samples, _, _ = read_manifest(calibration, channels=config["channels"], classes=config["classes"])
    rng = np.random.default_rng(seed)
    chosen = [samples[i] for i in sorted(rng.choice(len(samples), min(n_calibration, len(samples)), replace=False))]

    fp32_clf = Classifier.from_dir(folder, device="cpu")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(chosen)

        def get_next(self):
            sample = next(self.items, None)
            if sample is None:
                return None
            return {"image": normalize(load_image(sample, len(config["channels"])), fp32_clf.info.normalization)[None]}

    t0 = time.time()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        pre, qop, out = Path(tmp) / "pre.onnx", Path(tmp) / "qop.onnx", Path(tmp) / constants.INT8_MODEL_FILE
        quant_pre_process(str(folder / constants.MODEL_FILE), str(pre))
        # Relu is listed so the quantiser folds it into the preceding QLinearConv's output range; with
        # Conv alone every layer went back to float for its Relu (a Dequantize/Quantize pair per layer,
        # a third of the int8 network's time). The result is then written as QDQ, which every runtime loads.
        quantize_static(str(pre), str(qop), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "Relu"], calibrate_method=calibrate_method)
        qoperator_to_qdq(qop, out)
        seconds = time.time() - t0
        method_text = INT8_METHOD.format(method=method)
        calibration_record = {"manifest": str(calibration), "n_images": len(chosen), "seed": seed}
        return _add_variant(folder, config, fp32_clf, out, "int8", eval_data=eval_data, max_drop=max_drop,
                            method=method_text, calibration=calibration_record, seconds=seconds)


def half_folder(folder, *, eval_data, max_drop: float = 1.0) -> dict:
    """Convert ``folder/model.onnx`` to float16, measure it, and add it if it keeps accuracy.

    Weights and activations become float16; the image input and both outputs stay float32, so
    the SDK feeds it exactly as the fp32 model. Accuracy is measured with onnxruntime's CPU
    float16 kernels (a GPU accumulates in its own order; the differences are of the same size).

    Returns:
        the ``variants.fp16`` record written to config.json.

    Raises:
        QuantizationError: accuracy drops by more than ``max_drop`` points (nothing written).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from milcnn import Classifier

    folder = Path(folder)
    config = write_config(folder, ensure_derived_files(folder))
    fp32_clf = Classifier.from_dir(folder, device="cpu")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = Path(tmp) / constants.FP16_MODEL_FILE
        half = convert_float_to_float16(onnx.load(str(folder / constants.MODEL_FILE)), keep_io_types=True)
        onnx.save(half, str(out))  # one self-contained file, about half the size of a zoo model.onnx
        return _add_variant(folder, config, fp32_clf, out, "fp16", eval_data=eval_data, max_drop=max_drop,
                            method="weights and activations float16 (onnxruntime.transformers.float16), image "
                                   "input and outputs float32; accuracy measured with onnxruntime's CPU kernels")


#: the backends each variant is measured on, the one ``backend="auto"`` prefers on a CPU first
VARIANT_BACKENDS = {"int8": ("openvino", "onnxruntime"), "bf16": ("openvino",), "fp16": ("onnxruntime",)}


def _add_variant(folder: Path, config: dict, fp32_clf, candidate: Path, precision: str, *, eval_data,
                 max_drop: float, method: str, calibration: dict | None = None, seconds: float | None = None,
                 min_mask_iou: float = 0.95) -> dict:
    """Measure ``candidate`` against fp32 through the SDK on ``eval_data``, on every installed backend that
    runs it; if on each it keeps accuracy within ``max_drop`` points and its masks agree with fp32's
    (``mask_iou`` >= ``min_mask_iou``), move it into ``folder`` and record it in config.json and the card."""
    from milcnn import Classifier
    from milcnn.runtime.openvino import OpenVinoModel, openvino_available
    from milcnn.runtime.onnx import OnnxModel
    from .model_card import render_card

    fp32 = evaluate_classifier(fp32_clf, eval_data, keep_masks=True)
    by_backend = {}
    for backend in VARIANT_BACKENDS[precision]:
        if backend == "openvino" and not openvino_available():
            print(f"note: OpenVINO is not installed; the {precision} variant is measured on onnxruntime only",
                  file=sys.stderr)
            continue
        model = (OpenVinoModel(candidate, precision=precision) if backend == "openvino"
                 else OnnxModel(candidate, device="cpu"))
        got = evaluate_classifier(Classifier(folder, fp32_clf.info, model, precision=precision), eval_data,
                                  keep_masks=True)
        by_backend[backend] = {"accuracy": round(got["accuracy"], 4), "mean_iou": round(got["mean_iou"], 4),
                               "accuracy_drop_points": round(100 * (fp32["accuracy"] - got["accuracy"]), 2),
                               "mask_iou_vs_fp32": round(mask_iou(fp32["masks"], got.pop("masks")), 4)}
    if not by_backend:
        raise QuantizationError(f"no installed backend runs the {precision} variant")
    first = next(iter(by_backend.values()))
    variant = Variant(
        file=candidate.name, method=method,
        metrics={"test_set": str(eval_data), "n_images": fp32["n_images"], "backend": next(iter(by_backend)),
                 "accuracy": first["accuracy"], "mean_iou": first["mean_iou"],
                 "fp32_accuracy_sdk": round(fp32["accuracy"], 4), "fp32_mean_iou_sdk": round(fp32["mean_iou"], 4),
                 "accuracy_drop_points": first["accuracy_drop_points"],
                 "mask_iou_vs_fp32": first["mask_iou_vs_fp32"], "by_backend": by_backend},
        details={**({"calibration": calibration} if calibration is not None else {}),
                 **({"quantize_seconds": round(seconds, 1)} if seconds is not None else {})})
    for backend, m in by_backend.items():
        if m["accuracy_drop_points"] > max_drop or m["mask_iou_vs_fp32"] < min_mask_iou:
            raise QuantizationError(f"{precision} on {backend}: accuracy {m['accuracy']:.4f} is "
                                    f"{m['accuracy_drop_points']:.2f} points below fp32 {fp32['accuracy']:.4f} "
                                    f"(allowed {max_drop}), masks agree with fp32's at IoU {m['mask_iou_vs_fp32']:.4f} "
                                    f"(needed {min_mask_iou}); the {precision} variant was not added")
    moved = None
    if candidate.parent != folder:
        moved = candidate.replace(folder / candidate.name)
    config = write_config(folder, ModelInfo.from_dict(config).with_variant(precision, variant, moved))
    with write_atomic(folder / constants.CARD_FILE, "w") as fh:
        fh.write(render_card(config))
    return variant.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an exported model folder")
    parser.add_argument("--precision", choices=("int8", "bf16", "fp16"), default="int8", help="the variant to add")
    parser.add_argument("--rewrite-qdq", action="store_true",
                        help="int8: rewrite the folder's QLinearConv int8 model as QDQ (same scales) and measure it")
    parser.add_argument("--calibration", help="manifest of calibration images (training data; int8 only)")
    parser.add_argument("--eval-data", required=True, help="manifest of test images to measure both precisions on")
    parser.add_argument("--n-calibration", type=int, default=64)
    parser.add_argument("--max-drop", type=float, default=1.0, help="largest accuracy loss allowed, in points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=METHODS, default="percentile", help="activation range calibration")
    args = parser.parse_args(argv)
    if args.precision == "int8" and not args.calibration and not args.rewrite_qdq:
        parser.error("--calibration is required for --precision int8")
    try:
        if args.precision == "fp16":
            record = half_folder(args.folder, eval_data=args.eval_data, max_drop=args.max_drop)
        elif args.precision == "bf16":
            record = bf16_folder(args.folder, eval_data=args.eval_data, max_drop=args.max_drop)
        elif args.rewrite_qdq:
            record = requantize_as_qdq(args.folder, eval_data=args.eval_data, max_drop=args.max_drop)
        else:
            record = quantize_folder(args.folder, calibration=args.calibration, eval_data=args.eval_data,
                                     n_calibration=args.n_calibration, max_drop=args.max_drop, seed=args.seed,
                                     method=args.method)
    except (QuantizationError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(record["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
