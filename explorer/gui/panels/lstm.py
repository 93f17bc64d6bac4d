"""The LSTM explorer panel: text coloured by a cell, the cell browser, a heat strip, gate saturation.

All model work (replay, cell search, sampling) runs in a pool thread as a core generator; the panel only
displays what comes back. The text view paints only the visible lines, so 100,000 characters scroll as
smoothly as 100.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QRect, QRectF, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QFont, QFontDatabase, QFontMetricsF, QImage, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import (QAbstractScrollArea, QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout,
                               QLabel, QMenu, QPlainTextEdit, QPushButton, QSpinBox, QSplitter, QTabWidget,
                               QToolButton, QToolTip, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from explorer.core.errors import ExplorerError
from explorer.core.rnn.model import BUNDLED_CHAR_RNNS, DEFAULT_CHAR_RNN, QUANTITIES, CharRNN, load_char_rnn, read_char_rnn_payload, sample_steps
from explorer.core.rnn.replay import top_next_chars
from explorer.core.rnn.cells import CellRef, TextAnalysis, analyse_text_steps, cell_values, selection_search
from explorer.core.rnn.render import LUT, display_values, heat_strip, line_offsets, text_color_for, value_colors
from explorer.gui.workers import Task, TaskRunner, describe_error

_WHITE, _BLACK, _DARK = QColor(255, 255, 255), QColor(0, 0, 0), QColor(20, 20, 20)
AUTO_ANALYSE_CHARS = 20_000  # typing re-analyses automatically up to this length
HEAT_ROWS = 8


# ---------------------------------------------------------------------------------------------------
# The coloured text


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



class CellTextView(QAbstractScrollArea):
    """Read-only text with one background colour per character; paints only the visible lines.

    Drag to select a span, Ctrl-drag to add more (for the selection search); hover reports the
    character under the mouse through ``hovered``.
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
        self._drag_start: int | None = None
        self._max_cols = 1
        self.viewport().setMouseTracking(True)
        self.verticalScrollBar().valueChanged.connect(self._visible_changed)
        self.horizontalScrollBar().valueChanged.connect(self._visible_changed)

    # -- content
    def set_text(self, text: str) -> None:
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
        for s_start, s_end in self._spans:  # the selection: a dark underline
            for row, (a, b) in enumerate(rows):
                lo, hi = max(a, s_start), min(b, s_end)
                if lo < hi:
                    x0 = int(round(4 + (lo - a) * self._cw))
                    p.fillRect(x0, (row + 1) * self._lh - 2, int(round(4 + (hi - a) * self._cw)) - x0, 2, _DARK)
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


# ---------------------------------------------------------------------------------------------------
# The panel


def _bundled_label(name: str, path: Path) -> str:
    """Menu text for a bundled char-RNN: its name and architecture, read from the checkpoint."""
    try:
        cfg = read_char_rnn_payload(path)["config"]
        return f"{name}: {cfg['cell'].upper()} {cfg['num_layers']}×{cfg['hidden_size']}"
    except (ExplorerError, KeyError, TypeError):
        return f"{name} (missing)"


