"""Editing a model's input spec: size, channels' mean and std, class labels."""
from __future__ import annotations

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit,
                               QPushButton, QWidget)

from explorer.core.errors import ModelLoadError
from explorer.core.models import InputSpec, read_labels_file


class InputSpecDialog(QDialog):
    def __init__(self, spec: InputSpec, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Input settings")
        self.spec = spec
        self.size_edit = QLineEdit(f"{spec.size[0]}x{spec.size[1]}")
        self.size_edit.setToolTip("Input size as HxW (or N for a square)")
        self.mean_edit = QLineEdit(", ".join(f"{v:g}" for v in spec.mean))
        self.std_edit = QLineEdit(", ".join(f"{v:g}" for v in spec.std))
        self.labels_edit = QLineEdit("")
        self.labels_edit.setPlaceholderText(f"{len(spec.labels)} labels now; choose a file to replace them")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        labels_row = QWidget()
        row = QHBoxLayout(labels_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.labels_edit)
        row.addWidget(browse)
        form = QFormLayout(self)
        form.addRow("size (HxW)", self.size_edit)
        form.addRow("mean", self.mean_edit)
        form.addRow("std", self.std_edit)
        form.addRow("labels file", labels_row)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Labels file", "", "Labels (*.txt *.json);;All files (*)")
        if path:
            self.labels_edit.setText(path)

    def result_spec(self) -> InputSpec:
        """The edited spec; a malformed field raises :class:`ModelLoadError` with one sentence."""
        try:
            parts = [int(v) for v in self.size_edit.text().lower().replace(" ", "").split("x")]
            size = (parts[0], parts[-1])
            mean = tuple(float(v) for v in self.mean_edit.text().replace(",", " ").split())
            std = tuple(float(v) for v in self.std_edit.text().replace(",", " ").split())
        except ValueError:
            raise ModelLoadError("size must be HxW and mean/std numbers separated by commas") from None
        if min(size) <= 0:
            raise ModelLoadError("the input size must be positive")
        labels = read_labels_file(self.labels_edit.text()) if self.labels_edit.text().strip() else None
        return self.spec.with_overrides(size=size, mean=mean, std=std, labels=labels)
