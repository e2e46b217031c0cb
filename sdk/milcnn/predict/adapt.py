"""``milzoo adapt``: a model fitted to a new screen from a few labelled images, with numpy and onnxruntime only.

The network stays frozen. Its features (``config.json``'s ``head`` block names the second graph that gives them)
are computed once per example; the head (the 1 x 1 convolution to each class's map logits) is fitted for the
classes that have examples, through the model's own MIL pooling (Noisy-AND, Kraus et al. 2016) and its
calibration, by gradient descent on the examples' image labels with an L2 pull towards the original weights;
the other classes keep theirs. The new weights are written in place of the old in a copy of ``model.onnx`` (same graph,
same file size), so the adapted folder is a model folder like any other: ``milzoo predict --model FOLDER``,
``Classifier.from_dir``, napari. Its probabilities keep the model's own calibration, softened by a temperature
of at least 1 (a model without one: the temperature alone) chosen by the likelihood of the examples' outputs
under cross-validation: each example is scored by a head fitted without it.
"""

from __future__ import annotations

import csv
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from milcnn.errors import ModelConfigError
from milcnn.process.calibration import Calibration, logit

__all__ = ["Example", "read_examples", "examples_from", "adapt"]

log = logging.getLogger(__name__)

STEPS = 50  # Adam steps of the head fit (chosen on the real yeast validation half: 300 at 0.05 overshot)
RATE = 0.01
# L2 weight towards the original head, per weight: chosen on the real yeast validation proteins (benchmarks.adapt:
# 1e-3 let the fitted classes take over a class without examples, 1 held back a channel-swapped screen)
PULL = 0.1
FOLDS = 10  # cross-validation folds for the calibration (leave-one-out up to this many examples)
# a few examples are often separable, so their likelihood would pick the sharpest temperature there is: never
# sharpen the network's own outputs on so few images (1: as they are; up to 20: much softer)
TEMPERATURES = np.exp(np.linspace(0.0, np.log(20.0), 41))


@dataclass(frozen=True)
class Example:
    """One labelled image: ``source`` a file or an array (napari's layers), ``where`` what a message names it by
    (``line 3`` of the CSV, ``example 2 (field, cell 4)``), ``name`` what the card lists."""

    source: object
    labels: tuple[str, ...]
    where: str
    name: str
    channel_axis: int | None = None


def _labels(text: str, classes: tuple[str, ...], where: str) -> tuple[str, ...]:
    labels = tuple(v.strip() for v in (text or "").split("|") if v.strip())
    if not labels or [v for v in labels if v not in classes]:
        raise ValueError(f"{where}: label {text!r} is not among the model's classes ({', '.join(classes)})")
    return labels


def _two_classes(examples: list[Example], where) -> list[Example]:
    named = {c for e in examples for c in e.labels}
    if len(named) < 2:
        raise ValueError(f"{where}: examples of one class only ({', '.join(sorted(named))}); a head needs at least "
                         "two classes to tell apart")
    return examples


def examples_from(items, classes: tuple[str, ...], *, channel_axis: int | None = None) -> list[Example]:
    """Examples given in memory: ``(image, label)`` or ``(image, label, name)`` items, the image an array or a
    file, the label as in the CSV (``a|b`` allowed); ``channel_axis`` for the arrays, as ``predict`` takes it.

    Raises:
        ValueError: one line naming the example: a label not among ``classes``, fewer than two classes in all.
    """
    examples = []
    for i, (image, label, *name) in enumerate(items, 1):
        shown = name[0] if name else (Path(image).name if isinstance(image, (str, Path)) else f"image {i}")
        examples.append(Example(image, _labels(label, classes, f"example {i} ({shown})"), f"example {i} ({shown})",
                                shown, channel_axis))
    if not examples:
        raise ValueError("no examples: label at least one image of each of two classes")
    return _two_classes(examples, "the examples")


