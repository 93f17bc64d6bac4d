"""The Top images tab: the selected unit's top-9 patches in a folder of the user's images, with their values.

It follows the window's layer and unit (a click on a unit in the Activations tab, or the layer table
beside it). The folder is the one opened in the window (or chosen here); its index is read from the
cache, or made by one scan (progress and time left shown; Cancel keeps what was done and the next scan
resumes). ``D`` switches the patches between the image, its guided-backprop view and its deconvnet view
(as the Deep Visualization Toolbox did); a click on a patch opens its image in the explorer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                               QToolButton, QVBoxLayout, QWidget)

from explorer.core.topk.patches import VIEWS, patch
from explorer.gui import keys
from explorer.gui.workers import Task

TILE = 120


def array_pixmap(arr: np.ndarray, size: int) -> QPixmap:
    arr = np.ascontiguousarray(arr)
    img = QImage(arr.data, arr.shape[1], arr.shape[0], arr.shape[1] * 3, QImage.Format_RGB888).copy()
    return QPixmap.fromImage(img).scaled(size, size, Qt.KeepAspectRatio, Qt.FastTransformation)


def find_or_scan_steps(loaded, folder: Path, layer: str, fit: str):
    """The index holding ``layer`` for ``folder``: from the cache, else one scan (resumed when one was cut)."""
    from explorer.core.topk.index import TopKIndex, find_cached, index_path, weights_id  # noqa: PLC0415
    from explorer.core.topk.scan import CLASSIFIER_INPUT, scan_steps  # noqa: PLC0415

    weights = weights_id(loaded.module)
    cached = find_cached(loaded.name, weights, folder, layer, fit=fit)
    if cached is not None:
        return TopKIndex.load(cached)
    out = index_path(loaded.name, weights, folder, [layer], CLASSIFIER_INPUT, 9, fit, loaded.spec.size)
    return (yield from scan_steps(loaded, folder, [layer], k=9, out=out, fit=fit, weights=weights))


def compute_patches(loaded, index, layer: str, unit: int, view: str, fit: str) -> list[tuple[dict, np.ndarray | None]]:
    out = []
    for entry in index.layer(layer).top(unit, index):
        try:
            out.append((entry, patch(entry, loaded, layer, unit, view, fit)))
        except Exception:  # noqa: BLE001 - a file gone since the scan: the tile says so
            out.append((entry, None))
    return out


class TopKPanel(QWidget):
    failed = Signal(object)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.index = None
        self.folder: Path | None = None
        self.view_mode = "image"
        self.scan_task: Task | None = None
        self.patch_task: Task | None = None
        self.entries: list[dict] = []

        self.title = QLabel("Top images: open a folder of images (File ▸ Open folder) or choose one here")
        self.title.setWordWrap(True)
        folder_button = QPushButton("Folder…")
        folder_button.clicked.connect(self.choose_folder)
        self.scan_button = QPushButton("Scan")
        self.scan_button.clicked.connect(self.scan)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.view_combo = QComboBox()
        self.view_combo.addItems(VIEWS)
        self.view_combo.setToolTip("D: image / guided backprop / deconvnet")
        self.view_combo.currentTextChanged.connect(self.set_view_mode)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        controls = QHBoxLayout()
        for w in (folder_button, self.scan_button, self.cancel_button, QLabel("View:"), self.view_combo):
            controls.addWidget(w)
        controls.addWidget(self.progress, 1)
        grid = QGridLayout()
        self.tiles: list[QToolButton] = []
        for i in range(9):
            b = QToolButton()
            b.setToolButtonStyle(Qt.ToolButtonTextUnderIcon)
            b.setIconSize(QSize(TILE, TILE))
            b.setFixedSize(TILE + 16, TILE + 34)
            b.clicked.connect(lambda _=False, i=i: self.open_entry(i))
            grid.addWidget(b, i // 3, i % 3)
            self.tiles.append(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(controls)
        layout.addWidget(self.status)
        layout.addLayout(grid)
        layout.addStretch(1)
        QShortcut(QKeySequence(keys.sequence("topk_view")), self, self.cycle_view,
                  context=Qt.WidgetWithChildrenShortcut)

    @property
    def busy(self) -> bool:
        return self.scan_task is not None or self.patch_task is not None

    # -- folder and scan -------------------------------------------------------------------------
    def window_folder(self) -> Path | None:
        files = getattr(self.window, "folder", None)
        return Path(files[0]).parent if files else None

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images")
        if folder:
            self.set_folder(Path(folder))

    def set_folder(self, folder: Path) -> None:
        if folder != self.folder:
            self.folder, self.index = folder, None
        self.scan()

    def ensure(self) -> None:
        """Shown: use the window's folder, and scan (or read the cache) if the layer is not indexed."""
        folder = self.folder or self.window_folder()
        if folder is None or self.window.loaded is None or self.window.layer is None:
            return
        self.folder = folder
        if self.index is None or self.window.layer not in self.index.layers:
            self.scan()
        else:
            self.refresh()

    def scan(self) -> None:
        loaded, layer = self.window.loaded, self.window.layer
        if self.folder is None:
            self.folder = self.window_folder()
        if loaded is None or layer is None or self.folder is None or self.scan_task is not None:
            return
        task = Task(find_or_scan_steps(loaded, self.folder, layer, self.window.fit))
        task.signals.yielded.connect(self._progress)
        task.signals.returned.connect(self._scanned)
        task.signals.errored.connect(self.failed.emit)
        task.signals.done.connect(self._scan_done)
        self.scan_task = task
        self.progress.setVisible(True)
        self.progress.setValue(0)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"scanning {self.folder} for {layer}…")
        self.window.runner.start(task)

    def cancel(self) -> None:
        if self.scan_task is not None:
            self.scan_task.cancel()

    def _progress(self, p) -> None:
        self.progress.setMaximum(max(1, p.total))
        self.progress.setValue(p.done)
        self.status.setText(p.note if p.note.startswith("skipped") else f"scanning: {p.describe()}")

    def _scanned(self, index) -> None:
        self.index = index
        skipped = f"; {len(index.skipped)} unreadable skipped ({', '.join(Path(s['path']).name for s in index.skipped[:3])})" \
            if index.skipped else ""
        self.status.setText(f"{len(index.paths)} images of {self.folder}{skipped}")
        self.refresh()

    def _scan_done(self) -> None:
        if self.sender() is not None and self.scan_task is not None and self.sender().task is not self.scan_task:
            return
        self.scan_task = None
        self.progress.setVisible(False)
        self.cancel_button.setEnabled(False)
        if self.index is None:
            self.status.setText("scan cancelled; Scan resumes it")

    # -- patches ---------------------------------------------------------------------------------
    def set_view_mode(self, mode: str) -> None:
        self.view_mode = mode
        self.refresh()

    def cycle_view(self) -> None:
        self.view_combo.setCurrentIndex((self.view_combo.currentIndex() + 1) % len(VIEWS))

    def refresh(self) -> None:
        loaded, layer, unit = self.window.loaded, self.window.layer, self.window.unit
        if self.index is None or loaded is None or layer not in self.index.layers:
            return
        if unit >= self.index.layer(layer).units:
            return
        self.title.setText(f"<b>{layer} unit {unit}</b>: its top {self.index.meta['k']} images of {self.folder} "
                           f"({self.view_mode})")
        if self.patch_task is not None:
            self.patch_task.cancel()
        task = Task(compute_patches, loaded, self.index, layer, unit, self.view_mode, self.window.fit)
        task.signals.returned.connect(self._show_patches)
        task.signals.errored.connect(self.failed.emit)
        task.signals.done.connect(self._patch_done)
        self.patch_task = task
        self.window.runner.start(task)

    def _patch_done(self) -> None:
        if self.sender().task is self.patch_task:
            self.patch_task = None

    def _show_patches(self, patches) -> None:
        if self.sender().task is not self.patch_task:
            return
        self.entries = [e for e, _ in patches]
        for i, tile in enumerate(self.tiles):
            if i < len(patches):
                entry, arr = patches[i]
                tile.setIcon(QIcon(array_pixmap(arr, TILE)) if arr is not None else QIcon())
                tile.setText(f"{entry['value']:.3g}  {Path(entry['path']).name}")
                tile.setToolTip(f"{entry['path']}\nvalue {entry['value']:.4g} at (y {entry['y']}, x {entry['x']}), "
                                f"box {entry['box']}")
                tile.setEnabled(True)
            else:
                tile.setIcon(QIcon())
                tile.setText("")
                tile.setEnabled(False)

    def open_entry(self, i: int) -> None:
        if i < len(self.entries):
            self.window.open_image(self.entries[i]["path"])

