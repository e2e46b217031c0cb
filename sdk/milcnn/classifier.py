"""``Classifier``: load a released MIL-CNN and classify and segment images with it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from milcnn import constants
from milcnn.config import ModelInfo
from milcnn.decision import decide
from milcnn.errors import ModelConfigError, SelfTestError
from milcnn.fields import ChannelFiles
from milcnn.omezarr import ZarrField
from milcnn.io import open_image
from milcnn.lazy import LazyTiff
from milcnn.postprocess import mask_from_maps, upsample_maps
from milcnn.preprocess import apply_ranges, channel_ranges, normalize, to_chw
from milcnn.quality import QC_OK, Features, QualityLimits, assess, measure
from milcnn.checksums import verify_sha256
from milcnn.scale import SCALE_TOLERANCE, resize_chw, resize_labels, zoom_factor, zoomed_shape
from milcnn.backends import OpenVinoModel, choose_backend
from milcnn.session import OnnxModel, gpu_usable
from milcnn.tiling import stitch_maps

__all__ = ["Classifier", "Prediction", "PreparedInput"]

log = logging.getLogger(__name__)


class _computed_once:
    """``functools.cached_property`` without its lock: on Python 3.11 that lock is one per
    class, so ``milzoo predict``'s writer threads would compute every image's mask one at a
    time. Two threads asking at once may both compute the value; both get an equal result."""

    def __init__(self, func):
        self.func, self.name, self.__doc__ = func, func.__name__, func.__doc__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)  # found there from now on
        return value


@dataclass
class Prediction:
    """One image's result.

    Attributes:
        label: the top class where its probability reaches ``threshold`` and ``qc`` is ``ok``, else
            ``unassigned`` (``milcnn.decision.decide``: the one rule, as ``milzoo predict`` writes it).
        probabilities: class -> image-level probability, calibrated where the model carries a
            calibration (``config.json`` calibration; single-label models: they sum to 1).
        classes: the model's class order (``mask`` value ``k + 1`` is ``classes[k]``).
        maps: (K, h, w) float32 class maps at the model's resolution (1 / ``stride``).
        stride: the model's output stride.
        shape: (H, W) of the input image.
        threshold: class-map probability for a pixel to enter the mask.
        source: the file it came from, if any.
        zoom: the factor the image was resized by before the network (``pixel_size`` /
            ``cell_diameter``); ``maps`` are at the resized image's resolution, ``mask`` and
            ``class_maps`` at the input's.
        mask: (H, W) uint8: 0 background, ``k + 1`` where class ``k``'s map is largest and >= threshold
            (computed on first access, so a pipeline can do it off the inference thread).
        class_maps: (K, H, W) float32 per-class instance probabilities at the input's resolution,
            computed from ``maps`` on first access (K x H x W x 4 bytes: large for huge images).
        raw_probabilities: the network's own pooled outputs, before calibration.
        qc: ``ok``, or why the call is not to be trusted (``milcnn.quality``: ``too_small``, ``no_cells``,
            ``off_scale``, ``out_of_distribution``); not ``ok`` makes ``label`` ``unassigned``.
        features: what qc read of the image (object diameter, texture, coverage), None where not read.
        labels: multi-label models: every class at or above ``threshold``, joined by ``|``; else ``label``.
        top: the most probable class, whatever its probability and qc.
        scale_source: where ``zoom`` came from: ``argument`` (pixel_size / cell_diameter), ``image`` (the
            file's own pixel size) or ``model`` (the model's default).
    """

    label: str
    probabilities: dict[str, float]
    classes: tuple[str, ...]
    maps: np.ndarray = field(repr=False)
    stride: int = field(repr=False)
    shape: tuple[int, int] = (0, 0)
    threshold: float = constants.DEFAULT_THRESHOLD
    source: str | None = None
    zoom: float = 1.0
    raw_probabilities: dict[str, float] = field(default_factory=dict, repr=False)
    qc: str = QC_OK
    features: Features | None = field(default=None, repr=False)
    labels: str = ""
    top: str = ""
    scale_source: str = "model"

    @property
    def network_shape(self) -> tuple[int, int]:
        """(H, W) of the image the network saw (the input resized by ``zoom``)."""
        return self.shape if self.zoom == 1.0 else zoomed_shape(self.shape, self.zoom)

    @_computed_once
    def mask(self) -> np.ndarray:
        mask = mask_from_maps(self.maps, self.stride, self.network_shape, self.threshold)
        return mask if self.zoom == 1.0 else resize_labels(mask, self.shape)

    @_computed_once
    def class_maps(self) -> np.ndarray:
        maps = upsample_maps(self.maps, self.stride, self.network_shape)
        return maps if self.zoom == 1.0 else resize_chw(maps, self.shape)

    def to_dict(self) -> dict:
        """JSON-ready summary: label, probabilities and each class's pixel count in the mask."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.classes) + 1)
        return {
            "image": self.source,
            "label": self.label,
            "labels": self.labels,
            "qc": self.qc,
            "probabilities": {c: round(float(p), 6) for c, p in self.probabilities.items()},
            "mask_pixels": {c: int(counts[k + 1]) for k, c in enumerate(self.classes)},
            "shape": list(self.mask.shape),
        }


