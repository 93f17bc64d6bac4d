"""Laptop screens: the window at 1024x640 keeps its centre, the layer table's numbers in view, the grid
filling its pane; compact counts that read back as the exact number."""
from __future__ import annotations

import math
import random
import re

import pytest
import torch

from explorer.core.costs import format_count
from explorer.core.tiling import activation_grid, fitted_layout, grid_layout
from explorer.gui.widgets.layer_table import LAYER, MACS, OUTPUT, PARAMS, TYPE

from test_gui import close_window, options, wait_idle

UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def read_count(text: str) -> float:
    match = re.fullmatch(r"(-?\d+(?:\.\d)?)([KMGT]?)", text)
    assert match, f"{text!r} is not a compact count"
    return float(match.group(1)) * UNITS[match.group(2)]


def test_format_count_is_compact_and_reads_back_within_half_a_digit():
    """Three significant digits: 7.1K, 15.5M, 116G; never 1000 of a unit."""
    rng = random.Random(0)
    values = [0, 7, 432, 999, 999.4, 999.5, 1000, 4608, 99_949, 99_950, 999_949, 999_950, 7_077_888,
              18_874_368, 999_949_999, 1_800_000_000, 138_357_544, 5 * 10**12]
    values += [round(10 ** rng.uniform(0, 14)) for _ in range(300)]
    for n in values:
        text = format_count(n)
        assert len(text) <= 5, (n, text)
        back = read_count(text)
        unit = UNITS[text[-1]] if text[-1] in UNITS else 1
        step = unit * (0.1 if "." in text else 1)  # the last digit shown
        assert abs(back - n) <= step / 2 + 1e-6 * unit, (n, text)
        assert not text.startswith("1000"), (n, text)  # 999,950 is 1.0M, not 1000.0K
        if n >= 1000:
            digits = text.rstrip("KMGT").replace(".", "").lstrip("0")
            assert len(digits) in (2, 3), (n, text)
    assert format_count(7_077_888) == "7.1M" and format_count(1_800_000_000) == "1.8G"
    assert format_count(115_605_504) == "116M" and format_count(18_874_368) == "18.9M"


def test_fitted_layout_shows_tiles_larger_than_any_other_column_count():
    for count, th, tw, aspect in [(16, 128, 128, 0.5), (16, 128, 128, 2.0), (768, 14, 14, 0.6), (64, 8, 8, 1.0),
                                  (3, 64, 64, 0.2), (10, 4, 40, 1.0)]:
        layout = fitted_layout(count, th, tw, aspect)
        assert layout.rows * layout.cols >= count > (layout.rows - 1) * layout.cols

        def tile_scale(cols):  # pixels per activation pixel in a pane of width aspect, height 1
            rows = math.ceil(count / cols)
            return min(aspect / (cols * (tw + 1) + 1), 1 / (rows * (th + 1) + 1))
        assert tile_scale(layout.cols) >= max(tile_scale(c) for c in range(1, count + 1)) - 1e-12
    # a tall pane gets fewer columns than a square grid, a wide one more
    assert fitted_layout(16, 32, 32, 0.4).cols < grid_layout(16, 32, 32).cols < fitted_layout(16, 32, 32, 2.5).cols


def test_activation_grid_places_each_channel_where_the_fitted_layout_says():
    act = torch.rand(10, 5, 7)
    grid, layout = activation_grid(act, "layer", aspect=3.0)
    assert (layout.rows, layout.cols) == (fitted_layout(10, 5, 7, 3.0).rows, fitted_layout(10, 5, 7, 3.0).cols)
    scaled = (act - act.min()) / (act.max() - act.min())
    for unit in range(10):
        top, left = layout.tile_origin(unit)
        assert torch.allclose(grid[top:top + 5, left:left + 7], scaled[unit], atol=1e-6)


def assert_columns_fit(table) -> None:
    """Layer, output, params and MACs: no cell elided (its text and the style's margins fit the section)."""
    from PySide6.QtWidgets import QStyle  # noqa: PLC0415

    header, model, metrics = table.horizontalHeader(), table.model(), table.fontMetrics()
    margins = 2 * (table.style().pixelMetric(QStyle.PM_FocusFrameHMargin, None, table) + 1)
    for col in (LAYER, OUTPUT, PARAMS, MACS):
        need = max(metrics.horizontalAdvance(model.index(r, col).data() or "") for r in range(model.rowCount()))
        need = max(need, header.fontMetrics().horizontalAdvance(model.headerData(col, 1)))
        assert header.sectionSize(col) - margins >= need, (col, header.sectionSize(col), need)


def test_a_deep_models_table_keeps_its_numbers_in_a_narrow_dock_and_its_classes_in_a_wide_one(qtbot):
    from explorer.core.models import load_model  # noqa: PLC0415
    from explorer.core.probe import layer_table  # noqa: PLC0415
    from explorer.gui.widgets.layer_table import LayerTable  # noqa: PLC0415

    loaded = load_model("resnet18", weights="none")
    table = LayerTable()
    qtbot.addWidget(table)
    table.set_rows(layer_table(loaded.module, loaded.spec.shape, loaded.device))
    table.resize(300, 400)
    table.show()
    qtbot.waitExposed(table)
    header = table.horizontalHeader()
    assert_columns_fit(table)
    assert header.sectionViewportPosition(MACS) + header.sectionSize(MACS) <= table.viewport().width()
    assert table.horizontalScrollBar().maximum() == 0
    assert table.isColumnHidden(TYPE)  # too narrow to read a class name: it is in the row's tooltip
    assert "(BasicBlock)" in table.model().index(table.names().index("layer1.0"), LAYER).data(3)
    table.resize(460, 400)
    qtbot.waitUntil(lambda: not table.isColumnHidden(TYPE))
    assert header.sectionSize(TYPE) >= table.fontMetrics().horizontalAdvance("Conv2d")


