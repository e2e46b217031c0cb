"""``milzoo adapt``: a model fitted to a new screen from a few labelled images, with numpy and onnxruntime only.

The network stays frozen. Its features (``config.json``'s ``head`` block names the second graph that gives them)
are computed once per example; the head (the 1 x 1 convolution to each class's map logits) is fitted for the
classes that have examples, through the model's own MIL pooling (Noisy-AND, Kraus et al. 2016), by
gradient descent on the examples' image labels with an L2 pull towards the original weights; the other
classes keep theirs. The new weights are written in place of the old in a copy of ``model.onnx`` (same graph,
same file size), so the adapted folder is a model folder like any other: ``milzoo predict --model FOLDER``,
``Classifier.from_dir``, napari. Its probabilities get a temperature fitted on the examples' adapted outputs,
chosen by leave-one-out log-likelihood (a model without calibration), or its own calibration softened by a
temperature of at least 1 that the examples choose.
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

__all__ = ["Example", "read_examples", "adapt"]

log = logging.getLogger(__name__)

STEPS = 50  # Adam steps of the head fit (chosen on the real yeast validation half: 300 at 0.05 overshot)
RATE = 0.01
PULL = 1e-3  # L2 weight towards the original head, per weight
# a few examples are often separable, so their likelihood would pick the sharpest temperature there is: never
# sharpen the network's own outputs on so few images (1: as they are; up to 20: much softer)
TEMPERATURES = np.exp(np.linspace(0.0, np.log(20.0), 41))


@dataclass(frozen=True)
class Example:
    path: Path
    labels: tuple[str, ...]
    line: int


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
        labels = tuple(v.strip() for v in (row["label"] or "").split("|") if v.strip())
        unknown = [v for v in labels if v not in classes]
        if not labels or unknown:
            raise ValueError(f"{path}, line {line}: label {row['label']!r} is not among the model's classes "
                             f"({', '.join(classes)})")
        image = (path.parent / (row["path"] or "").strip())
        if not row["path"] or not image.is_file():
            raise ValueError(f"{path}, line {line}: {row['path']!r} is not a file (paths are relative to the CSV)")
        examples.append(Example(image, labels, line))
    named = {c for e in examples for c in e.labels}
    if len(named) < 2:
        raise ValueError(f"{path}: examples of one class only ({', '.join(sorted(named))}); a head needs at least two "
                         "classes to tell apart")
    return examples


def adapt(model, examples, out, *, name: str | None = None, steps: int = STEPS,
          cell_diameter: float | None = None) -> Path:
    """Fit ``model`` (a zoo name, folder or Hub repo) to ``examples`` (a ``path,label`` CSV) and write the adapted
    model folder ``out`` (nothing is written unless the adaptation finished). Returns ``out``. ``cell_diameter``:
    the examples' cell diameter in px, where it differs from the model's (as ``milzoo predict --cell-diameter``);
    the adapted model then assumes it of every image given without a scale.

    Raises:
        ValueError: a bad examples file or image (one line naming the row); ModelConfigError: the model has no
        ``head`` block (``python -m training.features`` writes one) or pools otherwise than Noisy-AND.
    """
    from milcnn.predict.classifier import Classifier
    from milcnn.predict.options import PredictOptions

    clf = Classifier.from_hub(model) if not Path(str(model)).is_dir() else Classifier.from_dir(model)
    info = clf.info
    if info.head is None or info.pooling.get("name") != "noisy_and":
        raise ModelConfigError(f"{info.name}: cannot be adapted here: it needs a head block and Noisy-AND pooling "
                               "(python -m training.features FOLDER adds the block)")
    rows = read_examples(examples, info.classes)
    import onnxruntime as ort

    options = PredictOptions(cell_diameter=cell_diameter)
    session = ort.InferenceSession(str(clf.folder / info.head.features_file), providers=["CPUExecutionProvider"])
    feats = [_features(clf, session, e, options) for e in rows]
    targets = np.array([[c in e.labels for c in info.classes] for e in rows], dtype=np.float64)
    fitted = sorted({info.classes.index(c) for e in rows for c in e.labels})
    w0, b0 = _head(clf.folder, info.head)
    pooling = (float(info.pooling["params"]["a"]), np.asarray(info.pooling["learned_b"], np.float64))
    w, b = _fit(feats, targets, w0, b0, pooling, fitted, steps=steps)
    raw = np.array([_pool(f, w, b, pooling)[0] for f in feats])
    calibration = _temperature(raw, targets, info.multi_label) if info.calibration is None else \
        _compose(info.calibration, raw, targets)
    if cell_diameter is not None:
        info = replace(info, input_cell_diameter=float(cell_diameter),
                       input_cell_diameter_from="milzoo adapt --cell-diameter: the examples' cells")
    return _write(clf.folder, Path(out), info, w, b, calibration, rows, fitted, name=name)


def _features(clf, session, example: Example, options) -> np.ndarray:
    """(instances, F) float32: the example's feature vectors (``session``: the features graph), one per map pixel
    of the image itself (padding left out, as ``milcnn.predict.result`` leaves it out of the pooling)."""
    from milcnn.process.scale import zoomed_shape

    try:
        item = clf.prepare_input(example.path, options)
    except Exception as exc:  # noqa: BLE001 - every reason an image cannot be read, in one line
        raise ValueError(f"line {example.line}: {example.path}: {exc}") from None
    if item.x is None:
        raise ValueError(f"line {example.line}: {example.path}: too large to adapt on whole (it would be tiled); "
                         "give a crop or a field under 2048 x 2048 px")
    out = session.run(["features"], {session.get_inputs()[0].name: item.x[None]})[0][0]  # (F, h, w)
    shape = item.chw.shape[1:]
    h, w = zoomed_shape(shape, item.zoom) if item.zoom != 1.0 else shape
    stride = clf.info.output_stride
    valid = out[:, : -(-h // stride), : -(-w // stride)]
    return np.ascontiguousarray(valid.reshape(valid.shape[0], -1).T, dtype=np.float32)


def _head(folder: Path, head) -> tuple[np.ndarray, np.ndarray]:
    data = (Path(folder) / "model.onnx").read_bytes()
    k, f = head.weight_shape[:2]
    w = np.frombuffer(data, np.float32, k * f, head.weight_offset).reshape(k, f).astype(np.float64)
    b = np.frombuffer(data, np.float32, k, head.bias_offset).astype(np.float64)
    return w, b


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _pool(feats: np.ndarray, w: np.ndarray, b: np.ndarray, pooling) -> tuple[np.ndarray, tuple]:
    """Noisy-AND of one image's class maps: P_k = (sig(a(m_k - b_k)) - sig(-a b_k)) / (sig(a(1 - b_k)) -
    sig(-a b_k)), m_k the mean of class k's map (Kraus, Ba & Frey 2016); and what its gradient needs."""
    a, beta = pooling
    maps = _sigmoid(feats @ w.T + b)  # (instances, K)
    m = maps.mean(axis=0)
    low, high = _sigmoid(-a * beta), _sigmoid(a * (1 - beta))
    s = _sigmoid(a * (m - beta))
    return np.clip((s - low) / (high - low), 1e-6, 1 - 1e-6), (maps, s, high - low)


