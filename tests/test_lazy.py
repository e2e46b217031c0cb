"""Images too large to read whole are read a tile at a time (milcnn.io.lazy), with the same results."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from milcnn.errors import ImageReadError
from milcnn.io.images import open_image
from milcnn.errors import NotLazy
from milcnn.io.lazy import LazyTiff
from milcnn.process.preprocess import NormalizationConfig, channel_ranges

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def _image(shape=(2, 600, 700)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.gamma(2.0, 900.0, shape)).astype(np.uint16)


@pytest.mark.parametrize("layout", [{"tile": (128, 128), "compression": "zlib"}, {"rowsperstrip": 37,
                                    "compression": "zlib"}, {"compression": "lzma", "rowsperstrip": 64}, {}])
def test_windows_strides_and_ranges_equal_the_whole_image(tmp_path, layout):
    whole = _image()
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, whole, photometric="minisblack", **layout)
    lazy = LazyTiff(path)
    assert lazy.shape == whole.shape and lazy.dtype == whole.dtype
    for y0, y1, x0, x1 in [(0, 600, 0, 700), (5, 140, 100, 377), (590, 600, 690, 700), (128, 256, 0, 1)]:
        np.testing.assert_array_equal(lazy[:, y0:y1, x0:x1], whole[:, y0:y1, x0:x1])
    np.testing.assert_array_equal(lazy.strided(7), whole[:, ::7, ::7])
    for mine, theirs in zip(lazy.channel_ranges(NormalizationConfig()), channel_ranges(whole)):
        np.testing.assert_array_equal(mine, theirs)
    lazy.close()


def test_over_the_budget_a_tiff_opens_lazily_or_says_why_not(tmp_path):
    whole = _image()
    tiled = tmp_path / "tiled.tif"
    tifffile.imwrite(tiled, whole, photometric="minisblack", tile=(128, 128), compression="zlib")
    assert isinstance(open_image(tiled)[0], np.ndarray)  # within the budget: read whole
    assert isinstance(open_image(tiled, max_values=1000)[0], LazyTiff)
    with pytest.raises(ImageReadError, match="over the 1,000 px its outputs may take"):
        open_image(tiled, max_values=1000, max_lazy_pixels=1000)
    floats = tmp_path / "floats.tif"
    tifffile.imwrite(floats, whole.astype(np.float32), photometric="minisblack")
    with pytest.raises(NotLazy):
        LazyTiff(floats)
    with pytest.raises(ImageReadError, match="cannot be read a tile at a time either"):
        open_image(floats, max_values=1000)


@pytest.mark.slow
def test_milzoo_predicts_an_image_read_a_tile_at_a_time_as_one_read_whole(tmp_path):
    """The same tiled TIFF, once under the budget (read whole) and once over it (read lazily): the same
    predictions.csv, the same mask, and an overlay drawn from every f-th pixel."""
    sample = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")
    image = np.concatenate([sample, sample[:, ::-1]], axis=2)  # 2 x 512 x 1024
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, image, photometric="minisblack", tile=(256, 256), compression="zlib")
    outs = {}
    for name, budget in (("whole", str(2**27)), ("lazy", "100000")):
        env = {**os.environ, "MILCNN_MAX_IMAGE_VALUES": budget}
        proc = subprocess.run([sys.executable, "-m", "milcnn.cli", "predict", str(path), "--out",
                               str(tmp_path / name), "--tile-size", "256"], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs[name] = tmp_path / name
    assert (outs["lazy"] / "predictions.csv").read_text() == (outs["whole"] / "predictions.csv").read_text()
    np.testing.assert_array_equal(tifffile.imread(outs["lazy"] / "masks" / "field.tif"),
                                  tifffile.imread(outs["whole"] / "masks" / "field.tif"))
    assert (outs["lazy"] / "overlays" / "field.png").stat().st_size > 0
