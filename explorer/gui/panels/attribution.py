"""The attribution panel: which pixels matter to a class score or a unit, overlaid on the input.

Every computation is a core call run in the thread pool (:mod:`explorer.gui.workers`); occlusion streams its
partial maps through the task's progress signal and is cancelled between batches. Nothing here computes
on tensors.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QScrollArea, QSlider, QSpinBox, QSplitter, QVBoxLayout,
                               QWidget)

from explorer.core.attribution.attention import FUSIONS
from explorer.core.attribution.methods import (METHODS, TRANSFORMER_METHODS, AttentionSettings, AttributionResult,
                                               AttributionStep, attribution_steps, cam_layer_choices,
                                               map_levels)
from explorer.core.attribution.backprop import note_is_warning
from explorer.core.attribution.occlusion import BASELINES, OcclusionSettings
from explorer.core.attribution.target import Target
from explorer.core.colormaps import COLORMAPS, auto_colormap
from explorer.core.transformers import token_at
from explorer.gui.widgets.image_pane import ImagePane, lookup_table
from explorer.gui.widgets.target_box import TargetBox
from explorer.gui.workers import Task, TaskRunner, describe_error

GRADIENT_METHODS = ("gradient", "deconvnet", "guided-backprop", "gradcam", "guided-gradcam")
TARGET_KINDS = ("top class", "class", "unit")


class AttributionPanel(QWidget):
    """Method, target and occlusion settings; the map over the input; progress and cancel.

    Call :meth:`set_context` with the model, its input tensor and the picture the model sees; set the
    target from outside with :meth:`set_target_class` or :meth:`set_target_unit`.
    """

    target_changed = Signal(object)  # the Target now explained
    result_ready = Signal(object)  # AttributionResult
    failed = Signal(object)  # the exception

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loaded = None
        self.input_tensor = None
        self.picture: np.ndarray | None = None
        self.result: AttributionResult | None = None
        self.display: np.ndarray | None = None  # the map shown now (H, W)
        self.levels: tuple[float, float] = (0.0, 1.0)
        self.signed = False
        self.runner = TaskRunner(self)
        self.task: Task | None = None
        self._rerun = False
        self._build()
        self._update_enabled()

    # --- layout -------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.pane = ImagePane(self, title="attribution")
        self.method = QComboBox()
        self.method.addItems(METHODS)
        self.method.setCurrentText("guided-backprop")
        self.targets = TargetBox(TARGET_KINDS, score=True, kind_label="explain")
        tb = self.targets  # the shared target controls (gui/widgets/target_box.py), under the panel's names
        self.target_kind, self.class_index, self.class_label = tb.kind, tb.class_index, tb.class_label
        self.layer, self.unit, self.score = tb.layer, tb.unit, tb.score
        self.cam_layer = QComboBox()
        self.query = QSpinBox()  # attention: the query token (click a patch on the map to pick it)
        self.query.setRange(0, 99999)
        self.query.setSpecialValueText("class token")
        self.query.setToolTip("the token whose attention is shown: 0 is the class token; click a patch "
                              "on the image to pick that patch")
        self.head = QSpinBox()
        self.head.setRange(-1, 999)
        self.head.setValue(-1)
        self.head.setSpecialValueText("mean")
        self.fusion = QComboBox()
        self.fusion.addItems(FUSIONS)
        self.discard = QDoubleSpinBox()
        self.discard.setRange(0.0, 0.99)
        self.discard.setSingleStep(0.05)
        self.discard.setValue(0.9)
        self.window_size = QSpinBox()
        self.window_size.setRange(1, 512)
        self.window_size.setValue(16)
        self.stride = QSpinBox()
        self.stride.setRange(1, 512)
        self.stride.setValue(8)
        self.baseline = QComboBox()
        self.baseline.addItems(BASELINES)
        self.progressive = QCheckBox("coarse first")
        self.progressive.setChecked(True)
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.live = QCheckBox("live (gradient methods)")
        self.run_button = QPushButton("Compute")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.status = QLabel("no model or input yet")
        self.status.setWordWrap(True)

        target_box = QGroupBox("target")
        QVBoxLayout(target_box).addWidget(self.targets)
        tf = self.targets.form
        method_box = QGroupBox("method")
        mf = QFormLayout(method_box)
        mf.addRow("method", self.method)
        mf.addRow("layer (CAM, attention)", self.cam_layer)
        mf.addRow("query token", self.query)
        mf.addRow("head", self.head)
        mf.addRow("head fusion", self.fusion)
        mf.addRow("discard ratio", self.discard)
        mf.addRow("window", self.window_size)
        mf.addRow("stride", self.stride)
        mf.addRow("baseline", self.baseline)
        mf.addRow("", self.progressive)
        view_box = QGroupBox("view")
        vf = QFormLayout(view_box)
        vf.addRow("colormap", self.colormap)
        vf.addRow("opacity", self.opacity)
        vf.addRow("", self.live)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        side = QVBoxLayout()
        for w in (method_box, target_box, view_box):
            side.addWidget(w)
        side.addLayout(buttons)
        side.addWidget(self.progress)
        side.addWidget(self.note)
        side.addWidget(self.status)
        side.addStretch(1)
        side_widget = QWidget()
        side_widget.setLayout(side)
        # laptop screens: the controls scroll on their own (the map keeps the window's height), and a
        # splitter lets the map take the width; long form rows put the field under its label when narrow
        for form in (tf, mf, vf):
            form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        side_widget.setMinimumWidth(230)
        side_scroll = QScrollArea()
        side_scroll.setWidget(side_widget)
        side_scroll.setWidgetResizable(True)
        side_scroll.setFrameShape(QFrame.NoFrame)
        side_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        side_scroll.setMinimumWidth(230 + side_scroll.verticalScrollBar().sizeHint().width())
        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(self.pane)
        splitter.addWidget(side_scroll)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 0)
        splitter.setCollapsible(0, False)
        splitter.setSizes([10_000, 250])
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        self.splitter = splitter

        self.run_button.clicked.connect(self.compute)
        self.cancel_button.clicked.connect(self.cancel)
        self.method.currentTextChanged.connect(self._settings_changed)
        self.targets.changed.connect(self._settings_changed)
        self.cam_layer.currentTextChanged.connect(self._settings_changed)
        for w in (self.query, self.head, self.discard):
            w.valueChanged.connect(self._attention_changed)
        self.fusion.currentTextChanged.connect(self._attention_changed)
        self.pane.clicked.connect(self._on_pane_clicked)
        self.colormap.currentTextChanged.connect(self._redraw)
        self.opacity.valueChanged.connect(self._redraw)
        self.live.toggled.connect(self._settings_changed)

    # --- public ---------------------------------------------------------------------------------------

    def set_context(self, loaded_model, input_tensor, picture_uint8: np.ndarray) -> None:
        """The model (a :class:`~explorer.core.models.LoadedModel`), its input (1, C, H, W) (the worker
        moves it to the model's device), and the (H, W, 3) uint8 picture of that input."""
        model_changed = loaded_model is not self.loaded
        self.loaded, self.input_tensor, self.picture = loaded_model, input_tensor, picture_uint8
        if model_changed:
            cam_names, cam_default = cam_layer_choices(loaded_model.module)
            self.targets.set_model(loaded_model)  # the layer box on the model's default layer
            self.cam_layer.blockSignals(True)
            self.cam_layer.clear()
            self.cam_layer.addItems(cam_names)
            self.cam_layer.blockSignals(False)
            if self.cam_layer.count():  # a CNN's last conv; a transformer's late normalisation
                self.cam_layer.blockSignals(True)
                self.cam_layer.setCurrentIndex(max(0, self.cam_layer.findText(cam_default or ""))
                                               if cam_default else self.cam_layer.count() - 1)
                self.cam_layer.blockSignals(False)
        self.result = None
        self.display = None
        self.pane.set_image(picture_uint8)
        self.pane.set_overlay(None)
        self._update_class_label()
        self._update_enabled()
        self.status.setText(f"{loaded_model.display_name}: choose a method and compute")
        if self._live_applies():
            self.compute()

    def set_target_class(self, index: int) -> None:
        """Explain class ``index`` (e.g. a click in the top-5)."""
        self.targets.set_class(index)

    def set_target_unit(self, layer: str, unit: int) -> None:
        """Explain ``unit`` of ``layer`` (e.g. a click in the activation grid)."""
        self.targets.set_unit(layer, unit)

    def current_target(self) -> Target | None:
        """The target the controls describe; None for the top class (found by the worker)."""
        return self.targets.target()

    def occlusion_settings(self) -> OcclusionSettings:
        return OcclusionSettings(window=self.window_size.value(), stride=self.stride.value(),
                                 baseline=self.baseline.currentText(), progressive=self.progressive.isChecked())

    def attention_settings(self) -> AttentionSettings:
        head = self.head.value()
        return AttentionSettings(query=self.query.value(), head=None if head < 0 else head,
                                 fusion=self.fusion.currentText(), discard_ratio=self.discard.value())

    def _attention_changed(self, *_) -> None:
        if self.result is not None and self.method.currentText() in TRANSFORMER_METHODS and self.loaded is not None:
            self.compute()  # cheap (one forward): follow the settings

    def _on_pane_clicked(self, row: float, col: float) -> None:
        """With attention shown, a click on a patch makes it the query token."""
        result = self.result
        if (result is None or result.grid is None or self.method.currentText() != "attention"
                or self.picture is None):
            return
        token = token_at(result.grid, result.prefix, self.picture.shape[:2], row, col)
        if token is not None and token != self.query.value():
            self.query.setValue(token)  # recomputes

    @property
    def busy(self) -> bool:
        return self.task is not None

    def compute(self) -> None:
        """Start the chosen method in the background (a running one is cancelled first)."""
        if self.loaded is None or self.input_tensor is None:
            return
        if self.task is not None:
            self._rerun = True
            self.task.cancel()
            return
        target = self.current_target()
        method = self.method.currentText()
        cam = self.cam_layer.currentText() or None
        self.task = Task(attribution_steps, self.loaded.module, self.input_tensor, method, target,
                         self.occlusion_settings(), cam, self.score.currentText(), self.attention_settings())
        self.task.signals.yielded.connect(self._on_step)
        self.task.signals.returned.connect(self._on_result)
        self.task.signals.errored.connect(self._on_failed)
        self.task.signals.cancelled.connect(self._on_cancelled)
        self.task.signals.done.connect(self._on_done)
        self.progress.setRange(0, 0 if method != "occlusion" else 1)
        what = target.describe(self.loaded.spec.labels) if target is not None else "the top class"
        self.status.setText(f"computing {method} for {what} ...")
        self.note.setText("")
        self.runner.start(self.task)
        self._update_enabled()

    def cancel(self) -> None:
        self._rerun = False
        if self.task is not None:
            self.task.cancel()

    def shutdown(self) -> None:
        """Cancel and wait for the running task (call before the panel is destroyed)."""
        self.runner.shutdown()

    # --- results (GUI thread) -------------------------------------------------------------------------

    def _on_step(self, step: AttributionStep) -> None:
        self.progress.setRange(0, step.total)
        self.progress.setValue(step.done)
        self.display, self.levels, self.signed = step.display, step.levels, step.signed
        self.status.setText(f"occlusion {step.stage}: {step.done}/{step.total} windows")
        self._redraw()

    def _on_result(self, result: AttributionResult) -> None:
        self.result = result
        lo, hi, cmap = map_levels(result.display)
        self.display, self.levels, self.signed = result.display, (lo, hi), cmap == "diverging"
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        extra = f", {result.mode}" if result.mode else ""
        layer = f" at {result.layer}" if result.layer else ""
        self.status.setText(f"{result.method}{layer} of {result.target.describe(self.loaded.spec.labels)}: "
                            f"{result.seconds:.2f} s{extra}")
        if result.target.class_index is not None and self.target_kind.currentText() == "top class":
            # the worker found the top class: the class field shows it (not the last class typed)
            self.targets.show_class(result.target.class_index)
        self.note.setText(result.note)
        # a warning in orange, an informational note (where the rule applied) in the normal colour
        self.note.setStyleSheet("color: #b36b00; font-weight: bold;" if note_is_warning(result.note) else "")
        self._redraw()
        self.target_changed.emit(result.target)
        self.result_ready.emit(result)

    def _on_failed(self, error: BaseException) -> None:
        self.status.setText(f"failed: {describe_error(error)}")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.failed.emit(error)

    def _on_cancelled(self) -> None:
        self.status.setText("cancelled (the partial map stays shown)")
        self.progress.setRange(0, 1)

    def _on_done(self) -> None:
        self.task = None
        self._update_enabled()
        if self._rerun:
            self._rerun = False
            self.compute()

    # --- drawing --------------------------------------------------------------------------------------

    def _lookup_table(self) -> np.ndarray:
        name = self.colormap.currentText()
        return lookup_table(auto_colormap(self.signed) if name == "auto" else name)

    def _redraw(self) -> None:
        if self.display is None:
            self.pane.set_overlay(None)
            self.pane.set_colorbar(None)
            return
        lut = self._lookup_table()
        self.pane.set_overlay(self.display, lut=lut, opacity=self.opacity.value() / 100, levels=self.levels)
        self.pane.set_colorbar(self.levels, lut, "attribution")

    # --- state ----------------------------------------------------------------------------------------

    def _live_applies(self) -> bool:
        return self.live.isChecked() and self.method.currentText() in GRADIENT_METHODS and self.loaded is not None

    def _settings_changed(self, *_) -> None:
        self._update_class_label()
        self._update_enabled()
        if self._live_applies():
            self.compute()

    def _update_class_label(self) -> None:
        self.targets.update_label()

    def _update_enabled(self) -> None:
        method = self.method.currentText()
        ready = self.loaded is not None and self.input_tensor is not None
        for w in (self.window_size, self.stride, self.baseline, self.progressive):
            w.setEnabled(method == "occlusion")
        self.cam_layer.setEnabled(method in ("gradcam", "guided-gradcam", "attention"))
        self.query.setEnabled(method == "attention")
        self.head.setEnabled(method == "attention")
        self.fusion.setEnabled(method == "rollout")
        self.discard.setEnabled(method in ("rollout", "gradient-rollout"))
        self.targets.update_enabled()
        self.run_button.setEnabled(ready)
        self.cancel_button.setEnabled(self.task is not None)
