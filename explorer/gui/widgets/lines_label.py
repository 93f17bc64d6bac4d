"""A wrapped label of a fixed number of lines that asks no height for its width.

A word-wrapped QLabel has a height for its width; inside a tab's scroll area (the main window puts every
panel in one) that makes the scroll area size the whole panel by its children's preferred heights, so a
window with room scrolls. A fixed number of lines avoids it.
"""
from __future__ import annotations

from PySide6.QtWidgets import QLabel


class LinesLabel(QLabel):
    def __init__(self, lines: int = 2, text: str = "", parent=None):
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setFixedHeight(lines * self.fontMetrics().lineSpacing() + 4)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt's name
        return False
