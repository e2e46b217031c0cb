"""Every command block of the README runs as written.

The two Quick start commands are what ``.ci/run`` runs (the test command in the test environment, the
install-and-predict command in a plain ``pip install .``): checked here to stand there verbatim. Every
other block runs here, in a fresh folder where the repository's ``zoo/`` is at hand, as a user would run it
from the repository: bash blocks with ``bash -e``, Python blocks with this interpreter. Blocks that train
(``milzoo train``, ``finetune``, ...) are slow.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every fenced block, in order."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text[: m.start()].count("\n") + 1
        out.append((f"line{line}-{m[1]}", m[1], m[2]))
    return out


QUICK_START = [b for b in blocks() if "pip install" in b[2] and b[2].count("\n") == 1]
OTHERS = [b for b in blocks() if b not in QUICK_START]


def test_the_readme_has_exactly_two_quick_start_commands_and_ci_runs_both_verbatim():
    assert len(QUICK_START) == 2
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for _, _, code in QUICK_START:
        assert code.strip() in ci, f"{code.strip()!r} is not in .ci/run"
    assert all(lang in ("bash", "python") for _, lang, _ in OTHERS), "a block in a language no test runs"


def _run(lang: str, code: str, folder: Path) -> subprocess.CompletedProcess:
    (folder / "zoo").symlink_to(ROOT / "zoo", target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    argv = ["bash", "-e", "-o", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    return subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=900)


TRAINS = re.compile(r"milzoo (train|finetune|export|evaluate|simulate)\b|training\.")
PARAMS = [pytest.param(*b, id=b[0], marks=[pytest.mark.slow] if TRAINS.search(b[2]) else []) for b in OTHERS]


@pytest.mark.parametrize("block_id, lang, code", PARAMS)
def test_a_readme_block_runs_as_written(tmp_path, block_id, lang, code):
    proc = _run(lang, code, tmp_path)
    assert proc.returncode == 0, f"README {block_id} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
