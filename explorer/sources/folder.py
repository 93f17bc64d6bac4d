"""An image folder as a slideshow: one image every ``interval`` seconds, from the start again at the end."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer

from explorer.core.errors import InputError
from explorer.core.preprocess import list_images, load_image

from explorer.sources.base import FrameSource, SourceError


class FolderSource(FrameSource):
    def __init__(self, folder: str | Path, interval: float = 1.0, parent: QObject | None = None) -> None:
        super().__init__(Path(folder).name or str(folder), parent)
        self.folder = Path(folder)
        self.interval = interval
        self.files: list[Path] = []
        self._next = 0
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._show_next)

    def start(self) -> None:
        try:
            self.files = list_images(self.folder)
        except InputError as exc:
            raise SourceError(str(exc)) from None
        if not self.files:
            raise SourceError(f"folder {self.folder} holds no images")
        self._next = 0
        self._running = True
        self._timer.start(max(1, int(self.interval * 1000)))
        QTimer.singleShot(0, self._show_next)

    def stop(self) -> None:
        super().stop()
        self._timer.stop()

    def _show_next(self) -> None:
        if not self._running:
            return
        # Unreadable files are skipped; a folder with none readable stops the slideshow.
        for _ in range(len(self.files)):
            path = self.files[self._next]
            self._next = (self._next + 1) % len(self.files)
            try:
                image = load_image(path)
            except InputError:
                continue
            self._deliver(image)
            return
        self._fail(f"no image in {self.folder} could be read")
