"""Optimisation over the image (explorer.core.optimize): regularisers, the Fourier parameterisation,
truncation, the three visualisations, DeepDream and inversion on the bundled shapes model, cancel."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core.attribution.target import Target, layer_output
from explorer.core.models import load_model
from explorer.core.optimize.dream import DreamSettings, dream_steps
from explorer.core.optimize.fourier import FourierImage
from explorer.core.optimize.invert import InvertSettings, invert_steps
from explorer.core.optimize.loop import OptimizeError, OptimizeStep
from explorer.core.optimize.regularizers import (clip_small_contribution, clip_small_norm, decay, gaussian_blur,
                                                 high_frequency_energy)
from explorer.core.optimize.truncate import Truncated
from explorer.core.optimize.visualize import VisualizeSettings, evaluate_pictures, visualize_steps
from explorer.core.preprocess import load_input, load_image
from explorer.core.resources import SAMPLE_IMAGES
from explorer.core.steps import drive


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes", device="cpu")


@pytest.fixture(scope="module")
def samples():
    return [load_image(p) for p in sorted(SAMPLE_IMAGES.glob("*.png")) + sorted(SAMPLE_IMAGES.glob("*.jpg"))]


def test_blur_lowers_high_frequency_energy():
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert high_frequency_energy(gaussian_blur(x, 1.0)) < 0.2 * high_frequency_energy(x)
    assert high_frequency_energy(gaussian_blur(x, 0.5)) < high_frequency_energy(x)


def test_norm_clipping_zeroes_the_smallest_norm_pixels():
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    norms = x.norm(dim=1)[0]
    y = clip_small_norm(x, 30)
    zeroed = (y.abs().sum(1)[0] == 0)
    assert abs(int(zeroed.sum()) - 120) <= 1  # 30 % of 400 pixels
    assert norms[zeroed].max() <= norms[~zeroed].min()
    assert torch.equal(y[:, :, ~zeroed], x[:, :, ~zeroed])  # the others are untouched


def test_contribution_clipping_zeroes_pixels_of_small_contribution():
    g = torch.Generator().manual_seed(2)
    x, grad = torch.randn(1, 3, 10, 10, generator=g), torch.randn(1, 3, 10, 10, generator=g)
    y = clip_small_contribution(x, grad, 90)
    contrib = (x * grad).sum(1)[0].abs()
    kept = y.abs().sum(1)[0] > 0
    assert int(kept.sum()) == 10 and contrib[kept].min() >= contrib[~kept].max()


def test_decay_shrinks_the_norm():
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(decay(x, 0.3).norm(), 0.7 * x.norm())


def test_fourier_parameterization_round_trips():
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(2, 3, 37, 50, generator=g) * 0.9 + 0.05  # odd and even sides
    for decorrelate in (True, False):
        image = FourierImage(37, 50, batch=2, decorrelate=decorrelate, generator=g).from_pixels(pixels)
        assert torch.allclose(image.pixels(), pixels, atol=1e-4)
    # the parameter is the scaled spectrum: a random one gives a smooth image (low frequencies dominate)
    smooth = FourierImage(64, 64, generator=g).pixels().detach()
    assert high_frequency_energy(smooth) < high_frequency_energy(torch.rand(1, 3, 64, 64, generator=g))


def test_truncation_computes_nothing_above_the_layer(shapes):
    x = torch.randn(1, 3, 128, 128)
    for fast in (False, True):
        truncated = Truncated(shapes.module, "features.relu2", fast=fast)
        truncated(x)  # the first call probes the model (whole passes); the steps are the calls after it
        model = truncated._fast[tuple(x.shape[1:])][0] if fast else shapes.module
        leaves = [n for n, m in model.named_modules() if n and not list(m.children())]
        ran = []
        handles = [model.get_submodule(n).register_forward_hook(lambda mod, i, o, n=n, ran=ran: ran.append(n))
                   for n in leaves]
        try:
            out = truncated(x)
        finally:
            for h in handles:
                h.remove()
        assert torch.allclose(out, layer_output(shapes.module, x, "features.relu2", stop=False), atol=1e-5)
        assert ran[-1] == "features.relu2", fast
        above = leaves[leaves.index("features.relu2") + 1:]
        assert above and not set(ran) & set(above), (fast, ran)


def test_optimized_image_beats_every_sample_image(shapes, samples):
    for target, settings in ((Target.for_class(3), VisualizeSettings(method="yosinski", steps=60)),
                             (Target.for_unit("features.relu3", 7), VisualizeSettings(method="fourier", steps=40))):
        result = drive(visualize_steps(shapes.module, shapes.spec, target, settings))
        from explorer.core.preprocess import fit_image
        fitted = [fit_image(s, shapes.spec.size) for s in samples]
        sample_values, _ = evaluate_pictures(shapes.module, target, shapes.spec, fitted, "cpu")
        assert result.pictures[0].shape == (128, 128, 3) and result.pictures[0].dtype == np.uint8
        assert result.values[0] > max(sample_values), (target, result.values[0], sample_values)


# the figures on the shapes model: each method's image of each class is classified as that class
METHOD_STEPS = {"simonyan": 100, "yosinski": 200, "fourier": 100}


@pytest.mark.parametrize("method", list(METHOD_STEPS))
def test_every_class_visualization_is_classified_as_its_class(shapes, method):
    for cls in range(len(shapes.spec.labels)):
        result = drive(visualize_steps(shapes.module, shapes.spec, Target.for_class(cls),
                                       VisualizeSettings(method=method, steps=METHOD_STEPS[method])))
        assert result.probabilities[0] >= 0.9, (method, cls, result.probabilities)


def test_yosinski_presets_resolve_to_table_1():
    s = VisualizeSettings(method="yosinski", preset=2).resolved()
    assert (s.decay, s.norm_percentile, s.steps, s.lr) == (0.3, 20.0, 750, 100.0)
    assert VisualizeSettings(method="yosinski", preset=1, steps=7).resolved().steps == 7  # explicit wins
    with pytest.raises(OptimizeError):
        VisualizeSettings(method="fourier", preset=1).resolved()


def test_diversity_makes_several_different_images(shapes):
    s = VisualizeSettings(method="fourier", steps=10, batch=2, diversity=10.0, size=64)
    result = drive(visualize_steps(shapes.module, shapes.spec, Target.for_unit("features.relu2", 3), s))
    assert len(result.pictures) == 2 and not np.array_equal(result.pictures[0], result.pictures[1])


def test_deepdream_raises_the_activation_norm_at_every_octave(shapes):
    x, _ = load_input(SAMPLE_IMAGES / "0004_star.png", shapes.spec)
    steps: list[OptimizeStep] = []
    result = drive(dream_steps(shapes.module, shapes.spec, x, DreamSettings(layer="features.relu3")), steps.append)
    assert [o["octave"] for o in result.octaves] == [1, 2, 3, 4]
    assert all(o["norm_after"] > o["norm_before"] for o in result.octaves), result.octaves
    assert result.octaves[-1]["size"] == [128, 128] and result.picture.shape == (128, 128, 3)
    assert len(steps) == 40 and steps[0].stage == "octave 1/4"


def test_inversion_first_block_reconstructs_and_detail_is_lost_with_depth(shapes):
    x, _ = load_input(SAMPLE_IMAGES / "0004_star.png", shapes.spec)
    layers = ("features.conv1", "features.relu1", "features.relu2", "features.relu3", "features.relu4")
    result = drive(invert_steps(shapes.module, shapes.spec, x, InvertSettings(layers=layers, steps=120)))
    first = result.inversions[0]
    assert first.pixel_correlation >= 0.9, first.pixel_correlation
    corr = [i.pixel_correlation for i in result.inversions]
    assert corr == sorted(corr, reverse=True), corr
    # the distance from the image grows with depth, to about that of a flat grey once nothing of it is left
    image = [i.image_error for i in result.inversions]
    assert image == sorted(image) and len(set(image)) == len(image), image
    assert image[0] < 0.05 and image[-1] > 0.5, image
    # the error in the code grows from the first block to the second; deeper, on this small model, it
    # falls again (its deep codes are matched by images that no longer resemble the input)
    errors = [i.representation_error for i in result.inversions]
    assert errors[0] < errors[2], errors
    assert result.strip.shape == (128, 6 * 128 + 5 * 4, 3)


def test_image_error_is_the_normalised_distance_from_the_input(shapes):
    x, _ = load_input(SAMPLE_IMAGES / "0002_triangle.png", shapes.spec)
    result = drive(invert_steps(shapes.module, shapes.spec, x, InvertSettings(layers=("features.relu2",), steps=5)))
    inv = result.inversions[0]
    got = inv.picture.astype(np.float64) / 255
    want = result.original.astype(np.float64) / 255
    expected = ((got - want) ** 2).sum() / ((want - want.mean()) ** 2).sum()
    assert expected > 0 and abs(inv.image_error - expected) <= 1e-3 * expected, (inv.image_error, expected)


def test_runs_cancel_cleanly_and_emit_progress(shapes):
    gen = visualize_steps(shapes.module, shapes.spec, Target.for_class(0), VisualizeSettings(method="fourier",
                                                                                            steps=1000, every=2))
    seen = []

    class Stop(Exception):
        pass

    def on_yield(step):
        seen.append(step)
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        drive(gen, on_yield)
    assert [s.step for s in seen] == [2, 4, 6] and seen[-1].total == 1000
    assert seen[-1].pictures[0].shape == (128, 128, 3) and len(seen[-1].history) == 6
    assert gen.gi_frame is None  # closed
    with pytest.raises(StopIteration):
        next(gen)


def test_weights_need_no_gradient_while_optimizing_and_are_restored(shapes):
    params = list(shapes.module.parameters())
    before = [p.requires_grad for p in params]
    params[0].requires_grad_(True)
    flags = []
    try:
        gen = visualize_steps(shapes.module, shapes.spec, Target.for_class(1),
                              VisualizeSettings(method="simonyan", steps=4, every=1))
        drive(gen, lambda step: flags.append(any(p.requires_grad for p in params)))
        assert flags == [False] * 4
        assert params[0].requires_grad and params[0].grad is None
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


class _ConvBnNet(torch.nn.Module):
    """Three conv + batch-norm pairs; conv2's output also feeds a skip, so that pair cannot be folded."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8, affine=False)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        y = self.conv2(x)
        x = torch.relu(self.bn2(y)) + y
        x = self.bn3(self.conv3(x))
        return self.head(x.mean((2, 3)))