@pytest.fixture
def laptop_window(qtbot, no_thread_leak):
    from explorer.gui.app import create_window  # noqa: PLC0415

    window = create_window(options(), interactive=False)  # bundled model, sample images
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    window.resize(1024, 640)
    qtbot.wait(300)  # the grid asks for a new layout once its pane has settled
    wait_idle(qtbot, window)
    yield window
    close_window(qtbot, window)


def test_centre_keeps_room_and_layer_numbers_are_not_cut_at_1024x640(laptop_window):
    window = laptop_window
    assert window.width() == 1024
    assert window.centralWidget().width() >= 500
    table = window.layers
    assert table.isVisible() and table.viewport().width() > 0
    header = table.horizontalHeader()
    # the name, shape and counts: every cell's text fits its column (Qt elides beyond the focus margins) ...
    assert_columns_fit(table)
    # ... and all columns lie inside the viewport (no horizontal scrolling to reach params and MACs)
    assert sum(header.sectionSize(c) for c in range(header.count())) <= table.viewport().width()
    assert header.sectionViewportPosition(MACS) + header.sectionSize(MACS) <= table.viewport().width()
    # the class name, last, gets the rest (elided if need be; the tooltip has it)
    assert header.sectionSize(TYPE) >= 24


def test_layer_table_shows_compact_counts_with_the_exact_value_in_the_tooltip(laptop_window):
    table = laptop_window.layers
    model = table.model()
    rows = table.table_model.rows
    conv = next(i for i, r in enumerate(rows) if r.macs > 10**6)
    row = rows[conv]
    assert model.index(conv, MACS).data() == format_count(row.macs)
    assert model.index(conv, PARAMS).data() == format_count(row.params)
    tip = model.index(conv, MACS).data(3)  # Qt.ToolTipRole
    assert f"{row.macs:,}" in tip and f"{row.params:,}" in tip and row.name in tip
    assert model.index(conv, LAYER).data().strip() == row.name.rsplit(".", 1)[-1]


def test_activation_grid_fills_its_pane(qtbot, laptop_window):
    window = laptop_window
    pane = window.activations.grid_pane
    view_rect = pane.view.sceneBoundingRect()
    image_rect = pane.image_item.sceneBoundingRect()
    inside = view_rect.intersected(image_rect)
    covered = inside.width() * inside.height() / (view_rect.width() * view_rect.height())
    # a square 4x4 grid of 16 channels in this tall pane would cover about half of it
    layout = window.layer_view.layout
    assert covered >= 0.75, (covered, layout, view_rect)
    # a wider pane (splitter dragged) gets a grid with more columns
    before = layout.cols
    window.activations.splitter.setSizes([900, 100])
    qtbot.waitUntil(lambda: window.layer_view.layout.cols > before, timeout=10_000)


def test_attribution_map_keeps_the_window_height_and_room_at_1024x640(qtbot, laptop_window):
    window = laptop_window
    window.show_view("attribution")
    panel = window.attribution_panel
    qtbot.waitUntil(lambda: panel.result is not None and not window.busy, timeout=60_000)
    qtbot.wait(100)
    page = window.tabs.currentWidget()  # the tab's scroll area: the panel fits it, its controls scroll
    assert panel.height() <= page.viewport().height()
    assert page.verticalScrollBar().maximum() == 0
    assert panel.pane.width() >= 250 and panel.pane.height() >= 400, (panel.pane.width(), panel.pane.height())


def test_first_layer_filters_fill_their_pane_and_say_what_they_are(qtbot, laptop_window):
    window = laptop_window
    window.show_view("filters")
    panel = window.filters
    qtbot.wait(300)
    qtbot.waitUntil(lambda: not window.busy and panel.filter_view is not None, timeout=30_000)
    qtbot.wait(300)  # the legend gives the zoom once the view has its range
    weight = window.loaded.module.features.conv1.weight.detach()  # the bundled model's first conv
    scales = weight.reshape(weight.shape[0], -1).abs().max(1).values
    legend = panel.legend.text()
    c_out, c_in, kh, kw = weight.shape
    assert f"features.conv1 filters, {c_in}x{kh}x{kw} ({c_out}), RGB" in legend
    assert f"({float(scales.min()):.3g} to {float(scales.max()):.3g})" in legend and "grey = 0" in legend
    zoom = panel.zoom()
    assert zoom is not None and zoom > 4 and f"{zoom:.0f}x, nearest neighbour" in legend
    pane = panel.first_pane
    view_rect, image_rect = pane.view.sceneBoundingRect(), pane.image_item.sceneBoundingRect()
    inside = view_rect.intersected(image_rect)
    assert inside.width() * inside.height() >= 0.75 * view_rect.width() * view_rect.height()
    page = window.tabs.currentWidget()
    assert page.verticalScrollBar().maximum() == 0  # legend and caption fit without scrolling the tab
