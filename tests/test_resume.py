"""An interrupted `milzoo predict` (SIGINT or SIGKILL) resumed with --resume ends with exactly the
outputs of one uninterrupted run; an existing --out is never overwritten by accident."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

ZOO = Path(__file__).resolve().parents[1] / "zoo"


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    """Two folders with the same file names (a/f00.tif and b/f00.tif ...), and one broken file."""
    root = tmp_path_factory.mktemp("plate")
    sample = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")
    for folder in ("a", "b"):
        (root / folder).mkdir()
        for i in range(12):
            image = np.roll(sample, 41 * i + (7 if folder == "b" else 0), axis=2)
            tifffile.imwrite(root / folder / f"f{i:02d}.tif", image)
    (root / "a" / "f05.tif").write_bytes(b"II*\x00broken")
    return root


def _default_sigint() -> None:
    # a shell starts background jobs with SIGINT ignored, and Python then installs no Ctrl-C handler:
    # give the child the default, as a terminal would
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def milzoo(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "milcnn.cli", "predict", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint, **kwargs)


def snapshot(out: Path) -> dict:
    """Every result file's bytes; run.json and report.html (this run's times and command) and the lock file aside."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("run.json", "report.html", ".milzoo.lock")}


@pytest.fixture(scope="module")
def reference(plate, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    proc = milzoo(plate / "a", plate / "b", "--out", out, "--workers", "2")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err  # the broken file
    return snapshot(out)


def test_same_names_in_different_folders_do_not_collide(reference):
    masks = [k for k in reference if k.startswith("masks/")]
    assert len(masks) == 23 and "masks/a__f00.tif" in masks and "masks/b__f00.tif" in masks
    rows = reference["predictions.csv"].decode().splitlines()
    assert len(rows) == 24 and len(set(rows)) == 24
    assert reference["errors.csv"].decode().count("\n") == 2


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupt_and_resume_gives_the_same_outputs(plate, reference, tmp_path, sig):
    out = tmp_path / "out"
    proc = milzoo(plate / "a", plate / "b", "--out", out, "--workers", "2")
    csv_path = out / "predictions.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if csv_path.exists() and csv_path.read_text().count("\n") >= 6:
            break
        time.sleep(0.02)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "continue with --resume" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    partial = csv_path.read_text().count("\n")
    assert 6 <= partial < 24, "the run was not interrupted mid-batch"

    again = milzoo(plate / "a", plate / "b", "--out", out)  # no flag: refused, nothing touched
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2 and "already holds results; pass --resume" in err
    assert csv_path.read_text().count("\n") == partial

    resumed = milzoo(plate / "a", plate / "b", "--out", out, "--resume", "--workers", "3")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 1, err
    assert "resuming:" in err
    got = snapshot(out)
    assert sorted(got) == sorted(reference)
    for name in reference:
        assert got[name] == reference[name], name


def test_overwrite_replaces_and_both_flags_are_refused(plate, reference, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("old results\n")
    (out / "notes.txt").write_text("mine")
    proc = milzoo(plate / "a", "--out", out, "--resume", "--overwrite")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "not both" in err
    proc = milzoo(plate / "a", "--out", out, "--resume")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "column 1 is 'old results' where this model and milcnn-sdk write 'image'" in err
    proc = milzoo(plate / "a", "--out", out, "--overwrite")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert (out / "notes.txt").read_text() == "mine"  # only milcnn's own outputs are replaced
    assert (out / "predictions.csv").read_text().count("\n") == 12


def test_debug_prints_tracebacks(plate, tmp_path):
    proc = milzoo(plate / "a" / "f05.tif", "--out", tmp_path / "out", "--debug")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" in err and "not a readable TIFF" in err


def test_resume_retries_images_that_failed_for_a_reason_that_went_away(plate, tmp_path):
    """A corrupt file is replaced by a good one: --resume predicts it, errors.csv loses its row (and goes,
    as in a run without failures), and the outputs equal an uninterrupted run's on the good files."""
    good, mixed = tmp_path / "good", tmp_path / "mixed"
    for folder in (good, mixed):
        folder.mkdir()
        for i in (0, 1, 2, 3):
            (folder / f"f{i:02d}.tif").write_bytes((plate / "b" / f"f{i:02d}.tif").read_bytes())
    (mixed / "f01.tif").write_bytes(b"II*\x00broken")
    reference = tmp_path / "reference"
    assert milzoo(good, "--out", reference).wait(timeout=300) == 0
    out = tmp_path / "out"
    first = milzoo(mixed, "--out", out)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 1 and (out / "errors.csv").read_text().count("\n") == 2
    (mixed / "f01.tif").write_bytes((good / "f01.tif").read_bytes())  # the cause went away
    resumed = milzoo(mixed, "--out", out, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    got, want = snapshot(out), snapshot(reference)
    got = {k.replace(str(mixed), str(good)): v for k, v in got.items()}
    got["predictions.csv"] = got["predictions.csv"].replace(str(mixed).encode(), str(good).encode())
    assert sorted(got) == sorted(want) and "errors.csv" not in got
    for name in want:
        assert got[name] == want[name], name


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_runs(plate, reference, tmp_path):
    out = tmp_path / "out"
    first = milzoo(plate / "a", plate / "b", "--out", out, "--workers", "2")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "predictions.csv").exists():
        time.sleep(0.02)
    second = milzoo(plate / "a", plate / "b", "--out", out, "--resume")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2 and f"is in use by another milzoo run (PID {first.pid})" in err
    assert "Traceback" not in err and len([line for line in err.splitlines() if line.strip()]) == 1
    _, err = first.communicate(timeout=600)
    assert first.returncode == 1, err
    assert snapshot(out) == reference  # the first run's outputs are whole and as an uninterrupted run's
    again = milzoo(plate / "a", "--out", out, "--resume")  # the lock went with the first run
    assert again.wait(timeout=300) == 1


@pytest.mark.parametrize("where", ["a file", "cannot be created"])
def test_an_unusable_output_folder_is_one_line_and_exit_2(plate, tmp_path, where):
    out = tmp_path / "taken"
    if where == "a file":
        out.write_text("not a folder")
    else:
        out = Path("/proc/self/milzoo-out")  # no one may create folders there, root included
    proc = milzoo(plate / "a" / "f00.tif", "--out", out)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"milzoo: {out}") and ("not a folder" in lines[0] or "cannot create" in lines[0])


def test_a_full_disk_at_the_first_error_stops_with_one_line_and_keeps_what_was_written(plate, tmp_path, monkeypatch):
    """errors.csv cannot be written (ENOSPC): the run stops with exit 2 and one line; predictions.csv keeps
    the rows of the images finished before."""
    import errno

    from milcnn.errors import OutputFolderError

    from click.testing import CliRunner

    from milcnn.outputs import results as results_module
    from milcnn.cli import main

    real_open = results_module.ResultsFolder._open

    def full(self, name, header, **kwargs):
        if name == results_module.ERRORS:
            raise OutputFolderError(f"{self.out / name}: cannot write "
                                                   f"({os.strerror(errno.ENOSPC)})")
        return real_open(self, name, header, **kwargs)

    files = [plate / "a" / "f00.tif", plate / "a" / "f05.tif", plate / "a" / "f06.tif"]  # f05 is broken
    reference = tmp_path / "reference"
    assert CliRunner().invoke(main, ["predict", *map(str, files), "--out", str(reference)]).exit_code == 1
    monkeypatch.setattr(results_module.ResultsFolder, "_open", full)
    result = CliRunner().invoke(main, ["predict", *map(str, files), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 2 and "No space left on device" in result.output and "Traceback" not in result.output
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert rows[1].startswith(str(files[0])) and all(line.count(",") == rows[0].count(",") for line in rows)
    monkeypatch.setattr(results_module.ResultsFolder, "_open", real_open)  # space freed
    resumed = CliRunner().invoke(main, ["predict", *map(str, files), "--out", str(tmp_path / "out"), "--resume"])
    assert resumed.exit_code == 1, resumed.output
    assert snapshot(tmp_path / "out") == snapshot(reference)


def test_files_that_differ_only_in_extension_get_their_own_outputs(plate, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.tif", "a.tiff"):
        (folder / name).write_bytes((plate / "b" / "f00.tif").read_bytes())
    proc = milzoo(folder, "--out", tmp_path / "out")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["a.tif.tif", "a.tiff.tif"]
    assert sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir()) == ["a.tif.png", "a.tiff.png"]


def test_resuming_a_run_of_another_sdk_version_names_the_column_that_differs(tmp_path):
    """predictions.csv without n_cells (an SDK before it): the message names column 8 and both names."""
    from milcnn.outputs.results import ResultsFolder
    from milcnn.errors import ResultsFolderError

    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("image,plate,well,field,label,qc,scale_source,max_probability,p_a\n")
    with pytest.raises(ResultsFolderError, match="column 8 is 'max_probability' where this model and milcnn-sdk "
                                                 "write 'n_cells'"):
        ResultsFolder(out, ["image", "plate", "well", "field", "label", "qc", "scale_source", "n_cells",
                            "max_probability", "p_a"], resume=True)
