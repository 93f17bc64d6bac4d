"""The window's command-line options are checked as the subcommands check theirs; errors are one line.

A bad option is shown to the user (``window.errors``) and the window goes on with the default; a
``--screenshot`` run then exits 2. A ``--screenshot`` destination is checked before the window opens and
the save after it. Tracebacks go to the log file, on stderr only with ``-v``.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from explorer.cli import build_parser
from explorer.gui.app import create_window, run_gui
from test_gui import close_window, options, wait_idle


@pytest.fixture
def restore_logging():
    """run_gui sets up the ``explorer`` logger; other tests (caplog) need it as it was."""
    logger = logging.getLogger("explorer")
    saved = logger.handlers[:], logger.propagate, logger.level
    yield
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


def _labels(tmp_path, count: int) -> str:
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"class {i}\n" for i in range(count)))
    return str(path)


BAD_OPTIONS = {
    "layer": (dict(layer="nope"), "no layer named 'nope'"),
    "unit": (dict(unit=9999), "unit 9999 is out of range"),
    "device": (dict(device="cuda" if not torch.cuda.is_available() else "nosuchdevice"), "device"),
    "text": (dict(text="missing.txt"), "cannot read text file missing.txt"),
    "labels-missing": (dict(labels="no-such-labels.txt"), "cannot read labels file"),
    "labels-count": (dict(labels=2), "has 2 labels but the model has"),
}


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_a_bad_option_is_shown_and_the_window_goes_on_with_the_default(qtbot, no_thread_leak, tmp_path,
                                                                       monkeypatch, name):
    from PySide6.QtWidgets import QMessageBox

    given, expected = BAD_OPTIONS[name]
    if given.get("labels") == 2:
        given = dict(labels=_labels(tmp_path, 2))
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a: shown.append(text))
    window = create_window(options(**given), interactive=True)
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    assert len(shown) == 1 and expected in shown[0] and "\n" not in shown[0], shown
    assert window.errors == shown
    assert window.loaded is not None and window.layer in window.layers.names()
    assert window.unit == 0
    close_window(qtbot, window)


def test_good_model_options_reach_the_window(qtbot, no_thread_leak, tmp_path):
    window = create_window(options(labels=_labels(tmp_path, 6), input_size=(96, 80), layer="features.conv1",
                                   unit=3), interactive=False)
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    assert window.errors == []
    assert window.loaded.spec.labels[5] == "class 5" and window.loaded.spec.size == (96, 80)
    assert window.layer == "features.conv1" and window.unit == 3
    close_window(qtbot, window)


def _screenshot(tmp_path, *extra, **env):
    return subprocess.run([sys.executable, "-m", "explorer", "--no-settings", *extra], capture_output=True,
                          text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen",
                               "DEEP_EXPLORER_LOG": str(tmp_path / "explorer.log"), **env})


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("deep-explorer")]


@pytest.mark.parametrize("where", ["folder", "suffix", "under-a-file", "unwritable"])
def test_a_screenshot_destination_is_checked_before_the_window_opens(tmp_path, where):
    (tmp_path / "a-file").write_text("x")
    out = {"folder": tmp_path, "suffix": tmp_path / "shot.xyz", "under-a-file": tmp_path / "a-file" / "shot.png",
           "unwritable": "/proc/shot.png"}[where]
    result = _screenshot(tmp_path, "--screenshot", str(out))
    assert result.returncode == 2
    assert "saved" not in result.stdout
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "--screenshot" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "shot.xyz").exists()


def test_a_screenshot_run_with_bad_options_exits_2_and_tracebacks_stay_in_the_log(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    out = tmp_path / "shot.png"
    result = _screenshot(tmp_path, "--layer", "nope", "--image", str(bad), "--screenshot", str(out))
    assert result.returncode == 2
    lines = _error_lines(result.stderr)
    assert any("no layer named 'nope'" in line for line in lines), result.stderr
    assert any("bad.png is not an image" in line for line in lines), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" in (tmp_path / "explorer.log").read_text()  # the details are in the log file
    assert Image.open(out).size[0] >= 800  # the window as it is, saved all the same


def test_verbose_shows_the_tracebacks_on_stderr(tmp_path):
    assert build_parser().parse_args(["-v"]).verbose and not build_parser().parse_args([]).verbose
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    result = _screenshot(tmp_path, "-v", "--image", str(bad), "--screenshot", str(tmp_path / "shot.png"))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "bad.png is not an image" in result.stderr


def test_a_failed_save_is_an_error_not_saved(qtbot, no_thread_leak, tmp_path, monkeypatch, capsys,
                                             restore_logging):
    from explorer.gui.main_window import MainWindow

    monkeypatch.setenv("DEEP_EXPLORER_LOG", str(tmp_path / "explorer.log"))
    monkeypatch.setattr(MainWindow, "export_view", lambda self, path, window=False: False)
    code = run_gui(options(screenshot=str(tmp_path / "shot.png")))
    captured = capsys.readouterr()
    assert code == 2 and "saved" not in captured.out
    assert _error_lines(captured.err) == [f"deep-explorer: error: could not save {tmp_path / 'shot.png'}"]


def test_an_exception_in_a_slot_is_one_message_and_a_log_entry(qtbot, no_thread_leak, tmp_path, monkeypatch,
                                                               capsys, restore_logging):
    from PySide6.QtCore import QTimer

    from explorer.gui.main_window import MainWindow

    monkeypatch.setenv("DEEP_EXPLORER_LOG", str(tmp_path / "explorer.log"))
    real_show = MainWindow.show

    def show_then_fail(self):
        real_show(self)
        QTimer.singleShot(0, lambda: {}["missing key"])  # a bug in a slot

    monkeypatch.setattr(MainWindow, "show", show_then_fail)
    code = run_gui(options(screenshot=str(tmp_path / "shot.png")))
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    assert _error_lines(captured.err) == ["deep-explorer: error: KeyError: 'missing key'"]
    assert "Traceback" in (tmp_path / "explorer.log").read_text()
