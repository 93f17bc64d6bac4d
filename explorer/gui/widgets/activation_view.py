"""All channels of the selected layer as one tiled grid, the selected unit enlarged, FC layers as bars."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QSlider, QSplitter, QVBoxLayout,
                               QWidget)

from explorer.core.explore import LayerView, upsample_map

from explorer.gui.widgets.image_pane import ImagePane, lookup_table


def pane_aspect(pane: ImagePane) -> float:
    """Width / height of the area an ImagePane draws its image in (1.0 before it has a size)."""
    rect = pane.view.sceneBoundingRect()
    w, h = rect.width(), rect.height()
    if w < 8 or h < 8:
        w, h = pane.width(), pane.height() - 20
    return float(w) / float(h) if w > 0 and h > 0 else 1.0


def aspect_changed(old: float | None, new: float, tolerance: float = 0.12) -> bool:
    """Whether a grid laid out for ``old`` is worth laying out again for ``new``."""
    return old is not None and abs(new - old) > tolerance * max(old, new)


class ActivationView(QWidget):
    """Shows a :class:`LayerView`; click a tile or use the arrow keys to select a unit.

    ``grid_aspect_changed`` asks for a new grid when the grid's pane changed shape: the window lays the
    tiles out to fill the pane (:meth:`grid_aspect`), instead of a square grid sitting small in it.
    """

    unit_selected = Signal(int)
    norm_changed = Signal(str)
    grid_aspect_changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.layer_view: LayerView | None = None
        self.picture: np.ndarray | None = None
        self.unit = 0
        self.overlay_runner = None  # a workers.LatestRunner (set by the window): overlays are scaled off the GUI thread
        self._overlay = None  # (layer view, unit, scaled map) of the last overlay
        self.setFocusPolicy(Qt.StrongFocus)

        self.grid_pane = ImagePane(title="all channels")
        self.grid_pane.setToolTip("Every channel of the selected layer. Click a tile or use the arrow keys.")
        self.grid_pane.clicked.connect(self._grid_clicked)
        self.grid_pane.installEventFilter(self)
        self._requested_aspect: float | None = None  # the aspect the shown grid was laid out for
        self._aspect_timer = QTimer(self, singleShot=True, interval=150)  # one request after a drag
        self._aspect_timer.timeout.connect(self._check_aspect)
        self.bars = pg.PlotWidget(background="#202124")
        self.bars.setToolTip("A fully connected layer: one bar per unit. Click a bar to select it.")
        self.bars.setMouseEnabled(x=True, y=False)
        self.bars.hideButtons()
        self.bars.scene().sigMouseClicked.connect(self._bars_clicked)
        self.bar_item: pg.BarGraphItem | None = None
        self.bar_mark = pg.InfiniteLine(angle=90, pen=pg.mkPen("#ffcc00"))
        self.bars.addItem(self.bar_mark)
        self.bars.setVisible(False)

        self.unit_pane = ImagePane(title="selected unit")
        self.unit_pane.setToolTip("The selected unit's activation map, optionally over the input.")
        self.info = QLabel("no layer selected")
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.info.setWordWrap(True)  # a long line must not hold the splitter wide (the grid needs the room)
        self.info.setMinimumWidth(120)
        self.overlay_box = QCheckBox("overlay on input")
        self.overlay_box.setToolTip("Show the unit's map, scaled to the input, over the input image (O)")
        self.overlay_box.toggled.connect(self._show_unit)
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setToolTip("Overlay opacity")
        self.opacity.valueChanged.connect(self._show_unit)
        self.norm = QComboBox()
        self.norm.addItems(["layer", "channel"])
        self.norm.setToolTip("Scale the grid over the whole layer, or each channel on its own")
        self.norm.currentTextChanged.connect(self.norm_changed.emit)

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.grid_pane)
        lv.addWidget(self.bars)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(self.unit_pane, 1)
        controls = QHBoxLayout()
        controls.addWidget(self.overlay_box)
        controls.addWidget(self.opacity)
        rv.addLayout(controls)
        scale = QHBoxLayout()
        scale.addWidget(QLabel("grid scaling:"))
        scale.addWidget(self.norm)
        scale.addStretch(1)
        rv.addLayout(scale)
        rv.addWidget(self.info)
        self.opacity.setMinimumWidth(40)
        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([500, 500])
        self.splitter = splitter
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    # -- the grid's shape ----------------------------------------------------------------------------
    def grid_aspect(self) -> float:
        """Width / height of the area the grid is drawn in (1.0 before the pane has a size)."""
        return pane_aspect(self.grid_pane)

    def request_aspect(self) -> float:
        """The aspect to lay the next grid out for (remembered, so a resize asks again only when it changed)."""
        self._requested_aspect = self.grid_aspect()
        return self._requested_aspect

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if watched is self.grid_pane and event.type() == QEvent.Resize:
            self._aspect_timer.start()
        return super().eventFilter(watched, event)

    def _check_aspect(self) -> None:
        if self.layer_view is not None and not self.layer_view.is_vector \
                and aspect_changed(self._requested_aspect, self.grid_aspect()):
            self.grid_aspect_changed.emit()

    # -- showing -------------------------------------------------------------------------------------
    def set_picture(self, picture: np.ndarray | None) -> None:
        self.picture = picture
        self._show_unit()

    def set_layer_view(self, view: LayerView | None, unit: int) -> None:
        self.layer_view = view
        if view is None or view.units == 0:
            self.grid_pane.clear_image()
            self.unit_pane.clear_image()
            self.bars.setVisible(False)
            self.grid_pane.setVisible(True)
            self.info.setText("no activation to show" if view is None else "select a layer")
            return
        self.unit = min(max(unit, 0), view.units - 1)
        self.unit_pane.setVisible(not view.is_vector)  # a 1x1 map says nothing: the bar and the text do
        self.overlay_box.setEnabled(not view.is_vector)
        if view.is_vector:
            self.grid_pane.setVisible(False)
            self.bars.setVisible(True)
            if self.bar_item is not None:
                self.bars.removeItem(self.bar_item)
            x = np.arange(view.units)
            self.bar_item = pg.BarGraphItem(x=x, height=view.activation.copy(), width=0.8, brush="#5aa9e6")
            self.bars.addItem(self.bar_item)
            self.bars.autoRange()
        else:
            self.bars.setVisible(False)
            self.grid_pane.setVisible(True)
            self.grid_pane.set_image(view.grid, levels=(0.0, 1.0), lut=lookup_table("grey"))
        self._show_unit()

    def select_unit(self, unit: int) -> None:
        if self.layer_view is None or self.layer_view.units == 0:
            return
        unit = min(max(unit, 0), self.layer_view.units - 1)
        if unit != self.unit:
            self.unit = unit
            self._show_unit()
            self.unit_selected.emit(unit)

    def _show_unit(self, *_):
        view = self.layer_view
        if view is None or view.units == 0:
            return
        unit = self.unit
        if view.is_vector:
            self.bar_mark.setValue(unit)
            self.grid_pane.set_box(None)
        else:
            top, left = view.layout.tile_origin(unit)
            self.grid_pane.set_box(top, left, view.layout.tile_h - 1, view.layout.tile_w - 1)
        unit_map = view.unit_map(unit)
        value = view.activation[unit]
        if view.is_vector:
            self.info.setText(f"{view.layer} · unit {unit} of {view.units}\nvalue {float(value):.4g} "
                              f"· layer range [{view.value_range[0]:.4g}, {view.value_range[1]:.4g}]")
            return
        stats = f"max {float(unit_map.max()):.4g}, mean {float(unit_map.mean()):.4g}"
        tokens = ""
        if view.tokens is not None:  # a transformer's sequence: the map is over the patch tokens
            rows, cols = view.tokens.grid
            tokens = f" · {rows}x{cols} patch tokens"
            if view.prefix is not None:
                tokens += "".join(f" · {name} token {float(view.prefix[i, unit]):.4g}"
                                  for i, name in enumerate(view.prefix_names or
                                                           [f"prefix {i}" for i in range(len(view.prefix))]))
        self.info.setText(f"{view.layer} · unit {unit} of {view.units} · {stats}\n"
                          f"layer range [{view.value_range[0]:.4g}, {view.value_range[1]:.4g}]{tokens}")
        map_lo, map_hi = float(unit_map.min()), float(unit_map.max())
        self.unit_pane.set_colorbar((map_lo, map_hi), lookup_table("inferno"), "activation")
        if self.overlay_box.isChecked() and self.picture is not None and not view.is_vector:
            self.unit_pane.set_image(self.picture)
            cached = self._overlay
            if cached is not None and cached[0] is view and cached[1] == unit and cached[2].shape == self.picture.shape[:2]:
                self.unit_pane.set_overlay(cached[2], lookup_table("inferno"), self.opacity.value() / 100)
            elif self.overlay_runner is not None:
                self.overlay_runner.submit(_scaled_overlay, view, unit, unit_map, self.picture.shape[:2])
        else:
            lo, hi = float(unit_map.min()), float(unit_map.max())
            self.unit_pane.set_overlay(None)
            self.unit_pane.set_image(unit_map, levels=(lo, hi if hi > lo else lo + 1e-6),
                                     lut=lookup_table("inferno"))

    def set_overlay_runner(self, runner) -> None:
        """Where the unit's map is scaled to the input for the overlay (a workers.LatestRunner)."""
        self.overlay_runner = runner
        runner.result.connect(self._overlay_ready)

    @property
    def busy(self) -> bool:
        return self.overlay_runner is not None and not self.overlay_runner.idle

    def _overlay_ready(self, scaled) -> None:
        view, unit, heat = scaled
        self._overlay = scaled
        if view is self.layer_view and unit == self.unit and self.overlay_box.isChecked():
            self.unit_pane.set_overlay(heat, lookup_table("inferno"), self.opacity.value() / 100)

    # -- input ---------------------------------------------------------------------------------------
    def _grid_clicked(self, row: float, col: float) -> None:
        if self.layer_view is None or self.layer_view.is_vector:
            return
        unit = self.layer_view.layout.unit_at(row, col)
        if unit is not None:
            self.select_unit(unit)

    def _bars_clicked(self, event) -> None:
        if self.layer_view is None or not self.layer_view.is_vector:
            return
        pos = self.bars.getPlotItem().vb.mapSceneToView(event.scenePos())
        self.select_unit(int(round(pos.x())))

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        view = self.layer_view
        if view is None or view.units == 0:
            return super().keyPressEvent(event)
        cols = 1 if view.is_vector else view.layout.cols
        step = {Qt.Key_Left: -1, Qt.Key_Right: 1, Qt.Key_Up: -cols, Qt.Key_Down: cols,
                Qt.Key_Home: -view.units, Qt.Key_End: view.units}.get(event.key())
        if view.is_vector and event.key() in (Qt.Key_Up, Qt.Key_Down):
            step = -1 if event.key() == Qt.Key_Up else 1
        if step is None:
            if event.key() == Qt.Key_O:
                self.overlay_box.toggle()
                return
            return super().keyPressEvent(event)
        self.select_unit(self.unit + step)


def _scaled_overlay(view: LayerView, unit: int, unit_map: np.ndarray, size: tuple[int, int]):
    """Worker job: the unit's map scaled to the input (the core's bilinear upsampling)."""
    return view, unit, upsample_map(unit_map, size)
