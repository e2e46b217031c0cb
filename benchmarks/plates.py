"""A plate as the unit of work: what the per-well and per-plate outputs cost, and the picture.

Usage (the command behind ``benchmarks/results/plates.md`` and ``docs/plate.png``)::

    python -m benchmarks.plates [--fields 1000]

Builds a 384-well plate folder of simulated yeast fields (``training.simulate``, 512 x 512 px): one
subfolder per well, one file per channel named as ImageXpress does (``B03_s1_w1.tif``, ``_w2.tif``),
each pair of columns one localisation class, the last two columns empty. Runs
``milzoo predict PLATE --recursive --layout imagexpress --no-overlays`` once, in a child process, and
reads from its ``run.json`` the seconds of the whole run (wall clock) and the CPU seconds of the plate
work (each field's location and mask areas, ``wells.csv``, ``plate.png``, all on the main thread).
Target: the plate work <= 2 % of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
POOL = ROOT / "data" / "bench-plate-pool"  # simulated fields, reused across wells


def build_plate(folder: Path, *, fields: int, pool: Path = POOL, per_class: int = 6) -> dict:
    """The plate folder; returns {well: class}."""
    from training.data.yeast import YEAST_CLASSES, YeastParams
    from training.simulate import simulate_dataset

    if not (pool / "manifest.csv").is_file():
        simulate_dataset("yeast", n=per_class * len(YEAST_CLASSES), seed=11, out=pool,
                         params=YeastParams(size=512), workers=2)
    import csv

    import tifffile

    by_class: dict[str, list[Path]] = {}
    with open(pool / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            by_class.setdefault(row["label"], []).append(pool / row["path"])
    wells = [(r, c) for r in "ABCDEFGHIJKLMNOP" for c in range(1, 23)]  # columns 23-24 stay empty
    layout, k = {}, 0
    per_well = [fields // len(wells) + (1 if i < fields % len(wells) else 0) for i in range(len(wells))]
    for (r, c), n in zip(wells, per_well):
        cls = YEAST_CLASSES[(c - 1) // 2]
        well = f"{r}{c:02d}"
        layout[well] = cls
        (folder / well).mkdir(parents=True, exist_ok=True)
        for f in range(1, n + 1):
            image = tifffile.imread(by_class[cls][k % len(by_class[cls])])
            k += 1
            for w in (1, 2):
                tifffile.imwrite(folder / well / f"{well}_s{f}_w{w}.tif", image[w - 1])
    return layout


def run(fields: int) -> dict:
    from milcnn import Classifier

    diameter = Classifier.from_hub("yeast-loc").info.cell_diameter  # simulated fields: the model's own scale
    with tempfile.TemporaryDirectory() as tmp:
        plate = Path(tmp) / "plate1"
        layout = build_plate(plate, fields=fields)
        out = Path(tmp) / "out"
        command = ["milzoo", "predict", "plate1", "--recursive", "--layout", "imagexpress", "--no-overlays",
                   "--cell-diameter", f"{diameter:g}", "--out", "out"]
        proc = subprocess.run([sys.executable, "-m", "milcnn.cli", *command[1:]], cwd=tmp, capture_output=True,
                              text=True, timeout=7200)
        if proc.returncode != 0:
            raise SystemExit(f"milzoo predict failed ({proc.returncode}): {proc.stderr[-2000:]}")
        record = json.loads((out / "run.json").read_text())
        import csv

        with open(out / "wells.csv", newline="") as fh:
            wells = list(csv.DictReader(fh))
        right = sum(w["label"] == layout[w["well"]] for w in wells)
        shutil.copy(out / "plate.png", ROOT / "docs" / "plate.png")
    seconds = record["seconds"]
    return {"command": " ".join(command), "fields": record["counts"]["predicted"], "files": 2 * fields,
            "wells": len(wells), "wells_called_as_simulated": right, "run_seconds": seconds["run"],
            "plate_seconds": seconds["plate_outputs"],
            "plate_share": seconds["plate_outputs"] / seconds["run"], "model": record["model"],
            "threads": os.cpu_count()}


def render(r: dict) -> str:
    return "\n".join([
        "# A plate as the unit of work", "",
        "Made by `python -m benchmarks.plates` (a simulated 384-well plate folder, see its docstring; "
        f"`{r['command']}`).", "",
        "| measure | value | target |", "|---|---|---|",
        f"| fields (one file per channel: {r['files']:,} files) | {r['fields']:,} | |",
        f"| wells in `wells.csv` | {r['wells']} | |",
        f"| whole run (`run.json` seconds.run, wall clock, {r['threads']} cores) | {r['run_seconds']:.1f} s | |",
        f"| plate work: locations, mask areas, `wells.csv`, `plate.png` (CPU time of the main thread) "
        f"| {r['plate_seconds']:.2f} s "
        f"({100 * r['plate_share']:.2f} %) | <= 2 % |",
        f"| wells called as simulated ({r['model']['name']} {r['model']['version']}; simulated images, not a "
        f"real-image figure) | {r['wells_called_as_simulated']}/{r['wells']} | |", "",
        "![plate.png of this run](../../docs/plate.png)", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plates", description=__doc__.split("\n")[0])
    parser.add_argument("--fields", type=int, default=1000)
    args = parser.parse_args(argv)
    from milcnn.io.images import write_atomic

    r = run(args.fields)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with write_atomic(RESULTS / "plates.json", "w") as fh:
        fh.write(json.dumps(r, indent=2) + "\n")
    with write_atomic(RESULTS / "plates.md", "w") as fh:
        fh.write(render(r))
    print(render(r))
    return 0 if r["plate_share"] <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