def _fit(feats, targets, w0, b0, pooling, fitted, *, steps: int):
    """The head rows of ``fitted`` classes by Adam on the examples' binary cross-entropy through Noisy-AND, pulled
    towards the original weights; the other rows as they were."""
    a, _ = pooling
    w, b = w0.copy(), b0.copy()
    rows = np.array(fitted)
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    for t in range(1, steps + 1):
        gw, gb = PULL * (w - w0), np.zeros_like(b)
        for f, y in zip(feats, targets):
            p, (maps, s, span) = _pool(f, w, b, pooling)
            dm = (p - y) / (p * (1 - p)) * a * s * (1 - s) / span / len(feats)  # dLoss/dm_k
            dz = maps * (1 - maps) * (dm / len(f))  # (instances, K)
            gw += dz.T @ f
            gb += dz.sum(axis=0)
        for grad, value, m1, m2 in ((gw, w, moments[0], moments[1]), (gb, b, moments[2], moments[3])):
            m1[rows] = 0.9 * m1[rows] + 0.1 * grad[rows]
            m2[rows] = 0.999 * m2[rows] + 0.001 * grad[rows] ** 2
            value[rows] -= RATE * (m1[rows] / (1 - 0.9 ** t)) / (np.sqrt(m2[rows] / (1 - 0.999 ** t)) + 1e-8)
    return w, b


