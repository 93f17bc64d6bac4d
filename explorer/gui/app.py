"""Starting the window from the command line's options (and the ``--screenshot`` mode for scripts)."""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from explorer.core.resources import APP_ICON, SAMPLE_IMAGES


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
    device = getattr(args, "device", None)
    if device:
        problem = device_problem(device)
        if problem:  # as the subcommands say it; the window goes on with the best device there is
            window.show_error(problem)
            device = None
        else:
            window.device_combo.setCurrentText(device)
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
                                   trust=getattr(args, "trust_checkpoint", False), device=device,
                                   input_size=getattr(args, "input_size", None), mean=getattr(args, "mean", None),
                                   std=getattr(args, "std", None), labels=getattr(args, "labels", None)))
    image = getattr(args, "image", None)
    if image is None and settings is not None:
        last = settings.value("last_folder")
        image = last if last and Path(last).is_dir() else None
    window.open_path(image or SAMPLE_IMAGES) if image else window.open_folder(SAMPLE_IMAGES)
    view = getattr(args, "view", None)
    if getattr(args, "video", None) or getattr(args, "camera", None) is not None:
        view = view or "live"
        if not open_live_source(window.live_panel, args):
            window.show_error(window.live_panel.message.text() or "the live source did not start")
    text = getattr(args, "text", None)
    if text:
        view = view or "lstm"
        problem = file_problem(text, "text file")
        if problem:
            window.show_error(problem)
            text = None
    if view and not window.show_view(view):
        window.show_error(f"no view named {view!r}; views: {', '.join(window.views)}")
    if text:
        window.lstm_panel.open_text_file(text)
    return window


def device_problem(name: str) -> str | None:
    """Why ``--device name`` cannot be used here (the subcommands' message), or None."""
    from explorer.core.models.device import DeviceError, resolve_device  # noqa: PLC0415

    try:
        resolve_device(name)
    except DeviceError as exc:
        return str(exc)
    return None


def file_problem(path: str | Path, what: str) -> str | None:
    """Why ``path`` cannot be read as a file, or None."""
    p = Path(path)
    if p.is_dir():
        return f"{what} {p} is a folder"
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        return f"cannot read {what} {p}: {exc.strerror or exc}"
    return None


def screenshot_problem(path: str | Path) -> str | None:
    """Why the window cannot be saved at ``path`` (a folder, an unknown suffix, a folder that is not
    writable), or None; checked before the window opens. Needs the QApplication (for Qt's formats)."""
    from PySide6.QtGui import QImageWriter  # noqa: PLC0415

    from explorer.core.errors import OutputError  # noqa: PLC0415
    from explorer.core.outputs import check_destination  # noqa: PLC0415

    formats = {f".{bytes(f).decode().lower()}" for f in QImageWriter.supportedImageFormats()}
    suffixes = sorted(formats & {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})
    try:
        check_destination(path, suffixes)
    except OutputError as exc:
        return str(exc)
    return None


def open_live_source(panel, args: argparse.Namespace) -> bool:
    """Start the source that ``--camera`` / ``--video`` name on a LivePanel; False (message shown) on failure.

    ``args.camera_resolution`` is already a (width, height) pair: the command line parsed it.
    """
    if getattr(args, "video", None):
        return panel.open_video(args.video)
    if getattr(args, "camera", None) is not None:
        return panel.open_camera(args.camera, getattr(args, "camera_resolution", None))
    return True


# What Qt 6's xcb platform plugin loads, as Debian/Ubuntu packages (README and .ci/run list the same).
XCB_PACKAGES = ("libx11-6 libx11-xcb1 libxcb1 libxcb-cursor0 libxcb-glx0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 "
                "libxcb-randr0 libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1 libxcb-util1 "
                "libxcb-xfixes0 libxcb-xkb1 libxkbcommon-x11-0").split()


def xcb_plugin() -> Path | None:
    """PySide6's xcb platform plugin (found without importing Qt), or None."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return path if path.exists() else None


def run_ldd(path: Path) -> str:
    """``ldd path``'s output ("" when ldd cannot run)."""
    try:
        return subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def missing_libraries(ldd_output: str) -> list[str]:
    """The libraries ldd reports as ``not found``: ``libxcb-icccm.so.4 => not found`` → ``libxcb-icccm.so.4``."""
    return [m.group(1) for m in re.finditer(r"^\s*(\S+)\s+=>\s+not found", ldd_output, re.MULTILINE)]


