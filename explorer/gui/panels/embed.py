"""The Map tab: a folder's images placed by their codes (PCA first, then t-SNE as it forms), as a
zoomable map of thumbnails framed in the colour of their class (the class sub-folder, else the
predicted class); Snap to grid lays them on a grid; a click on a thumbnail opens that image."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PIL import Image
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from explorer.core.topk.embed import Embedding, embed_steps, map_quality, snap_to_grid
from explorer.core.topk.patches import class_colour
from explorer.gui.workers import Task

THUMB = 48


def map_steps(loaded, folder: Path, fit: str):
    """Index (cache or scan), thumbnails, then the layouts; returns (index, labels, final Embedding, quality)."""
    from explorer.core.topk.index import TopKIndex, find_cached, index_path, weights_id  # noqa: PLC0415
    from explorer.core.topk.scan import CLASSIFIER_INPUT, classifier_input_layer, scan_steps  # noqa: PLC0415

    weights = weights_id(loaded.module)
    cached = find_cached(loaded.name, weights, folder, code_layer=f"{classifier_input_layer(loaded.module)} (input)",
                         fit=fit)
    if cached is not None:
        index = TopKIndex.load(cached)
    else:
        out = index_path(loaded.name, weights, folder, [], CLASSIFIER_INPUT, 9, fit, loaded.spec.size)
        index = yield from scan_steps(loaded, folder, [], out=out, fit=fit, weights=weights)
    by_folder = all(index.classes) and len(set(index.classes)) > 1
    labels = list(index.classes) if by_folder else [loaded.spec.label(p) for p in index.predictions]
    names = sorted(set(labels))
    thumbs = []
    for path, label in zip(index.paths, labels):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((THUMB - 4, THUMB - 4))
            arr = np.asarray(im)
        except (OSError, ValueError):
            arr = np.zeros((THUMB - 4, THUMB - 4, 3), np.uint8)
        framed = np.empty((THUMB, THUMB, 3), np.uint8)
        framed[:] = class_colour(names.index(label))
        framed[2:-2, 2:-2] = arr
        thumbs.append(framed)
    yield ("thumbs", index, labels, names, thumbs)
    final = yield from embed_steps(index.codes)
    return index, labels, final, map_quality(index.codes, final.coords, labels)


class EmbedPanel(QWidget):
    failed = Signal(object)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.folder: Path | None = None
        self.task: Task | None = None
        self.index = None
        self.items: list[pg.ImageItem] = []
        self.coords: np.ndarray | None = None
        self.embedding: Embedding | None = None
        self.quality: dict | None = None
        folder_button = QPushButton("Folder…")
        folder_button.clicked.connect(self.choose_folder)
        self.grid_box = QCheckBox("Snap to grid")
        self.grid_box.toggled.connect(lambda _on: self.place())
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("Map of codes: open a folder of images (File ▸ Open folder) or choose one here")
        self.status.setWordWrap(True)
        controls = QHBoxLayout()
        controls.addWidget(folder_button)
        controls.addWidget(self.grid_box)
        controls.addWidget(self.progress, 1)
        self.plot = pg.GraphicsLayoutWidget()
        self.plot.setBackground("w")
        self.view = self.plot.addViewBox(lockAspect=True, invertY=True)
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        self.plot.setMinimumHeight(420)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, 1)

    @property
    def busy(self) -> bool:
        return self.task is not None

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images")
        if folder:
            self.start(Path(folder))

    def ensure(self) -> None:
        files = getattr(self.window, "folder", None)
        folder = self.folder or (Path(files[0]).parent if files else None)
        if folder is not None and self.index is None and self.task is None:
            self.start(folder)

    def start(self, folder: Path) -> None:
        if self.window.loaded is None:
            return
        if self.task is not None:
            self.task.cancel()
        self.folder = folder
        task = Task(map_steps(self.window.loaded, folder, self.window.fit))
        task.signals.yielded.connect(self._yielded)
        task.signals.returned.connect(self._returned)
        task.signals.errored.connect(self.failed.emit)
        task.signals.done.connect(self._done)
        self.task = task
        self.progress.setVisible(True)
        self.status.setText(f"reading {folder}…")
        self.window.runner.start(task)

    def _current(self) -> bool:
        return self.sender() is not None and self.sender().task is self.task

    def _yielded(self, value) -> None:
        if not self._current():
            return
        if isinstance(value, tuple) and value and value[0] == "thumbs":
            _, self.index, labels, names, thumbs = value
            self.view.clear()
            self.items = []
            for arr in thumbs:
                item = pg.ImageItem(arr, axisOrder="row-major")
                self.view.addItem(item)
                self.items.append(item)
            legend = ", ".join(f"<span style='color: rgb{class_colour(i)}'>■</span> {n}" for i, n in enumerate(names))
            self.status.setText(f"{len(thumbs)} images; {legend}")
            self.legend = legend
        elif isinstance(value, Embedding):
            self.embedding = value
            self.progress.setMaximum(750)
            self.progress.setValue(value.iterations)
            self.place()
        else:  # scan progress
            self.progress.setMaximum(max(1, value.total))
            self.progress.setValue(value.done)
            self.status.setText(f"codes: {value.describe()}")

    def _returned(self, result) -> None:
        if not self._current():
            return
        self.index, _labels, self.embedding, self.quality = result
        self.place()
        q = self.quality
        self.status.setText(f"{len(self.index.paths)} images, {self.embedding.method}; trustworthiness "
                            f"{q['trustworthiness']:.3f}, 5-NN class agreement {q['knn_agreement']:.3f}; "
                            f"{getattr(self, 'legend', '')}")

    def _done(self) -> None:
        if self._current():
            self.task = None
            self.progress.setVisible(False)

    def place(self) -> None:
        if self.embedding is None or len(self.embedding.coords) != len(self.items):
            return
        coords = self.embedding.coords
        if self.grid_box.isChecked():
            coords = snap_to_grid(coords)
        c = np.asarray(coords, np.float64)
        lo, hi = c.min(0), c.max(0)
        side = math.sqrt(len(c))
        scale = side * THUMB * 1.2 / np.where(hi - lo > 0, hi - lo, 1.0).max()
        self.coords = (c - lo) * scale
        for item, (x, y) in zip(self.items, self.coords):
            item.setPos(float(x), float(y))
        self.view.autoRange()

    def _clicked(self, event) -> None:
        if self.coords is None or self.index is None:
            return
        p = self.view.mapSceneToView(event.scenePos())
        inside = np.where((self.coords[:, 0] <= p.x()) & (p.x() <= self.coords[:, 0] + THUMB)
                          & (self.coords[:, 1] <= p.y()) & (p.y() <= self.coords[:, 1] + THUMB))[0]
        if len(inside):
            self.open_point(int(inside[-1]))

    def open_point(self, i: int) -> None:
        self.window.open_image(self.index.paths[i])
