"""milzoo predict's pipeline (inference streams, order, failures) and the overlay encoder's paths."""

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from milcnn import Classifier
from milcnn.outputs.overlay import overlay_title
from milcnn.io.images import write_atomic
from milcnn.outputs.overlay import PALETTE, _overlay_array, composite, outlines, save_overlay
from milcnn.outputs.png import encode_png
from milcnn.batch.pipeline import default_streams, run_pipeline
from milcnn.predict.options import PredictOptions
from milcnn.outputs.results import ResultsFolder
from milcnn.runtime.onnx import physical_cores

ZOO = Path(__file__).resolve().parents[1] / "zoo"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Nine images of three sizes, in an order that mixes them, and two broken files among them."""
    root = tmp_path_factory.mktemp("images")
    sample = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")
    paths = []
    for i in range(9):
        image = np.roll(sample, 37 * i, axis=2)[:, : (512, 320, 256)[i % 3], : (512, 400, 256)[i % 3]]
        paths.append(root / f"f{i}.tif")
        tifffile.imwrite(paths[-1], np.ascontiguousarray(image))
    for name, after in (("broken_a.tif", 2), ("broken_b.tif", 6)):
        (root / name).write_bytes(b"II*\x00 not an image")
        paths.insert(after, root / name)
    return paths


def _run(clf, paths, out, **kwargs):
    errors = []
    got = list(run_pipeline(clf, paths, out, on_error=lambda p, msg, exc: errors.append((p, msg)), **kwargs))
    return got, errors


@pytest.mark.parametrize("streams, workers, batch_size", [(1, 1, 1), (2, 2, 1), (3, 4, 2)])
def test_streams_give_the_same_results_in_input_order(clf, folder, tmp_path, streams, workers, batch_size):
    got, errors = _run(clf, folder, tmp_path, streams=streams, workers=workers, batch_size=batch_size)
    assert [p for p, _ in got] == folder  # input order, failures in their place
    assert [p.name for p, pred in got if pred is None] == ["broken_a.tif", "broken_b.tif"]
    assert [p.name for p, _ in errors] == ["broken_a.tif", "broken_b.tif"]
    _assert_as_predicted_alone(clf, got, tmp_path)


@pytest.mark.needs_openvino
def test_openvino_streams_normalising_in_their_graph_give_the_same_results(folder, tmp_path):
    """Two OpenVINO streams, three image sizes (each compiled with the normalisation in its graph), in
    batches: each image as ``predict`` alone gives it."""
    int8 = Classifier.from_hub("yeast-loc", device="cpu", precision="int8", backend="openvino")
    got, errors = _run(int8, folder, tmp_path, streams=2, workers=2, batch_size=2)
    assert [p.name for p, _ in errors] == ["broken_a.tif", "broken_b.tif"]
    _assert_as_predicted_alone(int8, got, tmp_path)


def _assert_as_predicted_alone(clf, got, out):
    """Each result of the pipeline as ``clf.predict`` gives it alone (another session, other thread counts:
    sums in another order), its mask TIFF, and its overlay as numpy's normalisation draws it."""
    from milcnn.process.preprocess import normalize

    for path, pred in got:
        if pred is None:
            continue
        one = clf.predict(path)
        assert pred.label == one.label
        np.testing.assert_allclose(pred.maps, one.maps, atol=1e-5)
        mask = tifffile.imread(out / "masks" / f"{path.stem}.tif")
        assert mask.shape == one.mask.shape and (mask != one.mask).mean() < 1e-3
        chw = tifffile.imread(path)
        with Image.open(out / "overlays" / f"{path.stem}.png") as im:
            sheet = np.asarray(im.convert("RGB"))
        title = overlay_title(path.name, pred)
        np.testing.assert_array_equal(sheet, _overlay_array(chw, mask, clf.classes, title=title,
                                                            normalized=normalize(chw)))


