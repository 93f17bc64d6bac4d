"""The issue's acceptance test: on the bundled shapes model, the peak of the occlusion and guided-backprop
maps falls on the shape in at least 90 % of generated test images (the generator's masks say where)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core.attribution.backprop import backprop_attribution, saliency_image
from explorer.core.attribution.occlusion import OcclusionSettings, occlusion
from explorer.core.attribution.target import Target
from explorer.core.models import BUNDLED_MODELS, load_model
from explorer.core.preprocess import image_to_tensor
from explorer.core.shapes_data import SHAPE_CLASSES, generate_shape

IMAGES = 24  # four of each shape, from a seed the training script does not use

pytestmark = pytest.mark.skipif(not BUNDLED_MODELS["shapes"].exists(), reason="bundled shapes model not built")


@pytest.fixture(scope="module")
def samples():
    loaded = load_model("shapes", device="cpu")
    rng = np.random.default_rng(20261123)
    out = []
    for i in range(IMAGES):
        s = generate_shape(rng, label=i % len(SHAPE_CLASSES))
        out.append((s, image_to_tensor(s.image, loaded.spec)))
    return loaded, out


def _peak(display: torch.Tensor) -> tuple[int, int]:
    flat = int(display.flatten().argmax())
    return divmod(flat, display.shape[-1])


def test_occlusion_peak_falls_on_the_shape(samples):
    loaded, items = samples
    hits = 0
    for s, x in items:
        res = occlusion(loaded.module, x, Target.for_class(s.label),
                        OcclusionSettings(window=16, stride=8, batch_size=32))
        r, c = _peak(res.map[0])
        hits += bool(s.mask[r, c])
    assert hits / len(items) >= 0.9, f"{hits}/{len(items)}"


def test_guided_backprop_peak_falls_on_the_shape(samples):
    loaded, items = samples
    hits = 0
    for s, x in items:
        grad, report = backprop_attribution(loaded.module, x, Target.for_class(s.label), "guided-backprop")
        r, c = _peak(saliency_image(grad))
        hits += bool(s.mask[r, c])
        assert report.handled and not report.unhandled
    assert hits / len(items) >= 0.9, f"{hits}/{len(items)}"
