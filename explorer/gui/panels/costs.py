"""The Costs tab: activation memory and parameters per layer as bars, with the totals of the cost table.

"Memory early, parameters late" at a glance (cs231n's VGG16 walk-through). The table is computed by
:func:`explorer.core.costs.cost_table` in a worker; this panel only draws it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSpinBox,
                               QVBoxLayout, QWidget)

from explorer.core.costs import CostTable, cost_table, format_bytes, format_count
from explorer.gui.workers import LatestRunner, TaskRunner, describe_error

MEMORY_COLOUR = (66, 133, 244)
PARAMS_COLOUR = (234, 67, 53)


class CostsPanel(QWidget):
    """Bars of activation memory and parameter memory per layer; totals; batch size; CSV export."""

    failed = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.loaded = None
        self.table: CostTable | None = None
        self._computed_for = None
        self.runner = TaskRunner(self)
        self.latest = LatestRunner(self.runner, self)
        self.latest.result.connect(self._table_ready)
        self.latest.failed.connect(self._failed)

        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.batch.setValue(1)
        self.batch.setToolTip("Batch size: activations and MACs scale with it, parameters do not")
        self.batch.valueChanged.connect(lambda _: self.refresh(force=True))
        self.which = QComboBox()
        self.which.addItems(["leaf layers that hold memory or weights", "every leaf layer"])
        self.which.setToolTip("Leave out layers that add nothing (in-place ReLUs, views)")
        self.which.currentIndexChanged.connect(lambda _: self._draw())
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.setToolTip("Save the whole table (per layer and totals) as CSV")
        self.csv_button.clicked.connect(self.export_csv_dialog)
        self.totals = QLabel("no model")
        self.totals.setTextInteractionFlags(Qt.TextSelectableByMouse)
        # no word wrap: a wrapped label gives the page a height-for-width, and the tab's scroll area then
        # sizes the page by the plots' preferred heights instead of the window's
        self.totals.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)

        self.memory_plot = pg.PlotWidget(background="#202124", title="activation memory per layer (MiB, batch)")
        self.params_plot = pg.PlotWidget(background="#202124", title="parameter memory per layer (MiB)")
        for plot in (self.memory_plot, self.params_plot):
            plot.setMinimumHeight(140)
            plot.setMouseEnabled(x=True, y=False)
            plot.hideButtons()
            plot.showGrid(y=True, alpha=0.3)
            plot.getAxis("left").setWidth(48)
        self.params_plot.setXLink(self.memory_plot)
        self.memory_plot.setToolTip("Bytes of the tensors each layer returns (in-place layers and views: none)")
        self.params_plot.setToolTip("Bytes of each layer's own parameters")

        controls = QHBoxLayout()
        controls.addWidget(QLabel("batch"))
        controls.addWidget(self.batch)
        controls.addWidget(self.which)
        controls.addStretch(1)
        controls.addWidget(self.csv_button)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.memory_plot, 1)
        layout.addWidget(self.params_plot, 1)
        layout.addWidget(self.totals)

    @property
    def busy(self) -> bool:
        return not self.latest.idle

    def set_model(self, loaded) -> None:
        self.loaded = loaded
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        """Compute the table for the current model, input size and batch (in a worker) if it changed."""
        if self.loaded is None:
            return
        key = (id(self.loaded), self.loaded.spec.shape, self.batch.value(), str(self.loaded.device))
        if key == self._computed_for and not force:
            return
        self._computed_for = key
        self.totals.setText("computing…")
        self.latest.submit(cost_table, self.loaded.module, self.loaded.spec.shape, self.batch.value(),
                           self.loaded.device)

    def _failed(self, error) -> None:
        self.totals.setText(f"failed: {describe_error(error)}")
        self.failed.emit(error)

    def _table_ready(self, table: CostTable) -> None:
        self.table = table
        self._draw()

    def resizeEvent(self, event) -> None:  # noqa: N802 - the tick spacing follows the width
        super().resizeEvent(event)
        if self.table is not None:
            self._draw()

    def shown_rows(self):
        if self.table is None:
            return []
        rows = [r for r in self.table.rows if r.output_shape is not None]
        if self.which.currentIndex() == 0:
            rows = [r for r in rows if r.activations or r.params]
        return rows

    def _draw(self) -> None:
        for plot in (self.memory_plot, self.params_plot):
            plot.clear()
        if self.table is None:
            return
        t, rows = self.table, self.shown_rows()
        x = np.arange(len(rows), dtype=np.float64)
        memory = np.array([r.activation_bytes * t.batch for r in rows], dtype=np.float64) / 2**20
        params = np.array([r.param_bytes for r in rows], dtype=np.float64) / 2**20
        self.memory_plot.addItem(pg.BarGraphItem(x=x, height=memory, width=0.8, brush=pg.mkBrush(*MEMORY_COLOUR)))
        self.params_plot.addItem(pg.BarGraphItem(x=x, height=params, width=0.8, brush=pg.mkBrush(*PARAMS_COLOUR)))
        width = max(200, self.memory_plot.width())
        step = max(1, int(np.ceil(len(rows) * 90 / width)))  # about 90 pixels per label
        ticks = [[(float(i), rows[i].name) for i in range(0, len(rows), step)], []]
        for plot in (self.memory_plot, self.params_plot):
            plot.getAxis("bottom").setTicks(ticks)
            plot.setXRange(-0.6, max(0.6, len(rows) - 0.4), padding=0)
        totals = t.totals()
        train = totals["training_bytes"]
        self.totals.setText(
            f"{len(rows)} layers shown · input {'x'.join(map(str, t.input_size))}, batch {t.batch}, {t.dtype} · "
            f"activations {format_count(totals['activations'])} = {format_bytes(totals['activation_bytes'])}\n"
            f"params {format_count(totals['params'])} = {format_bytes(totals['param_bytes'])} · "
            f"{format_count(totals['macs'])} MACs = {format_count(totals['flops'])} FLOPs\n"
            f"forward (every activation kept; in-place layers and views add none): "
            f"{format_bytes(totals['forward_bytes'])}\none training step: "
            f"SGD {format_bytes(train['sgd'])}, SGD+momentum {format_bytes(train['momentum'])}, "
            f"Adam {format_bytes(train['adam'])}")
        self.totals.setToolTip(self.totals.text())

    def export_csv(self, path: str | Path) -> bool:
        if self.table is None:
            return False
        path = Path(path)
        tmp = path.with_name(f".{path.name}.part")
        try:
            tmp.write_text(self.table.to_csv(), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self.failed.emit(OSError(f"cannot write {path}: {exc.strerror or exc}"))
            return False
        return True

    def export_csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the cost table as CSV", "costs.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def shutdown(self) -> None:
        self.runner.shutdown()


def add_costs_view(window) -> CostsPanel:
    """The Costs tab: follows the window's model and input size; computes when first shown."""
    panel = CostsPanel(window)
    window.add_view("costs", "Costs", panel)
    panel.failed.connect(window.show_error)

    def follow(*_):
        panel.loaded = window.loaded
        if window.current_view() is panel:
            panel.refresh()

    window.model_loaded.connect(follow)
    window.input_changed.connect(follow)  # the input size may have changed (Input settings)
    window.tabs.currentChanged.connect(follow)
    return panel
