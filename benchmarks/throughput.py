"""``milzoo predict``'s throughput against an earlier commit's SDK, in the same run: the regression check of a
change that was not meant to cost speed (``python -m benchmarks.peers --pipeline-against COMMIT``,
``python -m benchmarks.calibration --throughput``)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_description

ROOT = Path(__file__).resolve().parents[1]


def against_commit(commit: str, n: int, rounds: int, precisions: tuple[str, ...] = ("fp32", "int8")) -> dict:
    """``milzoo predict`` on ``n`` 512 x 512 fields with this tree's SDK and with ``commit``'s (a git worktree,
    its ``sdk/`` first on ``PYTHONPATH``, its own zoo folder as ``--model``), at each of ``precisions``,
    rounds in alternating order: images per second of each run's ``run.json`` and the median ratio of this
    tree to ``commit`` per round (a regression check of a change that was not meant to cost speed)."""
    import tifffile

    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), commit], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            folder = tmp / "fields"
            folder.mkdir()
            sample = tifffile.imread(ROOT / "zoo" / "yeast-loc" / "sample_input.tif")
            for i in range(n):
                tifffile.imwrite(folder / f"f{i:03d}.tif", np.roll(sample, 37 * i, axis=2), photometric="minisblack")
            runs = [(f"{precision}, {label}", tree, precision) for precision in precisions
                    for label, tree in (("this tree", ROOT), (commit, old))]
            for r in range(rounds):
                for k, (name, tree, precision) in enumerate(runs if r % 2 == 0 else runs[::-1]):
                    out = tmp / f"out-{r}-{k}"
                    env = {**os.environ, "PYTHONPATH": str(tree / "sdk")}
                    proc = subprocess.run([sys.executable, "-m", "milcnn.cli", "predict", str(folder), "--out", str(out),
                                           "--model", str(tree / "zoo" / "yeast-loc"), "--precision", precision],
                                          capture_output=True, text=True, timeout=3600, env=env, cwd=tmp)
                    if proc.returncode != 0:
                        raise SystemExit(f"milzoo predict ({name}) failed: {proc.stderr[-2000:]}")
                    record = json.loads((out / "run.json").read_text())
                    rates.setdefault(name, []).append(record["counts"]["predicted"] / record["seconds"]["run"])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    ratios = {p: round(statistics.median(a / b for a, b in zip(rates[f"{p}, this tree"], rates[f"{p}, {commit}"])), 3)
              for p in precisions}
    return {"commit": commit, "images": n, "rounds": rounds, "cpu": cpu_description(),
            "images_per_second": {k: [round(v, 2) for v in vals] for k, vals in rates.items()}, "ratio_median": ratios}