def _conv_bn_net():
    torch.manual_seed(0)
    net = _ConvBnNet().double().eval()
    for m in net.modules():  # statistics far from the identity, so that a wrong fold shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.2, 3.0)
            if m.weight is not None:
                m.weight.data.normal_()
                m.bias.data.normal_()
    return net


def test_fast_truncation_folds_batch_norms_and_gives_the_same_values_and_gradients():
    from explorer.core.optimize.truncate import foldable_pairs

    net = _conv_bn_net()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    assert foldable_pairs(net, None, x) == [("conv1", "bn1"), ("conv3", "bn3")]
    assert foldable_pairs(net, net.conv3, x) == [("conv1", "bn1")]  # the target's own output stays raw
    for layer, folded in ((None, 2), ("bn3", 2), ("conv3", 1), ("bn1", 1)):
        slow, fast = Truncated(net, layer), Truncated(net, layer, fast=True)
        xs, xf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        a, b = slow(xs), fast(xf)
        assert fast.folded == folded and fast.channels_last, layer
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), layer
        ga, = torch.autograd.grad((a * a).sum(), xs)
        gb, = torch.autograd.grad((b * b).sum(), xf)
        assert torch.allclose(ga, gb, rtol=1e-10, atol=1e-12), layer
    # the model itself is untouched: its batch norms are still there and its weights are shared
    fast = Truncated(net, None, fast=True)
    fast(x)
    assert isinstance(net.bn1, torch.nn.BatchNorm2d)
    copy_ = fast._fast[tuple(x.shape[1:])][0]
    assert isinstance(copy_.bn1, torch.nn.Identity) and copy_.conv2.weight is net.conv2.weight


