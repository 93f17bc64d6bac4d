"""Swin's shifted-window attention recomputed from each block's own input and weights: rows sum to 1, the
module's and the whole model's outputs rebuilt from the weights equal their own to 1e-5, one query's map
equals a naive per-key computation from the definitions (relative position bias, the shifted-window mask,
windows wrapping around the edge, padding), and the layer table's MACs equal torchvision's own figures."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision

from explorer.cli import main
from explorer.core.attribution.attention import attention_rollout, query_attention, record_attention, recording
from explorer.core.attribution.methods import AttentionSettings, compute_attribution
from explorer.core.attribution.target import Target, TargetError
from explorer.core.attribution.window_attention import is_window_attention
from explorer.core.costs import cost_table
from explorer.core.models import zoo
from explorer.core.probe import layer_table


@pytest.fixture(scope="module", params=["swin_t", "swin_v2_t"])
def swin(request):
    torch.manual_seed(0)
    model = torchvision.models.get_model(request.param, weights=None).eval()
    for m in model.modules():  # torchvision starts the bias tables at ~0: make the bias and the mask matter
        if hasattr(m, "relative_position_bias_table"):
            torch.nn.init.normal_(m.relative_position_bias_table, std=1.0)
    return model


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 64)  # stage 1: a 16x16 grid, windows of 7 (v1) or 8 (v2), padded, shifted


def inputs_and_outputs(model, x):
    seen = {}
    handles = [m.register_forward_hook(lambda _m, i, o, n=n: seen.__setitem__(n, (i[0], o)))
               for n, m in model.named_modules() if is_window_attention(m)]
    with torch.no_grad():
        reference = model(x)
    for h in handles:
        h.remove()
    return seen, reference


def test_window_attention_rebuilds_every_module_and_the_model_output(swin, x):
    seen, reference = inputs_and_outputs(swin, x)
    records = record_attention(swin, x, list(seen))
    assert [r.layer for r in records] == list(seen) and len(records) == 12
    assert any(any(r.windows.shift) for r in records)  # shifted blocks are among them
    assert any(r.windows.padded != r.windows.size for r in records)  # and padded ones
    for r in records:
        torch.testing.assert_close(r.weights.sum(-1), torch.ones_like(r.weights[..., 0]), atol=1e-5, rtol=0)
    with torch.no_grad(), recording(swin, list(seen), rebuild=True):  # each output replaced by the rebuilt one
        rebuilt_model = swin(x)
        for name, (inp, out) in seen.items():
            block_out = swin.get_submodule(name)(inp)
            torch.testing.assert_close(block_out, out, atol=1e-5, rtol=0)
    torch.testing.assert_close(rebuilt_model, reference, atol=1e-5, rtol=0)


def naive_query_map(module, inp, row, col):
    """One query's attention over the grid, key by key from Swin's definitions (no partition, no roll)."""
    _b, h, w, c = inp.shape
    ws = module.window_size[0]
    ph, pw = -(-h // ws) * ws, -(-w // ws) * ws
    s = module.shift_size[0] if ws < ph else 0
    padded = torch.zeros(ph, pw, c)
    padded[:h, :w] = inp[0]
    heads = module.num_heads
    bias_k = module.qkv.bias.clone()
    cosine = hasattr(module, "logit_scale")
    if cosine:
        bias_k[c:2 * c] = 0
    qkv = (padded @ module.qkv.weight.T + bias_k).reshape(ph, pw, 3, heads, c // heads)
    table = module.get_relative_position_bias()[0]  # (heads, N, N)

    def region(i, n):  # torchvision's three strips of the rolled map per side
        return 0 if i < n - ws else (1 if i < n - s else 2)

    rr, rc = (row - s) % ph, (col - s) % pw  # the query in the rolled map
    top, left = rr // ws * ws, rc // ws * ws
    nq = (rr - top) * ws + (rc - left)
    logits = torch.empty(heads, ws * ws)
    where = []
    for i in range(top, top + ws):
        for j in range(left, left + ws):
            oi, oj = (i + s) % ph, (j + s) % pw  # that key's place in the original map
            q, k = qkv[(row), (col), 0], qkv[oi, oj, 1]
            if cosine:
                scale = torch.clamp(module.logit_scale, max=torch.log(torch.tensor(100.0))).exp().reshape(heads)
                dot = torch.nn.functional.cosine_similarity(q, k, dim=-1) * scale
            else:
                dot = (q * k).sum(-1) / (c // heads) ** 0.5
            nk = (i - top) * ws + (j - left)
            same = s == 0 or (region(rr, ph), region(rc, pw)) == (region(i, ph), region(j, pw))
            logits[:, nk] = dot + table[:, nq, nk] + (0.0 if same else -100.0)
            where.append((nk, oi, oj))
    weights = torch.softmax(logits, -1)
    out = torch.zeros(heads, h, w)
    for nk, oi, oj in where:
        if oi < h and oj < w:  # padding positions take attention but are not on the grid
            out[:, oi, oj] = weights[:, nk]
    return out


@pytest.mark.parametrize("position", [(0, 0), (2, 13), (15, 15), (13, 2), (8, 8)])
def test_one_query_map_equals_the_naive_computation(swin, x, position):
    name = "features.1.1.attn"  # shifted, and padded to whole windows (v1: 16 -> 21)
    seen, _ = inputs_and_outputs(swin, x)
    inp = seen[name][0]
    tm = query_attention(swin, x, name, query=position[0] * 16 + position[1])
    assert tm.layer == name and tm.layout.grid == (16, 16) and tm.layout.prefix == 0
    with torch.no_grad():
        expected = naive_query_map(swin.get_submodule(name), inp, *position)
    torch.testing.assert_close(tm.maps[0], expected, atol=1e-5, rtol=0)
    assert int((tm.maps[0, 0] > 0).sum()) < 16 * 16  # its window only


def test_attention_method_on_swin_and_a_clear_refusal_of_rollout(swin, x):
    res = compute_attribution(swin, x, "attention", Target.for_class(0), cam_layer="features.3.0.norm1",
                              attention=AttentionSettings(query=9))  # a block's norm picks its attention
    assert res.layer == "features.3.0.attn" and res.grid == (8, 8) and res.prefix == 0
    assert res.display.shape == (64, 64) and "patch (1, 1)" in res.note
    with pytest.raises(TargetError, match="Swin attends within windows"):
        attention_rollout(swin, x)


def test_layer_table_counts_window_attention_as_torchvision_does(swin):
    name = type(swin.features[1][0].attn).__name__
    arch = "swin_t" if name == "ShiftedWindowAttention" else "swin_v2_t"
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    size = weights.transforms().crop_size[0]  # the input its figures are for: 224 (v1), 256 (v2)
    rows = layer_table(swin, (3, size, size))
    total = sum(r.macs for r in rows)
    meta = weights.meta
    assert total / 1e9 == pytest.approx(meta["_ops"], abs=0.0015)  # torchvision's own GFLOPS figure (MACs)
    costs = cost_table(swin, (3, size, size))
    assert costs.macs == total and costs.params == meta["num_params"]


def test_cli_attention_on_swin_t_saves_the_query_map_and_refuses_rollout(tmp_path, monkeypatch, capsys):

    built = {}
    real = zoo.build_zoo_model
    monkeypatch.setattr(zoo, "build_zoo_model", lambda *a, **k: built.setdefault("m", real(*a, **k)))
    x = torch.randn(1, 3, 64, 64)
    np_path = tmp_path / "x.npy"
    np.save(np_path, x[0].numpy())
    out = tmp_path / "a.npy"
    rc = main(["attribute", "--model", "swin_t", "--weights", "none", "--input-size", "64", "--device", "cpu",
               "--input", str(np_path), "--method", "attention", "--cam-layer", "features.1.1.norm1",
               "--query", str(2 * 16 + 13), "--out", str(out), "--json"])
    assert rc == 0
    record = json.loads(capsys.readouterr().out)["results"][0]
    assert record["grid"] == [16, 16] and record["prefix_tokens"] == 0 and "patch (2, 13)" in record["note"]
    seen, _ = inputs_and_outputs(built["m"], x)
    with torch.no_grad():
        expected = naive_query_map(built["m"].get_submodule("features.1.1.attn"), seen["features.1.1.attn"][0], 2, 13)
    np.testing.assert_allclose(np.load(out), expected.numpy(), atol=1e-5, rtol=0)
    rc = main(["attribute", "--model", "swin_t", "--weights", "none", "--input-size", "64", "--device", "cpu",
               "--input", str(np_path), "--method", "rollout", "--out", str(tmp_path / "r.npy")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Swin attends within windows" in err and len(err.splitlines()) == 1


# timm's Swin (the optional extra): rolled before padding, windows and mask handed to its WindowAttention


@pytest.fixture(scope="module")
def timm_swin():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=64, pretrained=False).eval()
    for m in model.modules():
        if hasattr(m, "relative_position_bias_table"):
            torch.nn.init.normal_(m.relative_position_bias_table, std=1.0)
    return model


def test_timm_window_attention_equals_timms_own_unfused_softmax_and_rebuilds_the_model(timm_swin, x):
    from explorer.core.attribution.attention import window_attention_layers  # noqa: PLC0415

    names = window_attention_layers(timm_swin)
    assert len(names) == 12
    for n in names:  # scaled_dot_product_attention: no weights to hook
        timm_swin.get_submodule(n).fused_attn = True
    with torch.no_grad():
        reference = timm_swin(x)
    records = record_attention(timm_swin, x, names)  # from the fused model: nothing to hook there
    assert any(any(r.windows.shift) and r.windows.padded != r.windows.size for r in records)
    seen, handles = {}, []
    for n in names:  # the oracle: timm's own unfused path, whose softmax module sees the weights
        attn = timm_swin.get_submodule(n)
        attn.fused_attn = False
        handles.append(attn.softmax.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, o)))
    try:
        with torch.no_grad():
            timm_swin(x)
    finally:
        for h in handles:
            h.remove()
        for n in names:
            timm_swin.get_submodule(n).fused_attn = True
    for r in records:
        torch.testing.assert_close(r.weights.reshape(seen[r.layer].shape), seen[r.layer], atol=1e-5, rtol=0)
    with torch.no_grad(), recording(timm_swin, names, rebuild=True):
        torch.testing.assert_close(timm_swin(x), reference, atol=1e-5, rtol=0)


def naive_timm_query_map(block, normed, row, col):
    """One query's attention over the grid, key by key, in timm's order (roll on the grid, then pad)."""
    attn = block.attn
    _b, h, w, c = normed.shape
    ws, s = block.window_size[0], block.shift_size[0]
    ph, pw = -(-h // ws) * ws, -(-w // ws) * ws
    heads = attn.num_heads
    qkv = (normed[0] @ attn.qkv.weight.T + attn.qkv.bias).reshape(h, w, 3, heads, c // heads)
    pad = attn.qkv.bias.reshape(3, heads, c // heads)  # a zero (padding) position's q, k, v
    table = attn._get_rel_pos_bias()[0]

    def region(i, n):
        return 0 if i < n - ws else (1 if i < n - s else 2)

    rr, rc = (row - s) % h, (col - s) % w
    top, left = rr // ws * ws, rc // ws * ws
    nq = (rr - top) * ws + (rc - left)
    logits, where = torch.empty(heads, ws * ws), []
    q = qkv[row, col, 0]
    for i in range(top, top + ws):
        for j in range(left, left + ws):
            inside = i < h and j < w
            k = qkv[(i + s) % h, (j + s) % w, 1] if inside else pad[1]
            nk = (i - top) * ws + (j - left)
            same = s == 0 or (region(rr, ph), region(rc, pw)) == (region(i, ph), region(j, pw))
            logits[:, nk] = (q * k).sum(-1) * attn.scale + table[:, nq, nk] + (0.0 if same else -100.0)
            if inside:
                where.append((nk, (i + s) % h, (j + s) % w))
    weights = torch.softmax(logits, -1)
    out = torch.zeros(heads, h, w)
    for nk, oi, oj in where:
        out[:, oi, oj] = weights[:, nk]
    return out


@pytest.mark.parametrize("position", [(0, 0), (2, 13), (15, 15), (8, 8)])
def test_timm_swin_query_map_equals_the_naive_computation(timm_swin, x, position):
    name = "layers.0.blocks.1.attn"  # shifted by 3, padded 16 -> 21
    block = timm_swin.get_submodule(name.rpartition(".")[0])
    normed = {}
    h = block.norm1.register_forward_hook(lambda _m, _i, o: normed.setdefault("x", o))
    with torch.no_grad():
        timm_swin(x)
    h.remove()
    tm = query_attention(timm_swin, x, name, query=position[0] * 16 + position[1])
    assert tm.layout.grid == (16, 16) and tm.layout.prefix == 0
    with torch.no_grad():
        expected = naive_timm_query_map(block, normed["x"], *position)
    torch.testing.assert_close(tm.maps[0], expected, atol=1e-5, rtol=0)


def test_timm_swin_macs_count_every_window_as_torchvisions_swin_t():
    timm = pytest.importorskip("timm")
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    rows = layer_table(model, (3, 224, 224))
    total = sum(r.macs for r in rows)  # the same architecture as torchvision's swin_t: its own figure
    meta = torchvision.models.get_model_weights("swin_t").DEFAULT.meta
    assert total / 1e9 == pytest.approx(meta["_ops"], abs=0.0015)
    assert cost_table(model, (3, 224, 224)).macs == total
