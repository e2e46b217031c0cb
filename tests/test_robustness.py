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


def test_a_batch_with_every_bad_input_predicts_every_good_image(tmp_path):
    """Good images mixed with one of each bad input of the matrix (for the default model): every good one is
    predicted, each bad one gets one errors.csv row, no traceback, exit 1, and the run peaks below 1.5 GB."""
    from benchmarks.robustness import run_batch

    r = run_batch(tmp_path)
    assert r["exit_code"] == 1 and not r["traceback"], r["stderr_tail"]
    assert r["predicted"] == r["good"] and r["error_rows"] == r["bad"] and r["one_line_errors"]
    assert r["peak_mb"] < 1536, f"peak {r['peak_mb']:.0f} MB"


@pytest.mark.slow
def test_a_refused_input_stays_under_300_mb(tmp_path):
    """Every refused input of the matrix, and every model folder refused at load, in a child process after the
    good sample: the run's peak memory stays under 300 MB (time is reported by the benchmark, not tested)."""
    from benchmarks.robustness import run_costs

    costs = run_costs(tmp_path, repeats=1)
    assert all(code == 1 for _, code, _, _ in costs["inputs"]), costs["inputs"]
    assert all(code == 2 for _, code, _, _ in costs["models"]), costs["models"]
    worst = max(costs["inputs"] + costs["models"], key=lambda r: r[3])
    assert worst[3] < 300, worst
