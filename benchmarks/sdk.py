"""The SDK's footprint and fidelity: install size, import time, peak memory, accuracy vs PyTorch.

Usage (the command behind benchmarks/results/sdk.md)::

    python -m benchmarks.sdk

1. Builds a fresh virtual environment with ``pip install .`` (no extras) and measures its size.
2. Times ``import milcnn`` in a fresh interpreter (median of 7).
3. Peak resident memory of a fresh process that loads ``yeast-loc`` and predicts one
   1024 x 1344 two-channel image (``ru_maxrss``), and the same for the interpreter alone.
4. Accuracy of each zoo model through the SDK on its simulated test set (seeds not used in
   training) against the PyTorch checkpoint it was exported from (``runs/<name>/best.pt``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_description
from milcnn.io.images import write_atomic

ROOT = Path(__file__).resolve().parents[1]
TEST_SETS = {"yeast-loc": "data/yeast-test/manifest.csv", "yeast-loc-gfp": "data/yeast-gfp-test/manifest.csv"}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def install_size() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        base = du(env)
        subprocess.run([str(env / "bin" / "pip"), "install", "-q", str(ROOT)], check=True)
        total = du(env)
        torch = subprocess.run([str(env / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode == 0
        import_times = []
        for _ in range(7):
            out = subprocess.run([str(env / "bin" / "python"), "-c",
                                  "import time; t = time.perf_counter(); import milcnn; print(time.perf_counter() - t)"],
                                 capture_output=True, text=True, check=True)
            import_times.append(float(out.stdout))
        return {"venv_mb": round(total / 1e6, 1), "empty_venv_mb": round(base / 1e6, 1), "torch_installed": torch,
                "import_milcnn_s": round(statistics.median(import_times), 4)}


PEAK_SCRIPT = """
import resource, sys, numpy as np
if sys.argv[1] == "predict":
    from milcnn import Classifier
    clf = Classifier.from_hub("yeast-loc", device="cpu")
    image = np.random.default_rng(0).integers(100, 4000, size=(2, 1024, 1344)).astype(np.uint16)
    clf.predict(image)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_memory() -> dict:
    peaks = {}
    for mode in ("baseline", "predict"):
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, mode], capture_output=True, text=True, check=True)
        peaks[mode] = float(out.stdout.strip().splitlines()[-1])
    return {"predict_1024x1344_peak_rss_mb": round(peaks["predict"], 1),
            "python_numpy_baseline_mb": round(peaks["baseline"], 1)}


def accuracy() -> dict:
    from milcnn import Classifier
    from training.data.manifest import read_manifest
    from training.evaluate import evaluate
    from training.checkpoint import load_checkpoint

    results = {}
    for name, manifest in TEST_SETS.items():
        clf = Classifier.from_hub(name, device="cpu")
        samples, _, _ = read_manifest(ROOT / manifest, channels=clf.channels, classes=clf.classes)
        t0 = time.perf_counter()
        predicted = [clf.predict(s.paths[0]).top for s in samples]
        seconds = (time.perf_counter() - t0) / len(samples)
        sdk_acc = float(np.mean([p == s.labels[0] for p, s in zip(predicted, samples)]))
        model, _ = load_checkpoint(ROOT / "runs" / name / "best.pt")
        with tempfile.TemporaryDirectory() as tmp:
            torch_metrics = evaluate(model, ROOT / manifest, tmp)
        results[name] = {"test_set": manifest, "n_images": len(samples), "sdk_accuracy": round(sdk_acc, 4),
                         "pytorch_accuracy": round(torch_metrics["accuracy"], 4),
                         "difference_points": round(100 * (sdk_acc - torch_metrics["accuracy"]), 2),
                         "pytorch_mean_iou": round(torch_metrics["segmentation"]["mean_iou"], 4),
                         "sdk_seconds_per_512px_image": round(seconds, 4)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sdk", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only-install", action="store_true",
                        help="re-measure only the install size, keeping the rest of sdk.json (the accuracy section "
                             "needs the training checkpoints in runs/)")
    args = parser.parse_args(argv)
    if args.only_install:
        report = json.loads((args.results / "sdk.json").read_text())
        report["install"] = {**install_size(), "command": "python -m benchmarks.sdk --only-install"}
    else:
        report = {"command": "python -m benchmarks.sdk", "cpu": cpu_description(), "python": platform.python_version(),
                  "install": install_size(), "memory": peak_memory(), "accuracy": accuracy()}
    args.results.mkdir(parents=True, exist_ok=True)
    with write_atomic(args.results / "sdk.json", "w") as fh:
        json.dump(report, fh, indent=2)
    with write_atomic(args.results / "sdk.md", "w") as fh:
        fh.write(render(report))
    print(render(report))
    return 0


def render(r: dict) -> str:
    i, m = r["install"], r["memory"]
    lines = [
        "# SDK footprint and fidelity",
        "",
        f"Made by `{r['command']}` on {r['cpu']}, Python {r['python']}.",
        "",
        *([f"The install rows were re-measured later by `{i['command']}`.", ""] if "command" in i else []),
        "| measure | value | target |",
        "|---|---|---|",
        f"| fresh `pip install .` virtual environment | {i['venv_mb']} MB (empty venv {i['empty_venv_mb']} MB) | <= 250 MB |",
        f"| torch installed in it | {'yes' if i['torch_installed'] else 'no'} | no |",
        f"| `import milcnn` (median of 7, fresh interpreter) | {i['import_milcnn_s'] * 1000:.1f} ms | <= 500 ms |",
        f"| peak RSS, load yeast-loc + predict one 1024 x 1344 2-channel image | {m['predict_1024x1344_peak_rss_mb']} MB "
        f"(Python + numpy alone {m['python_numpy_baseline_mb']} MB) | <= 1 GB |",
        "",
        "| model | test set | images | SDK accuracy | PyTorch accuracy | difference (points) | PyTorch mean IoU | SDK s per 512 px image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, a in r["accuracy"].items():
        lines.append(f"| {name} | `{a['test_set']}` | {a['n_images']} | {a['sdk_accuracy']:.4f} | {a['pytorch_accuracy']:.4f} "
                     f"| {a['difference_points']:+.2f} | {a['pytorch_mean_iou']:.4f} | {a['sdk_seconds_per_512px_image']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
