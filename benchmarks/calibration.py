"""What a user reads: calibration, labels at the default threshold, qc, on simulated, real and junk images.

Usage::

    python -m benchmarks.calibration [--model NAME ...] [--data DIR]

Per zoo model, everything through ``Classifier.predict`` with its defaults (the label and qc that
``milzoo predict`` writes; the scale from the image, else the model's default):

- **simulated**: a fresh simulator seed (seed 5; training used 1, validation 2, testing 3, calibration 4),
  made under ``data/`` when missing;
- **real**: the test half of each real set the model applies to, as ``4 x 4`` mosaics of a field's cells
  (``training/data/real.py``; calibration and qc were fitted on the validation half at most);
- **junk**: 12 kinds of images that hold no cells of the model's kind (``JUNK``), with the share given a label;
- **images it was not made for**: the real test half as another objective would show it (2x, 0.5x) and the
  real cells of the other real set (every top class then wrong): how often a wrong top class is ``unassigned``.

Figures: ECE (largest probability, 10 bins), Brier score, label accuracy at the default threshold
(``unassigned`` counted wrong), ``unassigned`` among correctly ranked images, accuracy among assigned ones,
and the share qc flags. Writes ``benchmarks/results/calibration.{json,md}`` and a reliability diagram per
model (``benchmarks/results/calibration-<model>.png``, copied into the model folder for its card).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_description
from milcnn.io.images import write_atomic
from milcnn.logs import log_to_stderr
from training.metrics import expected_calibration_error
from training.data.real import DEFAULT_REAL_DATA, REAL_SETS, applicable_sets, load_fields, mosaics

__all__ = ["junk_images", "score", "main", "JUNK", "SIMULATED"]

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MODELS = ("yeast-loc", "yeast-loc-gfp", "mcf7-moa")
#: the fresh simulated set per model: simulator, channels, images, folder under data/
SIMULATED = {"yeast-loc": ("yeast", "gfp,rfp", 220, "yeast2-fresh5"),
             "yeast-loc-gfp": ("yeast", "gfp", 220, "yeast2-gfp-fresh5"),
             "mcf7-moa": ("mcf7", "dna,tubulin,actin", 160, "mcf7v2-fresh5")}
SEED = 5
JUNK = ("uniform noise", "gaussian noise", "poisson noise", "salt and pepper", "blank", "constant", "stripes",
        "gradient", "checkerboard", "one bright blob", "tiny crop", "another model's cells")


def junk_images(channels: int, other: np.ndarray, rng: np.random.Generator, size: int = 512) -> dict:
    """The 12 kinds of ``JUNK`` as (C, size, size) uint16 images (the tiny crop: 12 x 12 px); ``other``:
    cells of another model's kind with at least ``channels`` channels (the first are used)."""
    c, h, w = channels, size, size
    yy, xx = np.mgrid[0:h, 0:w]
    blob = 100 + 5000 * np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * 20 ** 2))
    sp = np.full((c, h, w), 100, np.uint16)
    u = rng.random((c, h, w))
    sp[u < 0.02], sp[u > 0.98] = 0, 4000

    def same(plane):  # one plane in every channel
        return np.broadcast_to(plane.astype(np.uint16), (c, h, w)).copy()

    images = {
        "uniform noise": rng.integers(0, 65535, (c, h, w)).astype(np.uint16),
        "gaussian noise": np.clip(rng.normal(1000, 100, (c, h, w)), 0, 65535).astype(np.uint16),
        "poisson noise": rng.poisson(5, (c, h, w)).astype(np.uint16),
        "salt and pepper": sp,
        "blank": np.zeros((c, h, w), np.uint16),
        "constant": np.full((c, h, w), 1234, np.uint16),
        "stripes": same((xx // 8) % 2 * 3000 + 100),
        "gradient": same(xx * 50 + yy * 20),
        "checkerboard": same(((xx // 16) + (yy // 16)) % 2 * 3000 + 100),
        "one bright blob": same(blob) + rng.poisson(10, (c, h, w)).astype(np.uint16),
        "tiny crop": rng.integers(0, 65535, (c, 12, 12)).astype(np.uint16),
        "another model's cells": np.ascontiguousarray(other[:c]),
    }
    assert tuple(images) == JUNK
    return images


def _simulated_set(model: str) -> Path:
    kind, channels, n, folder = SIMULATED[model]
    out = ROOT / "data" / folder
    if not (out / "manifest.csv").is_file():
        subprocess.run([sys.executable, "-m", "training.simulate", kind, "--n", str(n), "--seed", str(SEED),
                        "--channels", channels, "--out", str(out), "--workers", "2"], check=True, cwd=ROOT)
    return out / "manifest.csv"


def score(probabilities: np.ndarray, targets: np.ndarray, labels: list[str], qc: list[str], classes) -> dict:
    """The table's figures for one set: ``probabilities`` (N, K) calibrated, ``targets`` (N, K) 0/1 (every
    right class), ``labels`` and ``qc`` as the SDK gave them."""
    n = len(labels)
    top = probabilities.argmax(axis=1)
    ranked = targets[np.arange(n), top] > 0
    labelled = np.array([lab in classes for lab in labels])
    right = np.array([lab in classes and targets[i, classes.index(lab)] > 0 for i, lab in enumerate(labels)])
    onehot = np.zeros_like(probabilities)
    onehot[np.arange(n), np.argmax(probabilities * targets + targets * 1e-9, axis=1)] = 1  # the right class
    return {"n": n, "ece": expected_calibration_error(probabilities.max(axis=1), ranked),
            "brier": float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1))),
            "top_class_accuracy": float(ranked.mean()), "label_accuracy": float(right.mean()),
            "unassigned_among_ranked_right": float((~labelled & ranked).sum() / max(1, ranked.sum())),
            "accuracy_among_assigned": float(right.sum() / labelled.sum()) if labelled.any() else None,
            "assigned": int(labelled.sum()), "qc_flagged": float(np.mean([q != "ok" for q in qc])),
            "qc": {r: qc.count(r) for r in sorted(set(qc))},
            "reliability": _reliability(probabilities.max(axis=1), ranked)}


def _reliability(conf: np.ndarray, right: np.ndarray, bins: int = 10) -> list:
    index = np.minimum((conf * bins).astype(int), bins - 1)
    return [[float(conf[index == i].mean()), float(right[index == i].mean()), int((index == i).sum())]
            for i in range(bins) if (index == i).any()]


def _run(clf, images, targets) -> dict:
    preds = [clf.predict(image) for image in images]
    probs = np.array([[p.probabilities[c] for c in clf.classes] for p in preds])
    raw = np.array([[p.raw_probabilities[c] for c in clf.classes] for p in preds])
    out = score(probs, np.asarray(targets, dtype=float), [p.label for p in preds], [p.qc for p in preds],
                list(clf.classes))
    raw_ranked = np.asarray(targets)[np.arange(len(preds)), raw.argmax(axis=1)] > 0
    out["raw_ece"] = expected_calibration_error(raw.max(axis=1), raw_ranked)
    return out


def _targets(classes, accepted_lists) -> list:
    return [[1.0 if c in accepted else 0.0 for c in classes] for accepted in accepted_lists]


def evaluate_model(name: str, data_root: Path) -> dict:
    import csv

    from milcnn import Classifier

    clf = Classifier.from_hub(name, device="cpu")
    entry = {"model": {"name": clf.name, "version": clf.info.version,
                       "calibration": clf.info.calibration.method if clf.info.calibration else None},
             "sets": {}}
    manifest = _simulated_set(name)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = [manifest.parent / r["path"] for r in rows]
    entry["sets"][f"simulated, seed {SEED}"] = _run(clf, images, _targets(clf.classes, [[r["label"]] for r in rows]))
    entry["sets"][f"simulated, seed {SEED}"]["images"] = str(manifest.relative_to(ROOT))
    for rs in applicable_sets(clf.channels, clf.classes):
        fields = [f for f in load_fields(rs, data_root, channels=clf.channels) if rs.half(f) == "test"]
        mos, acc = [], []
        for f in fields:
            for m in mosaics(f.cells, 4):
                mos.append(m)
                acc.append(f.group.accepted)
        entry["sets"][f"real {rs.name}, test half"] = _run(clf, mos, _targets(clf.classes, acc))
        entry["sets"][f"real {rs.name}, test half"]["images"] = (
            f"{len(mos)} mosaics of 4 x 4 cells of {', '.join(f.name for f in fields)}")
    entry["another_screen"] = _another_screen(clf, data_root)
    entry["other_screens"] = _other_screens(clf, data_root.parent / "realdata")
    rng = np.random.default_rng(0)
    other_set = next(rs for rs in REAL_SETS.values() if rs not in applicable_sets(clf.channels, clf.classes))
    other = mosaics(load_fields(other_set, data_root)[0].cells, 4)
    other_cells = other[0] if len(other[0]) >= len(clf.channels) else np.concatenate([other[0]] * 3)
    other_cells = (other_cells.astype(np.float64) / max(1.0, float(other_cells.max())) * 4000).astype(np.uint16)
    junk = {}
    for kind, image in junk_images(len(clf.channels), other_cells, rng).items():
        p = clf.predict(image[0] if len(clf.channels) == 1 else image)
        junk[kind] = {"label": p.label, "top": p.top, "probability": round(p.probabilities[p.top], 4), "qc": p.qc}
    entry["junk"] = junk
    entry["junk_labelled"] = sum(v["label"] != "unassigned" for v in junk.values())
    return entry


def _another_screen(clf, data_root: Path) -> dict:
    """Images the model was not made for, with labels to tell right from wrong: the real test half's mosaics
    as another objective would show them (2x and 0.5x, no scale in the file), and every mosaic of the other
    real set (every choice of its channels in order: the first C, and for a one-channel model each one)."""
    from milcnn.process.scale import resize_chw, zoomed_shape

    out = {}
    for rs in applicable_sets(clf.channels, clf.classes):
        fields = [f for f in load_fields(rs, data_root, channels=clf.channels) if rs.half(f) == "test"]
        for zoom in (2.0, 0.5):
            images, accepted = [], []
            for f in fields:
                for m in mosaics(f.cells, 4):
                    images.append(resize_chw(m.astype(np.float32), zoomed_shape(m.shape[1:], zoom)))
                    accepted.append(f.group.accepted)
            out[f"{rs.name} test half at {zoom:g}x"] = _wrong_calls(clf, images, accepted)
    other_set = next(rs for rs in REAL_SETS.values() if rs not in applicable_sets(clf.channels, clf.classes))
    fields = load_fields(other_set, data_root)
    c = len(clf.channels)
    n = len(other_set.channels)  # fewer than the model's: repeated in order
    picks = [tuple(i % n for i in range(c))] if c > 1 else [(i,) for i in range(n)]
    for pick in picks:
        images = [m[list(pick)] for f in fields for m in mosaics(f.cells, 4)]
        out[f"{other_set.name} ({', '.join(other_set.channels[i] for i in pick)} as "
            f"{', '.join(clf.channels)})"] = _wrong_calls(clf, images, [()] * len(images))
    return out


#: unlabelled real images of other screens (../shared/realdata, none a yeast GFP or BBBC021 MOA screen), as the
#: channels of each model: name -> files in the model's channel order
OTHER_SCREENS = {
    1: {f"{name} ({what})": [name] for name, what in (
        ("AS_09125_050116030001_D03f00d0.tif", "HT29 DNA"), ("AS_09125_050116030001_D03f00d2.tif", "HT29 cell body"),
        ("AS_09047_050428030001_O01f00d2.TIF", "Transfluor GFP"), ("W00001_P00001_cherry.tif", "mCherry"),
        ("1-162hrhoe2.tif", "Hoechst"), ("01_POS002_D.TIF", "Drosophila DNA"), ("0_1_N_G.png", "nucleosomes"))},
    2: {"HT29 (DNA, cell body)": ["AS_09125_050116030001_D03f00d0.tif", "AS_09125_050116030001_D03f00d2.tif"],
        "HT29 (phospho-H3, cell body)": ["AS_09125_050116030001_D03f00d1.tif", "AS_09125_050116030001_D03f00d2.tif"]},
    3: {"HT29 (DNA, phospho-H3, cell body)": ["AS_09125_050116030001_D03f00d0.tif", "AS_09125_050116030001_D03f00d1.tif",
                                             "AS_09125_050116030001_D03f00d2.tif"]},
}


def _other_screens(clf, root: Path) -> dict:
    """Each model's calls on real images of other screens (``OTHER_SCREENS``): none is of its kind of cells,
    so a label on one is a wrong call (for ``mcf7-moa``, HT29 human cells are the closest: reported, not judged)."""
    from milcnn.io.images import read_image

    out = {}
    for name, files in OTHER_SCREENS[len(clf.channels)].items():
        if not all((root / f).is_file() for f in files):
            continue
        planes = [np.squeeze(read_image(root / f)) for f in files]
        pred = clf.predict(np.stack(planes) if len(planes) > 1 else planes[0])
        out[name] = {"label": pred.label, "top": pred.top, "probability": round(pred.probabilities[pred.top], 4),
                     "qc": pred.qc}
    return out


def _wrong_calls(clf, images, accepted) -> dict:
    preds = [clf.predict(m[0] if len(clf.channels) == 1 else m) for m in images]
    wrong = [p.top not in a for p, a in zip(preds, accepted)]
    unassigned = [p.label == "unassigned" for p in preds]
    n_wrong = sum(wrong)
    return {"n": len(preds), "top_class_wrong": n_wrong,
            "unassigned_where_top_wrong": (sum(u for u, w in zip(unassigned, wrong) if w) / n_wrong) if n_wrong else None,
            "labelled_wrong": sum(1 for p, w in zip(preds, wrong) if w and p.label != "unassigned"),
            "qc": {r: sum(p.qc == r for p in preds) for r in sorted({p.qc for p in preds})}}


def plot(entry: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.6), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    for (name, s), colour in zip(entry["sets"].items(), ("tab:blue", "tab:orange", "tab:green")):
        conf, acc, n = np.array(s["reliability"]).T
        ax.plot(conf, acc, color=colour, lw=0.8, alpha=0.5)
        ax.scatter(conf, acc, s=12 + 200 * n / n.sum(), color=colour, alpha=0.8,
                   label=f"{name}: {int(n.sum())} images, ECE {s['ece']:.3f}")
    ax.set_xlabel("largest calibrated probability (bin mean)")
    ax.set_ylabel("share of images whose top class is right")
    ax.set_xlim(0, 1.02), ax.set_ylim(-0.02, 1.05)
    ax.set_title(f"{entry['model']['name']} {entry['model']['version']}: reliability (marker area: images)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _update_zoo(name: str, entry: dict, png: Path, command: str) -> None:
    """The figures a card shows (``training.model_card``: "Probabilities, unassigned and qc") and its diagram."""
    from training.model_card import update_folder

    folder = ROOT / "zoo" / name
    keep = ("n", "ece", "label_accuracy", "unassigned_among_ranked_right", "qc_flagged")
    update_folder(folder, trust={
        "command": command, "sets": {k: {f: v[f] for f in keep} for k, v in entry["sets"].items()},
        "junk_labelled": entry["junk_labelled"], "junk_kinds": len(entry["junk"]),
        "not_made_for": entry["another_screen"],
        "other_screens": {k: v["label"] for k, v in (entry.get("other_screens") or {}).items()}})
    shutil.copyfile(png, folder / "reliability.png")


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def render(results: dict) -> str:
    lines = ["# Calibration, labels and qc: what `milzoo predict` writes with its defaults", "",
             f"Command: `{results['command']}`. CPU: {results['cpu']}.", "",
             "Every figure through `Classifier.predict` with its defaults (threshold 0.5; the scale from the image, "
             "else the model's default), so the label and qc are the ones `milzoo predict` writes. ECE: expected "
             "calibration error of the largest probability (10 bins); raw ECE: the same on the network's own "
             "outputs. Label accuracy counts `unassigned` wrong. Calibration and qc limits were fitted on simulated "
             "seed 4 and, where the card says so, the validation half of the real set (`python -m "
             "training.calibrate`); nothing here was used to fit or choose them.", ""]
    t = results.get("throughput")
    if t:
        lines += ["## Cost", "", f"`milzoo predict` with its defaults on {t['images']} fields of 512 x 512 px, "
                  f"{t['model']}, {t['rounds']} rounds in alternating order: images per second "
                  + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in t["images_per_second"].items())
                  + f". This tree / the baseline (median of the rounds' ratios): **{t['ratio_median']:.3f}**.", ""]
    for name, e in results["models"].items():
        lines += [f"## {name} {e['model']['version']} (calibration: {e['model']['calibration']})", "",
                  f"![reliability](calibration-{name}.png)", "",
                  "| set | images | ECE (raw) | Brier | top class right | label accuracy | unassigned among ranked "
                  "right | accuracy among assigned | qc flagged |", "|---|---|---|---|---|---|---|---|---|"]
        for set_name, s in e["sets"].items():
            lines.append(f"| {set_name} | {s['n']}: {s['images']} | {s['ece']:.3f} ({s['raw_ece']:.3f}) | "
                         f"{s['brier']:.3f} | {_pct(s['top_class_accuracy'])} | {_pct(s['label_accuracy'])} | "
                         f"{_pct(s['unassigned_among_ranked_right'])} | {_pct(s['accuracy_among_assigned'])} | "
                         f"{_pct(s['qc_flagged'])} {s['qc']} |")
        lines += ["", "Images it was not made for (4 x 4 mosaics; another objective: the test half resized, no scale "
                      "in the file; another screen: every top class is wrong):", "",
                  "| images | n | top class wrong | `unassigned` where the top class is wrong | labelled wrong | qc |",
                  "|---|---|---|---|---|---|"]
        for set_name, a in e["another_screen"].items():
            lines.append(f"| {set_name} | {a['n']} | {a['top_class_wrong']} | "
                         f"**{_pct(a['unassigned_where_top_wrong'])}** | {a['labelled_wrong']} | {a['qc']} |")
        others = e.get("other_screens") or {}
        if others:
            lines += ["", "Real images of other screens (`../shared/realdata`, unlabelled; not of this model's kind of "
                          f"cells): **{sum(o['label'] != 'unassigned' for o in others.values())} of {len(others)} "
                          "labelled**.", "", "| image | label | top class (p) | qc |", "|---|---|---|---|"]
            lines += [f"| {k} | {o['label']} | {o['top']} ({o['probability']:.3f}) | {o['qc']} |" for k, o in others.items()]
        lines += ["", f"Junk: **{e['junk_labelled']} of {len(e['junk'])} kinds labelled**.", "",
                  "| junk | label | top class (p) | qc |", "|---|---|---|---|"]
        for kind, j in e["junk"].items():
            lines.append(f"| {kind} | {j['label']} | {j['top']} ({j['probability']:.3f}) | {j['qc']} |")
        lines.append("")
    return "\n".join(lines)


BASELINE_COMMIT = "ce30b88"  # the last commit before calibration and qc (issue 37)


def throughput(n: int = 120, rounds: int = 6, *, baseline: str = BASELINE_COMMIT) -> dict:
    """``milzoo predict`` with its defaults on ``n`` 512 x 512 fields of ``yeast-loc``: this tree against the
    tree of commit ``baseline`` (``benchmarks.throughput.against_commit`` at fp32, the default)."""
    from benchmarks.throughput import against_commit

    r = against_commit(baseline, n, rounds, precisions=("fp32",))
    rates = r["images_per_second"]
    return {"images": n, "rounds": rounds, "model": "yeast-loc (fp32, the default)",
            "images_per_second": {"this tree": rates["fp32, this tree"],
                                  f"commit {baseline}": rates[f"fp32, {baseline}"]},
            "ratio_median": r["ratio_median"]["fp32"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibration", description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", choices=MODELS, help="default: every zoo model")
    parser.add_argument("--data", type=Path, default=DEFAULT_REAL_DATA, help="the real labelled data folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration")
    parser.add_argument("--update-zoo", action="store_true",
                        help="write the figures and the diagram into the zoo folders' config.json and cards")
    parser.add_argument("--plot-only", action="store_true", help="draw the diagrams again from the committed .json")
    parser.add_argument("--throughput", action="store_true",
                        help=f"also time milzoo predict against commit {BASELINE_COMMIT} (before calibration and qc)")
    args = parser.parse_args(argv)
    log_to_stderr(logging.WARNING)
    models = args.model or list(MODELS)
    results = {"command": "python -m benchmarks.calibration" + "".join(f" --model {m}" for m in args.model or [])
               + (" --update-zoo" if args.update_zoo else ""),
               "cpu": cpu_description(), "models": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in models:
        if args.plot_only:
            entry = json.loads(args.out.with_suffix(".json").read_text())["models"][name]
        else:
            entry = evaluate_model(name, args.data)
        results["models"][name] = entry
        png = args.out.parent / f"calibration-{name}.png"
        plot(entry, png)
        if args.update_zoo:
            _update_zoo(name, entry, png, results["command"])
    if args.throughput:
        results["throughput"] = throughput()
        results["command"] += " --throughput"
    elif args.plot_only and args.out.with_suffix(".json").is_file():
        kept = json.loads(args.out.with_suffix(".json").read_text())
        results["command"] = kept["command"]  # the run that measured these figures
        if kept.get("throughput"):
            results["throughput"] = kept["throughput"]
    with write_atomic(args.out.with_suffix(".json"), "w") as fh:
        fh.write(json.dumps(results, indent=2) + "\n")
    with write_atomic(args.out.with_suffix(".md"), "w") as fh:
        fh.write(render(results) + "\n")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
