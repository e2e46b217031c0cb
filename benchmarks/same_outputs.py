"""Whether ``milzoo predict`` writes the same files as it did at a baseline commit (a refactor's check).

Usage (the command behind ``benchmarks/results/same_outputs.md``)::

    python -m benchmarks.same_outputs [--baseline COMMIT]

Runs ``milzoo predict`` with its defaults from this tree and from the tree of ``--baseline`` (checked out
into a temporary folder; each run imports its own ``sdk/`` and uses its own zoo folder) on:

- each zoo model's bundled ``sample_input.tif`` (with overlays);
- a simulated ImageXpress plate folder of 24 wells, one field each (``benchmarks.plates.build_plate``,
  yeast-loc), with a plate map, so ``wells.csv``, ``treatments.csv`` and ``plate.png`` are written too;
- the mcf7-moa sample enlarged to 2,200 x 2,200 px (tiled automatically).

Every file of each output folder is compared byte for byte, except: ``run.json`` (timings, versions and
paths by nature; its ``counts`` are compared), CSV files, which are compared on the columns both
runs wrote (new columns are allowed; a changed or missing value is not), ``report.html`` (compared without its
provenance table and finishing time: command, paths, times and versions), and ``.milzoo.lock`` (the lock a
run holds, no output: runs since issue 39 remove it when they finish). Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BASELINE_COMMIT = "253a3d8"
ZOO = ("yeast-loc", "yeast-loc-gfp", "mcf7-moa")


def make_inputs(folder: Path) -> list[tuple[str, list[str]]]:
    """The input files under ``folder``; returns (case name, ``milzoo predict`` arguments with ``{zoo}``
    standing for the zoo folder of the tree under test)."""
    import tifffile

    from benchmarks.plates import build_plate

    cases = [(f"sample {m}", [str(ROOT / "zoo" / m / "sample_input.tif"), "--model", f"{{zoo}}/{m}"]) for m in ZOO]
    plate = folder / "plate1"
    layout = build_plate(plate, fields=48)
    wells = sorted(layout)[:24]
    for well in set(layout) - set(wells):
        for f in (plate / well).iterdir():
            f.unlink()
        (plate / well).rmdir()
    with open(folder / "map.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["well", "compound", "concentration", "moa"])
        for i, well in enumerate(wells):
            w.writerow([well, f"cpd{i % 6}", [0.1, 1.0][i % 2], layout[well]])
    cases.append(("plate (imagexpress, plate map)", [str(plate), "--recursive", "--layout", "imagexpress",
                                                     "--plate-map", str(folder / "map.csv"), "--model",
                                                     "{zoo}/yeast-loc"]))
    sample = tifffile.imread(ROOT / "zoo" / "mcf7-moa" / "sample_input.tif")
    reps = -(-2200 // min(sample.shape[1:]))
    big = np.tile(sample, (1, reps, reps))[:, :2200, :2200]
    tifffile.imwrite(folder / "big.tif", big, photometric="minisblack")
    cases.append(("mcf7-moa 2200 x 2200 (tiled)", [str(folder / "big.tif"), "--model", "{zoo}/mcf7-moa"]))
    return cases


def run_tree(tree: Path, args: list[str], out: Path, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree / "sdk")}
    argv = [a.replace("{zoo}", str(tree / "zoo")) for a in args]
    proc = subprocess.run([sys.executable, "-m", "milcnn.cli", "predict", *argv, "--out", str(out)],
                          capture_output=True, text=True, timeout=1800, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"milzoo predict ({tree}) failed: {proc.stderr[-2000:]}")


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def compare(new: Path, old: Path) -> list[str]:
    """Differences between two output folders, one line each."""
    problems = []
    files = {p.relative_to(old) for p in old.rglob("*") if p.is_file() and p.name != ".milzoo.lock"}
    new_files = {p.relative_to(new) for p in new.rglob("*") if p.is_file()}
    problems += [f"{f}: missing" for f in sorted(files - new_files)]
    for f in sorted(files & new_files):
        a, b = new / f, old / f
        if f.name == "run.json":
            ca, cb = json.loads(a.read_text()).get("counts"), json.loads(b.read_text()).get("counts")
            if ca != cb:
                problems.append(f"{f}: counts {ca} != {cb}")
        elif f.suffix == ".csv":
            (cols_a, rows_a), (cols_b, rows_b) = _csv(a), _csv(b)
            lost = [c for c in cols_b if c not in cols_a]
            if lost:
                problems.append(f"{f}: columns {lost} missing")
            common = [c for c in cols_b if c in cols_a]
            if [[r[c] for c in common] for r in rows_a] != [[r[c] for c in common] for r in rows_b]:
                problems.append(f"{f}: values differ")
        elif f.name == "report.html":
            if _without_provenance(a) != _without_provenance(b):
                problems.append(f"{f}: differs outside its provenance table")
        elif a.read_bytes() != b.read_bytes():
            problems.append(f"{f}: bytes differ")
    return problems


def _without_provenance(path: Path) -> str:
    """``report.html`` less its provenance table (the command, paths, times and versions of the run) and the
    summary's finishing time."""
    import re

    text = re.sub(r"<h2>Provenance</h2><table>.*?</table>", "", path.read_text(encoding="utf-8"), flags=re.S)
    return re.sub(r"finished \d{4}-\d\d-\d\dT[\d:.+Z-]*", "finished", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.same_outputs", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="the commit to compare with "
                        f"(default {BASELINE_COMMIT})")
    args = parser.parse_args(argv)
    from milcnn.io.images import write_atomic

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for i, (name, case) in enumerate(make_inputs(tmp / "inputs")):
                outs = {}
                for label, tree in (("new", ROOT), ("old", old)):
                    outs[label] = tmp / f"out{i}-{label}"
                    run_tree(tree, case, outs[label], tmp)
                problems = compare(outs["new"], outs["old"])
                n = sum(1 for p in outs["old"].rglob("*") if p.is_file() and p.name != ".milzoo.lock")
                results.append({"case": name, "files": n, "differences": problems})
                print(f"{name}: {n} files, {len(problems)} differences", *problems, sep="\n  ")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    lines = ["# `milzoo predict`: the same files as before", "",
             f"Command: `python -m benchmarks.same_outputs --baseline {args.baseline}` (see its docstring: every file "
             "byte for byte; CSVs on their common columns; `run.json` on its counts).", "",
             "| case | files | differences |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['files']} | {'; '.join(r['differences']) or 'none'} |" for r in results]
    with write_atomic(RESULTS / "same_outputs.md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return 1 if any(r["differences"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