def read_examples(path, classes: tuple[str, ...]) -> list[Example]:
    """``path,label`` rows (paths relative to the CSV; ``a|b`` for several classes).

    Raises:
        ValueError: one line naming the file and row: no such columns, a label not among ``classes``, a missing
            file, fewer than two classes named in all, or no example at all.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            columns = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if not rows or not {"path", "label"} <= set(columns):
        raise ValueError(f"{path}: needs columns path,label and at least one row")
    examples = []
    for line, row in enumerate(rows, 2):
        labels = _labels(row["label"], classes, f"{path}, line {line}")
        image = (path.parent / (row["path"] or "").strip())
        if not row["path"] or not image.is_file():
            raise ValueError(f"{path}, line {line}: {row['path']!r} is not a file (paths are relative to the CSV)")
        examples.append(Example(image, labels, f"line {line}", image.name))
    return _two_classes(examples, path)


def adapt(model, examples, out, *, name: str | None = None, steps: int = STEPS,
          cell_diameter: float | None = None, channel_axis: int | None = None) -> Path:
    """Fit ``model`` (a zoo name, folder or Hub repo) to ``examples`` and write the adapted model folder ``out``
    (nothing is written unless the adaptation finished). Returns ``out``.

    Args:
        examples: a ``path,label`` CSV, or ``(image, label[, name])`` items (``examples_from``: arrays or files,
            ``channel_axis`` for the arrays).
        cell_diameter: the examples' cell diameter in px, where it differs from the model's (as ``milzoo predict
            --cell-diameter``); the adapted model then assumes it of every image given without a scale.

    Raises:
        ValueError: a bad examples file or image (one line naming the row); ModelConfigError: the model has no
        ``head`` block (``python -m training.features`` writes one) or pools otherwise than Noisy-AND.
    """
    from milcnn.predict.classifier import Classifier
    from milcnn.predict.options import PredictOptions

    clf = Classifier.from_hub(str(model))  # a folder, a zoo name or org/name[@revision], as --model takes it
    info = clf.info
    if info.head is None or info.pooling.get("name") != "noisy_and":
        raise ModelConfigError(f"{info.name}: cannot be adapted here: it needs a head block and Noisy-AND pooling "
                               "(python -m training.features FOLDER adds the block)")
    if not (clf.folder / info.head.features_file).is_file():
        raise ModelConfigError(f"{clf.folder}: no {info.head.features_file}, the features graph its head block names "
                               "(python -m training.features FOLDER writes it)")
    rows = read_examples(examples, info.classes) if isinstance(examples, (str, Path)) else \
        examples_from(examples, info.classes, channel_axis=channel_axis)
    import onnxruntime as ort

    options = PredictOptions(cell_diameter=cell_diameter)
    session = ort.InferenceSession(str(clf.folder / info.head.features_file), providers=["CPUExecutionProvider"])
    feats, sides = zip(*[_features(clf, session, e, options) for e in rows])
    targets = np.array([[c in e.labels for c in info.classes] for e in rows], dtype=np.float64)
    fitted = sorted({info.classes.index(c) for e in rows for c in e.labels})
    w0, b0 = _head(clf.folder, info.head)
    pooling = (float(info.pooling["params"]["a"]), np.asarray(info.pooling["learned_b"], np.float64))
    w, b = _fit(feats, targets, w0, b0, pooling, fitted, steps=steps, cal=info.calibration)
    held_out, held_targets = _cross_validated(feats, targets, w0, b0, pooling, fitted, steps=steps,
                                              cal=info.calibration)
    calibration = _temperature(held_out, held_targets, info.multi_label) if info.calibration is None else \
        _compose(info.calibration, held_out, held_targets)
    if cell_diameter is not None:
        info = replace(info, input_cell_diameter=float(cell_diameter),
                       input_cell_diameter_from="milzoo adapt --cell-diameter: the examples' cells")
    if info.qc is not None and min(sides) < info.min_size:  # fitted on crops: images their size are what it knows
        info = replace(info, qc=replace(info.qc, min_side=int(min(sides))))
    return _write(clf.folder, Path(out), info, w, b, calibration, rows, fitted, name=name)


def _features(clf, session, example: Example, options) -> tuple[np.ndarray, int]:
    """(instances, F) float32: the example's feature vectors (``session``: the features graph), one per map pixel
    of the image itself (padding left out, as ``milcnn.predict.result`` leaves it out of the pooling); and the
    image's smaller side at the network's scale."""
    from milcnn.process.scale import zoomed_shape

    try:
        item = clf.prepare_input(example.source, options, channel_axis=example.channel_axis)
    except Exception as exc:  # noqa: BLE001 - every reason an image cannot be read, in one line
        raise ValueError(f"{example.where}: {example.name}: {exc}") from None
    if item.x is None:
        raise ValueError(f"{example.where}: {example.name}: too large to adapt on whole (it would be tiled); "
                         "give a crop or a field under 2048 x 2048 px")
    out = session.run(["features"], {session.get_inputs()[0].name: item.x[None]})[0][0]  # (F, h, w)
    shape = item.chw.shape[1:]
    h, w = zoomed_shape(shape, item.zoom) if item.zoom != 1.0 else shape
    stride = clf.info.output_stride
    valid = out[:, : -(-h // stride), : -(-w // stride)]
    return np.ascontiguousarray(valid.reshape(valid.shape[0], -1).T, dtype=np.float32), min(h, w)


def _head(folder: Path, head) -> tuple[np.ndarray, np.ndarray]:
    data = (Path(folder) / "model.onnx").read_bytes()
    k, f = head.weight_shape[:2]
    w = np.frombuffer(data, np.float32, k * f, head.weight_offset).reshape(k, f).astype(np.float64)
    b = np.frombuffer(data, np.float32, k, head.bias_offset).astype(np.float64)
    return w, b


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _pool(feats: np.ndarray, sizes: np.ndarray, w: np.ndarray, b: np.ndarray, pooling) -> tuple[np.ndarray, tuple]:
    """Noisy-AND of each image's class maps: P_k = (sig(a(m_k - b_k)) - sig(-a b_k)) / (sig(a(1 - b_k)) -
    sig(-a b_k)), m_k the mean of class k's map (Kraus, Ba & Frey 2016); and what its gradient needs.
    ``feats``: the images' feature vectors one after another (instances, F), ``sizes`` how many each has."""
    a, beta = pooling
    maps = _sigmoid(feats @ w.T + b)  # (instances, K)
    m = np.add.reduceat(maps, np.r_[0, np.cumsum(sizes)[:-1]], axis=0) / sizes[:, None]  # (images, K)
    low, high = _sigmoid(-a * beta), _sigmoid(a * (1 - beta))
    s = _sigmoid(a * (m - beta))
    return np.clip((s - low) / (high - low), 1e-6, 1 - 1e-6), (maps, s, high - low)


