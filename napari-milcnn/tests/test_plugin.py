"""napari-milcnn: its manifest, the widget on napari's viewer model (Qt offscreen), the reader, and the plugin
docked in a real napari window under Xvfb."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari", reason="napari is in the test extras")

from milcnn import Classifier  # noqa: E402
from napari_milcnn import _reader  # noqa: E402
from napari_milcnn._widget import MilcnnWidget  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "zoo" / "yeast-loc" / "sample_input.tif"
MANIFEST = ROOT / "napari-milcnn" / "src" / "napari_milcnn" / "napari.yaml"


@pytest.fixture
def make_viewer(qtbot):
    """napari's viewer model (layers, no canvas: no OpenGL needed offscreen) in a Qt application."""
    from napari.components import ViewerModel

    return ViewerModel


@pytest.fixture(scope="module")
def expected():
    return Classifier.from_hub("yeast-loc").predict(tifffile.imread(SAMPLE))


def test_manifest_is_valid_and_its_commands_import():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-milcnn"
    assert {c.id for c in manifest.contributions.commands} == {"napari-milcnn.widget", "napari-milcnn.read_results"}
    for command in manifest.contributions.commands:
        module, attr = command.python_name.split(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr))


def test_widget_adds_the_mask_with_class_names_colours_and_probabilities(make_viewer, expected):
    viewer = make_viewer()
    viewer.add_image(tifffile.imread(SAMPLE), name="field")  # (2, 512, 512): channels on axis 0
    widget = MilcnnWidget(viewer)
    assert [widget.model.itemText(i) for i in range(widget.model.count())] == ["mcf7-moa", "yeast-loc", "yeast-loc-gfp"]
    assert widget.layer.currentText() == "field"
    widget.model.setCurrentText("yeast-loc")
    layer = widget.predict()
    assert layer is viewer.layers["field milcnn mask"]
    np.testing.assert_array_equal(layer.data, expected.mask)
    classes = list(Classifier.from_hub("yeast-loc").classes)
    assert list(layer.features["class"]) == ["background", *classes]
    meta = layer.metadata["milcnn"]
    assert meta["label"] == expected.label and meta["probabilities"] == pytest.approx(expected.probabilities)
    assert widget.table.rowCount() == len(classes) and widget.table.item(0, 0).text() == expected.label
    from milcnn.outputs.overlay import PALETTE

    np.testing.assert_allclose(layer.colormap.map(1)[..., :3].ravel(), PALETTE[0] / 255, atol=1e-6)
    assert expected.label in widget.called.text()
    widget.predict()  # again: replaced, not doubled
    assert [layer.name for layer in viewer.layers].count("field milcnn mask") == 1


def test_one_layer_per_channel_gives_the_same_mask(make_viewer, expected):
    viewer = make_viewer()
    viewer.add_image(tifffile.imread(SAMPLE), channel_axis=0, name=["gfp", "rfp"])  # two layers
    widget = MilcnnWidget(viewer)
    widget.model.setCurrentText("yeast-loc")
    widget.per_channel.setChecked(True)
    widget.channel_layers[0].setCurrentText("gfp")
    widget.channel_layers[1].setCurrentText("rfp")
    layer = widget.predict()
    np.testing.assert_array_equal(layer.data, expected.mask)


def test_a_wrong_image_is_said_in_the_widget_not_raised(make_viewer):
    viewer = make_viewer()
    viewer.add_image(np.zeros((5, 64, 64), np.uint16), name="stack")
    widget = MilcnnWidget(viewer)
    widget.model.setCurrentText("yeast-loc")
    assert widget.predict() is None and "no axis of length 2" in widget.called.text()


def test_the_default_model_fits_the_layer_until_the_user_picks_one(make_viewer):
    """A 3-channel layer gets mcf7-moa, a 2-channel one yeast-loc, a 2-D one yeast-loc-gfp; once the user picks a
    model, a new layer does not change it."""
    viewer = make_viewer()
    widget = MilcnnWidget(viewer)
    for data, model in ((np.zeros((3, 64, 64), np.uint16), "mcf7-moa"), (np.zeros((64, 64, 2), np.uint16), "yeast-loc"),
                        (np.zeros((64, 64), np.uint16), "yeast-loc-gfp")):
        viewer.add_image(data, name=model + " field")
        widget.layer.setCurrentText(model + " field")
        assert widget.model.currentText() == model
        assert len(widget.channel_layers) == len(Classifier.from_hub(model).channels)
    widget.model.setCurrentText("yeast-loc")  # the user's choice
    viewer.add_image(np.zeros((3, 64, 64), np.uint16), name="another")
    widget.layer.setCurrentText("another")
    assert widget.model.currentText() == "yeast-loc"


