"""``deep-explorer layers`` and ``activations`` on vision transformers (torchvision vit_b_16 built for 64 px, and
timm's distilled DeiT when the extra is installed): the JSON and the saved arrays checked against an independent
forward with plain hooks on the very model the command built (a spy on the builder hands it over)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from explorer.cli import main
from explorer.core.models import zoo
from explorer.core.tiling import activation_grid


@pytest.fixture
def built(monkeypatch):
    """The modules the command builds, by the name of the builder (the last one built)."""
    seen: dict[str, nn.Module] = {}
    for builder in ("build_zoo_model", "build_timm_model"):
        real = getattr(zoo, builder)

        def spy(*args, _real=real, _key=builder, **kwargs):
            seen[_key] = _real(*args, **kwargs)
            seen[_key + " kwargs"] = kwargs
            return seen[_key]

        monkeypatch.setattr(zoo, builder, spy)
    return seen


@pytest.fixture
def tensor_input(tmp_path):
    """A preprocessed input as a .npy tensor (3, 64, 64): the command feeds it as it is."""
    x = np.random.default_rng(3).standard_normal((3, 64, 64)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return path, torch.from_numpy(x)[None]


def hooked_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, list]:
    """Every module's outputs and inputs of one forward (the reference), by plain forward hooks."""
    calls: dict[str, list] = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: calls.setdefault(n, []).append((inp, out)))
               for n, m in model.named_modules() if n]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return calls


def first(out):
    return out[0] if isinstance(out, tuple) else out


def test_layers_json_on_vit_b_16_matches_an_independent_forward(built, capsys):
    rc = main(["layers", "--model", "vit_b_16", "--weights", "none", "--input-size", "64", "--device", "cpu",
               "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    model = built["build_zoo_model"]
    assert built["build_zoo_model kwargs"].get("image_size") == 64  # built for 64 px: a 4x4 patch grid
    calls = hooked_outputs(model, torch.zeros(1, 3, 64, 64))
    rows = {r["name"]: r for r in data["layers"]}
    expected_macs = 0
    for name, module in model.named_modules():
        if not name:
            continue
        if name not in calls:
            assert rows[name]["output_shape"] is None
            continue
        inp, out = calls[name][0]
        out = first(out)
        assert rows[name]["output_shape"] == list(out.shape[1:]), name
        assert rows[name]["params"] == sum(p.numel() for p in module.parameters(recurse=False)), name
        if isinstance(module, nn.Linear):
            macs = out.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            macs = out.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.MultiheadAttention):  # q, k, v and out projections; QK^T and AV
            t, e = inp[0].shape[1], module.embed_dim
            macs = 4 * t * e * e + 2 * t * t * e
        else:
            macs = 0
        assert rows[name]["macs"] == macs, name
        expected_macs += macs
    assert rows["encoder.layers.encoder_layer_0.self_attention"]["output_shape"] == [17, 768]
    assert data["total_macs"] == expected_macs == data["totals"]["macs"]
    assert data["total_params"] == sum(p.numel() for p in model.parameters()) == data["totals"]["params"]
    assert data["input_shape"] == [3, 64, 64] and data["model"]["trained"] is False


def test_activations_json_and_array_on_vit_b_16_match_an_independent_forward(built, tensor_input, tmp_path,
                                                                              capsys):
    path, x = tensor_input
    layer = "encoder.layers.encoder_layer_5"
    out_npy, out_png = tmp_path / "a.npy", tmp_path / "g.png"
    rc = main(["activations", "--model", "vit_b_16", "--weights", "none", "--input-size", "64", "--device", "cpu",
               "--input", str(path), "--layer", layer, "--out", str(out_npy), "--png", str(out_png), "--json"])
    assert rc == 0
    record = json.loads(capsys.readouterr().out)
    reference = first(hooked_outputs(built["build_zoo_model"], x)[layer][0][1])[0]  # (17, 768)
    saved = np.load(out_npy)
    np.testing.assert_allclose(saved, reference.numpy(), rtol=0, atol=1e-6)
    assert record["shape"] == [17, 768] and record["layout"] == "tokens"
    assert record["grid"] == [4, 4] and record["prefix_tokens"] == 1 and record["prefix_names"] == ["class"]
    assert record["min"] == pytest.approx(float(reference.min()), abs=1e-6)
    assert record["max"] == pytest.approx(float(reference.max()), abs=1e-6)
    assert record["mean"] == pytest.approx(float(reference.mean()), abs=1e-6)
    # the PNG tiles the 768 channel maps over the 4x4 patch tokens (class token left out), not 17 token rows
    maps = reference[1:].T.reshape(768, 4, 4)
    grid, _ = activation_grid(maps, "layer")
    expected = (grid.clamp(0, 1) * 255).round().byte().numpy()
    png = np.asarray(Image.open(out_png).convert("L"))
    scale = png.shape[0] // expected.shape[0]
    assert png.shape == (expected.shape[0] * scale, expected.shape[1] * scale)
    np.testing.assert_array_equal(png[::scale, ::scale], expected)


def test_activations_on_a_distilled_deit_lay_out_two_prefix_tokens(built, tensor_input, tmp_path, capsys):
    pytest.importorskip("timm")
    path, x = tensor_input
    layer = "blocks.1"
    out_npy = tmp_path / "a.npy"
    rc = main(["activations", "--model", "timm:deit_tiny_distilled_patch16_224", "--weights", "none",
               "--input-size", "64", "--device", "cpu", "--input", str(path), "--layer", layer, "--out",
               str(out_npy), "--json"])
    assert rc == 0
    record = json.loads(capsys.readouterr().out)
    reference = first(hooked_outputs(built["build_timm_model"], x)[layer][0][1])[0]  # (2 + 16, 192)
    np.testing.assert_allclose(np.load(out_npy), reference.numpy(), rtol=0, atol=1e-6)
    assert record["shape"] == [18, 192] and record["grid"] == [4, 4] and record["prefix_tokens"] == 2
    assert record["prefix_names"] == ["class", "distillation"]
    assert record["model"]["name"] == "timm:deit_tiny_distilled_patch16_224"
