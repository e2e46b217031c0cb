"""Training from one CLI: ``milzoo train|finetune|evaluate|export|simulate`` run the training package, installed as
``milcnn.training`` (no top-level ``training`` in site-packages), from any folder; without the train extra
they say what to install."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from milcnn.cli import TRAINING_COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", sorted(TRAINING_COMMANDS))
def test_every_training_command_has_its_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"usage: milzoo {command}" in result.output


def test_milzoo_simulate_writes_a_screen(tmp_path):
    result = CliRunner().invoke(main, ["simulate", "yeast", "--n", "2", "--seed", "3", "--size", "64", "--out",
                                       str(tmp_path / "sim")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "sim" / "manifest.csv").read_text().splitlines()) == 3


def test_without_the_train_extra_the_message_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
            "from milcnn.cli import main\nmain(['finetune', '--help'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert 'needs the train extra' in proc.stderr and 'pip install "milcnn-sdk[train]"' in proc.stderr


@pytest.mark.slow
def test_a_built_wheel_runs_milzoo_finetune_from_any_folder(tmp_path):
    """The wheel as pip builds it (not the editable install): training code under milcnn/training only, and
    ``milzoo finetune --help`` works from a folder that is not the repository."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "training" not in tops and "milcnn" in tops
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", "import milcnn.cli, sys; print(milcnn.cli.__file__); "
                           "sys.argv = ['milzoo', 'finetune', '--help']; milcnn.cli.main()"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].startswith(str(target))  # the installed copy, not the repository's
    assert "usage: milzoo finetune" in proc.stdout and "--rehearsal-fraction" in proc.stdout
