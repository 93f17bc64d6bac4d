"""The LSTM explorer panel: text coloured by a cell, the cell browser, a heat strip, gate saturation.

All model work (replay, cell search, sampling) runs in a pool thread as a core generator; the panel only
displays what comes back. The text view paints only the visible lines, so 100,000 characters scroll as
smoothly as 100.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QFontDatabase, QKeySequence, QShortcut
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout,
                               QLabel, QMenu, QPlainTextEdit, QPushButton, QSpinBox, QSplitter, QTabWidget,
                               QToolButton, QToolTip, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from explorer.core.errors import ExplorerError
from explorer.core.rnn.model import BUNDLED_CHAR_RNNS, DEFAULT_CHAR_RNN, QUANTITIES, CharRNN, load_char_rnn, read_char_rnn_payload, sample_steps
from explorer.core.rnn.replay import top_next_chars
from explorer.core.rnn.cells import CellRef, TextAnalysis, analyse_text_steps, cell_values, selection_search
from explorer.core.rnn.render import LUT, display_values, heat_strip, value_colors
from explorer.gui.widgets.cell_text_view import CellTextView
from explorer.gui.widgets.heat_strip import HEAT_ROWS, HeatStrip
from explorer.gui.widgets.lines_label import LinesLabel
from explorer.gui.workers import Task, TaskRunner, describe_error

AUTO_ANALYSE_CHARS = 20_000  # typing re-analyses automatically up to this length
QUANTITY_NAMES = {"h": "hidden state h", "c": "cell state c", "i": "input gate i", "f": "forget gate f",
                  "g": "cell input g", "o": "output gate o", "r": "reset gate r", "z": "update gate z",
                  "n": "new gate n"}
WRITTEN_COLOR = "#1b9e3e"  # the underline of model-written text (the selection's is dark grey)


def describe_cell(cell: CellRef) -> str:
    """``0:c:28`` in words: ``layer 0, cell state c, unit 28``."""
    return f"layer {cell.layer}, {QUANTITY_NAMES.get(cell.quantity, cell.quantity)}, unit {cell.index}"


def cell_legend(cell_kind: str | None) -> str:
    """The legend line under the text: how cells are named, what the underlines mean."""
    example = describe_cell(CellRef(0, "c" if cell_kind in (None, "lstm") else "h", 28))
    names = ", ".join(QUANTITY_NAMES[q] for q in QUANTITIES.get(cell_kind or "lstm", ()))
    return (f"cells are layer:quantity:unit, e.g. {'0:c:28' if cell_kind in (None, 'lstm') else '0:h:28'} = "
            f"{example} ({names}) · green underline: written by the model · black underline: your selection")


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
        self._written_from = 0
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

        cell_tip = ("The cell shown: layer, quantity (h hidden state, c cell state, i/f/o input/forget/output "
                    "gates, g cell input; GRU: r/z reset/update gates, n new gate), unit")
        for w in (self.layer_box, self.quantity_box, self.index_box):
            w.setToolTip(cell_tip)
        # two rows: one row of every control is wider than a 1024 px screen's tab
        top = QHBoxLayout()
        for w in (self.model_label, open_model, bundled, open_text):
            top.addWidget(w)
        top.insertStretch(1)
        second = QHBoxLayout()
        for w in (QLabel("cell (layer:quantity:unit)"), self.layer_box, self.quantity_box, self.index_box):
            second.addWidget(w)
        second.addStretch(1)
        for w in (QLabel("temperature"), self.temperature, QLabel("length"), self.length, self.write_button):
            second.addWidget(w)

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
        self.browser.headerItem().setToolTip(0, "Cells as layer:quantity:unit, e.g. 0:c:28 = layer 0, cell "
                                                "state c, unit 28 (the tooltip of each cell says it in words)")
        self.browser.setColumnWidth(0, 170)
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
        # axis titles are HTML: a bare "<" began a tag and cut the title at "(" ; the left axis gets the
        # width its title and ticks need
        self.saturation_plot.setLabel("bottom", "left-saturated (&lt; 0.1)")
        self.saturation_plot.setLabel("left", "right-saturated (&gt; 0.9)")
        self.saturation_plot.getAxis("left").setWidth(52)
        self.saturation_plot.getAxis("bottom").setHeight(40)
        self.saturation_plot.setToolTip("Each gate unit: the fraction of characters where it is left-saturated "
                                        "(below 0.1, x) and right-saturated (above 0.9, y). Click a point.")
        self.saturation_plot.setXRange(0, 1)
        self.saturation_plot.setYRange(0, 1)
        self.saturation_plot.addLegend(offset=(-10, 10))
        self._scatter_items: list[pg.ScatterPlotItem] = []

        side = self.side_tabs = QTabWidget()
        side.addTab(browser_box, "Cells")
        side.addTab(self.saturation_plot, "Gate saturation")

        self.legend = LinesLabel(2, cell_legend(None))
        self.legend.setTextFormat(Qt.TextFormat.PlainText)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.editor)
        ll.addWidget(self.view, 1)
        ll.addWidget(self.heat)
        ll.addWidget(self.legend)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([700, 300])

        self.status = LinesLabel(2)  # the one place the statistics and messages are shown
        self.statusChanged.connect(self.status.setText)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(second)
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
        self.legend.setText(cell_legend(cfg.cell))
        self.modelLoaded.emit(str(path_or_name))
        if self.view.text():
            self.set_text(self.view.text())
        return True

    def set_text(self, text: str) -> None:
        """Show ``text`` and analyse it in the background (replay, cell search, saturation)."""
        self.view.set_text(text, keep_written=True)
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
        if result.truncated:  # too long to keep every gate: the view colours a prefix, the ranking is whole
            self.statusChanged.emit(f"{result.length:,} characters: cells ranked over all of them; gates kept "
                                    f"for the first {result.replay.length:,} (memory), the rest is not coloured")
        else:
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
        self.heat.set_rows(heat_strip(rows, start, end), [str(c) for c in cells],
                           [f"{c} = {describe_cell(c)}" for c in cells])

    def _fill_browser(self, result: TextAnalysis) -> None:
        self.browser.clear()
        for name, scores in result.search.items():
            top = QTreeWidgetItem([result.indicators[name].description])
            for s in scores:
                child = QTreeWidgetItem([str(s.cell), f"{s.r:+.3f}", "" if s.auroc is None else f"{s.auroc:.3f}"])
                child.setData(0, Qt.ItemDataRole.UserRole, s.cell)
                child.setToolTip(0, f"{s.cell} = {describe_cell(s.cell)}")
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
        written = "  (written by the model)" if self.view.is_written(index) else ""
        return (f"{_printable(rep.text[index])}  cell {self.cell} = {value:+.3f}{shown_as}{written}\n"
                f"{self.cell} = {describe_cell(self.cell)}\nnext: {nexts}")

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
            child.setToolTip(0, f"{c.cell} = {describe_cell(c.cell)}")
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
        self._written_from = len(full)  # what comes after this is the model's: the view underlines it
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
        self.view.set_text(self._written, keep_written=True)
        self.view.add_written(self._written_from, len(self._written))
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
