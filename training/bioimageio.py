"""Write a model folder as a bioimage.io model package (format 0.5), for Fiji/deepImageJ, ilastik and
bioimageio.core.

Usage (the release scripts make one per zoo model)::

    python -m training.bioimageio zoo/yeast-loc --out dist/yeast-loc.bioimageio.zip

The package holds ``model.onnx`` (opset 18) with one input, ``image`` (batch, channel, y, x: the model's
channels by name, at least ``min_size`` px and a multiple of the output stride), preprocessed by
``scale_range`` per image and channel at the model's percentiles (the SDK's normalisation: both
compute ``(x - p_low) / (p_high - p_low)``; the SDK bounds the denominator below by ``eps`` where
bioimage.io adds ``eps`` to it, which differs by less than 1e-6 relative for any real image), and two
outputs: ``probabilities`` (batch, class) and ``class_maps`` (batch, class, y, x at 1/stride of the
input). Its test tensors are the bundled sample and the SDK's outputs on it, so ``bioimageio test``
checks that the package reproduces the SDK. Also: a cover (the SDK's overlay of the sample), the
model card as documentation, authors, the paper to cite, the training data's description.

Large images and image-level pooling: ``probabilities`` pools the whole input. A consumer that tiles a
large image (bioimageio.core's blockwise prediction, deepImageJ's or ilastik's tiling) runs the model
on each tile, so it gets each tile's probabilities, not the image's, and class maps with seams at the
tile borders (no halo is declared: bioimageio.core 0.11 with a halo on these 1/stride outputs changed
the maps of whole images too, by up to 0.9). To keep image-level results: run whole images (in
bioimageio.core ``predict`` without ``blocksize_parameter`` / ``input_block_shape``; in deepImageJ a tile
as large as the image), or take ``class_maps`` of overlapping tiles and pool the stitched maps with the
attached ``pooling.onnx``, as ``milcnn`` does for the images it tiles.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from milcnn import constants
from milcnn.model.config import read_config

__all__ = ["build_package", "PAPER_DOI"]

PAPER_DOI = "10.1093/bioinformatics/btw252"
TEST_SIZE = 256  # px: the largest side of the test tensors
PAPER = ("Kraus, Ba & Frey (2016). Classifying and segmenting microscopy images with deep multiple instance "
         "learning. Bioinformatics 32(12), i52-i59.")


VALIDATION = """
## Validation

