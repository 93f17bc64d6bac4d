"""The live panel driven through the real Qt Multimedia path with generated videos and folders."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from explorer.core.preprocess import image_to_tensor
from explorer.gui.panels.live import LivePanel
from explorer.sources import CameraSource

from live_fixtures import layer_output, make_video, naive_layer_grid, tiny_model

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("video") / "pattern.mp4")


@pytest.fixture
def panel(qtbot):
    before = {t.ident for t in threading.enumerate()}
    widget = LivePanel()
    qtbot.addWidget(widget)
    widget.resize(900, 360)
    widget.show()
    widget.set_model(tiny_model(), "conv1")
    yield widget
    widget.close()
    assert not [t for t in widget.findChildren(QTimer) if t.isActive()], "a timer is still running"
    widget.deleteLater()
    qtbot.wait(50)
    # Nothing left behind: no worker thread, no running timer, no window.
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"
    assert widget.source is None and widget.runner is None
    assert not [w for w in QApplication.topLevelWidgets() if w.isVisible()]


def wait_frames(qtbot, panel, count: int, timeout: int = 15000) -> list:
    seen = []
    panel.frame_shown.connect(seen.append)
    try:
        qtbot.waitUntil(lambda: len(seen) >= count, timeout=timeout)
    finally:
        panel.frame_shown.disconnect(seen.append)
    return seen


def assert_grid_matches_frame_shown(panel) -> None:
    """What is on screen now — frame and grid — against activations computed here, independently."""
    result = panel.shown_result
    shown_frame, shown_grid = panel.frame_item.image, panel.grid_item.image
    np.testing.assert_array_equal(shown_frame, result.frame.image)
    loaded = panel.loaded
    act = layer_output(loaded, image_to_tensor(shown_frame, loaded.spec), panel.layer)
    expected = naive_layer_grid(act, aspect=result.aspect)
    assert shown_grid.shape == expected.shape
    assert np.abs(shown_grid.astype(int) - expected).max() <= 1
    assert panel.grid_item.levels is not None and list(panel.grid_item.levels) == [0, 255]


def test_video_frames_arrive_and_grid_matches_the_frame_shown(qtbot, panel, video):
    stats = []
    panel.stats.connect(stats.append)
    assert panel.open_video(video)
    seen = wait_frames(qtbot, panel, 4)
    assert len({r.frame.index for r in seen}) == len(seen)  # distinct frames, in order of arrival
    assert [r.frame.index for r in seen] == sorted(r.frame.index for r in seen)
    assert seen[-1].frame.image.shape == (64, 96, 3)
    assert_grid_matches_frame_shown(panel)
    qtbot.waitUntil(lambda: bool(stats), timeout=5000)
    assert {"fps", "preprocess_ms", "forward_ms", "tile_ms", "display_ms", "dropped", "text"} <= set(stats[-1])


def test_layer_and_unit_changes_apply_to_the_next_frame(qtbot, panel, video):
    assert panel.open_video(video)
    wait_frames(qtbot, panel, 2)
    panel.set_layer("conv2")
    panel.set_unit(4)
    seen = wait_frames(qtbot, panel, 2)
    assert seen[-1].layer == "conv2" and seen[-1].layout.count == 10
    assert panel.unit_outline.isVisible()
    assert_grid_matches_frame_shown(panel)


def test_freeze_holds_the_frame_and_stays_interactive(qtbot, panel, video):
    assert panel.open_video(video)
    wait_frames(qtbot, panel, 2)
    panel.view.setFocus()
    qtbot.keyClick(panel.view, Qt.Key.Key_Space)
    assert panel.frozen and panel.freeze_button.isChecked()
    qtbot.wait(200)  # a frame already in the worker may still land
    held = panel.shown_result.frame.index
    qtbot.wait(400)
    assert panel.shown_result.frame.index == held
    panel.set_layer("conv2")  # re-runs the frozen frame
    qtbot.waitUntil(lambda: panel.shown_result.layer == "conv2", timeout=5000)
    assert panel.shown_result.frame.index == held
    assert_grid_matches_frame_shown(panel)
    qtbot.keyClick(panel.view, Qt.Key.Key_Period)  # exactly one new frame, then frozen again
    qtbot.waitUntil(lambda: panel.shown_result.frame.index != held, timeout=5000)
    stepped = panel.shown_result.frame.index
    qtbot.wait(300)
    assert panel.shown_result.frame.index == stepped and panel.frozen
    qtbot.keyClick(panel.view, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: panel.shown_result.frame.index > stepped + 1, timeout=5000)


def test_slow_model_drops_frames_instead_of_queueing(qtbot, panel, video):
    panel.set_model(tiny_model(delay=0.25))
    assert panel.open_video(video)
    seen = wait_frames(qtbot, panel, 4)
    s = panel.emit_stats()
    # 25 fps against a 4 fps model: about six frames arrive per forward pass. Queued, the shown frames
    # would be consecutive and ever older; replaced, they skip ahead and stay about one pass old.
    indices = [r.frame.index for r in seen]
    # (the first frame after the start may follow the one before: it was prepared while that ran)
    assert min(b - a for a, b in zip(indices[1:], indices[2:])) >= 2
    assert s["dropped"] >= 2 * len(seen)
    assert max(list(panel.live_stats.latencies)[-3:]) < 2 * 0.25 + 0.5


def test_folder_slideshow_and_mirror(qtbot, panel, tmp_path):
    picture = np.zeros((40, 60, 3), np.uint8)
    picture[:, :20] = (255, 0, 0)  # red on the left
    Image.fromarray(picture).save(tmp_path / "a.png")
    Image.fromarray(picture[:, ::-1]).save(tmp_path / "b.png")
    assert panel.open_folder(tmp_path, interval=0.05)
    seen = wait_frames(qtbot, panel, 3)
    assert {r.frame.image[0, 0, 0] for r in seen} == {0, 255}
    panel.mirror_box.setChecked(True)
    wait_frames(qtbot, panel, 2)
    shown = panel.shown_result.frame.image
    assert any(np.array_equal(shown, p[:, ::-1]) for p in (picture, picture[:, ::-1]))
    assert_grid_matches_frame_shown(panel)


def test_source_errors_leave_the_panel_usable(qtbot, panel, video, tmp_path):
    errors = []
    panel.source_error.connect(errors.append)
    assert not panel.open_video(tmp_path / "missing.mp4")
    assert "no such video file" in panel.message.text()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    panel.open_video(corrupt)
    qtbot.waitUntil(lambda: len(errors) == 2, timeout=10000)
    assert "corrupt.mp4" in panel.message.text() and panel.source is None
    assert not panel.open_camera("no such camera")
    assert "camera" in panel.message.text()
    assert not panel.open_folder(tmp_path / "nowhere")
    assert panel.open_video(video)  # and it can switch to a good source
    wait_frames(qtbot, panel, 2)
    assert panel.message.text() == ""
    assert_grid_matches_frame_shown(panel)


def test_screenshot_of_the_panel(qtbot, panel, video, tmp_path):
    panel.set_unit(2)
    assert panel.open_video(video)
    wait_frames(qtbot, panel, 3)
    path = tmp_path / "live_panel.png"
    assert panel.grab().save(str(path))
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] >= 300 and image.std() > 10


def test_camera_that_vanishes_stops_with_a_message(qtbot, panel, video):
    # No camera on the test machine: a camera source whose device is "plugged in" by hand, then found
    # missing from QMediaDevices' list, as when it is unplugged mid-stream.
    class PluggedCamera(CameraSource):
        def start(self) -> None:
            self.name, self._device_id, self._running = "Test Camera", b"test-camera-id", True

    errors = []
    panel.source_error.connect(errors.append)
    assert panel.set_source(PluggedCamera())
    assert panel.mirror_box.isChecked()  # cameras start mirrored
    panel.source._on_devices_changed()
    assert errors == ["camera Test Camera was disconnected; choose another source"]
    assert panel.source is None and "disconnected" in panel.message.text()
    assert panel.open_video(video)
    wait_frames(qtbot, panel, 2)


def test_hidden_panel_rests_the_model(qtbot, panel, video):
    assert panel.open_video(video)
    wait_frames(qtbot, panel, 2)
    panel.hide()
    qtbot.wait(200)
    shown = panel.live_stats.shown
    qtbot.wait(400)
    assert panel.live_stats.shown == shown
    panel.show()
    wait_frames(qtbot, panel, 2)


def test_live_tab_follows_the_main_window(qtbot, video):
    from explorer.gui.panels.live import add_live_view
    from explorer.gui.main_window import MainWindow

    window = MainWindow(interactive=False)
    qtbot.addWidget(window)
    panel = add_live_view(window)
    window.show()
    assert window.show_view("live")
    window.model_loaded.emit(tiny_model())
    window.layers.layer_selected.emit("conv2")
    window.activations.unit_selected.emit(3)
    assert panel.open_video(video)
    seen = wait_frames(qtbot, panel, 2)
    assert seen[-1].layer == "conv2" and seen[-1].unit == 3
    assert_grid_matches_frame_shown(panel)
    window.close()
    assert panel.runner is None and panel.source is None


def test_video_loops_from_the_start(qtbot, panel, tmp_path):
    short = make_video(tmp_path / "short.mp4", frames=8)
    assert panel.open_video(short)
    qtbot.waitUntil(lambda: panel.source is not None and panel.source.frames_delivered > 20, timeout=15000)
    assert panel.source.running and panel.message.text() == ""


def _click_tile(qtbot, panel, unit: int) -> None:
    """A real mouse click in the middle of ``unit``'s tile of the live grid."""
    from PySide6.QtCore import QPointF

    layout = panel.grid_layout
    top, left = layout.tile_origin(unit)
    scene = panel.grid_item.mapToScene(QPointF(left + layout.tile_w / 2, top + layout.tile_h / 2))
    qtbot.mouseClick(panel.view.viewport(), Qt.MouseButton.LeftButton, pos=panel.view.mapFromScene(scene))


