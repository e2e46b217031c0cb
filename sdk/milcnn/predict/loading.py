"""Opening a model folder: its config, the file for the precision asked for (checked against its pin),
the runtime that runs it, and the fallbacks (a GPU that did not start)."""

from __future__ import annotations

import logging
from milcnn import constants
from milcnn.errors import ModelConfigError
from milcnn.model.checksums import verify_sha256
from milcnn.model.config import ModelInfo
from milcnn.runtime.base import Runtime
from milcnn.runtime.onnx import OnnxModel, gpu_usable
from milcnn.runtime.select import RuntimeOptions, open_runtime

__all__ = ["load_model"]

log = logging.getLogger(__name__)


def load_model(origin, options: RuntimeOptions) -> tuple[ModelInfo, Runtime, str]:
    """The folder of ``origin`` (a ``milcnn.model.hub.ResolvedModel``) opened: (its config, the runtime, the
    precision it runs at).

    Raises:
        ModelConfigError: no ``model.onnx``, an invalid or edited ``config.json``, a precision the model does
            not ship, or a config whose classes are not the network's.
        ChecksumMismatchError: a model file differs from its pin.
        ImportError: the OpenVINO backend asked for (or needed, for bf16) but not installed.
    """
    folder = origin.folder
    onnx_path = folder / constants.MODEL_FILE
    if not onnx_path.is_file():
        raise ModelConfigError(f"{folder}: no {constants.MODEL_FILE} in this folder")
    info = ModelInfo.from_file(folder / constants.CONFIG_FILE, sha256=getattr(origin, "config_sha256", None))
    if origin.sha256 is not None:
        verify_sha256(onnx_path, origin.sha256)
    chosen = options.precision
    if chosen == "auto":  # fp16 is in variants only if it kept accuracy (training/quantize.py)
        chosen = "fp16" if "fp16" in info.variants and gpu_usable(options.device) else "fp32"
    if chosen != "fp32":
        if chosen not in info.variants:
            raise ModelConfigError(f"{info.name} has no {chosen!r} variant; it offers "
                                   f"{', '.join(['fp32', *info.variants])}")
        onnx_path = folder / info.variants[chosen].file
        if onnx_path.name != constants.MODEL_FILE:  # bf16 runs model.onnx itself, checked above
            verify_sha256(onnx_path, info.file_sha256(onnx_path.name))
    model = open_runtime(onnx_path, chosen, options, name=info.name)
    if model.n_classes is not None and model.n_classes != len(info.classes):
        raise ModelConfigError(f"{folder / constants.CONFIG_FILE}: lists {len(info.classes)} classes but "
                               f"{onnx_path.name} outputs {model.n_classes}; the config belongs to another model")
    if chosen == "fp16" and model.on_cpu:
        if options.precision == "auto":  # the GPU did not start (its notice said so): fp32 on the CPU
            chosen = "fp32"
            model = OnnxModel(folder / constants.MODEL_FILE, device="cpu", session_options=options.session_options)
        else:
            log.warning(f"{info.name}: running the fp16 variant on the CPU; it is meant for GPUs "
                        "(--precision auto keeps fp32 here)")
    if info.calibration is None:
        log.warning(f"{folder / constants.CONFIG_FILE}: no calibration block (an export from before milcnn-sdk "
                    "0.2); its probabilities are the network's raw outputs, and 'unassigned' follows them")
    return info, model, chosen
