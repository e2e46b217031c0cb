"""``Classifier``: load a released MIL-CNN and classify and segment images with it.

A facade: loading is ``milcnn.predict.loading`` (the runtime from ``milcnn.runtime.select``), reading
``milcnn.io.readers``, preparation ``milcnn.predict.prepare``, the network and tiles
``milcnn.predict.runner``, and the result ``milcnn.predict.result``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from milcnn import constants
from milcnn.io.readers import as_input
from milcnn.model.config import ModelInfo
from milcnn.predict.options import PredictOptions
from milcnn.predict.prediction import Prediction
from milcnn.predict.prepare import PreparedInput, prepare, scale_for, zoom_for
from milcnn.predict.result import ResultMaker
from milcnn.predict.runner import TiledRunner, run_network
from milcnn.process.preprocess import normalize
from milcnn.runtime.base import Runtime
from milcnn.runtime.select import RuntimeOptions

__all__ = ["Classifier", "Prediction", "PreparedInput", "PredictOptions"]


class Classifier:
    """A released MIL-CNN, run with onnxruntime or OpenVINO (no PyTorch).

    Load with ``Classifier.from_hub("yeast-loc")`` or ``Classifier.from_dir(path)``; the keywords of both
    (``device``, ``precision``, ``backend``, ``providers``, ``session_options``, ``openvino_config``) are
    ``milcnn.runtime.select.RuntimeOptions``. Prediction settings are ``PredictOptions``, given as an
    object or as keywords: ``clf.predict(image, pixel_size=0.65)``.
    """

    def __init__(self, folder, info: ModelInfo, model: Runtime, *, precision: str = "fp32"):
        self.folder = Path(folder)
        self._model = model
        self.precision = precision
        self.origin = None  # a milcnn.model.hub.ResolvedModel: where the model came from
        self.info = info  # also makes the tiled runner and the result maker, which read it

    @property
    def info(self) -> ModelInfo:
        return self._info

    @info.setter
    def info(self, info: ModelInfo) -> None:
        """A changed config (e.g. ``replace(clf.info, calibration=None)``) reaches every step that reads it."""
        self._info = info
        self.tiles = TiledRunner(self.folder, info, self.model)
        self.results = ResultMaker(info, self.tiles.pool)

    @property
    def model(self) -> Runtime:
        return self._model

    @model.setter
    def model(self, model: Runtime) -> None:
        self._model = self.tiles.model = model

    @classmethod
    def from_dir(cls, path, *, sha256: str | None = None, **runtime) -> "Classifier":
        """Load a model folder (``model.onnx`` + ``config.json``).

        Args:
            sha256: the checksum ``model.onnx`` must have; defaults to the one ``config.json`` records.
            runtime: ``RuntimeOptions`` keywords.

        Raises:
            ModelConfigError: the folder lacks ``model.onnx`` or a valid, unedited ``config.json``, or the
                precision asked for.
            ImportError: the OpenVINO backend asked for (or needed, for bf16) but not installed.
            ChecksumMismatchError: a model file differs from its expected checksum.
        """
        from milcnn.model.hub import ResolvedModel, model_sha256

        folder = Path(path)
        return cls._load(ResolvedModel(folder, sha256 or model_sha256(folder), "folder"), RuntimeOptions(**runtime))

    @classmethod
    def from_hub(cls, name_or_repo: str, *, revision: str | None = None, cache_dir=None,
                 local_files_only: bool = False, **runtime) -> "Classifier":
        """Load a zoo model by name (``"yeast-loc"``), a Hub repo (``"org/name"``) or a folder.

        Zoo models ship inside the package and load with no network when their checksums match the
        registry's pins; Hub repos download into the Hugging Face cache (``milcnn.model.hub.resolve``: revision,
        cache_dir, local_files_only; ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE``). ``runtime``:
        ``RuntimeOptions`` keywords.

        Raises:
            ModelNotFoundError: an unknown zoo name (the message lists the zoo).
            RepositoryNotFoundError, RevisionNotFoundError: not on the Hub.
            HubOfflineError: the Hub is unreachable or offline mode is on, and nothing is cached.
            ChecksumMismatchError: a model file differs from its pinned checksum.
        """
        from milcnn.model.hub import resolve

        origin = resolve(name_or_repo, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        return cls._load(origin, RuntimeOptions(**runtime))

    @classmethod
    def _load(cls, origin, options: RuntimeOptions) -> "Classifier":
        from milcnn.predict.loading import load_model

        info, model, precision = load_model(origin, options)
        clf = cls(origin.folder, info, model, precision=precision)
        clf.origin = origin
        return clf

    @property
    def available_precisions(self) -> tuple[str, ...]:
        return ("fp32", *self.info.variants)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def channels(self) -> tuple[str, ...]:
        return self.info.channels

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return (f"Classifier({self.info.name!r} v{self.info.version}, channels={list(self.channels)}, "
                f"{len(self.classes)} classes, providers={self.model.providers})")

    # ------------------------------------------------------------------ inference

    def prepare(self, image, *, channel_axis: int | None = None,
                channel_index: tuple[int, ...] | None = None) -> tuple[np.ndarray, str | None]:
        """Read (if a path) and reorder an image to (C, H, W); returns it and its source name."""
        read = as_input(image, channel_axis=channel_axis, channel_index=channel_index).read(self.channels)
        return read.chw, read.source

    def zoom_for(self, *, pixel_size: float | None = None, cell_diameter: float | None = None) -> float:
        """The factor an image is resized by to match this model's scale (``milcnn.predict.prepare.zoom_for``)."""
        return zoom_for(self.info, pixel_size=pixel_size, cell_diameter=cell_diameter)

    def prepare_input(self, image, options: PredictOptions | None = None, **settings) -> PreparedInput:
        """Everything before the network for one image (``milcnn.predict.prepare``): read, reorder,
        normalise, rescale, pad. Thread-safe, so a pipeline prepares the next images while the network runs."""
        opts = (options or PredictOptions()).replace(**settings)
        self.zoom_for(pixel_size=opts.pixel_size, cell_diameter=opts.cell_diameter)  # a bad value fails first
        read = as_input(image, channel_axis=opts.channel_axis, channel_index=opts.channel_index).read(self.channels)
        zoom, source = scale_for(self.info, pixel_size=opts.pixel_size, cell_diameter=opts.cell_diameter,
                                 image_pixel_size=read.pixel_size)
        return prepare(read, self.info, zoom=zoom, scale_source=source, tile_size=opts.tile_size,
                       normalizes_in_graph=self.model.normalizes_in_graph)

    def predict_prepared(self, inputs: list[PreparedInput], *, threshold: float = constants.DEFAULT_THRESHOLD,
                         model: Runtime | None = None) -> list[Prediction]:
        """The network on prepared inputs, same-size whole images as one batch; ``model``: the runtime for whole
        images (``milzoo predict`` passes one per inference stream; tiled images use ``self.model``)."""
        whole = [item for item in inputs if not item.tiled]
        if len({item.input_shape for item in whole}) > 1:
            return [r for item in inputs for r in self.predict_prepared([item], threshold=threshold, model=model)]
        if whole:
            probs, maps = run_network(model or self.model, whole)
        results, k = [], 0
        for item in inputs:
            if item.tiled:
                p, m = self.tiles.run(item)
            else:
                p, m, k = probs[k], maps[k], k + 1
            results.append(self.results.make(p, m, item, threshold=threshold))
        return results

    def predict(self, image, options: PredictOptions | None = None, **settings) -> Prediction:
        """Classify and segment one image.

        Images larger than ``constants.TILE_THRESHOLD_PIXELS`` (or any image, with ``tile_size``) run in
        overlapping tiles whose class maps are stitched before pooling, so memory stays bounded and the
        result matches whole-image inference.

        Args:
            image: a path, a numpy array (H x W for one-channel models, C x H x W or H x W x C, channels in
                the model's order: ``clf.channels``), or an input that reads itself (``milcnn.io.readers``).
            options, settings: ``PredictOptions``, or its fields as keywords (``threshold``, ``tile_size``,
                ``pixel_size``, ``cell_diameter``, ``channel_axis``, ``channel_index``).

        Raises:
            ImageReadError: the file cannot be read.
            ValueError: the array's shape does not fit the model's channels, a bad tile size, or a bad or
                unusable pixel_size / cell_diameter.
            TypeError: a keyword that is not a setting.
        """
        opts = (options or PredictOptions()).replace(**settings)
        return self.predict_prepared([self.prepare_input(image, opts)], threshold=opts.threshold)[0]

    def predict_batch(self, images, options: PredictOptions | None = None, *, batch_size: int = 1,
                      **settings) -> list[Prediction]:
        """``predict`` on each of ``images``, in order; consecutive images of the same size go through the
        network ``batch_size`` at a time (worth it on a GPU; on a CPU one at a time is as fast)."""
        opts = (options or PredictOptions()).replace(**settings)
        results: list[Prediction] = []
        group: list[PreparedInput] = []
        for image in images:
            item = self.prepare_input(image, opts)
            if group and (len(group) >= batch_size or item.tiled or group[0].input_shape != item.input_shape):
                results += self.predict_prepared(group, threshold=opts.threshold)
                group = []
            if item.tiled:
                results += self.predict_prepared([item], threshold=opts.threshold)
            else:
                group.append(item)
        if group:
            results += self.predict_prepared(group, threshold=opts.threshold)
        return results

    def preprocess(self, image, *, channel_axis: int | None = None) -> np.ndarray:
        """The normalised float32 (C, H, W) array the network sees (before any padding)."""
        chw, _ = self.prepare(image, channel_axis=channel_axis)
        return normalize(chw, self.info.normalization)

    def self_test(self, *, tolerance: float = constants.SELF_TEST_TOLERANCE) -> dict:
        """Run on the folder's ``sample_input.tif`` and compare with ``sample_output.json``
        (``milcnn.predict.selftest``): ``{"max_abs_difference", "label"}``, or SelfTestError."""
        from milcnn.predict.selftest import self_test

        return self_test(self, tolerance=tolerance)
