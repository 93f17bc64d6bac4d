"""The LSTM panel, driven with qtbot: the characters on screen get the colours of the cell's values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pytestqt")

from rnn_fixtures import QUOTE_TEXT, planted_quote_model, random_char_rnn  # noqa: E402

from explorer.core.rnn.model import save_char_rnn  # noqa: E402
from explorer.core.rnn.cells import CellRef  # noqa: E402
from explorer.core.rnn.render import LUT  # noqa: E402
from explorer.gui.panels.lstm import LstmPanel  # noqa: E402


def _expected_rgb(value: float) -> tuple[int, int, int]:
    """The colour map's definition: value clipped to [−1, 1] → one of 256 LUT entries."""
    k = int(np.rint((min(max(value, -1.0), 1.0) + 1.0) * 0.5 * 255))
    return tuple(int(v) for v in LUT[k])


@pytest.fixture
def panel(qtbot):
    widget = LstmPanel()
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    qtbot.waitExposed(widget)
    yield widget
    widget.shutdown()
    assert widget.runner.idle and widget.sample_runner.idle and widget.runner.pool.activeThreadCount() == 0


def _pixel(panel: LstmPanel, index: int) -> tuple[int, int, int]:
    """The background drawn for character ``index``: a pixel in its cell's top-left corner."""
    panel.view.scroll_to_char(index)
    rect = panel.view.char_rect(index)
    image = panel.view.viewport().grab().toImage()
    ratio = image.devicePixelRatio()
    c = image.pixelColor(int((rect.left() + 1) * ratio), int((rect.top() + 1) * ratio))
    return c.red(), c.green(), c.blue()


