"""The one class that owns an OpenVINO compiled model (the optional extra ``milcnn-sdk[openvino]``), a
``milcnn.runtime.base.Runtime``. Which backend runs a model is ``milcnn.runtime.select``'s choice."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from milcnn import constants

__all__ = ["OpenVinoModel", "openvino_available", "openvino_core", "bf16_supported", "OPENVINO_HINT"]

log = logging.getLogger(__name__)

OPENVINO_HINT = "pip install 'milcnn-sdk[openvino]'"
COMPILED_SHAPES = 4  # input shapes an OpenVinoModel keeps compiled


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_core():
    try:
        import openvino as ov
    except ImportError:
        raise ImportError(f"the OpenVINO backend needs openvino: {OPENVINO_HINT}") from None
    return ov.Core()


def bf16_supported() -> bool:
    """Whether OpenVINO is installed and this CPU runs bf16 (AVX512-BF16 or AMX)."""
    return openvino_available() and "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoModel:
    """An ONNX MIL-CNN on OpenVINO's CPU plugin: ``run(batch)`` -> (probabilities (B, K), class_maps).

    The model is compiled once with ``streams`` parallel streams over ``threads`` threads; each
    calling thread gets its own infer request, so ``milzoo predict``'s inference streams run side by
    side as they do on onnxruntime. New image sizes are compiled on first use and cached by OpenVINO.

    Args:
        path: the ONNX file.
        precision: ``fp32`` (OpenVINO's f32 kernels: on CPUs with bf16 its default would be bf16),
            ``bf16``, or ``int8`` (a QDQ file; its float parts in f32).
        threads: CPU threads in all (0: one per physical core).
        streams: requests that run at once, each on ``threads // streams`` threads.
        config: OpenVINO properties that override milcnn's.
    """

    def __init__(self, path, *, precision: str = "fp32", threads: int = constants.NUM_THREADS, streams: int = 1,
                 outputs: tuple[str, ...] = ("probabilities", "class_maps"), config: dict | None = None):
        from milcnn.runtime.onnx import physical_cores

        core = openvino_core()
        if precision == "bf16" and not bf16_supported():
            raise ValueError("this CPU has no bf16 instructions (AVX512-BF16 or AMX); use fp32 or int8")
        self.path, self.precision, self.outputs, self.backend = Path(path), precision, outputs, "openvino"
        self.threads, self.streams = threads, max(1, streams)
        self.device, self.on_cpu = "cpu", True
        total = threads or physical_cores()
        self._config = {"INFERENCE_NUM_THREADS": max(total, self.streams), "NUM_STREAMS": self.streams,
                        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                        "PERFORMANCE_HINT": "LATENCY" if self.streams == 1 else "THROUGHPUT",
                        **(config or {})}
        self._user_config = config
        model = core.read_model(str(path))
        names = [o.get_any_name() for o in model.outputs]
        if names[:len(outputs)] != list(outputs):
            raise ValueError(f"{path}: outputs are {names}, expected {list(outputs)}")
        self.input_name = model.inputs[0].get_any_name()
        self.n_classes = _static_classes(model.outputs[0].get_partial_shape())
        self._core, self._model = core, model
        self._compiled: OrderedDict = OrderedDict()  # input shape -> compiled model, most recent last
        self._lock, self._first_run = threading.Lock(), threading.Lock()
        self.providers = [f"OpenVINO {precision} CPU"]
        # run_normalizing takes integer pixels as they are; not at bf16, where OpenVINO would normalise in
        # bf16 too (class maps up to 0.015 from the float32 normalisation's; int8 and fp32: identical)
        self.normalizes_in_graph = precision != "bf16"
        self._local = threading.local()
        self._siblings: dict[int, OpenVinoModel] = {}

    def compiled_for(self, shape: tuple[int, ...], raw_dtype: np.dtype | None = None):
        """The model compiled for inputs of exactly ``shape``: OpenVINO's CPU kernels for a static shape
        ran the int8 network 11 % faster than for dynamic ones (71.5 vs 80.7 ms at 1024 x 1344). With
        ``raw_dtype``, the graph of ``run_normalizing``, which takes integer pixels of that type. The
        last ``COMPILED_SHAPES`` are kept."""
        key = _graph_key(shape, raw_dtype)
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is None:
                model = self._model.clone()
                model.reshape({self.input_name: list(shape)})
                if raw_dtype is not None:
                    model = _normalizing(model, shape, raw_dtype)
                compiled = self._core.compile_model(model, "CPU", self._config)
                self._compiled[key] = compiled
                while len(self._compiled) > COMPILED_SHAPES:
                    self._compiled.popitem(last=False)
            else:
                self._compiled.move_to_end(key)
            return compiled

    def with_threads(self, threads: int) -> "OpenVinoModel":
        """The same file compiled for callers that each want ``threads`` threads: as many streams as
        fit on the cores this model uses (made once, then kept)."""
        from milcnn.runtime.onnx import physical_cores

        total = self.threads or physical_cores()
        streams = max(1, total // max(1, threads))
        if streams == self.streams or self._user_config is not None:
            return self
        if streams not in self._siblings:
            self._siblings[streams] = OpenVinoModel(self.path, precision=self.precision, threads=total,
                                                    streams=streams, outputs=self.outputs)
        return self._siblings[streams]

    def run(self, batch: np.ndarray, *, input_name: str | None = None) -> list[np.ndarray]:
        """Run on a float32 batch (B, C, H, W); returns copies (the request's buffers are reused)."""
        batch = np.ascontiguousarray(batch, np.float32)
        return self._infer({input_name or self.input_name: batch}, batch.shape, None)

    def run_normalizing(self, raw: np.ndarray, low: np.ndarray, scale: np.ndarray) -> list[np.ndarray]:
        """``run`` on ``(raw - low) * scale`` per channel (``milcnn.process.preprocess.apply_ranges``), computed
        inside the compiled graph: the integer image goes in as it is (a half or a quarter of float32's
        bytes) and is normalised in the pass that feeds the first layer, on every thread.

        Args:
            raw: (B, C, H, W) integer pixels of a type in ``normalizes_in_graph``'s list (8 or 16 bits).
            low, scale: (B, C) float32, as ``milcnn.process.preprocess.channel_ranges`` gives them per image.
        """
        raw = np.ascontiguousarray(raw)
        b, c = raw.shape[:2]
        feed = {"raw": raw, "low": np.ascontiguousarray(low, np.float32).reshape(b, c, 1, 1),
                "scale": np.ascontiguousarray(scale, np.float32).reshape(b, c, 1, 1)}
        return self._infer(feed, raw.shape, raw.dtype)

    def _infer(self, feed: dict, shape: tuple[int, ...], raw_dtype) -> list[np.ndarray]:
        compiled = self.compiled_for(shape, raw_dtype)
        key = _graph_key(shape, raw_dtype)
        requests = self._local.__dict__.setdefault("requests", {})  # this thread's, per compiled graph
        request = requests.get(key)
        if request is None or request[0] is not compiled:
            # A new request's first inference runs alone: two first inferences at once (two streams
            # starting) hung OpenVINO 2026.4 now and then on 2 cores, both threads in get_tensor.
            with self._first_run:
                request = (compiled, compiled.create_infer_request())
                result = request[1].infer(feed, share_inputs=True)
            requests[key] = request
        else:
            result = request[1].infer(feed, share_inputs=True)
        return [np.array(result[name]) for name in self.outputs]


def _graph_key(shape: tuple[int, ...], raw_dtype) -> tuple:
    """Which compiled graph runs an input: its shape, and the pixel type where it normalises inside."""
    return shape, None if raw_dtype is None else np.dtype(raw_dtype).str


_OV_TYPES = {"u1": "u8", "u2": "u16", "i1": "i8", "i2": "i16"}  # numpy kind + size -> OpenVINO element type


def _normalizing(model, shape: tuple[int, ...], raw_dtype):
    """``model`` (reshaped to ``shape``) fed by ``(convert(raw) - low) * scale``: new inputs ``raw``
    (integer pixels), ``low`` and ``scale`` ((B, C, 1, 1) float32), the float input's consumers rewired."""
    import openvino as ov
    import openvino.opset13 as ops

    dtype = np.dtype(raw_dtype)
    raw = ops.parameter(list(shape), getattr(ov.Type, _OV_TYPES[f"{dtype.kind}{dtype.itemsize}"]), name="raw")
    low = ops.parameter([shape[0], shape[1], 1, 1], ov.Type.f32, name="low")
    scale = ops.parameter([shape[0], shape[1], 1, 1], ov.Type.f32, name="scale")
    x = ops.multiply(ops.subtract(ops.convert(raw, ov.Type.f32), low), scale)
    (image,) = model.get_parameters()
    for target in list(image.output(0).get_target_inputs()):
        target.replace_source_output(x.output(0))
    return ov.Model(model.get_results(), [raw, low, scale], "milcnn-normalizing")


def _static_classes(shape) -> int | None:
    """The class count of a (batch, classes) output when the file fixes it."""
    if shape.rank.is_static and len(shape) == 2 and shape[1].is_static:
        return int(shape[1].get_length())
    return None
