"""Filters: the first layer's weights as colour tiles, the selected unit's kernel per input channel in grey.

Both grids are laid out to fill their panes and drawn enlarged with nearest-neighbour sampling (a 3x3
kernel is nine flat squares, not a blur); a legend says what the tiles are and how they are scaled.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from explorer.core.explore import FilterView

from explorer.gui.widgets.activation_view import aspect_changed, pane_aspect
from explorer.gui.widgets.image_pane import ImagePane
from explorer.gui.widgets.lines_label import LinesLabel


def first_layer_legend(view: FilterView, zoom: float | None = None) -> str:
    """What the first-layer tiles are: ``conv1: 64 filters, 3x11x11, RGB, each scaled on its own ...``."""
    if view.first_layer is None or view.first_shape is None:
        return "no first convolution with 1 or 3 input channels"
    c_out, c_in, kh, kw = view.first_shape
    colours = "RGB" if c_in == 3 else "grey"
    text = f"{view.first_layer} filters, {c_in}x{kh}x{kw} ({c_out}), {colours}, scaled per filter to ±max |w|"
    if view.first_scales is not None:
        lo, hi = view.first_scales
        text += f" ({lo:.3g} to {hi:.3g})"
    text += ", grey = 0"
    if zoom is not None and zoom >= 1.05:
        text += f" · {zoom:.0f}x, nearest neighbour"
    return text


class FilterPanel(QWidget):
    """``aspect_changed`` asks for new grids when a pane changed shape (:meth:`request_aspects`)."""

    aspect_changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.first_pane = ImagePane(title="first-layer filters (grey = 0)")
        self.first_pane.setToolTip("Weights of the first convolution, one colour tile per filter")
        self.kernel_pane = ImagePane(title="selected unit's kernel, per input channel")
        self.kernel_pane.setToolTip("The kernel of the selected unit of the selected (or preceding) conv layer")
        self.legend = LinesLabel(3)
        self.legend.setToolTip("Each first-layer filter is divided by its own largest |weight|, so every tile "
                               "uses the full colour range; compare shapes, not strengths, between tiles")
        self.caption = LinesLabel(2)
        row = QHBoxLayout()
        row.addWidget(self.first_pane)
        row.addWidget(self.kernel_pane)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row, 1)
        layout.addWidget(self.legend)
        layout.addWidget(self.caption)
        self.filter_view: FilterView | None = None
        self._requested: tuple[float, float] | None = None
        self._timer = QTimer(self, singleShot=True, interval=150)  # one request after a drag
        self._timer.timeout.connect(self._check_aspects)
        for pane in (self.first_pane, self.kernel_pane):
            pane.installEventFilter(self)

    def request_aspects(self) -> tuple[float, float]:
        """(first-layer pane, kernel pane) width / height, to lay the next grids out for."""
        self._requested = (pane_aspect(self.first_pane), pane_aspect(self.kernel_pane))
        return self._requested

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Resize and watched in (self.first_pane, self.kernel_pane):
            self._timer.start()
        return super().eventFilter(watched, event)

    def _check_aspects(self) -> None:
        self._update_legend()
        if self._requested is None or self.filter_view is None:
            return
        now = (pane_aspect(self.first_pane), pane_aspect(self.kernel_pane))
        if any(aspect_changed(old, new) for old, new in zip(self._requested, now)):
            self.aspect_changed.emit()

    def zoom(self) -> float | None:
        """Screen pixels per weight in the first-layer pane (None before it shows anything)."""
        if self.first_pane.array is None:
            return None
        px, _ = self.first_pane.view.viewPixelSize()
        return 1.0 / px if px > 0 else None

    def _update_legend(self) -> None:
        if self.filter_view is not None:
            self.legend.setText(first_layer_legend(self.filter_view, self.zoom()))

    def set_filter_view(self, view: FilterView | None) -> None:
        self.filter_view = view
        if view is None:
            self.first_pane.clear_image()
            self.kernel_pane.clear_image()
            self.legend.setText("")
            self.caption.setText("no model")
            return
        if view.first_grid is not None:
            self.first_pane.set_image(view.first_grid, levels=(0.0, 1.0))
        else:
            self.first_pane.clear_image()
        if view.kernel_grid is not None:
            self.kernel_pane.set_image(view.kernel_grid, levels=(0.0, 1.0))
        else:
            self.kernel_pane.clear_image()
        parts = []
        if view.kernel_layer:
            parts.append(f"kernel: {view.kernel_layer}, unit {view.kernel_unit}, one tile per input channel "
                         f"(scaled to the unit's max |w|, grey = 0)")
        else:
            parts.append("no convolution at or before the selected layer")
        self.caption.setText(" · ".join(parts))
        self._update_legend()
        QTimer.singleShot(0, self._update_legend)  # the zoom is known once the view has its range
