"""Fit a model folder's calibration and qc limits on images it was not trained on, and release it.

    python -m training.calibrate zoo/yeast-loc --data data/yeast2-cal/manifest.csv --real yeast-chong \
        --version 2.1.0

Every reference image goes through the SDK as a user's image would (``Classifier.predict``: scale from the
image, the model's default otherwise), with the folder's calibration and qc switched off, so what is fitted
is what the SDK will apply:

- **calibration** (``milcnn.process.calibration``): ``temperature`` and ``vector_scaling`` (single-label models) or
  ``platt`` (multi-label ones), each scored by 5-fold cross-validated negative log-likelihood on the
  reference images; the best is fitted on all of them. Reference images: ``--data`` (simulated images of
  held-out seeds) and, with ``--real``, the validation half of that real set as ``4 x 4`` mosaics of a
  field's cells (the test half is never read); ``--real-qc-only`` uses the real half for the qc limits
  only (a model that was self-trained on it).
- **qc** (``milcnn.process.quality``): the object-diameter range, the lowest texture, the largest coverage and the
  range of channel similarity of the reference images, each widened by a margin (``MARGINS``), and the
  feature distance's class means, shared covariance and limit (``fit_distance``).

The folder's ``config.json`` gets both blocks (and ``--version``; ``--pixel-size`` corrects the recorded
pixel size of the training images), ``sample_output.json`` is predicted again and the card re-rendered.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from milcnn import constants
from milcnn.process.calibration import METHODS, Calibration, logit
from milcnn.model.config import read_config
from milcnn.process.quality import FeatureDistance, QualityLimits, feature_vector
from .metrics import expected_calibration_error

__all__ = ["fit_calibration", "fit_limits", "fit_distance", "reference_outputs", "MARGINS"]

log = logging.getLogger(__name__)

#: how far beyond the reference images' own range qc lets an image go: diameters by a factor, texture,
#: coverage and the lower channel similarity by an absolute amount, the upper one by this share of its
#: distance to 1 (identical channels, 1.0, are an artefact's)
MARGINS = {"diameter": 1.3, "texture": 0.1, "coverage": 0.1, "similarity": 0.1, "similarity_to_1": 0.5,
           "distance": 1.2,  # the feature distance: a factor
           "diameter_by_class": 1.5}  # a factor; chosen on the validation half (see fit_limits)
#: a class's own diameter range needs this many reference images whose top class it is
MIN_PER_CLASS = 5
#: the reference images' quantiles that set the qc limits (a stray reading does not set them alone)
QUANTILES = (0.005, 0.995)
REGULARISATION = 1e-3  # L2 pull of weights towards 1 and biases towards 0 (per image)
FOLDS = 5


# ---------------------------------------------------------------------------------------- references

def reference_outputs(clf, *, manifests=(), real: str | None = None, real_root=None, k: int = 4) -> dict:
    """Raw probabilities, qc features and targets of the reference images, through the SDK.

    Returns:
        ``{"raw": (N, K), "targets": (N, K) 0/1 (every accepted class of a real group), "features": [...],
        "real": (N,) bool, "fields": (N,) the real field or "simulated"}``.
    """
    from .data.manifest import load_image, read_manifest
    from .data.real import REAL_SETS, load_fields, mosaics

    clf.info = replace(clf.info, calibration=None, qc=None)  # raw outputs, every feature read
    raw, targets, features, is_real, fields = [], [], [], [], []

    def add(image, accepted, real_image, field="simulated"):
        pred = clf.predict(image)
        raw.append([pred.raw_probabilities[c] for c in clf.classes])
        targets.append([1.0 if c in accepted else 0.0 for c in clf.classes])
        features.append(pred.features)
        is_real.append(real_image)
        fields.append(field)

    for manifest in manifests:
        samples, _, _ = read_manifest(manifest, channels=clf.channels, classes=clf.classes)
        for sample in samples:  # a file as users give it (its own pixel size); channel files stacked
            image = sample.paths[0] if len(sample.paths) == 1 else load_image(sample, len(clf.channels))
            add(image, set(sample.labels), False)
    if real:
        rs = REAL_SETS[real]
        for f in load_fields(rs, real_root, channels=clf.channels):
            if rs.half(f) != "validation":
                continue  # the test half is never read here
            for mosaic in mosaics(f.cells, k):
                add(mosaic, set(f.group.accepted), True, f.name)
    return {"raw": np.array(raw), "targets": np.array(targets), "features": features,
            "real": np.array(is_real, dtype=bool),
            "fields": np.array(fields)}


# ---------------------------------------------------------------------------------------- calibration

def _unpack(theta: np.ndarray, method: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    if method == "temperature":
        return np.full(k, np.exp(theta[0])), np.zeros(k)
    if method == "vector_scaling":
        return np.exp(theta[:k]), theta[k:]
    return theta[:k], theta[k:]  # platt: a sign of its own per class


def _loss(theta, method, z, targets):
    k = z.shape[1]
    w, b = _unpack(theta, method, k)
    s = z * w + b
    if METHODS[method]:  # softmax over the classes; a real group with two accepted classes: either is right
        s = s - s.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(s).sum(axis=1))
        right = np.log((np.exp(s) * targets).sum(axis=1) + 1e-300)
        nll = float(np.mean(log_norm - right))
    else:
        nll = float(np.mean(np.logaddexp(0, -s) * targets + np.logaddexp(0, s) * (1 - targets)) * k)
    pull = (np.log(w) if method != "platt" else w - 1.0) if method != "temperature" else np.log(w[:1])
    return nll + REGULARISATION * float(np.sum(pull ** 2) + np.sum(b ** 2))


def _fit(method: str, z: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = z.shape[1]
    start = {"temperature": np.zeros(1), "vector_scaling": np.zeros(2 * k),
             "platt": np.concatenate([np.ones(k), np.zeros(k)])}[method]
    theta = minimize(_loss, start, args=(method, z, targets), method="L-BFGS-B").x
    return _unpack(theta, method, k)


def _apply(method, w, b, raw) -> np.ndarray:
    return Calibration(method, tuple(w), tuple(b)).apply(raw)


def _scores(probabilities: np.ndarray, targets: np.ndarray) -> dict:
    top = probabilities.argmax(axis=1)
    right = targets[np.arange(len(top)), top] > 0
    conf = probabilities.max(axis=1)
    nll = float(-np.mean(np.log(np.clip((probabilities * targets).sum(axis=1), 1e-12, None))))
    return {"nll": nll, "ece": expected_calibration_error(conf, right)}


def fit_calibration(raw: np.ndarray, targets: np.ndarray, *, multi_label: bool, seed: int = 0) -> tuple[Calibration, dict]:
    """The calibration with the lowest cross-validated NLL, fitted on all reference images, and the
    measurements that chose it (per method: NLL and ECE of the held-out folds; ``none``: raw outputs)."""
    z = logit(raw)
    methods = [m for m, exclusive in METHODS.items() if exclusive != multi_label]
    order = np.random.default_rng(seed).permutation(len(raw))
    folds = np.array_split(order, FOLDS)
    measured = {"none": _scores(raw / (1.0 if multi_label else raw.sum(axis=1, keepdims=True)), targets)}
    for method in methods:
        held = np.zeros_like(raw)
        for fold in folds:
            train = np.setdiff1d(order, fold)
            w, b = _fit(method, z[train], targets[train])
            held[fold] = _apply(method, w, b, raw[fold])
        measured[method] = _scores(held, targets)
    best = min(methods, key=lambda m: measured[m]["nll"])
    w, b = _fit(best, z, targets)
    choice = {"cross_validated": {m: {k: round(v, 4) for k, v in s.items()} for m, s in measured.items()},
              "folds": FOLDS, "chosen_by": "lowest cross-validated negative log-likelihood"}
    return Calibration(best, tuple(float(v) for v in w), tuple(float(v) for v in b)), choice


# ---------------------------------------------------------------------------------------- qc

def _class_gaussians(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means (k, D) and the precision of the covariance they share (shrunk by 0.1 % of its mean
    variance, so a flat direction does not make it singular)."""
    means = np.stack([x[y == c].mean(axis=0) if (y == c).any() else x.mean(axis=0) for c in range(k)])
    r = x - means[y]
    cov = r.T @ r / len(x)
    cov += np.eye(len(cov)) * 1e-3 * np.trace(cov) / len(cov)
    return means, np.linalg.inv(cov)


