"""Score models on real labelled cells: cell by cell, and per field as mosaics of its own cells.

Usage::

    python -m benchmarks.realdata [--model NAME_OR_FOLDER ...] [--data DIR] [--k 4]
    python -m benchmarks.realdata --learning-curve [--data DIR]      # fine-tuning on real fields

The real sets and which protein or treatment counts as which class are defined in
``training/data/real.py``. Each model is scored on every set whose channels it reads and
whose classes it knows, as the images come ("as is") and, where the set states its cell
size and the model records its own, resized to the model's scale (``cell_diameter``).
A field's mosaics are ``k x k`` of its consecutive cells (no cell in two mosaics, fields
never mixed). Writes ``benchmarks/results/realdata.json`` (every figure) and ``realdata.md``
(rendered from the JSON, with the learning curve of ``--learning-curve`` when it has run).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


from milcnn.io.images import write_atomic
from milcnn.logs import log_to_stderr
from benchmarks.realdata_scoring import pct, score_model
from training.data.real import DEFAULT_REAL_DATA, REAL_SETS, RealDataMissingError, applicable_sets, load_fields

__all__ = ["main", "run_scores", "render"]

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_VIEWS = "4x8"  # how the learning curve shows a training field: 8 mosaics of 4 x 4 of its cells


def _describe_model(clf) -> dict:
    data = clf.info.training_data
    return {"name": clf.name, "version": clf.info.version, "folder": str(clf.folder),
            "trained_on": data.get("real_images") or ("simulated images only" if data.get("simulated") else
                                                      data.get("name", "unknown")),
            "scale": clf.info.scale_dict(), "settings_chosen_on": data.get("settings_chosen_on"),
            "simulated_test_accuracy": (clf.info.metrics or {}).get("accuracy")}


def run_scores(models: list[str], data_root: Path, *, k: int, half: str = "all", precision: str = "fp32",
               backend: str = "auto", norm_high: float | None = None, simulated: str | None = None) -> dict:
    """Score each model (at ``precision`` on ``backend``) on each real set it applies to (only the fields
    of ``half``: ``validation``, ``test`` or ``all``, see ``RealSet.half``); returns ``{model: {...}}``.

    ``norm_high``: a probe, run the model with this upper percentile of the input normalisation instead
    of the one it was trained with (the network is not retrained). ``simulated``: a test manifest to
    measure the simulated accuracy on through the SDK (as run here) instead of reading the model's record.
    """
    from dataclasses import replace

    from milcnn import Classifier

    out = {}
    for spec in models:
        clf = Classifier.from_hub(spec, device="cpu", precision=precision, backend=backend)
        if norm_high is not None:
            clf.info = replace(clf.info, normalization=replace(clf.info.normalization, high=norm_high))
        sets = applicable_sets(clf.channels, clf.classes)
        entry = {"model": _describe_model(clf), "sets": {}}
        if norm_high is not None:
            entry["model"]["normalization_high"] = norm_high
        if simulated:
            from training.quantize import evaluate_classifier

            entry["model"]["simulated_test_accuracy"] = evaluate_classifier(clf, simulated)["accuracy"]
            entry["model"]["simulated_test_set"] = simulated
        if not sets:
            log.warning("%s: no real set has its channels and classes; skipped", spec)
        for rs in sets:
            if not (data_root / rs.name).is_dir():
                log.warning("%s: no %s in %s; skipped", clf.name, rs.name, data_root)
                continue
            fields = [f for f in load_fields(rs, data_root, channels=clf.channels) if half in ("all", rs.half(f))]
            modes = {"as is": None}
            if rs.cell_diameter and clf.info.cell_diameter:
                modes[f"cell_diameter={rs.cell_diameter:g}"] = rs.cell_diameter
            entry["sets"][rs.name] = {}
            for mode, diameter in modes.items():
                result = score_model(clf, fields, k=k, cell_diameter=diameter)
                result["k"] = k
                entry["sets"][rs.name][mode] = result
                log.info("%s on %s (%s): mosaics %.1f %%, cells %.1f %% (%.0f s)", clf.name, rs.name, mode,
                         100 * result["mosaics"]["accuracy"], 100 * result["cells"]["accuracy"], result["seconds"])
        out[clf.name if spec == clf.name else spec] = entry
    return out


# ---------------------------------------------------------------------------------------- report

UNITS = ("mosaics", "cells", "whole_fields")


def _frac(s: dict | None) -> str:
    """``correct/n (pct)`` of a ``score_units`` result; ``-`` where it was not measured (rows recorded
    before whole fields were scored)."""
    return f"{s['correct']}/{s['n']} ({pct(s['accuracy'])})" if s else "-"


def _called(called: dict, top: int = 3) -> str:
    total = sum(called.values())
    return ", ".join(f"{label} {n}/{total}" for label, n in list(called.items())[:top])


def render(results: dict) -> str:
    lines = ["# Real images", "",
             "Made by `python -m benchmarks.realdata` (scores) and `python -m benchmarks.realdata --learning-curve`",
             "(fine-tuning); every figure is in `realdata.json`. The real sets are described in",
             "`training/data/real.py` and `../shared/realdata-labelled/README.md`: `yeast-chong` (real yeast of the",
             "Chong et al. 2015 GFP screen, 5 proteins x 4 fields, 1,642 cells; AAH1 and AAR2 count as right when called",
             "`cytosol` or `nucleus`) and `bbbc021-cells` (real BBBC021 MCF-7 cells, 8 DMSO and 12 protein-synthesis",
             "fields, 2,910 cells). A *mosaic* is k x k consecutive cells of one field; *cells* are the single crops.",
             ""]
    scores = results.get("scores", {})
    if scores:
        lines += ["## Zoo models as released", "",
                  "| model | trained on | real set | scale | mosaics right | balanced | cells right | balanced "
                  "| whole fields right | validation half: mosaics, cells, whole fields "
                  "| test half: mosaics, cells, whole fields |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, entry in scores.items():
            for set_name, modes in entry["sets"].items():
                for mode, r in modes.items():
                    halves = [", ".join(_frac(h.get(u)) for u in UNITS) if h else "-"
                              for h in (r.get("halves", {}).get(x) for x in ("validation", "test"))]
                    lines.append(f"| `{name}` | {entry['model']['trained_on']} | {set_name} | {mode} "
                                 f"| {_frac(r['mosaics'])} | {pct(r['mosaics']['balanced_accuracy'])} "
                                 f"| {_frac(r['cells'])} | {pct(r['cells']['balanced_accuracy'])} "
                                 f"| {_frac(r.get('whole_fields'))} "
                                 f"| {halves[0]} | {halves[1]} |")
        lines += ["", "The halves are `RealSet.validation` in `training/data/real.py`: AAC1, AAP1 and AAH1, and the "
                  "first 4 DMSO and 6 protein-synthesis fields, for choosing the settings of models trained without "
                  "real labels; the test half is every other field. A *whole field* is all of a field's cells "
                  "in one near-square mosaic (`training.data.real.field_mosaic`), predicted once, as a screen's "
                  "field is called: one unit per field (20 per set: yeast-chong 12 in the validation half and 8 in the test "
                  "half, bbbc021-cells 10 and 10).", ""]
        for name, entry in scores.items():
            for set_name, modes in entry["sets"].items():
                for mode, r in modes.items():
                    lines += [f"### `{name}` on {set_name}, {mode} ({r['k']} x {r['k']} mosaics)", "",
                              "| protein / treatment | right | mosaics right | mosaics called | cells right | cells called "
                              "| whole fields right | whole fields called |",
                              "|---|---|---|---|---|---|---|---|"]
                    rs = REAL_SETS[set_name]
                    for g in rs.groups:
                        m, c = r["mosaics"]["groups"].get(g.name), r["cells"]["groups"].get(g.name)
                        if m is None:
                            continue
                        w = r.get("whole_fields", {}).get("groups", {}).get(g.name)
                        lines.append(f"| {g.name} | {' or '.join(g.accepted)} | {m['correct']}/{m['n']} "
                                     f"| {_called(m['called'])} | {c['correct']}/{c['n']} | {_called(c['called'])} "
                                     + (f"| {w['correct']}/{w['n']} | {_called(w['called'])} |" if w else "| - | - |"))
                    lines.append("")
    if results.get("zoo_ablation"):
        lines += _render_zoo_ablation(results["zoo_ablation"])
    curve = results.get("learning_curve")
    if curve:
        from benchmarks.realdata_curve import render_curve

        lines += render_curve(curve)
    if results.get("ablation"):
        from benchmarks.realdata_curve import render_ablation

        lines += render_ablation(results["ablation"])
    return "\n".join(lines).rstrip() + "\n"


def _render_zoo_ablation(ablation: dict) -> list[str]:
    """Candidate zoo models (``--record LABEL``): each change and its real and simulated figures."""
    lines = ["## Zoo models without real labels: what each change did", "",
             "Each row is a candidate model trained on simulated images only, scored with `python -m "
             "benchmarks.realdata --model FOLDER --half HALF --record LABEL` (4 x 4 mosaics, as is: no scale "
             "given). Settings were chosen on the validation half only; test-half rows are the released "
             "settings' test figures. Single BBBC021 cells (36 px at mcf7-moa's scale) are padded to the "
             "model's 64 px minimum; rows recorded before the padding fix (all rows above the first cell-mosaic "
             "row) pooled that padding too, the later ones pool only the cell's own map pixels, so their "
             "cell figures are not comparable.", "",
             "| change | real set | half | mosaics right | per protein / treatment (mosaics) | cells right "
             "| whole fields right | simulated test (its own simulator) |", "|---|---|---|---|---|---|---|---|"]
    for label, entry in ablation.items():
        for set_name, modes in entry["sets"].items():
            r = modes["as is"]
            groups = ", ".join(f"{g} {v['correct']}/{v['n']}" for g, v in r["mosaics"]["groups"].items())
            lines.append(f"| {label} | {set_name} | {entry['half']} | {_frac(r['mosaics'])} | {groups} "
                         f"| {_frac(r['cells'])} | {_frac(r.get('whole_fields'))} "
                         f"| {pct(entry['model'].get('simulated_test_accuracy'))} |")
    return lines + [""]


def card_summary(entry: dict, *, k: int) -> dict:
    """A model's scores in the compact form its card shows (``config.json`` -> ``real_images``)."""
    sets = {}
    for set_name, modes in entry["sets"].items():
        rs = REAL_SETS[set_name]
        sets[set_name] = {}
        for mode, r in modes.items():
            groups = {}
            for g in rs.groups:
                m, c = r["mosaics"]["groups"].get(g.name), r["cells"]["groups"].get(g.name)
                if m is not None:
                    w = r.get("whole_fields", {}).get("groups", {}).get(g.name)
                    groups[g.name] = {"accepted": " or ".join(g.accepted), "mosaics": _frac(m),
                                      "called": _called(m["called"], top=2), "cells": _frac(c),
                                      "whole_fields": _frac(w)}
            sets[set_name][mode] = {"mosaics": _frac(r["mosaics"]), "cells": _frac(r["cells"]),
                                    "whole_fields": _frac(r.get("whole_fields")), "groups": groups,
                                    "halves": {h: {u: _frac(v.get(u)) for u in UNITS}
                                               for h, v in r.get("halves", {}).items()}}
    wrong = []
    for set_name, modes in entry["sets"].items():
        r = modes["as is"]
        for g in REAL_SETS[set_name].groups:
            m = r["mosaics"]["groups"].get(g.name)
            if m is not None and m["accuracy"] < 0.5:
                top = next(iter(m["called"]))
                wrong.append(f"{g.name} ({g.description}) is called {top} in {m['called'][top]} of {m['n']} mosaics")
    note = ("**Wrong on real images**, as the images come: " + "; ".join(wrong) + ". Fine-tune on a few labelled "
            "fields of your screen before use (README, *Your own screen*).") if wrong else ""
    chosen = entry["model"].get("settings_chosen_on")
    seen = (f"no labelled real cell was used to train this model; its settings were chosen on {chosen}, so the "
            "test half's figures are the test figures" if chosen else
            "none of these cells was used to train or choose this model")
    return {"command": "python -m benchmarks.realdata --update-zoo", "k": k, "note": note,
            "data": ", ".join(f"`{s}`" for s in entry["sets"]) + " of `../shared/realdata-labelled`, described in "
                    "benchmarks/results/realdata.md; " + seen,
            "sets": sets}


