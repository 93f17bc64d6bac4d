"""A pyqtgraph view of one image with an optional overlay and a highlight box; clicks report pixels.

Images are handed over as fresh C-contiguous row-major arrays with explicit levels and a 256-entry
lookup table; nothing here computes on tensors.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QPen

from explorer.core import colormaps

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


def lookup_table(name: str) -> np.ndarray:
    """A (256, 4) uint8 lookup table of one of the core's colour maps (the same the CLI's PNGs use)."""
    return colormaps.lookup_table(name, alpha=True)


class ImagePane(pg.GraphicsLayoutWidget):
    """Shows ``image`` (H, W) or (H, W, 3); ``clicked`` emits (row, col) in image pixels."""

    clicked = Signal(float, float)

    def __init__(self, parent=None, title: str | None = None):
        super().__init__(parent)
        self.setBackground("#202124")
        self.ci.setContentsMargins(2, 2, 2, 2)
        self.title_label = self.addLabel(title, row=0, col=0, color="#dddddd", size="9pt") if title else None
        self.view: pg.ViewBox = self.addViewBox(row=1, col=0, lockAspect=True, invertY=True,
                                                enableMenu=False)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(1)
        self.overlay_item.setVisible(False)
        self.view.addItem(self.image_item)
        self.view.addItem(self.overlay_item)
        self.box = pg.QtWidgets.QGraphicsRectItem()
        self.box.setPen(QPen(pg.mkColor("#ffcc00"), 0))
        self.box.setZValue(2)
        self.box.setVisible(False)
        self.view.addItem(self.box)
        self.scene().sigMouseClicked.connect(self._on_click)
        self.colorbar: pg.PlotItem | None = None  # made on first use (set_colorbar)
        self.colorbar_levels: tuple[float, float] | None = None
        self._shape: tuple[int, int] | None = None
        self.array: np.ndarray | None = None  # what is shown now (kept for tests and export)

    def set_title(self, text: str) -> None:
        """Change the title line (for a pane made with a title)."""
        if self.title_label is not None:
            self.title_label.setText(text, color="#dddddd", size="9pt")

    def set_image(self, image: np.ndarray, levels=(0.0, 1.0), lut: np.ndarray | None = None,
                  auto_range: bool = True) -> None:
        image = np.ascontiguousarray(image)
        self.array = image
        kwargs = {"autoLevels": False}
        if image.ndim == 2:
            kwargs["levels"] = levels
            self.image_item.setLookupTable(lut if lut is not None else lookup_table("grey"))
        else:
            self.image_item.setLookupTable(None)
            kwargs["levels"] = (0, 255) if image.dtype == np.uint8 else levels
        self.image_item.setImage(image, **kwargs)
        shape = image.shape[:2]
        if auto_range and shape != self._shape:
            self.view.setRange(QRectF(0, 0, shape[1], shape[0]), padding=0.02)
        self._shape = shape

    def set_overlay(self, overlay: np.ndarray | None, lut: np.ndarray | None = None, opacity: float = 0.5,
                    levels=(0.0, 1.0)) -> None:
        if overlay is None:
            self.overlay_item.setVisible(False)
            return
        self.overlay_item.setImage(np.ascontiguousarray(overlay), autoLevels=False, levels=levels)
        self.overlay_item.setLookupTable(lut if lut is not None else lookup_table("inferno"))
        self.overlay_item.setOpacity(opacity)
        self.overlay_item.setVisible(True)

    def set_colorbar(self, levels: tuple[float, float] | None, lut: np.ndarray | None = None,
                     label: str = "") -> None:
        """A colour bar beside the image: ``lut``'s colours from ``levels[0]`` (bottom) to ``levels[1]`` (top),
        with a value axis; None hides it."""
        if levels is None:
            if self.colorbar is not None:
                self.colorbar.setVisible(False)
            self.colorbar_levels = None
            return
        lo, hi = float(levels[0]), float(levels[1])
        if not hi > lo:
            hi = lo + 1e-6
        if self.colorbar is None:
            self.colorbar = self.addPlot(row=1, col=1)
            self.colorbar.setMouseEnabled(x=False, y=False)
            self.colorbar.hideButtons()
            self.colorbar.setMenuEnabled(False)
            self.colorbar.hideAxis("bottom")
            self.colorbar.hideAxis("left")
            self.colorbar.showAxis("right")
            self.colorbar.getAxis("right").setWidth(34)  # narrow: on a laptop screen the image needs the width
            self.colorbar.getAxis("right").setStyle(tickLength=-4)
            self.colorbar.setMaximumWidth(48)
            self._colorbar_image = pg.ImageItem(axisOrder="row-major")
            self.colorbar.addItem(self._colorbar_image)
        table = lut if lut is not None else lookup_table("inferno")
        ramp = np.ascontiguousarray(np.arange(256, dtype=np.uint8)[:, None])  # row 0 at the bottom (y = lo)
        self._colorbar_image.setImage(ramp, autoLevels=False, levels=(0, 255))
        self._colorbar_image.setLookupTable(table)
        self._colorbar_image.setRect(QRectF(0, lo, 1, hi - lo))
        self.colorbar.setXRange(0, 1, padding=0)
        self.colorbar.setYRange(lo, hi, padding=0)
        self.colorbar.getAxis("right").setLabel(label)
        self.colorbar.setVisible(True)
        self.colorbar_levels = (lo, hi)

    def set_box(self, top: float | None, left: float = 0, height: float = 0, width: float = 0) -> None:
        if top is None:
            self.box.setVisible(False)
            return
        self.box.setRect(QRectF(left - 0.5, top - 0.5, width + 1, height + 1))
        self.box.setVisible(True)

    def clear_image(self) -> None:
        self.image_item.clear()
        self.overlay_item.setVisible(False)
        self.box.setVisible(False)
        self.array = None
        self._shape = None

    def click_pixel(self, row: float, col: float) -> None:
        """Act as if the user clicked image pixel (row, col) (used by keyboard actions and tests)."""
        self.clicked.emit(row, col)

    def _on_click(self, event) -> None:
        if event.button() != Qt.LeftButton or self.array is None:
            return
        pos = self.image_item.mapFromScene(event.scenePos())
        if isinstance(pos, QPointF):
            self.clicked.emit(pos.y(), pos.x())