def fit_distance(raw: np.ndarray, targets: np.ndarray, features: list, fields: np.ndarray, *,
                 seed: int = 0) -> tuple[FeatureDistance, dict]:
    """The feature distance of ``milcnn.process.quality`` and its limit: ``MARGINS["distance"]`` times the larger of
    the reference images' 99.5th-percentile distance in 5-fold cross-validation and the largest distance of
    a real field held out whole, as a new field of the same screen would be.

    Chosen on the validation half only (half of its fields fitted with the simulated images, the other half
    measured, with those fields at 2x and 0.5x and the other real set's validation half as images the model
    was not made for): against holding out a whole protein or treatment, a field held out flagged none of the
    held-out fields of ``yeast-loc`` and ``mcf7-moa`` (1 of 25 mosaics of ``yeast-loc-gfp``) and rejected more
    of the rest (``yeast-loc-gfp`` at 2x: 96 % against 0 %; ``mcf7-moa``'s other set: 98 % against 0 %)."""
    x = np.stack([feature_vector(r, f) for r, f in zip(raw, features)])
    y = np.argmax(targets * (raw + 1e-9), axis=1)  # a group with two right classes: the one the model ranks higher
    k = raw.shape[1]

    def distances(train, test):
        means, precision = _class_gaussians(x[train], y[train], k)
        d = x[test][:, None, :] - means[None]
        return np.sqrt(np.maximum(0, np.einsum("nkd,de,nke->nk", d, precision, d).min(axis=1)))

    order = np.random.default_rng(seed).permutation(len(x))
    cv = np.zeros(len(x))
    for fold in np.array_split(order, FOLDS):
        cv[fold] = distances(np.setdiff1d(order, fold), fold)
    held = {str(f): float(distances(np.flatnonzero(fields != f), np.flatnonzero(fields == f)).max())
            for f in sorted(set(fields.tolist()) - {"simulated"})}
    base = max([float(np.quantile(cv, QUANTILES[1])), *held.values()])
    means, precision = _class_gaussians(x, y, k)
    record = {"cross_validated_q995": round(float(np.quantile(cv, QUANTILES[1])), 3),
              "field_held_out_max": round(max(held.values()), 3) if held else None, "margin": MARGINS["distance"]}
    return FeatureDistance(means, precision, round(base * MARGINS["distance"], 3)), record


