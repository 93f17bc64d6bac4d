"""The attribution panel, standalone: what it shows is checked against core results computed here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.attribution.backprop import backprop_attribution, saliency_image
from explorer.core.attribution.occlusion import OcclusionSettings, occlusion
from explorer.core.attribution.target import Target
from explorer.core.models import InputSpec, LoadedModel
from explorer.core.preprocess import image_to_tensor, tensor_to_image
from explorer.core.models.shapes_data import SHAPE_CLASSES, generate_shape

pytest.importorskip("pytestqt")
from explorer.gui.panels.attribution import AttributionPanel  # noqa: E402


class TinyNet(nn.Module):
    """Functional ReLU (as GoogLeNet calls it) and a GELU, so the panel has a note to show."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 5, padding=2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.GELU()
        self.fc = nn.Linear(8, len(SHAPE_CLASSES))

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = self.act(self.conv2(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.fixture
def context():
    spec = InputSpec(size=(48, 48), mean=(0.5,) * 3, std=(0.25,) * 3, labels=SHAPE_CLASSES)
    module = TinyNet().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    loaded = LoadedModel("tiny", module, spec, trained=False, source="test")
    sample = generate_shape(np.random.default_rng(3))
    x = image_to_tensor(sample.image, spec)
    return loaded, x, tensor_to_image(x, spec)


@pytest.fixture
def panel(qtbot, context, no_thread_leak):
    widget = AttributionPanel()
    qtbot.addWidget(widget)
    widget.resize(900, 560)
    widget.show()
    widget.set_context(*context)
    yield widget
    widget.shutdown()


def _compute(qtbot, panel, timeout=60000):
    with qtbot.waitSignal(panel.result_ready, timeout=timeout) as blocker:
        panel.compute()
    return blocker.args[0]


def test_guided_backprop_shown_is_the_core_result_with_its_note(qtbot, panel, context):
    loaded, x, _ = context
    panel.method.setCurrentText("guided-backprop")
    panel.set_target_class(2)
    result = _compute(qtbot, panel)
    expected, report = backprop_attribution(loaded.module, x, Target.for_class(2), "guided-backprop")
    shown = panel.pane.overlay_item.image
    np.testing.assert_allclose(shown, saliency_image(expected).numpy(), rtol=1e-5, atol=1e-7)
    assert result.target == Target.for_class(2)
    assert panel.note.isVisible() and "GELU" in panel.note.text() and "plain gradient" in panel.note.text()
    assert report.handled == {"ReLU": 1}


def test_occlusion_streams_partial_maps_then_shows_the_exact_map(qtbot, panel, context, tmp_path):
    loaded, x, _ = context
    panel.method.setCurrentText("occlusion")
    panel.set_target_unit("conv2", 3)
    panel.window_size.setValue(8)
    panel.stride.setValue(4)
    panel.progressive.setChecked(False)
    steps = []
    panel.task_started = None
    with qtbot.waitSignal(panel.result_ready, timeout=60000):
        panel.compute()
        panel.task.signals.yielded.connect(lambda s: steps.append(s.done))
    expected = occlusion(loaded.module, x, Target.for_unit("conv2", 3),
                         OcclusionSettings(window=8, stride=4, baseline="zero", progressive=False))
    np.testing.assert_allclose(panel.pane.overlay_item.image, expected.map[0].numpy(), rtol=1e-5, atol=1e-6)
    assert len(steps) >= 2 and steps == sorted(steps)
    assert panel.progress.value() == panel.progress.maximum()
    path = tmp_path / "attribution_panel.png"
    assert panel.grab().save(str(path))


def test_cancel_stops_occlusion_and_keeps_the_partial_map(qtbot, panel):
    panel.method.setCurrentText("occlusion")
    panel.window_size.setValue(4)
    panel.stride.setValue(1)  # 2025 windows: far more than the test waits for
    first = []
    panel.compute()
    panel.task.signals.yielded.connect(lambda s: first.append(s) if len(first) == 0 else None)
    qtbot.waitUntil(lambda: len(first) > 0, timeout=30000)
    with qtbot.waitSignal(panel.task.signals.done, timeout=30000):
        panel.cancel()
    assert not panel.busy and "cancelled" in panel.status.text()
    assert panel.pane.overlay_item.isVisible()


def test_targets_set_from_outside(qtbot, panel):
    got = []
    panel.target_changed.connect(got.append)
    panel.method.setCurrentText("gradcam")
    panel.set_target_unit("conv1", 5)
    assert panel.current_target() == Target.for_unit("conv1", 5)
    panel.set_target_class(4)
    _compute(qtbot, panel)
    assert got[-1] == Target.for_class(4) and panel.class_label.text() == SHAPE_CLASSES[4]
    assert panel.pane.overlay_item.image.shape == (48, 48)


def test_top_class_target_shows_that_class_in_the_class_field(qtbot, panel, context):
    loaded, x, _ = context
    top = int(loaded.module(x).argmax())
    other = (top + 1) % len(SHAPE_CLASSES)
    panel.set_target_class(other)  # a class typed earlier
    panel.target_kind.setCurrentText("top class")
    result = _compute(qtbot, panel)
    assert result.target.class_index == top
    assert panel.class_index.value() == top and panel.class_label.text() == SHAPE_CLASSES[top]
    assert SHAPE_CLASSES[top] in panel.status.text()
    assert panel.current_target() is None  # still explaining whatever the top class is
