"""The one place that owns an onnxruntime ``InferenceSession``: ``OnnxModel``, a ``milcnn.runtime.base.Runtime``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from milcnn import constants

__all__ = ["OnnxModel", "DEVICES", "gpu_usable", "physical_cores"]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def gpu_providers(available: list[str]) -> list:
    """GPU execution providers to ask for, best first: TensorRT (engines cached beside the
    model, fp32), then CUDA. Empty when onnxruntime has neither (the CPU wheel)."""
    providers: list = []
    if "TensorrtExecutionProvider" in available:
        providers.append(("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                        "trt_engine_cache_path": str(constants.TRT_CACHE_DIR)}))
    if "CUDAExecutionProvider" in available:
        providers.append(("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}))
    return providers


def gpu_usable(device: str) -> bool:
    """Whether ``device`` (auto, cpu, cuda) would ask onnxruntime for a GPU provider it has."""
    import onnxruntime as ort

    return device != "cpu" and bool(gpu_providers(ort.get_available_providers()))


def _cpu_instead(message: str) -> None:
    """A GPU asked for and not there: one notice, in the log (milzoo's stderr) and as a ``DeviceFallbackWarning``
    (what a Python user sees without configuring logging; milzoo shows the log line only)."""
    import warnings

    from milcnn.errors import DeviceFallbackWarning

    log.warning(message)
    warnings.warn(message, DeviceFallbackWarning, stacklevel=4)


def physical_cores() -> int:
    """Physical cores this process may use (onnxruntime's default thread count): logical CPUs
    in the affinity mask, less SMT siblings where Linux says which they are."""
    import os

    try:
        logical = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in logical:
        try:
            package = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id").read_text().strip()
            core = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id").read_text().strip()
        except OSError:
            return len(logical)
        cores.add((package, core))
    return max(1, len(cores))


def _provider_name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else str(provider)


def _default_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # Idle onnxruntime threads sleep instead of spinning, so milzoo predict's reader and writer
    # threads get those cycles; the network alone is as fast
    # (pipeline rows of benchmarks/results/inference.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxModel:
    """An ONNX MIL-CNN: ``run(batch)`` -> (probabilities (B, K), class_maps (B, K, h, w)).

    Args:
        path: the ``model.onnx`` file.
        device: ``auto`` (TensorRT or CUDA when onnxruntime-gpu sees a GPU, else CPU), ``cpu``
            or ``cuda`` (falls back to CPU with one notice on stderr when no GPU is usable).
            ``providers`` says which providers onnxruntime actually uses.
        threads: intra-op threads; 0 lets onnxruntime choose (one per physical core).
        providers: onnxruntime execution providers to ask for instead of ``device``'s, best first,
            as names or ``(name, options)`` pairs (OpenVINO, DirectML, ROCm, ...). Those this
            onnxruntime lacks or cannot start are dropped with a logged notice; the CPU is always last.
        session_options: an ``onnxruntime.SessionOptions`` to use instead of milcnn's (``threads``
            is then ignored).
    """

    def __init__(self, path, *, device: str = "auto", threads: int = constants.NUM_THREADS,
                 outputs: tuple[str, ...] = ("probabilities", "class_maps"), providers: list | None = None,
                 session_options=None):
        import onnxruntime as ort

        if device not in DEVICES:
            raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)}")
        available = ort.get_available_providers()
        self._provider_request, self._session_options = providers, session_options
        if providers is not None:
            asked = [p for p in providers if _provider_name(p) != "CPUExecutionProvider"]
            missing = [_provider_name(p) for p in asked if _provider_name(p) not in available]
            if missing:
                log.warning(f"{', '.join(missing)} not in this onnxruntime (it has {', '.join(available)}); "
                            "running without")
            providers = [p for p in asked if _provider_name(p) in available]
        else:
            providers = gpu_providers(available) if device in ("auto", "cuda") else []
            if device == "cuda" and not providers:
                _cpu_instead("device cuda asked for, but onnxruntime has no CUDA provider here (install "
                             "onnxruntime-gpu instead of onnxruntime); running on the CPU")
        requested = [_provider_name(p) for p in providers]
        providers.append("CPUExecutionProvider")
        options = session_options if session_options is not None else _default_options(threads)
        self.path, self.backend = Path(path), "onnxruntime"
        self.device, self.threads, self.outputs = device, threads, outputs
        self._siblings: dict[int, OnnxModel] = {}
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.providers = self.session.get_providers()  # what onnxruntime actually uses, in priority order
        failed = [name for name in requested if name not in self.providers]
        if failed and device == "cuda" and self.providers == ["CPUExecutionProvider"]:
            _cpu_instead("device cuda asked for, but onnxruntime could not start its CUDA provider (see its warnings "
                         "above: CUDA or cuDNN libraries); running on the CPU")
        elif failed:
            log.warning(f"onnxruntime could not start {', '.join(failed)} (see its warnings above); running on "
                        f"{', '.join(self.providers)}")
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        if names[:len(outputs)] != list(outputs):
            raise ValueError(f"{path}: outputs are {names}, expected {list(outputs)}")
        self.output_names = list(outputs)
        shape = self.session.get_outputs()[0].shape  # (batch, classes), classes fixed by the file or named
        self.n_classes = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None

    @property
    def on_cpu(self) -> bool:
        """Whether onnxruntime runs this model on the CPU provider."""
        return self.providers[0] == "CPUExecutionProvider"

    def with_threads(self, threads: int) -> "OnnxModel":
        """A session on the same file with ``threads`` intra-op threads (made once, then kept)."""
        if threads == self.threads or self._session_options is not None:  # the caller's options rule
            return self
        if threads not in self._siblings:
            device = "cpu" if self.on_cpu and self._provider_request is None else self.device  # said once already
            self._siblings[threads] = OnnxModel(self.path, device=device, threads=threads, outputs=self.outputs,
                                                providers=self._provider_request)
        return self._siblings[threads]

    #: onnxruntime takes normalised float32 images (``run_normalizing`` normalises in numpy first)
    normalizes_in_graph = False

    def run(self, batch: np.ndarray, *, input_name: str | None = None) -> list[np.ndarray]:
        """Run on a float32 batch: (B, C, H, W) normalised images for a model file."""
        feed = {input_name or self.input_name: np.ascontiguousarray(batch, np.float32)}
        return self.session.run(self.output_names, feed)

    def run_normalizing(self, raw: np.ndarray, low: np.ndarray, scale: np.ndarray) -> list[np.ndarray]:
        """``run`` on raw pixels (B, C, H, W) with their ranges (B, C, ...): normalised here, in numpy."""
        from milcnn.process.preprocess import apply_ranges

        return self.run(np.stack([apply_ranges(image, lo, sc) for image, lo, sc in zip(raw, low, scale)]))
