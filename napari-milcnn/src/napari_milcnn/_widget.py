"""The dock widget: pick a model, pick the image (one layer with a channel axis, or one layer per channel),
predict, and get the mask as a Labels layer named by class plus the image's probabilities in a table."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QRadioButton, QSpinBox,
                            QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

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
        self.model = QComboBox()
        self.model.setEditable(True)  # a zoo name, org/name[@revision] or a model folder
        self.model.addItems(sorted(zoo()))
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
        self.channels_form = QFormLayout()
        self.run = QPushButton("Predict")
        self.run.clicked.connect(self.predict)
        self.called = QLabel("")
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["class", "probability"])

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
        layout.addLayout(self.channels_form)
        layout.addWidget(self.run)
        layout.addWidget(self.called)
        layout.addWidget(self.table)
        self.model.currentTextChanged.connect(self._model_changed)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
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

    def _model_changed(self, name: str) -> None:
        """One layer picker per channel of the model (for 'one layer per channel')."""
        while self.channels_form.rowCount():
            self.channels_form.removeRow(0)
        self.channel_layers = []
        try:
            clf = self.classifier(name)
        except Exception as exc:  # noqa: BLE001 - shown, not raised: the user is typing
            self.called.setText(f"cannot load {name}: {' '.join(str(exc).split())[:200]}")
            return
        self.called.setText("")
        for channel in clf.channels:
            box = QComboBox()
            box.addItems(self._image_layers())
            self.channels_form.addRow(f"{channel} layer", box)
            self.channel_layers.append(box)

    def classifier(self, name: str | None = None):
        """The model, loaded once per name (``Classifier.from_hub``: zoo name, Hub repo or folder)."""
        from milcnn import Classifier
        from milcnn.model.hub import parse_model_spec

        name = name or self.model.currentText()
        if name not in self._models:
            spec, revision = parse_model_spec(name)
            self._models[name] = Classifier.from_hub(spec, revision=revision)
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
        """Run the model; add (or replace) ``<layer> milcnn mask`` and fill the table. Returns that layer."""
        clf = self.classifier()
        try:
            data, name, axis = self.image()
            pred = clf.predict(data, channel_axis=axis)
        except ValueError as exc:
            self.called.setText(" ".join(str(exc).split()))
            return None
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