def fit_limits(features: list, distance: FeatureDistance | None = None, *, raw: np.ndarray | None = None,
               classes: tuple[str, ...] = ()) -> QualityLimits:
    """qc limits from the reference images' features (``MARGINS`` beyond their ``QUANTILES``); with ``raw``, also
    each class's own diameter range over the images whose largest raw probability it is (``MIN_PER_CLASS``).

    The per-class ranges and their margin 1.5 were chosen on the validation half (half of its fields fitted with
    the simulated images, the other half measured as they are and at 2x and 0.5x): ``yeast-loc-gfp``, whose one
    channel reads anything from puncta to whole cells (a global range of 3.6 to 41 px), flagged 84 % of the
    fields at 2x against 0 %, and 1 of 25 at 1x, the one it called wrong; ``yeast-loc`` none at 1x (at 1.3: 1 of 25)."""
    lo, hi = QUANTILES
    diameters = np.array([f.diameter for f in features if f is not None and f.diameter is not None])
    texture = np.array([f.texture for f in features if f is not None])
    coverage = np.array([f.coverage for f in features if f is not None])
    similar = np.array([f.similarity for f in features if f is not None and f.similarity is not None])
    similarity = None
    if similar.size:
        top = float(np.quantile(similar, hi))
        similarity = (round(max(-1.0, float(np.quantile(similar, lo)) - MARGINS["similarity"]), 4),
                      round(min(1.0, top + (1.0 - top) * MARGINS["similarity_to_1"]), 4))
    by_class = {}
    if raw is not None:
        top = np.argmax(raw, axis=1)
        for k, name in enumerate(classes):
            d = np.array([f.diameter for f, t in zip(features, top)
                          if t == k and f is not None and f.diameter is not None])
            if len(d) >= MIN_PER_CLASS:
                by_class[name] = (round(float(np.quantile(d, lo)) / MARGINS["diameter_by_class"], 3),
                                  round(float(np.quantile(d, hi)) * MARGINS["diameter_by_class"], 3))
    return QualityLimits(
        diameter_by_class=by_class,
        diameter=(round(float(np.quantile(diameters, lo)) / MARGINS["diameter"], 3),
                  round(float(np.quantile(diameters, hi)) * MARGINS["diameter"], 3)),
        texture_min=round(max(-1.0, float(np.quantile(texture, lo)) - MARGINS["texture"]), 4),
        coverage_max=round(min(1.0, float(np.quantile(coverage, hi)) + MARGINS["coverage"]), 4),
        similarity=similarity, distance=distance)


