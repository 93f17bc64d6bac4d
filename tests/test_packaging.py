"""The desktop bundle's inputs, checked cheaply (the bundle itself is built by packaging/build, not in CI)."""
from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

from explorer import __version__
from explorer.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_names_the_release_and_the_resources(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"deep-explorer {__version__} ") and str(ROOT / "resources") in out


def test_frozen_app_finds_resources_inside_the_bundle(tmp_path):
    script = ("import sys; sys._MEIPASS = sys.argv[1]\n"
              "from explorer.core import resources\n"
              "print(resources.RESOURCES, resources.APP_ICON)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(tmp_path / "resources"), str(tmp_path / "resources" / "icons" / "deep-explorer.png")]


def test_desktop_entry_and_icons():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(ROOT / "packaging" / "deep-explorer.desktop")
    d = entry["Desktop Entry"]
    assert d["Type"] == "Application" and d["Exec"].split()[0] == "deep-explorer" and d["Terminal"] == "false"
    assert (ROOT / "resources" / "icons" / f"{d['Icon']}.png").is_file()
    spec = (ROOT / "packaging" / "deep-explorer.spec").read_text()
    for icon in re.findall(r'"icons" / "([\w.-]+)"', spec):
        assert (ROOT / "resources" / "icons" / icon).is_file(), icon


def test_install_desktop_writes_the_entry_and_the_icon(tmp_path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path))
    r = subprocess.run(["bash", str(ROOT / "packaging" / "install-desktop"), "/opt/x/deep-explorer"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "applications" / "deep-explorer.desktop").read_text()
    assert "Exec=/opt/x/deep-explorer %F" in text
    assert (tmp_path / "icons" / "hicolor" / "256x256" / "apps" / "deep-explorer.png").stat().st_size > 1000


def test_bundle_check_lists_every_subcommand():
    """packaging/check_bundle.py runs --help for every subcommand the parser has."""
    from explorer.cli import build_parser

    sys.path.insert(0, str(ROOT / "packaging"))
    try:
        import check_bundle
    finally:
        sys.path.pop(0)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    listed = check_bundle.subcommands()
    assert {s[0] for s in listed} == set(sub.choices)
    assert ["bench", "live"] in listed and ["lstm", "cells"] in listed