def test_physical_cores_follow_the_affinity_mask():
    import os

    allowed = os.sched_getaffinity(0)
    assert 1 <= physical_cores() <= len(allowed)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # one logical CPU: one core, whatever the machine
        assert physical_cores() == 1
    finally:
        os.sched_setaffinity(0, allowed)


def test_stream_sessions_are_made_once(clf):
    assert default_streams(clf) == (2 if physical_cores() >= 2 else 1)
    one_thread = Classifier.from_hub("yeast-loc", device="cpu")
    one_thread.model = one_thread.model.with_threads(1)  # as with MILCNN_NUM_THREADS=1
    assert default_streams(one_thread) == 1
    one = clf.model.with_threads(1)
    assert one is clf.model.with_threads(1) and one is not clf.model and one.threads == 1
    x = clf.prepare_input(ZOO / "yeast-loc" / "sample_input.tif").x[None]
    np.testing.assert_allclose(one.run(x)[0], clf.model.run(x)[0], atol=1e-5)


def _reference_overlay(chw_normalized, mask):
    """The overlay's image part computed the plain way: a 2-channel composite (0 green,
    1 magenta), then outline colours."""
    grey = np.clip(chw_normalized * np.float32(255), 0, 255).astype(np.uint8)
    rgb = np.stack([grey[1], grey[0], grey[1]], axis=-1)
    np.testing.assert_array_equal(rgb, composite(None, normalized=chw_normalized))
    edge = outlines(mask)
    rgb[edge] = PALETTE[(mask[edge].astype(int) - 1) % len(PALETTE)]
    return rgb


