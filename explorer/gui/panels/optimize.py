"""The Optimize panel: images made by gradient steps on the input, watched as they evolve.

Methods: a class model (Simonyan), Yosinski's regularised ascent (with the Table-1 presets), Fourier
feature visualisation (Olah), DeepDream and feature inversion of the window's input. The target is the
explorer's current class or unit. Every few steps the image and the objective's curve update; Stop
cancels at the next step; Save writes the PNG and beside it a JSON with the settings that make it again.
All computation is the core's (:mod:`explorer.core.optimize`), run by a :class:`~explorer.gui.workers.Task`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from explorer.core.attribution.target import Target
from explorer.core.optimize.dream import DreamSettings, dream_steps
from explorer.core.optimize.invert import InvertSettings, invert_steps
from explorer.core.optimize.presets import YOSINSKI_PRESETS
from explorer.core.optimize.visualize import VisualizeSettings, visualize_steps
from explorer.core.outputs import atomic_write, check_destination
from explorer.gui.widgets.image_pane import ImagePane
from explorer.gui.widgets.target_box import TargetBox
from explorer.gui.workers import Task, TaskRunner, describe_error

METHODS = ("fourier", "yosinski", "simonyan", "deepdream", "invert")
_FLOATS = ("lr", "l2", "decay", "blur_sigma", "norm_percentile", "contribution_percentile", "diversity",
           "octave_scale", "step_size", "lambda_alpha", "lambda_tv")


def side_by_side(pictures: list[np.ndarray]) -> np.ndarray:
    parts: list[np.ndarray] = []
    for p in pictures:
        if parts:
            parts.append(np.full((p.shape[0], 4, 3), 255, np.uint8))
        parts.append(p)
    return np.concatenate(parts, axis=1)


class OptimizePanel(QWidget):
    failed = Signal(object)
    finished = Signal(object)  # the result

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loaded = None
        self.input_tensor = None
        self.picture: np.ndarray | None = None
        self.task: Task | None = None
        self.result = None
        self.record: dict | None = None
        self.shown: np.ndarray | None = None
        self.steps_seen = 0
        self.runner = TaskRunner(self)
        self._build()
        self._update_enabled()

    def _build(self) -> None:
        self.pane = ImagePane(self, title="image")
        self.curve = pg.PlotWidget(title="objective")
        self.curve.setMaximumHeight(180)
        self.curve_line = self.curve.plot([], [], pen=pg.mkPen("#1f77b4", width=2))
        self.method = QComboBox()
        self.method.addItems(METHODS)
        self.target_box = TargetBox(("class", "unit"), kind_label="target")
        tb = self.target_box  # its controls, under the names the panel (and its tests) use
        self.target_kind, self.class_index, self.class_label = tb.kind, tb.class_index, tb.class_label
        self.layer, self.unit = tb.layer, tb.unit
        self.preset = QComboBox()
        self.preset.addItem("none")
        for n, (text, _) in YOSINSKI_PRESETS.items():
            self.preset.addItem(f"{n}: {text}")
        self.steps = QSpinBox()
        self.steps.setRange(0, 100000)
        self.steps.setSpecialValueText("default")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.fields: dict[str, QLineEdit] = {}
        for name in _FLOATS:
            edit = QLineEdit()
            edit.setPlaceholderText("default")
            self.fields[name] = edit
        self.blur_every = QSpinBox()
        self.blur_every.setRange(-1, 1000)
        self.blur_every.setSpecialValueText("default")
        self.blur_every.setValue(-1)
        self.jitter = QSpinBox()
        self.jitter.setRange(-1, 512)
        self.jitter.setSpecialValueText("default")
        self.jitter.setValue(-1)
        self.transforms = QCheckBox("transformation robustness")
        self.transforms.setChecked(True)
        self.decorrelate = QCheckBox("decorrelated colour")
        self.decorrelate.setChecked(True)
        self.batch = QSpinBox()
        self.batch.setRange(1, 8)
        self.octaves = QSpinBox()
        self.octaves.setRange(1, 10)
        self.octaves.setValue(4)
        self.invert_layers = QLineEdit()
        self.invert_layers.setPlaceholderText("layers, comma-separated (default: the target layer)")
        self.run_button = QPushButton("Run")
        self.stop_button = QPushButton("Stop")
        self.save_button = QPushButton("Save…")
        self.progress = QProgressBar()
        self.status = QLabel("no model yet")
        self.status.setWordWrap(True)

        box = QGroupBox("method and target")
        f = QFormLayout(box)
        f.addRow("method", self.method)
        f.addRow(self.target_box)
        f.addRow("steps", self.steps)
        f.addRow("learning rate", self.fields["lr"])
        f.addRow("seed", self.seed)
        reg = QGroupBox("regularisers")
        r = QFormLayout(reg)
        r.addRow("preset (Yosinski)", self.preset)
        r.addRow("λ ‖I‖² (Simonyan)", self.fields["l2"])
        r.addRow("L2 decay", self.fields["decay"])
        r.addRow("blur σ", self.fields["blur_sigma"])
        r.addRow("blur every", self.blur_every)
        r.addRow("norm percentile", self.fields["norm_percentile"])
        r.addRow("contribution pct", self.fields["contribution_percentile"])
        r.addRow("jitter", self.jitter)
        r.addRow("", self.transforms)
        r.addRow("", self.decorrelate)
        r.addRow("images", self.batch)
        r.addRow("diversity", self.fields["diversity"])
        r.addRow("octaves", self.octaves)
        r.addRow("octave scale", self.fields["octave_scale"])
        r.addRow("step size", self.fields["step_size"])
        r.addRow("invert layers", self.invert_layers)
        r.addRow("λα / λTV", self._pair(self.fields["lambda_alpha"], self.fields["lambda_tv"]))
        buttons = QHBoxLayout()
        for b in (self.run_button, self.stop_button, self.save_button):
            buttons.addWidget(b)
        side = QVBoxLayout()
        side.addWidget(box)
        side.addWidget(reg)
        side.addLayout(buttons)
        side.addWidget(self.progress)
        side.addWidget(self.status)
        side.addStretch(1)
        side_widget = QWidget()
        side_widget.setLayout(side)
        side_widget.setFixedWidth(320)
        left = QVBoxLayout()
        left.addWidget(self.pane, 1)
        left.addWidget(self.curve)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 1)
        layout.addWidget(side_widget)
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self._save_dialog)
        self.method.currentTextChanged.connect(self._update_enabled)
        self.target_box.changed.connect(self._update_enabled)

    @staticmethod
    def _pair(a: QWidget, b: QWidget) -> QWidget:
        w = QWidget()
        h = QHBoxLayout(w)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(a)
        h.addWidget(b)
        return w

    # --- context from the window -----------------------------------------------------------------------

    def set_context(self, loaded, input_tensor, picture) -> None:
        self.target_box.set_model(loaded)  # the layer box on the model's default layer
        self.loaded, self.input_tensor, self.picture = loaded, input_tensor, picture
        if self.shown is None and picture is not None:
            self.pane.set_image(picture)
        self.status.setText(f"{loaded.display_name}: choose a method and run")
        self._update_enabled()

    def set_target_class(self, index: int) -> None:
        self.target_box.set_class(index)

    def set_target_unit(self, layer: str | None, unit: int) -> None:
        self.target_box.set_unit(layer, unit)

    # --- settings ----------------------------------------------------------------------------------

    def _float(self, name: str) -> float | None:
        text = self.fields[name].text().strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name.replace('_', ' ')} must be a number, not {text!r}") from None

    def current_target(self) -> Target:
        return self.target_box.target()

    def make_job(self):
        """(generator, record of the settings) for the controls as they are."""
        method = self.method.currentText()
        model, spec, device = self.loaded.module, self.loaded.spec, self.loaded.device
        steps = self.steps.value() or None
        if method == "deepdream":
            s = DreamSettings(layer=self.layer.currentText(), octaves=self.octaves.value(),
                              steps=steps or 10, seed=self.seed.value(),
                              **{k: v for k in ("octave_scale", "step_size") if (v := self._float(k)) is not None},
                              **({"jitter": self.jitter.value()} if self.jitter.value() >= 0 else {}))
            return dream_steps(model, spec, self.input_tensor, s, device), {"method": method, **s.to_dict()}
        if method == "invert":
            layers = tuple(n.strip() for n in self.invert_layers.text().split(",") if n.strip()) or (
                self.layer.currentText(),)
            s = InvertSettings(layers=layers, steps=steps or 200, seed=self.seed.value(),
                               **{k: v for k in ("lr", "lambda_alpha", "lambda_tv")
                                  if (v := self._float(k)) is not None})
            return invert_steps(model, spec, self.input_tensor, s, device), {"method": method, **s.to_dict()}
        preset = self.preset.currentIndex() or None
        s = VisualizeSettings(
            method="yosinski" if preset else method, steps=steps, lr=self._float("lr"), seed=self.seed.value(),
            l2=self._float("l2"), preset=preset, decay=self._float("decay"), blur_sigma=self._float("blur_sigma"),
            blur_every=self.blur_every.value() if self.blur_every.value() >= 0 else None,
            norm_percentile=self._float("norm_percentile"),
            contribution_percentile=self._float("contribution_percentile"),
            jitter=self.jitter.value() if self.jitter.value() >= 0 else None,
            transforms=self.transforms.isChecked(), decorrelate=self.decorrelate.isChecked(),
            batch=self.batch.value(), diversity=self._float("diversity") or 0.0).resolved()
        target = self.current_target()
        record = {"method": s.method, "target": target.describe(spec.labels),
                  "target_spec": {"class": target.class_index, "layer": target.layer, "unit": target.unit},
                  "settings": s.to_dict()}
        return visualize_steps(model, spec, target, s, device), record

    # --- running ---------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.task is not None

    def run(self) -> None:
        if self.loaded is None or self.task is not None:
            return
        try:
            gen, record = self.make_job()
        except Exception as exc:  # noqa: BLE001 - a bad setting: one line, nothing runs
            self.status.setText(f"cannot run: {describe_error(exc)}")
            return
        self.record = {"model": {"name": self.loaded.name, "source": self.loaded.source}, **record}
        self.result = None
        self.steps_seen = 0
        self.task = Task(gen)
        self.task.signals.yielded.connect(self._on_step)
        self.task.signals.returned.connect(self._on_result)
        self.task.signals.errored.connect(self._on_failed)
        self.task.signals.cancelled.connect(lambda: self.status.setText("stopped (the last image stays shown)"))
        self.task.signals.done.connect(self._on_done)
        self.status.setText(f"running {record['method']} ...")
        self.runner.start(self.task)
        self._update_enabled()

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def shutdown(self) -> None:
        self.runner.shutdown()

    def _on_step(self, step) -> None:
        self.steps_seen += 1
        self.shown = side_by_side(step.pictures)
        self.pane.set_image(self.shown)
        self.curve_line.setData(np.arange(1, len(step.history) + 1), np.asarray(step.history))
        self.progress.setRange(0, step.total)
        self.progress.setValue(step.step)
        stage = f"{step.stage}: " if step.stage else ""
        self.status.setText(f"{stage}step {step.step}/{step.total}, objective {step.objective:.4g}")

    def _on_result(self, result) -> None:
        self.result = result
        if hasattr(result, "inversions"):
            self.shown = result.strip
            self.record["layers"] = [i.summary() for i in result.inversions]
            title = "   |   ".join(["input"] + [i.layer for i in result.inversions])
            text = ", ".join(f"{i.layer}: code error {i.representation_error:.3g}, image error {i.image_error:.2f}"
                             for i in result.inversions)
            self.status.setToolTip("code error: ||Phi(x*) - Phi0||^2 / ||Phi0||^2, how well the reconstruction "
                                   "reproduces the layer's code\nimage error: ||x* - x0||^2 / ||x0 - mean||^2, how far "
                                   "it is from the image (1 = no closer than a flat grey)")
        elif hasattr(result, "octaves"):
            self.shown = result.picture
            self.record["octaves"] = result.octaves
            text = f"DeepDream, objective {result.objective:.4g}"
            title = "image"
        else:
            self.shown = side_by_side(result.pictures)
            self.record.update(objective=result.objective, values=result.values, probabilities=result.probabilities)
            prob = f", p = {result.probabilities[0]:.3f}" if result.probabilities else ""
            text = f"objective {result.objective:.4g}, value {result.values[0]:.4g}{prob}"
            title = "image"
        self.record["seconds"] = result.seconds
        self.pane.set_image(self.shown)
        self.pane.set_title(title)
        self.status.setText(f"done in {result.seconds:.1f} s: {text}")
        self.finished.emit(result)

    def _on_failed(self, error) -> None:
        self.status.setText(f"failed: {describe_error(error)}")
        self.failed.emit(error)

    def _on_done(self) -> None:
        self.task = None
        self._update_enabled()

    # --- saving ----------------------------------------------------------------------------------------

    def save_to(self, path: str | Path) -> tuple[Path, Path]:
        """Write the image shown (PNG) and its settings (JSON beside it)."""
        from PIL import Image  # noqa: PLC0415

        png = check_destination(path, (".png",))
        sidecar = check_destination(png.with_suffix(".json"), (".json",))
        with atomic_write(png) as tmp:
            Image.fromarray(self.shown).save(tmp)
        with atomic_write(sidecar) as tmp:
            tmp.write_text(json.dumps(self.record or {}, indent=2, default=str) + "\n")
        return png, sidecar

    def _save_dialog(self) -> None:
        if self.shown is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save image", "optimized.png", "PNG (*.png)")
        if path:
            try:
                png, sidecar = self.save_to(path)
                self.status.setText(f"saved {png} and {sidecar.name}")
            except Exception as exc:  # noqa: BLE001
                self.status.setText(f"cannot save: {describe_error(exc)}")

    # --- state -------------------------------------------------------------------------------------------

    def _update_enabled(self, *_) -> None:
        method = self.method.currentText()
        visualize = method in ("fourier", "yosinski", "simonyan")
        self.target_box.update_enabled(active=visualize, layer_needed=not visualize)
        self.preset.setEnabled(method == "yosinski")
        self.fields["l2"].setEnabled(method == "simonyan")
        for w in (self.fields["decay"], self.fields["blur_sigma"], self.blur_every, self.fields["norm_percentile"],
                  self.fields["contribution_percentile"]):
            w.setEnabled(method == "yosinski")
        self.jitter.setEnabled(method in ("yosinski", "deepdream"))
        for w in (self.transforms, self.decorrelate, self.batch, self.fields["diversity"]):
            w.setEnabled(method == "fourier")
        for w in (self.octaves, self.fields["octave_scale"], self.fields["step_size"]):
            w.setEnabled(method == "deepdream")
        for w in (self.invert_layers, self.fields["lambda_alpha"], self.fields["lambda_tv"]):
            w.setEnabled(method == "invert")
        self.run_button.setEnabled(self.loaded is not None and self.task is None)
        self.stop_button.setEnabled(self.task is not None)
        self.save_button.setEnabled(self.shown is not None and self.task is None)
