"""A model folder's self-test: its bundled sample through the SDK, against the output recorded at export."""

from __future__ import annotations

import json

from milcnn import constants
from milcnn.errors import ModelConfigError, SelfTestError

__all__ = ["self_test"]


def self_test(clf, *, tolerance: float = constants.SELF_TEST_TOLERANCE) -> dict:
    """Run ``clf`` on its folder's ``sample_input.tif`` and compare with ``sample_output.json``.

    Returns:
        ``{"max_abs_difference": float, "label": str}``.

    Raises:
        SelfTestError: the label differs or a probability differs by more than ``tolerance``.
        ModelConfigError: the folder has no sample.
    """
    sample, expected_path = clf.folder / constants.SAMPLE_INPUT_FILE, clf.folder / constants.SAMPLE_OUTPUT_FILE
    if not sample.is_file() or not expected_path.is_file():
        raise ModelConfigError(f"{clf.folder}: no {sample.name} and {expected_path.name} to self-test with")
    expected = json.loads(expected_path.read_text())
    got = clf.predict(sample)
    diff = max(abs(got.probabilities[c] - float(p)) for c, p in expected["probabilities"].items())
    if got.label != expected["label"] or diff > tolerance:
        raise SelfTestError(f"{clf.name}: self-test failed on {sample.name}: label {got.label!r} "
                            f"(expected {expected['label']!r}), max probability difference {diff:.2e} "
                            f"(tolerance {tolerance:.0e})")
    return {"max_abs_difference": diff, "label": got.label}
