"""``Classifier``: load a released MIL-CNN and classify and segment images with it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from milcnn import constants
from milcnn.config import ModelInfo
from milcnn.errors import ChecksumMismatchError, ModelConfigError, SelfTestError
from milcnn.io import read_image
from milcnn.preprocess import label_mask, normalize, to_chw, upsample_maps
from milcnn.registry import sha256_of
from milcnn.session import OnnxModel

__all__ = ["Classifier", "Prediction"]


@dataclass
class Prediction:
    """One image's result.

    Attributes:
        label: the predicted class (multi-label models: the classes >= 0.5 joined by ``|``).
        probabilities: class -> image-level probability.
        class_maps: (K, H, W) float32 per-class instance probabilities at the input's resolution.
        mask: (H, W) uint8: 0 background, ``k + 1`` where class ``k``'s map is largest and >= threshold.
        classes: the model's class order (``mask`` value ``k + 1`` is ``classes[k]``).
        source: the file it came from, if any.
    """

    label: str
    probabilities: dict[str, float]
    class_maps: np.ndarray
    mask: np.ndarray
    classes: tuple[str, ...]
    source: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary: label, probabilities and each class's pixel count in the mask."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.classes) + 1)
        return {
            "image": self.source,
            "label": self.label,
            "probabilities": {c: round(float(p), 6) for c, p in self.probabilities.items()},
            "mask_pixels": {c: int(counts[k + 1]) for k, c in enumerate(self.classes)},
            "shape": list(self.mask.shape),
        }


class Classifier:
    """A released MIL-CNN, run with onnxruntime (no PyTorch).

    Load with ``Classifier.from_hub("yeast-loc")`` or ``Classifier.from_dir(path)``.
    """

    def __init__(self, folder, info: ModelInfo, model: OnnxModel):
        self.folder = Path(folder)
        self.info = info
        self.model = model
        self.origin = None  # a milcnn.hub.ResolvedModel: where the model came from

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dir(cls, path, *, device: str = "auto", sha256: str | None = None) -> "Classifier":
        """Load a model folder (``model.onnx`` + ``config.json``).

        Args:
            path: the folder.
            device: ``auto``, ``cpu`` or ``cuda``.
            sha256: the checksum ``model.onnx`` must have; defaults to the one ``config.json``
                records (folders exported before that record existed are not checked).

        Raises:
            ModelConfigError: the folder lacks ``model.onnx`` or a valid ``config.json``.
            ChecksumMismatchError: ``model.onnx`` differs from the expected checksum.
        """
        from milcnn.hub import ResolvedModel, model_sha256

        folder = Path(path)
        return cls._load(ResolvedModel(folder, sha256 or model_sha256(folder), "folder"), device=device)

    @classmethod
    def from_hub(cls, name_or_repo: str, *, revision: str | None = None, cache_dir=None,
                 local_files_only: bool = False, device: str = "auto") -> "Classifier":
        """Load a zoo model by name (``"yeast-loc"``), a Hub repo (``"org/name"``) or a folder.

        Zoo models ship inside the package and load with no network when their sha256
        matches the registry's pin. Hub repos download into the Hugging Face cache
        (``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` are honoured); when the Hub is
        unreachable, the cached copy is used with a one-line notice.

        Args:
            name_or_repo: a zoo name, ``org/name`` or a folder.
            revision: branch, tag or commit; for a zoo name, None means its pinned release.
            cache_dir: the Hugging Face cache to use instead of the default.
            local_files_only: never contact the Hub.
            device: ``auto``, ``cpu`` or ``cuda``.

        Raises:
            ModelNotFoundError: an unknown zoo name (the message lists the zoo).
            RepositoryNotFoundError, RevisionNotFoundError: not on the Hub.
            HubOfflineError: the Hub is unreachable or offline mode is on, and nothing is cached.
            ChecksumMismatchError: ``model.onnx`` differs from its pinned checksum.
        """
        from milcnn.hub import resolve

        origin = resolve(name_or_repo, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        return cls._load(origin, device=device)

    @classmethod
    def _load(cls, origin, *, device: str) -> "Classifier":
        folder = origin.folder
        onnx_path = folder / constants.MODEL_FILE
        if not onnx_path.is_file():
            raise ModelConfigError(f"{folder}: no {constants.MODEL_FILE} in this folder")
        info = ModelInfo.from_file(folder / constants.CONFIG_FILE)
        if origin.sha256 is not None:
            actual = sha256_of(onnx_path)
            if actual != origin.sha256:
                raise ChecksumMismatchError(onnx_path, origin.sha256, actual)
        clf = cls(folder, info, OnnxModel(onnx_path, device=device))
        clf.origin = origin
        return clf

    # ------------------------------------------------------------------ properties

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

    def prepare(self, image, *, channel_axis: int | None = None) -> tuple[np.ndarray, str | None]:
        """Read (if a path) and reorder an image to (C, H, W); returns it and its source name."""
        source = None
        if isinstance(image, (str, Path)):
            source = str(image)
            image = read_image(image)
        chw = to_chw(image, len(self.channels), channel_axis=channel_axis)
        return chw, source

    def predict(self, image, *, channel_axis: int | None = None,
                threshold: float = constants.DEFAULT_THRESHOLD) -> Prediction:
        """Classify and segment one image.

        Args:
            image: a path, or a numpy array: H x W (one-channel models), C x H x W or H x W x C,
                with channels in the model's order (``clf.channels``).
            channel_axis: which axis holds the channels, when the shape is ambiguous.
            threshold: class-map probability for a pixel to enter the mask.

        Returns:
            a Prediction.

        Raises:
            ImageReadError: the file cannot be read.
            ValueError: the array's shape does not fit the model's channels.
        """
        chw, source = self.prepare(image, channel_axis=channel_axis)
        return self._predict_chw(chw, source=source, threshold=threshold)

    def predict_batch(self, images, *, channel_axis: int | None = None,
                      threshold: float = constants.DEFAULT_THRESHOLD) -> list[Prediction]:
        """``predict`` on each of ``images`` (paths or arrays), in order."""
        return [self.predict(im, channel_axis=channel_axis, threshold=threshold) for im in images]

    def preprocess(self, image, *, channel_axis: int | None = None) -> np.ndarray:
        """The normalised float32 (C, H, W) array the network sees (before any padding)."""
        chw, _ = self.prepare(image, channel_axis=channel_axis)
        return normalize(chw, self.info.normalization)

    def _predict_chw(self, chw: np.ndarray, *, source: str | None, threshold: float) -> Prediction:
        _, h, w = chw.shape
        x = normalize(chw, self.info.normalization)
        m = self.info.min_size
        if h < m or w < m:  # too small for the network: pad with background (0 after normalisation)
            x = np.pad(x, ((0, 0), (0, max(0, m - h)), (0, max(0, m - w))))
        probs, maps = self.model.run(x[None])
        stride = self.info.output_stride
        maps = maps[0, :, : -(-h // stride), : -(-w // stride)]
        class_maps = upsample_maps(maps, stride, (h, w))
        return self._prediction(probs[0], class_maps, source=source, threshold=threshold)

    def _prediction(self, probs: np.ndarray, class_maps: np.ndarray, *, source, threshold) -> Prediction:
        if self.info.multi_label:
            label = "|".join(c for c, p in zip(self.classes, probs) if p >= 0.5)
        else:
            label = self.classes[int(np.argmax(probs))]
        return Prediction(
            label=label,
            probabilities={c: float(p) for c, p in zip(self.classes, probs)},
            class_maps=class_maps.astype(np.float32, copy=False),
            mask=label_mask(class_maps, threshold),
            classes=self.classes,
            source=source,
        )

    # ------------------------------------------------------------------ checks

    def self_test(self, *, tolerance: float = constants.SELF_TEST_TOLERANCE) -> dict:
        """Run on the folder's ``sample_input.tif`` and compare with ``sample_output.json``.

        Returns:
            ``{"max_abs_difference": float, "label": str}``.

        Raises:
            SelfTestError: the label differs or a probability differs by more than ``tolerance``.
            ModelConfigError: the folder has no sample.
        """
        sample, expected_path = self.folder / constants.SAMPLE_INPUT_FILE, self.folder / constants.SAMPLE_OUTPUT_FILE
        if not sample.is_file() or not expected_path.is_file():
            raise ModelConfigError(f"{self.folder}: no {sample.name} and {expected_path.name} to self-test with")
        expected = json.loads(expected_path.read_text())
        got = self.predict(sample)
        diff = max(abs(got.probabilities[c] - float(p)) for c, p in expected["probabilities"].items())
        if got.label != expected["label"] or diff > tolerance:
            raise SelfTestError(f"{self.name}: self-test failed on {sample.name}: label {got.label!r} "
                                f"(expected {expected['label']!r}), max probability difference {diff:.2e} "
                                f"(tolerance {tolerance:.0e})")
        return {"max_abs_difference": diff, "label": got.label}
