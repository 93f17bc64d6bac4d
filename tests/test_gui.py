"""The main window driven like a user would, checked against tensors computed independently."""
from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QImage
from PySide6.QtWidgets import QApplication

from explorer.core.resources import RESOURCES
from explorer.core.preprocess import image_to_tensor, load_image
from explorer.gui.app import create_window
from explorer.gui.main_window import ModelRequest

SAMPLES = RESOURCES / "images"


def options(**kw) -> argparse.Namespace:
    base = dict(model=None, checkpoint=None, weights="pretrained", trust_checkpoint=False, device="cpu",
                image=None, layer=None, unit=None, view=None, screenshot=None, no_settings=True)
    base.update(kw)
    return argparse.Namespace(**base)


def wait_idle(qtbot, window, timeout=60_000):
    qtbot.waitUntil(lambda: window.loaded is not None and not window.busy, timeout=timeout)
    qtbot.wait(50)
    qtbot.waitUntil(lambda: not window.busy, timeout=timeout)


def independent_activation(window, layer: str) -> torch.Tensor:
    """The layer's output for the window's current input, by a plain forward hook (not the app's capture)."""
    module = dict(window.loaded.module.named_modules())[layer]
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("out", o.detach().clone()))
    try:
        with torch.no_grad():
            logits = window.loaded.module(window.x)
    finally:
        handle.remove()
    return store["out"][0], logits[0]


def close_window(qtbot, window) -> None:
    """Close like a user; nothing may keep running: no task, no visible top-level window."""
    window.close()
    qtbot.wait(50)
    assert window.runner.idle and not window.busy
    assert not [w for w in QApplication.topLevelWidgets() if w.isVisible()]


@pytest.fixture
def resnet_window(qtbot, no_thread_leak):
    window = create_window(options(model="resnet18", weights="none", image=str(SAMPLES / "chelsea.jpg")),
                           interactive=False)
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    yield window
    close_window(qtbot, window)


@pytest.fixture
def shapes_window(qtbot, no_thread_leak):
    window = create_window(options(), interactive=False)  # the defaults: bundled model, sample images
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    yield window
    close_window(qtbot, window)


def test_grid_shows_every_channel_of_the_selected_layer(qtbot, resnet_window):
    window = resnet_window
    window.layers.select_layer("layer1")
    wait_idle(qtbot, window)
    act, _ = independent_activation(window, "layer1")
    view = window.activations.layer_view
    np.testing.assert_allclose(view.activation, act.numpy(), rtol=1e-5, atol=1e-5)
    shown = window.activations.grid_pane.array
    lo, hi = float(act.min()), float(act.max())
    for unit in (0, 17, 63):
        top, left = view.layout.tile_origin(unit)
        expected = (act[unit].numpy() - lo) / (hi - lo)
        np.testing.assert_allclose(shown[top:top + 56, left:left + 56], expected, atol=1e-5)


def test_clicking_a_tile_and_arrow_keys_select_units(qtbot, resnet_window):
    window = resnet_window
    window.layers.select_layer("layer1.0.conv1")
    wait_idle(qtbot, window)
    layout = window.activations.layer_view.layout
    top, left = layout.tile_origin(10)
    window.activations.grid_pane.click_pixel(top + 3, left + 3)
    assert window.unit == 10 and window.activations.unit == 10
    window.activations.setFocus()
    qtbot.keyClick(window.activations, Qt.Key_Right)
    assert window.unit == 11
    qtbot.keyClick(window.activations, Qt.Key_Down)
    assert window.unit == 11 + layout.cols
    act, _ = independent_activation(window, "layer1.0.conv1")
    np.testing.assert_allclose(window.activations.unit_pane.array, act[window.unit].numpy(), atol=1e-5)
    wait_idle(qtbot, window)
    assert window.filters.filter_view.kernel_unit == window.unit


def test_keys_step_through_layers(qtbot, resnet_window):
    window = resnet_window
    names = window.layers.names()
    start = names.index(window.layer)
    qtbot.keyClick(window, Qt.Key_Down, Qt.ControlModifier)
    qtbot.keyClick(window, Qt.Key_Down, Qt.ControlModifier)
    assert window.layer == names[start + 2]
    qtbot.keyClick(window, Qt.Key_Up, Qt.ControlModifier)
    assert window.layer == names[start + 1]


