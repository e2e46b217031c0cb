"""The MCF-7 simulator: shapes, determinism, masks, heterogeneity controls, and the CLI."""

import os

import numpy as np
import pytest

from training.data.manifest import read_manifest
from training.data.mcf7 import MCF7_CHANNELS, MCF7_CLASSES, NOT_SIMULATED, MCF7Params, simulate_mcf7_image
from training.simulate import image_rng, main


@pytest.mark.parametrize("cls", MCF7_CLASSES)
def test_every_class_renders_with_truth(cls):
    image, mask = simulate_mcf7_image(cls, image_rng(3, 0), MCF7Params(size=192))
    assert image.shape == (3, 192, 192) and image.dtype == np.uint16 and mask.shape == (192, 192)
    k = MCF7_CLASSES.index(cls) + 1
    assert set(np.unique(mask)) <= {0, k, 255} and (mask == k).mean() > 0.005
    assert image.min() >= 90  # the camera offset: no clipping to zero


def test_deterministic_and_channel_selection():
    a, ma = simulate_mcf7_image("Eg5 inhibitors", image_rng(1, 5), MCF7Params(size=128))
    b, mb = simulate_mcf7_image("Eg5 inhibitors", image_rng(1, 5), MCF7Params(size=128))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    c, _ = simulate_mcf7_image("Eg5 inhibitors", image_rng(1, 5), MCF7Params(size=128, channels=("actin", "dna")))
    np.testing.assert_array_equal(c, a[[2, 0]])


def test_non_showing_controls_the_labelled_fraction():
    def labelled(level):
        fractions = []
        for i in range(4):
            _, mask = simulate_mcf7_image("Aurora kinase inhibitors", image_rng(2, i),
                                          MCF7Params(size=192, non_showing=(level, level), outliers=0.0))
            cells = mask > 0
            fractions.append((mask == 2).sum() / max(cells.sum(), 1))
        return np.mean(fractions)
    assert labelled(0.0) > 0.95 and labelled(0.8) < labelled(0.0) - 0.3


def test_dmso_cells_are_all_labelled_and_classes_documented():
    _, mask = simulate_mcf7_image("DMSO", image_rng(4, 0), MCF7Params(size=192, outliers=0.0))
    assert (mask == MCF7_CLASSES.index("DMSO") + 1).sum() > 0.9 * (mask > 0).sum()
    assert not set(NOT_SIMULATED) & set(MCF7_CLASSES)
    with pytest.raises(ValueError, match="unknown MCF-7 class 'Kinase inhibitors'"):
        simulate_mcf7_image("Kinase inhibitors", image_rng(0, 0))
    with pytest.raises(ValueError, match="channels must be distinct names"):
        MCF7Params(channels=("dapi",))


def test_cli_writes_a_manifest_like_the_yeast_one(tmp_path, capsys):
    assert main(["mcf7", "--n", "9", "--seed", "11", "--out", str(tmp_path), "--size", "96", "--workers", "1"]) == 0
    samples, channels, classes = read_manifest(tmp_path / "manifest.csv", channels=MCF7_CHANNELS)
    assert len(samples) == 9 and channels == MCF7_CHANNELS and set(classes) <= set(MCF7_CLASSES)
    assert all(s.mask_path is not None for s in samples)
    assert "wrote 9 images (dna, tubulin, actin" in capsys.readouterr().out


def test_treatments_label_images_and_are_scored_per_treatment(tmp_path, capsys):
    from training.data.mcf7 import MCF7_COMPOUNDS, mcf7_treatment
    from training.treatments import main as treatments_main

    for i in range(64):
        cls = MCF7_CLASSES[i % 8]
        compound, dose = mcf7_treatment(i)
        assert compound in MCF7_COMPOUNDS[cls] and (dose == 0.0) == (cls == "DMSO")
    assert main(["mcf7", "--n", "16", "--seed", "3", "--out", str(tmp_path), "--size", "256", "--workers", "1"]) == 0
    header = (tmp_path / "manifest.csv").read_text().splitlines()[0]
    assert header == "path,label,mask_path,compound,concentration"
    capsys.readouterr()
    assert treatments_main(["mcf7-moa", "--data", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "r.json")]) == 0
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_images"] == 16 and report["n_treatments"] == 15  # the two DMSO wells are one treatment
    confusion = np.array(report["treatment_confusion"])
    assert confusion.shape == (8, 8) and confusion.sum() == 15
    assert report["treatment_accuracy"] == pytest.approx(np.trace(confusion) / 15)
    right = sum(t["label"] == t["predicted"] for t in report["treatments"])
    assert report["treatment_accuracy"] == pytest.approx(right / 15)


@pytest.mark.parametrize("name, bad", [
    ("blur", (1.8, 0.8)), ("photons", (1.0, 100.0)), ("background", (0.1, 2.5)), ("tubulin_fill", (-0.1, 1.0)),
    ("centrosome", (0.2, 9.0)), ("actin_cortex", (1.2, 0.3)), ("density", (0.0, 4.0)), ("cell_radius", (20.0, 200.0)),
    ("blur", "wide")])
