"""Frames from cameras, video files and image folders, behind one interface (:class:`FrameSource`).

Every source emits :class:`~explorer.core.live.LiveFrame` objects: (H, W, 3) uint8 RGB with the
``time.perf_counter()`` of arrival. Sources use Qt Multimedia (QtCore-level objects, no widgets).
"""
from explorer.sources.base import FrameSource, SourceError
from explorer.sources.camera import CameraSource, camera_resolutions, list_cameras
from explorer.sources.folder import FolderSource
from explorer.sources.video import VideoFileSource

__all__ = ["FrameSource", "SourceError", "CameraSource", "VideoFileSource", "FolderSource", "list_cameras",
           "camera_resolutions"]
