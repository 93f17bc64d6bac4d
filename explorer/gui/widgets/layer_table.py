"""The layer table: every module with type, output shape, parameters and MACs; step through with keys."""
from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QItemSelectionModel, Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from explorer.core.probe import LayerInfo

COLUMNS = ("layer", "type", "output", "params", "MACs")
TIPS = ("Module path inside the model", "Module class", "Output shape for one input (C x H x W)",
        "Parameters the module owns itself", "Multiply-accumulates for one input at the current input size")


class LayerTableModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[LayerInfo] = []

    def set_rows(self, rows: list[LayerInfo]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if orientation == Qt.Horizontal:
            if role == Qt.DisplayRole:
                return COLUMNS[section]
            if role == Qt.ToolTipRole:
                return TIPS[section]
        return None

    def data(self, index, role=Qt.DisplayRole):
        row = self.rows[index.row()]
        col = index.column()
        if role == Qt.DisplayRole:
            if col == 0:
                return "  " * row.depth + row.name
            if col == 1:
                return row.type
            if col == 2:
                return "x".join(map(str, row.output_shape)) if row.output_shape is not None else "—"
            if col == 3:
                return f"{row.params:,}" if row.params else ""
            if col == 4:
                return f"{row.macs:,}" if row.macs else ""
        if role == Qt.TextAlignmentRole and col >= 3:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ForegroundRole and row.output_shape is None:
            return Qt.gray
        if role == Qt.ToolTipRole:
            return f"{row.name} ({row.type}), called {row.calls}x"
        return None


class LayerTable(QTableView):
    """Selecting a row (click, Up/Down) emits ``layer_selected`` with the module name."""

    layer_selected = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table_model = LayerTableModel(self)
        self.setModel(self.table_model)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setAlternatingRowColors(True)
        self.setToolTip("Layers of the model. Up/Down or Ctrl+Up/Ctrl+Down step through them.")
        self.selectionModel().currentRowChanged.connect(self._row_changed)

    def set_rows(self, rows: list[LayerInfo]) -> None:
        self.table_model.set_rows(rows)

    def names(self) -> list[str]:
        return [r.name for r in self.table_model.rows]

    def select_layer(self, name: str) -> bool:
        names = self.names()
        if name not in names:
            return False
        index = self.table_model.index(names.index(name), 0)
        self.selectionModel().setCurrentIndex(index, QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
        self.scrollTo(index)
        return True

    def current_layer(self) -> str | None:
        row = self.currentIndex().row()
        return self.table_model.rows[row].name if 0 <= row < len(self.table_model.rows) else None

    def step(self, delta: int) -> None:
        names = self.names()
        if not names:
            return
        row = self.currentIndex().row()
        row = 0 if row < 0 else min(max(row + delta, 0), len(names) - 1)
        self.select_layer(names[row])

    def _row_changed(self, current, _previous) -> None:
        if current.isValid():
            self.layer_selected.emit(self.table_model.rows[current.row()].name)
