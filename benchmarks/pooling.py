"""The paper's pooling comparison, measured on the yeast and the MCF-7 simulators.

Trains the same MIL-CNN (the default architecture of ``training.train``) once per pooling
operator, with the same training set, seed and budget, and evaluates each on three test
sets simulated from other seeds, in which 0 %, 25 % and 50 % of cells show no pattern. On
MCF-7 it also scores treatments (compound, concentration) as in Ljosa et al. 2013.

Usage (the commands that made ``benchmarks/results/pooling.md``)::

    python -m benchmarks.pooling --dataset yeast
    python -m benchmarks.pooling --dataset mcf7

Simulated data is cached under ``data/bench`` (yeast) and ``data/bench-mcf7``, runs under
``runs/pooling`` and ``runs/pooling-mcf7``; a run whose ``best.pt`` exists is evaluated
again, not retrained (``--retrain`` to force). Results of one dataset never touch the other's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.machine import cpu_description
from milcnn.logs import log_to_stderr
from training.data.mcf7 import MCF7Params
from training.data.yeast import YeastParams
from training.evaluate import evaluate
from training.simulate import simulate_dataset
from training.checkpoint import load_checkpoint, read_checkpoint
from training.train import TrainConfig, train
from benchmarks.pooling_report import write_report

POOLINGS = {  # label: (pooling, its parameters, other training settings)
    "max": ("max", {}, {}),
    "mean": ("mean", {}, {}),
    "lse (r=5)": ("lse", {"r": 5.0}, {}),
    "gm (r=2.5)": ("gm", {"r": 2.5}, {}),
    "noisy_and (a=5)": ("noisy_and", {"a": 5.0}, {}),
    "noisy_and (a=7.5)": ("noisy_and", {"a": 7.5}, {}),
    "noisy_and (a=10)": ("noisy_and", {"a": 10.0}, {}),
    "gated attention": ("attention", {}, {}),
    "noisy_and (a=10), paper's loss (no smoothness)": ("noisy_and", {"a": 10.0}, {"smoothness": 0.0}),
}
LEVELS = (0.0, 0.25, 0.5)
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@dataclass(frozen=True)
class Benchmark:
    """One simulated dataset of the comparison: its data, seeds and training budget."""

    name: str
    title: str
    simulator: str
    channels: str
    marker: str  # the channel the Otsu baseline row thresholds
    params: type  # the simulator's settings class (YeastParams, MCF7Params)
    n_train: int
    n_val: int
    n_test: int
    train_seed: int
    val_seed: int
    test_seeds: dict
    crop: int
    batch_size: int
    epochs: int
    poolings: tuple[str, ...]

    @property
    def data_dir(self) -> Path:
        return Path("data/bench" if self.name == "yeast" else f"data/bench-{self.name}")

    @property
    def runs_dir(self) -> Path:
        return Path("runs/pooling" if self.name == "yeast" else f"runs/pooling-{self.name}")


BENCHMARKS = {
    "yeast": Benchmark("yeast", "the yeast simulator", "yeast", "gfp,rfp", "rfp", YeastParams, n_train=330, n_val=110,
                       n_test=110, train_seed=101, val_seed=102, test_seeds={0.0: 200, 0.25: 225, 0.5: 250},
                       crop=128, batch_size=16, epochs=6, poolings=tuple(POOLINGS)),
    # three-channel 512 x 512 fields cost about 2.5x a yeast crop batch: fewer rows, smaller sets
    "mcf7": Benchmark("mcf7", "the MCF-7 simulator (BBBC021 classes)", "mcf7", "dna,tubulin,actin", "tubulin",
                      MCF7Params, n_train=320, n_val=80, n_test=80, train_seed=301, val_seed=302,
                      test_seeds={0.0: 400, 0.25: 425, 0.5: 450}, crop=192, batch_size=8, epochs=6,
                      poolings=("max", "mean", "lse (r=5)", "gm (r=2.5)", "noisy_and (a=5)", "noisy_and (a=10)",
                                "gated attention")),
}


def dataset(root: Path, name: str, *, kind: str, n: int, seed: int, params) -> Path:
    manifest = root / name / "manifest.csv"
    if not manifest.is_file():
        simulate_dataset(kind, n=n, seed=seed, out=root / name, params=params, workers=os.cpu_count() or 1)
    return manifest


def run_dir(bench: Benchmark, label: str) -> Path:
    extra = POOLINGS[label][2]
    return bench.runs_dir / "".join(ch for ch in label.split(",")[0] + ("-nosmooth" if extra else "")
                                    if ch.isalnum() or ch in "-_.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pooling", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(BENCHMARKS), default="yeast")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--epochs", type=int, help="training epochs (default: the dataset's budget)")
    parser.add_argument("--n-test", type=int, help="images per test set (default: the dataset's)")
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--only", nargs="*", help="pooling names to run (default all of the dataset's; none "
                                                  "with an empty list)")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--reference", metavar="NAME=CHECKPOINT",
                        help="also evaluate this trained checkpoint (e.g. a released model's) on the test sets")
    args = parser.parse_args(argv)
    log_to_stderr()
    bench = BENCHMARKS[args.dataset]
    epochs, n_test = args.epochs or bench.epochs, args.n_test or bench.n_test
    command = "python -m benchmarks.pooling " + " ".join(argv if argv is not None else sys.argv[1:])

    root = bench.data_dir
    train_manifest = dataset(root, "train", kind=bench.simulator, n=bench.n_train, seed=bench.train_seed,
                             params=bench.params())
    val_manifest = dataset(root, "val", kind=bench.simulator, n=bench.n_val, seed=bench.val_seed, params=bench.params())
    tests = {lv: dataset(root, f"test-{int(lv * 100)}", kind=bench.simulator, n=n_test, seed=bench.test_seeds[lv],
                         params=bench.params(non_showing=(lv, lv))) for lv in LEVELS}

    json_path = args.results / "pooling.json"
    report = json.loads(json_path.read_text()) if json_path.is_file() else {}
    section = report.get(bench.name, {})
    results = section.get("results", {})
    for label in bench.poolings:
        pooling, params, extra = POOLINGS[label]
        if args.only is not None and label not in args.only and pooling not in args.only:
            continue
        run = run_dir(bench, label)
        cfg = TrainConfig(data=str(train_manifest), val=str(val_manifest), out=str(run), channels=bench.channels,
                          pooling=pooling, pooling_params=params, epochs=epochs, steps_per_epoch=args.steps_per_epoch,
                          crop=bench.crop, batch_size=bench.batch_size, seed=0, **extra)
        t0 = time.time()
        if args.retrain or not (run / "best.pt").is_file():
            if (run / "metrics.jsonl").exists():
                (run / "metrics.jsonl").unlink()
            train(cfg, progress=False)
        train_seconds = time.time() - t0
        model, ckpt = load_checkpoint(run / "best.pt")
        if train_seconds < 5:  # reused: report the time the run took (last.pt holds every epoch)
            history = read_checkpoint(run / "last.pt")["history"]
            train_seconds = sum(h["seconds"] for h in history)
        row = {"pooling": pooling, "params": params, "smoothness": cfg.smoothness,
               "train_seconds": round(train_seconds, 1), "best_epoch": ckpt["best"]["epoch"],
               "levels": evaluate_levels(model, tests, run, f"{bench.name} {label}")}
        if pooling == "noisy_and":
            row["learned_b"] = [round(float(v), 4) for v in model.pooling.b.detach()]
        results[label] = row
        section["results"] = results
        report[bench.name] = describe(bench, section, command, epochs, args.steps_per_epoch, n_test)
        write_report(report, args.results)  # after every run, so finished rows are never lost
    if args.reference:
        name, _, checkpoint = args.reference.partition("=")
        model, ckpt = load_checkpoint(checkpoint)
        history = read_checkpoint(Path(checkpoint).with_name("last.pt"))["history"]
        section.setdefault("references", {})[name] = {
            "command": command, "checkpoint": checkpoint, "epochs": len(history), "best_epoch": ckpt["best"]["epoch"],
            "train_seconds": round(sum(h["seconds"] for h in history), 1),
            "levels": evaluate_levels(model, tests, Path(checkpoint).parent / f"eval-{bench.name}-bench",
                                      f"{bench.name} {name}")}
        report[bench.name] = describe(bench, section, section.get("command", command), epochs,
                                      args.steps_per_epoch, n_test)
        write_report(report, args.results)
    print(f"wrote {json_path} and {args.results / 'pooling.md'}")
    return 0


def evaluate_levels(model, tests: dict, run: Path, label: str) -> dict:
    """Accuracy, IoU (and on drug screens treatment accuracy) of ``model`` on each test level."""
    levels = {}
    for lv, manifest in tests.items():
        m = evaluate(model, manifest, run / f"eval-{int(lv * 100)}")
        levels[str(lv)] = {"accuracy": m["accuracy"], "mean_iou": m["segmentation"]["mean_iou"],
                           "otsu_mean_iou": m["segmentation"]["otsu_mean_iou"],
                           "per_class_iou": m["segmentation"]["per_class_iou"],
                           "seconds_per_image": m["seconds_per_image"]}
        if "treatments" in m:
            levels[str(lv)]["treatment_accuracy"] = m["treatments"]["treatment_accuracy"]
            levels[str(lv)]["n_treatments"] = m["treatments"]["n_treatments"]
        print(f"{label:30s} non-showing {lv:.0%}: accuracy {m['accuracy']:.4f}, "
              f"IoU {m['segmentation']['mean_iou']:.3f}", file=sys.stderr)
    return levels


def describe(bench: Benchmark, section: dict, command: str, epochs: int, steps_per_epoch: int, n_test: int) -> dict:
    """This dataset's part of pooling.json: the command that made its pooling rows, data, budget and rows."""
    budget = asdict(TrainConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, crop=bench.crop,
                                batch_size=bench.batch_size))
    return {**section, "command": command, "title": bench.title, "channels": bench.channels, "marker": bench.marker,
            "machine": {"cpu": cpu_description(), "threads": torch.get_num_threads(),
                        "torch": torch.__version__},
            "data": {"train": {"n": bench.n_train, "seed": bench.train_seed,
                               "non_showing": list(bench.params().non_showing)},
                     "val": {"n": bench.n_val, "seed": bench.val_seed},
                     "test": {str(lv): {"n": n_test, "seed": bench.test_seeds[lv], "non_showing": lv} for lv in LEVELS}},
            "budget": {k: budget[k] for k in ("epochs", "steps_per_epoch", "batch_size", "crop", "lr", "width",
                                              "output_stride", "context", "smoothness")}}


if __name__ == "__main__":
    sys.exit(main())
