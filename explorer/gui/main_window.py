"""The main window: model and input controls, the layer table, and the views as tabs.

The window holds the current model, input, layer and unit, asks the core for what to show through
workers (never computing on the GUI thread), and shows results as they arrive.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QImage, QKeySequence
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QDialog, QDockWidget, QFileDialog, QLabel,
                               QFrame, QMainWindow, QMessageBox, QProgressBar, QPushButton, QScrollArea, QTableWidget,
                               QTableWidgetItem, QTabWidget, QToolBar, QVBoxLayout, QWidget)

from explorer.core import preprocess
from explorer.core.models.device import available_devices, describe_device
from explorer.core.errors import ExplorerError, ModelLoadError, UntrustedCheckpointError, WeightsDownloadError
from explorer.core.explore import compute_filter_view, compute_layer_view
from explorer.core.models import LoadedModel, bundled_names, load_model_steps, zoo_names
from explorer.core.transformers import unit_count
from explorer.core.probe import default_layer, layer_table, leaves_of_rows

from explorer.gui.widgets.activation_view import ActivationView
from explorer.gui.widgets.filter_view import FilterPanel
from explorer.gui.panels.input import InputPanel
from explorer.gui.widgets.layer_table import LayerTable
from explorer.gui.widgets.spec_dialog import InputSpecDialog
from explorer.gui import keys
from explorer.gui.workers import LatestRunner, Task, TaskRunner, describe_error

MODEL_SUFFIXES = {".pt", ".pth", ".pt2", ".safetensors", ".ts", ".bin", ".ckpt"}


@dataclass
class ModelRequest:
    """What to load; ``device``, ``input_size``, ``mean``, ``std`` and ``labels`` (a file) as on the command line."""

    name: str | None = None
    checkpoint: str | None = None
    weights: str = "pretrained"
    trust: bool = False
    device: str | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: str | None = None


def load_model_with_table(request: ModelRequest, device: str | None):
    """Worker job (a generator: download progress, then the model and its layer table)."""
    loaded = yield from load_model_steps(request.name, checkpoint=request.checkpoint, weights=request.weights,
                                         trust_checkpoint=request.trust, device=request.device or device,
                                         input_size=request.input_size, mean=request.mean, std=request.std,
                                         labels_file=request.labels)
    return loaded, layer_table(loaded.module, loaded.spec.shape, loaded.device)


class MainWindow(QMainWindow):
    """``busy`` tells tests and the screenshot mode when all work has finished."""

    model_loaded = Signal(object)
    input_changed = Signal(object, object, object)  # LoadedModel, (1, C, H, W) input, (H, W, 3) picture

    def __init__(self, settings: QSettings | None = None, interactive: bool = True):
        super().__init__()
        self.setWindowTitle("Deep Explorer")
        self.setObjectName("DeepExplorerMain")
        self.setAcceptDrops(True)
        self.resize(1400, 880)
        self.settings = settings
        self.interactive = interactive  # False: never block on a dialog (screenshot mode)
        self.last_error: str | None = None
        self.errors: list[str] = []  # every message shown (the screenshot mode prints them)

        self.loaded: LoadedModel | None = None
        self.image: np.ndarray | None = None  # the original picture, before fitting
        self.input_tensor = None  # the (1, C, H, W) tensor of a .npy input, used as it is
        self.input_name = ""
        self.x = None  # (1, C, H, W) tensor the model reads
        self.picture: np.ndarray | None = None  # (H, W, 3) uint8: the input as the model sees it
        self.folder: list[Path] = []
        self.folder_index = -1
        self.layer: str | None = None
        self.unit = 0
        self.fit = "crop"
        self.norm = "layer"
        self.layer_view = None
        self.pending_layer: str | None = None
        self.pending_unit: int | None = None
        self.pending_tensor: Path | None = None  # a .npy opened before any model: read once one is loaded

        self.runner = TaskRunner(self)
        self.forward_runner = LatestRunner(self.runner, self)
        self.forward_runner.result.connect(self._show_layer_view)
        self.forward_runner.failed.connect(self.show_error)
        self.filter_runner = LatestRunner(self.runner, self)
        self.filter_runner.result.connect(lambda v: self.filters.set_filter_view(v))
        self.filter_runner.failed.connect(self.show_error)
        self.image_runner = LatestRunner(self.runner, self)  # decoding a big photo takes a while
        self.image_runner.result.connect(lambda loaded: self.set_image(*loaded))
        self.image_runner.failed.connect(self.show_error)
        self.input_runner = LatestRunner(self.runner, self)  # fitting and normalising the picture
        self.input_runner.result.connect(self._input_ready)
        self.input_runner.failed.connect(self.show_error)
        self.load_task: Task | None = None
        self.last_model_request = ModelRequest()

        self._build_views()
        self._build_toolbar()
        self._build_status_bar()
        self._build_menus()
        self._restore_settings()

    # -- building ------------------------------------------------------------------------------------
    def _build_views(self) -> None:
        self.activations = ActivationView()
        overlay_runner = LatestRunner(self.runner, self)
        overlay_runner.failed.connect(self.show_error)
        self.activations.set_overlay_runner(overlay_runner)
        self.activations.unit_selected.connect(self.set_unit)
        self.activations.norm_changed.connect(self._set_norm)
        self.activations.grid_aspect_changed.connect(self.recompute)  # tiles laid out to fill the pane
        self.filters = FilterPanel()
        self.filters.aspect_changed.connect(self.refresh_filters)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.views: dict[str, QWidget] = {}
        self.add_view("activations", "Activations", self.activations)
        self.add_view("filters", "Filters", self.filters)
        self.setCentralWidget(self.tabs)

        self.layers = LayerTable()
        self.layers.layer_selected.connect(self.set_layer)
        dock = QDockWidget("Layers", self)
        dock.setObjectName("LayersDock")
        dock.setWidget(self.layers)
        self.addDockWidget(Qt.LeftDockWidgetArea, dock)
        self.layers_dock = dock

        self.input_panel = InputPanel()
        dock = QDockWidget("Input and predictions", self)
        dock.setObjectName("InputDock")
        dock.setWidget(self.input_panel)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)
        self.input_dock = dock
        self.resizeDocks([self.layers_dock, self.input_dock], [500, 300], Qt.Horizontal)

    def add_view(self, key: str, title: str, widget: QWidget) -> None:
        """Add a panel as a tab; ``--view key`` and Ctrl+<n> show it."""
        self.views[key] = widget
        # in a scroll area, so one panel's wide controls do not squeeze the docks of every other tab
        page = QScrollArea()
        page.setWidgetResizable(True)
        page.setFrameShape(QFrame.NoFrame)
        page.setWidget(widget)
        self.tabs.addTab(page, title)

    def current_view(self) -> QWidget | None:
        """The panel of the tab shown now."""
        page = self.tabs.currentWidget()
        return page.widget() if page is not None else None

    def show_view(self, key: str) -> bool:
        if key not in self.views:
            return False
        self.tabs.setCurrentIndex(list(self.views).index(key))
        return True

    def _build_toolbar(self) -> None:
        bar = QToolBar("Model")
        bar.setObjectName("ModelToolbar")
        self.addToolBar(bar)
        self.model_toolbar = bar
        bar.addWidget(QLabel(" model "))
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setMinimumContentsLength(18)
        self.model_combo.addItems(bundled_names() + zoo_names())
        self.model_combo.setToolTip("Bundled model, torchvision model or timm:NAME (the vit extra); Enter loads "
                                    "it. Ctrl+M opens a file.")
        self.model_combo.activated.connect(lambda _i: self.load_model_by_name(self.model_combo.currentText()))
        bar.addWidget(self.model_combo)
        self.pretrained_box = QCheckBox("pretrained")
        self.pretrained_box.setChecked(True)
        self.pretrained_box.setToolTip("Download torchvision's pretrained weights once (cached); "
                                       "unchecked: random weights, shown as untrained")
        bar.addWidget(self.pretrained_box)
        bar.addSeparator()
        bar.addWidget(QLabel(" fit "))
        self.fit_combo = QComboBox()
        self.fit_combo.addItems(list(preprocess.FIT_MODES))
        self.fit_combo.setToolTip("How an image is brought to the model's input size")
        self.fit_combo.currentTextChanged.connect(self.set_fit)
        bar.addWidget(self.fit_combo)
        bar.addSeparator()
        prev_btn = QPushButton("◀")
        prev_btn.setToolTip("Previous image in the folder (PgUp)")
        prev_btn.clicked.connect(lambda: self.step_image(-1))
        next_btn = QPushButton("▶")
        next_btn.setToolTip("Next image in the folder (PgDown)")
        next_btn.clicked.connect(lambda: self.step_image(1))
        bar.addWidget(prev_btn)
        bar.addWidget(next_btn)

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.model_label = QLabel("no model")
        self.model_label.setToolTip("The loaded model; 'untrained' means random weights")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the download or computation (Esc)")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_work)
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.device_combo.setToolTip("Compute device; switch at any time")
        self.device_combo.activated.connect(lambda _i: self.set_device(self.device_combo.currentText()))
        self.device_label = QLabel("")
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.cancel_button)
        status.addPermanentWidget(self.model_label)
        status.addPermanentWidget(self.device_label)
        status.addPermanentWidget(self.device_combo)

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.WindowShortcut)
        action.setStatusTip(tip or text)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    def _build_menus(self) -> None:
        key = keys.sequence  # every key comes from the one registry (F1 and README are made from it too)
        m = self.menuBar().addMenu("&File")
        self._action(m, "Open image…", self.open_image_dialog, key("open_image"))
        self._action(m, "Open folder…", self.open_folder_dialog, key("open_folder"))
        self._action(m, "Paste image", self.paste_image, key("paste_image"))
        self._action(m, "Next image", lambda: self.step_image(1), key("next_image"))
        self._action(m, "Previous image", lambda: self.step_image(-1), key("previous_image"))
        m.addSeparator()
        self._action(m, "Export view as PNG…", self.export_view_dialog, key("export_view"))
        self._action(m, "Export window as PNG…", lambda: self.export_view_dialog(window=True), key("export_window"))
        m.addSeparator()
        self._action(m, "Quit", self.close, key("quit"))
        m = self.menuBar().addMenu("&Model")
        self._action(m, "Open model file…", self.open_model_dialog, key("open_model"),
                     "TorchScript, .pt2, state dict (.pt/.pth/.safetensors) or a whole pickled module")
        self._action(m, "Input settings…", self.edit_input_spec, key("input_settings"),
                     "Input size, mean/std and class labels")
        self._action(m, "Next layer", lambda: self.layers.step(1), key("next_layer"))
        self._action(m, "Previous layer", lambda: self.layers.step(-1), key("previous_layer"))
        self._action(m, "Cancel", self.cancel_work, key("cancel"))
        m = self.menuBar().addMenu("&View")
        self.view_actions: list[QAction] = []
        self._fill_view_menu(m)
        m = self.menuBar().addMenu("&Help")
        self._action(m, "Keyboard shortcuts", self.show_shortcuts, key("shortcuts"))
        self.shortcuts_dialog: QDialog | None = None

    def _fill_view_menu(self, menu) -> None:
        for i, name in enumerate(self.views):
            self.view_actions.append(self._action(menu, self.tabs.tabText(i), lambda _=False, k=name: self.show_view(k),
                                                  keys.view_sequence(i)))
        menu.addSeparator()
        menu.addAction(self.layers_dock.toggleViewAction())
        menu.addAction(self.input_dock.toggleViewAction())

    def refresh_view_menu(self) -> None:
        """Re-number Ctrl+<n> after panels were added with :meth:`add_view`."""
        for action in self.view_actions:
            self.removeAction(action)
            action.deleteLater()
        self.view_actions = []
        menu = [a.menu() for a in self.menuBar().actions() if a.text() == "&View"][0]
        menu.clear()
        self._fill_view_menu(menu)

    # -- room for the centre -------------------------------------------------------------------------
    MIN_CENTRE = 520  # px the tabs keep when the window shrinks (a 1024 px laptop screen); docks give way

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if event.size().width() < event.oldSize().width() or event.oldSize().width() < 0:
            self.keep_centre_room()

    def keep_centre_room(self) -> None:
        """Narrow the side docks so the centre keeps ``MIN_CENTRE`` px: the input dock first (to 190 px; its
        picture scales), then the layer table (to 160 px); wider windows leave the docks as the user sized them."""
        docks = [d for d in (self.input_dock, self.layers_dock) if d.isVisible() and not d.isFloating()]
        excess = self.MIN_CENTRE - self.centralWidget().width()
        if not docks or excess <= 0:
            return
        widths = []
        for dock in docks:
            floor = 190 if dock is self.input_dock else 160
            give = min(excess, max(dock.width() - floor, 0))
            widths.append(dock.width() - give)
            excess -= give
        self.resizeDocks(docks, widths, Qt.Horizontal)

    # -- settings ------------------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        if self.settings is None:
            return
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window_state")
        if state is not None:
            self.restoreState(state)
        fit = self.settings.value("fit")
        if fit in preprocess.FIT_MODES:
            self.fit_combo.setCurrentText(fit)

    def save_settings(self) -> None:
        if self.settings is None:
            return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("fit", self.fit)
        if self.loaded is not None:
            self.settings.setValue("last_model", self.last_model_request.checkpoint or self.last_model_request.name)
        if self.folder:
            self.settings.setValue("last_folder", str(self.folder[0].parent))
        self.settings.sync()

    # -- state ---------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return (not self.runner.idle or not self.forward_runner.idle or not self.filter_runner.idle
                or not self.image_runner.idle or not self.input_runner.idle or any(getattr(view, "busy", False) for view in self.views.values()))

    def show_error(self, error: BaseException | str) -> None:
        """One message for the user (an exception is described in one line; its traceback is in the log)."""
        message = describe_error(error)
        self.last_error = message
        self.errors.append(message)
        self.statusBar().showMessage(message, 15000)
        if self.interactive:
            QMessageBox.warning(self, "Deep Explorer", message)

    def cancel_work(self) -> None:
        for task in list(self.runner.active):
            task.cancel()

    # -- model ---------------------------------------------------------------------------------------
    def load_model_by_name(self, name: str) -> None:
        name = name.strip()
        if Path(name).suffix.lower() in MODEL_SUFFIXES and Path(name).exists():
            self.load_model(ModelRequest(checkpoint=name))
            return
        weights = "pretrained" if self.pretrained_box.isChecked() else "none"
        request = ModelRequest(name=name, weights=weights)
        if self.load_task is not None and self.last_model_request == request:
            return  # Enter in the combo's editor activates it twice (the editor and its completer)
        self.load_model(request)

    def load_model(self, request: ModelRequest) -> None:
        """Load in a worker; progress (downloads) in the status bar, cancellable."""
        if self.load_task is not None:
            self.load_task.cancel()
        self.last_model_request = request
        device = self.device_combo.currentText() if self.loaded is not None else None
        task = Task(load_model_with_table, request, device)
        task.signals.returned.connect(self._model_ready)
        task.signals.errored.connect(lambda exc, r=request: self._model_failed(r, exc))
        task.signals.cancelled.connect(lambda: self.statusBar().showMessage("model loading cancelled", 5000))
        task.signals.yielded.connect(self._show_progress)
        task.signals.done.connect(self._load_done)
        self.load_task = task
        label = request.checkpoint or request.name or "default model"
        self.statusBar().showMessage(f"loading {label}…")
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.runner.start(task)

    def _show_progress(self, value) -> None:
        done, total = value
        if total:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
            self.progress.setFormat(f"weights %p% of {total / 1e6:.0f} MB")
        else:
            self.progress.setRange(0, 0)

    def _load_done(self) -> None:
        if self.load_task is not None and self.load_task.signals is self.sender():
            self.load_task = None
        if self.load_task is None:
            self.progress.setVisible(False)
            self.cancel_button.setVisible(False)

    def _model_failed(self, request: ModelRequest, error: BaseException) -> None:
        message = describe_error(error)
        if (request.weights == "pretrained" and request.checkpoint is None
                and isinstance(error, WeightsDownloadError) and error.random_weights_fallback):
            question = f"{message}\n\nContinue with random weights (the model will be marked untrained)?"
            if not self.interactive or QMessageBox.question(self, "Deep Explorer", question) == QMessageBox.Yes:
                self.pretrained_box.setChecked(False)  # what is loaded now: random weights
                self.load_model(replace(request, weights="none"))
                return
        if request.checkpoint and not request.trust and isinstance(error, UntrustedCheckpointError):
            question = (f"{message}\n\nLoad it anyway? Only do this for files you trust: unpickling can run "
                        "any code on this computer.")
            if self.interactive and QMessageBox.question(self, "Untrusted checkpoint", question,
                                                         QMessageBox.Yes | QMessageBox.No,
                                                         QMessageBox.No) == QMessageBox.Yes:
                self.load_model(replace(request, trust=True))
                return
        self.show_error(message)
        if request.labels and isinstance(error, ModelLoadError) and "labels file" in message:
            self.load_model(replace(request, labels=None))  # the model without the labels that do not fit it

    def _model_ready(self, result) -> None:
        loaded, rows = result
        self.loaded = loaded
        if self.pending_tensor is not None:
            path, self.pending_tensor = self.pending_tensor, None
            self.open_image(path)
        self.model_label.setText(f"model: {loaded.display_name}")
        self.model_label.setStyleSheet("" if loaded.trained else "color: #d08000")
        self.device_label.setText(describe_device(loaded.device))
        self.device_combo.setCurrentText(str(loaded.device))
        self.setWindowTitle(f"Deep Explorer — {loaded.display_name}")
        self.statusBar().showMessage(f"loaded {loaded.source}", 8000)
        if self.model_combo.currentText() != loaded.name:
            self.model_combo.setEditText(loaded.name)
        self.layers.set_rows(rows)
        self.layer = None  # the old model's layer: no name of it may reach the new model
        self._prepare_input()
        self._check_pending_options(loaded, rows)
        wanted = self.pending_layer if self.pending_layer in self.layers.names() else self.default_layer(rows)
        self.pending_layer = None
        if self.pending_unit is not None:
            self.unit = self.pending_unit
            self.pending_unit = None
        else:
            self.unit = 0
        self.layer = None
        if wanted:
            self.layers.select_layer(wanted)
        self.model_loaded.emit(loaded)

    def _check_pending_options(self, loaded: LoadedModel, rows) -> None:
        """``--layer`` and ``--unit`` name something of this model, or the user is told (and the default is used)."""
        names = self.layers.names()
        if self.pending_layer is not None and self.pending_layer not in names:
            self.show_error(f"no layer named {self.pending_layer!r} in {loaded.name} "
                            f"(e.g. {', '.join(names[:4])}); the default layer is shown")
            self.pending_layer = None
        if self.pending_unit is None:
            return
        layer = self.pending_layer or self.default_layer(rows)
        shape = next((r.output_shape for r in rows if r.name == layer), None)
        units = unit_count(loaded.module, shape, loaded.spec.size) if shape else None  # a ViT's: its channels
        if self.pending_unit < 0 or (units is not None and self.pending_unit >= units):
            self.show_error(f"unit {self.pending_unit} is out of range: layer {layer} has {units} units "
                            f"(0 to {units - 1}); unit 0 is shown" if units else
                            f"unit {self.pending_unit} is out of range; unit 0 is shown")
            self.pending_unit = None

    @staticmethod
    def default_layer(rows) -> str | None:
        """The core's one default-layer rule, on the layer table's rows."""
        return default_layer(leaves_of_rows(rows))

    def set_device(self, device: str) -> None:
        if self.loaded is None or str(self.loaded.device) == device:
            return
        task = Task(self.loaded.to, device)
        task.signals.returned.connect(lambda loaded: (self.device_label.setText(describe_device(loaded.device)),
                                                      self.recompute()))
        task.signals.errored.connect(self.show_error)
        self.runner.start(task)

    def edit_input_spec(self) -> None:
        if self.loaded is None:
            return
        dialog = InputSpecDialog(self.loaded.spec, self)
        if dialog.exec():
            try:
                spec = dialog.result_spec()
            except ExplorerError as exc:
                self.show_error(str(exc))
                return
            self.apply_input_spec(spec)

    def apply_input_spec(self, spec) -> None:
        """Use a new input spec: the layer table and everything shown follow the new size."""
        if self.loaded is None:
            return
        self.loaded.spec = spec
        task = Task(layer_table, self.loaded.module, spec.shape, self.loaded.device)
        task.signals.returned.connect(self._table_ready)
        task.signals.errored.connect(self.show_error)
        self.runner.start(task)

    def _table_ready(self, rows) -> None:
        layer = self.layer
        self.layers.set_rows(rows)
        self.layer = None
        self._prepare_input()
        if layer:
            self.layers.select_layer(layer)

    # -- input ---------------------------------------------------------------------------------------
    def open_image(self, path: str | Path) -> bool:
        """Read an image (or .npy tensor) in a worker; it becomes the input when read, or an error is shown."""
        path = Path(path)
        if path.is_dir():
            return self.open_folder(path)
        if self.loaded is None and path.suffix.lower() == ".npy" and self.load_task is not None:
            self.pending_tensor = path  # a tensor needs the model's input spec: read it when the model is here
            return True
        spec = self.loaded.spec if self.loaded is not None else None
        self.image_runner.submit(read_named_picture, path, spec)
        return True

    def open_folder(self, folder: str | Path) -> bool:
        try:
            files = preprocess.list_images(folder)
        except ExplorerError as exc:
            self.show_error(str(exc))
            return False
        if not files:
            self.show_error(f"folder {folder} holds no images")
            return False
        self.folder = files
        self.folder_index = 0
        return self.open_image(files[0])

    def step_image(self, delta: int) -> None:
        if not self.folder:
            return
        self.folder_index = (self.folder_index + delta) % len(self.folder)
        self.open_image(self.folder[self.folder_index])

    def set_image(self, image: np.ndarray, name: str = "", tensor=None) -> None:
        """A new input: a picture, or (from a .npy) the preprocessed tensor and the picture it encodes."""
        self.image = image
        self.input_tensor = tensor
        self.input_name = name
        self._prepare_input()

    def set_fit(self, fit: str) -> None:
        self.fit = fit
        self._prepare_input()

    def _prepare_input(self) -> None:
        """Fit the current image to the model's input in a worker (newest request wins), then recompute."""
        if self.image is None or self.loaded is None:
            return
        self.input_runner.submit(_fitted_input, self.image, self.loaded, self.fit, self.input_name,
                                 self.folder_index, self.input_tensor)

    def _input_ready(self, prepared) -> None:
        image, loaded, spec, fit, name, index, (x, picture) = prepared
        if image is not self.image or loaded is not self.loaded or spec is not loaded.spec or fit != self.fit:
            return  # the picture, model or fit changed meanwhile: a newer request is on its way
        self.x, self.picture = x, picture
        where = f" ({index + 1}/{len(self.folder)})" if self.folder else ""
        h, w = self.image.shape[:2]
        self.input_panel.set_picture(self.picture, f"{name}{where} · {w}x{h} → "
                                     f"{self.loaded.spec.size[1]}x{self.loaded.spec.size[0]} ({self.fit})")
        self.activations.set_picture(self.picture)
        self.input_changed.emit(self.loaded, self.x, self.picture)
        self.recompute()

    def paste_image(self) -> None:
        image = QApplication.clipboard().image()
        if image.isNull():
            self.show_error("the clipboard holds no image")
            return
        self.set_image(qimage_to_array(image), "pasted image")

    # -- layer and unit ------------------------------------------------------------------------------
    def set_layer(self, name: str) -> None:
        if name == self.layer:
            return
        self.layer = name
        self.recompute()

    def set_unit(self, unit: int) -> None:
        self.unit = unit
        if self.activations.unit != unit:
            self.activations.select_unit(unit)
        self.refresh_filters()

    def refresh_filters(self) -> None:
        """The Filters tab's grids for the layer and unit, laid out to fill their panes."""
        if self.loaded is not None:
            self.filter_runner.submit(compute_filter_view, self.loaded.module, self.layer, self.unit,
                                      *self.filters.request_aspects())

    def _set_norm(self, norm: str) -> None:
        self.norm = norm
        self.recompute()

    def recompute(self) -> None:
        if self.loaded is None:
            return
        self.refresh_filters()
        if self.x is None:
            return
        self.forward_runner.submit(compute_layer_view, self.loaded, self.x, self.layer, self.norm, 5,
                                   self.activations.request_aspect())

    def _show_layer_view(self, view) -> None:
        self.layer_view = view
        if view is None:
            return
        if view.layer != (self.layer or ""):
            return  # a newer request is on its way
        if self.loaded is not None:
            self.input_panel.set_predictions(view.top5, self.loaded.trained)
        self.activations.set_layer_view(view, self.unit)
        self.unit = self.activations.unit

    # -- files ---------------------------------------------------------------------------------------
    def open_image_dialog(self) -> None:
        start = self.settings.value("last_folder", "") if self.settings else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open image", start,
                                              "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.npy);;"
                                              "All files (*)")
        if path:
            self.open_image(path)

    def open_folder_dialog(self) -> None:
        start = self.settings.value("last_folder", "") if self.settings else ""
        folder = QFileDialog.getExistingDirectory(self, "Open folder of images", start)
        if folder:
            self.open_folder(folder)

    def open_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model file", "",
                                              "Models (*.pt *.pth *.pt2 *.safetensors *.ts *.ckpt);;All files (*)")
        if path:
            arch = self.model_combo.currentText() if self.model_combo.currentText() in zoo_names() else None
            self.load_model(ModelRequest(name=arch, checkpoint=path))

    def export_view(self, path: str | Path, window: bool = False) -> bool:
        widget = self if window else self.current_view()
        ok = widget.grab().save(str(path))
        self.statusBar().showMessage(f"saved {path}" if ok else f"could not save {path}", 5000)
        return ok

    def export_view_dialog(self, window: bool = False) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export as PNG", "view.png", "PNG (*.png)")
        if path:
            self.export_view(path, window=window)

    def show_shortcuts(self) -> None:
        """F1: every binding of :mod:`explorer.gui.keys` in a table (keys, action, where); not modal."""
        if self.shortcuts_dialog is None:
            dialog = QDialog(self)
            dialog.setWindowTitle("Keyboard shortcuts")
            rows = keys.help_rows()
            table = QTableWidget(len(rows), 3, dialog)
            table.setHorizontalHeaderLabels(["keys", "action", "where"])
            for r, row in enumerate(rows):
                for c, text in enumerate(row):
                    table.setItem(r, c, QTableWidgetItem(text))
            table.setEditTriggers(QTableWidget.NoEditTriggers)
            table.verticalHeader().setVisible(False)
            table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 8)
            table.resizeColumnsToContents()
            table.horizontalHeader().setStretchLastSection(True)
            layout = QVBoxLayout(dialog)
            layout.addWidget(table)
            dialog.resize(min(900, table.horizontalHeader().length() + 60), 700)
            dialog.table = table
            self.shortcuts_dialog = dialog
        self.shortcuts_dialog.show()
        self.shortcuts_dialog.raise_()

    # -- drag and drop -------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        mime = event.mimeData()
        if mime.hasUrls():
            for url in mime.urls():
                self.open_path(url.toLocalFile())
                break
        elif mime.hasImage():
            self.set_image(qimage_to_array(QImage(mime.imageData())), "dropped image")
        event.acceptProposedAction()

    def open_path(self, path: str | Path) -> None:
        """A dropped or named path: a model file loads the model; an image or a folder becomes the input."""
        p = Path(path)
        if p.suffix.lower() in MODEL_SUFFIXES and p.is_file():
            self.load_model(ModelRequest(checkpoint=str(p)))
        else:
            self.open_image(p)

    def closeEvent(self, event) -> None:  # noqa: N802
        if self.shortcuts_dialog is not None:
            self.shortcuts_dialog.close()
        self.save_settings()
        self.runner.shutdown()
        for view in self.views.values():
            if hasattr(view, "shutdown"):
                view.shutdown()
        super().closeEvent(event)


