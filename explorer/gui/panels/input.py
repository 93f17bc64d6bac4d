"""What the model sees (the preprocessed input, shown back as an image) and its top-5 predictions."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from explorer.gui.widgets.image_pane import ImagePane


class InputPanel(QWidget):
    """``class_selected`` emits a class index when the user clicks a prediction."""

    class_selected = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.pane = ImagePane(title="input (as the model sees it)")
        self.pane.setMinimumHeight(180)
        self.caption = QLabel("no input: open an image (Ctrl+O), a folder, drop a file or paste (Ctrl+V)")
        self.caption.setWordWrap(True)
        self.predictions = QListWidget()
        self.predictions.setToolTip("Top-5 classes. Click one to make it the target of attribution.")
        self.predictions.itemClicked.connect(lambda item: self.class_selected.emit(item.data(Qt.UserRole)))
        self.note = QLabel("")
        self.note.setStyleSheet("color: #d08000")
        self.note.setWordWrap(True)  # a long note must not hold the dock wide on a laptop screen
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.pane, 3)
        layout.addWidget(self.caption)
        layout.addWidget(QLabel("top-5 predictions"))
        layout.addWidget(self.note)
        layout.addWidget(self.predictions, 2)

    def set_picture(self, picture: np.ndarray | None, caption: str = "") -> None:
        if picture is None:
            self.pane.clear_image()
        else:
            self.pane.set_image(picture)
        self.caption.setText(caption)

    def set_predictions(self, top: list[dict], trained: bool = True) -> None:
        self.note.setText("" if trained else "untrained model: random weights, predictions mean nothing")
        self.predictions.clear()
        for t in top:
            item = QListWidgetItem(f"{t['probability']:7.2%}   {t['label']}  (#{t['index']})")
            item.setData(Qt.UserRole, int(t["index"]))
            self.predictions.addItem(item)

    def prediction_texts(self) -> list[str]:
        return [self.predictions.item(i).text() for i in range(self.predictions.count())]
