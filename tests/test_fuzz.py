"""Bounded fuzzing of the reading and pre-processing path: random and mutated files, random arrays.

Nothing may escape but the documented errors (ImageReadError for files, ValueError for arrays),
and whatever is accepted must normalise to finite float32. Deterministic (derandomize) so CI is
repeatable; about 20 s in all.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from milcnn.errors import ImageReadError
from milcnn.io.images import read_image
from milcnn.process.preprocess import apply_ranges, channel_ranges, to_chw

ZOO = Path(__file__).resolve().parents[1] / "zoo"
SAMPLE = (ZOO / "yeast-loc" / "sample_input.tif").read_bytes()
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check_file(path: Path) -> None:
    try:
        image = read_image(path)
    except ImageReadError as exc:
        assert str(path) in str(exc)
        return
    check_array(image)


def check_array(image, n_channels: int = 2) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN warnings are expected
        try:
            chw = to_chw(image, n_channels)
            out = apply_ranges(chw, *channel_ranges(chw))
        except ValueError:
            return
    assert out.dtype == np.float32 and out.shape == chw.shape and np.isfinite(out).all()


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".tif", ".png", ".jpg"]))
def test_random_bytes(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    check_file(path)


@FUZZ
@given(cuts=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       length=st.one_of(st.none(), st.integers(0, len(SAMPLE))))
def test_mutated_tiff(tmp_path, cuts, length):
    data = bytearray(SAMPLE[:length] if length is not None else SAMPLE)
    for position, value in cuts:
        if data:
            data[position % len(data)] = value
    path = tmp_path / "mutated.tif"
    path.write_bytes(bytes(data))
    check_file(path)


DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64,
                          np.bool_])


@FUZZ
@given(image=hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)))
def test_random_arrays(image):
    check_array(image)
    check_array(image, n_channels=1)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e38, -1e38, 0.0])
def test_extreme_constant_floats(value):
    check_array(np.full((2, 16, 16), value, np.float32))
