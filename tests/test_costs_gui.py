"""The Costs tab draws the core's cost table, follows the model and the batch, and exports CSV."""
from __future__ import annotations

import numpy as np

from explorer.core.costs import cost_table
from explorer.gui.app import create_window
from test_gui import close_window, options, wait_idle


def test_costs_tab_shows_the_core_table_and_follows_the_batch(qtbot, no_thread_leak, tmp_path):
    window = create_window(options(model="alexnet", weights="none"), interactive=False)
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    panel = window.costs_panel
    assert window.show_view("costs")
    wait_idle(qtbot, window)
    expected = cost_table(window.loaded.module, window.loaded.spec.shape)
    assert panel.table is not None and panel.table.totals() == expected.totals()
    bars = [i for i in panel.memory_plot.listDataItems() + panel.memory_plot.getPlotItem().items
            if type(i).__name__ == "BarGraphItem"]
    heights = np.asarray(bars[0].opts["height"])
    shown = panel.shown_rows()
    np.testing.assert_allclose(heights, [r.activation_bytes / 2**20 for r in shown])
    assert "params 61.1M" in panel.totals.text()
    panel.batch.setValue(4)
    wait_idle(qtbot, window)
    assert panel.table.batch == 4 and panel.table.activations == 4 * expected.activations
    out = tmp_path / "costs.csv"
    assert panel.export_csv(out)
    lines = out.read_text().strip().splitlines()
    assert len(lines) == len(panel.table.rows) + 2 and lines[-1].startswith("total,")
    close_window(qtbot, window)
