from pathlib import Path

import pytest

from training.data.yeast import YeastParams
from training.simulate import simulate_dataset


@pytest.fixture(scope="session")
def tiny_yeast(tmp_path_factory) -> Path:
    """22 simulated 128 x 128 yeast images (two per class) with masks and a manifest."""
    out = tmp_path_factory.mktemp("tiny_yeast")
    return simulate_dataset("yeast", n=22, seed=5, out=out, params=YeastParams(size=128), workers=1)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real microscopy images in ../shared/realdata (see its README)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
    if not path.is_dir():
        pytest.fail(f"real test images not found at {path}")
    return path