def test_fully_connected_layer_is_shown_as_bars_and_predictions_match(qtbot, resnet_window):
    window = resnet_window
    window.layers.select_layer("fc")
    wait_idle(qtbot, window)
    assert window.activations.bars.isVisible() and not window.activations.grid_pane.isVisible()
    act, logits = independent_activation(window, "fc")
    np.testing.assert_allclose(window.activations.bar_item.opts["height"], act.numpy(), rtol=1e-5, atol=1e-6)
    probs = torch.softmax(logits, 0)
    best = int(probs.argmax())
    first = window.input_panel.prediction_texts()[0]
    assert f"(#{best})" in first and f"{float(probs[best]):.2%}".strip() in first
    assert "untrained" in window.model_label.text()


def test_bundled_model_steps_through_sample_images(qtbot, shapes_window):
    window = shapes_window
    assert window.loaded.name == "shapes" and window.loaded.trained
    assert len(window.folder) >= 6
    seen = []
    for _ in range(6):
        name = window.folder[window.folder_index].name
        wait_idle(qtbot, window)
        expected = image_to_tensor(load_image(window.folder[window.folder_index]), window.loaded.spec)
        torch.testing.assert_close(window.x, expected)
        if "_" in name and name[0].isdigit():
            seen.append((name.split("_", 1)[1].split(".")[0], window.input_panel.prediction_texts()[0]))
        qtbot.keyClick(window, Qt.Key_PageDown)
    correct = sum(label in text for label, text in seen)
    assert seen and correct >= len(seen) - 1


def test_filters_show_first_layer_weights(qtbot, shapes_window):
    window = shapes_window
    window.show_view("filters")
    wait_idle(qtbot, window)
    fv = window.filters.filter_view
    assert fv.first_layer == "features.conv1"
    assert fv.first_grid.ndim == 3 and fv.first_grid.shape[2] == 3
    assert window.filters.first_pane.array is not None


def test_bad_image_and_bad_checkpoint_leave_the_app_usable(qtbot, shapes_window, tmp_path):
    window = shapes_window
    before = window.picture.copy()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    window.last_error = None
    window.open_image(bad)
    qtbot.waitUntil(lambda: window.last_error is not None, timeout=30_000)
    assert "broken.png" in window.last_error
    np.testing.assert_array_equal(window.picture, before)
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"\x00\x01garbage" * 10)
    window.last_error = None
    window.load_model(ModelRequest(checkpoint=str(garbage)))
    qtbot.waitUntil(lambda: window.last_error is not None, timeout=30_000)
    wait_idle(qtbot, window)
    assert window.loaded.name == "shapes"
    assert "Traceback" not in window.last_error
    window.step_image(1)
    wait_idle(qtbot, window)
    assert window.activations.layer_view is not None


def test_drop_and_paste_open_images(qtbot, shapes_window):
    window = shapes_window
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(SAMPLES / "0002_triangle.png"))])
    event = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.input_name == "0002_triangle.png", timeout=30_000)
    array = np.zeros((40, 60, 3), np.uint8)
    array[:, :30] = (255, 0, 0)
    qimage = QImage(array.data, 60, 40, 180, QImage.Format_RGB888).copy()
    QApplication.clipboard().setImage(qimage)
    window.paste_image()
    assert window.input_name == "pasted image"
    np.testing.assert_array_equal(window.image, array)


def test_export_view_writes_a_png(qtbot, shapes_window, tmp_path):
    out = tmp_path / "view.png"
    assert shapes_window.export_view(out)
    assert Image.open(out).size[0] > 100


