"""Starting the window from the command line's options (and the ``--screenshot`` mode for scripts)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from explorer.core.resources import SAMPLE_IMAGES


def make_settings(enabled: bool = True):
    """Remembered settings (window layout, last model, last folder); ``DEEP_EXPLORER_SETTINGS`` moves the file."""
    from PySide6.QtCore import QSettings  # noqa: PLC0415

    if not enabled:
        return None
    path = os.environ.get("DEEP_EXPLORER_SETTINGS")
    if path:
        return QSettings(path, QSettings.IniFormat)
    return QSettings(QSettings.IniFormat, QSettings.UserScope, "DeepExplorer", "deep-explorer")


def create_window(args: argparse.Namespace, interactive: bool = True):
    """Build the main window and start what the options ask for (model, image, layer, unit, view)."""
    from explorer.gui.main_window import MainWindow, ModelRequest  # noqa: PLC0415
    from explorer.gui.tabs import add_panels  # noqa: PLC0415

    settings = make_settings(not getattr(args, "no_settings", False))
    window = MainWindow(settings=settings, interactive=interactive)
    add_panels(window)
    if getattr(args, "device", None):
        window.device_combo.setCurrentText(args.device)
    window.pending_layer = getattr(args, "layer", None)
    window.pending_unit = getattr(args, "unit", None)
    model = getattr(args, "model", None)
    checkpoint = getattr(args, "checkpoint", None)
    if model is None and checkpoint is None and settings is not None:
        model = settings.value("last_model") or None
        if model and Path(model).suffix and not Path(model).exists():
            model = None
        if model and Path(model).suffix:
            model, checkpoint = None, model
    weights = getattr(args, "weights", "pretrained")
    window.pretrained_box.setChecked(weights != "none")
    window.load_model(ModelRequest(name=model, checkpoint=checkpoint, weights=weights,
                                   trust=getattr(args, "trust_checkpoint", False)))
    image = getattr(args, "image", None)
    if image is None and settings is not None:
        last = settings.value("last_folder")
        image = last if last and Path(last).is_dir() else None
    window.open_path(image or SAMPLE_IMAGES) if image else window.open_folder(SAMPLE_IMAGES)
    view = getattr(args, "view", None)
    if getattr(args, "video", None) or getattr(args, "camera", None) is not None:
        view = view or "live"
        open_live_source(window.live_panel, args)
    if getattr(args, "text", None):
        view = view or "lstm"
    if view and not window.show_view(view):
        window.show_error(f"no view named {view!r}; views: {', '.join(window.views)}")
    if getattr(args, "text", None):
        window.lstm_panel.open_text_file(args.text)
    return window


def open_live_source(panel, args: argparse.Namespace) -> bool:
    """Start the source that ``--camera`` / ``--video`` name on a LivePanel; False (message shown) on failure.

    ``args.camera_resolution`` is already a (width, height) pair: the command line parsed it.
    """
    if getattr(args, "video", None):
        return panel.open_video(args.video)
    if getattr(args, "camera", None) is not None:
        return panel.open_camera(args.camera, getattr(args, "camera_resolution", None))
    return True


def run_gui(args: argparse.Namespace) -> int:
    from PySide6.QtCore import QTimer  # noqa: PLC0415
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from explorer.gui.main_window import wait_until_idle  # noqa: PLC0415

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Deep Explorer")
    app.setOrganizationName("DeepExplorer")
    screenshot = getattr(args, "screenshot", None)
    window = create_window(args, interactive=screenshot is None)
    window.show()
    status = {"code": 0}
    if screenshot:
        def save_and_quit() -> None:
            window.export_view(screenshot, window=True)
            if window.last_error:
                print(f"deep-explorer: {window.last_error}", file=sys.stderr)
            print(f"saved {screenshot}")
            window.close()
            app.quit()

        QTimer.singleShot(300, lambda: wait_until_idle(window, save_and_quit))
    app.exec()
    return status["code"]
