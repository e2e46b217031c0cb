"""Quality control of one field: whether the model's call on it can be trusted at all (``qc``).

A model answers every image it is given; on a blank field, a noise frame or a striped artefact it can
still give one class a large probability. ``assess`` says, per image, ``ok`` or the first reason the
image is unlike what the model was made for:

- ``too_small``: the image (at the model's scale) is below the network's ``min_size``;
- ``no_cells``: nothing stands out from the background in any channel (blank or constant), or every channel
  is pixel noise without structure (an empty field: texture below ``NOISE_TEXTURE``);
- ``off_scale``: its objects measure far from the training images' (``milcnn.process.scale.estimate_cell_diameter``),
  or from those of the reference images the model gave the same top class (a punctate pattern reads smaller
  than a cytosolic one: per class, the range is tighter);
- ``out_of_distribution``: its texture, the share of it the model marks or the likeness of its channels is
  outside what the model's own reference images span (pixel noise has no texture; stripes and grids make
  the model mark everything; an artefact looks the same in every channel, and another screen's stains
  relate to each other otherwise than the model's: a yeast GFP lies inside the cells its RFP fills), or
  its features are far from every class of the reference images: the Mahalanobis distance of
  ``feature_vector`` (the logits of the pooled outputs and the four readings above) to the nearest class
  mean, with one covariance shared by the classes (Lee et al. 2018, "A simple unified framework for
  detecting out-of-distribution samples and adversarial attacks").

The limits are fitted at export on in-distribution images (``training/calibrate.py``) and stored in
``config.json`` (``qc``). A field whose qc is not ``ok`` is ``unassigned`` (``milcnn.process.decision``).
Features are read from every other pixel of the normalised image (a quarter of its pixels: about
1 ms for 512 x 512 px) and from the class maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from milcnn.process.preprocess import apply_ranges
from milcnn.process.scale import SCALE_TOLERANCE, estimate_cell_diameter

__all__ = ["QC_OK", "QC_REASONS", "QualityLimits", "Features", "FeatureDistance", "feature_vector", "measure",
           "assess"]

QC_OK = "ok"
#: the reasons ``assess`` gives, in the order it checks them
QC_REASONS = ("too_small", "no_cells", "off_scale", "out_of_distribution")
#: a map pixel counts as marked where its largest class map reaches this
MARKED = 0.5
#: below this texture every channel is structureless pixel noise (an empty field's camera noise reads about 0;
#: the zoo's reference images, simulated and real, read 0.47 and more)
NOISE_TEXTURE = 0.2
_STEP = 2  # features from every other row and column


@dataclass(frozen=True)
class Features:
    """What ``assess`` reads of one image: the typical object diameter in px at the network's scale
    (None where nothing stands out), the texture (the largest over channels of the correlation of pixels
    two apart: 0 for pixel noise, near 1 for cells), the share of map pixels the model marks, and the
    similarity of its channels (the largest correlation between two of them; None for one channel)."""

    diameter: float | None
    texture: float
    coverage: float
    similarity: float | None = None

    def to_dict(self) -> dict:
        return {"diameter": None if self.diameter is None else round(float(self.diameter), 3),
                "texture": round(float(self.texture), 4), "coverage": round(float(self.coverage), 4),
                "similarity": None if self.similarity is None else round(float(self.similarity), 4)}


def feature_vector(raw, features: Features) -> np.ndarray:
    """(K + 4,): the logits of the raw pooled probabilities, log diameter, texture, coverage and channel
    similarity (0 for one channel): what ``FeatureDistance`` measures."""
    from milcnn.process.calibration import logit

    readings = [np.log(features.diameter or 1.0), features.texture, features.coverage, features.similarity or 0.0]
    return np.concatenate([logit(raw), readings])


@dataclass(frozen=True, eq=False)
class FeatureDistance:
    """Class means (K, D) and the shared precision matrix (D, D) of the reference images' ``feature_vector``,
    and the largest distance that counts as in-distribution (``limit``)."""

    means: np.ndarray
    precision: np.ndarray
    limit: float

    def __call__(self, raw, features: Features) -> float:
        """The distance of one image to the nearest class mean."""
        d = feature_vector(raw, features)[None] - self.means  # (K, D)
        return float(np.sqrt(max(0.0, np.einsum("kd,de,ke->k", d, self.precision, d).min())))

    def to_dict(self) -> dict:
        return {"means": np.round(self.means, 6).tolist(), "precision": np.round(self.precision, 6).tolist(),
                "limit": float(self.limit)}

    @classmethod
    def from_dict(cls, d, *, n_classes: int) -> "FeatureDistance":
        if not isinstance(d, dict):
            raise ValueError(f"qc.distance must be an object, got {type(d).__name__}")
        dim = n_classes + 4
        arrays = {}
        for key, shape in (("means", (n_classes, dim)), ("precision", (dim, dim))):
            try:
                a = np.asarray(d.get(key), dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"qc.distance.{key} must be a table of numbers") from None
            if a.shape != shape or not np.all(np.isfinite(a)):
                raise ValueError(f"qc.distance.{key} must be {shape[0]} x {shape[1]} finite numbers (the model has "
                                 f"{n_classes} classes), got shape {a.shape}")
            arrays[key] = a
        limit = d.get("limit")
        if not _number(limit) or limit <= 0:
            raise ValueError(f"qc.distance.limit must be a positive number, got {limit!r}")
        return cls(arrays["means"], arrays["precision"], float(limit))


@dataclass(frozen=True)
class QualityLimits:
    """``config.json``'s ``qc`` block: the range of object diameters (px, at the network's scale), the
    lowest texture, the largest coverage and the range of channel similarity (None: one channel, not
    checked) that count as in-distribution, and ``fitted_on`` (kept as written, for the card)."""

    diameter: tuple[float, float]
    texture_min: float
    coverage_max: float
    similarity: tuple[float, float] | None = None
    distance: FeatureDistance | None = None
    diameter_by_class: dict = field(default_factory=dict)  # top class -> (low, high)
    fitted_on: dict = field(default_factory=dict, compare=False)
    #: the smallest image side (px, at the network's scale) called ``ok``; None: the network's ``min_size``. A
    #: model adapted on crops smaller than that (``milzoo adapt``) records the smallest of them
    min_side: int | None = None

    def to_dict(self) -> dict:
        d = {"cell_diameter_px": [float(v) for v in self.diameter], "texture_min": float(self.texture_min),
             "coverage_max": float(self.coverage_max),
             "channel_similarity": None if self.similarity is None else [float(v) for v in self.similarity],
             "cell_diameter_px_by_class": {c: [float(v) for v in r] for c, r in self.diameter_by_class.items()},
             "distance": None if self.distance is None else self.distance.to_dict(), "fitted_on": self.fitted_on}
        return d if self.min_side is None else {**d, "min_side": int(self.min_side)}

    @classmethod
    def from_dict(cls, d, *, classes: tuple[str, ...]) -> "QualityLimits":
        """Read and check a ``qc`` block against the model's classes.

        Raises:
            ValueError: what is wrong, naming the field.
        """
        if not isinstance(d, dict):
            raise ValueError(f"qc must be an object, got {type(d).__name__}")
        diameter = _pair(d.get("cell_diameter_px"), "cell_diameter_px", 0.0, float("inf"))
        similarity = None if d.get("channel_similarity") is None else \
            _pair(d["channel_similarity"], "channel_similarity", -1.0, 1.0, closed=True)
        values = {}
        for key, lo, hi in (("texture_min", -1.0, 1.0), ("coverage_max", 0.0, 1.0)):
            v = d.get(key)
            if not _number(v) or not lo <= v <= hi:
                raise ValueError(f"qc.{key} must be a number in [{lo:g}, {hi:g}], got {v!r}")
            values[key] = float(v)
        distance = None if d.get("distance") is None else FeatureDistance.from_dict(d["distance"],
                                                                                     n_classes=len(classes))
        by_class = d.get("cell_diameter_px_by_class") or {}
        if not isinstance(by_class, dict):
            raise ValueError(f"qc.cell_diameter_px_by_class must map classes to [low, high], got {by_class!r}")
        unknown = [c for c in by_class if c not in classes]
        if unknown:
            raise ValueError(f"qc.cell_diameter_px_by_class names {', '.join(map(repr, unknown))}, not a class of the "
                             "model")
        by_class = {c: _pair(r, f"cell_diameter_px_by_class.{c}", 0.0, float("inf")) for c, r in by_class.items()}
        min_side = d.get("min_side")
        if min_side is not None and (not isinstance(min_side, int) or isinstance(min_side, bool) or min_side < 1):
            raise ValueError(f"qc.min_side must be a whole number of px >= 1, got {min_side!r}")
        return cls(diameter=diameter, similarity=similarity, distance=distance, diameter_by_class=by_class,
                   fitted_on=dict(d.get("fitted_on") or {}), min_side=min_side, **values)

    @classmethod
    def from_scale(cls, measured: float | None, tolerance: float | None) -> "QualityLimits | None":
        """Limits for a model exported before qc was fitted: its recorded cell-size reading and tolerance
        (``config.json`` scale), no texture or coverage limit; None where it records no reading."""
        if not measured:
            return None
        t = tolerance or SCALE_TOLERANCE
        return cls(diameter=(measured / t, measured * t), texture_min=-1.0, coverage_max=1.0,
                   fitted_on={"from": "scale.measured_cell_diameter_px and measured_tolerance"})


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _pair(v, key: str, lo: float, hi: float, *, closed: bool = False) -> tuple[float, float]:
    """``[low, high]`` of a ``qc`` field, within (lo, hi) (``closed``: [lo, hi])."""
    inside = (lambda x: lo <= x <= hi) if closed else (lambda x: lo < x < hi)
    if not (isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v) and v[0] < v[1]
            and inside(v[0]) and inside(v[1])):
        bounds = f"[{lo:g}, {hi:g}]" if closed else f"({lo:g}, {hi:g})"
        raise ValueError(f"qc.{key} must be [low, high] with low < high, both in {bounds}, got {v!r}")
    return float(v[0]), float(v[1])


def measure(chw: np.ndarray, ranges, maps: np.ndarray, *, normalized: bool = False) -> Features:
    """The features of one image.

    Args:
        chw: (C, H, W) at the network's scale: raw pixels with ``ranges`` (low, scale), or, with
            ``normalized``, already normalised (a resized image).
        maps: (K, h, w) class maps of the image's own pixels (no padding).
    """
    sub = np.asarray(chw)[:, ::_STEP, ::_STEP]
    x = np.asarray(sub, dtype=np.float32) if normalized else apply_ranges(sub, *ranges)
    np.clip(x, 0.0, 1.0, out=x)
    diameter = estimate_cell_diameter(x, step=1)
    texture = max((_texture(plane) for plane in x), default=0.0)
    marked = float((maps.max(axis=0) >= MARKED).mean()) if maps.size else 0.0
    return Features(None if diameter is None else diameter * _STEP, texture, marked, _similarity(x))


def _similarity(x: np.ndarray) -> float | None:
    """The largest correlation between two channels of (C, h, w); None for one channel."""
    c = x.shape[0]
    if c < 2:
        return None
    a = [np.ascontiguousarray(plane - np.float32(plane.mean(dtype=np.float64))).ravel() for plane in x]
    norm = [float(np.sqrt(np.dot(v, v))) for v in a]
    best = -1.0
    for i in range(c):
        for j in range(i + 1, c):  # pairwise 1-D dot products: no BLAS threads started for a 2 x N product
            if norm[i] <= 1e-9 or norm[j] <= 1e-9:
                r = 1.0 if norm[i] <= 1e-9 and norm[j] <= 1e-9 else 0.0  # two flat channels are alike
            else:
                r = float(np.dot(a[i], a[j])) / (norm[i] * norm[j])
            best = max(best, r)
    return best


def _texture(plane: np.ndarray) -> float:
    """Correlation of pixels one step apart along rows, and along columns: the smaller of the two."""
    a = np.ascontiguousarray(plane - np.float32(plane.mean(dtype=np.float64)))
    h, w = a.shape
    if h < 2 or w < 2:
        return 0.0
    flat = a.ravel()
    var = float(np.dot(flat, flat)) / a.size
    if var < 1e-12:
        return 0.0
    # neighbours along a row, by one dot product over the flat image less the pairs that wrap to the next row
    rows = (float(np.dot(flat[1:], flat[:-1])) - float(np.dot(a[:-1, -1], a[1:, 0]))) / (h * (w - 1))
    cols = float(np.dot(flat[w:], flat[:-w])) / ((h - 1) * w)
    return min(rows, cols) / var


def assess(features: Features | None, limits: QualityLimits | None, *, shape: tuple[int, int], min_size: int,
           raw=None, top: str | None = None) -> str:
    """``ok`` or the first reason (``QC_REASONS``) the model's call on this image is not to be trusted.

    Args:
        features: ``measure``'s reading (None: only the size is checked).
        limits: the model's fitted limits (None: no scale or distribution check).
        shape: (H, W) at the network's scale, before any padding.
        raw: (K,) the network's pooled probabilities, for the feature distance.
        top: the class of the largest raw probability, for its own diameter range.
    """
    if min(shape) < min_size:
        return "too_small"
    if features is None:
        return QC_OK
    if features.diameter is None or features.texture < NOISE_TEXTURE:
        return "no_cells"
    if limits is None:
        return QC_OK
    if not limits.diameter[0] <= features.diameter <= limits.diameter[1]:
        return "off_scale"
    own = limits.diameter_by_class.get(top)
    if own is not None and not own[0] <= features.diameter <= own[1]:
        return "off_scale"
    if features.texture < limits.texture_min or features.coverage > limits.coverage_max:
        return "out_of_distribution"
    if limits.similarity is not None and features.similarity is not None \
            and not limits.similarity[0] <= features.similarity <= limits.similarity[1]:
        return "out_of_distribution"
    if limits.distance is not None and raw is not None and limits.distance(raw, features) > limits.distance.limit:
        return "out_of_distribution"
    return QC_OK
