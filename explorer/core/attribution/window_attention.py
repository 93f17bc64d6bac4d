"""Swin's shifted-window attention (Liu et al. 2021), recomputed from each block's own input and weights.

torchvision's ``ShiftedWindowAttention`` computes its attention inside one functional call
(``shifted_window_attention``) and keeps nothing; here the same steps are taken with the module's own
weights, so the weights of every head in every window can be shown and the module's output rebuilt from
them (checked to 1e-5 against the module's own output):

1. pad the (B, H, W, C) input to whole windows, roll it by minus the shift (shifted blocks only; no shift
   where one window covers the map), cut it into windows of N = wh*ww positions;
2. per window and head, A = softmax(Q K^T / sqrt(d) + B + M): B the relative position bias (the module's
   table read through its index), M the shifted-window mask (-100 between positions that came from
   different regions of the rolled map, 0 within one), as torchvision builds them;
   Swin V2 (cosine attention): Q K^T is cosine similarity times the clamped, exponentiated logit scale;
3. output = proj(A V), windows put back, rolled back, the padding cut off.

A query position (r, c) of the layer's grid attends only to the positions of its own (shifted) window;
its map over the grid is zero elsewhere.

timm's Swin does the same in another order (roll, then pad) and hands the windows and the mask to its
``WindowAttention`` module: there the weights are recomputed from the windows the module receives, the
mask it is given and its own bias table, and the geometry comes from the block around it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def is_window_attention(module: nn.Module) -> bool:
    """torchvision's ``ShiftedWindowAttention`` (and V2): qkv and proj Linears applied functionally,
    window and shift sizes, a relative position bias."""
    return (isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "proj", None), nn.Linear)
            and hasattr(module, "window_size") and hasattr(module, "shift_size")
            and callable(getattr(module, "get_relative_position_bias", None)))


@dataclass(frozen=True)
class WindowGeometry:
    """How a (H, W) feature grid is cut into windows: padded to ``padded``, rolled by ``-shift``."""

    size: tuple[int, int]  # (H, W) of the layer's input and output
    padded: tuple[int, int]  # (H, W) after padding to whole windows
    window: tuple[int, int]  # (wh, ww)
    shift: tuple[int, int]  # the shift applied (0 where one window covers that side)
    roll_first: bool = False  # timm: rolled before padding (torchvision pads, then rolls)

    @property
    def windows(self) -> tuple[int, int]:
        return self.padded[0] // self.window[0], self.padded[1] // self.window[1]

    @property
    def area(self) -> int:
        return self.window[0] * self.window[1]


def window_geometry(module: nn.Module, x: torch.Tensor) -> WindowGeometry:
    """The windows of ``module`` for its input ``x`` (B, H, W, C), by torchvision's rules."""
    _b, h, w, _c = x.shape
    wh, ww = (int(s) for s in module.window_size)
    ph, pw = h + (wh - h % wh) % wh, w + (ww - w % ww) % ww
    sh, sw = (int(s) for s in module.shift_size)
    return WindowGeometry((h, w), (ph, pw), (wh, ww), (0 if wh >= ph else sh, 0 if ww >= pw else sw))


def _partition(x: torch.Tensor, geo: WindowGeometry) -> torch.Tensor:
    """(B, H, W, C) → (B * windows, N, C): padded, rolled by -shift, cut into windows (row-major)."""
    b, h, w, c = x.shape
    x = F.pad(x, (0, 0, 0, geo.padded[1] - w, 0, geo.padded[0] - h))
    if any(geo.shift):
        x = torch.roll(x, shifts=(-geo.shift[0], -geo.shift[1]), dims=(1, 2))
    (nh, nw), (wh, ww) = geo.windows, geo.window
    x = x.view(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * nh * nw, wh * ww, c)