# ---------------------------------------------------------------------------------------- release

def calibrate_folder(folder, *, manifests, real=None, real_root=None, real_qc_only=False, version=None,
                     pixel_size=None) -> dict:
    """Fit and write calibration and qc into ``folder`` (see the module's docstring); returns the config."""
    from milcnn import Classifier
    from milcnn.io.images import write_atomic
    from .model_card import update_folder

    folder = Path(folder)
    if pixel_size is not None:
        update_folder(folder, scale=read_config(folder)["scale"] | {"pixel_size_um": pixel_size})
    clf = Classifier.from_dir(folder, device="cpu")
    ref = reference_outputs(clf, manifests=manifests, real=real, real_root=real_root)
    use = ~ref["real"] if real_qc_only else np.ones(len(ref["raw"]), dtype=bool)
    calibration, choice = fit_calibration(ref["raw"][use], ref["targets"][use], multi_label=clf.info.multi_label)
    sets = [str(m) for m in manifests]
    real_text = f"the validation half of {real} as 4 x 4 mosaics of a field's cells" if real else None
    calibration = replace(calibration, fitted_on={
        "images": int(use.sum()), "simulated": sets, "real": None if real_qc_only else real_text, **choice})
    distance, distance_record = fit_distance(ref["raw"], ref["targets"], ref["features"], ref["fields"])
    limits = replace(fit_limits(ref["features"], distance, raw=ref["raw"], classes=clf.classes), fitted_on={
        "images": len(ref["raw"]), "simulated": sets, "real": real_text, "margins": MARGINS,
        "quantiles": list(QUANTILES), "distance": distance_record})
    config = update_folder(folder, calibration=calibration.to_dict(), qc=limits.to_dict(),
                           **({"version": version} if version else {}))
    sample = folder / constants.SAMPLE_OUTPUT_FILE
    if sample.is_file():  # the self-test's record: the calibrated call on the bundled sample
        before = json.loads(sample.read_text())
        pred = Classifier.from_dir(folder, device="cpu").predict(folder / constants.SAMPLE_INPUT_FILE)
        after = pred.to_dict() | {"image": constants.SAMPLE_INPUT_FILE}
        if "true_label" in before:
            after["true_label"] = before["true_label"]
        with write_atomic(sample, "w") as fh:
            fh.write(json.dumps(after, indent=2) + "\n")
    return config


def main(argv: list[str] | None = None) -> int:
    from milcnn.logs import log_to_stderr

    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an exported model folder (config.json is rewritten)")
    parser.add_argument("--data", action="append", default=[], metavar="MANIFEST",
                        help="simulated images of seeds the model was not trained, validated or tested on (repeat)")
    parser.add_argument("--real", metavar="SET", help="also the validation half of this real set (e.g. yeast-chong)")
    parser.add_argument("--real-data", type=Path, help="the real-data folder (default ../shared/realdata-labelled)")
    parser.add_argument("--real-qc-only", action="store_true",
                        help="use the real validation half for the qc limits only (the model was trained on it)")
    parser.add_argument("--version", help="the new version to record (a minor release: same weights)")
    parser.add_argument("--pixel-size", type=float,
                        help="correct the recorded pixel size (um) of the training images")
    parser.add_argument("--register", metavar="ORG/NAME@REVISION", help="pin the new version in the zoo registry")
    parser.add_argument("--registry", type=Path, default=Path("zoo/registry.json"))
    args = parser.parse_args(argv)
    log_to_stderr()
    if not args.data and not args.real:
        parser.error("give --data and/or --real")
    config = calibrate_folder(args.folder, manifests=args.data, real=args.real, real_root=args.real_data,
                              real_qc_only=args.real_qc_only, version=args.version, pixel_size=args.pixel_size)
    cal = config["calibration"]
    print(f"{args.folder}: {cal['method']} (cross-validated: "
          + ", ".join(f"{m} NLL {s['nll']:.3f} ECE {s['ece']:.3f}" for m, s in cal["fitted_on"]["cross_validated"].items())
          + f"); qc {json.dumps({k: v for k, v in config['qc'].items() if k not in ('fitted_on', 'distance')})}, "
          f"distance limit {config['qc']['distance']['limit']} ({config['qc']['fitted_on']['distance']})")
    if args.register:
        from .export import register

        register(args.registry, name=config["name"], spec=args.register, folder=args.folder,
                 summary=config.get("summary", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
