"""Attention weights of vision transformers, recomputed from each block's own input, and attention rollout.

The weights are rebuilt as softmax(Q K^T / sqrt(d)) from the input the attention module receives and its
own projection weights, so they are there when the model uses fused scaled-dot-product attention (which
never materialises them, and never calls ``attn_drop``). With gradients on, the module's output is rebuilt
from those weights (A V, then the output projection) and replaces its own, so that d(score)/dA exists.

Supported: ``nn.MultiheadAttention`` self-attention (torchvision's ViT) and timm-style attention modules
(a ``qkv`` Linear, ``num_heads``, ``proj``; optional ``q_norm``/``k_norm``); torchvision's Swin window
attention for one query's map (:mod:`.window_attention`: relative position bias and shifted-window mask),
but not for rollout, which needs one attention over one token sequence.

Rollout (Abnar & Zuidema 2020): with A_l the head-fused attention of block l (mean, max or min over
heads; the lowest ``discard_ratio`` of its weights set to 0, never the class token's own column),

    Â_l = (A_l + I) / 2, rows renormalised,        R = Â_L ... Â_1,

and the map is R's class-token row over the patch tokens. The gradient-weighted variant (class-specific)
fuses heads as mean_h ReLU(A_h * dy/dA_h).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.attribution.target import Target, TargetError, target_fn
from explorer.core.attribution.window_attention import (WindowGeometry, is_timm_window_attention, is_window_attention,
                                                        rebuild_window_output, timm_rebuild_windows,
                                                        timm_window_geometry, timm_window_weights,
                                                        window_attention_weights, window_query_map)
from explorer.core.transformers import TokenLayout, token_layout

FUSIONS = ("mean", "max", "min")


def is_attention(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return True
    return isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads") \
        and isinstance(getattr(module, "proj", None), nn.Module) and not hasattr(module, "window_size")


def attention_layers(model: nn.Module) -> list[str]:
    """Names of the attention modules this module can recompute, in order."""
    return [n for n, m in model.named_modules() if n and is_attention(m)]


def window_attention_layers(model: nn.Module) -> list[str]:
    """Names of the window attention modules (Swin's) this module can recompute, in order."""
    return [n for n, m in model.named_modules() if n and (is_window_attention(m) or is_timm_window_attention(m))]


def attention_for_layer(model: nn.Module, layer: str | None) -> str:
    """The attention module of ``layer``: itself, the first one inside it, the one beside it (a block's
    norm or MLP picks its block's attention), else the last one before it. None picks the last block's.
    Global and window (Swin) attention alike."""
    names = sorted(set(attention_layers(model)) | set(window_attention_layers(model)),
                   key=[n for n, _ in model.named_modules()].index)
    if not names:
        raise TargetError("the model has no attention layer that can be recomputed (nn.MultiheadAttention "
                          "self-attention, a module with qkv, proj and num_heads, or torchvision's Swin "
                          "window attention)")
    if layer is None:
        return names[-1]
    if layer in names:
        return layer
    inside = [n for n in names if n.startswith(layer + ".")]
    if inside:
        return inside[0]
    parent = layer.rpartition(".")[0]
    siblings = [n for n in names if n.rpartition(".")[0] == parent] if parent else []
    if siblings:  # a block's norm or MLP: that block's attention
        return siblings[0]
    order = [n for n, _ in model.named_modules() if n]
    if layer not in order:
        raise TargetError(f"no layer named {layer!r}")
    before = [n for n in order[:order.index(layer)] if n in names]
    return before[-1] if before else names[0]


def _qkv(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(B, heads, T, d) queries, keys and values of ``x`` (B, T, D), and the scale."""
    b, t, _ = x.shape
    if isinstance(module, nn.MultiheadAttention):
        if not module._qkv_same_embed_dim:
            raise TargetError("attention with separate key/value sizes is not supported")
        heads = module.num_heads
        q, k, v = F.linear(x, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
        d = module.embed_dim // heads
        q, k, v = (z.reshape(b, t, heads, d).transpose(1, 2) for z in (q, k, v))
        return q, k, v, 1.0 / math.sqrt(d)
    heads = module.num_heads
    qkv = module.qkv(x).reshape(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    for name, which in (("q_norm", 0), ("k_norm", 1)):
        norm = getattr(module, name, None)
        if norm is not None:
            if which == 0:
                q = norm(q)
            else:
                k = norm(k)
    scale = float(getattr(module, "scale", 1.0 / math.sqrt(q.shape[-1])))
    return q, k, v, scale


def attention_weights(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T * scale) of the module for its input ``x`` (B, T, D): (B, heads, T, T)."""
    q, k, _v, scale = _qkv(module, x)
    return torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)


def rebuild_output(module: nn.Module, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """The module's output (B, T, D) rebuilt from its attention weights: A V, heads merged, out projection."""
    _q, _k, v, _s = _qkv(module, x)
    b, t = x.shape[:2]
    mixed = (attn @ v).transpose(1, 2).reshape(b, t, -1)
    if isinstance(module, nn.MultiheadAttention):
        return F.linear(mixed, module.out_proj.weight, module.out_proj.bias)
    out = module.proj(mixed)
    drop = getattr(module, "proj_drop", None)
    return drop(out) if drop is not None else out


@dataclass
class AttentionRecord:
    layer: str
    weights: torch.Tensor  # (B, heads, T, T), rows sum to 1; window attention: (B, windows, heads, N, N)
    grad: torch.Tensor | None = None  # d(target)/d(weights), when asked for
    windows: WindowGeometry | None = None  # window attention only: how the grid was cut into windows


@contextmanager
def recording(model: nn.Module, layers: list[str] | None = None, rebuild: bool = False):
    """Inside the block every forward records each attention module's weights (a list of records, in the
    order the modules run). With ``rebuild`` the modules' outputs are replaced by the ones rebuilt from the
    recorded weights, so gradients reach them."""
    records: list[AttentionRecord] = []
    handles = []
    modules = dict(model.named_modules())
    for name in layers if layers is not None else attention_layers(model):
        module = modules[name]

        def pre(mod, args, kwargs, key=name):
            x = args[0] if args else kwargs.get("query", kwargs.get("x"))
            if is_timm_window_attention(mod):  # windows (B*nW, N, C) and the block's mask
                mod._explorer_input = (x, kwargs.get("mask", args[1] if len(args) > 1 else None))
                return
            if is_window_attention(mod):
                mod._explorer_input = x
                return
            if isinstance(mod, nn.MultiheadAttention):
                if kwargs.get("attn_mask") is not None or kwargs.get("key_padding_mask") is not None:
                    raise TargetError(f"{key}: masked attention is not supported")
                if not mod.batch_first:
                    x = x.transpose(0, 1)
            mod._explorer_input = x

        def post(mod, _args, _kwargs, output, key=name):
            x = mod.__dict__.pop("_explorer_input", None)
            if isinstance(x, tuple):  # timm's window attention: the geometry is its block's
                block = modules[key.rpartition(".")[0]]
                grid = block.__dict__.get("_explorer_grid")
                if grid is None:
                    return None
                weights = timm_window_weights(mod, x[0], x[1], grid.shape[0])
                records.append(AttentionRecord(key, weights if rebuild else weights.detach(),
                                               windows=timm_window_geometry(block, grid)))
                return timm_rebuild_windows(mod, x[0], weights) if rebuild else None
            if x is not None and x.dim() == 4 and is_window_attention(mod):
                weights, geo = window_attention_weights(mod, x)
                records.append(AttentionRecord(key, weights if rebuild else weights.detach(), windows=geo))
                return rebuild_window_output(mod, x, weights) if rebuild else None
            if x is None or x.dim() != 3:
                return None
            weights = attention_weights(mod, x)
            if not rebuild:
                records.append(AttentionRecord(key, weights.detach()))
                return None
            records.append(AttentionRecord(key, weights))
            out = rebuild_output(mod, x, weights)
            if isinstance(mod, nn.MultiheadAttention):
                if not mod.batch_first:
                    out = out.transpose(0, 1)
                return (out, output[1] if isinstance(output, tuple) else None)
            return out

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))
        if is_timm_window_attention(module) and "." in name:  # its block's (B, H, W, C) input: the grid
            handles.append(modules[name.rpartition(".")[0]].register_forward_pre_hook(
                lambda block, args: block.__dict__.__setitem__("_explorer_grid", args[0]) if args else None))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()
        for name in layers if layers is not None else attention_layers(model):
            modules[name].__dict__.pop("_explorer_input", None)
            if "." in name:
                modules[name.rpartition(".")[0]].__dict__.pop("_explorer_grid", None)