def _loss_slope(p: np.ndarray, y: np.ndarray, cal: Calibration | None) -> np.ndarray:
    """dLoss/dp of the examples' pooled probabilities ``p`` (images, K) with targets ``y``. Under a single-label
    calibration the loss is what the label follows: -log of the calibrated probability that the image is one of
    its labels (softmax over every class, so an ``a|b`` example asks for a or b, and the classes without examples
    take part as they are); otherwise the binary cross-entropy of each class."""
    if cal is None or not cal.exclusive:
        return (p - y) / (p * (1 - p))
    q = cal.apply(p)
    r = q * y / np.maximum((q * y).sum(axis=1, keepdims=True), 1e-12)
    return (q - r) * np.asarray(cal.weight) / (p * (1 - p))


def _loss(p: np.ndarray, y: np.ndarray, cal: Calibration | None) -> float:
    """The examples' mean loss, whose slope ``_loss_slope`` gives (for tests of the gradient)."""
    if cal is None or not cal.exclusive:
        return _nll(logit(p), y, exclusive=False) / len(p)
    return _nll(logit(p) * np.asarray(cal.weight) + np.asarray(cal.bias), y, exclusive=True) / len(p)


def _gradient(x, sizes, targets, w, b, pooling, cal) -> tuple[np.ndarray, np.ndarray]:
    """d(mean loss)/d(w, b) of the head through Noisy-AND, for every example at once (``x``: their feature
    vectors one after another, ``sizes`` how many each has)."""
    a = pooling[0]
    p, (maps, s, span) = _pool(x, sizes, w, b, pooling)
    dm = _loss_slope(p, targets, cal) * a * s * (1 - s) / span / len(sizes)  # dLoss/dm, (images, K)
    dz = maps * (1 - maps) * np.repeat(dm / sizes[:, None], sizes, axis=0)  # (instances, K)
    return dz.T @ x, dz.sum(axis=0)


