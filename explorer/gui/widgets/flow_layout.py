"""A layout that places widgets left to right and wraps onto the next row when the width runs out.

A toolbar of buttons in an :class:`~PySide6.QtWidgets.QHBoxLayout` needs the sum of their widths; at a
laptop's window size that is more than the pane has, and the last buttons end up cut off or scrolled
away. In a :class:`FlowLayout` the panel needs only its widest button and the bar takes a second row
(Qt's "Flow Layout" example; :class:`FlowBar` grows to the rows it needs, so what is below moves down).
"""
from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QLayout, QLayoutItem, QSizePolicy, QWidget


class FlowLayout(QLayout):
    """Rows of widgets at their size hints, wrapped to the layout's width."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    # ---- QLayout's interface ------------------------------------------------------------------------
    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 - Qt's name
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 - Qt's name
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 - Qt's name
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802 - Qt's name
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt's name
        return False  # FlowBar keeps the height up to date instead (see there)

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt's name
        return self._arrange(QRect(0, 0, width, 0), apply=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802 - Qt's name
        super().setGeometry(rect)
        self._arrange(rect, apply=True)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        """One row of everything (the width it would like); :meth:`minimumSize` is what it needs."""
        w = h = 0
        for item in self._visible():
            hint = item.sizeHint()
            w += hint.width() + (self._spacing if w else 0)
            h = max(h, hint.height())
        m = self.contentsMargins()
        return QSize(w + m.left() + m.right(), h + m.top() + m.bottom())

    def minimumSize(self) -> QSize:  # noqa: N802 - Qt's name
        size = QSize()
        for item in self._visible():
            size = size.expandedTo(item.minimumSize()).expandedTo(item.sizeHint())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    # ---- placing --------------------------------------------------------------------------------------
    def _visible(self) -> list[QLayoutItem]:
        return [item for item in self._items if not (item.widget() is not None and item.widget().isHidden())]

    def rows(self, width: int) -> list[list[QLayoutItem]]:
        """The items of each row at ``width`` px."""
        rows: list[list[QLayoutItem]] = [[]]
        m = self.contentsMargins()
        x, right = 0, width - m.left() - m.right()
        for item in self._visible():
            w = item.sizeHint().width()
            if rows[-1] and x + self._spacing + w > right:
                rows.append([])
                x = 0
            x += (self._spacing if rows[-1] else 0) + w
            rows[-1].append(item)
        return [row for row in rows if row]

    def _arrange(self, rect: QRect, apply: bool) -> int:
        m = self.contentsMargins()
        y = rect.y() + m.top()
        for row in self.rows(rect.width()):
            x = rect.x() + m.left()
            height = max(item.sizeHint().height() for item in row)
            for item in row:
                hint = item.sizeHint()
                if apply:
                    # vertically centred in the row, as a QHBoxLayout does
                    item.setGeometry(QRect(QPoint(x, y + (height - hint.height()) // 2), hint))
                x += hint.width() + self._spacing
            y += height + self._spacing
        return max(0, y - self._spacing - rect.y() + m.bottom())


class FlowBar(QWidget):
    """A widget holding a :class:`FlowLayout` that keeps its minimum height at what its rows need.

    It reports no height-for-width upwards: a panel whose layout has a height-for-width item is given
    its *preferred* height by a resizable QScrollArea (the window's tabs are in one), which then scrolls
    instead of fitting the panel to the tab."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self.flow = FlowLayout(self, spacing)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def addWidget(self, widget: QWidget) -> None:  # noqa: N802 - Qt's name
        self.flow.addWidget(widget)
        self._fit()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.flow.sizeHint().width(), self.minimumHeight())

    def _fit(self) -> None:
        height = self.flow.heightForWidth(max(1, self.width()))
        if height != self.minimumHeight():
            self.setMinimumHeight(height)
            self.updateGeometry()
