"""Which runtime runs a model file, and opening it: the one place a backend is chosen.

Two backends run the same ONNX files: onnxruntime (``milcnn.runtime.onnx.OnnxModel``, always installed) and
OpenVINO (``milcnn.runtime.openvino.OpenVinoModel``, the optional extra ``milcnn-sdk[openvino]``).
``backend="auto"`` picks, per precision, the one that was fastest on a CPU in ``benchmarks/results/peers.md``:
onnxruntime for fp32 (and for anything on a GPU), OpenVINO for int8 and bf16 when it is installed. bf16
runs only on OpenVINO (onnxruntime's CPU provider has no bf16 convolutions), on CPUs with bf16 instructions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from milcnn.errors import ModelConfigError, one_line
from milcnn.runtime.base import Runtime
from milcnn.runtime.onnx import OnnxModel, gpu_usable
from milcnn.runtime.openvino import OPENVINO_HINT, OpenVinoModel, openvino_available, openvino_core

__all__ = ["BACKENDS", "RuntimeOptions", "choose_backend", "open_runtime"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "openvino")
#: the fastest installed backend per precision on a CPU (benchmarks/results/peers.md)
FASTEST_ON_CPU = {"fp32": ("onnxruntime", "openvino"), "int8": ("openvino", "onnxruntime"),
                  "bf16": ("openvino",), "fp16": ("onnxruntime",)}


@dataclass(frozen=True)
class RuntimeOptions:
    """How a model is run (``Classifier.from_dir`` / ``from_hub`` take these as keywords).

    Attributes:
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto`` (fp16 on a GPU where the model ships that variant, else fp32), ``fp32``, or a
            variant the model ships (``int8``, ``bf16``, ``fp16``; ``Classifier.available_precisions``).
        backend: ``auto`` (the fastest installed for the precision), ``onnxruntime`` or ``openvino``
            (``pip install 'milcnn-sdk[openvino]'``; CPU only).
        providers: onnxruntime execution providers to use instead of ``device``'s, best first (names or
            ``(name, options)``); ones onnxruntime lacks or cannot start are dropped with a logged notice,
            and the CPU is always the last.
        session_options: an ``onnxruntime.SessionOptions`` for the session.
        openvino_config: OpenVINO properties for the compiled model (e.g. ``{"NUM_STREAMS": 4}``).
    """

    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    providers: list | None = None
    session_options: object = None
    openvino_config: dict | None = None

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda" or gpu_usable(self.device)


def choose_backend(backend: str, precision: str, *, on_gpu: bool = False) -> str:
    """The backend to run ``precision`` on: ``backend`` itself unless it is ``auto``.

    Raises:
        ValueError: an unknown backend, or a precision the backend cannot run (bf16 on onnxruntime,
            fp16 on OpenVINO, OpenVINO on a GPU).
        ImportError: OpenVINO asked for (or needed, for bf16) but not installed (says what to install).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if on_gpu:
            return "onnxruntime"
        for candidate in FASTEST_ON_CPU.get(precision, ("onnxruntime",)):
            if candidate == "onnxruntime" or openvino_available():
                return candidate
        raise ImportError(f"precision {precision} runs on OpenVINO, which is not installed: {OPENVINO_HINT}")
    if backend == "onnxruntime" and precision == "bf16":
        raise ValueError("precision bf16 runs on the OpenVINO backend only (onnxruntime has no bf16 convolutions "
                         "on a CPU); use backend='openvino' or 'auto'")
    if backend == "openvino":
        if on_gpu:
            raise ValueError("the OpenVINO backend runs on the CPU here; use device='cpu' or backend='onnxruntime'")
        if precision == "fp16":
            raise ValueError("the fp16 variant is for GPUs (onnxruntime); on a CPU use fp32, bf16 or int8")
        openvino_core()  # raises ImportError with the install hint
    return backend


def open_runtime(path: Path, precision: str, options: RuntimeOptions, *, name: str = "the model") -> Runtime:
    """The runtime for the model file ``path`` at ``precision`` (already resolved from ``auto``).

    OpenVINO chosen by ``auto`` that cannot run the file falls back to onnxruntime with a notice; asked for
    by name (or needed, for bf16), it is an error.

    Raises:
        ModelConfigError: OpenVINO asked for (or needed) cannot run the file.
        ImportError, ValueError: as ``choose_backend``.
    """
    if options.backend == "auto" and (options.providers is not None or options.session_options is not None):
        backend = "onnxruntime"  # onnxruntime's own options were given
    else:
        backend = choose_backend(options.backend, precision, on_gpu=options.on_gpu)
    if backend == "openvino":
        try:
            return OpenVinoModel(path, precision=precision, config=options.openvino_config)
        except RuntimeError as exc:  # e.g. an int8 file of an older release in QLinearConv form
            text = one_line(exc, limit=300)
            if options.backend == "openvino":
                raise ModelConfigError(f"{path}: OpenVINO cannot run it: {text}") from None
            if precision == "bf16":
                raise ModelConfigError(f"{path}: OpenVINO cannot run it in bf16: {text}") from None
            log.warning(f"{name}: OpenVINO cannot run {path.name} ({text}); using onnxruntime")
    return OnnxModel(path, device=options.device, providers=options.providers,
                     session_options=options.session_options)