def test_fast_truncation_falls_back_when_folding_would_change_the_result():
    net = _conv_bn_net().train()  # batch statistics: nothing may be folded
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    fast = Truncated(net, None, fast=True)
    assert torch.allclose(fast(x), Truncated(net, None)(x)) and fast.folded == 0


def test_inversion_error_is_normalised_by_the_norm_of_the_code(shapes):
    """The reported error is ||Phi(x*) - Phi0||^2 / ||Phi0||^2 for the saved 8-bit picture, recomputed here
    with the whole (unfolded, untruncated) model."""
    from explorer.core.optimize.regularizers import PixelSpace
    from explorer.core.optimize.visualize import pictures_to_pixels

    x, picture = load_input(SAMPLE_IMAGES / "0004_star.png", shapes.spec)
    space = PixelSpace.for_spec(shapes.spec, "cpu")
    phi0 = layer_output(shapes.module, x, "features.relu3", stop=False).clone()
    result = drive(invert_steps(shapes.module, shapes.spec, x, InvertSettings(layers=("features.relu3",), steps=8)))
    inv = result.inversions[0]
    got = space.to_model(pictures_to_pixels([inv.picture], 3, "cpu"))
    phi = layer_output(shapes.module, got, "features.relu3", stop=False)
    expected = float(((phi - phi0) ** 2).sum() / (phi0 ** 2).sum())
    assert 0 < expected and abs(inv.representation_error - expected) <= 1e-3 * expected, (inv, expected)
    assert np.array_equal(result.original, picture)


def test_fast_truncation_keeps_the_layout_a_model_needs():
    class Flat(torch.nn.Module):  # .view() refuses channels-last strides
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4 * 6 * 6, 2)

        def forward(self, x):
            return self.fc(self.bn(self.conv(x)).view(x.shape[0], -1))

    net = Flat().double().eval()
    net.bn.running_mean.normal_()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    fast = Truncated(net, None, fast=True)
    assert torch.allclose(fast(x), net(x), rtol=1e-10, atol=1e-12)
    assert fast.folded == 1 and not fast.channels_last
