"""The top cells (rows) over the visible characters (columns): a strip on the LSTM tab's colour map."""
from __future__ import annotations


import numpy as np
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import (QWidget)

from explorer.gui.widgets.cell_text_view import rgb_image

HEAT_ROWS = 8


class HeatStrip(QWidget):
    """The top cells (rows) over the visible characters (columns), on the same colour map."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._image: QImage | None = None
        self._labels: list[str] = []
        self.setMinimumHeight(HEAT_ROWS * 9 + 4)

    def set_rows(self, rgb: np.ndarray | None, labels: list[str]) -> None:
        self._labels = labels
        if rgb is None or rgb.size == 0:
            self._image = None
        else:
            self._image = rgb_image(rgb)
        self.update()

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