def test_settings_remember_model_and_folder(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEP_EXPLORER_SETTINGS", str(tmp_path / "s.ini"))
    window = create_window(options(model="resnet18", weights="none", no_settings=False,
                                   image=str(SAMPLES)), interactive=False)
    qtbot.addWidget(window)
    wait_idle(qtbot, window)
    window.close()
    again = create_window(options(no_settings=False, weights="none"), interactive=False)
    qtbot.addWidget(again)
    wait_idle(qtbot, again)
    assert again.loaded.name == "resnet18"
    assert again.folder and again.folder[0].parent == SAMPLES
    again.close()


def test_input_size_change_updates_the_layer_table(qtbot, resnet_window):
    window = resnet_window
    window.apply_input_spec(window.loaded.spec.with_overrides(size=(96, 128)))
    wait_idle(qtbot, window)
    rows = {r.name: r for r in window.layers.table_model.rows}
    assert rows["conv1"].output_shape == (64, 48, 64)
    assert window.x.shape == (1, 3, 96, 128)


def test_screenshot_mode_writes_the_window_and_exits(tmp_path):
    out = tmp_path / "shot.png"
    result = subprocess.run([sys.executable, "-m", "explorer", "--no-settings", "--layer", "features.relu3",
                             "--screenshot", str(out)], capture_output=True, text=True, timeout=240,
                            env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(out).size[0] >= 800


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_download_offers_untrained_weights(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached
    monkeypatch.setenv("DEEP_EXPLORER_WEIGHTS_URL", f"http://127.0.0.1:{_closed_port()}/")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.Yes)
    window = create_window(options(model="squeezenet1_1", weights="pretrained"), interactive=True)
    qtbot.addWidget(window)
    wait_idle(qtbot, window)
    assert asked and "random (untrained) weights" in asked[0] and "--weights" not in asked[0]
    assert window.loaded.name == "squeezenet1_1" and not window.loaded.trained
    assert "untrained" in window.model_label.text()
    close_window(qtbot, window)


def test_pickled_checkpoint_needs_trust_in_a_dialog(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from explorer.core.models.shapes import ShapesNet

    model = ShapesNet().eval()
    path = tmp_path / "whole_model.pt"
    torch.save(model, path)
    answers = iter([QMessageBox.No, QMessageBox.Yes])
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or next(answers))
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warnings.append(a[2]))
    window = create_window(options(model="resnet18", weights="none"), interactive=True)
    qtbot.addWidget(window)
    wait_idle(qtbot, window)
    window.load_model(ModelRequest(checkpoint=str(path)))  # refused: the model stays resnet18
    qtbot.waitUntil(lambda: len(warnings) == 1, timeout=30_000)
    wait_idle(qtbot, window)
    assert window.loaded.name == "resnet18" and "trust" in asked[0]
    window.load_model(ModelRequest(checkpoint=str(path)))  # trusted this time
    qtbot.waitUntil(lambda: window.loaded.name != "resnet18", timeout=30_000)
    wait_idle(qtbot, window)
    x = torch.randn(1, 3, 128, 128)
    torch.testing.assert_close(window.loaded.module(x), model(x))
    close_window(qtbot, window)


def test_attribution_tab_explains_the_clicked_class_of_the_window_input(qtbot, shapes_window):
    from explorer.core.attribution.backprop import guided_backprop
    from explorer.core.attribution.target import Target

    window = shapes_window
    window.open_image(SAMPLES / "0004_star.png")
    wait_idle(qtbot, window)
    panel = window.attribution_panel
    panel.method.setCurrentText("guided-backprop")
    window.input_panel.class_selected.emit(1)  # as a click on "triangle" in the top-5
    window.show_view("attribution")
    qtbot.waitUntil(lambda: panel.result is not None and not panel.busy, timeout=60_000)
    expected, _ = guided_backprop(window.loaded.module, window.x, Target.for_class(1, "logit"))
    assert panel.result.target.describe(window.loaded.spec.labels).find("triangle") >= 0
    np.testing.assert_allclose(panel.result.map, expected[0].numpy(), rtol=1e-4, atol=1e-7)


def test_lstm_tab_loads_the_bundled_model_and_makes_room(qtbot, shapes_window):
    window = shapes_window
    assert window.layers_dock.isVisible()
    window.show_view("lstm")
    panel = window.lstm_panel
    qtbot.waitUntil(lambda: panel.analysis is not None and not panel.busy, timeout=120_000)
    assert not window.layers_dock.isVisible() and not window.input_dock.isVisible()
    best = panel.analysis.search["string"][0].cell
    assert panel.cell == best  # the best string-literal cell is shown first
    window.show_view("activations")
    assert window.layers_dock.isVisible() and window.input_dock.isVisible()


def test_images_are_decoded_off_the_gui_thread(qtbot, shapes_window, monkeypatch):
    import threading

    from explorer.core import preprocess

    threads = []
    real = preprocess.read_picture
    monkeypatch.setattr(preprocess, "read_picture",
                        lambda *a, **k: threads.append(threading.current_thread()) or real(*a, **k))
    shapes_window.open_image(SAMPLES / "coffee.jpg")
    wait_idle(qtbot, shapes_window)
    assert shapes_window.input_name == "coffee.jpg"
    assert threads and threading.main_thread() not in threads


def test_enter_in_the_model_field_loads_once_and_the_old_layer_never_reaches_the_new_model(
        qtbot, shapes_window, caplog):
    window = shapes_window
    assert window.layer and window.layer not in dict(__import__("torchvision").models.resnet18().named_modules())
    requests = []
    real = window.load_model
    window.load_model = lambda request: requests.append(request) or real(request)
    window.pretrained_box.setChecked(False)
    window.model_combo.lineEdit().selectAll()
    qtbot.keyClicks(window.model_combo.lineEdit(), "resnet18")
    with caplog.at_level("ERROR", logger="explorer"):
        qtbot.keyClick(window.model_combo.lineEdit(), Qt.Key_Return)
        qtbot.waitUntil(lambda: window.loaded.name == "resnet18", timeout=60_000)
        wait_idle(qtbot, window)
    assert [r.name for r in requests] == ["resnet18"]
    assert window.last_error is None, window.last_error
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert window.layer in window.layers.names()


def test_the_real_window_opens_on_an_x_server(tmp_path):
    """Qt's xcb plugin with every library it loads (.ci/run installs them and Xvfb): a missing one fails here."""
    import os
    import shutil

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (.ci/run installs it)")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1600x1000x24", "-nolisten",
                               "tcp"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            display = pipe.readline().strip()  # Xvfb writes its display number once it accepts clients
        assert display, server.stderr.read().decode()[-2000:] if server.poll() is not None else "no display"
        out = tmp_path / "xcb.png"
        env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": f":{display}"}
        env.pop("WAYLAND_DISPLAY", None)
        result = subprocess.run([sys.executable, "-m", "explorer", "--no-settings", "--screenshot", str(out)],
                                capture_output=True, text=True, timeout=240, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert Image.open(out).size[0] >= 800
    finally:
        server.terminate()
        server.wait(30)


def test_no_tensor_work_on_the_gui_thread_when_the_input_or_the_overlay_changes(qtbot, shapes_window, monkeypatch):
    """Fitting the picture to the input and scaling a unit's map for the overlay run in workers."""
    import threading

    from explorer.core import explore, preprocess
    from explorer.gui.widgets import activation_view

    gui_thread = threading.get_ident()
    threads = []
    real_prepare, real_upsample = preprocess.prepare_input, explore.upsample_map

    def prepare(*a, **k):
        threads.append(("prepare", threading.get_ident()))
        return real_prepare(*a, **k)

    def upsample(*a, **k):
        threads.append(("upsample", threading.get_ident()))
        return real_upsample(*a, **k)

    monkeypatch.setattr(preprocess, "prepare_input", prepare)
    monkeypatch.setattr(activation_view, "upsample_map", upsample)
    window = shapes_window
    window.open_image(SAMPLES / "0004_star.png")
    wait_idle(qtbot, window)
    window.activations.overlay_box.setChecked(True)
    window.set_unit(3)
    wait_idle(qtbot, window)
    kinds = {k for k, _ in threads}
    assert kinds == {"prepare", "upsample"}
    assert all(t != gui_thread for _, t in threads)
    assert window.activations.unit_pane.overlay_item.image is not None
