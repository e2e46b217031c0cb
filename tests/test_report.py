"""report.html: one self-contained page per run, rendered by a real headless Chromium without console errors."""

import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from milcnn.cli import main

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def plate_run(tmp_path_factory, control_plate):
    """The control plate predicted with its roles, overlays on: (folder, map, the run's folder)."""
    folder, plate_map, _ = control_plate
    out = tmp_path_factory.mktemp("report") / "out"
    result = CliRunner().invoke(main, ["predict", str(folder), "--well-pattern", r"p1_(?P<well>[A-C]\d\d)",
                                       "--plate-map", str(plate_map), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return folder, plate_map, out


def test_the_report_is_self_contained_and_escapes_what_it_shows(plate_run):
    _, _, out = plate_run
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']*)'", page))
    assert "<script" not in page and "<link" not in page
    assert "&lt;b&gt;cA03&lt;/b&gt;" in page and "<b>cA03</b>" not in page  # a compound name is text, not markup
    assert "Z&#x27;" in page or "Z'" in page
    for section in ("Plate ", "Hit list", "Model", "Provenance", "Mean probability of each class"):
        assert section in page, section
    assert page.count("data:image/png;base64,") == len(list(csv.DictReader(open(out / "hits.csv"))))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's package)")
def test_the_report_renders_in_headless_chromium_without_console_errors(plate_run, tmp_path):
    _, _, out = plate_run
    page = out / "report.html"
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom')</script></body></html>")
    logs = {}
    for name, path in (("report", page), ("bad", bad)):
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                               "--v=0", "--window-size=1200,1600", f"--screenshot={tmp_path / (name + '.png')}",
                               path.as_uri()],
                              capture_output=True, text=True, timeout=120)
        logs[name] = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert logs["bad"], "the console check sees nothing: it could not fail"
    assert logs["report"] == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_resume_writes_the_hit_list_and_the_report_again(plate_run):
    folder, plate_map, out = plate_run
    hits = (out / "hits.csv").read_text()
    for name in ("hits.csv", "plate_qc.csv", "report.html"):
        (out / name).unlink()
    result = CliRunner().invoke(main, ["predict", str(folder), "--well-pattern", r"p1_(?P<well>[A-C]\d\d)",
                                       "--plate-map", str(plate_map), "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert (out / "hits.csv").read_text() == hits and (out / "report.html").is_file()


def test_a_report_that_cannot_be_written_is_one_line_and_exit_2(plate_run, tmp_path):
    """report.html is a folder (so it cannot be replaced): one line, exit 2, the other results in place."""
    folder, plate_map, _ = plate_run
    out = tmp_path / "out"
    (out / "report.html").mkdir(parents=True)
    result = CliRunner().invoke(main, ["predict", str(folder), "--well-pattern", r"p1_(?P<well>[A-C]\d\d)",
                                       "--plate-map", str(plate_map), "--out", str(out), "--no-overlays"])
    assert result.exit_code == 2 and "cannot write the report" in result.output and "Traceback" not in result.output
    assert (out / "predictions.csv").is_file() and (out / "hits.csv").is_file()
