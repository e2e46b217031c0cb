"""The classical segment-measure-classify baseline runs end to end and segments real cells."""

import numpy as np

from benchmarks.baseline_pipeline import LEVELS, MARKER, cell_features, run, segment
from training.data.manifest import load_image, load_mask, read_manifest
from training.data.yeast import YEAST_CHANNELS, YEAST_CLASSES


def test_segmentation_finds_the_cells(tiny_yeast):
    samples, _, _ = read_manifest(tiny_yeast, channels=YEAST_CHANNELS, classes=YEAST_CLASSES)
    covered = []
    for sample in samples[:6]:
        image, truth = load_image(sample, 2), load_mask(sample)
        labels = segment(image[MARKER])
        feats, ids = cell_features(image, labels)
        assert feats.shape == (len(ids), feats.shape[1]) and np.isfinite(feats).all()
        cells = truth > 0
        covered.append((labels[cells] > 0).mean())
    assert np.mean(covered) > 0.6


def test_pipeline_runs_end_to_end(tiny_yeast, tmp_path):
    for folder in ("train", *LEVELS.values()):
        (tmp_path / folder).symlink_to(tiny_yeast.parent if tiny_yeast.is_file() else tiny_yeast)
    results = run(tmp_path, workers=1)
    assert results["train_cells"] > 100 and set(results["levels"]) == set(LEVELS)
    for level in results["levels"].values():
        assert level["n_images"] == 22 and 0 <= level["mean_iou"] <= 1
        assert level["accuracy_mean_probability"] > 0.5  # scored on its own training images: a sanity check
