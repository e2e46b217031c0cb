"""The classical segment-measure-classify baseline runs end to end and segments real cells."""

import numpy as np
import pytest

from benchmarks.baseline_pipeline import DATASETS, LEVELS, cell_features, run, segment_cells
from training.data.manifest import load_image, load_mask, read_manifest
from training.simulate import simulate_dataset


@pytest.fixture(scope="module")
def tiny_mcf7(tmp_path_factory):
    """24 simulated 256 x 256 MCF-7 fields (three per class) with masks, compounds and a manifest."""
    from training.data.mcf7 import MCF7Params

    out = tmp_path_factory.mktemp("tiny_mcf7")
    return simulate_dataset("mcf7", n=24, seed=6, out=out, params=MCF7Params(size=256), workers=1)


@pytest.mark.parametrize("name", ["yeast", "mcf7"])
def test_segmentation_finds_the_cells(name, tiny_yeast, tiny_mcf7):
    dataset = DATASETS[name]
    manifest = tiny_yeast if name == "yeast" else tiny_mcf7
    samples, _, _ = read_manifest(manifest, channels=dataset.channels, classes=dataset.classes)
    covered = []
    for sample in samples[:6]:
        image, truth = load_image(sample, len(dataset.channels)), load_mask(sample)
        labels, nuclei = segment_cells(image, dataset)
        assert (nuclei is None) == (name == "yeast")
        feats, ids = cell_features(image, labels, dataset, nuclei)
        assert feats.shape == (len(ids), feats.shape[1]) and len(ids) > 0 and np.isfinite(feats).all()
        covered.append((labels[truth > 0] > 0).mean())
    assert np.mean(covered) > 0.6


@pytest.mark.parametrize("name", ["yeast", "mcf7"])
def test_pipeline_runs_end_to_end(name, tiny_yeast, tiny_mcf7, tmp_path):
    manifest = tiny_yeast if name == "yeast" else tiny_mcf7
    for folder in ("train", *LEVELS.values()):
        (tmp_path / folder).symlink_to(manifest.parent)
    results = run(tmp_path, dataset=name, workers=1)
    assert results["train_cells"] > 50 and set(results["levels"]) == set(LEVELS)
    n = 22 if name == "yeast" else 24
    for level in results["levels"].values():
        assert level["n_images"] == n and 0 <= level["mean_iou"] <= 1
        assert level["accuracy_mean_probability"] > 0.5  # scored on its own training images: a sanity check
        # only the drug screen has treatments: 24 fields, the three DMSO wells are one treatment
        assert ("treatment_accuracy" in level) == (name == "mcf7")
        if name == "mcf7":
            assert level["n_treatments"] == 22 and 0.5 < level["treatment_accuracy"] <= 1
