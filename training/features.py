"""Make a model folder adaptable without torch: the network up to its head as a second graph, and where the head's
weights lie in ``model.onnx`` (``config.json``'s ``head`` block).

Usage (the commands behind the zoo's ``head`` blocks)::

    python -m training.features zoo/yeast-loc --version 2.3.0

Writes ``model.features.onnx`` (the same network and input, its output the features the head's 1 x 1
convolution reads, one vector per map pixel) and records, for ``model.onnx``, the head's weight and bias
(their shapes, and the byte offsets of their raw data, each found exactly once in the file): the SDK's
``milzoo adapt`` fits new head weights on a few labelled images with numpy and writes them in place, so the
adapted ``model.onnx`` is the same graph with other numbers, run as any zoo model is. Checks that features
through the recorded head give ``model.onnx``'s own class maps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from milcnn.constants import FEATURES_FILE


def head_of(model_path: Path) -> dict:
    """The head block of ``model.onnx``: the input of the 1 x 1 convolution whose sigmoid is ``class_maps``, and
    its weight and bias (shape and byte offset of each raw tensor, found exactly once in the file)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    producers = {out: node for node in model.graph.node for out in node.output}
    sigmoid = producers["class_maps"]
    conv = producers[sigmoid.input[0]]
    if conv.op_type != "Conv" or len(conv.input) != 3:
        raise SystemExit(f"{model_path}: class_maps does not come from a biased convolution ({conv.op_type})")
    inits = {t.name: t for t in model.graph.initializer}
    data = model_path.read_bytes()
    block = {"features_file": FEATURES_FILE, "features_output": conv.input[0]}
    for key, name in (("weight", conv.input[1]), ("bias", conv.input[2])):
        tensor = inits[name]
        array = numpy_helper.to_array(tensor)
        if array.dtype != np.float32 or not tensor.raw_data or data.count(tensor.raw_data) != 1:
            raise SystemExit(f"{model_path}: {name} is not one float32 raw tensor found once in the file")
        block[key] = {"shape": list(array.shape), "offset": data.find(tensor.raw_data)}
    if block["weight"]["shape"][2:] != [1, 1]:
        raise SystemExit(f"{model_path}: the head is not a 1 x 1 convolution ({block['weight']['shape']})")
    return block


def write_features_graph(folder: Path, block: dict) -> Path:
    """``model.features.onnx``: ``model.onnx`` cut at the head's input, that input its one output ``features``.
    Its weights stay in ``model.onnx``: each tensor of 64 bytes or more is an external reference to the same bytes
    there (ONNX external data: location, offset, length; never inside the head, which adaptation rewrites), so the
    second graph costs tens of KB and no weight is stored twice."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(folder / "model.onnx"))
    out = folder / FEATURES_FILE
    onnx.utils.extract_model(str(folder / "model.onnx"), str(out), [model.graph.input[0].name],
                             [block["features_output"]])
    cut = onnx.load(str(out))
    cut.graph.output[0].name = "features"
    for node in cut.graph.node:
        node.output[:] = ["features" if o == block["features_output"] else o for o in node.output]
    data = (folder / "model.onnx").read_bytes()
    spans = [(block[k]["offset"], block[k]["offset"] + 4 * int(np.prod(block[k]["shape"]))) for k in ("weight", "bias")]
    head = (min(a for a, _ in spans), max(b for _, b in spans))
    for tensor in cut.graph.initializer:
        if len(tensor.raw_data) < 64:
            continue
        offset = data.find(tensor.raw_data)
        while offset >= 0 and offset < head[1] and offset + len(tensor.raw_data) > head[0]:
            offset = data.find(tensor.raw_data, offset + 1)
        if offset < 0:
            raise SystemExit(f"{folder}: {tensor.name}'s bytes are not in model.onnx outside its head")
        length = len(tensor.raw_data)
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "model.onnx"), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    onnx.save(cut, str(out))
    return out


def check(folder: Path, block: dict) -> float:
    """The largest difference between ``model.onnx``'s class maps and the features through the head, on the sample."""
    import onnxruntime as ort
    import tifffile

    from milcnn.model.config import ModelInfo
    from milcnn.process.preprocess import apply_ranges, channel_ranges

    info = ModelInfo.from_file(folder / "config.json")
    image = tifffile.imread(folder / "sample_input.tif").astype(np.float32)
    image = (image[None] if image.ndim == 2 else image)[:, :256, :256]
    x = apply_ranges(image, *channel_ranges(image, info.normalization))[None]
    maps = ort.InferenceSession(str(folder / "model.onnx")).run(["class_maps"], {"image": x})[0][0]
    feats = ort.InferenceSession(str(folder / FEATURES_FILE)).run(["features"], {"image": x})[0][0]
    data = (folder / "model.onnx").read_bytes()
    w = np.frombuffer(data, np.float32, int(np.prod(block["weight"]["shape"])), block["weight"]["offset"])
    b = np.frombuffer(data, np.float32, block["bias"]["shape"][0], block["bias"]["offset"])
    logits = np.einsum("kf,fhw->khw", w.reshape(block["weight"]["shape"][:2]), feats) + b[:, None, None]
    return float(np.abs(1 / (1 + np.exp(-logits)) - maps).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.features", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--version", required=True, help="the folder's new version (a minor release: new files)")
    args = parser.parse_args(argv)
    from milcnn.model.config import ModelInfo

    from .cells import repin
    from .model_card import update_folder

    block = head_of(args.folder / "model.onnx")
    path = write_features_graph(args.folder, block)
    difference = check(args.folder, block)
    if difference > 1e-5:
        raise SystemExit(f"{args.folder}: features through the head differ from class_maps by {difference:.2e}")
    info = ModelInfo.from_file(args.folder / "config.json").with_files(path)
    written = update_folder(args.folder, **{**info.to_dict(), "head": block, "version": args.version})
    repin(args.folder.resolve(), written)
    print(f"{args.folder}: {path.name}, head {block['weight']['shape']} (class maps within {difference:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