def test_clicking_a_tile_of_the_live_grid_selects_that_unit(qtbot, panel, video):
    clicked = []
    panel.unit_clicked.connect(clicked.append)
    assert panel.open_video(video)
    wait_frames(qtbot, panel, 2)
    _click_tile(qtbot, panel, 5)
    assert clicked == [5] and panel.unit == 5
    seen = wait_frames(qtbot, panel, 2)
    assert seen[-1].unit == 5 and panel.unit_outline.isVisible() and panel.unit_title.text == "unit 5"


def test_live_tile_click_selects_the_window_unit_and_the_side_panel_says_it_is_the_still_image(qtbot, video):
    from explorer.gui.main_window import MainWindow
    from explorer.gui.panels.live import LIVE_INPUT_TITLE, add_live_view

    window = MainWindow(interactive=False)
    qtbot.addWidget(window)
    panel = add_live_view(window)
    window.show()
    still_title = window.input_dock.windowTitle()
    assert window.show_view("live")
    assert window.input_dock.windowTitle() == LIVE_INPUT_TITLE and not window.input_panel.isEnabled()
    qtbot.waitUntil(window.input_dock.isHidden, timeout=2000)  # no still-image prediction beside the live frame
    saved = {}
    window.settings = type("Settings", (), {"setValue": lambda self, k, v: saved.setdefault(k, v),
                                            "sync": lambda self: None})()
    window.save_settings()  # the layout saved on closing keeps the dock the user had open
    window.settings = None
    probe = MainWindow(interactive=False)
    qtbot.addWidget(probe)
    probe.restoreState(saved["window_state"])
    assert not probe.input_dock.isHidden() and window.input_dock.isHidden()
    probe.close()
    window.model_loaded.emit(tiny_model())
    window.layers.layer_selected.emit("conv2")
    assert panel.open_video(video)
    wait_frames(qtbot, panel, 2)
    _click_tile(qtbot, panel, 7)
    assert window.unit == 7 and panel.unit == 7
    assert window.show_view("activations")
    assert window.input_dock.windowTitle() == still_title and window.input_panel.isEnabled()
    assert window.input_dock.isVisible()  # back on leaving the Live tab
    window.input_dock.hide()  # closed by the user: Live neither shows it nor brings it back
    assert window.show_view("live")
    qtbot.wait(50)
    assert window.input_dock.isHidden()
    assert window.show_view("activations") and window.input_dock.isHidden()
    window.close()
    assert panel.runner is None and panel.source is None


