"""Filters: the first layer's weights as colour tiles, the selected unit's kernel per input channel in grey."""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from explorer.core.explore import FilterView

from explorer.gui.widgets.image_pane import ImagePane


class FilterPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.first_pane = ImagePane(title="first-layer filters (grey = 0)")
        self.first_pane.setToolTip("Weights of the first convolution, one colour tile per filter")
        self.kernel_pane = ImagePane(title="selected unit's kernel, per input channel")
        self.kernel_pane.setToolTip("The kernel of the selected unit of the selected (or preceding) conv layer")
        self.caption = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.first_pane)
        row.addWidget(self.kernel_pane)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row, 1)
        layout.addWidget(self.caption)
        self.filter_view: FilterView | None = None

    def set_filter_view(self, view: FilterView | None) -> None:
        self.filter_view = view
        if view is None:
            self.first_pane.clear_image()
            self.kernel_pane.clear_image()
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
        if view.first_layer:
            parts.append(f"first layer: {view.first_layer}")
        if view.kernel_layer:
            parts.append(f"kernel: {view.kernel_layer}, unit {view.kernel_unit}")
        else:
            parts.append("no convolution at or before the selected layer")
        self.caption.setText(" · ".join(parts))
