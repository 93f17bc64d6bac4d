"""The Compare tab: the window's model (A) beside a second checkpoint (B), layer by layer.

"Open B…" loads a checkpoint (its architecture detected, or A's); a folder (the window's, or one chosen
here) is read once by :func:`explorer.core.compare.compare_steps` in a worker (progress; Cancel stops
it). Shown: the CKA heatmap of every (A layer, B layer) pair with a colour bar and the layer names on
its axes, a bar chart of each layer's relative weight change and CKA, and both models' top-5 on the
window's current image with the selected unit's activation in A and in B.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Signal
from PySide6.QtWidgets import (QFileDialog, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout,
                               QWidget)

from explorer.gui.widgets.image_pane import ImagePane, lookup_table
from explorer.gui.workers import Task

HEATMAP_COLORMAP = "inferno"
CHANGE_COLOUR, CKA_COLOUR = "#4f8fd8", "#f0a030"


def load_b_steps(path: str, a):
    """Checkpoint B: its architecture detected, else taken to be A's; fed A's input size."""
    from explorer.core.compare import load_checkpoint_b  # noqa: PLC0415

    yield 0
    return load_checkpoint_b(path, a.name, input_size=a.spec.size, device=a.device)


def compare_with_top9_steps(a, b, folder: Path, fit: str, layer: str | None):
    """The comparison, then (when ``layer`` is in both models) a top-9 scan of the folder with each:
    returns (Comparison, (A's index, B's index) or None)."""
    from explorer.core.compare import compare_steps  # noqa: PLC0415
    from explorer.core.topk.scan import scan_steps  # noqa: PLC0415

    result = yield from compare_steps(a, b, folder, fit=fit, batch_size=32)
    if layer is None or layer not in dict(b.module.named_modules()) or layer not in dict(a.module.named_modules()):
        return result, None
    indexes = []
    for m in (a, b):
        indexes.append((yield from scan_steps(m, folder, [layer], k=9, code_layer=None, fit=fit)))
    return result, tuple(indexes)


def short_name(name: str, width: int = 14) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


class ComparePanel(QWidget):
    failed = Signal(object)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.b = None  # the second LoadedModel
        self.folder: Path | None = None
        self.result = None  # the last Comparison
        self.image_result: dict | None = None
        self.indexes = None  # (A's, B's) top-9 index of the window's layer, from the last Run
        self.task: Task | None = None
        self.image_task: Task | None = None
        self.image_pending = False

        self.title = QLabel("Compare: open a second checkpoint (B) of the model, choose a folder of images, Run")
        self.title.setWordWrap(True)
        self.open_button = QPushButton("Open B…")
        self.open_button.clicked.connect(self.choose_b)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.clicked.connect(self.choose_folder)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        controls = QHBoxLayout()
        for w in (self.open_button, self.folder_button, self.run_button, self.cancel_button):
            controls.addWidget(w)
        controls.addWidget(self.progress, 1)

        # the heatmap: rows A's layers (first at the top), columns B's
        self.heatmap_view = pg.GraphicsLayoutWidget()
        self.heatmap_view.setMinimumHeight(330)
        self.heatmap_plot = self.heatmap_view.addPlot(row=0, col=0)
        self.heatmap_plot.setMenuEnabled(False)
        self.heatmap_plot.hideButtons()
        self.heatmap_plot.invertY(True)
        self.heatmap_plot.setLabel("left", "A")
        self.heatmap_plot.setLabel("bottom", "B")
        self.heatmap_plot.setTitle("linear CKA")
        self.heatmap = pg.ImageItem(axisOrder="row-major")
        self.heatmap.setLookupTable(lookup_table(HEATMAP_COLORMAP))
        self.heatmap_plot.addItem(self.heatmap)
        table = lookup_table(HEATMAP_COLORMAP)
        self.colorbar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.ColorMap(np.linspace(0, 1, 256), table),
                                        interactive=False, width=14)
        self.colorbar.setImageItem(self.heatmap)
        self.heatmap_view.addItem(self.colorbar, row=0, col=1)
        # until the first run: a hint in the empty plot instead of bare, meaningless axes
        self.empty_hint = pg.TextItem("Open B…, choose a folder of images, then Run", color="#bbbbbb",
                                      anchor=(0.5, 0.5))
        self.heatmap_plot.addItem(self.empty_hint)
        self.empty_hint.setPos(0.5, 0.5)
        self.heatmap_plot.setRange(QRectF(0, 0, 1, 1), padding=0)
        for side in ("left", "bottom"):
            self.heatmap_plot.getAxis(side).setTicks([[]])

        # per-layer bars: weight change and CKA side by side
        self.bars_view = pg.PlotWidget()
        self.bars_view.setMinimumHeight(210)
        self.bars_plot = self.bars_view.getPlotItem()
        self.bars_plot.setMenuEnabled(False)
        self.bars_plot.setTitle(f"per layer: <span style='color:{CHANGE_COLOUR}'>weight change</span> and "
                                f"<span style='color:{CKA_COLOUR}'>CKA</span>", size="9pt")
        self.change_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=CHANGE_COLOUR)
        self.cka_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=CKA_COLOUR)
        self.bars_plot.addItem(self.change_bars)
        self.bars_plot.addItem(self.cka_bars)

        self.top_a = QLabel("")
        self.top_b = QLabel("")
        self.unit_label = QLabel("")
        self.unit_label.setWordWrap(True)
        tops = QGridLayout()
        tops.addWidget(QLabel("<b>A</b>: top-5"), 0, 0)
        tops.addWidget(QLabel("<b>B</b>: top-5"), 0, 1)
        tops.addWidget(self.top_a, 1, 0)
        tops.addWidget(self.top_b, 1, 1)
        tops.addWidget(self.unit_label, 2, 0, 1, 2)
        self.unit_a, self.unit_b = ImagePane(title="unit in A"), ImagePane(title="unit in B")
        for col, pane in enumerate((self.unit_a, self.unit_b)):
            pane.setMinimumSize(120, 130)
            pane.setMaximumHeight(200)
            pane.setVisible(False)
            tops.addWidget(pane, 3, col)
        tops.setRowStretch(4, 1)
        tops.setColumnStretch(0, 1)
        tops.setColumnStretch(1, 1)

        bottom = QHBoxLayout()
        bottom.addLayout(tops, 1)
        bottom.addWidget(self.bars_view, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(controls)
        layout.addWidget(self.status)
        layout.addWidget(self.heatmap_view, 3)
        layout.addLayout(bottom, 2)

    @property
    def busy(self) -> bool:
        return self.task is not None or self.image_task is not None

    # -- B and the folder ------------------------------------------------------------------------
    def choose_b(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint B")
        if path:
            self.open_b(path)

    def open_b(self, path: str | Path) -> None:
        if self.window.loaded is None or self.task is not None:
            return
        self.status.setText(f"loading {Path(path).name}…")
        task = Task(load_b_steps(str(path), self.window.loaded))
        task.signals.returned.connect(self.set_b)
        task.signals.errored.connect(self._failed)
        task.signals.done.connect(self._task_done)
        self.task = task
        self.window.runner.start(task)

    def set_b(self, loaded) -> None:
        self.b = loaded
        self.result = None
        self.title.setText(f"A: <b>{self.window.loaded.display_name}</b> &nbsp; B: <b>{loaded.display_name}</b>"
                           f" ({loaded.source})")
        self.status.setText("B loaded; Run compares them on the folder")
        self.refresh_image()

    def window_folder(self) -> Path | None:
        files = getattr(self.window, "folder", None)
        return Path(files[0]).parent if files else None

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images")
        if folder:
            self.set_folder(folder)

    def set_folder(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.status.setText(f"folder {self.folder}")

    # -- the pass over the folder ----------------------------------------------------------------
    def run(self) -> None:
        a, folder = self.window.loaded, self.folder or self.window_folder()
        if self.task is not None:
            return
        if a is None or self.b is None:
            self.status.setText("open checkpoint B first (Open B…)")
            return
        if folder is None:
            self.status.setText("choose a folder of images first (Folder…)")
            return
        self.folder = folder
        task = Task(compare_with_top9_steps(a, self.b, folder, self.window.fit, self.window.layer))
        task.signals.yielded.connect(self._progress)
        task.signals.returned.connect(self._returned)
        task.signals.errored.connect(self._failed)
        task.signals.done.connect(self._task_done)
        self.task = task
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.cancel_button.setEnabled(True)
        self.run_button.setEnabled(False)
        self.status.setText(f"comparing on {folder}…")
        self.window.runner.start(task)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _progress(self, p) -> None:
        self.progress.setMaximum(max(1, p.total))
        self.progress.setValue(p.done)
        self.status.setText(p.note if p.note else f"comparing: {p.describe()}")

    def _failed(self, error) -> None:
        self.status.setText("")
        self.failed.emit(error)

    def _task_done(self) -> None:
        if self.sender() is not None and self.sender().task is not self.task:
            return
        cancelled = self.sender() is not None and self.sender().task.cancel_requested
        self.task = None
        self.progress.setVisible(False)
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(True)
        if cancelled:
            self.status.setText("cancelled")

    def _returned(self, out) -> None:
        result, self.indexes = out
        self.show_result(result)
        self.refresh_image()

    def show_result(self, result) -> None:
        self.result = result
        p, q = result.cka.shape
        shown = np.ascontiguousarray(np.nan_to_num(result.cka, nan=0.0).astype(np.float32))
        self.empty_hint.setVisible(False)
        self.heatmap.setImage(shown, autoLevels=False, levels=(0.0, 1.0))
        self.heatmap.setRect(QRectF(0, 0, q, p))
        self.heatmap_plot.getAxis("left").setTicks([[(i + 0.5, short_name(n)) for i, n in enumerate(result.layers_a)]])
        self.heatmap_plot.getAxis("bottom").setTicks(
            [[(j + 0.5, str(j)) for j in range(q)]])  # numbers across: names would overlap
        self.heatmap_plot.getAxis("bottom").setLabel("B (layer number; names in the tooltip)")
        self.heatmap_view.setToolTip("B's layers: " + ", ".join(f"{j} {n}" for j, n in enumerate(result.layers_b)))
        self.heatmap_plot.setRange(QRectF(0, 0, q, p), padding=0)
        cka = result.layer_cka()
        xs = np.arange(len(result.layers_a), dtype=float)
        change = [result.weight_change.get(n) for n in result.layers_a]
        change = np.array([0.0 if v is None or not np.isfinite(v) else v for v in change])
        values = np.array([cka.get(n, np.nan) for n in result.layers_a])
        self.change_bars.setOpts(x=xs - 0.2, height=change, width=0.38)
        self.cka_bars.setOpts(x=xs + 0.2, height=np.nan_to_num(values), width=0.38)
        self.bars_plot.getAxis("bottom").setTicks([[(i, str(i)) for i in range(len(xs))]])
        self.bars_view.setToolTip("\n".join(f"{i} {n}: weight change {c:.3g}, CKA {v:.3f}"
                                            for i, (n, c, v) in enumerate(zip(result.layers_a, change, values))))
        skipped = (f"; {len(result.skipped)} unreadable skipped "
                   f"({', '.join(Path(s['path']).name for s in result.skipped[:3])})") if result.skipped else ""
        self.status.setText(f"{result.images} images of {self.folder} in {result.batches} minibatches, "
                            f"{result.seconds:.1f} s{skipped}")

    # -- the current image -----------------------------------------------------------------------
    def refresh_image(self, *_args) -> None:
        from explorer.core.compare import compare_image  # noqa: PLC0415

        a, x = self.window.loaded, getattr(self.window, "x", None)
        if self.image_task is not None:
            self.image_pending = True  # again when the one in flight ends: the image or unit changed meanwhile
            return
        if self.b is None or a is None or x is None:
            return
        layer = self.window.layer
        names = dict(self.b.module.named_modules())
        layer = layer if layer in names else None
        task = Task(compare_image, a, self.b, x, layer, self.window.unit if layer else None)
        task.signals.returned.connect(self.show_image)
        task.signals.errored.connect(self._failed)
        task.signals.done.connect(self._image_done)
        self.image_task = task
        self.window.runner.start(task)

    def _image_done(self) -> None:
        self.image_task = None
        if self.image_pending:
            self.image_pending = False
            self.refresh_image()

    def show_image(self, out: dict) -> None:
        self.image_result = out

        def rows(top):
            return "<br>".join(f"{e['probability']:6.1%} &nbsp;{e['label']}" for e in top)

        self.top_a.setText(rows(out["top_a"]))
        self.top_b.setText(rows(out["top_b"]))
        if "unit" in out:
            self.unit_label.setText(f"{out['layer']} unit {out['unit']}: max activation A {out['unit_max_a']:.4g}, "
                                    f"B {out['unit_max_b']:.4g}" + self.top9_text(out["layer"], out["unit"]))
            hi = max(out["unit_max_a"], out["unit_max_b"], 1e-6)
            lo = min(float(out["unit_a"].min()), float(out["unit_b"].min()), 0.0)
            for pane, unit_map in ((self.unit_a, out["unit_a"]), (self.unit_b, out["unit_b"])):
                pane.set_image(np.ascontiguousarray(unit_map, dtype=np.float32), levels=(lo, hi),
                               lut=lookup_table("inferno"))
                pane.setVisible(True)
        else:
            self.unit_label.setText("")
            self.unit_a.setVisible(False)
            self.unit_b.setVisible(False)

    def top9_text(self, layer: str, unit: int) -> str:
        """How many of the unit's top-9 images of the folder stay the same, when the last Run indexed the layer."""
        from explorer.core.compare import top_overlap  # noqa: PLC0415

        if self.indexes is None or layer not in self.indexes[0].layers:
            return "; Run indexes this layer's top-9" if self.b is not None else ""
        counts = top_overlap(self.indexes[0], self.indexes[1], layer)
        if unit >= len(counts):
            return ""
        return (f"; top-9 in the folder: {counts[unit]} of 9 the same "
                f"(layer mean {counts.mean():.1f}, {int((counts == 9).sum())} of {len(counts)} units keep all 9)")