def record_attention(model: nn.Module, x: torch.Tensor, layers: list[str] | None = None) -> list[AttentionRecord]:
    """Every attention module's weights for one forward of ``x`` (no gradients)."""
    with torch.no_grad(), recording(model, layers) as records:
        model(x)
    return records


def record_attention_gradients(model: nn.Module, x: torch.Tensor, target: Target) -> list[AttentionRecord]:
    """Every attention module's weights and the gradient of ``target`` with respect to them."""
    target.validate(model)
    with torch.enable_grad(), recording(model, rebuild=True) as records:
        value = target_fn(model, target)(x.detach().requires_grad_(True))
        if not records:
            raise TargetError("no attention layer ran in the forward pass")
        grads = torch.autograd.grad(value.sum(), [r.weights for r in records], allow_unused=True)
    return [AttentionRecord(r.layer, r.weights.detach(), g if g is not None else torch.zeros_like(r.weights))
            for r, g in zip(records, grads)]


def layout_for(model: nn.Module, x: torch.Tensor, tokens: int) -> TokenLayout:
    layout = token_layout(model, tuple(x.shape[-2:]), tokens)
    if layout is None:
        raise TargetError(f"cannot lay {tokens} tokens out on a patch grid for a {tuple(x.shape[-2:])} input")
    return layout


