"""The Compare tab driven in the window: open B, run on the folder, what is drawn, cancel."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from compare_fixtures import FROZEN, fine_tuned, image_folder
from explorer.core.compare import compare_steps
from explorer.core.preprocess import image_to_tensor, load_image
from explorer.core.probe import run_forward, top_k
from explorer.core.steps import drive
from explorer.gui.app import create_window
from explorer.gui.panels.compare import short_name


def options(**kw) -> argparse.Namespace:
    base = dict(model=None, checkpoint=None, weights="pretrained", trust_checkpoint=False, device="cpu",
                image=None, layer=None, unit=None, view=None, screenshot=None, no_settings=True)
    base.update(kw)
    return argparse.Namespace(**base)


def wait_idle(qtbot, window, timeout=90_000):
    qtbot.waitUntil(lambda: window.loaded is not None and not window.busy, timeout=timeout)
    qtbot.wait(50)
    qtbot.waitUntil(lambda: not window.busy, timeout=timeout)


@pytest.fixture
def compare_window(qtbot, tmp_path, no_thread_leak):
    folder = image_folder(tmp_path / "images", 12, seed=4)
    (folder / "zz-broken.png").write_bytes(b"nope")
    window = create_window(options(image=str(folder), layer="features.conv4", unit=3, view="compare"),
                           interactive=False)
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    b = fine_tuned(window.loaded, steps=3)
    torch.save(b.module.state_dict(), tmp_path / "b.pt")
    yield window, folder, tmp_path / "b.pt"
    window.close()
    qtbot.wait(50)
    assert window.runner.idle and not window.busy


def test_compare_tab_shows_the_heatmap_bars_and_both_top5(qtbot, compare_window):
    window, folder, b_path = compare_window
    panel = window.compare_panel
    assert window.current_view() is panel
    assert panel.empty_hint.isVisible()  # before the first run: a hint, not bare axes
    panel.open_b(b_path)
    qtbot.waitUntil(lambda: panel.b is not None and not window.busy, timeout=60_000)
    panel.run()  # the window's folder
    qtbot.waitUntil(lambda: panel.result is not None and not window.busy, timeout=120_000)
    assert panel.folder == folder
    assert not panel.empty_hint.isVisible()
    # the independent computation: the core on the same two models and folder
    expected = drive(compare_steps(window.loaded, panel.b, folder, batch_size=32))
    np.testing.assert_allclose(panel.heatmap.image, expected.cka.astype(np.float32), atol=1e-6)
    assert panel.heatmap.levels is not None and tuple(panel.heatmap.levels) == (0.0, 1.0)
    ticks = panel.heatmap_plot.getAxis("left")._tickLevels[0]
    assert [t[1] for t in ticks] == [short_name(n) for n in expected.layers_a]  # A's layers down the side
    cka = expected.layer_cka()
    heights = panel.cka_bars.opts["height"]
    np.testing.assert_allclose(heights, [cka[n] for n in expected.layers_a], atol=1e-9)
    changes = panel.change_bars.opts["height"]
    assert all(changes[expected.layers_a.index(n)] == 0.0 for n in FROZEN)
    assert "zz-broken.png" in panel.status.text()
    # both top-5 on the window's current image, as the models give them
    qtbot.waitUntil(lambda: panel.image_result is not None and not window.busy, timeout=30_000)
    with torch.no_grad():
        top_b = top_k(panel.b.module(window.x), panel.b.spec.labels, 5)
        top_a = top_k(window.loaded.module(window.x), window.loaded.spec.labels, 5)
    assert top_a[0]["label"] in panel.top_a.text().split("<br>")[0]
    assert top_b[0]["label"] in panel.top_b.text().split("<br>")[0]
    assert "features.conv4 unit 3" in panel.unit_label.text()
    # the unit's maps in A and B, and its top-9 in the folder, against each model's own forward passes
    ra = run_forward(window.loaded.module, window.x, ["features.conv4"]).activations["features.conv4"][0, 3]
    rb = run_forward(panel.b.module, window.x, ["features.conv4"]).activations["features.conv4"][0, 3]
    np.testing.assert_array_equal(panel.unit_a.array, ra.numpy())
    np.testing.assert_array_equal(panel.unit_b.array, rb.numpy())
    paths = sorted(p for p in folder.iterdir() if p.name != "zz-broken.png")
    x = torch.cat([image_to_tensor(load_image(p), window.loaded.spec) for p in paths])
    best = [set(run_forward(m, x, ["features.conv4"]).activations["features.conv4"][:, 3].flatten(1).amax(1)
                .argsort(descending=True)[:9].tolist()) for m in (window.loaded.module, panel.b.module)]
    assert f"top-9 in the folder: {len(best[0] & best[1])} of 9 the same" in panel.unit_label.text()


def test_compare_tab_cancel_stops_the_pass(qtbot, compare_window):
    window, folder, b_path = compare_window
    panel = window.compare_panel
    panel.open_b(b_path)
    qtbot.waitUntil(lambda: panel.b is not None and not window.busy, timeout=60_000)
    panel.run()
    assert panel.cancel_button.isEnabled()
    panel.cancel()
    qtbot.waitUntil(lambda: panel.task is None, timeout=60_000)
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert panel.result is None or panel.result.images == 12  # cancelled, or done before the cancel arrived
    if panel.result is None:
        assert panel.status.text() == "cancelled"


def test_compare_tab_asks_for_b_first(qtbot, compare_window):
    window, _, _ = compare_window
    panel = window.compare_panel
    panel.run()
    assert panel.task is None and "Open B" in panel.status.text()