def test_panel_colours_characters_by_the_cells_value(panel, qtbot, tmp_path):
    model = random_char_rnn("lstm", layers=2, hidden=12)
    save_char_rnn(model, tmp_path / "m.pt")
    assert panel.load_model(tmp_path / "m.pt")
    text = QUOTE_TEXT * 3
    with qtbot.waitSignal(panel.analysisFinished, timeout=30_000):
        panel.set_text(text)
    # Independent oracle: nn.LSTM's own last-layer output h.
    with torch.no_grad():
        out, _ = model.rnn(model.embed(model.encode(text)).unsqueeze(0))
    h = out[0].numpy()
    panel.show_cell(CellRef(1, "h", 5))
    qtbot.wait(20)
    checked = 0
    for index in (0, 4, 7, 15, 40, len(text) // 2, len(text) - 3):
        if text[index] == "\n":
            continue
        assert _pixel(panel, index) == _expected_rgb(float(h[index, 5])), index
        checked += 1
    assert checked >= 5
    assert "1:h:5" in panel.hover_text(4) and "next:" in panel.hover_text(4)


def test_planted_quote_cell_lights_strings_red(panel, qtbot, tmp_path):
    save_char_rnn(planted_quote_model(), tmp_path / "q.pt")
    assert panel.load_model(tmp_path / "q.pt")
    with qtbot.waitSignal(panel.analysisFinished, timeout=30_000):
        panel.set_text(QUOTE_TEXT)
    assert panel.cell.index == 0 and panel.cell.layer == 0  # the best "string" cell is shown first
    panel.show_cell(CellRef(0, "h", 0))
    qtbot.wait(20)
    inside = QUOTE_TEXT.index("hello") + 2
    outside = QUOTE_TEXT.index("print") + 1
    r, g, b = _pixel(panel, inside)
    assert r > 150 and b < 120  # red: on
    r, g, b = _pixel(panel, outside)
    assert b > 130 and r < 120  # blue: off
    top = panel.browser.topLevelItem(0)
    assert top.text(0) == "inside a string literal" and top.child(0).text(0).startswith("0:")


def test_selection_search_from_the_view(panel, qtbot, tmp_path):
    save_char_rnn(planted_quote_model(), tmp_path / "q.pt")
    panel.load_model(tmp_path / "q.pt")
    with qtbot.waitSignal(panel.analysisFinished, timeout=30_000):
        panel.set_text(QUOTE_TEXT)
    start = QUOTE_TEXT.index('"hello')
    panel.view.set_spans([(start, start + 12)])
    panel.search_selection()
    first = panel.browser.topLevelItem(0)
    assert first.text(0).startswith("your selection")
    assert first.child(0).text(0) in ("0:h:0", "0:c:0")
    matches = panel.browser.topLevelItem(1)
    assert matches.childCount() >= 3


def test_bad_model_file_shows_one_line(panel, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    assert not panel.load_model(bad)
    assert "not a readable torch checkpoint" in panel.status.text()


def test_model_writes_and_view_follows(panel, qtbot, tmp_path):
    save_char_rnn(random_char_rnn("gru", layers=1, hidden=8), tmp_path / "g.pt")
    panel.load_model(tmp_path / "g.pt")
    with qtbot.waitSignal(panel.sampleFinished, timeout=30_000):
        panel.start_sampling(prime="x = ", length=60, temperature=1.0, seed=1)
    qtbot.waitUntil(lambda: panel.analysis is not None and panel.analysis.replay.length == 64, timeout=30_000)
    assert panel.view.text().startswith("x = ") and len(panel.view.text()) == 64
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)  # writing and reading both ended
    assert panel.write_button.text() == "Let the model write"


def test_large_text_paints_only_visible_lines(panel, qtbot, tmp_path):
    save_char_rnn(random_char_rnn("rnn", layers=1, hidden=4), tmp_path / "r.pt")
    panel.load_model(tmp_path / "r.pt")
    text = QUOTE_TEXT * 1200  # ~100,000 characters
    with qtbot.waitSignal(panel.analysisFinished, timeout=60_000):
        panel.set_text(text)
    panel.view.verticalScrollBar().setValue(panel.view.line_count() // 2)
    qtbot.wait(10)
    start, end = panel.view.visible_range()
    assert 0 < end - start < 10_000
    index = start + 3
    value = panel.analysis.replay.layers[0]["h"][index, panel.cell.index]
    if text[index] != "\n":
        assert _pixel(panel, index) == _expected_rgb(float(value))


def test_export_png(panel, tmp_path):
    out = tmp_path / "panel.png"
    assert panel.export_png(out) and out.stat().st_size > 1000


def test_bundled_menu_lists_and_loads_every_bundled_char_rnn(panel):
    from explorer.core.rnn.model import BUNDLED_CHAR_RNNS, load_char_rnn
    actions = panel.bundled_button.menu().actions()
    assert [a.data() for a in actions] == list(BUNDLED_CHAR_RNNS)
    for action in actions:
        action.trigger()
        expected = load_char_rnn(action.data())
        assert panel.model.config == expected.config and panel.model.vocab == expected.vocab
        cfg = expected.config
        assert action.text() == f"{action.data()}: {cfg.cell.upper()} {cfg.num_layers}×{cfg.hidden_size}"
        assert panel.model_label.text().startswith(f"{action.data()}: {cfg.cell.upper()}")


def test_text_too_long_for_memory_is_refused_with_one_line(panel, qtbot, tmp_path, monkeypatch):
    """The panel keeps every gate of every step; a text of which not even a prefix would fit is
    refused before the replay."""
    from explorer.core.rnn import memory

    save_char_rnn(random_char_rnn("lstm", layers=2, hidden=16), tmp_path / "m.pt")
    panel.load_model(tmp_path / "m.pt")
    monkeypatch.setattr(memory, "available_bytes", lambda: 100_000_000)  # 80 MB: below the fixed overhead
    panel.set_text(QUOTE_TEXT * 2000)
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    assert panel.analysis is None
    message = panel.status.text()
    assert "of memory" in message and "characters fit" in message and "\n" not in message


def test_text_too_long_to_keep_shows_a_prefix_and_ranks_the_whole_text(panel, qtbot, tmp_path, monkeypatch):
    from explorer.core.rnn import memory
    from explorer.core.rnn.cells import kept_characters

    save_char_rnn(random_char_rnn("lstm", layers=2, hidden=16), tmp_path / "m.pt")
    panel.load_model(tmp_path / "m.pt")
    monkeypatch.setattr(memory, "available_bytes", lambda: 200_000_000)
    text = QUOTE_TEXT * 2000  # ~180,000 characters × 400 bytes of gates each: more than fits
    kept = kept_characters(panel.model, len(text))
    assert 1000 < kept < len(text)
    panel.set_text(text)
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert panel.analysis is not None and panel.analysis.truncated
    assert panel.analysis.replay.length == kept and panel.analysis.length == len(text)
    message = panel.status.text()
    assert f"{len(text):,} characters" in message and f"first {kept:,}" in message and "\n" not in message
    colors = panel.cell_colors()
    assert colors is not None and len(colors) == len(text)
    assert (colors[kept:] == 255).all()  # beyond the kept prefix: not coloured