def fuse_heads(attn: torch.Tensor, fusion: str = "mean") -> torch.Tensor:
    """(B, heads, T, T) → (B, T, T) by the mean, max or min over heads."""
    if fusion == "mean":
        return attn.mean(1)
    if fusion == "max":
        return attn.amax(1)
    if fusion == "min":
        return attn.amin(1)
    raise TargetError(f"head fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")


def rollout_matrix(fused: list[torch.Tensor], discard_ratio: float = 0.0) -> torch.Tensor:
    """R = Â_L ... Â_1 for head-fused attentions (B, T, T) in forward order; Â = (A + I)/2 renormalised,
    after the lowest ``discard_ratio`` of each A's weights (per input, never column 0) are set to 0."""
    if not 0.0 <= discard_ratio < 1.0:
        raise TargetError(f"discard ratio must be in [0, 1), not {discard_ratio}")
    b, t, _ = fused[0].shape
    eye = torch.eye(t, dtype=fused[0].dtype, device=fused[0].device)
    result = eye.expand(b, t, t).clone()
    for a in fused:
        a = a.clone()
        if discard_ratio > 0:
            flat = a.reshape(b, -1)
            n = int(flat.shape[1] * discard_ratio)
            if n:
                _, idx = flat.topk(n, dim=1, largest=False)
                drop = idx % t != 0  # the class token's column (every query's attention to it) stays
                flat.scatter_(1, idx, flat.gather(1, idx) * (~drop))
            a = flat.reshape(b, t, t)
        a = (a + eye) / 2
        a = a / a.sum(-1, keepdim=True)
        result = a @ result
    return result


@dataclass
class TokenMap:
    maps: torch.Tensor  # (B, k, rows, cols): per head (attention) or one map (rollout)
    layout: TokenLayout
    layer: str
    query: int


def query_attention(model: nn.Module, x: torch.Tensor, layer: str | None = None, query: int = 0) -> TokenMap:
    """Every head's attention from token ``query`` (0: the class token; prefix + r*cols + c: patch (r, c))
    to the patch tokens, at ``layer``'s attention module: (B, heads, rows, cols)."""
    name = attention_for_layer(model, layer)
    records = record_attention(model, x, [name])
    if not records:
        raise TargetError(f"attention layer {name} did not run in the forward pass")
    if records[-1].windows is not None:
        return _window_query(records[-1], name, query)
    attn = records[-1].weights
    layout = layout_for(model, x, attn.shape[-1])
    if not 0 <= query < attn.shape[-1]:
        raise TargetError(f"query token must be in 0..{attn.shape[-1] - 1}, not {query}")
    rows, cols = layout.grid
    row = attn[:, :, query, layout.prefix:]
    return TokenMap(row.reshape(row.shape[0], row.shape[1], rows, cols), layout, name, query)


def _window_query(record: AttentionRecord, name: str, query: int) -> TokenMap:
    """Every head's attention from grid position ``query`` (r * W + c) of a window attention layer to the
    grid (B, heads, H, W): zero outside the query's window."""
    geo = record.windows
    h, w = geo.size
    if not 0 <= query < h * w:
        raise TargetError(f"query position must be in 0..{h * w - 1} ({h}x{w} grid of {name}), not {query}")
    return TokenMap(window_query_map(record.weights, geo, *divmod(query, w)), TokenLayout((h, w), 0), name, query)


def attention_rollout(model: nn.Module, x: torch.Tensor, fusion: str = "mean", discard_ratio: float = 0.9,
                      target: Target | None = None) -> TokenMap:
    """Rollout of the class token's attention to the patch tokens (B, 1, rows, cols). With ``target``: the
    gradient-weighted, class-specific variant (heads fused as mean ReLU(A * dA))."""
    if not attention_layers(model) and window_attention_layers(model):
        raise TargetError("attention rollout needs one attention over the whole token sequence in every block; "
                          "Swin attends within windows and merges patches between stages (use attention of "
                          "one query, Grad-CAM or occlusion)")
    if target is None:
        records = record_attention(model, x)
        if not records:
            raise TargetError("no attention layer ran in the forward pass")
        fused = [fuse_heads(r.weights, fusion) for r in records]
    else:
        records = record_attention_gradients(model, x, target)
        fused = [(r.weights * r.grad).clamp_min(0).mean(1) for r in records]
    layout = layout_for(model, x, fused[0].shape[-1])
    r = rollout_matrix(fused, discard_ratio)
    rows, cols = layout.grid
    row = r[:, 0, layout.prefix:]
    return TokenMap(row.reshape(row.shape[0], 1, rows, cols), layout, "all attention layers", 0)
