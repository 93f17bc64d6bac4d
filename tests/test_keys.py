"""One registry of key bindings (explorer.gui.keys): the window's shortcuts, F1 and README all come from it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut

from explorer.gui import keys
from explorer.gui.app import create_window
from test_gui import close_window, options, wait_idle

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def window(qtbot, no_thread_leak):
    w = create_window(options(), interactive=False)
    qtbot.addWidget(w)
    w.show()
    wait_idle(qtbot, w)
    yield w
    close_window(qtbot, w)


def _text(sequence: QKeySequence) -> str:
    return sequence.toString(QKeySequence.PortableText)


def test_every_shortcut_in_the_window_is_in_the_registry_and_every_registered_one_is_bound(window):
    bound = Counter()
    for action in window.findChildren(QAction):
        for sequence in action.shortcuts():
            bound[_text(sequence)] += 1
    for shortcut in window.findChildren(QShortcut):
        bound[_text(shortcut.key())] += 1
    expected = Counter()
    for b in keys.BINDINGS:
        if not b.shortcut:
            continue
        chosen = b.keys[:len(window.views)] if b.name == "show_view" else b.keys
        expected.update(_text(QKeySequence(k)) for k in chosen)
    assert bound == expected


def test_registry_keys_are_keys_qt_understands():
    for b in keys.BINDINGS:
        if b.shortcut:
            for k in b.keys:
                assert not QKeySequence(k).isEmpty() and _text(QKeySequence(k)) == k, (b.name, k)


def test_f1_shows_every_binding_in_a_table(qtbot, window):
    qtbot.keyClick(window, Qt.Key_F1)
    dialog = window.shortcuts_dialog
    assert dialog is not None and dialog.isVisible()
    table = dialog.table
    shown = [tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount())]
    assert shown == keys.help_rows()
    assert any(row == ("Space", "freeze or unfreeze", "Live tab") for row in shown)  # the Live keys are listed
    dialog.close()


def test_view_keys_follow_the_tabs(qtbot, window):
    qtbot.keyClick(window, Qt.Key_3, Qt.ControlModifier)
    assert window.tabs.currentIndex() == 2
    qtbot.keyClick(window, Qt.Key_1, Qt.ControlModifier)
    assert window.tabs.currentIndex() == 0


def test_readme_shortcut_table_is_the_registry():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Keyboard shortcuts"):]
    table = section[section.index("| keys |"):]
    table = table[:table.index("\n\n") + 1]
    assert table == keys.markdown_table(), "README is out of date: python -m explorer.gui.keys prints the table"