@pytest.mark.parametrize("size", [(1280, 720), (1024, 640)])
def test_live_tab_fits_laptop_screens_and_the_grid_fills_its_pane(qtbot, video, size):
    from PySide6.QtWidgets import QScrollArea

    from explorer.gui.main_window import MainWindow
    from explorer.gui.panels.live import add_live_view

    window = MainWindow(interactive=False)
    qtbot.addWidget(window)
    panel = add_live_view(window)
    window.resize(*size)
    window.show()
    assert window.show_view("live")
    window.model_loaded.emit(tiny_model())
    window.layers.layer_selected.emit("conv2")
    assert panel.open_video(video)
    wait_frames(qtbot, panel, 3)
    qtbot.wait(300)  # the layout settles; the next frames are laid out for the grid's pane
    wait_frames(qtbot, panel, 2)
    page = panel.parent()
    while page is not None and not isinstance(page, QScrollArea):
        page = page.parent()
    assert page is not None
    # nothing scrolls or is cut: the whole panel, its controls (Mirror last) and the view are on screen
    assert not page.horizontalScrollBar().isVisible() and not page.verticalScrollBar().isVisible(), \
        (panel.minimumSizeHint(), page.viewport().size())
    for widget in (panel.mirror_box, panel.step_button, panel.view.viewport()):
        assert widget.visibleRegion().boundingRect().size() == widget.size(), widget
    # the grid's tiles are laid out for its pane's shape and cover most of it (a square 4x3 grid of the
    # 10 channels in this tall pane would cover about half)
    box = panel.grid_box.sceneBoundingRect()
    image = panel.grid_item.sceneBoundingRect()
    inside = box.intersected(image)
    covered = inside.width() * inside.height() / (box.width() * box.height())
    assert panel.shown_result.aspect == pytest.approx(box.width() / box.height(), rel=0.13)
    assert covered >= 0.7, (covered, panel.grid_layout, box)
    assert_grid_matches_frame_shown(panel)
    window.close()


