"""The output folder's layout: the names a run gives its files are the names a reader finds them by."""

from pathlib import Path

from milcnn.io.fields import ChannelFiles
from milcnn.outputs.layout import RunLayout, output_stems


def _row(image, plate="", well="", field=""):
    return {"image": str(image), "plate": plate, "well": well, "field": field}


def test_stems_from_the_rows_are_the_stems_the_run_gave(tmp_path):
    """Files whose stems clash, files with their own, channel-file fields: rebuilt from predictions.csv rows
    exactly as ``output_stems`` named the inputs."""
    inputs = [tmp_path / "p1" / "A01" / "f1.tif", tmp_path / "p1" / "A02" / "f1.tif", tmp_path / "solo.tif",
              ChannelFiles(tmp_path / "p2" / "B03_s1", (tmp_path / "p2" / "B03_s1_w1.tif",
                                                        tmp_path / "p2" / "B03_s1_w2.tif"))]
    given = output_stems(inputs)
    rebuilt = RunLayout.stems([_row(p) for p in inputs])
    assert rebuilt == {str(p): given[p] for p in inputs}
    assert rebuilt[str(inputs[0])] == "A01__f1" and rebuilt[str(inputs[2])] == "solo"


def test_an_ome_zarr_field_is_named_by_its_plate_well_and_field(tmp_path):
    """A ZarrField's outputs are named ``<plate>_<well>_f<field>`` (its ``name``), not by its path's last
    part; predictions.csv records plate, well and field, so the name is rebuilt from them."""
    rows = [_row(tmp_path / "screen.zarr" / "A" / "1" / "0", "screen", "A01", "0"),
            _row(tmp_path / "screen.zarr" / "A" / "2" / "0", "screen", "A02", "0")]
    assert RunLayout.stems(rows) == {rows[0]["image"]: "screen_A01_f0", rows[1]["image"]: "screen_A02_f0"}
    layout = RunLayout(tmp_path / "out")
    assert layout.mask("screen_A01_f0") == Path(tmp_path / "out" / "masks" / "screen_A01_f0.tif")
    assert not layout.is_results()
