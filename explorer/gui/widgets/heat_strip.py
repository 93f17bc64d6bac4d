"""The top cells (rows) over the visible characters (columns): a strip on the LSTM tab's colour map."""
from __future__ import annotations


import numpy as np
from PySide6.QtCore import QEvent, QRect, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QToolTip, QWidget

from explorer.gui.widgets.cell_text_view import rgb_image

HEAT_ROWS = 8


class HeatStrip(QWidget):
    """The top cells (rows) over the visible characters (columns), on the same colour map."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._image: QImage | None = None
        self._labels: list[str] = []
        self._tips: list[str] = []
        self.setMinimumHeight(HEAT_ROWS * 9 + 4)
        self.setToolTip("The top cells (rows, layer:quantity:unit) over the characters in view (columns)")

    def set_rows(self, rgb: np.ndarray | None, labels: list[str], tips: list[str] | None = None) -> None:
        """``tips``: what each row is, in words (shown when the mouse rests on the row)."""
        self._labels = labels
        self._tips = list(tips) if tips is not None else []
        if rgb is None or rgb.size == 0:
            self._image = None
        else:
            self._image = rgb_image(rgb)
        self.update()

    def row_tip(self, y: float) -> str:
        """The tooltip of the row at height ``y`` (the strip's general one outside the rows)."""
        rows = len(self._labels)
        k = int(y * rows / max(self.height(), 1)) if rows else -1
        return self._tips[k] if 0 <= k < len(self._tips) else self.toolTip()

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            QToolTip.showText(event.globalPos(), self.row_tip(event.pos().y()), self)
            return True
        return super().event(event)

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().window())
        label_w = 62
        if self._image is not None:
            p.drawImage(QRect(label_w, 0, self.width() - label_w, self.height()), self._image)
        rows = max(1, len(self._labels))
        p.setPen(self.palette().text().color())
        font = p.font()
        font.setPointSize(7)
        p.setFont(font)
        for k, label in enumerate(self._labels):
            p.drawText(QRect(0, int(k * self.height() / rows), label_w - 4, int(self.height() / rows)),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), label)
        p.end()
