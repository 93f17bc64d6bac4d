"""The text coloured by one cell's value, drawn line by line (only the visible lines), with hover and selection."""
from __future__ import annotations


import numpy as np
from PySide6.QtCore import QPoint, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontDatabase, QFontMetricsF, QImage, QPainter
from PySide6.QtWidgets import (QAbstractScrollArea, QWidget)

from explorer.core.rnn.render import line_offsets, text_color_for

_WHITE, _BLACK, _DARK = QColor(255, 255, 255), QColor(0, 0, 0), QColor(20, 20, 20)
_WRITTEN = QColor("#1b9e3e")  # model-written text: a green underline (the legend line says so)



def rgb_image(rgb: np.ndarray) -> QImage:
    """(H, W, 3) uint8 → a QImage that owns a copy of the pixels.

    Not ``QImage(array.data, …)``: with shiboken6 6.12 the buffer-backed constructor corrupts the heap
    when the image is freed (seen as "malloc_consolidate(): unaligned fastbin chunk" at exit).
    """
    h, w, _ = rgb.shape
    image = QImage(w, h, QImage.Format.Format_RGB888)
    stride = image.bytesPerLine()
    pixels = np.frombuffer(image.bits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    pixels[:, :3 * w] = rgb.reshape(h, 3 * w)
    return image



def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class CellTextView(QAbstractScrollArea):
    """Read-only text with one background colour per character; paints only the visible lines.

    Drag to select a span, Ctrl-drag to add more (for the selection search); hover reports the
    character under the mouse through ``hovered``. Text the model wrote (:meth:`add_written`) is
    underlined in green, the selection in black.
    """

    hovered = Signal(int, QPoint)  # character index (−1 for none), global position
    selectionChanged = Signal()
    visibleRangeChanged = Signal(int, int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSize(10)
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.setFont(font)
        self.viewport().setFont(font)
        metrics = QFontMetricsF(font)
        self._cw = max(1.0, metrics.horizontalAdvance("M"))
        self._lh = int(metrics.height() + 2)
        self._ascent = metrics.ascent() + 1
        self._text = ""
        self._lines = np.zeros(1, dtype=np.int64)
        self._bg: np.ndarray | None = None  # (T, 3) uint8
        self._fg: np.ndarray | None = None
        self._spans: list[tuple[int, int]] = []
        self._written: list[tuple[int, int]] = []  # [start, end) ranges the model wrote
        self._drag_start: int | None = None
        self._max_cols = 1
        self.viewport().setMouseTracking(True)
        self.verticalScrollBar().valueChanged.connect(self._visible_changed)
        self.horizontalScrollBar().valueChanged.connect(self._visible_changed)

    # -- content
    def set_text(self, text: str, keep_written: bool = False) -> None:
        """Show ``text``; ``keep_written`` keeps the model-written marks on the part that did not change."""
        if keep_written and self._written:
            common = _common_prefix(self._text, text)
            self._written = [(a, min(b, common)) for a, b in self._written if a < common]
        else:
            self._written = []
        self._text = text
        self._lines = line_offsets(text)
        lengths = np.diff(np.append(self._lines, len(text) + 1)) if len(text) else np.ones(1)
        self._max_cols = int(lengths.max()) if len(lengths) else 1
        self._bg = self._fg = None
        self._spans = []
        self._update_scrollbars()
        self.viewport().update()
        self._visible_changed()

    def text(self) -> str:
        return self._text

    def set_colors(self, background: np.ndarray | None) -> None:
        """(T, 3) uint8 background per character (None: plain); a shorter array colours the first
        characters and leaves the rest white (the text grew while the model was reading it)."""
        if background is not None and len(background) != len(self._text):
            if len(background) > len(self._text):
                raise ValueError(f"{len(background)} colours for {len(self._text)} characters")
            padded = np.full((len(self._text), 3), 255, dtype=np.uint8)
            padded[:len(background)] = background
            background = padded
        self._bg = background
        self._fg = text_color_for(background) if background is not None else None
        self.viewport().update()

    def add_written(self, start: int, end: int) -> None:
        """Mark characters [start, end) as written by the model (merged with a range it continues)."""
        start, end = max(0, start), min(end, len(self._text))
        if start >= end:
            return
        if self._written and self._written[-1][0] <= start <= self._written[-1][1]:
            start = self._written.pop()[0]
        self._written.append((start, end))
        self.viewport().update()

    def written(self) -> list[tuple[int, int]]:
        """The [start, end) ranges the model wrote."""
        return list(self._written)

    def is_written(self, index: int) -> bool:
        return any(a <= index < b for a, b in self._written)

    def spans(self) -> list[tuple[int, int]]:
        return list(self._spans)

    def set_spans(self, spans: list[tuple[int, int]]) -> None:
        self._spans = list(spans)
        self.viewport().update()
        self.selectionChanged.emit()

    # -- geometry
    def line_count(self) -> int:
        return len(self._lines)

    def char_rect(self, index: int) -> QRect:
        """Where character ``index`` is drawn, in viewport coordinates."""
        line = int(np.searchsorted(self._lines, index, side="right") - 1)
        col = index - int(self._lines[line])
        x = (col - self.horizontalScrollBar().value()) * self._cw + 4
        y = (line - self.verticalScrollBar().value()) * self._lh
        return QRect(int(round(x)), y, int(round(self._cw)), self._lh)

    def index_at(self, pos: QPoint) -> int:
        line = pos.y() // self._lh + self.verticalScrollBar().value()
        if not self._text or line < 0 or line >= len(self._lines):
            return -1
        col = int((pos.x() - 4) // self._cw) + self.horizontalScrollBar().value()
        start = int(self._lines[line])
        end = int(self._lines[line + 1]) - 1 if line + 1 < len(self._lines) else len(self._text) - 1
        if col < 0 or start + col > end:
            return -1
        return start + col

    def scroll_to_char(self, index: int) -> None:
        line = int(np.searchsorted(self._lines, index, side="right") - 1)
        bar = self.verticalScrollBar()
        if not bar.value() <= line < bar.value() + self._visible_lines() - 1:
            bar.setValue(max(0, line - self._visible_lines() // 3))

    def visible_range(self) -> tuple[int, int]:
        first = self.verticalScrollBar().value()
        last = min(len(self._lines), first + self._visible_lines())
        start = int(self._lines[first]) if first < len(self._lines) else len(self._text)
        end = int(self._lines[last]) if last < len(self._lines) else len(self._text)
        return start, end

    def _visible_lines(self) -> int:
        return max(1, self.viewport().height() // self._lh + 1)

    def _update_scrollbars(self) -> None:
        self.verticalScrollBar().setRange(0, max(0, len(self._lines) - self._visible_lines() + 1))
        self.verticalScrollBar().setPageStep(self._visible_lines())
        cols = int(self.viewport().width() // self._cw)
        self.horizontalScrollBar().setRange(0, max(0, self._max_cols + 1 - cols))
        self.horizontalScrollBar().setPageStep(max(1, cols))

    def _visible_changed(self, *_):
        self.viewport().update()
        self.visibleRangeChanged.emit(*self.visible_range())

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._update_scrollbars()
        self._visible_changed()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(int(self._cw * 90), self._lh * 30)

    # -- painting: the visible backgrounds as one image, then the text in runs of one text colour
    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self.viewport())
        p.fillRect(event.rect(), _WHITE)
        first = self.verticalScrollBar().value()
        col0 = self.horizontalScrollBar().value()
        ncols = int(self.viewport().width() // self._cw) + 2
        nrows = min(self._visible_lines(), len(self._lines) - first)
        text, bg, fg = self._text, self._bg, self._fg
        rows = []
        for row in range(max(0, nrows)):
            line = first + row
            start = int(self._lines[line])
            end = int(self._lines[line + 1]) if line + 1 < len(self._lines) else len(text)  # incl. newline
            rows.append((start + col0, min(end, start + col0 + ncols)))
        if bg is not None and rows:
            grid = np.full((len(rows), ncols, 3), 255, dtype=np.uint8)
            for row, (a, b) in enumerate(rows):
                if a < b:
                    grid[row, :b - a] = bg[a:b]
            image = rgb_image(grid)
            p.drawImage(QRectF(4, 0, ncols * self._cw, len(rows) * self._lh), image)
        pen = None
        for row, (a, b) in enumerate(rows):
            if a >= b:
                continue
            y = int(row * self._lh + self._ascent)
            segment = text[a:b].replace("\t", " ").replace("\n", " ")
            if fg is None:
                runs = [(0, b - a, 0)]
            else:
                white = fg[a:b, 0] > 127
                change = np.nonzero(white[1:] != white[:-1])[0] + 1
                bounds = [0, *change.tolist(), b - a]
                runs = [(s, e, int(white[s])) for s, e in zip(bounds[:-1], bounds[1:])]
            for s, e, is_white in runs:
                if pen != is_white:
                    p.setPen(_WHITE if is_white else _BLACK)
                    pen = is_white
                p.drawText(int(round(4 + s * self._cw)), y, segment[s:e])
        for ranges, colour, lift in ((self._written, _WRITTEN, 2), (self._spans, _DARK, 0)):
            # model-written: a green underline; the selection: a dark one just below it
            for s_start, s_end in ranges:
                for row, (a, b) in enumerate(rows):
                    lo, hi = max(a, s_start), min(b, s_end)
                    if lo < hi:
                        x0 = int(round(4 + (lo - a) * self._cw))
                        p.fillRect(x0, (row + 1) * self._lh - 2 - lift, int(round(4 + (hi - a) * self._cw)) - x0, 2,
                                   colour)
        p.end()

    # -- mouse
    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        index = self.index_at(event.position().toPoint())
        if self._drag_start is not None and index >= 0:
            lo, hi = sorted((self._drag_start, index))
            self._spans[-1] = (lo, hi + 1)
            self.viewport().update()
        self.hovered.emit(index, event.globalPosition().toPoint())

    def mousePressEvent(self, event) -> None:  # noqa: N802
        index = self.index_at(event.position().toPoint())
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if not event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self._spans = []
        if index >= 0:
            self._drag_start = index
            self._spans.append((index, index + 1))
        self.viewport().update()

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._drag_start is not None:
            self._drag_start = None
            self.selectionChanged.emit()

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.hovered.emit(-1, QPoint())
        super().leaveEvent(event)
