"""Vision transformers: token grids and prefix tokens inferred from the model, attention recomputed from
each block's input (equal to the unfused math path, fused models included), rollout, Grad-CAM on tokens,
attention MACs, the CLI and the attribution panel. Small random-weight ViTs, a few checks on vit_b_16/swin_t."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

from explorer.core.attribution.attention import (attention_for_layer, attention_rollout, query_attention,
                                                 record_attention, recording)
from explorer.core.attribution.gradcam import default_cam_layer, grad_cam
from explorer.core.attribution.methods import compute_attribution, AttentionSettings
from explorer.core.attribution.target import Target
from explorer.core.explore import compute_layer_view
from explorer.core.models import InputSpec, LoadedModel
from explorer.core.models.zoo import build_zoo_model
from explorer.core.probe import layer_table
from explorer.core.transformers import TokenLayout, channel_maps, prefix_names, token_at, token_layout


def small_vit(layers: int = 2, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=layers, num_heads=4, hidden_dim=64,
                          mlp_dim=128, num_classes=10).eval()
    torch.nn.init.normal_(m.heads.head.weight, std=0.1)  # torchvision starts the head at zero: no gradient
    return m


@pytest.fixture(scope="module")
def vit():
    return small_vit()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(1, 3, 32, 32)


def test_grid_and_prefix_are_inferred_from_the_patch_embedding():
    assert token_layout(small_vit(), (32, 32), 17) == TokenLayout((4, 4), 1)
    assert token_layout(small_vit(), (32, 32), 16) == TokenLayout((4, 4), 0)
    assert token_layout(small_vit(), (32, 32), 100) is None  # not a patch sequence
    b16 = build_zoo_model("vit_b_16")
    assert token_layout(b16, (224, 224), 197) == TokenLayout((14, 14), 1)
    b16_384 = build_zoo_model("vit_b_16", image_size=384)
    assert b16_384.image_size == 384
    assert token_layout(b16_384, (384, 384), 577) == TokenLayout((24, 24), 1)
    assert token_layout(torchvision.models.resnet18(), (224, 224), 197) is None  # a CNN has no patch grid


def test_token_output_becomes_channel_maps_with_the_class_token_apart(vit, x):
    loaded = LoadedModel("vit", vit, InputSpec(size=(32, 32)), trained=False, source="test")
    view = compute_layer_view(loaded, x, "encoder.layers.encoder_layer_0")
    assert view.activation.shape == (64, 4, 4) and view.tokens == TokenLayout((4, 4), 1)
    assert view.prefix.shape == (1, 64) and view.prefix_names == ["class"]
    with torch.no_grad():
        tokens = vit.encoder.layers[0](vit.encoder.dropout(torch.cat(
            [vit.class_token, vit._process_input(x)], 1) + vit.encoder.pos_embedding))[0]
    np.testing.assert_allclose(view.activation[:, 1, 2], tokens[1 + 1 * 4 + 2].numpy(), atol=1e-5)
    np.testing.assert_allclose(view.prefix[0], tokens[0].numpy(), atol=1e-5)
    assert view.layout.count == 64 and view.grid.ndim == 2
    assert token_at((4, 4), 1, (32, 32), 9.0, 17.0) == 1 + 1 * 4 + 2


def test_swin_channels_last_output_is_channel_maps():
    swin = torchvision.models.swin_t(weights=None).eval()
    with torch.no_grad():
        out = swin.features[:2](torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 56, 56, 96)
    maps = channel_maps(swin, out, (224, 224))
    assert maps.kind == "channels-last" and maps.maps.shape == (96, 56, 56)
    conv = swin.features[0][0](torch.zeros(1, 3, 224, 224))  # the patch embedding itself is channels-first
    assert channel_maps(swin, conv, (224, 224)) is None
    assert default_cam_layer(swin) == "norm"


def test_attention_equals_the_math_path_and_rebuilds_the_block_output(vit, x):
    records = record_attention(vit, x)
    assert [r.layer for r in records] == [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(2)]
    block = vit.encoder.layers[1]
    seen = {}
    handle = block.register_forward_pre_hook(lambda _m, a: seen.setdefault("in", a[0]))
    with torch.no_grad():
        reference = vit(x)
        block_out = block(seen["in"])
        normed = block.ln_1(seen["in"])
        _, math = block.self_attention(normed, normed, normed, need_weights=True, average_attn_weights=False)
    handle.remove()
    weights = records[1].weights
    assert weights.shape == (1, 4, 17, 17)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 4, 17), atol=1e-5, rtol=0)
    torch.testing.assert_close(weights, math, atol=1e-5, rtol=0)
    with torch.no_grad(), recording(vit, rebuild=True):  # every module's output replaced by the rebuilt one
        rebuilt = vit(x)
        rebuilt_block = block(seen["in"])
    torch.testing.assert_close(rebuilt_block, block_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(rebuilt, reference, atol=1e-5, rtol=0)


def test_query_attention_gives_every_head_of_one_token(vit, x):
    tm = query_attention(vit, x, "encoder.layers.encoder_layer_1.ln_1", query=6)
    assert tm.layer == "encoder.layers.encoder_layer_1.self_attention"  # the norm picks its block's attention
    assert tm.maps.shape == (1, 4, 4, 4)
    full = record_attention(vit, x)[1].weights
    torch.testing.assert_close(tm.maps[0, :, 1, 2], full[0, :, 6, 1 + 6])
    assert attention_for_layer(vit, "encoder.layers.encoder_layer_0.mlp") == \
        "encoder.layers.encoder_layer_0.self_attention"


@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_rollout_of_one_block_equals_a_hand_computation(x, fusion):
    one = small_vit(layers=1, seed=3)
    a = record_attention(one, x)[0].weights[0]  # (heads, T, T)
    fused = a.mean(0) if fusion == "mean" else a.max(0).values
    hand = (fused + torch.eye(17)) / 2
    hand = hand / hand.sum(-1, keepdim=True)
    expected = hand[0, 1:].reshape(4, 4)
    got = attention_rollout(one, x, fusion, discard_ratio=0.0)
    torch.testing.assert_close(got.maps[0, 0], expected)
    dropped = attention_rollout(one, x, fusion, discard_ratio=0.5).maps[0, 0]
    assert dropped.shape == (4, 4) and not torch.allclose(dropped, expected)


def test_gradient_rollout_and_gradcam_on_tokens(vit, x):
    target = Target.for_class(3)
    g = attention_rollout(vit, x, discard_ratio=0.0, target=target)
    assert g.maps.shape == (1, 1, 4, 4) and float(g.maps.sum()) > 0
    assert default_cam_layer(vit) == "encoder.layers.encoder_layer_1.ln_1"
    cam = grad_cam(vit, x, target)
    assert cam.layer == "encoder.layers.encoder_layer_1.ln_1" and cam.cam.shape == (1, 4, 4)
    assert float(cam.cam.sum()) > 0 and cam.upsampled.shape == (1, 32, 32)
    last = grad_cam(vit, x, target, "encoder.layers.encoder_layer_1")  # only the class token has gradient
    assert float(last.cam.abs().sum()) == 0.0
    for method in ("guided-backprop", "occlusion"):  # need no grid
        assert compute_attribution(vit, x, method, target).display.shape == (32, 32)


def test_compute_attribution_transformer_methods(vit, x):
    att = compute_attribution(vit, x, "attention", Target.for_class(0), attention=AttentionSettings(query=0))
    assert att.map.shape == (4, 4, 4) and att.display.shape == (32, 32) and att.grid == (4, 4)
    assert "class token" in att.note
    rol = compute_attribution(vit, x, "rollout", Target.for_class(0))
    assert rol.map.shape == (4, 4) and rol.prefix == 1


def test_layer_table_counts_attention_macs():
    m = small_vit(layers=1)
    rows = {r.name: r for r in layer_table(m, (3, 32, 32))}
    t, e = 17, 64
    assert rows["encoder.layers.encoder_layer_0.self_attention"].macs == 4 * t * e * e + 2 * t * t * e


# the timm tests below skip cleanly without the optional extra (pip install deep-explorer[vit])


@pytest.mark.parametrize("kind", ["distilled", "registers"])
def test_timm_distilled_and_register_models(kind, x):
    pytest.importorskip("timm")
    from timm.models.deit import VisionTransformerDistilled  # noqa: PLC0415
    from timm.models.vision_transformer import VisionTransformer as TimmViT  # noqa: PLC0415

    torch.manual_seed(0)
    if kind == "distilled":
        m = VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
        prefix, names = 2, ["class", "distillation"]
    else:
        m = TimmViT(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10, reg_tokens=4)
        prefix, names = 5, ["class", "register 0", "register 1", "register 2", "register 3"]
    m.eval()
    assert m.blocks[0].attn.fused_attn  # scaled_dot_product_attention: no attention weights to hook
    records = record_attention(m, x)
    t = 16 + prefix
    assert records[0].weights.shape == (1, 4, t, t)
    assert token_layout(m, (32, 32), t) == TokenLayout((4, 4), prefix) and prefix_names(m, prefix) == names
    attn = m.blocks[0].attn
    seen = {}
    h = attn.register_forward_pre_hook(lambda _m, a: seen.setdefault("in", a[0]))
    with torch.no_grad():
        reference = m(x)
    h.remove()
    q, k, _ = attn.qkv(seen["in"]).reshape(1, t, 3, 4, 16).permute(2, 0, 3, 1, 4)
    math = torch.softmax(q @ k.transpose(-2, -1) * attn.scale, -1)
    torch.testing.assert_close(records[0].weights, math, atol=1e-5, rtol=0)
    with torch.no_grad(), recording(m, rebuild=True):
        torch.testing.assert_close(m(x), reference, atol=1e-5, rtol=0)
    assert default_cam_layer(m) == "blocks.1.norm1"
    assert grad_cam(m, x, Target.for_class(1)).cam.shape == (1, 4, 4)
    assert attention_rollout(m, x).maps.shape == (1, 1, 4, 4)


def test_cli_rollout_and_gradcam_on_vit_b_16(tmp_path, capsys):
    from PIL import Image  # noqa: PLC0415

    from explorer.cli import main  # noqa: PLC0415

    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "r.npy"
    rc = main(["attribute", "--model", "vit_b_16", "--weights", "none", "--device", "cpu", "--input", str(img),
               "--method", "rollout", "--out", str(out), "--json"])
    assert rc == 0
    record = json.loads(capsys.readouterr().out)["results"][0]
    assert record["grid"] == [14, 14] and record["prefix_tokens"] == 1
    assert np.load(out).shape == (14, 14)


def test_attribution_panel_shows_attention_picks_the_query_by_click_and_shows_rollout(qtbot, vit, x,
                                                                                       no_thread_leak):
    pytest.importorskip("pytestqt")
    from explorer.gui.panels.attribution import AttributionPanel  # noqa: PLC0415

    loaded = LoadedModel("vit", vit, InputSpec(size=(32, 32)), trained=False, source="test")
    panel = AttributionPanel()
    qtbot.addWidget(panel)
    panel.show()
    picture = np.zeros((32, 32, 3), np.uint8)
    panel.set_context(loaded, x, picture)
    assert panel.cam_layer.currentText() == "encoder.layers.encoder_layer_1.ln_1"  # not the patch embedding
    try:
        panel.method.setCurrentText("attention")
        with qtbot.waitSignal(panel.result_ready, timeout=30000) as blocker:
            panel.compute()
        assert blocker.args[0].map.shape == (4, 4, 4) and panel.pane.overlay_item.image.shape == (32, 32)
        with qtbot.waitSignal(panel.result_ready, timeout=30000) as blocker:
            panel.pane.click_pixel(9.0, 17.0)  # patch (1, 2): token 1 + 4 + 2
        assert panel.query.value() == 7 and "patch (1, 2)" in blocker.args[0].note
        expected = query_attention(vit, x, "encoder.layers.encoder_layer_1.ln_1", 7).maps[0].mean(0)
        np.testing.assert_allclose(blocker.args[0].display[8, 16], float(expected[1, 2]), rtol=1e-5)
        panel.method.setCurrentText("rollout")
        with qtbot.waitSignal(panel.result_ready, timeout=30000) as blocker:
            panel.compute()
        assert blocker.args[0].map.shape == (4, 4) and "rollout" in panel.status.text()
    finally:
        panel.shutdown()