def test_randomised_settings_are_range_checked(name, bad):
    with pytest.raises(ValueError, match=name):
        MCF7Params(**{name: bad})


def test_tubulin_fill_sets_how_diffuse_the_cytoplasm_is():
    """With the filaments unchanged, more diffuse tubulin fills more of the cell (lower peak over median)."""
    def peakiness(fill):
        image, mask = simulate_mcf7_image("DMSO", image_rng(6, 0), MCF7Params(
            size=160, outliers=0.0, tubulin_fill=(fill, fill), photons=(5000.0, 5000.0), background=(0.02, 0.02)))
        tub = image[MCF7_CHANNELS.index("tubulin")].astype(float) - 100
        return np.percentile(tub[mask > 0], 99) / np.median(tub[mask > 0])
    assert peakiness(0.1) > 1.5 * peakiness(1.1)


def test_simulation_resumes_and_extends_only_the_same_seed_and_simulator(tmp_path):
    from training.simulate import SIMULATION_MARKER, simulate_dataset

    out, params = tmp_path / "sim", MCF7Params(size=96)
    simulate_dataset("mcf7", n=2, seed=5, out=out, params=params)
    first = out / "images" / "mcf7_5_000000.tif"
    os.utime(first, (0, 0))  # a kept file keeps this time stamp; a rewritten one gets the current time
    simulate_dataset("mcf7", n=3, seed=5, out=out, params=params)  # the same seed, 3 images: only #2 is new
    assert first.stat().st_mtime == 0
    assert len(read_manifest(out / "manifest.csv", channels=MCF7_CHANNELS, classes=MCF7_CLASSES)[0]) == 3
    fresh = tmp_path / "fresh"
    simulate_dataset("mcf7", n=3, seed=5, out=fresh, params=params)
    for name in ("images/mcf7_5_000000.tif", "images/mcf7_5_000002.tif", "masks/mcf7_5_000002.tif"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()
    # another simulator setting: every image is drawn again, none kept
    simulate_dataset("mcf7", n=3, seed=5, out=out, params=MCF7Params(size=96, outliers=0.2))
    assert first.stat().st_mtime > 0
    assert "seed 5" in (out / SIMULATION_MARKER).read_text()


def test_expression_and_nuclear_exclusion_are_checked_and_act():
    for bad in ({"expression": (0.5, 0.2)}, {"expression": (0.0, 2.0)}, {"nuclear_exclusion": (0.0, 1.5)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MCF7Params(**bad)

    def nuclear_tubulin(params):
        """Tubulin inside the nuclei over tubulin in a ring just outside them, for DMSO images."""
        from scipy import ndimage

        ratios = []
        for i in range(3):
            image, _ = simulate_mcf7_image("DMSO", image_rng(5, i), params)
            x = image.astype(np.float32) - 100.0
            nuclei = x[0] > np.percentile(x[0], 90)
            ring = ndimage.binary_dilation(nuclei, iterations=6) & ~ndimage.binary_dilation(nuclei, iterations=2)
            ratios.append(np.median(x[1][nuclei]) / np.median(x[1][ring]))
        return np.mean(ratios)

    base = dict(size=192, outliers=0.0, expression=(0.0, 0.0))
    assert nuclear_tubulin(MCF7Params(**base, nuclear_exclusion=(0.9, 0.9))) < \
        0.7 * nuclear_tubulin(MCF7Params(**base, nuclear_exclusion=(0.0, 0.0)))

    def spread(expression):
        """The spread (90th over 10th percentile) of the cells' tubulin-to-actin ratio within images."""
        from scipy import ndimage

        out = []
        for i in range(3):
            image, mask = simulate_mcf7_image("DMSO", image_rng(6, i),
                                              MCF7Params(size=192, outliers=0.0, expression=expression))
            labels, n = ndimage.label(ndimage.binary_erosion(mask > 0, iterations=2))
            idx = np.arange(1, n + 1)
            tub = ndimage.mean(image[1].astype(np.float32) - 100, labels, idx)
            act = ndimage.mean(image[2].astype(np.float32) - 100, labels, idx)
            r = np.log(np.asarray(tub) / np.asarray(act))
            out.append(np.percentile(r, 90) - np.percentile(r, 10))
        return np.mean(out)

    assert spread((1.0, 1.0)) > spread((0.0, 0.0)) + 0.5


def test_cli_passes_the_mcf7_settings(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["mcf7", "--n", "1", "--seed", "1", "--out", str(tmp_path), "--expression", "0.5,0.2"])
    assert "expression must be a range" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["yeast", "--n", "1", "--seed", "1", "--out", str(tmp_path), "--expression", "0.2"])  # mcf7 only
    assert main(["mcf7", "--n", "1", "--seed", "1", "--out", str(tmp_path / "a"), "--size", "96", "--workers", "1",
                 "--expression", "0.3", "--nuclear-exclusion", "0.2,0.8"]) == 0
