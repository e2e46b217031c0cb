"""The classical HCS pipeline as a measured baseline: segment cells, measure them, classify, aggregate.

Usage (the commands behind the baseline rows of benchmarks/results/pooling.md)::

    python -m benchmarks.baseline_pipeline --dataset yeast
    python -m benchmarks.baseline_pipeline --dataset mcf7

CellProfiler + CellProfiler Analyst style, on the same simulated sets as ``benchmarks.pooling``
(the training set, and the tests at 0 %, 25 % and 50 % of cells not showing the pattern):

1. Segment cells. Yeast: in the cytosolic marker (``rfp``): Gaussian smoothing (sigma 1.5),
   Otsu threshold, small objects removed, distance-transform watershed to split touching
   cells. MCF-7 (CellProfiler's IdentifyPrimaryObjects then IdentifySecondaryObjects by
   propagation): nuclei from ``dna`` the same way, then each cell grown from its nucleus by a
   watershed on the smoothed tubulin + actin intensity, inside their Otsu foreground.
2. Measure each cell, per channel: intensity statistics (mean, sd, min, max, 10/50/90th
   percentiles, integrated), texture (sd of the Laplacian, sd of the difference from a 2-px
   blur); for the localization channels (yeast ``gfp``; MCF-7 ``tubulin`` and ``actin``) the
   radial distribution (mean in four rings from centre to edge, over the cell mean) and mean
   distance from the centre; the correlation of two channels; shape (area, eccentricity,
   solidity, major/minor axes, perimeter); MCF-7 also the DNA area and number of nuclei.
3. Train a random forest on cells, each inheriting its image's label (as labs do).
4. Per image: the class of the mean cell probability, and the majority vote; MCF-7 also per
   treatment (compound, concentration): the class of its images' mean probability.

Segmentation IoU: the cells classified as the image's class, against the pixels of cells
showing it, pooled per class as for the MIL-CNN. Results are added to
``benchmarks/results/pooling.{json,md}`` without touching the CNN rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from milcnn.io.images import write_atomic
from training.data.manifest import load_image, load_mask, read_manifest
from training.data.mcf7 import MCF7_CHANNELS, MCF7_CLASSES
from training.data.yeast import YEAST_CHANNELS, YEAST_CLASSES
from training.metrics import IoU

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"0.0": "test-0", "0.25": "test-25", "0.5": "test-50"}
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Dataset:
    """What the pipeline needs to know about a screen's channels."""

    name: str
    channels: tuple[str, ...]
    classes: tuple[str, ...]
    data_dir: Path
    localization: tuple[str, ...]  # channels whose radial distribution is measured
    correlated: tuple[str, str]  # the pair of channels whose per-cell correlation is measured
    segmented_from: str  # for the report


DATASETS = {
    "yeast": Dataset("yeast", YEAST_CHANNELS, YEAST_CLASSES, ROOT / "data" / "bench", ("gfp",), ("gfp", "rfp"),
                     "rfp (Otsu + watershed)"),
    "mcf7": Dataset("mcf7", MCF7_CHANNELS, MCF7_CLASSES, ROOT / "data" / "bench-mcf7", ("tubulin", "actin"),
                    ("tubulin", "actin"), "dna (nuclei: Otsu + watershed), then cells propagated in tubulin + actin"),
}
MIN_AREA = 40  # px: smaller objects are debris (both simulators' cells are several hundred px)


def segment(marker: np.ndarray, *, min_distance: int = 7) -> np.ndarray:
    """Label image of objects from one channel (0 background): smoothing, Otsu, watershed."""
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    smooth = ndimage.gaussian_filter(marker.astype(np.float32), 1.5)
    blobs, n = ndimage.label(smooth > threshold_otsu(smooth))
    sizes = ndimage.sum_labels(np.ones_like(blobs), blobs, np.arange(1, n + 1))
    foreground = np.isin(blobs, np.flatnonzero(sizes >= MIN_AREA) + 1)  # drop specks
    foreground = ndimage.binary_fill_holes(foreground)
    distance = ndimage.distance_transform_edt(foreground)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=ndimage.label(foreground)[0],
                           exclude_border=False)
    markers = np.zeros(marker.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground)


