"""What the ``Classifier`` asks of a runtime: the one interface every backend implements.

A new backend is one module here with a class that has these members, and one branch in
``milcnn.runtime.select.open_runtime``; nothing above this layer changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Runtime"]


@runtime_checkable
class Runtime(Protocol):
    """An exported MIL-CNN ready to run.

    Attributes:
        path: the model file it runs.
        backend: ``onnxruntime`` or ``openvino`` (recorded in ``run.json``).
        device: ``cpu`` or ``cuda``; on_cpu: whether it runs on the CPU after all (a GPU that did not start).
        providers: what runs it, best first (for ``repr`` and ``milzoo info``).
        threads: CPU threads it may use (0: one per physical core).
        n_classes: the classes its graph outputs where the graph says (None where it is dynamic).
        normalizes_in_graph: whether ``run_normalizing`` takes raw integer pixels and per-channel ranges.
    """

    path: Path
    backend: str
    device: str
    on_cpu: bool
    providers: list
    threads: int
    n_classes: int | None
    normalizes_in_graph: bool

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """(B, C, H, W) float32 normalised images -> [probabilities (B, K), class maps (B, K, h, w)]."""

    def run_normalizing(self, raw: np.ndarray, low: np.ndarray, scale: np.ndarray) -> list[np.ndarray]:
        """The same from raw pixels (B, C, H, W) and ranges (B, C): ``(raw - low) * scale`` in the graph."""

    def with_threads(self, threads: int) -> "Runtime":
        """Another instance of the same model on ``threads`` threads (an inference stream of its own)."""
