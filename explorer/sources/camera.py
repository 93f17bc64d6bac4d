"""Cameras through Qt Multimedia: listed by name, chosen by name or index, at a chosen resolution."""
from __future__ import annotations

import time

from PySide6.QtCore import QCoreApplication, QObject, Qt
from PySide6.QtMultimedia import (QCamera, QCameraDevice, QCameraFormat, QMediaCaptureSession, QMediaDevices,
                                  QVideoFrame, QVideoSink)

from explorer.sources.base import FrameSource, SourceError


def list_cameras() -> list[str]:
    """Names of the cameras present now, the system default first."""
    return [d.description() for d in QMediaDevices.videoInputs()]


def find_camera(choice: str | int | None = None) -> QCameraDevice:
    """The camera named ``choice`` (or its index in :func:`list_cameras`, or the default when None)."""
    devices = QMediaDevices.videoInputs()
    if not devices:
        raise SourceError("no camera found: connect one, or open a video file or an image folder")
    if choice is None or choice == "":
        return QMediaDevices.defaultVideoInput() if not QMediaDevices.defaultVideoInput().isNull() else devices[0]
    if isinstance(choice, int) or str(choice).isdigit():
        index = int(choice)
        if not 0 <= index < len(devices):
            raise SourceError(f"no camera number {index}: there {'is' if len(devices) == 1 else 'are'} "
                              f"{len(devices)} (0 to {len(devices) - 1})")
        return devices[index]
    for d in devices:
        if d.description() == choice or bytes(d.id().data()).decode(errors="replace") == choice:
            return d
    matches = [d for d in devices if str(choice).lower() in d.description().lower()]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(d.description() for d in devices)
    raise SourceError(f"no camera named {choice!r}; cameras here: {names}")


def camera_resolutions(choice: str | int | None = None) -> list[tuple[int, int]]:
    """(width, height) pairs the camera offers, largest first."""
    sizes = {(f.resolution().width(), f.resolution().height()) for f in find_camera(choice).videoFormats()}
    return sorted(sizes, key=lambda s: s[0] * s[1], reverse=True)


def _pick_format(device: QCameraDevice, resolution: tuple[int, int] | None) -> QCameraFormat | None:
    formats = device.videoFormats()
    if not formats or resolution is None:
        return None
    w, h = resolution
    # Nearest in pixel count, then the highest frame rate.
    return min(formats, key=lambda f: (abs(f.resolution().width() * f.resolution().height() - w * h),
                                       -f.maxFrameRate()))


def check_camera_permission() -> None:
    """Raise :class:`SourceError` when the system denies camera access (macOS, Windows); ask when undecided."""
    app = QCoreApplication.instance()
    try:
        from PySide6.QtCore import QCameraPermission  # noqa: PLC0415 - Qt ≥ 6.5
    except ImportError:
        return
    if app is None or not hasattr(app, "checkPermission"):
        return
    status = app.checkPermission(QCameraPermission())
    if status == Qt.PermissionStatus.Denied:
        raise SourceError("camera access is denied: allow this app in the system's privacy settings")
    if status == Qt.PermissionStatus.Undetermined:
        app.requestPermission(QCameraPermission(), lambda _p: None)
        raise SourceError("camera access was asked for: allow it, then choose the camera again")


class CameraSource(FrameSource):
    """Frames from a camera. A camera that disappears stops the stream and emits ``error``."""

    def __init__(self, choice: str | int | None = None, resolution: tuple[int, int] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(str(choice) if choice is not None else "camera", parent)
        self.choice = choice
        self.resolution = resolution
        self.mirror = True  # a selfie view feels natural; the toggle turns it off
        self._camera: QCamera | None = None
        self._session: QMediaCaptureSession | None = None
        self._sink: QVideoSink | None = None
        self._devices: QMediaDevices | None = None
        self._device_id = b""

    def start(self) -> None:
        check_camera_permission()
        device = find_camera(self.choice)
        self.stop()
        self.name = device.description()
        self._device_id = bytes(device.id().data())
        self._camera = QCamera(device, self)
        fmt = _pick_format(device, self.resolution)
        if fmt is not None:
            self._camera.setCameraFormat(fmt)
        self._session = QMediaCaptureSession(self)
        self._sink = QVideoSink(self)
        self._session.setCamera(self._camera)
        self._session.setVideoSink(self._sink)
        self._sink.videoFrameChanged.connect(self._on_frame)
        self._camera.errorOccurred.connect(self._on_error)
        self._devices = QMediaDevices(self)
        self._devices.videoInputsChanged.connect(self._on_devices_changed)
        self._running = True
        self._camera.start()

    def stop(self) -> None:
        super().stop()
        camera, session, sink, devices = self._camera, self._session, self._sink, self._devices
        self._camera = self._session = self._sink = self._devices = None
        if camera is not None:
            camera.errorOccurred.disconnect()
            camera.stop()
            camera.deleteLater()
        if sink is not None:
            sink.videoFrameChanged.disconnect()
            sink.deleteLater()
        if session is not None:
            session.deleteLater()
        if devices is not None:
            devices.videoInputsChanged.disconnect()
            devices.deleteLater()

    def _on_frame(self, frame: QVideoFrame) -> None:
        arrived = time.perf_counter()
        if self._running:
            self._deliver_video_frame(frame, arrived)

    def _on_error(self, _error: QCamera.Error, message: str) -> None:
        if self._running:
            self._fail(f"camera {self.name}: {message or 'unknown error'}")

    def _on_devices_changed(self) -> None:
        if self._running and all(bytes(d.id().data()) != self._device_id for d in QMediaDevices.videoInputs()):
            self._fail(f"camera {self.name} was disconnected; choose another source")
