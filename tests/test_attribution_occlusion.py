"""Occlusion: a naive loop over windows as the reference, Captum's Occlusion as an oracle, the exact
incremental evaluation against both, memory fallback, cancellation and the progressive mode."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from explorer.core.attribution import incremental, occlusion as occ
from explorer.core.steps import drive
from explorer.core.attribution.occlusion import (OcclusionSettings, make_baseline, occlusion, occlusion_sweep,
                                                 window_positions)
from explorer.core.attribution.target import Target
from explorer.core.errors import Cancelled
from explorer.core.models import build_zoo_model


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def naive_occlusion(model, x, target: Target, window: int, stride: int, baseline: torch.Tensor) -> torch.Tensor:
    """Zeiler & Fergus by the definition: one occluded image at a time, mean of f(x) - f(x_occ) per pixel."""
    fn = (lambda t: target.from_output(model(t))) if not target.is_unit else None
    if fn is None:
        from explorer.core.attribution.target import layer_output
        fn = lambda t: target.from_activation(layer_output(model, t, target.layer, stop=False))  # noqa: E731
    h, w = x.shape[-2:]
    total = torch.zeros(h, w, dtype=torch.float64)
    count = torch.zeros(h, w, dtype=torch.float64)
    with torch.no_grad():
        clean = float(fn(x)[0])
        # Captum's positions: 0, s, ... up to ceil((H - window) / s) * s, the last one clipped at the border
        for y in range(0, stride * math.ceil((h - window) / stride) + 1, stride):
            for xx in range(0, stride * math.ceil((w - window) / stride) + 1, stride):
                occluded = x.clone()
                occluded[..., y:y + window, xx:xx + window] = baseline[..., y:y + window, xx:xx + window]
                total[y:y + window, xx:xx + window] += clean - float(fn(occluded)[0])
                count[y:y + window, xx:xx + window] += 1
    return (total / count).float().expand(x.shape[1], -1, -1)


def _vgg_like() -> nn.Module:
    torch.manual_seed(0)
    return _frozen(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 16, 5, padding=2, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)))


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    scale = float(b.abs().max())
    assert scale > 0
    assert float((a - b).abs().max()) <= rel * scale, float((a - b).abs().max()) / scale


def test_window_positions_follow_captum():
    assert window_positions(30, 8, 5) == [0, 5, 10, 15, 20, 25]
    assert window_positions(224, 16, 8)[-1] == 208 and len(window_positions(224, 16, 8)) == 27


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
def test_occlusion_equals_naive_loop_on_vgg_like(baseline):
    model = _vgg_like()
    x = torch.randn(1, 3, 32, 32)
    target = Target.for_class(1)
    ref = naive_occlusion(model, x, target, 8, 4, make_baseline(x, baseline, (8, 8)))
    for fast in (False, True):
        s = OcclusionSettings(min_saving=0, window=8, stride=4, baseline=baseline, batch_size=7, fast=fast)
        res = occlusion(model, x, target, s)
        assert res.mode == ("incremental" if fast else "full")
        _close(res.map, ref)


def test_fast_occlusion_equals_full_evaluation_on_resnet18():
    # (the full evaluation is itself checked against the naive loop above; here it saves 49 single passes)
    model = _frozen(build_zoo_model("resnet18"))
    x = torch.randn(1, 3, 48, 48)
    target = Target.for_class(3)
    fast = occlusion(model, x, target, OcclusionSettings(min_saving=0, window=12, stride=6, batch_size=25))
    full = occlusion(model, x, target, OcclusionSettings(min_saving=0, window=12, stride=6, batch_size=25, fast=False))
    assert fast.mode == "incremental" and full.mode == "full"
    _close(fast.map, full.map)


def test_fast_occlusion_handles_borders_probabilities_and_units():
    model = _vgg_like()
    x = torch.randn(1, 3, 30, 30)  # window 8, stride 5: the last window is clipped at the border
    for target in (Target.for_class(2, "prob"), Target.for_unit("6", 3), Target.for_unit("6", 3, (4, 5))):
        s = OcclusionSettings(min_saving=0, window=8, stride=5, baseline="blur", batch_size=5)
        res = occlusion(model, x, target, s)
        assert res.mode == "incremental"
        _close(res.map, naive_occlusion(model, x, target, 8, 5, make_baseline(x, "blur", (8, 8))))


def test_occlusion_equals_captum():
    captum_attr = pytest.importorskip("captum.attr")
    model = _vgg_like()
    x = torch.randn(1, 3, 30, 30)
    base = make_baseline(x, "mean", (8, 8))
    ref = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 5, 5),
                                                  baselines=base, target=0, perturbations_per_eval=4)[0]
    for fast in (True, False):
        res = occlusion(model, x, Target.for_class(0),
                        OcclusionSettings(min_saving=0, window=8, stride=5, baseline="mean", batch_size=4, fast=fast))
        _close(res.map, ref)


class OutOfMemoryAbove(nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than ``limit``, like a GPU that is too small."""

    def __init__(self, inner: nn.Module, limit: int):
        super().__init__()
        self.inner, self.limit, self.batches = inner, limit, []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_gives_the_same_map():
    inner = _vgg_like()
    model = OutOfMemoryAbove(inner, limit=3)
    x = torch.randn(1, 3, 24, 24)
    res = occlusion(model, x, Target.for_class(0), OcclusionSettings(min_saving=0, window=8, stride=4, batch_size=16))
    assert res.mode == "full"  # the shape test cannot be traced, so every occluded image runs in full
    assert res.batch_size == 2 and [b for b in model.batches if isinstance(b, int)][1:3] == [16, 8]
    _close(res.map, naive_occlusion(inner, x, Target.for_class(0), 8, 4, torch.zeros_like(x)))


