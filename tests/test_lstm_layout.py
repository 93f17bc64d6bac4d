"""The LSTM tab in the window: no CNN controls while it is shown, its statistics once, cell names
explained, model-written text marked, whole axis titles."""
from __future__ import annotations

import pytest
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel

from rnn_fixtures import random_char_rnn
from test_gui import close_window, options, wait_idle

from explorer.core.rnn.cells import CellRef
from explorer.core.rnn.model import sample_steps, save_char_rnn
from explorer.gui.app import create_window
from explorer.gui.panels.lstm import LstmPanel

# what the names mean, written out here independently of the panel's table
NAMES = {"h": "hidden state h", "c": "cell state c", "i": "input gate i", "f": "forget gate f",
         "o": "output gate o", "g": "cell input g"}


def cnn_widgets(window):
    return {"toolbar": window.model_toolbar, "model": window.model_label, "device": window.device_label,
            "device menu": window.device_combo, "layers": window.layers_dock, "input": window.input_dock}


def shown_texts(window, needle: str) -> list[str]:
    """Every visible label of the window and the status bar's message that hold ``needle``."""
    texts = [w.text() for w in window.findChildren(QLabel) if w.isVisible() and needle in w.text()]
    if needle in window.statusBar().currentMessage():
        texts.append(window.statusBar().currentMessage())
    return texts


@pytest.fixture
def shapes_window(qtbot, no_thread_leak):
    window = create_window(options(), interactive=False)  # the defaults: bundled model, sample images
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    yield window
    close_window(qtbot, window)


def test_lstm_tab_hides_the_cnn_toolbar_and_status_fields_and_shows_its_statistics_once(qtbot, shapes_window):
    window = shapes_window
    widgets = cnn_widgets(window)
    assert all(w.isVisible() for w in widgets.values())
    window.show_view("lstm")
    panel = window.lstm_panel
    qtbot.waitUntil(lambda: panel.analysis is not None and not panel.busy, timeout=120_000)
    qtbot.wait(50)
    assert [name for name, w in widgets.items() if w.isVisible()] == []
    assert len(shown_texts(window, "bits per character")) == 1
    window.show_view("activations")
    assert [name for name, w in widgets.items() if not w.isVisible()] == []
    assert shown_texts(window, "bits per character") == []  # no LSTM statistics left on a CNN tab


def test_lstm_view_from_the_command_line_gives_the_cnn_controls_back(qtbot, no_thread_leak):
    # --view lstm opens the tab before the window is shown: what is hidden then must come back
    window = create_window(options(view="lstm"), interactive=False)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.lstm_panel.analysis is not None and not window.busy, timeout=120_000)
    assert not window.model_toolbar.isVisible()
    window.show_view("activations")
    wait_idle(qtbot, window)
    assert all(w.isVisible() for w in cnn_widgets(window).values())
    close_window(qtbot, window)


@pytest.fixture
def panel(qtbot, tmp_path):
    widget = LstmPanel()
    qtbot.addWidget(widget)
    widget.resize(1024, 640)
    widget.show()
    qtbot.waitExposed(widget)
    model = random_char_rnn("lstm", layers=2, hidden=12)
    save_char_rnn(model, tmp_path / "m.pt")
    assert widget.load_model(tmp_path / "m.pt")
    widget.test_model = model
    yield widget
    widget.shutdown()


def _underline(panel: LstmPanel, index: int) -> QColor:
    """The colour of the mark row under character ``index`` (where the written-text underline goes)."""
    panel.view.scroll_to_char(index)
    rect = panel.view.char_rect(index)
    image = panel.view.viewport().grab().toImage()
    ratio = image.devicePixelRatio()
    return image.pixelColor(int((rect.center().x()) * ratio), int((rect.bottom() - 2) * ratio))


def test_model_written_text_is_underlined_and_the_users_is_not(panel, qtbot):
    prime = "x = \"abc\" + y\n"
    with qtbot.waitSignal(panel.analysisFinished, timeout=30_000):
        panel.set_text(prime)
    with qtbot.waitSignal(panel.sampleFinished, timeout=30_000):
        panel.start_sampling(length=30, temperature=0.8, seed=3)
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    text = panel.view.text()
    expected = "".join(sample_steps(panel.test_model, prime, 30, 0.8, 3))  # the core, run again
    assert text == prime + expected
    assert panel.view.written() == [(len(prime), len(text))]
    green = QColor("#1b9e3e")
    written = [i for i in range(len(prime), len(text)) if text[i] not in "\n"][:5]
    users = [i for i in range(len(prime)) if text[i] not in "\n"][:5]
    assert all(_underline(panel, i) == green for i in written)
    assert all(_underline(panel, i) != green for i in users)
    assert "written by the model" in panel.hover_text(written[0])
    assert "written by the model" not in panel.hover_text(users[0])
    assert "green underline: written by the model" in panel.legend.text()
    # editing the user's part keeps the model's marks on the unchanged text only
    panel.set_text(text[:len(prime) + 10] + "typed by the user")
    assert panel.view.written() == [(len(prime), len(prime) + 10)]


def test_cell_names_are_explained_in_the_tooltips_and_the_legend(panel, qtbot):
    with qtbot.waitSignal(panel.analysisFinished, timeout=30_000):
        panel.set_text("x = \"abc\" + y\nprint(\"hello world\", z)\n" * 4)
    items = [panel.browser.topLevelItem(i).child(j) for i in range(panel.browser.topLevelItemCount())
             for j in range(panel.browser.topLevelItem(i).childCount())]
    assert items
    for item in items:
        layer, quantity, unit = item.text(0).split(":")
        assert item.toolTip(0) == f"{item.text(0)} = layer {layer}, {NAMES[quantity]}, unit {unit}"
    assert "0:c:28 = layer 0, cell state c, unit 28" in panel.legend.text()
    panel.show_cell(CellRef(1, "f", 3))
    assert "1:f:3 = layer 1, forget gate f, unit 3" in panel.hover_text(2)
    assert "layer:quantity:unit" in panel.layer_box.toolTip() or "layer, quantity" in panel.layer_box.toolTip()


def test_saturation_axis_titles_are_whole_and_fit(panel, qtbot):
    with qtbot.waitSignal(panel.analysisFinished, timeout=30_000):
        panel.set_text("x = \"abc\" + y\n" * 10)
    panel.side_tabs.setCurrentIndex(1)
    qtbot.wait(50)
    plot = panel.saturation_plot.getPlotItem()
    bottom, left = plot.getAxis("bottom"), plot.getAxis("left")
    assert bottom.label.toPlainText().strip() == "left-saturated (< 0.1)"
    assert left.label.toPlainText().strip() == "right-saturated (> 0.9)"
    for axis, room in ((bottom, bottom.width()), (left, left.height())):
        assert axis.label.boundingRect().width() <= room, (axis.label.toPlainText(), room)


def test_heat_strip_rows_say_which_cell_they_are(panel, qtbot):
    with qtbot.waitSignal(panel.analysisFinished, timeout=30_000):
        panel.set_text("x = \"abc\" + y\nprint(\"hello world\", z)\n" * 4)
    heat = panel.heat
    labels = heat._labels
    assert labels
    for k, label in enumerate(labels):
        y = (k + 0.5) * heat.height() / len(labels)
        layer, quantity, unit = label.split(":")
        assert heat.row_tip(y) == f"{label} = layer {layer}, {NAMES[quantity]}, unit {unit}"
