"""The Optimize panel: live image and curve, Stop, save with settings, targets from the explorer."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from explorer.core.models import load_model
from explorer.core.preprocess import load_input
from explorer.core.resources import SAMPLE_IMAGES
from explorer.gui.panels.optimize import OptimizePanel


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes", device="cpu")


@pytest.fixture
def panel(qtbot, shapes, no_thread_leak):
    widget = OptimizePanel()
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    widget.show()
    x, picture = load_input(SAMPLE_IMAGES / "0004_star.png", shapes.spec)
    widget.set_context(shapes, x, picture)
    yield widget
    widget.shutdown()


def test_visualization_updates_live_and_saves_with_its_settings(qtbot, panel, tmp_path):
    panel.set_target_class(3)
    panel.method.setCurrentText("fourier")
    panel.steps.setValue(20)
    with qtbot.waitSignal(panel.finished, timeout=60000):
        panel.run()
    qtbot.waitUntil(lambda: not panel.busy, timeout=10000)
    assert panel.steps_seen == 4  # every 5 steps
    assert len(panel.curve_line.getData()[0]) == 20
    assert panel.result.values[0] > 0 and "p = " in panel.status.text()
    png, sidecar = panel.save_to(tmp_path / "star.png")
    assert Image.open(png).size == (128, 128)
    record = json.loads(sidecar.read_text())
    assert record["settings"]["method"] == "fourier" and record["settings"]["steps"] == 20
    assert record["settings"]["seed"] == 0 and record["target"].startswith("class 3 (star)")


def test_stop_cancels_a_long_run(qtbot, panel):
    panel.set_target_unit("features.relu3", 4)
    panel.method.setCurrentText("yosinski")
    panel.steps.setValue(100000)
    panel.run()
    qtbot.waitUntil(lambda: panel.steps_seen >= 1, timeout=30000)
    panel.stop()
    qtbot.waitUntil(lambda: not panel.busy, timeout=30000)
    assert panel.result is None and "stopped" in panel.status.text()
    assert panel.shown is not None and panel.shown.shape == (128, 128, 3)


def test_dream_and_inversion_of_the_input(qtbot, panel):
    panel.method.setCurrentText("deepdream")
    panel.layer.setCurrentText("features.relu2")
    panel.steps.setValue(2)
    panel.octaves.setValue(2)
    with qtbot.waitSignal(panel.finished, timeout=60000):
        panel.run()
    qtbot.waitUntil(lambda: not panel.busy, timeout=10000)
    assert len(panel.record["octaves"]) == 2
    panel.method.setCurrentText("invert")
    panel.invert_layers.setText("features.conv1, features.relu2")
    panel.steps.setValue(3)
    with qtbot.waitSignal(panel.finished, timeout=60000):
        panel.run()
    qtbot.waitUntil(lambda: not panel.busy, timeout=10000)
    assert panel.shown.shape == (128, 3 * 128 + 2 * 4, 3)  # the input and two reconstructions
    assert [r["layer"] for r in panel.record["layers"]] == ["features.conv1", "features.relu2"]
    assert all(r["image_error"] >= 0 for r in panel.record["layers"]) and "image error" in panel.status.text()
    assert panel.pane.title_label.text.split("   |   ") == ["input", "features.conv1", "features.relu2"]


def test_a_bad_setting_is_one_line_and_runs_nothing(panel):
    panel.method.setCurrentText("yosinski")
    panel.fields["decay"].setText("lots")
    panel.run()
    assert not panel.busy and panel.status.text().startswith("cannot run:")


def test_layer_box_starts_at_the_default_layer_not_the_first(panel):
    # the shapes model runs features.conv1, features.bn1, features.relu1, ...: the rule every view uses
    # (probe.default_layer) picks the first convolution's ReLU; the first name listed is "features"
    assert panel.layer.itemText(0) == "features"
    assert panel.layer.currentText() == "features.relu1"
    panel.method.setCurrentText("deepdream")  # a method that works on the layer: the box is usable
    assert panel.layer.isEnabled() and not panel.class_index.isEnabled()


def test_both_panels_use_one_target_box(qtbot, shapes):
    from explorer.core.attribution.target import Target
    from explorer.gui.panels.attribution import AttributionPanel
    from explorer.gui.widgets.target_box import TargetBox

    x, picture = load_input(SAMPLE_IMAGES / "0004_star.png", shapes.spec)
    attribution, optimize = AttributionPanel(), OptimizePanel()
    for w in (attribution, optimize):
        qtbot.addWidget(w)
        w.set_context(shapes, x, picture)
    try:
        assert isinstance(attribution.targets, TargetBox) and isinstance(optimize.target_box, TargetBox)
        assert attribution.layer.currentText() == optimize.layer.currentText() == "features.relu1"
        for w in (attribution, optimize):
            w.set_target_unit("features.conv2", 7)
            assert w.current_target() == Target.for_unit("features.conv2", 7)
            w.set_target_class(2)
            assert w.class_label.text() == shapes.spec.label(2)
        assert optimize.current_target() == Target.for_class(2)
        attribution.score.setCurrentText("prob")
        assert attribution.current_target() == Target.for_class(2, "prob")
        attribution.target_kind.setCurrentText("top class")
        assert attribution.current_target() is None and not attribution.class_index.isEnabled()
        assert optimize.target_kind.findText("top class") == -1  # an optimisation needs a definite target
    finally:
        attribution.shutdown()
        optimize.shutdown()
