"""The widget's Adapt panel: label a few fields (the chosen image, whole) or cells (the rectangles of a Shapes
layer, the regions of a Labels layer, as crops of the chosen image) with the model's classes and press Adapt.
``milcnn.adapt`` fits the model to them in a worker thread (``napari.qt.threading``); the widget then predicts
with the adapted folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                            QPushButton, QVBoxLayout)

from napari_milcnn._background import Background

MARGIN = 8  # px of the image kept around a cell's outline in its crop


def cell_boxes(layer, shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of each cell the layer marks, within an image of ``shape`` (H, W), MARGIN px wider: a
    Shapes layer's selected shapes (every shape when none is selected), a Labels layer's regions (one per value)."""
    from napari.layers import Labels, Shapes

    if isinstance(layer, Shapes):
        chosen = sorted(layer.selected_data) or range(len(layer.data))
        corners = [(np.asarray(layer.data[i])[:, -2:].min(axis=0), np.asarray(layer.data[i])[:, -2:].max(axis=0))
                   for i in chosen]
    elif isinstance(layer, Labels):
        data = np.asarray(layer.data)
        data = data.reshape(data.shape[-2:]) if data.ndim > 2 and np.prod(data.shape[:-2]) == 1 else data
        if data.ndim != 2:
            raise ValueError(f"{layer.name}: cells are read from a 2-D Labels layer, not {data.ndim}-D")
        corners = []
        for value in np.unique(data[data > 0]):
            ys, xs = np.nonzero(data == value)
            corners.append((np.array([ys.min(), xs.min()]), np.array([ys.max() + 1, xs.max() + 1])))
    else:
        raise ValueError(f"{layer.name}: cells come from a Shapes or Labels layer")
    boxes = []
    for low, high in corners:
        y0, x0 = (int(max(np.floor(v) - MARGIN, 0)) for v in low)
        y1, x1 = (int(min(np.ceil(v) + MARGIN, n)) for v, n in zip(high, shape))
        if y1 > y0 and x1 > x0:
            boxes.append((y0, y1, x0, x1))
    if not boxes:
        raise ValueError(f"{layer.name}: no cell marked inside the image")
    return boxes