def _temperature(raw: np.ndarray, targets: np.ndarray, multi_label: bool) -> Calibration | None:
    """A temperature for single-label models, chosen by leave-one-out negative log-likelihood of the examples'
    adapted outputs; None for multi-label models (their probabilities stay the network's own)."""
    if multi_label:
        return None
    z = logit(raw)
    everyone = np.arange(len(z))

    def nll(t, idx):
        return _nll(z[idx] / t, targets[idx])

    held_out = sum(nll(TEMPERATURES[int(np.argmin([nll(t, np.delete(everyone, i)) for t in TEMPERATURES]))], [i])
                   for i in everyone)
    best = float(TEMPERATURES[int(np.argmin([nll(t, everyone) for t in TEMPERATURES]))])
    k = raw.shape[1]
    return Calibration("temperature", (1.0 / best,) * k, (0.0,) * k,
                       fitted_on={"images": len(z), "chosen_by": "leave-one-out negative log-likelihood",
                                  "leave_one_out_nll": round(held_out / len(z), 4), "temperature": round(best, 4)})


def _compose(cal: Calibration, raw: np.ndarray, targets: np.ndarray) -> Calibration:
    """The model's own calibration (fitted on many images) with a temperature T >= 1 on its logits, chosen by the
    examples' likelihood: the few examples may soften it, never replace it."""
    z = logit(raw) * np.asarray(cal.weight) + np.asarray(cal.bias)
    best = float(TEMPERATURES[int(np.argmin([_nll(z / t, targets) for t in TEMPERATURES]))])
    return Calibration(cal.method, tuple(w / best for w in cal.weight), tuple(b / best for b in cal.bias),
                       fitted_on={**cal.fitted_on, "adapted_temperature": round(best, 4)})


def _nll(z: np.ndarray, targets: np.ndarray) -> float:
    """Negative log-likelihood of softmax(z) that an example is one of its labels (``a|b``: either is right, so
    the probability of a or b, not half of each)."""
    q = z - z.max(axis=1, keepdims=True)
    log_p = q - np.log(np.exp(q).sum(axis=1, keepdims=True))
    return float(-np.log((np.exp(log_p) * targets).sum(axis=1) + 1e-12).sum())


def _card(adapted, original, rows) -> str:
    """The adapted folder's README.md: what it was adapted from, on which examples, and what changed."""
    cal = adapted.calibration
    lines = [f"# {adapted.name} {adapted.version}", "",
             f"Adapted by `milzoo adapt` from {original.name} {original.version} on {len(rows)} labelled images: the "
             "network is the original's; the head (features to class maps) was fitted again for "
             f"{', '.join(adapted.training['classes_fitted'])}; the other classes keep the original's.", "",
             "| image | label |", "|---|---|", *[f"| {e.path.name} | {'|'.join(e.labels)} |" for e in rows], "",
             ("Probabilities: " + (f"the original's calibration softened by a temperature of "
                                   f"{cal.fitted_on.get('adapted_temperature', cal.fitted_on.get('temperature'))}"
                                   if cal is not None else "the network's own")
              + ". qc keeps the original's size, texture and channel checks; its feature distance, per-class sizes "
                "and coverage limit followed the original head and are dropped."), "",
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
                                "examples": [{"path": str(e.path), "labels": list(e.labels)} for e in rows],
                                "classes_fitted": [info.classes[k] for k in fitted],
                                "method": f"head refit through Noisy-AND, {STEPS} Adam steps, L2 pull {PULL}"})
    adapted = adapted.with_files(*(work / f for f in (constants.MODEL_FILE, head.features_file) if (work / f).is_file()))
    write_config(work, adapted)
    with write_atomic(work / constants.CARD_FILE, "w") as fh:
        fh.write(_card(adapted, info, rows))
    if out.exists():
        out.rmdir()
    work.rename(out)
    return out