def test_out_of_memory_in_incremental_mode_halves_the_batch(monkeypatch):
    model = _vgg_like()
    x = torch.randn(1, 3, 24, 24)
    original = incremental.IncrementalModel.scores

    def scores(self, values, oy, ox):
        if values.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return original(self, values, oy, ox)

    monkeypatch.setattr(incremental.IncrementalModel, "scores", scores)
    res = occlusion(model, x, Target.for_class(0), OcclusionSettings(min_saving=0, window=8, stride=4, batch_size=8))
    assert res.mode == "incremental" and res.batch_size == 2
    _close(res.map, naive_occlusion(model, x, Target.for_class(0), 8, 4, torch.zeros_like(x)))


def test_out_of_memory_with_batch_one_is_an_error_not_a_crash():
    model = OutOfMemoryAbove(_vgg_like(), limit=0)
    with pytest.raises(occ.OcclusionOutOfMemory):
        occlusion(model, torch.randn(1, 3, 16, 16), Target.for_class(0),
                  OcclusionSettings(min_saving=0, window=8, stride=8, batch_size=4))


def test_sweep_streams_partial_maps_and_stops_when_cancelled():
    inner = _vgg_like()
    model = OutOfMemoryAbove(inner, limit=1000)  # counts the forward passes
    x = torch.randn(1, 3, 32, 32)
    sweep = occlusion_sweep(model, x, Target.for_class(0), OcclusionSettings(min_saving=0, window=8, stride=4, batch_size=8))
    first = next(sweep)
    second = next(sweep)
    assert (first.done, second.done, first.total) == (8, 16, 49)
    assert first.partial_map.shape == (3, 32, 32) and first.done < first.total
    assert float(first.partial_map.abs().sum()) > 0
    sweep.close()
    calls = [b for b in model.batches if isinstance(b, int)]  # (tracing the model appends a proxy)
    assert calls == [1, 8, 8]  # the clean pass and two batches: nothing ran after the cancel
    asked = []
    with pytest.raises(Cancelled):
        occlusion(inner, x, Target.for_class(0), OcclusionSettings(min_saving=0, window=8, stride=4, batch_size=8),
                  progress=lambda d, t: asked.append(d), cancelled=lambda: len(asked) >= 2)
    assert asked == [8, 16]


def test_progressive_mode_starts_coarse_and_ends_with_the_exact_map():
    model = _vgg_like()
    x = torch.randn(1, 3, 32, 32)
    target = Target.for_class(0)
    sweep = occlusion_sweep(model, x, target,
                            OcclusionSettings(min_saving=0, window=8, stride=4, batch_size=8, progressive=True))
    steps = []
    result = drive(sweep, steps.append)
    assert steps[0].stage == "coarse" and steps[-1].stage == "refine" and steps[-1].done == steps[-1].total
    torch.testing.assert_close(result.map, steps[-1].partial_map)
    coarse_total = steps[0].total
    assert coarse_total == math.ceil((32 - 8) / 8 + 1) ** 2
    _close(steps[-1].partial_map, naive_occlusion(model, x, target, 8, 4, torch.zeros_like(x)))


def test_incremental_mode_steps_aside_when_it_would_save_little():
    model = _frozen(build_zoo_model("resnet18"))
    x = torch.randn(1, 3, 32, 32)  # layer2 onwards is covered by the first window's projection
    res = occlusion(model, x, Target.for_class(0), OcclusionSettings(window=16, stride=16))
    assert res.mode == "full" and "saves little" in res.note
    forced = occlusion(model, x, Target.for_class(0), OcclusionSettings(window=16, stride=16, min_saving=0))
    assert forced.mode == "incremental"
    _close(res.map, forced.map)


def test_untraceable_model_falls_back_to_full_with_a_note():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _vgg_like()

        def forward(self, x):
            return self.net(x) if x.sum() > -1e9 else -self.net(x)

    res = occlusion(_frozen(Branchy()), torch.randn(1, 3, 16, 16), Target.for_class(0),
                    OcclusionSettings(min_saving=0, window=8, stride=8))
    assert res.mode == "full" and "incremental occlusion unavailable" in res.note
