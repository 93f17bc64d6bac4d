"""The Top images and Map tabs driven in the window: scan, follow the unit, D for the deconv view, click to open."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from explorer.cli.topk import generate_folder
from explorer.gui.app import create_window


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
def folder_window(qtbot, tmp_path, monkeypatch, no_thread_leak):
    monkeypatch.setenv("DEEP_EXPLORER_INDEX_DIR", str(tmp_path / "index"))
    folder = generate_folder(tmp_path / "images", 30, seed=2, classes=False)
    (folder / "zz-broken.png").write_bytes(b"nope")
    window = create_window(options(image=str(folder), layer="features.relu3", unit=2), interactive=False)
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    yield window, folder
    window.close()
    qtbot.wait(50)
    assert window.runner.idle and not window.busy


def test_top_images_follow_the_unit_and_open_their_image(qtbot, folder_window):
    window, folder = folder_window
    panel = window.topk_panel
    assert window.show_view("topk")
    wait_idle(qtbot, window)
    assert panel.index is not None and "features.relu3" in panel.index.layers
    assert len(panel.entries) == 9 and panel.tiles[0].text()
    lt = panel.index.layer("features.relu3")
    assert panel.entries[0]["value"] == pytest.approx(float(lt.values[2, 0]))
    first = [e["path"] for e in panel.entries]
    window.activations.unit_selected.emit(5)  # the window follows the click; the panel follows the window
    wait_idle(qtbot, window)
    assert window.unit == 5 and [e["path"] for e in panel.entries] == [e["path"] for e in lt.top(5, panel.index)]
    assert first != [e["path"] for e in panel.entries] or lt.units == 1
    before = panel.tiles[0].icon().pixmap(32, 32).toImage()
    panel.cycle_view()  # the D key: guided backprop
    wait_idle(qtbot, window)
    assert panel.view_mode == "guided-backprop"
    assert panel.tiles[0].icon().pixmap(32, 32).toImage() != before
    panel.tiles[1].click()
    wait_idle(qtbot, window)
    assert window.input_name == Path(panel.entries[1]["path"]).name


def test_map_of_codes_shows_every_image_and_opens_one(qtbot, folder_window):
    window, folder = folder_window
    panel = window.embed_panel
    assert window.show_view("map")
    wait_idle(qtbot, window)
    assert panel.embedding is not None and panel.embedding.final and len(panel.items) == 30
    assert "trustworthiness" in panel.status.text()
    panel.grid_box.setChecked(True)
    assert panel.coords.shape == (30, 2)
    panel.open_point(4)
    wait_idle(qtbot, window)
    assert window.input_name == Path(panel.index.paths[4]).name
