"""Add an int8 or fp16 variant (and the files tiled inference needs) to an exported model folder.

Usage::

    python -m training.quantize zoo/yeast-loc --calibration data/yeast-train/manifest.csv \\
        --eval-data data/yeast-test/manifest.csv
    python -m training.quantize zoo/yeast-loc --precision fp16 --eval-data data/yeast-test/manifest.csv

Static post-training quantisation with onnxruntime (QLinearConv operators): convolution weights int8 per output
channel, activations uint8 per tensor (the u8 x s8 form that AVX512-VNNI runs fastest),
calibrated (``--method``, default percentile: 99.999th, robust to bright outliers) on
``--n-calibration`` training images (never test images). The int8 and fp32
models are then both run through the SDK on ``--eval-data``; the variant is added to the
folder (``model.int8.onnx``, ``config.json`` ``variants.int8`` with both measurements, the
card) only if its image accuracy is within ``--max-drop`` points of fp32. Otherwise nothing
is written and the command fails with the figures.

``--precision fp16`` converts weights and activations to float16 (inputs and outputs stay
float32), the form GPUs run fastest (CUDA, TensorRT); it is measured the same way, with
onnxruntime's CPU float16 kernels, and added as ``model.fp16.onnx`` under the same rule.
``milzoo predict --device cuda`` then uses it (``--precision auto``).

It also adds what older exports lack: ``pooling.onnx`` and the receptive field in the config.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from milcnn import constants
from milcnn.config import read_config, write_config
from milcnn.io import write_atomic
from training.data.manifest import load_image, read_manifest

__all__ = ["quantize_folder", "half_folder", "evaluate_classifier", "QuantizationError"]


class QuantizationError(RuntimeError):
    """The int8 or fp16 model loses more accuracy than allowed."""


def evaluate_classifier(clf, manifest, *, threshold: float = constants.DEFAULT_THRESHOLD) -> dict:
    """Image accuracy and mean segmentation IoU of an SDK ``Classifier`` on a manifest's images.

    IoU is pooled per class over the images of that class, as in ``training.evaluate``. The images are
    taken to be at the model's training scale (a simulated test set), so a model's default input scale
    (``input_cell_diameter``) is not applied to them.
    """
    from training.scoring import score_manifest, sdk_predictor

    metrics, _ = score_manifest(sdk_predictor(clf, threshold=threshold), manifest, channels=clf.channels,
                                classes=clf.classes, multi_label=clf.info.multi_label, threshold=threshold,
                                baseline=False)
    return {"n_images": metrics["n_images"], "accuracy": metrics["accuracy"],
            "mean_iou": metrics.get("segmentation", {}).get("mean_iou", float("nan"))}


def ensure_derived_files(folder: Path) -> dict:
    """Write ``pooling.onnx`` and the receptive field into a folder exported before they existed."""
    from training.export import export_pooling, file_records
    from training.model import ModelConfig, receptive_field

    config = read_config(folder)
    if config["pooling"]["name"] != "attention" and not (folder / constants.POOLING_FILE).is_file():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            export_pooling(folder / constants.MODEL_FILE, Path(tmp) / constants.POOLING_FILE)
            (Path(tmp) / constants.POOLING_FILE).replace(folder / constants.POOLING_FILE)
    arch = config["architecture"]
    if "receptive_field" not in arch:
        model_cfg = ModelConfig(channels=tuple(config["channels"]), classes=tuple(config["classes"]),
                                width=arch["width"], output_stride=config["output_stride"], context=arch["context"])
        arch["receptive_field"] = receptive_field(model_cfg)
    config.setdefault("files", {}).update(file_records(*(folder / n for n in (constants.MODEL_FILE,
                                                                               constants.POOLING_FILE)
                                                          if (folder / n).is_file())))
    return config


METHODS = ("percentile", "minmax", "entropy")


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
    from milcnn.preprocess import normalize

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
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / constants.INT8_MODEL_FILE
        quant_pre_process(str(folder / constants.MODEL_FILE), str(pre))
        # QOperator (QLinearConv nodes) runs about 10 % faster than QDQ on onnxruntime's CPU provider here.
        # Relu is listed so the quantiser folds it into the preceding QLinearConv's output range; with
        # Conv alone every layer went back to float for its Relu (a Dequantize/Quantize pair per layer,
        # a third of the int8 network's time).
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "Relu"], calibrate_method=calibrate_method)
        seconds = time.time() - t0
        method_text = (f"onnxruntime static quantisation, QLinearConv with Relu folded in, weights int8 per "
                       f"channel, activations uint8, {method} calibration")
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


def _add_variant(folder: Path, config: dict, fp32_clf, candidate: Path, precision: str, *, eval_data,
                 max_drop: float, method: str, calibration: dict | None = None, seconds: float | None = None) -> dict:
    """Measure ``candidate`` against fp32 through the SDK on ``eval_data``; if it keeps accuracy within
    ``max_drop`` points, move it into ``folder`` and record it in config.json and the card."""
    from milcnn import Classifier
    from milcnn.session import OnnxModel
    from training.export import file_records
    from training.model_card import render_card

    fp32 = evaluate_classifier(fp32_clf, eval_data)
    variant = evaluate_classifier(Classifier(folder, fp32_clf.info, OnnxModel(candidate, device="cpu"),
                                             precision=precision), eval_data)
    drop = 100 * (fp32["accuracy"] - variant["accuracy"])
    record = {
        "file": candidate.name,
        "method": method,
        **({"calibration": calibration} if calibration is not None else {}),
        "metrics": {"test_set": str(eval_data), "n_images": variant["n_images"],
                    "accuracy": round(variant["accuracy"], 4), "mean_iou": round(variant["mean_iou"], 4),
                    "fp32_accuracy_sdk": round(fp32["accuracy"], 4), "fp32_mean_iou_sdk": round(fp32["mean_iou"], 4),
                    "accuracy_drop_points": round(drop, 2)},
        **({"quantize_seconds": round(seconds, 1)} if seconds is not None else {}),
    }
    if drop > max_drop:
        raise QuantizationError(f"{precision} accuracy {variant['accuracy']:.4f} is {drop:.2f} points below fp32 "
                                f"{fp32['accuracy']:.4f} (allowed {max_drop}); the {precision} variant was not added")
    candidate.replace(folder / candidate.name)
    config.setdefault("variants", {})[precision] = record
    config["files"].update(file_records(folder / candidate.name))
    config = write_config(folder, config)
    with write_atomic(folder / constants.CARD_FILE, "w") as fh:
        fh.write(render_card(config))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an exported model folder")
    parser.add_argument("--precision", choices=("int8", "fp16"), default="int8", help="the variant to add")
    parser.add_argument("--calibration", help="manifest of calibration images (training data; int8 only)")
    parser.add_argument("--eval-data", required=True, help="manifest of test images to measure both precisions on")
    parser.add_argument("--n-calibration", type=int, default=64)
    parser.add_argument("--max-drop", type=float, default=1.0, help="largest accuracy loss allowed, in points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=METHODS, default="percentile", help="activation range calibration")
    args = parser.parse_args(argv)
    if args.precision == "int8" and not args.calibration:
        parser.error("--calibration is required for --precision int8")
    try:
        if args.precision == "fp16":
            record = half_folder(args.folder, eval_data=args.eval_data, max_drop=args.max_drop)
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
