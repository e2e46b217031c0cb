"""Do ensembles of trained models, or flipped views of each mosaic, help on real cells?

Usage (the command behind ``benchmarks/results/realdata_ensemble.md``)::

    python -m benchmarks.realdata_ensemble --set bbbc021-cells --half validation \\
        --model runs/mcf7-big/model runs/mcf7-big-seed1/model runs/mcf7-moa-2.3/model runs/mcf7-big2/model

Each model predicts every ``k x k`` mosaic of the half's fields as it is and flipped (left-right,
up-down, both: test-time augmentation); a combination's call is the argmax of the mean of its
members' class probabilities. Rows: each model alone, each pair, all of them, each without and with
the flips. Only the validation half should be used to choose among them (``RealSet.validation``).
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

import numpy as np

from benchmarks.realdata_scoring import pct, score_units
from milcnn.io.images import write_atomic
from milcnn.logs import log_to_stderr
from training.data.real import DEFAULT_REAL_DATA, load_fields, mosaics

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
FLIPS = {"as is": (), "left-right": (2,), "up-down": (1,), "both": (1, 2)}


def mosaic_probabilities(folders: list[str], set_name: str, data_root: Path, *, half: str, k: int):
    """Class probabilities of every mosaic under every model and flip.

    Returns:
        ``(probs, units, classes)``: probs (models, flips, mosaics, classes); units ``(group, accepted)``
        per mosaic.
    """
    from milcnn import Classifier

    clfs = [Classifier.from_hub(f, device="cpu") for f in folders]
    classes = clfs[0].classes
    if any(c.classes != classes for c in clfs):
        raise ValueError("the models do not share one list of classes: " + ", ".join(folders))
    fields = [f for f in load_fields(set_name, data_root, channels=clfs[0].channels) if half in ("all", f.set.half(f))]
    probs, units = [], []
    for f in fields:
        views = mosaics(f.cells, k)
        units += [(f.group.name, f.group.accepted)] * len(views)
        per = np.zeros((len(clfs), len(FLIPS), len(views), len(classes)))
        for i, clf in enumerate(clfs):
            for j, axes in enumerate(FLIPS.values()):
                flipped = [np.ascontiguousarray(np.flip(v, axes)) if axes else v for v in views]
                per[i, j] = [[p.probabilities[c] for c in classes] for p in clf.predict_batch(flipped)]
        probs.append(per)
    return np.concatenate(probs, axis=2), units, classes


def combinations(n_models: int):
    """(name, model indices) of each model alone, each pair and all of them."""
    out = [(f"model {i + 1}", (i,)) for i in range(n_models)]
    out += [(f"models {a + 1} + {b + 1}", (a, b)) for a, b in itertools.combinations(range(n_models), 2)]
    if n_models > 2:
        out.append(("all models", tuple(range(n_models))))
    return out


def score(probs: np.ndarray, units, classes, models: tuple[int, ...], flips: tuple[int, ...], order) -> dict:
    mean = probs[np.ix_(models, flips)].mean(axis=(0, 1))  # (mosaics, classes)
    labels = [classes[i] for i in mean.argmax(axis=1)]
    return score_units([(g, label, accepted) for (g, accepted), label in zip(units, labels)], order)


def render(folders: list[str], set_name: str, half: str, k: int, rows: list[dict]) -> str:
    lines = ["# Ensembles and flipped views on real cells", "",
             f"Made by `python -m benchmarks.realdata_ensemble --set {set_name} --half {half} --k {k} --model "
             f"{' '.join(folders)}`: {k} x {k} mosaics of the {half} half of `{set_name}`; a combination calls "
             "the argmax of its members' mean class probabilities; *flips* adds each mosaic flipped left-right, "
             "up-down and both.", "", "Models: " + "; ".join(f"{i + 1}: `{f}`" for i, f in enumerate(folders)), "",
             "| models | flips | mosaics right | per group |", "|---|---|---|---|"]
    for r in rows:
        s = r["score"]
        groups = ", ".join(f"{g} {v['correct']}/{v['n']}" for g, v in s["groups"].items())
        lines.append(f"| {r['models']} | {'yes' if r['flips'] else 'no'} | {s['correct']}/{s['n']} "
                     f"({pct(s['accuracy'])}) | {groups} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realdata_ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", required=True, metavar="NAME_OR_FOLDER", help="zoo names or model folders (the same classes)")
    parser.add_argument("--set", default="bbbc021-cells", help="the real set (default bbbc021-cells)")
    parser.add_argument("--half", choices=("all", "validation", "test"), default="validation")
    parser.add_argument("--k", type=int, default=4, help="mosaic side in cells (default 4)")
    parser.add_argument("--data", type=Path, default=DEFAULT_REAL_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS / "realdata_ensemble.md")
    args = parser.parse_args(argv)
    log_to_stderr()
    probs, units, classes = mosaic_probabilities(args.model, args.set, args.data, half=args.half, k=args.k)
    order = list(dict.fromkeys(g for g, _ in units))
    rows = []
    for name, models in combinations(len(args.model)):
        for flips in (False, True):
            chosen = tuple(range(len(FLIPS))) if flips else (0,)
            rows.append({"models": name, "flips": flips, "score": score(probs, units, classes, models, chosen, order)})
            log.info("%s%s: %s", name, " + flips" if flips else "", rows[-1]["score"]["correct"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with write_atomic(args.out, "w") as fh:
        fh.write(render(args.model, args.set, args.half, args.k, rows))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
