"""Before Qt loads its xcb plugin: our own line naming the libraries it lacks and how to install them."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from explorer.gui import app

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path("/fake/PySide6/Qt/plugins/platforms/libqxcb.so")
FAKE_LDD = """\
\tlinux-vdso.so.1 (0x00007ffd6b7f2000)
\tlibQt6XcbQpa.so.6 => /fake/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f3a1c000000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb1.so => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f3a1bf00000)
\tlibxkbcommon-x11.so.0 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3a1bc00000)
"""


def fake_ldd(output: str):
    calls = []

    def ldd(path):
        calls.append(path)
        return output
    ldd.calls = calls
    return ldd


def test_missing_xcb_libraries_are_named_with_their_packages(monkeypatch):
    monkeypatch.setattr(app.sys, "platform", "linux")
    ldd = fake_ldd(FAKE_LDD)
    message = app.xcb_problem({"DISPLAY": ":0"}, ldd=ldd, plugin=PLUGIN)
    assert ldd.calls == [PLUGIN]
    for lib in ("libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxkbcommon-x11.so.0"):
        assert lib in message
    assert "libQt6XcbQpa" not in message and "libc.so.6" not in message and "libxcb.so.1" not in message
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 " in message
    assert "QT_QPA_PLATFORM=offscreen" in message
    assert "\n" not in message  # one line


@pytest.mark.parametrize("environ", [{"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"},
                                     {"QT_QPA_PLATFORM": "xcb"},  # no display: Qt says so itself
                                     {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"},
                                     {"DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland;xcb"}])
def test_nothing_is_checked_when_the_platform_is_not_xcb(monkeypatch, environ):
    monkeypatch.setattr(app.sys, "platform", "linux")
    ldd = fake_ldd(FAKE_LDD)
    assert app.xcb_problem(environ, ldd=ldd, plugin=PLUGIN) is None
    assert ldd.calls == []


def test_xcb_with_every_library_present_says_nothing(monkeypatch):
    monkeypatch.setattr(app.sys, "platform", "linux")
    present = "\n".join(line for line in FAKE_LDD.splitlines() if "not found" not in line)
    for environ in ({"DISPLAY": ":0"}, {"DISPLAY": ":1", "QT_QPA_PLATFORM": "xcb"}):
        assert app.xcb_problem(environ, ldd=fake_ldd(present), plugin=PLUGIN) is None


def test_the_window_command_prints_our_line_and_never_starts_qt(monkeypatch, capsys):
    import PySide6.QtWidgets

    monkeypatch.setattr(app.sys, "platform", "linux")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":42")
    monkeypatch.setattr(app, "xcb_plugin", lambda: PLUGIN)
    monkeypatch.setattr(app, "run_ldd", fake_ldd(FAKE_LDD))
    started = []
    monkeypatch.setattr(app, "create_window", lambda *a, **k: started.append(1) or pytest.fail("window made"))
    monkeypatch.setattr(PySide6.QtWidgets.QApplication, "exec", lambda *a: started.append(1))
    assert app.run_gui(argparse.Namespace(no_settings=True)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deep-explorer: error: the window cannot open on this X display")
    assert "libxcb-icccm.so.4" in err[0]
    assert started == []


def test_the_package_list_is_the_one_readme_and_ci_install():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    block = re.search(r'XCB_PACKAGES="([^"]+)"', ci).group(1).split()
    assert block == app.XCB_PACKAGES
    flat = " ".join(readme.split())
    assert " ".join(app.XCB_PACKAGES) in flat
    for soname in ("libxcb-icccm.so.4", "libxcb-cursor.so.0", "libX11-xcb.so.1", "libxcb-render-util.so.0"):
        assert app.debian_package(soname) in app.XCB_PACKAGES