Measured by milcnn (the figures above, with the commands that re-create them): image accuracy {accuracy} on
{n} simulated test images, and the real-image figures in the *Real images* section. This package's test
tensors are the milcnn SDK's outputs on the bundled sample; `bioimageio test` reproduces them, and
milcnn's test suite checks that the package's outputs equal the SDK's (probabilities within 1e-4).
Tiling consumers: see the package's description of image-level pooling in `training/bioimageio.py`
(no halo is declared: run whole images, or pool the class maps with the attached `pooling.onnx`).
"""


def _describe(folder: Path, work: Path, config: dict):
    """The ``ModelDescr`` of ``folder``, its files written into ``work``."""
    import bioimageio.spec.model.v0_5 as v
    import tifffile
    from bioimageio.spec.generic.v0_3 import Author, CiteEntry, Doi

    from milcnn import Classifier
    from milcnn.outputs.overlay import overlay_title, save_overlay

    clf = Classifier.from_dir(folder, device="cpu", precision="fp32", backend="onnxruntime")
    norm, stride = config["normalization"], config["output_stride"]
    whole = clf.prepare(tifffile.imread(folder / constants.SAMPLE_INPUT_FILE))[0]
    # the test tensors: the sample's centre, at most TEST_SIZE px and a multiple of the stride (small packages)
    h, w = (min(n, TEST_SIZE) - min(n, TEST_SIZE) % stride for n in whole.shape[1:])
    if min(h, w) < config["min_size"]:
        raise ValueError(f"{folder / constants.SAMPLE_INPUT_FILE}: {h} x {w} px is below this model's "
                         f"{config['min_size']} px")
    y0, x0 = (whole.shape[1] - h) // 2, (whole.shape[2] - w) // 2
    sample = np.ascontiguousarray(whole[:, y0:y0 + h, x0:x0 + w])
    image = sample.astype(np.float32)[None]  # (1, C, H, W), as bioimage.io hands it to preprocessing
    # the package runs images as they come: the SDK at the model's own scale (no default resizing) is its twin
    pred = clf.predict(sample, cell_diameter=clf.info.cell_diameter)
    cover = clf.predict(whole, cell_diameter=clf.info.cell_diameter)
    probabilities = np.array([[pred.probabilities[c] for c in clf.classes]], np.float32)
    maps = pred.maps[None].astype(np.float32)
    np.save(work / "test_input.npy", image)
    np.save(work / "test_probabilities.npy", probabilities)
    np.save(work / "test_class_maps.npy", maps)
    save_overlay(work / "cover.png", whole, cover.mask, clf.classes,
                 title=overlay_title(constants.SAMPLE_INPUT_FILE, cover), durable=False)
    calibration = clf.info.calibration
    for name in (constants.MODEL_FILE, constants.POOLING_FILE):
        if (folder / name).is_file():
            graph = (folder / name).read_bytes()
            (work / name).write_bytes(graph if calibration is None else calibrated_graph(graph, calibration))
    (work / constants.CARD_FILE).write_text((folder / constants.CARD_FILE).read_text() + VALIDATION.format(
        n=config.get("metrics", {}).get("n_images", "the"), accuracy=config.get("metrics", {}).get("accuracy", "?")))

    channel_names = [v.Identifier(c) for c in config["channels"]]
    class_names = [v.Identifier(_identifier(c)) for c in config["classes"]]
    inputs = [v.InputTensorDescr(
        id=v.TensorId("image"),
        description=_input_text(config),
        axes=[v.BatchAxis(), v.ChannelAxis(channel_names=channel_names),
              v.SpaceInputAxis(id=v.AxisId("y"), size=v.ParameterizedSize(min=config["min_size"], step=stride)),
              v.SpaceInputAxis(id=v.AxisId("x"), size=v.ParameterizedSize(min=config["min_size"], step=stride))],
        test_tensor=v.FileDescr(source=work / "test_input.npy"),
        data=v.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[v.ScaleRangeDescr(kwargs=v.ScaleRangeKwargs(
            axes=(v.AxisId("y"), v.AxisId("x")), min_percentile=float(norm["low"]),
            max_percentile=float(norm["high"]), eps=float(norm["eps"])))],
    )]
    outputs = [
        v.OutputTensorDescr(
            id=v.TensorId("probabilities"),
            description="image-level probability of each class (MIL pooling, then the model's calibration)"
            if clf.info.calibration else "image-level probability of each class (MIL pooling)",
            axes=[v.BatchAxis(), v.ChannelAxis(channel_names=class_names)],
            test_tensor=v.FileDescr(source=work / "test_probabilities.npy"),
            data=v.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0))),
        v.OutputTensorDescr(
            id=v.TensorId("class_maps"),
            description=f"per-instance class probabilities at 1/{stride} of the input's size",
            axes=[v.BatchAxis(), v.ChannelAxis(channel_names=class_names),
                  v.SpaceOutputAxis(id=v.AxisId("y"), scale=float(stride),
                                    size=v.SizeReference(tensor_id=v.TensorId("image"), axis_id=v.AxisId("y"))),
                  v.SpaceOutputAxis(id=v.AxisId("x"), scale=float(stride),
                                    size=v.SizeReference(tensor_id=v.TensorId("image"), axis_id=v.AxisId("x")))],
            test_tensor=v.FileDescr(source=work / "test_class_maps.npy"),
            data=v.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0))),
    ]
    data = config.get("training_data", {})
    return v.ModelDescr(
        name=f"milcnn {config['name']}",
        description=(config.get("summary") or f"MIL-CNN {config['name']}")[:1024],
        version=config.get("version"),
        authors=[Author(name="milcnn contributors")],
        cite=[CiteEntry(text=PAPER, doi=Doi(PAPER_DOI))],
        license="MIT",
        tags=["multiple-instance-learning", "classification", "semantic-segmentation", "high-content-screening",
              "fluorescence-light-microscopy", "2d", "onnx", *data.get("tags", [])],
        documentation=v.FileDescr(source=work / constants.CARD_FILE),
        covers=[v.FileDescr(source=work / "cover.png")],
        attachments=[v.FileDescr(source=work / constants.POOLING_FILE)] if (work / constants.POOLING_FILE).is_file()
        else [],
        inputs=inputs,
        outputs=outputs,
        weights=v.WeightsDescr(onnx=v.OnnxWeightsDescr(source=work / constants.MODEL_FILE, opset_version=18)),
        config={"milcnn": {"config": {key: config[key] for key in ("name", "version", "classes", "channels",
                                                                   "normalization", "output_stride", "min_size",
                                                                   "pooling") if key in config},
                           "tiling": "pool class_maps with the attached pooling.onnx when tiling"}},
    )


def calibrated_graph(model: bytes, calibration) -> bytes:
    """An ONNX model whose ``probabilities`` output is calibrated as the SDK calibrates it
    (``milcnn.process.calibration.Calibration.apply``, in float32): the network's pooled output is clipped, turned
    into logits, scaled per class and passed through a softmax (single-label) or a sigmoid (``platt``)."""
    import onnx
    from onnx import helper, numpy_helper

    from milcnn.process.calibration import CLIP

    proto = onnx.load_from_string(model)
    graph = proto.graph
    raw = "milcnn_raw_probabilities"
    for node in graph.node:
        node.output[:] = [raw if o == "probabilities" else o for o in node.output]
    for name, value in (("milcnn_cal_low", CLIP), ("milcnn_cal_high", 1.0 - CLIP), ("milcnn_cal_one", 1.0)):
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    graph.initializer.append(numpy_helper.from_array(np.array(calibration.weight, np.float32), "milcnn_cal_weight"))
    graph.initializer.append(numpy_helper.from_array(np.array(calibration.bias, np.float32), "milcnn_cal_bias"))
    last = helper.make_node("Softmax", ["milcnn_cal_z"], ["probabilities"], axis=1) if calibration.exclusive \
        else helper.make_node("Sigmoid", ["milcnn_cal_z"], ["probabilities"])
    graph.node.extend([
        helper.make_node("Clip", [raw, "milcnn_cal_low", "milcnn_cal_high"], ["milcnn_cal_p"]),
        helper.make_node("Sub", ["milcnn_cal_one", "milcnn_cal_p"], ["milcnn_cal_q"]),
        helper.make_node("Div", ["milcnn_cal_p", "milcnn_cal_q"], ["milcnn_cal_odds"]),
        helper.make_node("Log", ["milcnn_cal_odds"], ["milcnn_cal_logit"]),
        helper.make_node("Mul", ["milcnn_cal_logit", "milcnn_cal_weight"], ["milcnn_cal_scaled"]),
        helper.make_node("Add", ["milcnn_cal_scaled", "milcnn_cal_bias"], ["milcnn_cal_z"]),
        last,
    ])
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _input_text(config: dict) -> str:
    """The input's description: its channels and the scale the model expects (bioimage.io does not resize)."""
    scale = config.get("scale", {})
    at = scale.get("cell_diameter_px")  # the training scale: the package runs images at zoom 1
    text = f"{', '.join(config['channels'])}; any intensity range"
    return (f"{text}; cells about {at:g} px across (resize first)" if at else text)[:128]


def _identifier(name: str) -> str:
    """A class name as a bioimage.io identifier (letters, digits, ``_``, ``-``)."""
    out = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name)
    return out if out and out[0].isalpha() else f"c_{out}"


def build_package(folder, out) -> Path:
    """Write ``folder`` (an exported model folder) as the bioimage.io package ``out`` (a .zip), validated by
    bioimageio.spec on the way. Returns ``out``.

    Raises:
        ImportError: bioimageio.spec is not installed.
        ValueError: the folder cannot be described (the message says why).
    """
    try:
        from bioimageio.spec import save_bioimageio_package
    except ImportError:
        raise ImportError("writing bioimage.io packages needs bioimageio.spec: pip install bioimageio.core") from None
    folder, out = Path(folder), Path(out)
    config = read_config(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        descr = _describe(folder, Path(tmp), config)
        partial = out.with_name(out.name + ".partial")
        save_bioimageio_package(descr, output_path=partial)
        partial.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.bioimageio", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an exported model folder (e.g. zoo/yeast-loc)")
    parser.add_argument("--out", type=Path, required=True, help="the package to write (.zip)")
    args = parser.parse_args(argv)
    try:
        print(build_package(args.folder, args.out))
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {' '.join(str(exc).split())[:2000]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