class AdaptPanel(QGroupBox):
    """Examples (the chosen image or its marked cells, each with a class), an output folder and the Adapt button.
    ``adapt()`` runs here (scripts, tests); ``adapt_in_background()`` is the button."""

    def __init__(self, widget):
        super().__init__("Adapt the model to your screen")
        self.widget = widget
        self.examples: list[tuple[np.ndarray, int | None, tuple | None, str, str]] = []  # data, axis, box, label, name
        self.label = QComboBox()  # the model's classes (``a|b`` may be typed)
        self.label.setEditable(True)
        self.cells = QComboBox()  # Shapes and Labels layers
        self.add_field = QPushButton("Add image")
        self.add_field.setToolTip("the chosen image, whole, as one example of the class")
        self.add_cells = QPushButton("Add cells")
        self.add_cells.setToolTip("each selected shape (or every shape, or each labelled region) of the cells layer "
                                  "as a crop of the chosen image, one example of the class each")
        self.listing = QListWidget()
        self.clear = QPushButton("Clear")
        self.out = QLineEdit()
        self.out.setToolTip("the adapted model folder (new or empty)")
        self.run = QPushButton("Adapt")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.background = Background(self.run, self.status)
        form = QFormLayout()
        form.addRow("class", self.label)
        form.addRow("cells layer", self.cells)
        buttons = QHBoxLayout()
        for button in (self.add_field, self.add_cells, self.clear):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.listing)
        out = QFormLayout()
        out.addRow("save to", self.out)
        layout.addLayout(out)
        layout.addWidget(self.run)
        layout.addWidget(self.status)
        self.add_field.clicked.connect(lambda: self.add(cells=False))
        self.add_cells.clicked.connect(lambda: self.add(cells=True))
        self.clear.clicked.connect(self._clear)
        self.run.clicked.connect(self.adapt_in_background)
        for event in (widget.viewer.layers.events.inserted, widget.viewer.layers.events.removed):
            event.connect(self.refresh_layers)
        self.refresh_layers()

    def refresh_layers(self, *_) -> None:
        from napari.layers import Labels, Shapes

        current = self.cells.currentText()
        self.cells.clear()
        self.cells.addItems([layer.name for layer in self.widget.viewer.layers
                             if isinstance(layer, (Shapes, Labels)) and not layer.name.endswith("milcnn mask")])
        if current:
            self.cells.setCurrentText(current)

    def set_model(self, info) -> None:
        """The chosen model's classes (``info``: its ``ModelInfo``); the output folder follows the model until the
        user writes one: ``<model>-adapted`` (for an adapted model, the one it was adapted from), numbered when
        it exists."""
        classes = info.classes
        label = self.label.currentText()
        self.label.clear()
        self.label.addItems(list(classes))
        if label in classes:
            self.label.setCurrentText(label)
        if not self.out.isModified():
            source = ((info.training or {}).get("adapted_from") or {}).get("name", info.name)
            base = Path.cwd() / f"{source}-adapted"
            out, i = base, 1
            while out.exists():
                i += 1
                out = base.with_name(f"{base.name}-{i}")
            self.out.setText(str(out))

    def add(self, *, cells: bool) -> int:
        """Add the chosen image (or its marked cells) as examples of the chosen class; returns how many were added
        (0 where the input cannot be used, said in the panel)."""
        from milcnn.io.readers import as_input

        try:
            data, name, axis = self.widget.image()
            label = self.label.currentText().strip()
            if not label:
                raise ValueError("choose a class first")
            if cells:
                layer = self.widget.viewer.layers[self.cells.currentText()] if self.cells.currentText() else None
                if layer is None:
                    raise ValueError("no cells layer: draw rectangles in a Shapes layer, or paint a Labels layer")
                clf = self.widget.classifier()
                shape = np.shape(as_input(data, channel_axis=axis).read(clf.channels).chw)[1:]
                new = [(data, axis, box, label, f"{name} cell {i + 1}")
                       for i, box in enumerate(cell_boxes(layer, shape))]
            else:
                new = [(data, axis, None, label, name)]
        except Exception as exc:  # noqa: BLE001 - shown in the panel, as one line
            return self._failed(exc) or 0
        self.examples += new
        for *_, lab, shown in new:
            self.listing.addItem(f"{shown}: {lab}")
        self.status.setText(f"{len(self.examples)} examples of {len({e[3] for e in self.examples})} classes")
        return len(new)

    def _clear(self) -> None:
        self.examples = []
        self.listing.clear()
        self.status.setText("")

    def _work(self, model: str, out: str):
        """The adaptation itself (any thread): the crops read in the model's channel order, then ``milcnn.adapt``."""
        from milcnn import adapt
        from milcnn.io.readers import as_input

        clf = self.widget.classifier(model)
        items = []
        for data, axis, box, label, shown in self.examples:
            chw = np.asarray(as_input(data, channel_axis=axis).read(clf.channels).chw)
            if box is not None:
                chw = chw[:, box[0]:box[1], box[2]:box[3]]
            items.append((np.ascontiguousarray(chw), label, shown))
        return adapt(clf.folder, items, out, name=f"{clf.name}-adapted", channel_axis=0)

    def adapt(self):
        """Adapt here (scripts, tests); the model box then holds the adapted folder. Returns it (None: said)."""
        try:
            folder = self._work(self.widget.model.currentText(), self.out.text().strip())
        except Exception as exc:  # noqa: BLE001
            return self._failed(exc)
        return self._adapted(folder)

    def adapt_in_background(self):
        """The Adapt button: in a worker thread with napari's progress; returns the worker (None: one is running)."""
        if self.worker is not None:
            return None
        model, out = self.widget.model.currentText(), self.out.text().strip()
        self.status.setText(f"adapting {model} on {len(self.examples)} examples ...")
        return self.background.start(self._work, model, out, desc=f"milcnn: adapting {model}", returned=self._adapted)

    @property
    def worker(self):
        """The running adaptation, if any."""
        return self.background.worker

    def _failed(self, exc: BaseException) -> None:
        self.background.failed(exc)

    def _adapted(self, folder):
        folder = str(folder)
        self.widget.use_model(folder)
        self.status.setText(f"adapted: {folder} (Predict now uses it; milzoo predict --model {folder} too)")
        self.out.setModified(False)
        return Path(folder)
