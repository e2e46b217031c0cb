import numpy as np
import pytest
import tifffile

from training.data.manifest import ManifestError, load_image, read_manifest


def write(path, text):
    path.write_text(text)
    return path


def test_reads_the_simulated_manifest(tiny_yeast):
    samples, channels, classes = read_manifest(tiny_yeast, channels=("gfp", "rfp"))
    assert len(samples) == 22 and channels == ("gfp", "rfp") and len(classes) == 11
    assert load_image(samples[0], 2).shape == (2, 128, 128)


def test_bad_rows_are_all_reported_with_line_numbers(tmp_path):
    tifffile.imwrite(tmp_path / "good.tif", np.zeros((2, 64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "three.tif", np.zeros((3, 64, 64), np.uint16), photometric="minisblack")
    m = write(tmp_path / "m.csv", "path,label,split\n"
              "good.tif,a,train\n"
              "missing.tif,a,train\n"
              "good.tif,zebra,train\n"
              "three.tif,a,train\n"
              "good.tif,,train\n"
              "good.tif,a,holdout\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(m, channels=("gfp", "rfp"), classes=("a",))
    text = str(err.value)
    assert "5 bad row(s)" in text
    assert "line 3: file" in text and "missing.tif not found" in text
    assert "line 4: unknown label(s) 'zebra'" in text
    assert "line 5: three.tif: image of shape (3, 64, 64) has no axis of length 2" in text
    assert "line 6: empty label" in text
    assert "line 7: split 'holdout'" in text
    assert [n for n, _ in err.value.problems] == [3, 4, 5, 6, 7]


def test_per_channel_columns_and_multi_label(tmp_path):
    for ch in ("gfp", "rfp"):
        tifffile.imwrite(tmp_path / f"{ch}.tif", np.full((64, 80), 3 if ch == "gfp" else 5, np.uint16))
    m = write(tmp_path / "m.csv", "path_gfp,path_rfp,label\ngfp.tif,rfp.tif,a|b\n")
    samples, channels, classes = read_manifest(m)
    assert channels == ("gfp", "rfp") and classes == ("a", "b") and samples[0].labels == ("a", "b")
    img = load_image(samples[0], 2)
    assert img.shape == (2, 64, 80) and img[0, 0, 0] == 3 and img[1, 0, 0] == 5


def test_header_problems(tmp_path):
    with pytest.raises(ManifestError, match="no 'label' column"):
        read_manifest(write(tmp_path / "a.csv", "path\nx.tif\n"), channels=("gfp",))
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(write(tmp_path / "b.csv", "path,label\n"), channels=("gfp",))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_manifest(tmp_path / "nope.csv", channels=("gfp",))
