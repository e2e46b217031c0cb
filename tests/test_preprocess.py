import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from milcnn.process.postprocess import label_mask, upsample_maps
from milcnn.process.preprocess import NormalizationConfig, normalize, to_chw


def test_to_chw_layouts():
    img = np.arange(2 * 5 * 7).reshape(2, 5, 7)
    assert to_chw(img, 2).shape == (2, 5, 7)
    assert np.array_equal(to_chw(np.moveaxis(img, 0, -1), 2), img)
    assert to_chw(img[0], 1).shape == (1, 5, 7)
    assert to_chw(np.zeros((5, 3, 7)), 3, channel_axis=1).shape == (3, 5, 7)


@pytest.mark.parametrize("shape,n,match", [
    ((5, 7), 2, "has 1 channel but the model needs 2"),
    ((3, 5, 7), 2, "no axis of length 2"),
    ((2, 3, 5, 7), 2, "4 dimensions"),
])
def test_to_chw_errors_name_the_shape(shape, n, match):
    with pytest.raises(ValueError, match=match):
        to_chw(np.zeros(shape), n)


@pytest.mark.parametrize("shape,n,fix", [
    ((2, 64, 64), 1, "--channel-index 0 (channel_index=(0,))"),  # a 2-channel TIFF into a one-channel model
    ((4, 64, 64), 3, "--channel-index 0,1,2"),
    ((64, 64), 2, "--layout imagexpress or operetta, or --channel NAME=GLOB"),  # one channel file of a field
    ((2, 64, 64), 3, "give one file per channel"),
])
def test_channel_errors_name_the_fix_that_works(shape, n, fix):
    """The message says what to pass: --channel-index to pick channels, --layout / --channel for channel files;
    not --channel-axis, which cannot help."""
    with pytest.raises(ValueError) as err:
        to_chw(np.zeros(shape), n)
    assert fix in str(err.value) and "--channel-axis" not in str(err.value)


def test_normalize_maps_percentiles_to_0_and_1():
    rng = np.random.default_rng(0)
    img = rng.integers(100, 5000, size=(2, 64, 64)).astype(np.uint16)
    out = normalize(img, NormalizationConfig(low=1, high=99))
    assert out.dtype == np.float32
    for c in range(2):
        lo, hi = np.percentile(img[c], [1, 99])
        np.testing.assert_allclose(out[c], (img[c] - lo) / (hi - lo), rtol=1e-5, atol=1e-5)


def test_normalize_constant_and_nan_images():
    assert np.all(normalize(np.full((1, 8, 8), 7, np.uint8)) == 0)
    img = np.ones((1, 8, 8), np.float32)
    img[0, 0, 0] = np.nan
    with pytest.warns(UserWarning, match="NaN"):
        out = normalize(img)
    assert np.isfinite(out).all()


@pytest.mark.needs_realdata
def test_normalize_a_real_16bit_image(realdata):
    img = tifffile.imread(realdata / "W00001_P00001_cherry.tif")  # 1024 x 1344 uint16 with camera offset
    out = normalize(img[None])
    assert out.shape == (1, 1024, 1344) and np.isfinite(out).all()
    assert np.mean(out <= 0) == pytest.approx(0.01, abs=0.005)
    assert np.mean(out >= 1) == pytest.approx(0.002, abs=0.002)


@pytest.mark.parametrize("size", [(64, 64), (70, 93), (129, 64)])
def test_upsample_maps_matches_torch_interpolate(size):
    stride = 8
    h, w = -(-size[0] // stride), -(-size[1] // stride)
    maps = np.random.default_rng(1).random((3, h, w)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(maps)[None], scale_factor=stride, mode="bilinear", align_corners=False)
    ref = ref[0, :, : size[0], : size[1]].numpy()
    np.testing.assert_allclose(upsample_maps(maps, stride, size), ref, atol=1e-5)


def test_label_mask():
    maps = np.array([[[0.9, 0.2], [0.4, 0.1]], [[0.5, 0.7], [0.3, 0.2]]], np.float32)
    assert label_mask(maps).tolist() == [[1, 2], [0, 0]]
    assert label_mask(maps, threshold=0.8).tolist() == [[1, 0], [0, 0]]
