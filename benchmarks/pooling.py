"""The paper's pooling comparison, measured on the yeast simulator.

Trains the same MIL-CNN (the default architecture of ``training.train``) once per pooling
operator, with the same training set, seed and budget, and evaluates each on three test
sets simulated from other seeds, in which 0 %, 25 % and 50 % of cells show no pattern.

Usage (the command that made ``benchmarks/results/pooling.md``)::

    python -m benchmarks.pooling

Simulated data is cached under ``--data-dir`` and runs under ``--runs-dir``; a run whose
``best.pt`` exists is evaluated again, not retrained (``--retrain`` to force).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from milcnn.io import write_atomic
from training.data.yeast import YeastParams
from training.evaluate import evaluate
from training.simulate import simulate_dataset
from training.train import TrainConfig, load_checkpoint, train

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
TRAIN_SEED, VAL_SEED = 101, 102
TEST_SEEDS = {0.0: 200, 0.25: 225, 0.5: 250}


def dataset(root: Path, name: str, *, n: int, seed: int, params: YeastParams) -> Path:
    manifest = root / name / "manifest.csv"
    if not manifest.is_file():
        simulate_dataset("yeast", n=n, seed=seed, out=root / name, params=params, workers=os.cpu_count() or 1)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pooling", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/pooling"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--n-train", type=int, default=330)
    parser.add_argument("--n-test", type=int, default=220)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--only", nargs="*", help="pooling names to run (default all)")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args(argv)

    train_manifest = dataset(args.data_dir, "train", n=args.n_train, seed=TRAIN_SEED, params=YeastParams())
    val_manifest = dataset(args.data_dir, "val", n=110, seed=VAL_SEED, params=YeastParams())
    tests = {lv: dataset(args.data_dir, f"test-{int(lv * 100)}", n=args.n_test, seed=TEST_SEEDS[lv],
                         params=YeastParams(non_showing=(lv, lv))) for lv in LEVELS}

    results = {}
    json_path = args.results / "pooling.json"
    if json_path.is_file():
        results = json.loads(json_path.read_text()).get("results", {})
    for label, (pooling, params, extra) in POOLINGS.items():
        if args.only and label not in args.only and pooling not in args.only:
            continue
        run = args.runs_dir / "".join(ch for ch in label.split(",")[0] + ("-nosmooth" if extra else "") if ch.isalnum() or ch in "-_.")
        cfg = TrainConfig(data=str(train_manifest), val=str(val_manifest), out=str(run), channels="gfp,rfp",
                          pooling=pooling, pooling_params=params, epochs=args.epochs,
                          steps_per_epoch=args.steps_per_epoch, seed=0, **extra)
        t0 = time.time()
        if args.retrain or not (run / "best.pt").is_file():
            if (run / "metrics.jsonl").exists():
                (run / "metrics.jsonl").unlink()
            train(cfg, progress=False)
        train_seconds = time.time() - t0
        model, ckpt = load_checkpoint(run / "best.pt")
        if train_seconds < 5:  # reused: report the time the run took (last.pt holds every epoch)
            history = torch.load(run / "last.pt", weights_only=True)["history"]
            train_seconds = sum(h["seconds"] for h in history)
        row = {"pooling": pooling, "params": params, "smoothness": cfg.smoothness, "train_seconds": round(train_seconds, 1),
               "best_epoch": ckpt["best"]["epoch"], "levels": {}}
        for lv, manifest in tests.items():
            m = evaluate(model, manifest, run / f"eval-{int(lv * 100)}")
            row["levels"][str(lv)] = {"accuracy": m["accuracy"], "mean_iou": m["segmentation"]["mean_iou"],
                                      "otsu_mean_iou": m["segmentation"]["otsu_mean_iou"],
                                      "per_class_iou": m["segmentation"]["per_class_iou"],
                                      "seconds_per_image": m["seconds_per_image"]}
            print(f"{label:20s} non-showing {lv:.0%}: accuracy {m['accuracy']:.4f}, "
                  f"IoU {m['segmentation']['mean_iou']:.3f}", file=sys.stderr)
        if pooling == "noisy_and":
            row["learned_b"] = [round(float(v), 4) for v in model.pooling.b.detach()]
        results[label] = row
        write_report(args, argv, results, json_path)  # after every run, so finished rows are never lost

    print(f"wrote {json_path} and {args.results / 'pooling.md'}")
    return 0


def write_report(args, argv, results: dict, json_path: Path) -> None:
    budget = asdict(TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch))
    report = {
        "command": "python -m benchmarks.pooling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "data": {"train": {"n": args.n_train, "seed": TRAIN_SEED, "non_showing": [0.2, 0.5]},
                 "val": {"n": 110, "seed": VAL_SEED},
                 "test": {str(lv): {"n": args.n_test, "seed": TEST_SEEDS[lv], "non_showing": lv} for lv in LEVELS}},
        "budget": {k: budget[k] for k in ("epochs", "steps_per_epoch", "batch_size", "crop", "lr", "width",
                                          "output_stride", "context", "smoothness")},
        "results": results,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    with write_atomic(json_path, "w") as fh:
        json.dump(report, fh, indent=2)
    md_path = args.results / "pooling.md"
    kept = md_path.read_text().partition("\n## Discussion")[1:] if md_path.is_file() else ("", "")
    with write_atomic(md_path, "w") as fh:  # the hand-written discussion below the tables is kept
        fh.write(render_markdown(report) + "".join(kept))


def render_markdown(report: dict) -> str:
    b = report["budget"]
    lines = [
        "# MIL pooling comparison on the yeast simulator",
        "",
        f"Made by `{report['command'].strip()}` ({report['machine']['threads']} CPU threads, "
        f"torch {report['machine']['torch']}). Every pooling trains the same CNN "
        f"(width {b['width']}, output stride {b['output_stride']}, context {b['context']}, edge-aware smoothness "
        f"weight {b['smoothness']} unless the row says otherwise) on the same "
        f"{report['data']['train']['n']} simulated images (seed {report['data']['train']['seed']}, 20-50 % of "
        f"cells not showing the pattern) for the same budget: {b['epochs']} epochs x {b['steps_per_epoch']} "
        f"steps of {b['batch_size']} crops of {b['crop']} px, learning rate {b['lr']}, seed 0; the checkpoint "
        "with the best validation accuracy is kept. Test sets are simulated from other seeds "
        f"({report['data']['test']['0.0']['n']} images each) with 0 %, 25 % and 50 % of cells showing no "
        "pattern. IoU: pixels the model assigns to the image's class (class map largest and >= 0.5) against "
        "the pixels of cells showing it, pooled per class, averaged over classes.",
        "",
        "| pooling | acc 0 % | acc 25 % | acc 50 % | IoU 0 % | IoU 25 % | IoU 50 % | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    otsu = None
    for label, row in report["results"].items():
        lv = row["levels"]
        accs = " | ".join(f"{lv[k]['accuracy'] * 100:.1f}" for k in ("0.0", "0.25", "0.5"))
        ious = " | ".join(f"{lv[k]['mean_iou']:.3f}" for k in ("0.0", "0.25", "0.5"))
        lines.append(f"| {label} | {accs} | {ious} | {row['train_seconds']:.0f} |")
        otsu = " | ".join(f"{lv[k]['otsu_mean_iou']:.3f}" for k in ("0.0", "0.25", "0.5"))
    if otsu:
        lines.append(f"| Otsu on the rfp marker (baseline) | | | | {otsu} | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
