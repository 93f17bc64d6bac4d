"""The one interface every frame source follows, and QVideoFrame → numpy conversion."""
from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage
from PySide6.QtMultimedia import QVideoFrame

from explorer.core.errors import InputError
from explorer.core.live import LiveFrame


class SourceError(InputError):
    """A source could not start or stopped: no camera, permission denied, unreadable video, ..."""


class FrameSource(QObject):
    """A stream of frames. ``start()`` raises :class:`SourceError` for problems known at once;
    problems found later (a corrupt video, a camera unplugged) stop the stream and emit ``error``.

    Signals
    -------
    frame(LiveFrame) : a new frame, emitted on the thread the source lives in (the GUI thread).
    error(str) : one sentence for the user; the source has stopped.
    """

    frame = Signal(object)
    error = Signal(str)

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.mirror = False
        self.frames_delivered = 0
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._running = False

    def _deliver(self, image: np.ndarray, arrived: float | None = None) -> None:
        if self.mirror:
            image = np.ascontiguousarray(image[:, ::-1])
        self.frames_delivered += 1
        self.frame.emit(LiveFrame(image, arrived if arrived is not None else time.perf_counter(),
                                  self.frames_delivered))

    def _deliver_video_frame(self, frame: QVideoFrame, arrived: float) -> None:
        """Hand over a QVideoFrame undecoded: it becomes RGB only if the worker takes it."""
        if not frame.isValid():
            return
        frame = QVideoFrame(frame)  # our own reference to the shared buffer
        mirror = self.mirror

        def decode() -> np.ndarray | None:
            image = video_frame_to_rgb(frame)
            return np.ascontiguousarray(image[:, ::-1]) if image is not None and mirror else image

        self.frames_delivered += 1
        self.frame.emit(LiveFrame(None, arrived, self.frames_delivered, decode=decode))

    def _fail(self, message: str) -> None:
        self.stop()
        self.error.emit(message)


def qimage_to_rgb(image: QImage) -> np.ndarray:
    """Any QImage → a fresh (H, W, 3) uint8 RGB array."""
    if image.format() != QImage.Format.Format_RGB888:
        image = image.convertToFormat(QImage.Format.Format_RGB888)
    h, w, stride = image.height(), image.width(), image.bytesPerLine()
    buf = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    # Copy: the buffer belongs to the QImage, which goes away when this function returns.
    return buf[:, : w * 3].reshape(h, w, 3).copy()


def video_frame_to_rgb(frame: QVideoFrame) -> np.ndarray | None:
    """A QVideoFrame (any pixel format the backend gives) → (H, W, 3) uint8, or None when it is empty."""
    if not frame.isValid():
        return None
    image = frame.toImage()
    if image.isNull():
        return None
    return qimage_to_rgb(image)
