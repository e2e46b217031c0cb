"""Cell counts: the counter against the simulators' own counts, the config block, and the columns."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from milcnn.errors import ModelConfigError
from milcnn.process.cells import CellCounting, count_cells

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("simulator, channel, diameter", [("mcf7", "dna", 22.0), ("yeast", "rfp", 22.0)])
def test_counts_follow_the_simulators_count(simulator, channel, diameter):
    """Fields of every class on seeds the diameters were not chosen on: the median ratio within 10 %."""
    from training.cells import simulated_counts

    fields = simulated_counts(simulator, per_class=1, seed=12, channel=channel)
    ratios = [count_cells(plane, diameter) / truth for _, plane, truth in fields]
    assert abs(np.median(ratios) - 1) <= 0.1, ratios


def test_a_flat_or_tiny_plane_has_no_cells_and_a_bad_diameter_is_refused():
    assert count_cells(np.full((256, 256), 7, np.uint16), 20) == 0
    assert count_cells(np.zeros((3, 3)), 20) == 0
    with pytest.raises(ValueError, match="diameter must be positive"):
        count_cells(np.zeros((64, 64)), 0)


def test_counting_is_blind_to_brightness_and_offset():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    plane = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 50.0) for y, x in rng.uniform(20, 236, (15, 2)))
    assert count_cells(plane, 16) == count_cells(plane * 1000 + 300, 16)


@pytest.mark.parametrize("block, says", [
    ({"channel": "dapi", "diameter_px": 20}, "cells.channel must be one of the model's channels"),
    ({"channel": "rfp", "diameter_px": -3}, "cells.diameter_px must be a number of pixels"),
    ({"channel": "rfp", "diameter_px": 20, "objects": "blobs"}, "cells.objects must be one of nuclei, cells"),
])
def test_a_bad_cells_block_is_refused_at_load(tmp_path, block, says):
    from milcnn import Classifier
    from milcnn.model.config import content_sha256

    folder = shutil.copytree(ROOT / "zoo" / "yeast-loc", tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["cells"] = block
    config["checksum"] = f"sha256:{content_sha256(config)}"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match=says):
        Classifier.from_dir(folder)


def test_the_zoo_blocks_read_back():
    from milcnn.model.config import ModelInfo

    info = ModelInfo.from_file(ROOT / "zoo" / "mcf7-moa" / "config.json")
    assert info.cells == CellCounting("dna", 22.0, "nuclei", info.cells.validated)
    assert ModelInfo.from_file(ROOT / "zoo" / "yeast-loc-gfp" / "config.json").cells is None


def test_milzoo_cells_writes_one_row_per_counted_cell_and_resume_writes_the_same(tmp_path):
    import csv

    from click.testing import CliRunner

    from milcnn.cli import main

    sample = ROOT / "zoo" / "mcf7-moa" / "sample_input.tif"
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        shutil.copy(sample, folder / name)
    out = tmp_path / "out"
    args = ["predict", str(folder), "--model", "mcf7-moa", "--cells", "--no-overlays", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    cells = list(csv.DictReader(open(out / "cells.csv")))
    assert len(cells) == sum(int(r["n_cells"]) for r in rows) > 0
    assert list(cells[0]) == ["image", "plate", "well", "field", "cell", "y", "x", "area_px", "class", "probability"]
    assert {c["image"] for c in cells} == {r["image"] for r in rows}
    assert all(0 <= float(c["probability"]) <= 1 and int(c["area_px"]) > 0 for c in cells)
    before = (out / "cells.csv").read_bytes()
    (out / "cells.csv").unlink()
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert (out / "cells.csv").read_bytes() == before


def test_cells_for_a_model_that_does_not_count_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from milcnn.cli import main

    result = CliRunner().invoke(main, ["predict", str(ROOT / "zoo" / "yeast-loc-gfp" / "sample_input.tif"), "--model",
                                       "yeast-loc-gfp", "--cells", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--cells: yeast-loc-gfp records no way to find cells" in result.output
    assert not (tmp_path / "out").exists()