def segment_cells(image: np.ndarray, dataset: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """(cells, nuclei) label images; nuclei is None where cells are segmented directly (yeast)."""
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    ch = {name: i for i, name in enumerate(dataset.channels)}
    if dataset.name == "yeast":
        return segment(image[ch["rfp"]]), None
    nuclei = segment(image[ch["dna"]], min_distance=9)
    cyto = sum(ndimage.gaussian_filter(image[ch[c]].astype(np.float32), 2.0) / max(float(image[ch[c]].mean()), 1e-6)
               for c in ("tubulin", "actin"))
    foreground = (cyto > threshold_otsu(cyto)) | (nuclei > 0)
    return watershed(-cyto, nuclei, mask=foreground), nuclei


def cell_features(image: np.ndarray, labels: np.ndarray, dataset: Dataset,
                  nuclei: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """(n_cells, n_features) measurements and the label of each measured cell."""
    from skimage.measure import regionprops

    ch = {name: i for i, name in enumerate(dataset.channels)}
    lap = [ndimage.laplace(ndimage.gaussian_filter(c.astype(np.float32), 1.0)) for c in image]
    hp = [c.astype(np.float32) - ndimage.gaussian_filter(c.astype(np.float32), 2.0) for c in image]
    rows, ids = [], []
    for region in regionprops(labels):
        if region.area < MIN_AREA:
            continue
        sl = region.slice
        inside = region.image
        f = [region.area, region.eccentricity, region.solidity, region.axis_major_length, region.axis_minor_length,
             region.perimeter]
        for c in range(image.shape[0]):
            v = image[c][sl][inside].astype(np.float32)
            f += [v.mean(), v.std(), v.min(), v.max(), *np.percentile(v, [10, 50, 90]), v.sum(),
                  lap[c][sl][inside].std(), hp[c][sl][inside].std()]
        yy, xx = np.nonzero(inside)
        cy, cx = yy.mean(), xx.mean()
        dist = ndimage.distance_transform_edt(inside)
        rel = 1.0 - dist[yy, xx] / max(dist.max(), 1.0)  # 0 at the deepest point, 1 at the edge
        for name in dataset.localization:
            gv = image[ch[name]][sl].astype(np.float32)[yy, xx]
            mean = gv.mean() + 1e-6
            f += [gv[(rel >= lo) & (rel < hi)].mean() / mean if ((rel >= lo) & (rel < hi)).any() else 0.0
                  for lo, hi in ((0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01))]
        f += [float(np.hypot(yy - cy, xx - cx).mean())]
        a, b = (image[ch[name]][sl].astype(np.float32)[yy, xx] for name in dataset.correlated)
        f += [float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0]
        if nuclei is not None:
            own = nuclei[sl][inside]
            f += [float(np.count_nonzero(own)), float(len(np.unique(own[own > 0])))]
        rows.append(f)
        ids.append(region.label)
    return np.array(rows, np.float32).reshape(len(rows), -1), ids


def _process(args) -> tuple:
    sample, with_mask, name = args
    dataset = DATASETS[name]
    image = load_image(sample, len(dataset.channels))
    t0 = time.perf_counter()
    labels, nuclei = segment_cells(image, dataset)
    feats, ids = cell_features(image, labels, dataset, nuclei)
    seconds = time.perf_counter() - t0
    truth = load_mask(sample) if with_mask else None
    return feats, ids, labels if with_mask else None, truth, seconds


def measure_set(manifest: Path, dataset: Dataset, *, with_masks: bool, workers: int):
    samples, _, _ = read_manifest(manifest, channels=dataset.channels, classes=dataset.classes)
    with ProcessPoolExecutor(workers) as pool:
        out = list(pool.map(_process, [(s, with_masks, dataset.name) for s in samples], chunksize=4))
    return samples, out


def run(data_dir: Path, *, dataset: str = "yeast", workers: int, seed: int = 0) -> dict:
    from sklearn.ensemble import RandomForestClassifier

    from training.treatments import read_treatments, treatment_metrics

    spec = DATASETS[dataset]
    classes = list(spec.classes)
    t0 = time.perf_counter()
    train_samples, train_out = measure_set(data_dir / "train" / "manifest.csv", spec, with_masks=False,
                                           workers=workers)
    x = np.concatenate([o[0] for o in train_out])
    y = np.concatenate([[classes.index(s.labels[0])] * len(o[0]) for s, o in zip(train_samples, train_out)])
    forest = RandomForestClassifier(n_estimators=200, min_samples_leaf=3, n_jobs=workers, random_state=seed)
    forest.fit(np.nan_to_num(x), y)
    train_seconds = time.perf_counter() - t0
    results = {"dataset": dataset, "segmented_from": spec.segmented_from, "train_cells": int(len(x)),
               "n_features": int(x.shape[1]), "train_seconds": round(train_seconds, 1), "levels": {}}
    for level, folder in LEVELS.items():
        t1 = time.perf_counter()
        manifest = data_dir / folder / "manifest.csv"
        samples, outs = measure_set(manifest, spec, with_masks=True, workers=workers)
        correct_mean = correct_vote = 0
        iou, cell_recall = IoU(len(classes)), []
        image_probs = np.zeros((len(samples), len(classes)))
        for i, (sample, (feats, ids, labels, truth, _)) in enumerate(zip(samples, outs)):
            k = classes.index(sample.labels[0])
            if len(feats):
                proba = np.zeros((len(feats), len(classes)))
                proba[:, forest.classes_] = forest.predict_proba(np.nan_to_num(feats))  # (cells, K)
                image_probs[i] = proba.mean(axis=0)
                image_pred = int(image_probs[i].argmax())
                vote_pred = int(np.bincount(proba.argmax(axis=1), minlength=len(classes)).argmax())
                chosen = [c for c, p in zip(ids, proba.argmax(axis=1)) if p == k]
            else:
                image_pred = vote_pred = -1
                chosen = []
            correct_mean += image_pred == k
            correct_vote += vote_pred == k
            iou.add(k, np.isin(labels, chosen) & (labels > 0), truth == k + 1)
            cells = truth > 0
            cell_recall.append(float((labels[cells] > 0).mean()) if cells.any() else np.nan)
        seconds = time.perf_counter() - t1
        results["levels"][level] = {
            "n_images": len(samples), "accuracy_mean_probability": correct_mean / len(samples),
            "accuracy_majority_vote": correct_vote / len(samples), "mean_iou": iou.mean(),
            "cell_pixels_segmented": float(np.nanmean(cell_recall)),
            "predict_seconds_per_image": round(seconds / len(samples), 3),
        }
        treatments = read_treatments(manifest)
        if treatments is not None:
            t = treatment_metrics(image_probs, treatments, [s.labels[0] for s in samples], classes)
            results["levels"][level] |= {"treatment_accuracy": t["treatment_accuracy"],
                                         "n_treatments": t["n_treatments"]}
    return results


def add_to_report(results: dict, argv: list[str]) -> None:
    """Add (or replace) this dataset's baseline in pooling.json, and re-render pooling.md."""
    from benchmarks.pooling_report import write_report

    json_path = RESULTS / "pooling.json"
    report = json.loads(json_path.read_text()) if json_path.is_file() else {}
    report.setdefault("baseline_pipeline", {})[results["dataset"]] = {
        "command": "python -m benchmarks.baseline_pipeline " + " ".join(argv), **results}
    write_report(report, RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="yeast")
    parser.add_argument("--data-dir", type=Path,
                        help="the pooling benchmark's simulated sets (default data/bench or data/bench-mcf7, "
                             "made by python -m benchmarks.pooling --dataset ...)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    data_dir = args.data_dir or DATASETS[args.dataset].data_dir
    missing = [d for d in ("train", *LEVELS.values()) if not (data_dir / d / "manifest.csv").is_file()]
    if missing:
        print(f"error: {data_dir} lacks {', '.join(missing)}: run python -m benchmarks.pooling --dataset "
              f"{args.dataset} first", file=sys.stderr)
        return 1
    results = run(data_dir, dataset=args.dataset, workers=args.workers)
    with write_atomic(RESULTS / f"baseline_pipeline_{args.dataset}.json", "w") as fh:  # kept if the report fails
        fh.write(json.dumps(results, indent=2) + "\n")
    add_to_report(results, argv if argv is not None else sys.argv[1:])
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