@pytest.mark.parametrize("h, w", [(512, 512), (300, 77), (20, 33), (129, 1000)])
def test_banded_overlay_equals_the_whole_image_drawing(h, w):
    rng = np.random.default_rng(h * w)
    x = rng.random((2, h, w), dtype=np.float32) * 1.4 - 0.2
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: h // 2, w // 5: w // 2] = 3
    mask[h // 2: h - 2, w // 2:] = 1
    classes = ["a", "b", "c", "d"]
    sheet = _overlay_array(None, mask, classes, title="t.tif\nc (p=0.90)", normalized=x)
    assert sheet.shape[0] == max(h, sheet.shape[0]) and sheet.shape[1] > w
    np.testing.assert_array_equal(sheet[:h, :w], _reference_overlay(x, mask))
    assert (sheet[h:, :w] == 20).all()  # background below a short image


def test_an_overlay_from_the_images_ranges_equals_one_from_its_normalised_array():
    from milcnn.process.preprocess import channel_ranges, normalize

    chw = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")[:, :300, :200]
    mask = np.zeros(chw.shape[1:], np.uint8)
    mask[40:90, 30:160] = 2
    expected = _overlay_array(chw, mask, ["a", "b"], title="t", normalized=normalize(chw))
    np.testing.assert_array_equal(_overlay_array(chw, mask, ["a", "b"], title="t", ranges=channel_ranges(chw)),
                                  expected)  # normalised a band at a time: the same pixels
    np.testing.assert_array_equal(_overlay_array(chw, mask, ["a", "b"], title="t"), expected)  # its own ranges


@pytest.mark.parametrize("cell_diameter", [14.5, 58.0])  # yeast-loc: 29 px, so the network sees 1/2 and 2x
def test_a_rescaled_image_gets_its_overlay_at_its_own_size(clf, tmp_path, cell_diameter):
    from milcnn.process.preprocess import normalize

    path = tmp_path / "f.tif"
    chw = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")[:, :256, :320]
    tifffile.imwrite(path, chw)
    got, errors = _run(clf, [path], tmp_path / "out", options=PredictOptions(cell_diameter=cell_diameter))
    assert not errors, errors
    pred = got[0][1]
    assert pred.zoom != 1.0 and pred.mask.shape == chw.shape[1:]
    with Image.open(tmp_path / "out" / "overlays" / "f.png") as im:
        sheet = np.asarray(im.convert("RGB"))
    title = overlay_title("f.tif", pred)
    np.testing.assert_array_equal(sheet, _overlay_array(chw, pred.mask, clf.classes, title=title,
                                                        normalized=normalize(chw)))


def _swatch_filled(sheet, width, title_lines, k):
    """Whether class k's legend square is filled (the class is in the mask) or only outlined."""
    y = 6 + 14 * title_lines + 6 + 16 * k + 7  # the middle of its square
    return tuple(sheet[y, width + 13]) == tuple(PALETTE[k])


@pytest.mark.parametrize("fill, present", [(2, [False, True, False]), (0, [False, False, False])])
def test_a_mask_of_one_value_everywhere_lists_the_right_classes(fill, present):
    mask = np.full((120, 40), fill, np.uint8)
    sheet = _overlay_array(None, mask, ["a", "b", "c"], title="t", normalized=np.zeros((1, 120, 40), np.float32))
    assert [_swatch_filled(sheet, 40, 1, k) for k in range(3)] == present


def test_the_legend_marks_the_classes_in_the_mask():
    mask = np.zeros((120, 40), np.uint8)
    mask[10:30, 5:20] = 3
    mask[50:60, 0:40] = 1
    sheet = _overlay_array(None, mask, ["a", "b", "c"], title="t\nx", normalized=np.zeros((1, 120, 40), np.float32))
    assert [_swatch_filled(sheet, 40, 2, k) for k in range(3)] == [True, False, True]


def test_png_from_zlib_and_isal_decode_to_the_same_pixels(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.random((2, 200, 150), dtype=np.float32)
    mask = (rng.random((200, 150)) > 0.7).astype(np.uint8) * 2
    save_overlay(tmp_path / "default.png", None, mask, ["a", "b"], title="t", normalized=x)
    monkeypatch.setitem(sys.modules, "isal", None)  # import isal now fails: the zlib path
    save_overlay(tmp_path / "zlib.png", None, mask, ["a", "b"], title="t", normalized=x)
    rgb = np.arange(7 * 13 * 3, dtype=np.uint8).reshape(7, 13, 3)
    with Image.open(io.BytesIO(encode_png(rgb))) as im:
        assert np.array_equal(np.asarray(im), rgb)
    for name in ("default.png", "zlib.png"):  # every chunk's CRC, as strict PNG readers check them
        data = (tmp_path / name).read_bytes()
        pos, kinds = 8, []
        while pos < len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
            kinds.append(kind)
            pos += 12 + length
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    with Image.open(tmp_path / "default.png") as a, Image.open(tmp_path / "zlib.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert np.array_equal(np.asarray(a), _overlay_array(None, mask, ["a", "b"], title="t", normalized=x))


def test_non_durable_writes_are_still_atomic(tmp_path):
    with write_atomic(tmp_path / "f.bin", "wb", durable=False) as fh:
        fh.write(b"complete")
    assert (tmp_path / "f.bin").read_bytes() == b"complete"
    with pytest.raises(RuntimeError):
        with write_atomic(tmp_path / "f.bin", "wb", durable=False) as fh:
            fh.write(b"half")
            raise RuntimeError("killed")
    assert (tmp_path / "f.bin").read_bytes() == b"complete" and list(tmp_path.iterdir()) == [tmp_path / "f.bin"]


def test_resume_removes_the_temporary_files_of_a_killed_run(tmp_path):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "overlays").mkdir()
    (out / "predictions.csv").write_text("image,label\n")
    (out / "masks" / ".f1.tif.ab12cd.part").write_bytes(b"half")
    (out / "overlays" / ".f1.png.x9y8.part").write_bytes(b"half")
    (out / "masks" / "f0.tif").write_bytes(b"kept")
    with ResultsFolder(out, ["image", "label"], resume=True):
        pass
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["f0.tif"]
    assert list((out / "overlays").iterdir()) == []
