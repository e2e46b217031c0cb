"""The dock widget: pick a model, pick the image (one layer with a channel axis, or one layer per channel),
predict, and get the mask as a Labels layer named by class plus the image's probabilities in a table; below it,
the Adapt panel (``_adapt``) fits the model to a few labelled fields or cells.

The model box starts on the first zoo model whose channels fit the chosen layer, until the user picks one; a
zoo model's channels are read from its bundled config, and any other model (a Hub repo, a folder) loads when
the choice is made (Enter, or leaving the box), not per keystroke. Predict runs in a worker thread
(``napari.qt.threading``) with a progress indicator, so the viewer stays responsive."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QRadioButton, QSpinBox,
                            QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from napari_milcnn._adapt import AdaptPanel
from napari_milcnn._background import Background
from napari_milcnn._layers import prediction_layers

AUTO_AXIS = -1  # the spin box value meaning "find the channel axis by its length"


class MilcnnWidget(QWidget):
    """``napari-milcnn``'s widget. ``predict()`` runs the chosen model on the chosen layer(s) and returns the
    Labels layer it added."""

    def __init__(self, napari_viewer):
        super().__init__()
        from milcnn.model.registry import zoo

        self.viewer = napari_viewer
        self._models: dict = {}
        self._zoo = zoo()
        self._zoo_infos = self._bundled_infos()  # read once: the default model follows every layer change
        self._zoo_channels = {name: info.channels for name, info in self._zoo_infos.items()}
        self._user_chose = False  # until the user picks a model, it follows the chosen layer's channels
        self._setting = False  # the widget itself is changing the model box
        self.model = QComboBox()
        self.model.setEditable(True)  # a zoo name, org/name[@revision] or a model folder
        self.model.addItems(sorted(self._zoo))
        self.model.setToolTip("a zoo model, a Hub repo org/name[@revision], or a model folder")
        self.layer = QComboBox()
        self.one_layer = QRadioButton("channels on an axis of this layer")
        self.per_channel = QRadioButton("one layer per channel")
        self.one_layer.setChecked(True)
        self.axis = QSpinBox()
        self.axis.setRange(AUTO_AXIS, 3)
        self.axis.setSpecialValueText("auto")
        self.axis.setValue(AUTO_AXIS)
        self.channel_layers: list[QComboBox] = []
        self.channels_box = QWidget()  # the per-channel layer pickers, shown in "one layer per channel" mode
        self.channels_form = QFormLayout(self.channels_box)
        self.run = QPushButton("Predict")
        self.run.clicked.connect(self.predict_in_background)
        self.called = QLabel("")
        self.called.setWordWrap(True)  # a long error wraps instead of being cut
        self.background = Background(self.run, self.called)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["class", "probability"])
        self.adapt_panel = AdaptPanel(self)

        form = QFormLayout()
        form.addRow("model", self.model)
        form.addRow("image layer", self.layer)
        mode = QHBoxLayout()
        mode.addWidget(self.one_layer)
        mode.addWidget(self.per_channel)
        form.addRow(mode)
        form.addRow("channel axis", self.axis)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.channels_box)
        layout.addWidget(self.run)
        layout.addWidget(self.called)
        layout.addWidget(self.table)
        layout.addWidget(self.adapt_panel)
        self.model.currentTextChanged.connect(self._model_text)
        self.model.lineEdit().editingFinished.connect(lambda: self._model_changed(self.model.currentText()))
        self.layer.currentTextChanged.connect(self._default_model)
        self.per_channel.toggled.connect(self.channels_box.setVisible)
        self.channels_box.setVisible(False)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self._default_model()
        self._model_changed(self.model.currentText())

    # ---------------------------------------------------------------- choices

    def _image_layers(self) -> list[str]:
        from napari.layers import Image

        return [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, *_) -> None:
        names = self._image_layers()
        for box in (self.layer, *self.channel_layers):
            current = box.currentText()
            box.clear()
            box.addItems(names)
            if current in names:
                box.setCurrentText(current)

    def _bundled_infos(self) -> dict:
        """Each bundled zoo model's config (channels, classes), no model loaded."""
        from milcnn.model.config import ModelInfo

        return {name: ModelInfo.from_file(entry.bundled_dir / "config.json")
                for name, entry in sorted(self._zoo.items()) if entry.bundled_dir is not None}

    def _fitting_model(self) -> str | None:
        """The first zoo model whose channel count the chosen layer has (2-D: one; 3-D: its first or last axis)."""
        name = self.layer.currentText()
        if not name or name not in self.viewer.layers:
            return None
        shape = np.shape(self.viewer.layers[name].data)
        counts = {1} if len(shape) == 2 else {shape[0], shape[-1]} if len(shape) == 3 else set()
        for model, channels in self._zoo_channels.items():
            if len(channels) in counts:
                return model
        return None

    def _default_model(self, *_) -> None:
        if self._user_chose:
            return
        model = self._fitting_model()
        if model is not None and model != self.model.currentText():
            self._show_model(model)

    def _model_text(self, name: str) -> None:
        """A zoo name chosen or typed: its channel pickers at once (from its bundled config, no model loaded);
        anything else waits for the choice to be made (``editingFinished``)."""
        if not self._setting:
            self._user_chose = True
        if name in self._zoo:
            self._model_changed(name)

    def _info_of(self, name: str):
        if name in self._zoo_infos:
            return self._zoo_infos[name]
        return self.classifier(name).info  # a Hub repo or a folder: loaded now, once

    def _model_changed(self, name: str) -> None:
        """One layer picker per channel of the model (for 'one layer per channel'), keeping the layer already
        picked for a channel of the same name (a model adapted from this one has the same channels)."""
        picked = {box.objectName(): box.currentText() for box in self.channel_layers}
        while self.channels_form.rowCount():
            self.channels_form.removeRow(0)
        self.channel_layers = []
        try:
            info = self._info_of(name)
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            self.called.setText(f"cannot load {name}: {' '.join(str(exc).split())[:300]}")
            return
        self.called.setText("")
        self.adapt_panel.set_model(info)
        for channel in info.channels:
            box = QComboBox()
            box.addItems(self._image_layers())
            box.setObjectName(channel)
            if picked.get(channel) in self._image_layers():
                box.setCurrentText(picked[channel])
            self.channels_form.addRow(f"{channel} layer", box)
            self.channel_layers.append(box)

    def use_model(self, name: str) -> None:
        """Choose ``name`` (e.g. a folder just adapted) as the model, as if the user had picked it."""
        if self.model.findText(name) < 0:
            self.model.addItem(name)
        self._user_chose = True
        self._show_model(name)

    def _show_model(self, name: str) -> None:
        """Put ``name`` in the model box (not counted as the user's choice) and follow it."""
        self._setting = True
        try:
            self.model.setCurrentText(name)
        finally:
            self._setting = False
        self._model_changed(name)

    def classifier(self, name: str | None = None):
        """The model, loaded once per name (``Classifier.from_hub``: zoo name, org/name[@revision] or folder)."""
        from milcnn import Classifier

        name = name or self.model.currentText()
        if name not in self._models:
            self._models[name] = Classifier.from_hub(name)
        return self._models[name]

    # ---------------------------------------------------------------- predicting

    def image(self) -> tuple[np.ndarray, str, int | None]:
        """(array, name, channel axis) of the chosen input."""
        if self.per_channel.isChecked():
            names = [box.currentText() for box in self.channel_layers]
            planes = [np.asarray(self.viewer.layers[n].data) for n in names]
            if len({p.shape for p in planes}) > 1:
                raise ValueError(f"the channel layers differ in shape: {', '.join(str(p.shape) for p in planes)}")
            return np.stack(planes), "+".join(names), 0
        name = self.layer.currentText()
        if not name:
            raise ValueError("no image layer: open an image first")
        axis = None if self.axis.value() == AUTO_AXIS else self.axis.value()
        return np.asarray(self.viewer.layers[name].data), name, axis

    def predict(self):
        """Run the model here (scripts, tests); add (or replace) ``<layer> milcnn mask`` and fill the table.
        Returns that layer, or None where the model or image cannot be used (said in the widget)."""
        try:
            clf = self.classifier()
            data, name, axis = self.image()
            pred = clf.predict(data, channel_axis=axis)
        except Exception as exc:  # noqa: BLE001 - shown in the widget, as one line
            self._failed(exc)
            return None
        return self._show((clf, name, pred))

    def predict_in_background(self):
        """Predict in a worker thread (the Predict button): the viewer stays responsive, napari shows progress,
        and the result is added when it is done. Returns the started worker (None when another is running)."""
        if self.worker is not None:
            return None
        try:
            clf = self.classifier()
            data, name, axis = self.image()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return None
        self.called.setText(f"predicting {name} with {clf.name} ...")
        return self.background.start(lambda: (clf, name, clf.predict(data, channel_axis=axis)),
                                     desc=f"milcnn: {clf.name}", returned=self._show)

    @property
    def worker(self):
        """The running prediction, if any."""
        return self.background.worker

    def _failed(self, exc: BaseException) -> None:
        self.background.failed(exc)

    def _show(self, result):
        """Add (or replace) the mask layer and fill the table from ``(classifier, layer name, Prediction)``."""
        clf, name, pred = result
        (mask, kwargs, _), = prediction_layers(pred, clf.classes, name=name, model=clf.name)
        if kwargs["name"] in self.viewer.layers:
            self.viewer.layers.remove(kwargs["name"])
        layer = self.viewer.add_labels(mask, **kwargs)
        qc = "" if pred.qc == "ok" else f", qc {pred.qc}"
        self.called.setText(f"{name}: {pred.label} (top {pred.top}, p={pred.probabilities[pred.top]:.2f}{qc}), "
                            f"{clf.name}")
        self.table.setRowCount(len(clf.classes))
        for row, (cls, p) in enumerate(sorted(pred.probabilities.items(), key=lambda kv: -kv[1])):
            self.table.setItem(row, 0, QTableWidgetItem(cls))
            self.table.setItem(row, 1, QTableWidgetItem(f"{p:.3f}"))
        self.table.resizeColumnsToContents()
        return layer
