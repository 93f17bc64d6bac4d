"""The target controls that the Attribution and Optimize panels share: what to explain or optimise.

A kind (``top class`` for attribution, ``class``, ``unit``), the class index with its label, optionally
the score (logit or probability), the layer and the unit. :meth:`TargetBox.set_model` fills the layer
list and puts the layer box on the model's default layer (:func:`explorer.core.probe.default_layer`, the
rule every view uses) instead of the first name in the list; :meth:`TargetBox.target` gives the
:class:`~explorer.core.attribution.target.Target` the controls describe. The widget holds no state of
its own beyond the controls and does no tensor work.
"""
from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QSpinBox, QWidget

from explorer.core.attribution.methods import layer_names
from explorer.core.attribution.target import Target
from explorer.core.probe import default_layer, leaves_of

TOP_CLASS, CLASS, UNIT = "top class", "class", "unit"


class TargetBox(QWidget):
    """Kind, class (with its label), score (optional), layer and unit, as one form.

    ``kinds``: the kinds offered, in order; ``score``: whether the logit/probability choice is shown;
    ``kind_label``: the label of the kind row ("explain", "target"). ``changed`` is emitted when any of
    the controls changes.
    """

    changed = Signal()

    def __init__(self, kinds: Sequence[str] = (CLASS, UNIT), score: bool = False, kind_label: str = "target",
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.loaded = None
        self.kind = QComboBox()
        self.kind.addItems(list(kinds))
        self.class_index = QSpinBox()
        self.class_index.setRange(0, 99999)
        self.class_label = QLabel("")
        self.score: QComboBox | None = None
        self.layer = QComboBox()
        self.layer.setEditable(True)
        self.unit = QSpinBox()
        self.unit.setRange(0, 99999)
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.addRow(kind_label, self.kind)
        row = QHBoxLayout()
        row.addWidget(self.class_index)
        row.addWidget(self.class_label, 1)
        self.form.addRow("class", row)
        if score:
            self.score = QComboBox()
            self.score.addItems(["logit", "prob"])
            self.form.addRow("score", self.score)
            self.score.currentTextChanged.connect(self._changed)
        self.form.addRow("layer", self.layer)
        self.form.addRow("unit", self.unit)
        self.kind.currentTextChanged.connect(self._changed)
        self.class_index.valueChanged.connect(self._changed)
        self.layer.currentTextChanged.connect(self._changed)
        self.unit.valueChanged.connect(self._changed)

    # --- model and targets from outside ---------------------------------------------------------------

    def set_model(self, loaded) -> None:
        """Offer ``loaded``'s layers, the default layer chosen; the class label follows its names."""
        if loaded is self.loaded:
            return
        self.loaded = loaded
        names = layer_names(loaded.module)
        chosen = default_layer(leaves_of(loaded.module))
        self.layer.blockSignals(True)
        self.layer.clear()
        self.layer.addItems(names)
        if chosen in names:
            self.layer.setCurrentIndex(names.index(chosen))
        self.layer.blockSignals(False)
        self.update_label()

    def set_class(self, index: int) -> None:
        self.class_index.setValue(int(index))
        self.kind.setCurrentText(CLASS)

    def set_unit(self, layer: str | None, unit: int) -> None:
        if layer:
            self.layer.setCurrentText(layer)
        self.unit.setValue(int(unit))
        self.kind.setCurrentText(UNIT)

    def show_class(self, index: int) -> None:
        """Show ``index`` in the class field without announcing a change (e.g. the top class found)."""
        self.class_index.blockSignals(True)
        self.class_index.setValue(int(index))
        self.class_index.blockSignals(False)
        self.update_label()

    # --- reading ------------------------------------------------------------------------------------

    def target(self) -> Target | None:
        """The target the controls describe; None for the top class (found by whoever computes)."""
        kind = self.kind.currentText()
        if kind == UNIT:
            return Target.for_unit(self.layer.currentText(), self.unit.value())
        if kind == CLASS:
            if self.score is not None:
                return Target.for_class(self.class_index.value(), self.score.currentText())
            return Target.for_class(self.class_index.value())
        return None

    # --- state ----------------------------------------------------------------------------------------

    def update_label(self) -> None:
        if self.loaded is not None:
            self.class_label.setText(self.loaded.spec.label(self.class_index.value()))

    def update_enabled(self, active: bool = True, layer_needed: bool = False) -> None:
        """Enable what the kind uses; ``active`` False greys the target out (a method without one),
        ``layer_needed`` keeps the layer box usable anyway (a method that works on a layer)."""
        kind = self.kind.currentText()
        self.kind.setEnabled(active)
        self.class_index.setEnabled(active and kind == CLASS)
        if self.score is not None:
            self.score.setEnabled(active and kind != UNIT)
        self.layer.setEnabled((active and kind == UNIT) or layer_needed)
        self.unit.setEnabled(active and kind == UNIT)

    def _changed(self, *_) -> None:
        self.update_label()
        self.changed.emit()