class LstmPanel(QWidget):
    """Explore a character-level LSTM/GRU/RNN: which cells light up where, and what the model predicts."""

    modelLoaded = Signal(str)
    analysisFinished = Signal()
    sampleFinished = Signal()
    statusChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model: CharRNN | None = None
        self.analysis: TextAnalysis | None = None
        self.cell: CellRef | None = None
        self.runner = TaskRunner(self, max_threads=1)  # analyses one after another
        self.sample_runner = TaskRunner(self)  # the model writes while the growing text is analysed
        self._job: Task | None = None
        self._sample_job: Task | None = None
        self._pending_text: str | None = None
        self._job_text = ""
        self._written = ""
        self._build()

    # -- layout
    def _build(self) -> None:
        self.model_label = QLabel("no model")
        open_model = QPushButton("Model…")
        open_model.clicked.connect(self._choose_model)
        bundled = QToolButton(text="Bundled", popupMode=QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        bundled.setToolTip(f"Load the default bundled char-RNN ({DEFAULT_CHAR_RNN}); the arrow picks another: "
                           f"{', '.join(BUNDLED_CHAR_RNNS)}")
        bundled.clicked.connect(self._load_bundled)
        menu = QMenu(bundled)
        for name, path in BUNDLED_CHAR_RNNS.items():
            action = menu.addAction(_bundled_label(name, path), lambda name=name: self.load_model(name))
            action.setData(name)
        bundled.setMenu(menu)
        self.bundled_button = bundled
        open_text = QPushButton("Open text…")
        open_text.clicked.connect(self._choose_text)
        self.layer_box = QComboBox()
        self.quantity_box = QComboBox()
        self.index_box = QSpinBox()
        for w in (self.layer_box, self.quantity_box):
            w.currentIndexChanged.connect(self._cell_from_controls)
        self.index_box.valueChanged.connect(self._cell_from_controls)
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=3.0, singleStep=0.1, value=0.8)
        self.length = QSpinBox(minimum=1, maximum=20000, value=400, singleStep=100)
        self.write_button = QPushButton("Let the model write")
        self.write_button.clicked.connect(self._toggle_sampling)

        top = QHBoxLayout()
        for w in (self.model_label, open_model, bundled, open_text, QLabel("cell"), self.layer_box,
                  self.quantity_box, self.index_box, QLabel("temperature"), self.temperature,
                  QLabel("length"), self.length, self.write_button):
            top.addWidget(w)
        top.insertStretch(1)

        self.editor = QPlainTextEdit()
        self.editor.setPlaceholderText("Type or paste text here (Ctrl+Enter analyses long texts)")
        self.editor.setMaximumHeight(90)
        self.editor.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self._typing = QTimer(self, singleShot=True, interval=350)
        self._typing.timeout.connect(self._editor_changed)
        self.editor.textChanged.connect(self._typing.start)
        QShortcut(QKeySequence("Ctrl+Return"), self.editor, activated=self._editor_changed)

        self.view = CellTextView()
        self.view.hovered.connect(self._show_hover)
        self.view.visibleRangeChanged.connect(self._update_heat_strip)
        self.heat = HeatStrip()

        self.browser = QTreeWidget()
        self.browser.setHeaderLabels(["indicator / cell", "r", "AUROC"])
        self.browser.setColumnWidth(0, 190)
        self.browser.itemClicked.connect(self._browser_clicked)
        self.browser.itemActivated.connect(self._browser_clicked)
        find_sel = QPushButton("Cells for my selection")
        find_sel.setToolTip("Drag over text in the view (Ctrl-drag for more spans), then rank cells that are "
                            "on inside and off around it (LSTMVis)")
        find_sel.clicked.connect(self.search_selection)
        self.threshold = QDoubleSpinBox(decimals=2, minimum=-1.0, maximum=1.0, singleStep=0.05, value=0.3)
        sel_row = QHBoxLayout()
        sel_row.addWidget(find_sel)
        sel_row.addWidget(QLabel("on above"))
        sel_row.addWidget(self.threshold)
        browser_box = QWidget()
        bl = QVBoxLayout(browser_box)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(self.browser)
        bl.addLayout(sel_row)

        self.saturation_plot = pg.PlotWidget()
        self.saturation_plot.setBackground("w")
        self.saturation_plot.setLabel("bottom", "left-saturated (< 0.1)")
        self.saturation_plot.setLabel("left", "right-saturated (> 0.9)")
        self.saturation_plot.setXRange(0, 1)
        self.saturation_plot.setYRange(0, 1)
        self.saturation_plot.addLegend(offset=(-10, 10))
        self._scatter_items: list[pg.ScatterPlotItem] = []

        side = self.side_tabs = QTabWidget()
        side.addTab(browser_box, "Cells")
        side.addTab(self.saturation_plot, "Gate saturation")

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.editor)
        ll.addWidget(self.view, 1)
        ll.addWidget(self.heat)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)

        self.status = QLabel("")
        self.statusChanged.connect(self.status.setText)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(split, 1)
        layout.addWidget(self.status)

    # -- model and text
    def load_model(self, path_or_name: str | Path = "bundled") -> bool:
        """Load a char-RNN checkpoint (or ``"bundled"``); on failure the reason goes to the status line."""
        try:
            model = load_char_rnn(path_or_name)
        except ExplorerError as exc:
            self.statusChanged.emit(str(exc))
            return False
        self.model = model
        cfg = model.config
        self.model_label.setText(f"{Path(str(path_or_name)).name}: {cfg.cell.upper()} {cfg.num_layers}×"
                                 f"{cfg.hidden_size}, {len(model.vocab)} characters")
        for box in (self.layer_box, self.quantity_box, self.index_box):
            box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems([str(k) for k in range(cfg.num_layers)])
        self.quantity_box.clear()
        self.quantity_box.addItems(list(QUANTITIES[cfg.cell]))
        self.index_box.setRange(0, cfg.hidden_size - 1)
        for box in (self.layer_box, self.quantity_box, self.index_box):
            box.blockSignals(False)
        self.cell = None  # the analysis shows the best string-literal cell first
        self.modelLoaded.emit(str(path_or_name))
        if self.view.text():
            self.set_text(self.view.text())
        return True

    def set_text(self, text: str) -> None:
        """Show ``text`` and analyse it in the background (replay, cell search, saturation)."""
        self.view.set_text(text)
        self.analysis = None
        self._start_analysis(text)

    def open_text_file(self, path: str | Path) -> bool:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self.statusChanged.emit(f"cannot read {path}: {exc.strerror or exc}")
            return False
        self.editor.blockSignals(True)
        self.editor.setPlainText(text if len(text) <= AUTO_ANALYSE_CHARS else "")
        self.editor.blockSignals(False)
        self.set_text(text)
        return True

    def _load_bundled(self) -> None:
        self.load_model("bundled")

    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Char-RNN checkpoint", "", "PyTorch (*.pt *.pth);;All (*)")
        if path:
            self.load_model(path)

    def _choose_text(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Text file", "", "Text (*.py *.txt *.md *.c *.h);;All (*)")
        if path:
            self.open_text_file(path)

    def _editor_changed(self) -> None:
        text = self.editor.toPlainText()
        if text and (len(text) <= AUTO_ANALYSE_CHARS or self.sender() is not self._typing):
            self.set_text(text)

    # -- background work
    @property
    def busy(self) -> bool:
        """True while text is being analysed or the model is writing."""
        return self._job is not None or self._sample_job is not None or self._pending_text is not None

    def _start_analysis(self, text: str) -> None:
        if self.model is None or not text:
            return
        if self._job is not None:
            # One slot for the newest text. A text that only grew (the model writing) lets the running
            # job finish and show its prefix; an edited text makes the running job pointless.
            if not text.startswith(self._job_text):
                self._job.cancel()
            self._pending_text = text
            return
        model = self.model
        job = Task(analyse_text_steps(model, text))
        job.signals.yielded.connect(self._analysis_progress)
        job.signals.returned.connect(self._analysis_done)
        job.signals.errored.connect(self._job_failed)
        job.signals.done.connect(self._analysis_stopped)
        self._job, self._job_text = job, text
        self.runner.start(job)

    @Slot(object)
    def _analysis_progress(self, step) -> None:
        if self.sender().task is self._job:
            done, total = step
            self.statusChanged.emit(f"reading {done * 100 // max(total, 1)} %")

    @Slot()
    def _analysis_stopped(self) -> None:
        if self.sender().task is not self._job:
            return
        self._job = None
        if self._pending_text is not None:
            text, self._pending_text = self._pending_text, None
            if text == self.view.text():
                self._start_analysis(text)

    @Slot(object)
    def _analysis_done(self, result: TextAnalysis) -> None:
        if self.sender().task is not self._job or result is None or not self.view.text().startswith(result.replay.text):
            return
        self.analysis = result
        self.statusChanged.emit(f"{result.replay.length:,} characters, {result.replay.bits_per_char():.3f} "
                                f"bits per character")
        self._fill_browser(result)
        self._fill_saturation(result)
        if self.cell is None or not self._cell_exists(self.cell):
            best = next(iter(result.search.get("string", [])), None)
            self.cell = best.cell if best else CellRef(0, QUANTITIES[result.replay.cell][0], 0)
        self.show_cell(self.cell)
        if self._pending_text is None:
            self.analysisFinished.emit()

    @Slot(object)
    def _job_failed(self, error: BaseException) -> None:
        if self.sender().task in (self._job, self._sample_job):
            self.statusChanged.emit(describe_error(error))

    def _cell_exists(self, cell: CellRef) -> bool:
        rep = self.analysis.replay
        return (0 <= cell.layer < len(rep.layers) and cell.quantity in rep.layers[cell.layer]
                and 0 <= cell.index < rep.layers[cell.layer][cell.quantity].shape[1])

    # -- showing a cell
    def show_cell(self, cell: CellRef) -> None:
        """Colour the text by ``cell`` (layer, quantity, index)."""
        self.cell = cell
        for box, value in ((self.layer_box, str(cell.layer)), (self.quantity_box, cell.quantity)):
            box.blockSignals(True)
            box.setCurrentText(value)
            box.blockSignals(False)
        self.index_box.blockSignals(True)
        self.index_box.setValue(cell.index)
        self.index_box.blockSignals(False)
        if self.analysis is None or not self._cell_exists(cell):
            return
        self.view.set_colors(value_colors(display_values(cell.quantity, cell_values(self.analysis.replay, cell))))
        self._update_heat_strip(*self.view.visible_range())

    def cell_colors(self) -> np.ndarray | None:
        return self.view._bg

    def _cell_from_controls(self, *_):
        if self.model is None or self.layer_box.currentIndex() < 0 or self.quantity_box.currentIndex() < 0:
            return
        self.show_cell(CellRef(int(self.layer_box.currentText()), self.quantity_box.currentText(),
                               self.index_box.value()))

    def _top_cells(self) -> list[CellRef]:
        seen: list[CellRef] = []
        if self.analysis is None:
            return seen
        for scores in self.analysis.search.values():
            for s in scores[:2]:
                if s.cell not in seen:
                    seen.append(s.cell)
        return seen[:HEAT_ROWS]

    def _update_heat_strip(self, start: int, end: int) -> None:
        if self.analysis is None:
            self.heat.set_rows(None, [])
            return
        cells = self._top_cells()
        rows = [display_values(c.quantity, cell_values(self.analysis.replay, c)) for c in cells]
        self.heat.set_rows(heat_strip(rows, start, end), [str(c) for c in cells])

    def _fill_browser(self, result: TextAnalysis) -> None:
        self.browser.clear()
        for name, scores in result.search.items():
            top = QTreeWidgetItem([result.indicators[name].description])
            for s in scores:
                child = QTreeWidgetItem([str(s.cell), f"{s.r:+.3f}", "" if s.auroc is None else f"{s.auroc:.3f}"])
                child.setData(0, Qt.ItemDataRole.UserRole, s.cell)
                top.addChild(child)
            self.browser.addTopLevelItem(top)
            top.setExpanded(True)

    def _browser_clicked(self, item: QTreeWidgetItem, *_):
        cell = item.data(0, Qt.ItemDataRole.UserRole)
        if isinstance(cell, CellRef):
            self.show_cell(cell)
        span = item.data(1, Qt.ItemDataRole.UserRole)
        if isinstance(span, tuple):
            self.view.scroll_to_char(span[0])
            self.view.set_spans([span])

    def _fill_saturation(self, result: TextAnalysis) -> None:
        for item in self._scatter_items:
            self.saturation_plot.removeItem(item)
        self._scatter_items = []
        legend = self.saturation_plot.plotItem.legend
        if legend is not None:
            legend.clear()
        colours = {"i": (31, 119, 180), "f": (44, 160, 44), "o": (214, 39, 40), "r": (148, 103, 189),
                   "z": (255, 127, 14)}
        symbols = ["o", "t", "s", "d"]
        for (layer, gate), frac in result.saturation.items():
            item = pg.ScatterPlotItem(frac[:, 0], frac[:, 1], size=6, pen=None,
                                      brush=pg.mkBrush(*colours.get(gate, (0, 0, 0)), 150),
                                      symbol=symbols[layer % len(symbols)], name=f"layer {layer} {gate}",
                                      data=[CellRef(layer, gate, k) for k in range(len(frac))])
            item.sigClicked.connect(self._scatter_clicked)
            self.saturation_plot.addItem(item)
            self._scatter_items.append(item)

    def _scatter_clicked(self, item, points, *_):
        if len(points):
            self.show_cell(points[0].data())

    # -- hover
    def hover_text(self, index: int) -> str:
        if self.analysis is None or self.cell is None or not 0 <= index < self.analysis.replay.length:
            return ""
        rep = self.analysis.replay
        value = float(cell_values(rep, self.cell)[index])
        nxt = top_next_chars(rep.probs[index], self.model.vocab if self.model else [], 5)
        nexts = ", ".join(f"{_printable(ch)} {p:.0%}" for ch, p in nxt)
        shown_as = ""
        if self.cell.quantity == "c":
            shown = display_values("c", cell_values(rep, self.cell))[index]
            shown_as = f" (shown as {shown:+.3f}, c / max |c|)"
        return f"{_printable(rep.text[index])}  cell {self.cell} = {value:+.3f}{shown_as}\nnext: {nexts}"

    def _show_hover(self, index: int, global_pos: QPoint) -> None:
        text = self.hover_text(index)
        if text:
            QToolTip.showText(global_pos, text, self.view)
        else:
            QToolTip.hideText()

    # -- selection search (LSTMVis)
    def search_selection(self) -> None:
        if self.analysis is None or not self.view.spans():
            self.statusChanged.emit("drag over some text first (Ctrl-drag for more spans)")
            return
        try:
            result = selection_search(self.analysis.replay, self.view.spans(), threshold=self.threshold.value(),
                                      quantities=("h", "c") if self.analysis.replay.cell == "lstm" else ("h",))
        except ExplorerError as exc:
            self.statusChanged.emit(str(exc))
            return
        top = QTreeWidgetItem(["your selection: on inside, off around", "score", "on"])
        for c in result.cells:
            child = QTreeWidgetItem([str(c.cell), f"{c.score:+.2f}", f"{c.on_inside:.2f}"])
            child.setData(0, Qt.ItemDataRole.UserRole, c.cell)
            top.addChild(child)
        matches = QTreeWidgetItem([f"where the top {min(3, len(result.cells))} fire together "
                                   f"({len(result.matches)})"])
        text = self.analysis.replay.text
        for s, e in result.matches:
            child = QTreeWidgetItem([_printable(text[s:e][:40]), f"{s}", f"{e - s}"])
            child.setData(1, Qt.ItemDataRole.UserRole, (s, e))
            matches.addChild(child)
        self.browser.insertTopLevelItem(0, matches)
        self.browser.insertTopLevelItem(0, top)
        top.setExpanded(True)
        matches.setExpanded(True)
        self.browser.scrollToTop()
        if result.cells:
            self.show_cell(result.cells[0].cell)

    # -- let the model write
    def _toggle_sampling(self) -> None:
        if self._sample_job is not None:
            self._sample_job.cancel()
            self.write_button.setText("Let the model write")
            return
        self.start_sampling()

    def start_sampling(self, prime: str | None = None, length: int | None = None,
                       temperature: float | None = None, seed: int | None = None) -> None:
        """Let the model continue the text (or ``prime``); the view re-reads it as it grows."""
        if self.model is None:
            self.statusChanged.emit("load a model first")
            return
        full = self.view.text() if prime is None else prime
        prime = full[-2000:]  # the state after the last 2,000 characters is a good enough start
        length = self.length.value() if length is None else length
        temperature = self.temperature.value() if temperature is None else temperature
        model = self.model

        def chunks():
            buf = []
            for ch in sample_steps(model, prime, length, temperature, seed):
                buf.append(ch)
                if len(buf) >= 20:
                    yield "".join(buf)
                    buf = []
            if buf:
                yield "".join(buf)

        job = Task(chunks)
        self._written = full
        job.signals.yielded.connect(self._sample_chunk)
        job.signals.errored.connect(self._job_failed)
        job.signals.done.connect(self._sample_done)
        self._sample_job = job
        self.write_button.setText("Stop writing")
        self.sample_runner.start(job)

    @Slot(object)
    def _sample_chunk(self, chunk: str) -> None:
        if self.sender().task is not self._sample_job:
            return
        self._written += chunk
        self.editor.blockSignals(True)
        self.editor.setPlainText(self._written)
        self.editor.blockSignals(False)
        self.view.set_text(self._written)
        self.view.verticalScrollBar().setValue(self.view.verticalScrollBar().maximum())
        self._start_analysis(self._written)

    @Slot()
    def _sample_done(self) -> None:
        if self.sender().task is self._sample_job:
            self._sample_job = None
        self.write_button.setText("Let the model write")
        self.sampleFinished.emit()

    # -- export and shutdown
    def export_png(self, path: str | Path) -> bool:
        return self.grab().save(str(path))

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Cancel running work and wait for the threads (called on close and by tests)."""
        self._pending_text = None
        self.sample_runner.shutdown(timeout_s)
        self.runner.shutdown(timeout_s)
        self._job = self._sample_job = None

    def closeEvent(self, event) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)


def _printable(text: str) -> str:
    return text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣") if len(text) == 1 else \
        text.replace("\n", "⏎")


__all__ = ["LstmPanel", "CellTextView", "HeatStrip", "LUT"]