def debian_package(soname: str) -> str:
    """The usual Debian package of a library: ``libxcb-icccm.so.4`` → ``libxcb-icccm4``, ``libX11.so.6`` →
    ``libx11-6`` (a hyphen when the name ends in a digit)."""
    match = re.fullmatch(r"(.+?)\.so\.(\d+)(?:\.\d+)*", soname)
    if not match:
        return soname
    name, major = match.group(1).lower(), match.group(2)
    return f"{name}-{major}" if name[-1].isdigit() else f"{name}{major}"


def xcb_problem(environ=None, ldd=None, plugin: Path | None = None) -> str | None:
    """Why Qt's xcb plugin cannot load here, naming the missing libraries and how to install them; None
    when the platform is not xcb (``QT_QPA_PLATFORM`` set to another, no ``DISPLAY``) or nothing is missing.

    Checked before the QApplication exists: Qt aborts on a plugin that fails to load, with a message that
    can name the wrong library (issue 12). Unset ``QT_QPA_PLATFORM`` with ``WAYLAND_DISPLAY`` set: Qt may
    choose Wayland, so nothing is said.
    """
    environ = os.environ if environ is None else environ
    platform = environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if not sys.platform.startswith("linux") or platform not in ("", "xcb") or not environ.get("DISPLAY"):
        return None
    if not platform and environ.get("WAYLAND_DISPLAY"):
        return None
    plugin = plugin or xcb_plugin()
    if plugin is None:
        return None
    missing = missing_libraries((ldd or run_ldd)(plugin))
    if not missing:
        return None
    packages = sorted({debian_package(lib) for lib in missing})
    return (f"the window cannot open on this X display: Qt's xcb plugin needs {', '.join(missing)}, which are not "
            f"installed. On Debian or Ubuntu: sudo apt-get install {' '.join(packages)} (all Qt needs for xcb: "
            f"sudo apt-get install {' '.join(XCB_PACKAGES)}; README, Install). Without a display: "
            f"QT_QPA_PLATFORM=offscreen")


def run_gui(args: argparse.Namespace) -> int:
    problem = xcb_problem()
    if problem:  # before Qt loads the plugin (it would abort with a misleading message)
        print(f"deep-explorer: error: {problem}", file=sys.stderr)
        return 2

    from PySide6.QtCore import QTimer  # noqa: PLC0415
    from PySide6.QtGui import QIcon  # noqa: PLC0415
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from explorer.gui.main_window import wait_until_idle  # noqa: PLC0415

    from explorer.logs import setup_logging  # noqa: PLC0415

    setup_logging(getattr(args, "verbose", False))  # tracebacks go to the log file (-v: stderr too)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Deep Explorer")
    app.setWindowIcon(QIcon(str(APP_ICON)))
    app.setOrganizationName("DeepExplorer")
    screenshot = getattr(args, "screenshot", None)
    if screenshot:
        problem = screenshot_problem(screenshot)
        if problem:
            print(f"deep-explorer: error: {problem} (--screenshot)", file=sys.stderr)
            return 2
    window = create_window(args, interactive=screenshot is None)
    window.show()
    status = {"code": 0}
    if screenshot:
        def save_and_quit() -> None:
            if not window.export_view(screenshot, window=True):
                print(f"deep-explorer: error: could not save {screenshot}", file=sys.stderr)
                status["code"] = 2
            else:
                print(f"saved {screenshot}")
            for message in window.errors:  # a bad option or a failure on the way: not what was asked for
                print(f"deep-explorer: error: {message}", file=sys.stderr)
                status["code"] = 2
            window.close()
            app.quit()

        QTimer.singleShot(300, lambda: wait_until_idle(window, save_and_quit))
    previous_hook = sys.excepthook

    def unexpected(kind, exc, tb) -> None:
        # a slot that raised: the traceback to the log, one message to the user, the window keeps running
        if not issubclass(kind, Exception):
            return previous_hook(kind, exc, tb)
        logging.getLogger("explorer").error("unexpected error", exc_info=(kind, exc, tb))
        window.show_error(exc)

    sys.excepthook = unexpected
    try:
        app.exec()
    finally:
        sys.excepthook = previous_hook
    return status["code"]