def save(results: dict, out_dir: Path = RESULTS) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with write_atomic(out_dir / "realdata.json", "w") as fh:
        json.dump(results, fh, indent=1)
        fh.write("\n")
    with write_atomic(out_dir / "realdata.md", "w") as fh:
        fh.write(render(results))


def load(out_dir: Path = RESULTS) -> dict:
    path = out_dir / "realdata.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _update_zoo(scores: dict, *, k: int) -> None:
    from milcnn.model.registry import zoo
    from training.model_card import update_folder

    for name, entry in scores.items():
        if name in zoo() and entry["sets"]:
            update_folder(zoo()[name].bundled_dir, real_images=card_summary(entry, k=k))
            log.info("updated the card of %s", name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realdata", description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="extend", nargs="+", metavar="NAME_OR_FOLDER",
                        help="zoo names, Hub repos or model folders (default: every zoo model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_REAL_DATA, help="the real labelled data folder "
                        "(default ../shared/realdata-labelled)")
    parser.add_argument("--k", type=int, default=4, help="mosaic side in cells (default 4)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where realdata.json and .md go")
    parser.add_argument("--learning-curve", action="store_true",
                        help="fine-tune on real fields and score held-out ones (benchmarks/realdata_curve.py)")
    parser.add_argument("--update-zoo", action="store_true",
                        help="also write each zoo model's figures into its config.json and card (Real images)")
    parser.add_argument("--work", type=Path, default=Path("runs/realdata-curve"),
                        help="with --learning-curve: where fine-tuning runs and models go (default runs/realdata-curve)")
    parser.add_argument("--only", action="append", metavar="RUN",
                        help="with --learning-curve: only this run (e.g. yeast-A-1; repeatable), merged into the "
                             "results of the others")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="with --learning-curve: change a fine-tuning setting (training.finetune.FinetuneConfig)")
    parser.add_argument("--views", default=None, metavar="SIDExN,...",
                        help="with --learning-curve: how a training field is shown, e.g. 4x8,1x8 (8 mosaics of "
                             "4 x 4 cells and 8 single cells); default " + DEFAULT_VIEWS)
    parser.add_argument("--ablation", action="store_true",
                        help="with --learning-curve: file the runs under the ablation table (named by --set) "
                             "instead of the learning curve")
    parser.add_argument("--quick", action="store_true", help="with --learning-curve: a few steps, for tests")
    parser.add_argument("--half", choices=("all", "validation", "test"), default="all",
                        help="score only this half of each real set (RealSet.validation; default all)")
    parser.add_argument("--norm-high", type=float, default=None, metavar="PERCENTILE",
                        help="a probe: run the model with this upper normalisation percentile instead of its own "
                             "(not retrained); needs --record")
    parser.add_argument("--simulated", metavar="MANIFEST",
                        help="measure the simulated test accuracy on this manifest through the SDK (as run here)")
    parser.add_argument("--record", metavar="LABEL",
                        help="file the scores under the zoo-model ablation table as LABEL (a candidate model, "
                             "not the released one), with the simulated test accuracy from its config.json")
    args = parser.parse_args(argv)
    log_to_stderr()  # our progress (the ONNX exporter's notices stay at warnings)
    if args.k < 1:
        parser.error(f"--k must be at least 1, got {args.k}")
    if args.update_zoo and (args.half != "all" or args.record):  # flags that cannot go together, before the data
        parser.error("--update-zoo writes the released models' cards: it takes neither --half nor --record")
    if args.norm_high is not None and not args.record:
        parser.error("--norm-high scores a probe, not the released model: give it a --record LABEL")
    if not args.data.is_dir():
        print(f"error: real data not found: {args.data} is not a folder (pass --data DIR)", file=sys.stderr)
        return 2
    try:
        if args.learning_curve:
            from benchmarks.realdata_curve import learning_curve

            from benchmarks.realdata_curve import parse_overrides, run_names

            try:
                overrides = parse_overrides(args.overrides)
            except ValueError as exc:
                parser.error(str(exc))
            try:
                views = tuple(tuple(int(v) for v in item.split("x")) for item in (args.views or DEFAULT_VIEWS).split(","))
                assert views and all(len(v) == 2 and v[0] >= 1 and v[1] >= 1 for v in views)
            except (ValueError, AssertionError):
                parser.error(f"--views expects SIDExN[,SIDExN...], e.g. 4x8,1x8; got {args.views!r}")
            curve = learning_curve(args.data, k=args.k, quick=args.quick, work=args.work, only=args.only,
                                   overrides=overrides, views=views)
            results = load(args.out)  # read after the long run: another run may have written meanwhile
            if args.ablation:
                label = ", ".join(args.overrides + ([f"views {args.views}"] if args.views else [])) or "defaults"
                kept = results.setdefault("ablation", {}).get(label)
                if kept:  # the same settings from another model or run: keep the earlier rows, replace reruns
                    new = {(r["name"], r.get("model_version")) for r in curve["runs"]}
                    curve["runs"] = [r for r in kept["runs"] if (r["name"], r.get("model_version")) not in new] + curve["runs"]
                results["ablation"][label] = curve
                save(results, args.out)
                print(args.out / "realdata.md")
                return 0
            if args.only and results.get("learning_curve"):  # replace those runs, keep the others
                kept = [r for r in results["learning_curve"]["runs"] if r.get("name") not in args.only]
                order = run_names()
                curve["runs"] = sorted(kept + curve["runs"], key=lambda r: order.index(r["name"]))
            results["learning_curve"] = curve
        else:
            from milcnn.model.registry import zoo

            models = args.model or sorted(zoo())
            if args.record and len(models) != 1:
                parser.error(f"--record files one model under its label; got {len(models)} models")
            scores = run_scores(models, args.data, k=args.k, half=args.half, norm_high=args.norm_high,
                                simulated=args.simulated)
            results = load(args.out)  # read after the long run: another run may have written meanwhile
            if args.record:
                for entry in scores.values():
                    results.setdefault("zoo_ablation", {})[args.record] = {"half": args.half, **entry}
                save(results, args.out)
                print(args.out / "realdata.md")
                return 0
            results.setdefault("scores", {}).update(scores)
            if args.update_zoo:
                _update_zoo(scores, k=args.k)
    except RealDataMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save(results, args.out)
    print(args.out / "realdata.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