def test_typing_a_model_loads_nothing_until_the_choice_is_made(make_viewer, monkeypatch):
    """Each keystroke of 'org/name' would be a Hub call; the model loads on Enter (editingFinished) only, and a
    name that cannot be loaded is said in the widget, wrapped."""
    viewer = make_viewer()
    viewer.add_image(tifffile.imread(SAMPLE), name="field")
    widget = MilcnnWidget(viewer)
    calls = []
    monkeypatch.setattr(widget, "classifier", lambda name=None: calls.append(name) or (_ for _ in ()).throw(
        ValueError(f"no model {name}")))
    for i in range(1, len("my-lab/screen") + 1):
        widget.model.setEditText("my-lab/screen"[:i])
    assert calls == []
    widget.model.lineEdit().editingFinished.emit()
    assert calls == ["my-lab/screen"] and "cannot load my-lab/screen" in widget.called.text()
    assert widget.called.wordWrap()


def test_channel_pickers_show_only_in_one_layer_per_channel_mode(make_viewer):
    viewer = make_viewer()
    viewer.add_image(tifffile.imread(SAMPLE), name="field")
    widget = MilcnnWidget(viewer)
    assert widget.channels_box.isHidden()
    widget.per_channel.setChecked(True)
    assert not widget.channels_box.isHidden() and len(widget.channel_layers) == 2
    widget.one_layer.setChecked(True)
    assert widget.channels_box.isHidden()


def test_predict_button_runs_in_a_worker_thread(make_viewer, qtbot, expected):
    """The button predicts off the GUI thread (napari's thread worker, with progress) and adds the same mask."""
    viewer = make_viewer()
    viewer.add_image(tifffile.imread(SAMPLE), name="field")
    widget = MilcnnWidget(viewer)
    worker = widget.predict_in_background()
    assert worker is not None and not widget.run.isEnabled() and "predicting field" in widget.called.text()
    assert widget.predict_in_background() is None  # one at a time
    qtbot.waitUntil(lambda: "field milcnn mask" in viewer.layers and widget.run.isEnabled(), timeout=60000)
    np.testing.assert_array_equal(viewer.layers["field milcnn mask"].data, expected.mask)
    assert expected.label in widget.called.text()


def test_reader_opens_a_milzoo_output_folder(tmp_path, expected):
    from click.testing import CliRunner

    from milcnn.cli import main

    shutil.copy(SAMPLE, tmp_path / "a.tif")
    assert CliRunner().invoke(main, ["predict", str(tmp_path / "a.tif"), "--out", str(tmp_path / "out")]).exit_code == 0
    assert _reader.get_reader(str(tmp_path)) is None
    read = _reader.get_reader(str(tmp_path / "out"))
    layers = read(str(tmp_path / "out"))
    (overlay, okw, okind), (mask, mkw, mkind) = layers
    assert okind == "image" and okw["rgb"] and overlay.shape[2] == 3 and overlay.shape[0] == 512
    assert mkind == "labels" and mkw["name"] == "a milcnn mask"
    np.testing.assert_array_equal(mask, expected.mask)
    assert mkw["metadata"]["milcnn"]["label"] == expected.label
    assert mkw["metadata"]["milcnn"]["model"].startswith("yeast-loc ")



def test_reader_opens_plate_outputs_whose_masks_are_not_named_by_the_image_stem(tmp_path, expected):
    """A plate folder (plate1/A01/f1.tif, plate1/A02/f1.tif): the run names the masks A01__f1.tif, A02__f1.tif
    (the stems clash); the reader finds every one through the run layout."""
    from click.testing import CliRunner

    from milcnn.cli import main

    for well in ("A01", "A02"):
        (tmp_path / "plate1" / well).mkdir(parents=True)
        shutil.copy(SAMPLE, tmp_path / "plate1" / well / "f1.tif")
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["predict", str(tmp_path / "plate1"), "-r", "--out", str(out)]).exit_code == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["A01__f1.tif", "A02__f1.tif"]
    layers = _reader.get_reader(str(out))(str(out))
    masks = [(data, kw) for data, kw, kind in layers if kind == "labels"]
    assert [kw["name"] for _, kw in masks] == ["A01__f1 milcnn mask", "A02__f1 milcnn mask"]
    for data, _ in masks:
        np.testing.assert_array_equal(data, expected.mask)