def _merge(windows: torch.Tensor, geo: WindowGeometry, batch: int) -> torch.Tensor:
    """The inverse of :func:`_partition`: (B * windows, N, C) → (B, H, W, C)."""
    (nh, nw), (wh, ww) = geo.windows, geo.window
    c = windows.shape[-1]
    x = windows.view(batch, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(batch, *geo.padded, c)
    if any(geo.shift):
        x = torch.roll(x, shifts=geo.shift, dims=(1, 2))
    return x[:, :geo.size[0], :geo.size[1]]


def shift_mask(geo: WindowGeometry, device=None, dtype=torch.float32) -> torch.Tensor | None:
    """(windows, N, N): 0 between positions from the same region of the rolled map, -100 otherwise (the
    wrapped-around strips must not attend across the seam); None for unshifted windows."""
    if not any(geo.shift):
        return None
    (wh, ww), (sh, sw) = geo.window, geo.shift
    regions = torch.zeros(geo.padded, device=device, dtype=dtype)
    count = 0
    for hs in ((0, -wh), (-wh, -sh), (-sh, None)):
        for ws in ((0, -ww), (-ww, -sw), (-sw, None)):
            regions[hs[0]:hs[1], ws[0]:ws[1]] = count
            count += 1
    (nh, nw) = geo.windows
    regions = regions.view(nh, wh, nw, ww).permute(0, 2, 1, 3).reshape(nh * nw, wh * ww)
    diff = regions.unsqueeze(1) - regions.unsqueeze(2)
    return torch.where(diff != 0, torch.tensor(-100.0, device=device, dtype=dtype),
                       torch.tensor(0.0, device=device, dtype=dtype))


def _qkv(module: nn.Module, windows: torch.Tensor):
    """(B*nW, heads, N, d) queries, keys, values of the windows, with the module's own weights."""
    bias = module.qkv.bias
    logit_scale = getattr(module, "logit_scale", None)
    if logit_scale is not None and bias is not None:  # Swin V2: the keys have no bias
        length = bias.numel() // 3
        bias = torch.cat([bias[:length], torch.zeros_like(bias[length:2 * length]), bias[2 * length:]])
    n_win, n, c = windows.shape
    heads = int(module.num_heads)
    qkv = F.linear(windows, module.qkv.weight, bias).reshape(n_win, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2], logit_scale


def window_attention_weights(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, WindowGeometry]:
    """softmax(Q K^T / sqrt(d) + relative position bias + shift mask) of every window and head for the
    module's input ``x`` (B, H, W, C): (B, windows, heads, N, N), rows sum to 1, and the geometry."""
    geo = window_geometry(module, x)
    q, k, _v, logit_scale = _qkv(module, _partition(x, geo))
    if logit_scale is not None:  # cosine attention (Swin V2)
        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logits = logits * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        logits = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
    logits = logits + module.get_relative_position_bias()
    b, n_win = x.shape[0], geo.windows[0] * geo.windows[1]
    logits = logits.view(b, n_win, *logits.shape[1:])
    mask = shift_mask(geo, x.device, logits.dtype)
    if mask is not None:
        logits = logits + mask[None, :, None]
    return torch.softmax(logits, dim=-1), geo


def rebuild_window_output(module: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The module's output (B, H, W, C) rebuilt from its attention weights (B, windows, heads, N, N):
    A V per window, heads merged, the output projection, windows put back."""
    geo = window_geometry(module, x)
    _q, _k, v, _s = _qkv(module, _partition(x, geo))
    b = x.shape[0]
    mixed = weights.reshape(-1, *weights.shape[2:]) @ v  # (B*nW, heads, N, d)
    mixed = mixed.transpose(1, 2).reshape(v.shape[0], v.shape[2], -1)
    out = F.linear(mixed, module.proj.weight, module.proj.bias)
    return _merge(out, geo, b).contiguous()


def window_query_map(weights: torch.Tensor, geo: WindowGeometry, row: int, col: int) -> torch.Tensor:
    """Every head's attention from grid position (row, col) to the grid: (B, heads, H, W), zero outside
    the query's window (which, in a shifted block, may wrap around the map's edges)."""
    h, w = geo.size
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"position ({row}, {col}) is outside the {h}x{w} grid")
    (wh, ww), (sh, sw), (_nh, nw) = geo.window, geo.shift, geo.windows
    rolled = geo.size if geo.roll_first else geo.padded  # the map the roll acts on
    rr, rc = (row - sh) % rolled[0], (col - sw) % rolled[1]  # where it sits in the rolled map
    window = (rr // wh) * nw + rc // ww
    attn = weights[:, window, :, (rr % wh) * ww + rc % ww]  # (B, heads, N) over its window's positions
    b, heads = attn.shape[:2]
    canvas = attn.new_zeros(b, heads, *geo.padded)
    top, left = (rr // wh) * wh, (rc // ww) * ww
    canvas[:, :, top:top + wh, left:left + ww] = attn.view(b, heads, wh, ww)
    if geo.roll_first:
        canvas = canvas[:, :, :h, :w]
    if any(geo.shift):
        canvas = torch.roll(canvas, shifts=geo.shift, dims=(2, 3))
    return canvas[:, :, :h, :w]


def is_timm_window_attention(module: nn.Module) -> bool:
    """timm's Swin ``WindowAttention``: it receives windows (B*nW, N, C) and the mask from its block."""
    return (isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "proj", None), nn.Module)
            and hasattr(module, "window_size") and not hasattr(module, "shift_size")
            and callable(getattr(module, "_get_rel_pos_bias", None)))


def timm_window_geometry(block: nn.Module, x: torch.Tensor) -> WindowGeometry:
    """The windows of a timm Swin block for its input ``x`` (B, H, W, C): its own window and shift sizes."""
    _b, h, w, _c = x.shape
    wh, ww = (int(s) for s in block.window_size)
    sh, sw = (int(s) for s in block.shift_size)
    return WindowGeometry((h, w), (h + (wh - h % wh) % wh, w + (ww - w % ww) % ww), (wh, ww), (sh, sw), True)


def timm_window_weights(module: nn.Module, windows: torch.Tensor, mask: torch.Tensor | None,
                        batch: int) -> torch.Tensor:
    """softmax(Q K^T * scale + relative position bias + mask) of a timm ``WindowAttention`` for the windows
    (B*nW, N, C) it receives and the mask (nW, N, N) its block passes: (B, nW, heads, N, N)."""
    n_win, n, _c = windows.shape
    heads = int(module.num_heads)
    q, k, _v = module.qkv(windows).reshape(n_win, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    logits = (q * module.scale) @ k.transpose(-2, -1) + module._get_rel_pos_bias()
    logits = logits.view(batch, n_win // batch, heads, n, n)
    if mask is not None:
        logits = logits + mask[None, :, None]
    return torch.softmax(logits, dim=-1)


def timm_rebuild_windows(module: nn.Module, windows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The module's output (B*nW, N, C) rebuilt from its weights: A V, heads merged, the projection."""
    n_win, n, _c = windows.shape
    heads = int(module.num_heads)
    v = module.qkv(windows).reshape(n_win, n, 3, heads, -1).permute(2, 0, 3, 1, 4)[2]
    mixed = (weights.reshape(n_win, heads, n, n) @ v).transpose(1, 2).reshape(n_win, n, -1)
    out = module.proj(mixed)
    drop = getattr(module, "proj_drop", None)
    return drop(out) if drop is not None else out
