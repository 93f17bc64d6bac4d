"""The layer table: every module with type, output shape, parameters and MACs; step through with keys.

Narrow enough for a laptop's dock: a module shows its own name indented under its parent (the full path in
the tooltip), counts are compact (7.1M, 1.8G; the exact value in the tooltip), and the class name comes
last, where a narrow dock elides it, or leaves it out when it would not be readable (the tooltip has
it), rather than push the numbers out of view.
"""
from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QItemSelectionModel, Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QStyle, QTableView

from explorer.core.costs import format_count
from explorer.core.probe import LayerInfo

COLUMNS = ("layer", "output", "params", "MACs", "type")
LAYER, OUTPUT, PARAMS, MACS, TYPE = range(len(COLUMNS))
TIPS = ("Module name, indented under its parent (the tooltip has the full path)",
        "Output shape for one input (C x H x W)",
        "Parameters the module owns itself (K = 10^3, M = 10^6, G = 10^9; the tooltip has the exact number)",
        "Multiply-accumulates for one input at the current input size (K, M, G; the tooltip has the exact number)",
        "Module class")
INDENT = "  "


def short_name(row: LayerInfo) -> str:
    """The module's own name, indented by its depth: ``features.conv1`` at depth 1 is ``  conv1``."""
    return INDENT * row.depth + row.name.rsplit(".", 1)[-1]


def row_tooltip(row: LayerInfo) -> str:
    lines = [f"{row.name} ({row.type}), called {row.calls}x"]
    if row.params:
        lines.append(f"params {row.params:,}")
    if row.macs:
        lines.append(f"MACs {row.macs:,}")
    return "\n".join(lines)


def cell_margin(view) -> int:
    """Pixels a cell needs beside its text before Qt elides it (the focus frame's margin each side, plus one)."""
    return 2 * (view.style().pixelMetric(QStyle.PM_FocusFrameHMargin, None, view) + 1) + 2


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
            if col == LAYER:
                return short_name(row)
            if col == TYPE:
                return row.type
            if col == OUTPUT:
                return "x".join(map(str, row.output_shape)) if row.output_shape is not None else "—"
            if col == PARAMS:
                return format_count(row.params) if row.params else ""
            if col == MACS:
                return format_count(row.macs) if row.macs else ""
        if role == Qt.TextAlignmentRole and col in (PARAMS, MACS):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ForegroundRole and row.output_shape is None:
            return Qt.gray
        if role == Qt.ToolTipRole:
            return row_tooltip(row)
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
        header = self.horizontalHeader()
        header.setMinimumSectionSize(24)
        header.setSectionResizeMode(QHeaderView.Interactive)  # sized by fit_columns
        header.setSectionResizeMode(TYPE, QHeaderView.Stretch)  # what is left; elided when narrow
        self.setTextElideMode(Qt.ElideRight)
        self.setAlternatingRowColors(True)
        self.setToolTip("Layers of the model. Up/Down or Ctrl+Up/Ctrl+Down step through them.")
        self.selectionModel().currentRowChanged.connect(self._row_changed)

    def set_rows(self, rows: list[LayerInfo]) -> None:
        self.table_model.set_rows(rows)
        self.fit_columns()

    def fit_columns(self) -> None:
        """Every column as wide as its widest text plus the style's margins; the last (the class name)
        takes what is left."""
        cells = self.fontMetrics()
        margin = cell_margin(self)
        heads = self.horizontalHeader().fontMetrics()
        model = self.table_model
        for col in range(len(COLUMNS)):
            if col == TYPE:
                continue
            texts = [model.data(model.index(r, col)) or "" for r in range(model.rowCount())]
            widest = max([cells.horizontalAdvance(t) for t in texts] + [0])
            self.setColumnWidth(col, max(widest, heads.horizontalAdvance(COLUMNS[col])) + margin)
        self.updateGeometry()  # the dock reads the new size hint
        self._fit_type_column()

    def _fit_type_column(self) -> None:
        """Show the class name only where it gets a readable width ("Conv2d"); a narrow dock keeps the
        counts in view instead (the row's tooltip has the class)."""
        header = self.horizontalHeader()
        need = sum(header.sectionSize(c) for c in range(header.count()) if c != TYPE)
        readable = self.fontMetrics().horizontalAdvance("Conv2d") + 10
        self.setColumnHidden(TYPE, self.viewport().width() - need < readable)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit_type_column()

    def sizeHint(self):  # noqa: N802 - Qt's name: as wide as the columns (the dock asks for this width)
        hint = super().sizeHint()
        if self.table_model.rows:
            hint.setWidth(self.columns_width() + 2 * self.frameWidth() + self.verticalScrollBar().sizeHint().width())
        return hint

    def columns_width(self) -> int:
        """The width the columns need (the last one at its contents, not stretched)."""
        header = self.horizontalHeader()
        last = header.count() - 1
        return sum(header.sectionSize(c) for c in range(last) if c != TYPE) + \
            max(self.sizeHintForColumn(TYPE), header.sectionSizeHint(TYPE))

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
