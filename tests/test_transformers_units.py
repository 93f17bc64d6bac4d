"""A unit on a transformer layer is a channel, not a token: on a ViT's (tokens, dim) output unit c is embedding
channel c, whose map is ``output[:, prefix:, c]`` over the patch grid; on Swin's (H, W, C) output it is the
last dimension. Checked against the hooked module output, for targets (attribution, optimisation), the view
and the unit count."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

from explorer.core.attribution.methods import compute_attribution
from explorer.core.attribution.target import Target, TargetError, target_fn
from explorer.core.explore import compute_layer_view
from explorer.core.models import InputSpec, LoadedModel
from explorer.core.optimize.truncate import Truncated, target_values
from explorer.core.transformers import unit_count, units_first

LAYER = "encoder.layers.encoder_layer_0"


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
                             mlp_dim=128, num_classes=10).eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


def hooked(model, x, layer):
    """The module's own output for ``x``, by a plain forward hook (the reference)."""
    seen = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[-1]


def test_a_vit_units_map_is_its_channel_over_the_patch_grid(vit, x):
    out = hooked(vit, x, LAYER)  # (2, 1 + 16, 64)
    maps = units_first(vit, out, (32, 32))
    assert maps.shape == (2, 64, 4, 4)
    for c in (0, 5, 63):
        torch.testing.assert_close(maps[:, c], out[:, 1:, c].reshape(2, 4, 4), rtol=0, atol=0)
    assert unit_count(vit, tuple(out.shape[1:]), (32, 32)) == 64  # not 17 tokens


def test_unit_target_on_a_token_layer_reads_a_channel_not_a_token(vit, x):
    out = hooked(vit, x, LAYER)
    with torch.no_grad():
        mean = target_fn(vit, Target.for_unit(LAYER, 40))(x)
        neuron = target_fn(vit, Target.for_unit(LAYER, 40, (2, 3)))(x)
    torch.testing.assert_close(mean, out[:, 1:, 40].mean(1))  # the channel's mean over the patch tokens
    torch.testing.assert_close(neuron, out[:, 1 + 2 * 4 + 3, 40])  # patch (2, 3) of channel 40
    with pytest.raises(TargetError, match="has 64 units"):  # channel 64 does not exist, token 16 would
        target_fn(vit, Target.for_unit(LAYER, 64))(x)
    with torch.no_grad():  # optimisation reads the same unit through its truncated model
        torch.testing.assert_close(target_values(Truncated(vit, LAYER), Target.for_unit(LAYER, 40), x), mean)


def test_gradient_of_a_token_unit_reaches_only_its_patch(vit, x):
    # before the first attention block the tokens have not mixed: channel 7 of patch (1, 2) depends on
    # the pixels of that 8x8 patch alone, so its gradient is zero everywhere else
    layer = "encoder.dropout"
    assert hooked(vit, x, layer).shape == (2, 17, 64)  # a token layer
    grad = compute_attribution(vit, x[:1], "gradient", Target.for_unit(layer, 7, (1, 2))).map
    grad = np.abs(np.asarray(grad)).reshape(-1, 32, 32).sum(0)
    inside = grad[8:16, 16:24].sum()
    outside = grad.sum() - inside
    assert inside > 0 and outside == 0


def test_the_layer_views_unit_map_is_the_hooked_channel(vit, x):
    loaded = LoadedModel("vit", vit, InputSpec(size=(32, 32)), trained=False, source="test")
    view = compute_layer_view(loaded, x[:1], LAYER)
    out = hooked(vit, x[:1], LAYER)
    assert view.units == 64
    for c in (3, 50):
        np.testing.assert_allclose(view.unit_map(c), out[0, 1:, c].reshape(4, 4).numpy(), rtol=0, atol=1e-6)


def test_swin_unit_is_the_last_dimension():
    torch.manual_seed(0)
    swin = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    layer = "features.1"
    out = hooked(swin, x, layer)  # (1, 16, 16, 96), channels last
    assert out.shape == (1, 16, 16, 96)
    with torch.no_grad():
        value = target_fn(swin, Target.for_unit(layer, 90, (3, 4)))(x)
        mean = target_fn(swin, Target.for_unit(layer, 90))(x)
    torch.testing.assert_close(value, out[:, 3, 4, 90])
    torch.testing.assert_close(mean, out[..., 90].mean((1, 2)))
    assert unit_count(swin, tuple(out.shape[1:]), (64, 64)) == 96


def test_cnn_units_are_unchanged():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    out = hooked(net, x, "layer1")
    assert units_first(net, out, (64, 64)) is out
    with torch.no_grad():
        torch.testing.assert_close(target_fn(net, Target.for_unit("layer1", 9, (2, 5)))(x), out[:, 9, 2, 5])
