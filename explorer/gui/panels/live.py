"""The live panel: a camera, video or image folder feeding the model while every channel of a layer reacts.

Inference runs on :class:`~explorer.core.live.LiveRunner`'s overlapped worker threads (prepare, forward,
tile); this widget only moves frames in and finished arrays out. Latest frame wins at both ends: the
runner keeps one waiting frame, and the panel keeps one waiting result, so neither the model nor the
screen ever works through a backlog.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QFileDialog, QGraphicsRectItem, QLabel,
                               QPushButton, QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from explorer.core.errors import ExplorerError
from explorer.core.live import FrameSlot, LiveFrame, LivePipeline, LiveResult, LiveRunner, LiveStats, format_stats
from explorer.core.colormaps import lookup_table
from explorer.core.models import LoadedModel
from explorer.gui import keys
from explorer.gui.widgets.flow_layout import FlowBar
from explorer.sources import (CameraSource, FolderSource, FrameSource, SourceError, VideoFileSource,
                              camera_resolutions, list_cameras)
from explorer.sources.video import VIDEO_SUFFIXES

GRID_LUT = lookup_table("inferno", alpha=True)
LIVE_INPUT_TITLE = "Still image, not the live frame"
STATS_INTERVAL = 0.25  # seconds between two `stats` signals


class _PaintTimedImageItem(pg.ImageItem):
    """An ImageItem that reports when it has actually been painted (the "pixels shown" moment)."""

    def __init__(self, on_painted, **kwargs) -> None:
        super().__init__(**kwargs)
        self._on_painted = on_painted

    def paint(self, painter, *args) -> None:
        super().paint(painter, *args)
        self._on_painted()


class _WorkerRelay(QObject):
    """Carries the worker thread's news to the GUI thread (queued signals)."""

    result_ready = Signal()
    failed = Signal(str)


