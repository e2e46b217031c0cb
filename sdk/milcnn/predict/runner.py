"""The network on prepared images: same-size whole images as one batch (``run_network``), and images
too large for one pass tile by tile, their class maps stitched and pooled by the model's own pooling
layer (``TiledRunner``, ``pooling.onnx``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from milcnn import constants
from milcnn.errors import ModelConfigError
from milcnn.io.lazy import LazyTiff
from milcnn.model.checksums import verify_sha256
from milcnn.model.config import ModelInfo
from milcnn.predict.prepare import PreparedInput, padded
from milcnn.process.preprocess import apply_ranges, channel_ranges
from milcnn.process.tiling import stitch_maps
from milcnn.runtime.base import Runtime
from milcnn.runtime.onnx import OnnxModel

__all__ = ["run_network", "TiledRunner"]

log = logging.getLogger(__name__)


def run_network(model: Runtime, items: list[PreparedInput]) -> list[np.ndarray]:
    """The network on same-shape whole images: their integer pixels and ranges where the backend
    normalises inside its graph, none has ``x`` made yet and all have one pixel type, else the
    stacked ``x``. Returns [probabilities (B, K), class maps (B, K, h, w)]."""
    if model.normalizes_in_graph and len({i.chw.dtype for i in items}) == 1 and all(
            i.normalized is None and i.ranges is not None for i in items):
        raw = items[0].chw[None] if len(items) == 1 else np.stack([i.chw for i in items])
        low, scale = (np.stack([i.ranges[j] for i in items]) for j in (0, 1))
        return model.run_normalizing(raw, low, scale)
    return model.run(items[0].x[None] if len(items) == 1 else np.stack([i.x for i in items]))


class TiledRunner:
    """A model's network tile by tile and its pooling layer alone (``pooling.onnx``, loaded on first use)."""

    def __init__(self, folder: Path, info: ModelInfo, model: Runtime):
        self.folder, self.info, self.model = Path(folder), info, model
        self._pooling: OnnxModel | None = None
        self._warned = False

    def run(self, item: PreparedInput) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (K,) and class maps (K, h, w) of a tiled input."""
        if item.resized is None:
            return self.run_tiled(item.chw, item.tile_size)
        return self.run_tiled(item.resized, item.tile_size, normalized=True)  # normalised with the whole input

    def run_tiled(self, chw, tile_size: int, *, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and class maps of a whole image, computed tile by tile (``milcnn.process.tiling``),
        then pooled by the model's own pooling layer on the stitched maps. ``normalized``: ``chw`` is already
        normalised (a rescaled image), so tiles go in as they are; otherwise each tile is normalised with the
        whole image's statistics."""
        pooling = self.pooling()
        if isinstance(chw, LazyTiff):  # whole-image statistics, a segment at a time
            low, scale = chw.channel_ranges(self.info.normalization)
        elif not normalized:
            low, scale = channel_ranges(chw, self.info.normalization)  # whole-image statistics

        def run(window: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(window) if normalized else apply_ranges(window, low, scale)
            _, maps = self.model.run(padded(x, self.info.min_size)[None])
            return maps[0]

        maps = stitch_maps(chw, run, n_classes=len(self.info.classes), tile_size=tile_size,
                           stride=self.info.output_stride, receptive_field=self.info.receptive_field)
        (probs,) = pooling.run(maps[None])
        return probs[0], maps

    def pooling(self) -> OnnxModel:
        """The pooling layer alone (checked against its recorded checksum)."""
        if self._pooling is None:
            path = self.folder / constants.POOLING_FILE
            if not path.is_file():
                raise ModelConfigError(f"{self.folder}: tiled inference needs {constants.POOLING_FILE} (the model's "
                                       "pooling layer alone); re-export the model with training/export.py")
            verify_sha256(path, self.info.file_sha256(path.name))
            self._pooling = OnnxModel(path, device="cpu", outputs=("probabilities",))
        return self._pooling

    def pool(self, maps: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """The pooling layer on ``maps`` (K, h, w) alone; ``fallback`` where the folder has none (attention
        pooling, which needs the network's features: logged once)."""
        if not (self.folder / constants.POOLING_FILE).is_file():
            if not self._warned:
                self._warned = True
                log.warning("%s: no %s, so images below %d px are pooled with their padding (re-export the model "
                            "with training/export.py)", self.info.name, constants.POOLING_FILE, self.info.min_size)
            return fallback
        (probs,) = self.pooling().run(np.ascontiguousarray(maps[None], dtype=np.float32))
        return probs[0]
