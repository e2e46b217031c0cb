"""Every row of the bad-input matrix (benchmarks/robustness.py, docs/robustness.md) behaves as documented."""

import pytest

from benchmarks.robustness import CASES, outcome_matches, run_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_matrix(case, tmp_path):
    result = run_case(case, tmp_path)
    assert outcome_matches(case, result), result
    assert result["exception"] is None and not result["traceback"]


def test_nan_pixels_warn(tmp_path):
    case = next(c for c in CASES if c.name == "NaN and Inf pixels")
    assert any("NaN or Inf" in w for w in run_case(case, tmp_path)["warnings"])