@dataclass
class PreparedInput:
    """An image ready for the network: ``chw`` as read, the file it came from, the per-channel
    ``ranges`` (low, scale) that normalise ``chw`` (``milcnn.preprocess.channel_ranges``; None for a
    tiled image at zoom 1, whose tiles get them later), and the network input ``normalized``
    (normalised, resized by ``zoom`` and padded), or None until ``x`` is first asked for: a backend
    that normalises inside its graph (OpenVINO) takes ``chw`` and ``ranges`` as they are. A tiled
    image has ``tile_size`` set and no ``x``; ``resized`` then holds the normalised, resized image
    where ``zoom != 1``."""

    chw: np.ndarray
    normalized: np.ndarray | None = None
    source: str | None = None
    tile_size: int | None = None
    zoom: float = 1.0
    resized: np.ndarray | None = None
    ranges: tuple[np.ndarray, np.ndarray] | None = None
    scale_source: str = "model"

    @property
    def tiled(self) -> bool:
        return self.tile_size is not None

    @property
    def x(self) -> np.ndarray | None:
        """The normalised (C, H, W) float32 network input (made from ``ranges`` on first use); None if tiled."""
        if self.normalized is None and self.ranges is not None and not self.tiled:
            self.normalized = apply_ranges(self.chw, *self.ranges)
        return self.normalized

    @property
    def display(self) -> dict:
        """What overlays (``milcnn.overlay``) need besides ``chw`` to show it normalised, without
        normalising it again: ``normalized`` where it is ``chw``'s own (not resized), and ``ranges``."""
        return {"normalized": self.normalized if self.zoom == 1.0 else None, "ranges": self.ranges}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of ``x``, without making it."""
        return self.chw.shape if self.normalized is None else self.normalized.shape


_GRAPH_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int8), np.dtype(np.int16))


def _run_network(model, items: list[PreparedInput]) -> list[np.ndarray]:
    """The network on same-shape whole images: their integer pixels and ranges where the backend
    normalises inside its graph, none has ``x`` made yet and all have one pixel type, else the
    stacked ``x``."""
    if getattr(model, "normalizes_in_graph", False) and len({i.chw.dtype for i in items}) == 1 and all(
            i.normalized is None and i.ranges is not None for i in items):
        raw = items[0].chw[None] if len(items) == 1 else np.stack([i.chw for i in items])
        low, scale = (np.stack([i.ranges[j] for i in items]) for j in (0, 1))
        return model.run_normalizing(raw, low, scale)
    return model.run(items[0].x[None] if len(items) == 1 else np.stack([i.x for i in items]))


def _pick_channels(image: np.ndarray, index: tuple[int, ...], axis: int | None, source) -> tuple[np.ndarray, int]:
    """``image``'s channels ``index`` along ``axis`` (default: the first or last axis, whichever is
    shorter: the channels of a C x H x W or H x W x C image)."""
    if image.ndim != 3:
        raise ValueError(f"channel_index {list(index)} needs a 3-D image (C x H x W or H x W x C), got shape "
                         f"{image.shape}")
    if axis is None:
        axis = 0 if image.shape[0] <= image.shape[-1] else image.ndim - 1
    if max(index) >= image.shape[axis] or min(index) < -image.shape[axis]:
        raise ValueError(f"channel_index {list(index)} is out of range for {image.shape[axis]} channels "
                         f"(image of shape {image.shape})")
    return np.take(image, list(index), axis=axis), axis


class Classifier:
    """A released MIL-CNN, run with onnxruntime (no PyTorch).

    Load with ``Classifier.from_hub("yeast-loc")`` or ``Classifier.from_dir(path)``.
    """

    def __init__(self, folder, info: ModelInfo, model: OnnxModel | OpenVinoModel, *, precision: str = "fp32"):
        self.folder = Path(folder)
        self.info = info
        self.model = model
        self.precision = precision
        self.origin = None  # a milcnn.hub.ResolvedModel: where the model came from
        self._pooling: OnnxModel | None = None
        self._warned_pooling = False
        self._scale_checks_left = constants.SCALE_CHECKS  # images measured for the scale notice

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dir(cls, path, *, device: str = "auto", precision: str = "auto", sha256: str | None = None,
                 backend: str = "auto", providers: list | None = None, session_options=None,
                 openvino_config: dict | None = None) -> "Classifier":
        """Load a model folder (``model.onnx`` + ``config.json``).

        Args:
            path: the folder.
            device: ``auto``, ``cpu`` or ``cuda``.
            precision: ``auto`` (fp16 on a GPU where the model ships that variant, else fp32),
                ``fp32``, or a variant the model ships (``int8``, ``bf16``, ``fp16``; see
                ``available_precisions``).
            backend: ``auto`` (the fastest installed for the precision: ``milcnn.backends``),
                ``onnxruntime`` or ``openvino`` (``pip install 'milcnn-sdk[openvino]'``; CPU only).
            sha256: the checksum ``model.onnx`` must have; defaults to the one ``config.json``
                records (folders exported before that record existed are not checked).
            providers: onnxruntime execution providers to use instead of ``device``'s, best first
                (names or ``(name, options)``, e.g. ``["OpenVINOExecutionProvider"]``); ones onnxruntime
                lacks or cannot start are dropped with a logged notice, and the CPU is always the last.
            session_options: an ``onnxruntime.SessionOptions`` for the session.
            openvino_config: OpenVINO properties for the compiled model (e.g. ``{"NUM_STREAMS": 4}``).

        Raises:
            ModelConfigError: the folder lacks ``model.onnx`` or a valid ``config.json``, or the
                precision asked for.
            ImportError: the OpenVINO backend asked for (or needed, for bf16) but not installed.
            ChecksumMismatchError: a model file differs from its expected checksum.
        """
        from milcnn.hub import ResolvedModel, model_sha256

        folder = Path(path)
        return cls._load(ResolvedModel(folder, sha256 or model_sha256(folder), "folder"), device=device,
                         precision=precision, backend=backend, providers=providers, session_options=session_options,
                         openvino_config=openvino_config)

    @classmethod
    def from_hub(cls, name_or_repo: str, *, revision: str | None = None, cache_dir=None,
                 local_files_only: bool = False, device: str = "auto", precision: str = "auto",
                 backend: str = "auto", providers: list | None = None, session_options=None,
                 openvino_config: dict | None = None) -> "Classifier":
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
            precision: ``auto`` (fp16 on a GPU where the model ships it, else fp32), ``fp32``,
                or a variant the model ships (``int8``, ``bf16``, ``fp16``).
            backend, providers, session_options, openvino_config: as in ``from_dir``.

        Raises:
            ModelNotFoundError: an unknown zoo name (the message lists the zoo).
            RepositoryNotFoundError, RevisionNotFoundError: not on the Hub.
            HubOfflineError: the Hub is unreachable or offline mode is on, and nothing is cached.
            ChecksumMismatchError: a model file differs from its pinned checksum.
        """
        from milcnn.hub import resolve

        origin = resolve(name_or_repo, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        return cls._load(origin, device=device, precision=precision, backend=backend, providers=providers,
                         session_options=session_options, openvino_config=openvino_config)

    @classmethod
    def _load(cls, origin, *, device: str, precision: str = "auto", backend: str = "auto",
              providers: list | None = None, session_options=None, openvino_config: dict | None = None
              ) -> "Classifier":
        folder = origin.folder
        onnx_path = folder / constants.MODEL_FILE
        if not onnx_path.is_file():
            raise ModelConfigError(f"{folder}: no {constants.MODEL_FILE} in this folder")
        info = ModelInfo.from_file(folder / constants.CONFIG_FILE)
        if origin.sha256 is not None:
            verify_sha256(onnx_path, origin.sha256)
        variants = info.variants
        chosen = precision
        if precision == "auto":  # fp16 is in variants only if it kept accuracy (training/quantize.py)
            chosen = "fp16" if "fp16" in variants and gpu_usable(device) else "fp32"
        if chosen != "fp32":
            if chosen not in variants:
                raise ModelConfigError(f"{info.name} has no {chosen!r} variant; it offers "
                                       f"{', '.join(['fp32', *variants])}")
            onnx_path = folder / variants[chosen]["file"]
            if onnx_path.name != constants.MODEL_FILE:  # bf16 runs model.onnx itself, checked above
                verify_sha256(onnx_path, info.file_sha256(onnx_path.name))
        if backend == "auto" and (providers is not None or session_options is not None):
            runtime = "onnxruntime"  # onnxruntime's own options were given
        else:
            runtime = choose_backend(backend, chosen, on_gpu=device == "cuda" or gpu_usable(device))
        model = None
        if runtime == "openvino":
            try:
                model = OpenVinoModel(onnx_path, precision=chosen, config=openvino_config)
            except RuntimeError as exc:  # e.g. an int8 file of an older release in QLinearConv form
                text = " ".join(str(exc).split())[:300]
                if backend == "openvino":
                    raise ModelConfigError(f"{onnx_path}: OpenVINO cannot run it: {text}") from None
                if chosen == "bf16":
                    raise ModelConfigError(f"{onnx_path}: OpenVINO cannot run it in bf16: {text}") from None
                log.warning(f"{info.name}: OpenVINO cannot run {onnx_path.name} ({text}); using onnxruntime")
        if model is None:
            model = OnnxModel(onnx_path, device=device, providers=providers, session_options=session_options)
        if model.n_classes is not None and model.n_classes != len(info.classes):
            raise ModelConfigError(f"{folder / constants.CONFIG_FILE}: lists {len(info.classes)} classes but "
                                   f"{onnx_path.name} outputs {model.n_classes}; the config belongs to another model")
        if chosen == "fp16" and model.on_cpu:
            if precision == "auto":  # the GPU did not start (its notice said so): fp32 on the CPU
                chosen, model = "fp32", OnnxModel(folder / constants.MODEL_FILE, device="cpu",
                                                  session_options=session_options)
            else:
                log.warning(f"{info.name}: running the fp16 variant on the CPU; it is meant for GPUs "
                       "(--precision auto keeps fp32 here)")
        if info.calibration is None:
            log.warning(f"{folder / constants.CONFIG_FILE}: no calibration block (an export from before milcnn-sdk "
                        "0.2); its probabilities are the network's raw outputs, and 'unassigned' follows them")
        clf = cls(folder, info, model, precision=chosen)
        clf.origin = origin
        return clf

    @property
    def available_precisions(self) -> tuple[str, ...]:
        return ("fp32", *self.info.variants)

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

    def prepare(self, image, *, channel_axis: int | None = None,
                channel_index: tuple[int, ...] | None = None) -> tuple[np.ndarray, str | None]:
        """Read (if a path) and reorder an image to (C, H, W); returns it and its source name.

        An OME-TIFF whose channels are named gives the model's channels by name (a clear error when
        none match); ``channel_index`` picks the model's channels, in order, from an image with more."""
        chw, source, _ = self._read(image, channel_axis=channel_axis, channel_index=channel_index)
        return chw, source

    def _read(self, image, *, channel_axis: int | None = None, channel_index: tuple[int, ...] | None = None
              ) -> tuple[np.ndarray, str | None, float | None]:
        """``prepare``, and the pixel size (um) the input declares (None where it declares none)."""
        source = None
        if isinstance(image, ChannelFiles):  # one file per channel, in the model's order
            chw, pixel_size = self._stack_channel_files(image)
            return chw, str(image), pixel_size
        if isinstance(image, ZarrField):  # a field of an OME-Zarr plate, channels picked by name
            return image.read(self.channels), str(image), image.pixel_size()
        meta = None
        if isinstance(image, (str, Path)):
            source = str(image)
            image, meta = open_image(image)
        pixel_size = meta.pixel_size if meta is not None else None
        if meta is not None and meta.channel_names is not None and channel_index is None \
                and not isinstance(image, LazyTiff):
            image, channel_axis = self._by_name(np.asarray(image), list(meta.channel_names), meta.channel_axis,
                                                source=source)
        elif channel_index is not None and not isinstance(image, LazyTiff):
            image, channel_axis = _pick_channels(np.asarray(image), channel_index, channel_axis, source)
        if isinstance(image, LazyTiff):  # too large to read whole: one page per channel, in file order
            if image.shape[0] != len(self.channels):
                raise ValueError(f"image of shape {image.shape} (read a tile at a time: one page per channel) has "
                                 f"{image.shape[0]} channels but the model needs {len(self.channels)} "
                                 f"({', '.join(self.channels)}, in that order)")
            return image, source, None
        chw = to_chw(image, len(self.channels), channel_axis=channel_axis, channel_names=self.channels)
        return chw, source, pixel_size

    def _by_name(self, image: np.ndarray, names: list[str], axis: int, *, source) -> tuple[np.ndarray, int]:
        """The model's channels picked by the names an OME-TIFF gives them (case-insensitive)."""
        lower, wanted = [n.lower() for n in names], [c.lower() for c in self.channels]
        if axis >= image.ndim or image.shape[axis] != len(names):
            return image, None
        if all(c in lower for c in wanted):
            return np.take(image, [lower.index(c) for c in wanted], axis=axis), axis
        missing = [c for c in self.channels if c.lower() not in lower]
        if len(missing) < len(self.channels):
            raise ValueError(f"its channels are named {', '.join(names)}: {', '.join(missing)} missing; the model "
                             f"needs {', '.join(self.channels)}")
        if len(names) == len(self.channels):  # names that are not the model's: keep the stored order
            return image, axis
        raise ValueError(f"its channels are named {', '.join(names)}, none of the model's "
                         f"({', '.join(self.channels)}); pick them with channel_index / --channel-index")

    def _stack_channel_files(self, field: ChannelFiles) -> tuple[np.ndarray, float | None]:
        """The channel files stacked, and the pixel size the first file declares."""
        planes, sizes = [], []
        for channel, path in zip(self.channels, field.files):
            plane, meta = open_image(path)
            sizes.append(meta.pixel_size)
            if isinstance(plane, LazyTiff) or np.squeeze(np.asarray(plane)).ndim != 2:
                shape = plane.shape
                raise ValueError(f"{path}: the {channel} file of {field.id.name} holds an image of shape {shape}; "
                                 "one plane per channel file is expected")
            planes.append(np.squeeze(np.asarray(plane)))
        shapes = {p.shape for p in planes}
        if len(shapes) > 1:
            raise ValueError(f"{field.id}: its channel files differ in size "
                             f"({', '.join(f'{c} {p.shape}' for c, p in zip(self.channels, planes))})")
        dtype = np.result_type(*planes)
        return np.stack([p.astype(dtype, copy=False) for p in planes]), sizes[0]

    def zoom_for(self, *, pixel_size: float | None = None, cell_diameter: float | None = None) -> float:
        """The factor an image is resized by to match this model's scale; when neither is given, the model's
        default (``ModelInfo.input_cell_diameter``: 1.0 for a model that records none).

        Raises:
            ValueError: both given, a non-positive value, or the model does not record that quantity.
        """
        return zoom_factor(pixel_size=pixel_size, cell_diameter=cell_diameter,
                           model_pixel_size=self.info.pixel_size, model_cell_diameter=self.info.cell_diameter,
                           model_input_cell_diameter=self.info.input_cell_diameter, model_name=self.name)

    def scale_for(self, *, pixel_size: float | None = None, cell_diameter: float | None = None,
                  image_pixel_size: float | None = None) -> tuple[float, str]:
        """The zoom an image gets and where its scale came from: the caller's ``pixel_size`` or
        ``cell_diameter`` (``argument``), else the image's own pixel size where the model records the one it
        was trained at and it gives a zoom within ``constants.MAX_IMAGE_ZOOM`` either way (``image``: a file
        that claims 100 um pixels must not make a 512 px image 300,000 px wide), else the model's default
        (``model``: ``zoom_for()``).

        Raises:
            ValueError: as ``zoom_for``.
        """
        if pixel_size is not None or cell_diameter is not None:
            return self.zoom_for(pixel_size=pixel_size, cell_diameter=cell_diameter), "argument"
        if image_pixel_size is not None and self.info.pixel_size:
            zoom = self.zoom_for(pixel_size=image_pixel_size)
            if 1 / constants.MAX_IMAGE_ZOOM <= zoom <= constants.MAX_IMAGE_ZOOM:
                return zoom, "image"
            log.info("an image declares %g um per pixel, %.3gx %s's %g: not used (pass --pixel-size to use it)",
                     image_pixel_size, zoom, self.name, self.info.pixel_size)
        return self.zoom_for(), "model"

    def prepare_input(self, image, *, channel_axis: int | None = None, tile_size: int | None = None,
                      pixel_size: float | None = None, cell_diameter: float | None = None,
                      channel_index: tuple[int, ...] | None = None) -> PreparedInput:
        """Everything before the network, for one image: read, reorder, normalise, rescale, pad.

        Thread-safe and mostly outside the GIL, so a pipeline can prepare the next images
        while the network runs (``milzoo predict --workers``). Images that will be tiled are
        normalised tile by tile later instead. ``pixel_size`` / ``cell_diameter`` resize the
        image to the model's scale (see ``predict``).
        """
        self.zoom_for(pixel_size=pixel_size, cell_diameter=cell_diameter)  # a bad value fails before any read
        chw, source, image_pixel_size = self._read(image, channel_axis=channel_axis, channel_index=channel_index)
        zoom, scale_source = self.scale_for(pixel_size=pixel_size, cell_diameter=cell_diameter,
                                            image_pixel_size=image_pixel_size)
        if isinstance(chw, LazyTiff):
            if zoom != 1.0:
                raise ValueError(f"{chw.shape[1]} x {chw.shape[2]} px, read a tile at a time, cannot be resized by "
                                 f"{zoom:.3g} to {self.name}'s scale; resize it first, or pass the model's own "
                                 f"cell_diameter={self.info.cell_diameter:g} if it is at that scale")
            return PreparedInput(chw=chw, source=source, tile_size=tile_size or constants.DEFAULT_TILE_SIZE,
                                 scale_source=scale_source)
        _, h, w = chw.shape
        resized = x = ranges = None
        if zoom != 1.0:  # normalise with the input's own statistics, then resize (NaN already 0)
            ranges = channel_ranges(chw, self.info.normalization)
            resized = resize_chw(apply_ranges(chw, *ranges), zoomed_shape((h, w), zoom))
            h, w = resized.shape[1:]
        if tile_size is None and h * w > constants.TILE_THRESHOLD_PIXELS:
            tile_size = constants.DEFAULT_TILE_SIZE
        if tile_size is None:
            if resized is not None:
                x = self._padded(resized)
            else:
                ranges = channel_ranges(chw, self.info.normalization)
                if not self._normalizes_in_graph(chw):  # else x is made only if asked for
                    x = self._padded(apply_ranges(chw, *ranges))
        item = PreparedInput(chw=chw, normalized=x, source=source, tile_size=tile_size, zoom=zoom,
                             resized=resized if tile_size is not None else None, ranges=ranges,
                             scale_source=scale_source)
        return item

    def _normalizes_in_graph(self, chw: np.ndarray) -> bool:
        """Whether the backend can take ``chw`` as it is with its normalisation's ranges: OpenVINO,
        an 8- or 16-bit image (exact in float32), at least the network's smallest size (no padding)."""
        return (getattr(self.model, "normalizes_in_graph", False) and chw.dtype in _GRAPH_DTYPES
                and min(chw.shape[1:]) >= self.info.min_size)

    def _scale_notice(self, measured: float | None, source: str | None) -> None:
        """One notice per Classifier when one of its first ``constants.SCALE_CHECKS`` images whose scale was
        guessed has cells far from the training images' (``measured``: qc's reading of it, the same
        ``milcnn.scale.estimate_cell_diameter``): a screen is imaged at one scale, so one notice says it."""
        expected = self.info.measured_cell_diameter
        if self._scale_checks_left <= 0 or not expected or not self.info.cell_diameter:
            return
        self._scale_checks_left -= 1
        tolerance = self.info.measured_tolerance or SCALE_TOLERANCE
        if measured is None or 1 / tolerance <= measured / expected <= tolerance:
            return
        self._scale_checks_left = 0
        diameter = self.info.cell_diameter * measured / expected
        pixel = f" or the pixel size in um (model: {self.info.pixel_size:g})" if self.info.pixel_size else ""
        log.warning(f"{source or 'image'}: cells look about {measured / expected:.1f}x the size {self.name} was trained "
               f"at (about {diameter:.0f} px across, the model expects {self.info.cell_diameter:.0f} px); results "
               f"may be wrong. Pass cell_diameter={diameter:.0f} (--cell-diameter {diameter:.0f}){pixel} to rescale. "
               "Not reported again for this model.")

    def predict_prepared(self, inputs: list[PreparedInput], *, threshold: float = constants.DEFAULT_THRESHOLD,
                         model: OnnxModel | OpenVinoModel | None = None) -> list[Prediction]:
        """Run the network on prepared inputs; same-size whole images go through as one batch.

        ``model``: the session for whole images (default ``self.model``; ``milzoo predict``
        passes one per inference stream). Tiled images always use ``self.model``.
        """
        results = []
        whole = [item for item in inputs if not item.tiled]
        if len({item.input_shape for item in whole}) > 1:
            return [r for item in inputs for r in self.predict_prepared([item], threshold=threshold, model=model)]
        if whole:
            probs, maps = _run_network(model or self.model, whole)
        batch_index = 0
        for item in inputs:
            if item.tiled:
                if item.resized is None:
                    p, m = self._run_tiled(item.chw, item.tile_size)
                else:  # already normalised with the whole input's statistics
                    p, m = self._run_tiled(item.resized, item.tile_size, normalized=True)
            else:
                p, m = probs[batch_index], maps[batch_index]
                batch_index += 1
            results.append(self._prediction(p, m, item, threshold=threshold))
        return results

    def predict(self, image, *, channel_axis: int | None = None, threshold: float = constants.DEFAULT_THRESHOLD,
                tile_size: int | None = None, pixel_size: float | None = None,
                cell_diameter: float | None = None, channel_index: tuple[int, ...] | None = None) -> Prediction:
        """Classify and segment one image.

        Images larger than ``constants.TILE_THRESHOLD_PIXELS`` (or any image, with
        ``tile_size``) run in overlapping tiles whose class maps are stitched before pooling,
        so memory stays bounded and the result matches whole-image inference.

        Args:
            image: a path, or a numpy array: H x W (one-channel models), C x H x W or H x W x C,
                with channels in the model's order (``clf.channels``).
            channel_axis: which axis holds the channels, when the shape is ambiguous.
            threshold: class-map probability for a pixel to enter the mask.
            tile_size: run in tiles of this many pixels (a multiple of the output stride).
            pixel_size: the image's pixel size in um; the image is resized to the model's
                (``clf.info.pixel_size``) before the network, and the mask and maps come back
                at the input's size.
            cell_diameter: instead of ``pixel_size``, the typical cell diameter in px (as
                Cellpose's ``diameter``), matched to ``clf.info.cell_diameter``.
            channel_index: the model's channels, in order, from an image with more (e.g. ``(0, 2)``);
                OME-TIFFs that name their channels are matched by name without it.

        Returns:
            a Prediction.

        Raises:
            ImageReadError: the file cannot be read.
            ValueError: the array's shape does not fit the model's channels, a bad tile size,
                or a bad or unusable pixel_size / cell_diameter.
        """
        item = self.prepare_input(image, channel_axis=channel_axis, tile_size=tile_size, pixel_size=pixel_size,
                                  cell_diameter=cell_diameter, channel_index=channel_index)
        return self.predict_prepared([item], threshold=threshold)[0]

    def predict_batch(self, images, *, channel_axis: int | None = None,
                      threshold: float = constants.DEFAULT_THRESHOLD, batch_size: int = 1,
                      pixel_size: float | None = None, cell_diameter: float | None = None) -> list[Prediction]:
        """``predict`` on each of ``images`` (paths or arrays), in order.

        Args:
            batch_size: consecutive images of the same size go through the network this many
                at a time (worth it on a GPU; on a CPU one at a time is as fast).
            pixel_size, cell_diameter: as in ``predict``, for every image.
        """
        results: list[Prediction] = []
        group: list[PreparedInput] = []
        for image in images:
            item = self.prepare_input(image, channel_axis=channel_axis, pixel_size=pixel_size,
                                      cell_diameter=cell_diameter)
            if group and (len(group) >= batch_size or item.tiled or group[0].input_shape != item.input_shape):
                results += self.predict_prepared(group, threshold=threshold)
                group = []
            if item.tiled:
                results += self.predict_prepared([item], threshold=threshold)
            else:
                group.append(item)
        if group:
            results += self.predict_prepared(group, threshold=threshold)
        return results

    def preprocess(self, image, *, channel_axis: int | None = None) -> np.ndarray:
        """The normalised float32 (C, H, W) array the network sees (before any padding)."""
        chw, _ = self.prepare(image, channel_axis=channel_axis)
        return normalize(chw, self.info.normalization)

    def _padded(self, x: np.ndarray) -> np.ndarray:
        _, h, w = x.shape
        m = self.info.min_size
        if h < m or w < m:  # too small for the network: pad with background (0 after normalisation)
            x = np.pad(x, ((0, 0), (0, max(0, m - h)), (0, max(0, m - w))))
        return x

    def _run_tiled(self, chw: np.ndarray, tile_size: int, *,
                   normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and class maps of a whole image, computed tile by tile (``milcnn.tiling``),
        then pooled by the model's own pooling layer (``pooling.onnx``) on the stitched maps.
        ``normalized``: ``chw`` is already normalised (a rescaled image), so tiles go in as they are;
        otherwise each tile is normalised with the whole image's statistics."""
        pooling = self._pooling_model()
        if isinstance(chw, LazyTiff):  # whole-image statistics, a segment at a time
            low, scale = chw.channel_ranges(self.info.normalization)
        elif not normalized:
            low, scale = channel_ranges(chw, self.info.normalization)  # whole-image statistics

        def run(window: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(window) if normalized else apply_ranges(window, low, scale)
            _, maps = self.model.run(self._padded(x)[None])
            return maps[0]

        maps = stitch_maps(chw, run, n_classes=len(self.classes), tile_size=tile_size,
                           stride=self.info.output_stride, receptive_field=self.info.receptive_field)
        (probs,) = pooling.run(maps[None])
        return probs[0], maps

    def _pooling_model(self) -> OnnxModel:
        if self._pooling is None:
            path = self.folder / constants.POOLING_FILE
            if not path.is_file():
                raise ModelConfigError(f"{self.folder}: tiled inference needs {constants.POOLING_FILE} (the model's "
                                       "pooling layer alone); re-export the model with training/export.py")
            verify_sha256(path, self.info.file_sha256(path.name))
            self._pooling = OnnxModel(path, device="cpu", outputs=("probabilities",))
        return self._pooling

    def _pool(self, maps: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """The model's pooling layer on ``maps`` (K, h, w) alone; ``fallback`` where the folder has no
        pooling layer (attention pooling, which needs the network's features: logged once)."""
        if not (self.folder / constants.POOLING_FILE).is_file():
            if not self._warned_pooling:
                self._warned_pooling = True
                log.warning("%s: no %s, so images below %d px are pooled with their padding (re-export the model "
                            "with training/export.py)", self.name, constants.POOLING_FILE, self.info.min_size)
            return fallback
        (probs,) = self._pooling_model().run(np.ascontiguousarray(maps[None], dtype=np.float32))
        return probs[0]

    def _prediction(self, probs: np.ndarray, maps: np.ndarray, item: PreparedInput, *, threshold: float) -> Prediction:
        stride = self.info.output_stride
        shape = item.chw.shape[1:]
        h, w = zoomed_shape(shape, item.zoom) if item.zoom != 1.0 else shape
        valid = maps[:, : -(-h // stride), : -(-w // stride)]
        if valid.shape != maps.shape:  # padded to min_size: pool the image's own instances only
            probs = self._pool(valid, probs)
        maps = valid
        raw = np.asarray(probs, dtype=np.float64)
        calibrated = raw if self.info.calibration is None else self.info.calibration.apply(raw)
        features = None if min(h, w) < self.info.min_size else self._features(item, maps, (h, w))
        if features is not None and not item.tiled and item.scale_source == "model":
            self._scale_notice(features.diameter, item.source)
        qc = assess(features, self.qc_limits, shape=(h, w), min_size=self.info.min_size, raw=raw,
                    top=self.classes[int(np.argmax(raw))])
        call = decide(calibrated, self.classes, threshold=threshold, multi_label=self.info.multi_label, qc=qc)
        return Prediction(
            label=call.label,
            probabilities={c: float(p) for c, p in zip(self.classes, calibrated)},
            classes=self.classes,
            maps=np.ascontiguousarray(maps, dtype=np.float32),
            stride=stride,
            shape=(int(shape[0]), int(shape[1])),
            threshold=threshold,
            source=item.source,
            zoom=item.zoom,
            raw_probabilities={c: float(p) for c, p in zip(self.classes, raw)},
            qc=qc,
            features=features,
            labels=call.labels,
            top=call.top,
            scale_source=item.scale_source,
        )

    @property
    def qc_limits(self) -> QualityLimits | None:
        """The limits qc checks against: the model's fitted ``qc`` block, else (older exports) its recorded
        cell-size reading with its tolerance."""
        return self.info.qc or QualityLimits.from_scale(self.info.measured_cell_diameter,
                                                         self.info.measured_tolerance)

    def _features(self, item: PreparedInput, maps: np.ndarray, shape: tuple[int, int]) -> Features | None:
        """qc's reading of an image at the network's scale (``milcnn.quality.measure``); a tiled image is
        read in its central ``constants.DEFAULT_TILE_SIZE`` square, an image read a tile at a time not at all."""
        h, w = shape
        if item.tiled:
            if isinstance(item.chw, LazyTiff):
                return None
            t = constants.DEFAULT_TILE_SIZE
            top, left = max(0, (h - t) // 2), max(0, (w - t) // 2)
            window = (slice(None), slice(top, top + t), slice(left, left + t))
            if item.resized is not None:
                return measure(item.resized[window], None, maps, normalized=True)
            crop = item.chw[window]
            return measure(crop, channel_ranges(crop, self.info.normalization), maps)
        if item.zoom != 1.0:
            return measure(item.x[:, :h, :w], None, maps, normalized=True)
        return measure(item.chw, item.ranges, maps)

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