def _fitted_input(image: np.ndarray, loaded: LoadedModel, fit: str, name: str, index: int, tensor=None):
    """Worker job: the model's input and the picture it sees, with what they were made from. A tensor
    that fits the model's input is used as it is; otherwise its picture is fitted like any image."""
    spec = loaded.spec
    if tensor is not None and tuple(tensor.shape[1:]) == tuple(spec.shape):
        return image, loaded, spec, fit, name, index, (tensor, image)
    return image, loaded, spec, fit, name, index, preprocess.prepare_input(image, spec, fit)


def read_named_picture(path: Path, spec) -> tuple[np.ndarray, str, object]:
    """Worker job: the picture in ``path``, the name to show for it, and for a .npy the tensor itself
    (already preprocessed: the model reads it as it is, as on the command line)."""
    if path.suffix.lower() == ".npy" and spec is not None:
        x, picture = preprocess.load_input(path, spec)
        return picture, path.name, x
    return preprocess.read_picture(path, spec), path.name, None


def qimage_to_array(image: QImage) -> np.ndarray:
    """A QImage as (H, W, 3) uint8 RGB (a copy)."""
    image = image.convertToFormat(QImage.Format_RGB888)
    w, h, stride = image.width(), image.height(), image.bytesPerLine()
    buffer = np.frombuffer(image.constBits(), np.uint8, count=stride * h).reshape(h, stride)
    return np.ascontiguousarray(buffer[:, : w * 3].reshape(h, w, 3))


def wait_until_idle(window: MainWindow, callback, timeout_ms: int = 180_000) -> None:
    """Call ``callback()`` once the window has no work left (polls, so it never blocks the GUI)."""
    timer = QTimer(window)
    elapsed = {"ms": 0, "quiet": 0}

    def poll() -> None:
        elapsed["ms"] += 100
        elapsed["quiet"] = elapsed["quiet"] + 1 if not window.busy else 0
        if elapsed["quiet"] >= 3 or elapsed["ms"] >= timeout_ms:
            timer.stop()
            callback()

    timer.timeout.connect(poll)
    timer.start(100)