def _fit(feats, targets, w0, b0, pooling, fitted, *, steps: int, cal: Calibration | None = None):
    """The head rows of ``fitted`` classes by Adam on the examples' loss (``_loss``) through Noisy-AND, pulled
    towards the original weights; the other rows as they were."""
    w, b = w0.copy(), b0.copy()
    rows = np.array(fitted)
    x, sizes = np.concatenate(feats), np.array([len(f) for f in feats])
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    for t in range(1, steps + 1):
        gw, gb = _gradient(x, sizes, targets, w, b, pooling, cal)
        gw += PULL * (w - w0)
        for grad, value, m1, m2 in ((gw, w, moments[0], moments[1]), (gb, b, moments[2], moments[3])):
            m1[rows] = 0.9 * m1[rows] + 0.1 * grad[rows]
            m2[rows] = 0.999 * m2[rows] + 0.001 * grad[rows] ** 2
            value[rows] -= RATE * (m1[rows] / (1 - 0.9 ** t)) / (np.sqrt(m2[rows] / (1 - 0.999 ** t)) + 1e-8)
    return w, b


def _cross_validated(feats, targets, w0, b0, pooling, fitted, *, steps: int,
                     cal: Calibration | None) -> tuple[np.ndarray, np.ndarray]:
    """(examples, K) raw probabilities of each example from a head fitted without it (leave-one-out, or FOLDS
    folds dealt round-robin where there are more examples: examples are often listed class by class), and which
    examples that scores: those with a class that kept another example in their fold. An example whose classes
    have no other example says how the original head sees a class the adapted one was fitted to, not how the
    adapted head does, so it is left out of the calibration's choice."""
    n = len(feats)
    fold_of = np.arange(n) % min(n, FOLDS)
    raw, scored = np.empty((n, len(b0))), np.zeros(n, bool)
    for fold in range(min(n, FOLDS)):
        keep = np.flatnonzero(fold_of != fold)
        rows = [k for k in fitted if targets[keep, k].any()]
        w, b = _fit([feats[i] for i in keep], targets[keep], w0, b0, pooling, rows, steps=steps, cal=cal) \
            if rows else (w0, b0)
        for i in np.flatnonzero(fold_of == fold):
            raw[i] = _pool(feats[i], np.array([len(feats[i])]), w, b, pooling)[0][0]
            scored[i] = bool((targets[keep] * targets[i]).any())
    return raw[scored], targets[scored]


def _temperature(held_out: np.ndarray, targets: np.ndarray, multi_label: bool) -> Calibration | None:
    """A temperature (>= 1) for single-label models without a calibration, chosen by the negative log-likelihood of
    the examples' cross-validated outputs; None for multi-label models (their probabilities stay the network's)."""
    if multi_label:
        return None
    z = logit(held_out)
    nll = [_nll(z / t, targets, exclusive=True) for t in TEMPERATURES]  # no example scored: all 0, so T = 1
    best = float(TEMPERATURES[int(np.argmin(nll))])
    k = held_out.shape[1]
    return Calibration("temperature", (1.0 / best,) * k, (0.0,) * k,
                       fitted_on={"images": len(z), "chosen_by": "cross-validated negative log-likelihood",
                                  "cross_validated_nll": round(min(nll) / max(len(z), 1), 4),
                                  "temperature": round(best, 4)})


def _compose(cal: Calibration, held_out: np.ndarray, targets: np.ndarray) -> Calibration:
    """The model's own calibration (fitted on many images) with a temperature T >= 1 on its logits, chosen by the
    likelihood of the examples' cross-validated outputs: the few examples may soften it, never replace it."""
    z = logit(held_out) * np.asarray(cal.weight) + np.asarray(cal.bias)
    nll = [_nll(z / t, targets, exclusive=cal.exclusive) for t in TEMPERATURES]  # no example scored: T = 1
    best = float(TEMPERATURES[int(np.argmin(nll))])
    return Calibration(cal.method, tuple(w / best for w in cal.weight), tuple(b / best for b in cal.bias),
                       fitted_on={**cal.fitted_on, "adapted_temperature": round(best, 4),
                                  "adapted_chosen_by": f"cross-validated negative log-likelihood of {len(z)} examples",
                                  "adapted_cross_validated_nll": round(min(nll) / max(len(z), 1), 4)})


def _nll(z: np.ndarray, targets: np.ndarray, *, exclusive: bool) -> float:
    """Negative log-likelihood that an example is one of its labels (``a|b``: either is right, so the probability
    of a or b, not half of each): under softmax(z) (exclusive calibrations) or per-class sigmoids."""
    if not exclusive:
        p = 1.0 / (1.0 + np.exp(-z))
        return float(-(targets * np.log(p + 1e-12) + (1 - targets) * np.log(1 - p + 1e-12)).sum())
    q = z - z.max(axis=1, keepdims=True)
    log_p = q - np.log(np.exp(q).sum(axis=1, keepdims=True))
    return float(-np.log((np.exp(log_p) * targets).sum(axis=1) + 1e-12).sum())


