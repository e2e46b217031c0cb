"""Learning curve of ``milzoo adapt`` against ``training.finetune`` on the real labelled sets: 1, 2 and 4 labelled
images per class, scored on proteins or fields that neither saw, with the time each took.

Usage (the command behind ``benchmarks/results/adapt_curve.md``)::

    python -m benchmarks.adapt_curve            # runs already in adapt_curve.json are kept (--fresh: all again;
                                                # --redo adapt: adapt again, fine-tuning's results kept)

Both methods get the same labelled images, a ``path,label`` CSV (``milzoo adapt --examples``) or the same rows as
a manifest (``training.finetune --data``): example i of a class is the first 4 x 4 mosaic of its i-th field.

- yeast (``yeast-loc``), fold A: examples of AAC1, AAP1, AAH1 (fields 1-n); scored every 4 x 4 mosaic of AAC3 and
  AAR2. Fold B: examples of AAC3, AAP1, AAR2; scored AAC1 and AAH1. Cell diameter 42 px (the set's).
- yeast A swapped: fold A with GFP and RFP given in the other order, examples and scored mosaics alike.
- yeast A cells: fold A with single cells (64 x 64 px crops) for examples (the first n cells of field 1 of each
  protein) and for scoring (every cell of AAC3 and AAR2).
- MCF-7 (``mcf7-moa``): examples from the validation half of DMSO and protein-synthesis fields (fields 1-n of
  each); scored every mosaic of the test half's fields.

Counted: the label each model writes with ``milzoo predict``'s defaults (calibration, qc and the label rule) is
one of the field's accepted classes ("label"), and its top class is ("top"). Fine-tuning uses the settings of
``benchmarks.realdata_curve.EXPERIMENTS`` (chosen there on yeast fold A and the MCF-7 validation run) and is
exported with ``training.export`` as a release would before calibration; its time includes the export.
``adapt``'s steps were chosen on the yeast validation half (fold A's examples' proteins, fields 2-4).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SIZES = (1, 2, 4)
#: (experiment, zoo model, real set, the examples' groups, the scored groups; None: the examples' groups' test half)
CURVE = (("yeast A", "yeast-loc", "yeast-chong", ("AAC1", "AAP1", "AAH1"), ("AAC3", "AAR2")),
         ("yeast B", "yeast-loc", "yeast-chong", ("AAC3", "AAP1", "AAR2"), ("AAC1", "AAH1")),
         ("yeast A swapped", "yeast-loc", "yeast-chong", ("AAC1", "AAP1", "AAH1"), ("AAC3", "AAR2")),
         ("yeast A cells", "yeast-loc", "yeast-chong", ("AAC1", "AAP1", "AAH1"), ("AAC3", "AAR2")),
         ("mcf7", "mcf7-moa", "bbbc021-cells", ("DMSO", "Protein_synthesis"), None))


def shifted(experiment: str, image: np.ndarray) -> np.ndarray:
    """The image as the experiment's screen shows it: "swapped" experiments give the channels in the other
    order (a screen the zoo model was not made for: it calls about half the mosaics right)."""
    return np.ascontiguousarray(image[::-1]) if experiment.endswith("swapped") else image

log = logging.getLogger("benchmarks.adapt_curve")


def _fields(model: str, set_name: str, data_root):
    from milcnn import Classifier
    from training.data.real import REAL_SETS, load_fields

    rs = REAL_SETS[set_name]
    clf = Classifier.from_hub(model, device="cpu", precision="fp32")
    return rs, clf, load_fields(rs, data_root, channels=clf.channels)


def _examples(rs, fields, groups, n: int, cells: bool = False) -> list[tuple[np.ndarray, str]]:
    """The first 4 x 4 mosaic of each of the first n example fields (the validation half's, for MCF-7) of each
    group, with the group's label; ``cells``: the first n cells of its first field."""
    from training.data.real import mosaics

    if cells:
        return [(f.cells[i].astype(np.float32), f.group.label) for g in groups
                for f in [next(f for f in fields if f.group.name == g)] for i in range(n)]
    rows = []
    for g in groups:
        own = [f for f in fields if f.group.name == g and (rs.name != "bbbc021-cells" or rs.half(f) == "validation")]
        if len(own) < n:
            raise ValueError(f"{rs.name}: {g} has {len(own)} example fields, fewer than {n}")
        rows += [(mosaics(f.cells, 4)[0].astype(np.float32), f.group.label) for f in own[:n]]
    return rows


def _scored(rs, fields, groups, scored, cells: bool = False):
    from training.data.real import mosaics

    chosen = [f for f in fields if f.group.name in scored] if scored else \
        [f for f in fields if f.group.name in groups and rs.half(f) == "test"]
    return chosen, [(f, m.astype(np.float32)) for f in chosen for m in (f.cells if cells else mosaics(f.cells, 4))]


def _score(clf, units, diameter) -> dict:
    """Mosaics whose label (and top class) is one of their group's accepted classes, in all and per group."""
    preds = clf.predict_batch([m for _, m in units], cell_diameter=diameter)
    groups = {}
    for (f, _), p in zip(units, preds):
        g = groups.setdefault(f.group.name, {"label": 0, "n": 0})
        g["label"], g["n"] = g["label"] + (p.label in f.group.accepted), g["n"] + 1
    return {"label": sum(p.label in f.group.accepted for (f, _), p in zip(units, preds)),
            "top": sum(p.top in f.group.accepted for (f, _), p in zip(units, preds)), "n": len(units),
            "groups": groups}


def _adapt(model, rows, work: Path, diameter) -> tuple[Path, float]:
    """``milzoo adapt``'s examples CSV is a ``path,label`` manifest, written as fine-tuning's is."""
    from benchmarks.realdata_curve import write_manifest
    from milcnn.predict.adapt import adapt

    examples = write_manifest(rows, work)
    t0 = time.perf_counter()
    out = adapt(model, examples, work / "adapted", cell_diameter=diameter)
    return out, time.perf_counter() - t0


def _finetune(model, clf0, rows, work: Path, cache: Path, diameter) -> tuple[Path, float]:
    from benchmarks.realdata_curve import EXPERIMENTS, _rehearsal, write_manifest
    from training.export import export_folder
    from training.finetune import FinetuneConfig, finetune

    settings = next(e[5] for e in EXPERIMENTS if e[1] == model)
    manifest = write_manifest(rows, work / "train")
    cfg = FinetuneConfig(**{**settings, "source": model, "data": str(manifest), "out": str(work / "run"),
                            "cell_diameter": diameter})
    cfg.rehearsal_data = str(_rehearsal(model, clf0, cache / f"rehearsal-{model}-{cfg.rehearsal}",
                                        cfg.rehearsal))
    t0 = time.perf_counter()
    best = finetune(cfg)
    folder = export_folder(best, work / "model", name=f"{model}-finetuned", version="0.0.0")
    return folder, time.perf_counter() - t0


def run(data_root, work: Path, done: dict, save, *, redo: tuple[str, ...] = ()) -> dict:
    """Every experiment and size: each method ("adapt", "finetune") that ``done`` (run name -> result) lacks or
    ``redo`` names; ``save(done)`` after each run."""
    from milcnn import Classifier

    for experiment, model, set_name, groups, scored in CURVE:
        rs, clf0, fields = _fields(model, set_name, data_root)
        diameter = rs.cell_diameter if clf0.info.cell_diameter else None  # as benchmarks.realdata_curve
        cells = experiment.endswith("cells")
        scored_fields, units = _scored(rs, fields, groups, scored, cells)
        units = [(f, shifted(experiment, m)) for f, m in units]
        before = None
        for n in SIZES:
            name = f"{experiment.replace(' ', '-')}-{n}"
            todo = [m for m in ("adapt", "finetune") if m in redo or m not in done.get(name, {})]
            if not todo:
                continue
            before = before or _score(clf0, units, diameter)
            rows = [(shifted(experiment, m), label) for m, label in _examples(rs, fields, groups, n, cells)]
            x = {**done.get(name, {}), "experiment": experiment, "model": model, "model_version": clf0.info.version,
                 "per_class": n, "examples": len(rows), "scored_fields": [f.path.name for f in scored_fields],
                 "before": before}
            if "adapt" in todo:
                adapted, seconds = _adapt(model, rows, work / name / "adapt", diameter)
                x["adapt"] = {**_score(Classifier.from_dir(adapted), units, diameter), "seconds": round(seconds, 2),
                              "temperature": Classifier.from_dir(adapted).info.calibration.fitted_on.get(
                                  "adapted_temperature")}
            if "finetune" in todo:
                tuned, seconds = _finetune(model, clf0, rows, work / name / "finetune", work, diameter)
                x["finetune"] = {**_score(Classifier.from_dir(tuned, device="cpu", precision="fp32"), units,
                                          diameter), "seconds": round(seconds, 1)}
            done[name] = x
            log.info("%s: %s", name, x)
            save(done)
            shutil.rmtree(work / name, ignore_errors=True)
    return done


def render(r: dict) -> str:
    def cell(s):
        per = ", ".join(f"{g} {x['label']}/{x['n']}" for g, x in s.get("groups", {}).items())
        head = f"{s['label']}/{s['n']} ({100 * s['label'] / s['n']:.0f} %), top {s['top']}"
        return head + (f" ({per})" if per else "")

    lines = ["# `milzoo adapt` against `training.finetune`: learning curve on real cells", "",
             f"Command: `python -m benchmarks.adapt_curve` on {r['cpu']} (2 cores; see its docstring for the "
             "protocol). Scored: 4 x 4 mosaics (single cells for \"cells\") of proteins or fields neither method saw; "
             "\"label\" counts the label `milzoo predict` writes with its defaults, \"top\" the top class.", "",
             "| experiment | examples per class | scored images | zoo model: label | adapt: label | adapt time "
             "| finetune: label | finetune time |", "|---|---|---|---|---|---|---|---|"]
    for name, x in r["runs"].items():
        lines.append(f"| {x['experiment']} ({x['model']} {x['model_version']}) | {x['per_class']} | "
                     f"{x['before']['n']} | {cell(x['before'])} | {cell(x['adapt'])} | {x['adapt']['seconds']:.1f} s "
                     f"| {cell(x['finetune'])} | {x['finetune']['seconds']:.0f} s |")
    lines += ["", "Fine-tuned models are exported as `training.export` writes them, before a release's calibration "
              "(`training.calibrate`), so their label column follows the network's raw probabilities; an adapted "
              "model keeps the zoo model's calibration. \"yeast A swapped\" is a screen the zoo model was not made "
              "for (GFP and RFP in the other order), scored on proteins neither method saw.", "",
              "Scored fields:", ""]
    seen = set()
    for x in r["runs"].values():
        if x["experiment"] not in seen:
            seen.add(x["experiment"])
            lines.append(f"- {x['experiment']}: {', '.join(x['scored_fields'])}.")
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adapt_curve", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="the real labelled data (default: ../shared's)")
    parser.add_argument("--out", type=Path, default=RESULTS / "adapt_curve")
    parser.add_argument("--fresh", action="store_true", help="run every size again")
    parser.add_argument("--redo", nargs="*", choices=("adapt", "finetune"), default=(),
                        help="run this method again for every size (the other's results are kept)")
    args = parser.parse_args(argv)
    from benchmarks.machine import cpu_description
    from milcnn.io.images import write_atomic

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = args.out.with_suffix(".json")
    result = {"runs": {}} if args.fresh or not path.is_file() else json.loads(path.read_text())
    result["cpu"] = cpu_description()

    def save(done):
        with write_atomic(path, "w") as fh:
            fh.write(json.dumps({**result, "runs": done}, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        result["runs"] = run(args.data, Path(tmp), result["runs"], save, redo=tuple(args.redo))
    save(result["runs"])
    with write_atomic(args.out.with_suffix(".md"), "w") as fh:
        fh.write(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
