"""Where bioimageio.core is not installed (the test extras: see test_package.py's docstring), run the bioimage.io
tests in an environment of their own, so the README's one test command covers them too."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


@pytest.mark.skipif(_installed("bioimageio.core"),
                    reason="bioimageio.core is installed here: test_package.py runs in this environment")
def test_bioimageio_packages_in_their_own_environment(tmp_path):
    env_dir = tmp_path / "bio-env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{ROOT}[bioimageio]"],
                             capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          str(ROOT / "tests_bioimageio" / "test_package.py")],
                         capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert run.returncode == 0 and " passed" in run.stdout and "skipped" not in run.stdout, \
        run.stdout[-3000:] + run.stderr[-2000:]
