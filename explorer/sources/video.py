"""Video files through QMediaPlayer into a QVideoSink, looping."""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, QUrl
from PySide6.QtMultimedia import QMediaPlayer, QVideoFrame, QVideoSink

from explorer.sources.base import FrameSource, SourceError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ogv", ".gif"}


class VideoFileSource(FrameSource):
    """Frames of a video file as it plays (``rate`` times real time), from the start again at the end."""

    def __init__(self, path: str | Path, loop: bool = True, rate: float = 1.0, parent: QObject | None = None) -> None:
        super().__init__(Path(path).name, parent)
        self.path = Path(path)
        self.loop = loop
        self.rate = rate
        self._player: QMediaPlayer | None = None
        self._sink: QVideoSink | None = None

    def start(self) -> None:
        if not self.path.exists():
            raise SourceError(f"no such video file: {self.path}")
        if self.path.is_dir():
            raise SourceError(f"{self.path} is a folder, not a video file")
        self.stop()
        self._player = QMediaPlayer(self)
        self._sink = QVideoSink(self)
        self._player.setVideoSink(self._sink)
        self._player.setLoops(QMediaPlayer.Loops.Infinite if self.loop else 1)
        self._sink.videoFrameChanged.connect(self._on_frame)
        self._player.errorOccurred.connect(self._on_error)
        self._player.mediaStatusChanged.connect(self._on_status)
        self._player.setSource(QUrl.fromLocalFile(str(self.path.resolve())))
        self._player.setPlaybackRate(self.rate)
        self._running = True
        self._player.play()

    def stop(self) -> None:
        super().stop()
        player, sink = self._player, self._sink
        self._player = self._sink = None
        if player is not None:
            for signal in (player.errorOccurred, player.mediaStatusChanged):
                signal.disconnect()
            player.stop()
            player.setVideoSink(None)
            player.deleteLater()
        if sink is not None:
            sink.videoFrameChanged.disconnect()
            sink.deleteLater()

    def _on_frame(self, frame: QVideoFrame) -> None:
        arrived = time.perf_counter()
        if self._running:
            self._deliver_video_frame(frame, arrived)

    def _on_error(self, _error: QMediaPlayer.Error, message: str) -> None:
        if self._running:
            self._fail(f"cannot play {self.path.name}: {message or 'unknown error'}")

    def _on_status(self, status: QMediaPlayer.MediaStatus) -> None:
        if not self._running:
            return
        if status == QMediaPlayer.MediaStatus.InvalidMedia:
            self._fail(f"cannot play {self.path.name}: not a video Qt Multimedia can decode")
        elif status == QMediaPlayer.MediaStatus.LoadedMedia and self._player is not None \
                and not self._player.hasVideo():
            self._fail(f"{self.path.name} holds no video stream")