def test_the_input_dock_follows_live_and_lstm_both_hiding_it(qtbot):
    # The LSTM tab hides the docks too and restores them in its own handler of the same tab change.
    from explorer.gui.main_window import MainWindow
    from explorer.gui.tabs import add_lstm_view

    from explorer.gui.panels.live import add_live_view

    window = MainWindow(interactive=False)
    qtbot.addWidget(window)
    add_live_view(window)
    add_lstm_view(window)
    window.show()
    dock = window.input_dock
    for view, hidden in (("lstm", True), ("live", True), ("activations", False), ("live", True),
                         ("lstm", True), ("live", True), ("activations", False)):
        assert window.show_view(view)
        qtbot.wait(30)
        assert dock.isHidden() == hidden, view
    window.close()


def test_the_panel_is_busy_until_the_first_grid_is_shown(qtbot, panel, video):
    assert not panel.busy  # no source
    assert panel.open_video(video)
    assert panel.busy  # playing, nothing shown yet: the screenshot mode waits
    wait_frames(qtbot, panel, 1)
    assert not panel.busy
    panel.stop_source()
    assert not panel.busy


def test_the_colour_bar_gives_the_layers_range_in_the_frame_shown(qtbot, panel, video):
    assert panel.open_video(video)
    wait_frames(qtbot, panel, 3)
    panel.freeze(True)
    qtbot.wait(100)  # a result already on its way may still be shown
    panel.freeze(True)
    result = panel.shown_result
    act = layer_output(panel.loaded, image_to_tensor(result.frame.image, panel.loaded.spec), panel.layer)
    # the pipeline resizes with torch's kernel, the oracle with Pillow: a level or so apart
    assert result.grid_levels == pytest.approx((act.min(), act.max()), rel=0.02, abs=0.02)
    assert panel.colorbar.levels() == pytest.approx(result.grid_levels)