class LivePanel(QWidget):
    """Live source → activation grid of one layer.

    Signals
    -------
    stats(dict) : a few times a second: ``fps``, ``preprocess_ms``, ``forward_ms``, ``tile_ms``,
        ``display_ms``, ``latency_ms`` (frame arrival → pixels shown), ``dropped``, ``shown`` and ``text``
        (one status-bar line).
    frame_shown(LiveResult) : a frame and its grid were painted.
    source_error(str) : the source stopped with this message; the panel stays usable.
    """

    stats = Signal(dict)
    frame_shown = Signal(object)
    source_error = Signal(str)
    unit_clicked = Signal(int)  # a click on a tile of the grid (the window selects that unit everywhere)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.loaded: LoadedModel | None = None
        self.pipeline: LivePipeline | None = None
        self.runner: LiveRunner | None = None
        self.source: FrameSource | None = None
        self.layer: str | None = None
        self.unit: int | None = None
        self.frozen = False
        self.live_stats = LiveStats()
        self.shown_result: LiveResult | None = None  # the frame and grid on screen now
        self._shown_since_source = 0  # results shown since the source started (see busy)
        self._step_pending = False
        self._hidden = False  # in a tab that is not shown: the source runs, the model rests
        self._results = FrameSlot()
        self._results_dropped = 0
        self._dropped_base = 0
        self._awaiting_paint: LiveResult | None = None
        self._result_received_at = 0.0
        self._last_stats_emit = 0.0
        self._grid_shape: tuple[int, ...] = ()
        self._frame_shape: tuple[int, ...] = ()
        self._unit_shape: tuple[int, ...] = ()
        self._relay = _WorkerRelay(self)
        self._relay.result_ready.connect(self._on_result_ready, Qt.ConnectionType.QueuedConnection)
        self._relay.failed.connect(self._show_message, Qt.ConnectionType.QueuedConnection)
        self._build()
        app = QApplication.instance()
        if app is not None:  # a window closed without closing this panel still stops its thread
            app.aboutToQuit.connect(self.shutdown)

    # ---- layout -------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.camera_box = QComboBox()
        self.camera_box.setToolTip("Cameras found on this computer")
        self.resolution_box = QComboBox()
        self.resolution_box.setToolTip("Camera resolution")
        self.camera_button = QPushButton("Start camera")
        self.video_button = QPushButton("Open video…")
        self.folder_button = QPushButton("Open folder…")
        self.freeze_button = QToolButton(text="Freeze", checkable=True)
        self.freeze_button.setToolTip("Freeze / unfreeze the current frame (Space)")
        self.step_button = QToolButton(text="Step")
        self.step_button.setToolTip("Show the next frame and stay frozen (.)")
        self.mirror_box = QCheckBox("Mirror")
        self.mirror_box.setToolTip("Flip the picture left to right (M)")
        # the controls wrap onto a second row in a narrow pane (1024x640) instead of being cut off
        self.controls = bar = FlowBar()
        for w in (self.camera_box, self.resolution_box, self.camera_button, self.video_button, self.folder_button,
                  self.freeze_button, self.step_button, self.mirror_box):
            bar.addWidget(w)

        self.view = pg.GraphicsLayoutWidget()
        # The input above the selected unit on the left, the layer's grid large on the right.
        self.frame_title = self.view.addLabel("input", row=0, col=0)
        self.frame_box = self.view.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.unit_title = self.view.addLabel("unit", row=2, col=0)
        self.unit_box = self.view.addViewBox(row=3, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.grid_title = self.view.addLabel("layer", row=0, col=1)
        self.grid_box = self.view.addViewBox(row=1, col=1, rowspan=3, lockAspect=True, invertY=True,
                                             enableMenu=False)
        # what the grid's colours stand for: the layer's activations in this frame, its minimum to its maximum
        self.colorbar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.ColorMap(np.linspace(0, 1, 256),
                                                                                 lookup_table("inferno")),
                                        interactive=False, width=10, orientation="horizontal",
                                        label="layer activation in this frame")
        # under the grid: a narrow pane (1024x640) keeps its width for the tiles
        self.view.addItem(self.colorbar, row=4, col=1)
        self.colorbar.setToolTip("Colour of the layer's grid: its activations in this frame, "
                                 "from the layer's minimum (black) to its maximum (yellow)")
        self._colorbar_shown_at = 0.0
        grid_layout = self.view.ci.layout
        grid_layout.setColumnStretchFactor(0, 2)
        grid_layout.setColumnStretchFactor(1, 3)
        for row, stretch in ((0, 0), (1, 3), (2, 0), (3, 2), (4, 0)):
            grid_layout.setRowStretchFactor(row, stretch)
        for title in (self.frame_title, self.unit_title, self.grid_title):
            title.setMaximumHeight(24)
        for box in (self.frame_box, self.grid_box, self.unit_box):
            box.disableAutoRange()
            box.setMouseEnabled(False, False)
        self.frame_item = pg.ImageItem(axisOrder="row-major")
        self.grid_item = _PaintTimedImageItem(self._on_grid_painted, axisOrder="row-major")
        self.grid_item.setLookupTable(GRID_LUT)
        self.unit_item = pg.ImageItem(axisOrder="row-major")
        self.unit_item.setLookupTable(GRID_LUT)
        self.frame_box.addItem(self.frame_item)
        self.grid_box.addItem(self.grid_item)
        self.unit_box.addItem(self.unit_item)
        self.unit_outline = QGraphicsRectItem()
        self.unit_outline.setPen(pg.mkPen("c", width=0))
        self.unit_outline.setVisible(False)
        self.grid_box.addItem(self.unit_outline)
        self.grid_layout = None  # the tiling of the grid on screen (which tile is which unit)
        self.grid_box.sigResized.connect(self._on_grid_box_resized)  # the grid's columns fill its pane
        self.view.scene().sigMouseClicked.connect(self._on_view_clicked)
        self.view.setToolTip("Click a tile of the layer's grid to select that unit")

        self.caption = QLabel("Choose a camera, open a video or an image folder.")
        self.message = QLabel()
        self.message.setStyleSheet("color: #c0392b")
        self.message.setWordWrap(True)
        # no height-for-width upwards (the tab's scroll area would give the panel its preferred height and
        # scroll): the label's height follows its text in _show_message instead
        policy = self.message.sizePolicy()
        policy.setHeightForWidth(False)
        self.message.setSizePolicy(policy)
        self.stats_label = QLabel()
        for label in (self.caption, self.stats_label):
            # one line each that a narrow pane cuts short rather than a panel made wider than its tab
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label.setMinimumWidth(0)
        layout = QVBoxLayout(self)
        layout.addWidget(self.controls)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.caption)
        layout.addWidget(self.message)
        layout.addWidget(self.stats_label)

        self.camera_button.clicked.connect(lambda: self.open_camera(self._chosen_camera(), self._chosen_resolution()))
        self.camera_box.currentIndexChanged.connect(self._fill_resolutions)
        self.video_button.clicked.connect(self._ask_video)
        self.folder_button.clicked.connect(self._ask_folder)
        self.freeze_button.toggled.connect(self.freeze)
        self.step_button.clicked.connect(self.step)
        self.mirror_box.toggled.connect(self.set_mirror)
        for name, slot in (("live_freeze", self.toggle_freeze), ("live_step", self.step),
                           ("live_mirror", self.mirror_box.toggle)):
            shortcut = QShortcut(QKeySequence(keys.sequence(name)), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        self.refresh_cameras()

    def refresh_cameras(self) -> None:
        """List the cameras present now in the chooser."""
        self.camera_box.blockSignals(True)
        self.camera_box.clear()
        names = list_cameras()
        self.camera_box.addItems(names or ["(no camera)"])
        self.camera_box.setEnabled(bool(names))
        self.camera_button.setEnabled(bool(names))
        self.camera_box.blockSignals(False)
        self._fill_resolutions()

    def _fill_resolutions(self) -> None:
        self.resolution_box.clear()
        if not self.camera_box.isEnabled():
            self.resolution_box.setEnabled(False)
            return
        try:
            sizes = camera_resolutions(self.camera_box.currentIndex())
        except SourceError:
            sizes = []
        self.resolution_box.addItems([f"{w}x{h}" for w, h in sizes] or ["default"])
        self.resolution_box.setEnabled(bool(sizes))

    def _chosen_camera(self) -> int | None:
        return self.camera_box.currentIndex() if self.camera_box.isEnabled() else None

    def _chosen_resolution(self) -> tuple[int, int] | None:
        text = self.resolution_box.currentText()
        if "x" not in text:
            return None
        w, h = text.split("x")
        return int(w), int(h)

    def _ask_video(self) -> None:
        patterns = " ".join(f"*{s}" for s in sorted(VIDEO_SUFFIXES))
        path, _ = QFileDialog.getOpenFileName(self, "Open video", "", f"Videos ({patterns});;All files (*)")
        if path:
            self.open_video(path)

    def _ask_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open image folder")
        if path:
            self.open_folder(path)

    # ---- model, layer, unit -------------------------------------------------------------------------
    def set_model(self, loaded: LoadedModel, layer: str | None = None, half: bool = False,
                  channels_last: bool = False, fit: str = "crop", forward_threads: int | None = None,
                  helper_threads: int = 1, serial: bool = False) -> None:
        """Show ``loaded`` at ``layer`` (else the layer shown so far if the model has it, else its first
        convolution). ``half`` and ``channels_last`` speed up CUDA and are ignored elsewhere; ``fit`` is how
        frames reach the input size (crop, stretch, letterbox); ``forward_threads`` and ``helper_threads``
        are the torch thread counts of the runner's stages (:class:`~explorer.core.live.LiveRunner`);
        ``serial`` runs the stages one after the other on one thread (for ``bench live --serial``)."""
        self._stop_runner()
        self.loaded = loaded
        keep = layer or self.layer
        try:
            self.pipeline = LivePipeline(loaded, layer=keep if keep in dict(loaded.module.named_modules()) else None,
                                         unit=self.unit, half=half, channels_last=channels_last, fit=fit)
        except ExplorerError as exc:
            self.pipeline = None
            self._show_message(str(exc))
            return
        self.layer = self.pipeline.layer
        self.pipeline.set_grid_aspect(self.grid_pane_aspect())
        self._dropped_base = 0
        self.runner = LiveRunner(self.pipeline, self._on_worker_result, self._relay.failed.emit,
                                 forward_threads=forward_threads, helper_threads=helper_threads, serial=serial)
        self._rerun_frozen()

    def set_layer(self, name: str) -> None:
        """Show ``name``'s channels from the next frame on (at once when frozen)."""
        if self.pipeline is not None:
            try:
                self.pipeline.set_layer(name)
            except ExplorerError as exc:
                self._show_message(str(exc))
                return
        self.layer = name
        self._rerun_frozen()

    def set_unit(self, unit: int | None) -> None:
        """Select channel ``unit`` (outlined in the grid, enlarged on the right) from the next frame on."""
        self.unit = unit
        if self.pipeline is not None:
            self.pipeline.set_unit(unit)
        self._rerun_frozen()

    def grid_pane_aspect(self) -> float | None:
        """Width / height of the box the grid is drawn in (None before it has a size)."""
        rect = self.grid_box.sceneBoundingRect()
        return rect.width() / rect.height() if rect.width() >= 8 and rect.height() >= 8 else None

    def _on_grid_box_resized(self, *_args) -> None:
        aspect = self.grid_pane_aspect()
        if aspect is None or self.pipeline is None:
            return
        old = self.pipeline.grid_aspect
        self.pipeline.set_grid_aspect(aspect)
        if old is None or abs(aspect - old) > 0.12 * max(aspect, old):
            self._rerun_frozen()  # a frozen frame is laid out again; a running one is on the next frame

    # ---- sources ------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A source plays into a model, and nothing has been shown yet: the window's screenshot mode and
        tests wait for the first grid (the first pass of a layer also traces its graph, about 0.3 s)."""
        return (self.source is not None and self.source.running and self.runner is not None
                and not self.frozen and not self._hidden and self._shown_since_source == 0)

    def set_source(self, source: FrameSource) -> bool:
        """Stop the current source and start ``source``; False (and a message) when it cannot start."""
        self.stop_source()
        source.setParent(self)
        source.mirror = self.mirror_box.isChecked() if not isinstance(source, CameraSource) else source.mirror
        self.mirror_box.blockSignals(True)
        self.mirror_box.setChecked(source.mirror)
        self.mirror_box.blockSignals(False)
        source.frame.connect(self._on_source_frame)
        source.error.connect(self._on_source_error)
        try:
            source.start()
        except SourceError as exc:
            source.deleteLater()
            self._on_source_error(str(exc))
            return False
        self.source = source
        self._shown_since_source = 0
        self.live_stats = LiveStats()
        self._results_dropped = 0
        self._dropped_base = self.runner.dropped if self.runner is not None else 0
        self._show_message("")
        self.caption.setText(f"Source: {source.name}")
        return True

    def open_video(self, path: str | Path, rate: float = 1.0) -> bool:
        return self.set_source(VideoFileSource(path, rate=rate))

    def open_folder(self, path: str | Path, interval: float = 1.0) -> bool:
        return self.set_source(FolderSource(path, interval=interval))

    def open_camera(self, choice: str | int | None = None, resolution: tuple[int, int] | None = None) -> bool:
        return self.set_source(CameraSource(choice, resolution))

    def stop_source(self) -> None:
        if self.source is not None:
            self.source.frame.disconnect(self._on_source_frame)
            self.source.error.disconnect(self._on_source_error)
            self.source.stop()
            self.source.deleteLater()
            self.source = None

    def _on_source_error(self, message: str) -> None:
        self.stop_source()
        self._show_message(message)
        self.source_error.emit(message)

    def _show_message(self, message: str) -> None:
        self.message.setText(message)
        self.message.setMinimumHeight(self.message.heightForWidth(max(200, self.message.width())) if message else 0)

    # ---- freeze, step, mirror -----------------------------------------------------------------------
    def freeze(self, frozen: bool = True) -> None:
        """Hold the frame on screen; layer and unit changes still apply to it."""
        self.frozen = bool(frozen)
        self._step_pending = False
        if self.freeze_button.isChecked() != self.frozen:
            self.freeze_button.setChecked(self.frozen)
        if self.frozen and self.shown_result is not None:
            self._show_grid_levels(self.shown_result.grid_levels, force=True)  # the scale of the frame held

    def toggle_freeze(self) -> None:
        self.freeze(not self.frozen)

    def step(self) -> None:
        """Freeze, and let exactly one new frame through."""
        if not self.frozen:
            self.freeze(True)
        self._step_pending = True

    def set_mirror(self, on: bool) -> None:
        if self.source is not None:
            self.source.mirror = bool(on)

    # ---- the frame's way through --------------------------------------------------------------------
    def _on_source_frame(self, frame: LiveFrame) -> None:
        if (self.frozen and not self._step_pending) or self._hidden:
            return
        self._step_pending = False
        if self.runner is None:
            self._show_frame(frame.image)
            return
        self.runner.submit(frame)

    def _rerun_frozen(self) -> None:
        if self.frozen and self.shown_result is not None and self.runner is not None:
            old = self.shown_result.frame
            self.runner.submit(LiveFrame(old.image, time.perf_counter(), old.index))

    def _on_worker_result(self, result: LiveResult) -> None:
        # Worker thread: leave the result and wake the GUI thread only when the slot was empty.
        if self._results.put(result):
            self._results_dropped += 1
        else:
            self._relay.result_ready.emit()

    def _on_result_ready(self) -> None:
        result = self._results.take_nowait()
        if result is None:
            return
        self._result_received_at = time.perf_counter()
        self._show_frame(result.frame.image)
        grid = result.grid
        self.grid_item.setImage(grid, autoLevels=False, levels=(0, 255))
        self._show_grid_levels(result.grid_levels, force=self.frozen)
        self.grid_layout = result.layout
        if grid.shape != self._grid_shape:
            self._grid_shape = grid.shape
            self.grid_box.setRange(QRectF(0, 0, grid.shape[1], grid.shape[0]), padding=0.02)
        self._show_unit(result)
        label = self.loaded.spec.label(result.top_class) if self.loaded and result.top_class is not None else ""
        untrained = " (untrained model)" if self.loaded is not None and not self.loaded.trained else ""
        self.grid_title.setText(f"{result.layer} · {result.layout.count} channels")
        self.frame_title.setText(f"{self.source.name if self.source else 'input'} · frame {result.frame.index}"
                                 + (" · frozen" if self.frozen else ""))
        self.caption.setText(f"top class: {label}{untrained}" if label else "")
        self._awaiting_paint = result
        if not self.grid_item.isVisible() or not self.view.isVisible():
            self._on_grid_painted()

    def _show_grid_levels(self, levels: tuple[float, float], force: bool = False) -> None:
        # While playing, the scale's labels change at most every STATS_INTERVAL (not 30 times a second), or
        # at once when the range changed by half (another layer); a frozen frame gets its own at once.
        lo, hi = levels[0], levels[1] if levels[1] > levels[0] else levels[0] + 1e-6
        old_lo, old_hi = self.colorbar.levels()
        now = time.perf_counter()
        if (force or abs(lo - old_lo) + abs(hi - old_hi) > 0.5 * max(old_hi - old_lo, 1e-12)
                or now - self._colorbar_shown_at >= STATS_INTERVAL):
            self.colorbar.setLevels((lo, hi))
            self._colorbar_shown_at = now

    def _show_frame(self, image: np.ndarray) -> None:
        self.frame_item.setImage(image, autoLevels=False, levels=(0, 255))
        if image.shape != self._frame_shape:
            self._frame_shape = image.shape
            self.frame_box.setRange(QRectF(0, 0, image.shape[1], image.shape[0]), padding=0.02)

    def _show_unit(self, result: LiveResult) -> None:
        if result.unit_map is None or result.unit is None:
            self.unit_outline.setVisible(False)
            self.unit_item.clear()
            self.unit_title.setText("no unit selected")
            return
        layout = result.layout
        top, left = layout.tile_origin(result.unit)
        pad = layout.pad / 2
        self.unit_outline.setRect(QRectF(left - pad, top - pad, layout.tile_w + 2 * pad, layout.tile_h + 2 * pad))
        self.unit_outline.setVisible(True)
        self.unit_title.setText(f"unit {result.unit}")
        self.unit_item.setImage(result.unit_map, autoLevels=False, levels=result.unit_levels)
        if result.unit_map.shape != self._unit_shape:
            self._unit_shape = result.unit_map.shape
            self.unit_box.setRange(QRectF(0, 0, result.unit_map.shape[1], result.unit_map.shape[0]), padding=0.02)

    def _on_view_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self.grid_item.image is None:
            return
        pos = self.grid_item.mapFromScene(event.scenePos())
        self.click_grid(pos.y(), pos.x())

    def click_grid(self, row: float, col: float) -> None:
        """A click on grid pixel (row, col): the tile's unit is selected (as a click in Activations)."""
        if self.grid_layout is None:
            return
        unit = self.grid_layout.unit_at(row, col)
        if unit is not None:
            self.set_unit(unit)
            self.unit_clicked.emit(unit)

    def _on_grid_painted(self) -> None:
        result, self._awaiting_paint = self._awaiting_paint, None
        if result is None:
            return
        now = time.perf_counter()
        self.shown_result = result
        self._shown_since_source += 1
        result.timings["display"] = now - self._result_received_at  # the result's own dict: kept with it
        self.live_stats.record(result.timings, result.frame.arrived, now)
        self.live_stats.dropped = (self.runner.dropped - self._dropped_base if self.runner else 0) \
            + self._results_dropped
        self.frame_shown.emit(result)
        if now - self._last_stats_emit >= STATS_INTERVAL:
            self._last_stats_emit = now
            self.emit_stats()

    def emit_stats(self) -> dict:
        summary = self.live_stats.summary()
        summary["text"] = format_stats(summary)
        self.stats_label.setText(summary["text"])
        self.stats_label.setToolTip(summary["text"])
        self.stats.emit(summary)
        return summary

    # ---- drag and drop, shutdown --------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            path = Path(urls[0].toLocalFile())
            self.open_folder(path) if path.is_dir() else self.open_video(path)
            event.acceptProposedAction()

    def _stop_runner(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        self._results.take_nowait()

    def shutdown(self) -> None:
        """Stop the source and the worker thread (waits for a forward in progress)."""
        self.stop_source()
        self._stop_runner()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._hidden = True
        super().hideEvent(event)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._hidden = False
        super().showEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)


def add_live_view(window) -> LivePanel:
    """Add the live panel to the main window as the "Live" tab, following its model, layer and unit, with
    the live figures in the window's status bar (only while the tab is shown)."""
    panel = LivePanel(window)
    window.add_view("live", "Live", panel)
    stats_label = QLabel()
    stats_label.setToolTip("Live: frames per second, time per stage, frames dropped (newest frame wins)")
    window.statusBar().addWidget(stats_label)
    window.model_loaded.connect(lambda loaded: panel.set_model(loaded, window.layer))
    window.layers.layer_selected.connect(panel.set_layer)
    window.activations.unit_selected.connect(panel.set_unit)
    panel.unit_clicked.connect(window.set_unit)  # the window's unit: Activations, Filters, Attribution follow
    panel.stats.connect(lambda s: stats_label.setText(s["text"] if panel.isVisible() else ""))
    window.tabs.currentChanged.connect(lambda _i: stats_label.setText("") if not panel.isVisible() else None)
    still_title = window.input_dock.windowTitle()

    hidden_for_live = {"dock": False}

    def mark_still_input(_index: int = -1) -> None:
        # The side panel shows the still image and its predictions, not the live frame (whose top class is
        # under the grid): on the Live tab it goes away, and comes back on leaving it. Opened again there
        # (View menu), it says that it is the still image, greyed out.
        # Tabs that hide docks for themselves (LSTM) restore them in their own handlers of the same signal:
        # the dock comes back at once on leaving Live (before theirs run) and goes away only once every
        # handler has run (a zero timer), so that each restores what the one before it left.
        on_live = window.current_view() is panel
        dock = window.input_dock
        dock.setWindowTitle(LIVE_INPUT_TITLE if on_live else still_title)
        window.input_panel.setEnabled(not on_live)
        if on_live:
            QTimer.singleShot(0, hide_dock_on_live)
        elif hidden_for_live["dock"]:
            hidden_for_live["dock"] = False
            dock.show()

    def hide_dock_on_live() -> None:
        dock = window.input_dock
        if window.current_view() is panel and not dock.isHidden() and not dock.isFloating():
            hidden_for_live["dock"] = True
            dock.hide()

    window.tabs.currentChanged.connect(mark_still_input)
    mark_still_input()
    save_settings = window.save_settings

    def save_settings_with_the_dock() -> None:
        # the saved layout is the user's, without the dock the Live tab put away for itself
        if not hidden_for_live["dock"]:
            return save_settings()
        window.input_dock.show()
        try:
            return save_settings()
        finally:
            window.input_dock.hide()

    window.save_settings = save_settings_with_the_dock
    if window.loaded is not None:
        panel.set_model(window.loaded, window.layer)
    return panel
