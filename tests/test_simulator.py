import csv

import numpy as np
import pytest
import tifffile

from training.data.yeast import YEAST_CLASSES, YeastParams, simulate_yeast_image
from training.simulate import image_rng, main


def test_same_seed_same_bytes(tmp_path):
    for run in ("a", "b"):
        assert main(["yeast", "--n", "3", "--seed", "11", "--out", str(tmp_path / run), "--size", "96"]) == 0
    for sub in ("manifest.csv", "images/yeast_11_000002.tif", "masks/yeast_11_000001.tif"):
        assert (tmp_path / "a" / sub).read_bytes() == (tmp_path / "b" / sub).read_bytes()
    main(["yeast", "--n", "1", "--seed", "12", "--out", str(tmp_path / "c"), "--size", "96"])
    assert (tmp_path / "a/images/yeast_11_000000.tif").read_bytes() != (tmp_path / "c/images/yeast_12_000000.tif").read_bytes()


def test_layout_dtypes_and_manifest(tiny_yeast):
    rows = list(csv.DictReader(open(tiny_yeast)))
    assert [r["label"] for r in rows] == list(YEAST_CLASSES) * 2
    image = tifffile.imread(tiny_yeast.parent / rows[0]["path"])
    mask = tifffile.imread(tiny_yeast.parent / rows[0]["mask_path"])
    assert image.shape == (2, 128, 128) and image.dtype == np.uint16
    assert mask.shape == (128, 128) and mask.dtype == np.uint8
    assert image.min() >= 80  # the camera offset (100 ADU) minus read noise
    assert set(np.unique(mask)) <= {0, 1, 255}


@pytest.mark.parametrize("cls", YEAST_CLASSES)
def test_masks_align_with_the_images(cls):
    """Cells marked as showing the class are brighter in GFP than background, and every
    object pixel (any mask value) is brighter in the cytosolic RFP than background."""
    params = YeastParams(size=192, non_showing=(0.3, 0.3), outliers=0.0, cell_radius=(11.0, 16.0),
                         photons=(150.0, 150.0))  # enough cells in 192 px for both kinds, at a typical exposure
    image, mask = simulate_yeast_image(cls, image_rng(3, YEAST_CLASSES.index(cls)), params)
    k = YEAST_CLASSES.index(cls) + 1
    gfp, rfp = image.astype(float)
    assert set(np.unique(mask)) <= {0, k, 255} and (mask == k).any() and (mask == 255).any()
    bg = mask == 0
    assert gfp[mask == k].mean() > 1.1 * gfp[bg].mean()
    assert gfp[mask == k].mean() > gfp[mask == 255].mean()
    assert rfp[mask > 0].mean() > 1.3 * rfp[bg].mean()
    shifted = np.roll(mask, 12, axis=1)  # a misaligned mask loses the contrast
    assert rfp[mask > 0].mean() - rfp[bg].mean() > 1.5 * (rfp[shifted > 0].mean() - rfp[shifted == 0].mean())


def test_heterogeneity_flags():
    clean = YeastParams(size=128, non_showing=(0.0, 0.0), outliers=0.0)
    _, mask = simulate_yeast_image("nucleus", image_rng(1, 0), clean)
    assert 255 not in np.unique(mask)
    _, mask = simulate_yeast_image("nucleus", image_rng(1, 0), YeastParams(size=128, non_showing=(1.0, 1.0)))
    assert 8 not in np.unique(mask)


def test_gfp_only_channel_is_the_same_gfp(tmp_path):
    both, _ = simulate_yeast_image("vacuole", image_rng(2, 0), YeastParams(size=96))
    gfp, _ = simulate_yeast_image("vacuole", image_rng(2, 0), YeastParams(size=96, channels=("gfp",)))
    assert gfp.shape == (1, 96, 96) and np.array_equal(gfp[0], both[0])


@pytest.mark.parametrize("name, bad", [
    ("blur", (2.0, 1.0)), ("blur", (0.0, 1.0)), ("photons", (1.0, 10.0)), ("autofluorescence", (-0.1, 0.2)),
    ("background", (0.1, 3.0)), ("vacuole_contrast", (0.5, 1.5)), ("mito_diffuse", (0.4, 0.1)),
    ("cell_radius", (2.0, 10.0)), ("coverage", (0.5, 0.95)), ("blur", 1.5)])
def test_randomised_settings_are_range_checked(name, bad):
    with pytest.raises(ValueError, match=name):
        YeastParams(**{name: bad})


def test_randomised_settings_span_their_ranges():
    """A setting pinned to one value changes the image; the defaults give blur and brightness that vary
    from image to image (the point of randomising the microscope)."""
    bright = dict(size=128, photons=(5000.0, 5000.0))  # so shot noise does not hide the edges
    sharp, _ = simulate_yeast_image("cytosol", image_rng(4, 0), YeastParams(**bright, blur=(0.9, 0.9)))
    soft, _ = simulate_yeast_image("cytosol", image_rng(4, 0), YeastParams(**bright, blur=(2.4, 2.4)))
    edges = [np.abs(np.diff(x[1].astype(float), axis=1)).mean() for x in (sharp, soft)]
    assert edges[0] > 1.3 * edges[1]
    levels = [np.percentile(simulate_yeast_image("cytosol", image_rng(5, i), YeastParams(size=128))[0][0], 99) - 100
              for i in range(8)]
    assert max(levels) > 3 * min(levels)


def test_bad_simulator_settings():
    with pytest.raises(ValueError, match="unknown yeast class 'golgi'"):
        simulate_yeast_image("golgi", image_rng(0, 0))
    with pytest.raises(ValueError, match="channels"):
        YeastParams(channels=("gfp", "dapi"))


@pytest.mark.parametrize("kind, n_panels", [("yeast", len(YEAST_CLASSES) + 1), ("mcf7", 8)])
def test_montage_renders_every_class(tmp_path, kind, n_panels):
    """The montage command writes one labelled, non-blank panel per class (yeast: and a merge)."""
    from PIL import Image

    out = tmp_path / f"{kind}.png"
    assert main(["montage", "--kind", kind, "--out", str(out)]) == 0
    sheet = np.asarray(Image.open(out).convert("L")).astype(float)
    size, gap, label_h, cols = (200, 4, 16, 4) if kind == "yeast" else (320, 4, 16, 4)
    for i in range(n_panels):
        x = gap + (i % cols) * (size + gap)
        y = gap + (i // cols) * (size + gap + label_h) + label_h
        panel = sheet[y:y + size, x:x + size]
        assert panel.std() > 5, f"{kind} panel {i} is blank"
    assert sheet.shape[1] == cols * (size + gap) + gap
