"""Compound-held-out cross-validation of a MIL-CNN on a drug screen (Ljosa et al. 2013).

Usage::

    # Ljosa et al.'s leave-one-compound-out: one training per compound (BBBC021: 38)
    python -m training.loco --data bbbc021.csv --out runs/loco
    # the same guarantee (no compound in both train and test) in a few trainings
    python -m training.loco --data data/mcf7-train/manifest.csv data/mcf7-val/manifest.csv \\
        data/mcf7-test/manifest.csv --scheme moa-round --out runs/loco-mcf7 \\
        --report benchmarks/results/mcf7_loco.md

The manifests (with ``compound`` and ``concentration`` columns, e.g. from
``python -m training.data.bbbc021`` or ``python -m training.simulate mcf7``) are pooled; each
fold trains a model from scratch on the images of every compound but its held-out ones (the
control, DMSO, is always in training and never tested), picks its checkpoint on a random
tenth of those training images, and predicts the held-out images. Every non-control image is
thus predicted once by a model that never saw its compound. Reported: image accuracy,
treatment accuracy (a treatment is a compound at one concentration; its class is that of its
images' mean probability), accuracy per compound, and both confusion matrices.

A fold whose ``predictions.csv`` exists is not run again, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from milcnn.io.images import write_atomic
from milcnn.logs import log_to_stderr
from .checkpoint import read_checkpoint
from .metrics import confusion_matrix
from .treatments import CONTROLS, compound_folds, read_treatments, treatment_metrics

__all__ = ["pool_manifests", "run_loco", "render_report"]

log = logging.getLogger(__name__)


def pool_manifests(manifests: list[Path]) -> tuple[list[str], list[dict]]:
    """The rows of several manifests with their file paths made absolute, and the common header.

    Raises:
        ValueError: a manifest lacks compound/concentration columns, or the manifests' path
            columns differ.
    """
    header: list[str] | None = None
    rows: list[dict] = []
    for manifest in manifests:
        manifest = Path(manifest)
        if read_treatments(manifest) is None:
            raise ValueError(f"{manifest}: needs 'compound' and 'concentration' columns for compound-held-out folds")
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f for f in reader.fieldnames or [] if f != "split"]  # folds decide the split
            paths = _path_columns(fields)
            if header is not None and paths != _path_columns(header):
                raise ValueError(f"{manifest}: path columns {paths} differ from the first manifest's")
            header = header or fields
            for row in reader:
                for f in paths:
                    if row.get(f):
                        row[f] = str((manifest.parent / row[f]).resolve())
                rows.append({f: row.get(f, "") for f in header})
    return header or [], rows


def _path_columns(fields: list[str]) -> list[str]:
    return sorted(f for f in fields if f in ("path", "mask_path") or f.startswith("path_"))


def _write_manifest(path: Path, header: list[str], rows: list[dict]) -> None:
    with write_atomic(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80]


def run_loco(manifests: list[Path], out: Path, cfg, *, scheme: str = "compound",
             controls=CONTROLS, progress: bool = False) -> dict:
    """Train and test every fold (skipping finished ones); return the pooled report.

    Args:
        manifests: manifests with compound and concentration columns.
        out: the run folder (one sub-folder per fold).
        cfg: a ``TrainConfig`` whose data, val and out are set per fold.
        scheme: ``compound`` or ``moa-round`` (``training.treatments.compound_folds``).
    """
    import torch

    from .data.dataset import ImageSet
    from .data.manifest import read_manifest
    from .scoring import predict_set
    from .checkpoint import load_checkpoint
    from .train import train

    header, rows = pool_manifests(manifests)
    compounds = [r["compound"] for r in rows]
    labels = [r["label"] for r in rows]
    out = Path(out)
    folds = list(compound_folds(compounds, labels, scheme=scheme, controls=controls))
    classes: list[str] | None = None
    image_rows: list[dict] = []
    fold_records = []
    t_start = time.time()
    for i, (name, train_idx, test_idx) in enumerate(folds):
        fold_dir = out / "folds" / f"{i + 1:02d}-{_slug(name)}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        predictions = fold_dir / "predictions.csv"
        if not predictions.is_file():
            _write_manifest(fold_dir / "train.csv", header, [rows[j] for j in train_idx])
            _write_manifest(fold_dir / "test.csv", header, [rows[j] for j in test_idx])
            log.info("[%d/%d] %s: train %d images, test %d", i + 1, len(folds), name, len(train_idx), len(test_idx))
            fold_cfg = replace(cfg, data=str(fold_dir / "train.csv"), val=None, out=str(fold_dir / "run"))
            t0 = time.time()
            last = fold_dir / "run" / "last.pt"
            if not last.is_file() or len(read_checkpoint(last)["history"]) < cfg.epochs:
                train(fold_cfg, resume=str(last) if last.is_file() else None, progress=progress)
            model, _ = load_checkpoint(fold_dir / "run" / "best.pt")
            samples, _, _ = read_manifest(fold_dir / "test.csv", channels=model.config.channels,
                                          classes=model.config.classes)
            with torch.no_grad():
                probs, _ = predict_set(model, ImageSet(samples, model.config.channels, model.config.classes,
                                                       model.config.normalization))
            seconds = round(time.time() - t0, 1)
            # fold.json first: a fold counts as done only once predictions.csv is in place
            with write_atomic(fold_dir / "fold.json", "w") as fh:
                json.dump({"fold": name, "train_images": len(train_idx), "test_images": len(test_idx),
                           "seconds": seconds}, fh, indent=2)
            with write_atomic(predictions, "w", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["path", "compound", "concentration", "label", *model.config.classes])
                for j, p in zip(test_idx, probs):
                    r = rows[j]
                    path = r.get("path") or next(r[f] for f in header if f.startswith("path_"))
                    writer.writerow([path, r["compound"], r["concentration"], r["label"], *(f"{v:.6f}" for v in p)])
        with open(predictions, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fold_classes = reader.fieldnames[4:]
            if classes is not None and fold_classes != classes:
                raise ValueError(f"{predictions}: classes {fold_classes} differ from the other folds' {classes}")
            classes = fold_classes
            image_rows += list(reader)
        fold_records.append(json.loads((fold_dir / "fold.json").read_text()))

    probs = np.array([[float(r[c]) for c in classes] for r in image_rows])
    treatments = [(r["compound"], float(r["concentration"])) for r in image_rows]
    truth = [r["label"] for r in image_rows]
    metrics = treatment_metrics(probs, treatments, truth, classes)
    predicted = probs.argmax(axis=1)
    per_compound = {}
    for compound in sorted(set(r["compound"] for r in image_rows)):
        idx = [i for i, r in enumerate(image_rows) if r["compound"] == compound]
        per_compound[compound] = {
            "moa": truth[idx[0]], "images": len(idx),
            "image_accuracy": float(np.mean([classes[predicted[i]] == truth[i] for i in idx])),
            "treatments": [t for t in metrics["treatments"] if t["treatment"][0] == compound],
        }
    image_confusion = confusion_matrix(np.array([classes.index(t) for t in truth]), predicted, len(classes))
    return {
        "scheme": scheme, "manifests": [str(m) for m in manifests], "controls": list(controls),
        "n_folds": len(folds), "folds": fold_records, "classes": classes,
        "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("data", "val", "out")},
        "n_images": metrics["n_images"], "n_treatments": metrics["n_treatments"],
        "image_accuracy": metrics["image_accuracy"], "treatment_accuracy": metrics["treatment_accuracy"],
        "image_confusion": image_confusion.tolist(), "treatment_confusion": metrics["treatment_confusion"],
        "per_compound": per_compound, "seconds": round(sum(f["seconds"] for f in fold_records), 1),
        "wall_seconds_this_call": round(time.time() - t_start, 1),
    }


def render_report(report: dict, command: str) -> str:
    """Markdown: the pooled accuracies, per-compound accuracy, and both confusion matrices."""
    classes = report["classes"]
    t = report["train_config"]
    scheme = ("leave-one-compound-out (one fold per compound, Ljosa et al. 2013)" if report["scheme"] == "compound"
              else "compound-held-out in rounds (fold j holds out the j-th compound of every MOA)")
    lines = [
        "# Compound-held-out cross-validation",
        "",
        f"Made by `{command}` ({report['n_folds']} folds, {report['seconds'] / 60:.0f} min of training and "
        f"prediction in all). Scheme: {scheme}; no compound is in both the training and the test images of a "
        f"fold, and {', '.join(report['controls'])} is always in training and never tested. Each fold trains from "
        f"scratch: {t['epochs']} epochs x {t['steps_per_epoch']} steps of {t['batch_size']} crops of {t['crop']} px, "
        f"pooling {t['pooling']} {t['pooling_params']}, checkpoint chosen on a random tenth of its training images.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| images tested (each once) | {report['n_images']} |",
        f"| image accuracy | {100 * report['image_accuracy']:.1f} % |",
        f"| treatments (compound, concentration) | {report['n_treatments']} |",
        f"| treatment accuracy | {100 * report['treatment_accuracy']:.1f} % |",
        "",
        "## Per compound",
        "",
        "| compound | MOA | images | image accuracy | treatments right |",
        "|---|---|---|---|---|",
    ]
    for compound, c in report["per_compound"].items():
        right = sum(tr["predicted"] == tr["label"] for tr in c["treatments"])
        lines.append(f"| {compound} | {c['moa']} | {c['images']} | {100 * c['image_accuracy']:.1f} % | "
                     f"{right} / {len(c['treatments'])} |")
    for title, key in (("Treatment confusion matrix", "treatment_confusion"), ("Image confusion matrix", "image_confusion")):
        tested = [i for i, row in enumerate(report[key]) if sum(row)]
        lines += ["", f"## {title}", "", "Rows: true MOA; columns: predicted.", "",
                  "| true \\ predicted | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        lines += [f"| {classes[i]} | " + " | ".join(str(v) for v in report[key][i]) + " |" for i in tested]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m training.loco", description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True,
                        help="manifests with compound and concentration columns (pooled)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (folds, loco.json, loco.md)")
    parser.add_argument("--scheme", choices=("compound", "moa-round"), default="compound")
    parser.add_argument("--channels", help="comma-separated channel names (needed with a 'path' column)")
    parser.add_argument("--controls", default=",".join(CONTROLS), help="compounds always in training")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--pooling", default="noisy_and")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    log_to_stderr()
    cfg = TrainConfig(channels=args.channels, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                      batch_size=args.batch_size, crop=args.crop, pooling=args.pooling, seed=args.seed,
                      pooling_params={"a": 10.0} if args.pooling == "noisy_and" else {})
    command = "python -m training.loco " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        report = run_loco(args.data, args.out, cfg, scheme=args.scheme,
                          controls=tuple(c for c in args.controls.split(",") if c))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report["command"] = command
    with write_atomic(args.out / "loco.json", "w") as fh:
        fh.write(json.dumps(report, indent=2) + "\n")
    text = render_report(report, command)
    for path in (args.out / "loco.md", args.report):
        if path:
            with write_atomic(path, "w") as fh:
                fh.write(text)
    print(json.dumps({k: report[k] for k in ("n_folds", "n_images", "image_accuracy", "n_treatments",
                                             "treatment_accuracy")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