def _probabilities(cal: Calibration | None) -> str:
    """The card's words for the adapted model's calibration."""
    if cal is None:
        return "the network's own"
    if "adapted_temperature" in cal.fitted_on:
        return (f"the original's calibration softened by a temperature of {cal.fitted_on['adapted_temperature']:.2f} "
                "(chosen on the examples, cross-validated)")
    return f"the network's, with a temperature of {cal.fitted_on['temperature']:.2f} (chosen on the examples, " \
        "cross-validated)"


def _card(adapted, original, rows) -> str:
    """The adapted folder's README.md: what it was adapted from, on which examples, and what changed."""
    cal = adapted.calibration
    lines = [f"# {adapted.name} {adapted.version}", "",
             f"Adapted by `milzoo adapt` from {original.name} {original.version} on {len(rows)} labelled images: the "
             "network is the original's; the head (features to class maps) was fitted again for "
             f"{', '.join(adapted.training['classes_fitted'])}; the other classes keep the original's.", "",
             "| image | label |", "|---|---|", *[f"| {e.name} | {'|'.join(e.labels)} |" for e in rows], "",
             ("Probabilities: " + _probabilities(cal)
              + ". qc keeps the original's size, texture and channel checks; its feature distance, per-class sizes "
                "and coverage limit followed the original head and are dropped."
              + (f" Images down to {adapted.qc.min_side} px a side at the network's scale (the smallest example) are "
                 "called, not `too_small`." if adapted.qc is not None and adapted.qc.min_side else "")), "",
             "Measure it on labelled images of your screen that were not among the examples before trusting its "
             "calls.", ""]
    return "\n".join(lines)


def _write(source: Path, out: Path, info, w, b, calibration, rows, fitted, *, name: str | None) -> Path:
    """The adapted folder: ``model.onnx`` with the new head bytes, the pooling and features graphs, its config."""
    from milcnn import constants
    from milcnn.io.images import write_atomic
    from milcnn.model.config import write_config

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty folder; give a new one")
    data = bytearray((source / constants.MODEL_FILE).read_bytes())
    head = info.head
    data[head.weight_offset:head.weight_offset + w.size * 4] = w.astype(np.float32).tobytes()
    data[head.bias_offset:head.bias_offset + b.size * 4] = b.astype(np.float32).tobytes()
    work = out.parent / f".{out.name}.adapting"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with write_atomic(work / constants.MODEL_FILE, "wb") as fh:
        fh.write(bytes(data))
    for extra in ("pooling.onnx", head.features_file, "sample_input.tif"):
        if (source / extra).is_file():
            shutil.copy2(source / extra, work / extra)
    # qc's feature distance compares the raw probabilities with the original classes' reference profiles, and its
    # per-class diameter ranges follow the original calls: neither holds once the head has changed
    qc = None if info.qc is None else replace(info.qc, distance=None, diameter_by_class={}, coverage_max=1.0,
                                              fitted_on={**info.qc.fitted_on, "adapted": "distance and per-class "
                                                         "diameters dropped: the head changed"})
    adapted = replace(info, name=name or f"{info.name}-adapted", version="1.0.0", variants={}, files={}, qc=qc,
                      calibration=calibration, metrics={}, real_images=None, trust=None, repo_id=None,
                      summary=f"{info.name} {info.version} adapted by milzoo adapt on {len(rows)} labelled images",
                      training={"adapted_from": {"name": info.name, "version": info.version},
                                "examples": [{"path": str(e.source) if isinstance(e.source, (str, Path)) else e.name,
                                              "labels": list(e.labels)} for e in rows],
                                "classes_fitted": [info.classes[k] for k in fitted],
                                "method": f"head refit through Noisy-AND and the calibration, {STEPS} Adam steps, "
                                          f"L2 pull {PULL}"})
    adapted = adapted.with_files(*(work / f for f in (constants.MODEL_FILE, head.features_file)
                                   if (work / f).is_file()))
    write_config(work, adapted)
    with write_atomic(work / constants.CARD_FILE, "w") as fh:
        fh.write(_card(adapted, info, rows))
    if out.exists():
        out.rmdir()
    work.rename(out)
    return out