@pytest.mark.slow
def test_a_real_viewer_under_xvfb(tmp_path):
    """The plugin docked in a real napari window on an X server (Xvfb), predicting the bundled sample, then
    adapting the model to two marked cells and the field with the Adapt button; the screenshot is kept
    (``MILCNN_SCREENSHOTS=folder`` copies it there, e.g. docs/)."""
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        pytest.skip("no Xvfb on this machine (.ci/run installs it where it can)")
    shot = tmp_path / "napari.png"
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "napari-milcnn" / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable,
                           str(Path(__file__).with_name("real_viewer.py")), str(SAMPLE), str(shot),
                           str(tmp_path / "adapted")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "labels: gfp+rfp milcnn mask" in proc.stdout
    assert f"adapt: adapted: {tmp_path / 'adapted'}" in proc.stdout, proc.stdout[-2000:]  # the Adapt button, on screen
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[1] > 900 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # the window, drawn
    if os.environ.get("MILCNN_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["MILCNN_SCREENSHOTS"]) / "napari.png")


def _quadrants_labelled(viewer, panel):
    """The sample's top quadrants as vacuole cells (a Shapes layer), its bottom ones as ER (a Labels layer), as
    ``tests/test_adapt.py`` labels them: the zoo model calls all four ER."""
    viewer.add_shapes([np.array([[0, 0], [240, 240]]), np.array([[0, 272], [240, 511]])], shape_type="rectangle",
                      name="vacuole cells")
    regions = np.zeros((512, 512), np.uint8)
    regions[272:500, 10:240], regions[272:500, 272:500] = 1, 2
    viewer.add_labels(regions, name="ER cells")
    panel.label.setCurrentText("vacuole")
    panel.cells.setCurrentText("vacuole cells")
    assert panel.add(cells=True) == 2
    panel.label.setCurrentText("ER")
    panel.cells.setCurrentText("ER cells")
    assert panel.add(cells=True) == 2
    assert panel.listing.count() == 4 and "4 examples of 2 classes" in panel.status.text()


def test_adapt_panel_fits_the_model_to_labelled_cells_and_predicts_with_it(make_viewer, tmp_path):
    viewer = make_viewer()
    sample = tifffile.imread(SAMPLE)
    viewer.add_image(sample, name="field")
    widget = MilcnnWidget(viewer)
    widget.model.setCurrentText("yeast-loc")
    panel = widget.adapt_panel
    classes = [panel.label.itemText(i) for i in range(panel.label.count())]
    assert classes == list(Classifier.from_hub("yeast-loc").classes)
    _quadrants_labelled(viewer, panel)
    assert panel.examples[0][2] == (0, 248, 0, 248)  # the rectangle and MARGIN px around it, inside the image
    panel.out.setText(str(tmp_path / "adapted"))
    folder = panel.adapt()
    assert folder == tmp_path / "adapted" and widget.model.currentText() == str(folder), panel.status.text()
    assert "adapted:" in panel.status.text()
    clf = Classifier.from_dir(folder)
    assert clf.info.training["classes_fitted"] == ["ER", "vacuole"]
    assert [clf.predict(sample[:, y:y + 256, x:x + 256]).top for y, x in ((0, 0), (0, 256), (256, 0), (256, 256))] \
        == ["vacuole", "vacuole", "ER", "ER"]
    assert widget.predict() is not None and clf.name in widget.called.text()  # Predict now uses the adapted model
    assert panel.out.text().endswith("yeast-loc-adapted")  # the next default: named after the source model


def test_the_channel_layers_picked_stay_when_the_model_becomes_the_adapted_one(make_viewer, tmp_path):
    viewer = make_viewer()
    viewer.add_image(tifffile.imread(SAMPLE), channel_axis=0, name=["gfp", "rfp"])
    widget = MilcnnWidget(viewer)
    widget.model.setCurrentText("yeast-loc")
    widget.per_channel.setChecked(True)
    widget.channel_layers[0].setCurrentText("gfp")
    widget.channel_layers[1].setCurrentText("rfp")
    panel = widget.adapt_panel
    _quadrants_labelled(viewer, panel)
    panel.out.setText(str(tmp_path / "adapted"))
    assert panel.adapt() is not None, panel.status.text()
    assert [box.currentText() for box in widget.channel_layers] == ["gfp", "rfp"]


def test_adapt_panel_says_what_is_wrong_and_writes_nothing(make_viewer, tmp_path):
    viewer = make_viewer()
    viewer.add_image(tifffile.imread(SAMPLE), name="field")
    widget = MilcnnWidget(viewer)
    widget.model.setCurrentText("yeast-loc")
    panel = widget.adapt_panel
    assert panel.add(cells=True) == 0 and "no cells layer" in panel.status.text()
    panel.label.setCurrentText("ER")
    assert panel.add(cells=False) == 1
    panel.out.setText(str(tmp_path / "adapted"))
    assert panel.adapt() is None and "examples of one class only (ER)" in panel.status.text()
    assert not (tmp_path / "adapted").exists() and widget.model.currentText() == "yeast-loc"


def test_adapt_button_runs_in_a_worker_thread(make_viewer, qtbot, tmp_path):
    viewer = make_viewer()
    viewer.add_image(tifffile.imread(SAMPLE), name="field")
    widget = MilcnnWidget(viewer)
    widget.model.setCurrentText("yeast-loc")
    panel = widget.adapt_panel
    _quadrants_labelled(viewer, panel)
    panel.out.setText(str(tmp_path / "adapted"))
    worker = panel.adapt_in_background()
    assert worker is not None and not panel.run.isEnabled() and "adapting yeast-loc" in panel.status.text()
    assert panel.adapt_in_background() is None  # one at a time
    qtbot.waitUntil(lambda: panel.run.isEnabled(), timeout=120000)
    assert widget.model.currentText() == str(tmp_path / "adapted"), panel.status.text()
