"""Frames from cameras, video files and image folders, behind one interface (:class:`FrameSource`).

Every source emits :class:`~explorer.core.live.LiveFrame` objects: (H, W, 3) uint8 RGB with the
``time.perf_counter()`` of arrival. Sources use Qt Multimedia (QtCore-level objects, no widgets).
"""
from .base import FrameSource, SourceError
from .camera import CameraSource, camera_resolutions, list_cameras
from .folder import FolderSource
from .video import VideoFileSource

__all__ = ["FrameSource", "SourceError", "CameraSource", "VideoFileSource", "FolderSource", "list_cameras",
           "camera_resolutions"]
