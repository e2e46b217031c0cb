"""Run by test_plugin.py under Xvfb: a real napari window with the plugin docked, one prediction, a screenshot."""

import sys

import napari
import tifffile
from npe2 import PluginManager, PluginManifest
from qtpy.QtWidgets import QApplication

from napari_milcnn import _widget

sample, shot = sys.argv[1], sys.argv[2]
manager = PluginManager.instance()
if "napari-milcnn" not in manager:  # run from the source tree: register the manifest by hand
    manager.register(PluginManifest.from_file(_widget.__file__.replace("_widget.py", "napari.yaml")))
viewer = napari.Viewer(show=True)
viewer.window.resize(1600, 950)
viewer.add_image(tifffile.imread(sample), channel_axis=0, name=["gfp", "rfp"], colormap=["green", "magenta"],
                 contrast_limits=[(150, 1100), (150, 1200)])
dock, widget = viewer.window.add_plugin_dock_widget("napari-milcnn", "milcnn predict")
widget.model.setCurrentText("yeast-loc")
widget.per_channel.setChecked(True)
widget.channel_layers[0].setCurrentText("gfp")
widget.channel_layers[1].setCurrentText("rfp")
import time

worker = widget.predict_in_background()  # as the Predict button does: in a worker thread
deadline = time.monotonic() + 120
while widget.worker is not None and time.monotonic() < deadline:
    QApplication.processEvents()
    time.sleep(0.02)
layer = viewer.layers["gfp+rfp milcnn mask"]
layer.contour = 2  # outlines, as milzoo's overlays
print(f"labels: {layer.name}")

# the Adapt panel, as a user would: two rectangles around cells labelled vacuole, the whole field ER, Adapt
import numpy as np  # noqa: E402

shapes = viewer.add_shapes([np.array([[40, 40], [140, 140]]), np.array([[300, 320], [400, 420]])],
                           shape_type="rectangle", name="vacuole cells", edge_color="yellow", face_color="transparent")
panel = widget.adapt_panel
panel.cells.setCurrentText("vacuole cells")
panel.label.setCurrentText("vacuole")
panel.add(cells=True)
panel.label.setCurrentText("ER")
panel.add(cells=False)
panel.out.setText(sys.argv[3])
panel.adapt_in_background()
deadline = time.monotonic() + 120
while panel.worker is not None and time.monotonic() < deadline:
    QApplication.processEvents()
    time.sleep(0.02)
print(f"adapt: {panel.status.text()}")
viewer.layers.selection.active = viewer.layers["gfp"]
for _ in range(5):
    QApplication.processEvents()
viewer.screenshot(path=shot, canvas_only=False, flash=False)
viewer.close()
