"""What the exploring views show, computed in one place for the GUI and the command line.

Every function returns plain numpy arrays ready to draw (C-contiguous, float32 in [0, 1] or uint8), so
the widgets only display.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from explorer.core.models.spec import LoadedModel
from explorer.core.probe import get_layer, run_forward, top_k
from explorer.core.tiling import GridLayout, activation_grid, filter_grid, filter_scales, kernel_grid
from explorer.core.transformers import TokenLayout, channel_maps, prefix_names


@dataclass
class LayerView:
    """One forward pass seen at one layer."""

    layer: str
    activation: np.ndarray  # (C, H, W) float32, or (C,) for fully connected layers
    grid: np.ndarray  # (H', W') float32 in [0, 1]: every channel tiled
    layout: GridLayout
    top5: list[dict] = field(default_factory=list)
    value_range: tuple[float, float] = (0.0, 1.0)  # the raw min/max the grid was scaled from
    # transformer outputs: how the (tokens, dim) sequence was laid out, and the prefix tokens' values
    tokens: TokenLayout | None = None
    prefix: np.ndarray | None = None  # (P, C) float32: class / distillation / register tokens
    prefix_names: list[str] = field(default_factory=list)
    kind: str = ""  # 'tokens', 'channels-last' or '' (as captured)

    @property
    def is_vector(self) -> bool:
        return self.activation.ndim == 1

    @property
    def units(self) -> int:
        return int(self.activation.shape[0])

    def unit_map(self, unit: int) -> np.ndarray:
        """The unit's raw activation map (H, W) float32 (a 1x1 map for vector layers)."""
        if self.is_vector:
            return self.activation[unit:unit + 1].reshape(1, 1).copy()
        return np.ascontiguousarray(self.activation[unit])


def compute_layer_view(loaded: LoadedModel, x: torch.Tensor, layer: str | None, norm: str = "layer",
                       k: int = 5, aspect: float | None = None) -> LayerView | None:
    """Forward ``x`` (1, C, H, W) with a hook on ``layer`` only; the top-k and the tiled grid (its columns
    chosen to fill a pane of ``aspect`` = width / height when given, else square).

    Returns None when ``layer`` is None. The grid is tiled on the model's device, then copied once.
    """
    result = run_forward(loaded.module, x.to(loaded.device), [layer] if layer else [])
    top = top_k(result.logits, loaded.spec.labels, k) if result.logits is not None else []
    if not layer or layer not in result.activations:
        return LayerView(layer or "", np.zeros((0,), np.float32), np.zeros((1, 1), np.float32),
                         GridLayout(0, 1, 1, 1, 1, 0), top) if top else None
    raw = result.activations[layer].float()
    maps = channel_maps(loaded.module, raw, tuple(x.shape[-2:]))
    if maps is not None:
        act = maps.maps
        grid, layout = activation_grid(act, norm, aspect=aspect)
        prefix = np.ascontiguousarray(maps.prefix.cpu().numpy()) if maps.prefix is not None else None
        names = prefix_names(loaded.module, maps.layout.prefix) if maps.layout is not None else []
        return LayerView(layer, np.ascontiguousarray(act.cpu().numpy()), np.ascontiguousarray(grid.cpu().numpy()),
                         layout, top, (float(act.min()), float(act.max())), maps.layout, prefix, names, maps.kind)
    act = raw[0]
    if act.dim() == 2 and act.shape[0] == 1:
        act = act[0]
    if act.dim() > 3:
        act = act.reshape(act.shape[0], act.shape[1], -1)
    grid, layout = activation_grid(act, norm, aspect=aspect)
    return LayerView(layer, np.ascontiguousarray(act.cpu().numpy()), np.ascontiguousarray(grid.cpu().numpy()),
                     layout, top, (float(act.min()), float(act.max())))


def upsample_map(unit_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A unit's activation map scaled to the input size (bilinear) and to [0, 1], for overlays."""
    t = torch.from_numpy(np.ascontiguousarray(unit_map, dtype=np.float32))[None, None]
    t = nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0]
    lo, hi = t.min(), t.max()
    return np.ascontiguousarray(((t - lo) / (hi - lo).clamp_min(1e-12)).numpy())


def weight_layers(model: nn.Module) -> list[str]:
    """Names of conv layers, in the order they appear."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]


def conv_for_layer(model: nn.Module, layer: str | None) -> str | None:
    """The selected layer if it is a conv, else the last conv before it in module order (None if none)."""
    names = [n for n, _ in model.named_modules() if n]
    convs = set(weight_layers(model))
    if layer in convs:
        return layer
    if layer not in names:
        return None
    before = names[:names.index(layer)]
    for name in reversed(before):
        if name in convs:
            return name
    return None


@dataclass
class FilterView:
    first_layer: str | None
    first_grid: np.ndarray | None  # (H, W, 3) float32 in [0, 1], colour tiles of the first conv's filters
    kernel_layer: str | None
    kernel_unit: int | None
    kernel_grid: np.ndarray | None  # (H, W) float32 in [0, 1], the unit's kernel per input channel
    kernel_layout: GridLayout | None
    first_shape: tuple[int, int, int, int] | None = None  # the first conv's weight (C_out, C_in, kh, kw)
    first_scales: tuple[float, float] | None = None  # smallest and largest per-filter max |w| (full colour)


def compute_filter_view(model: nn.Module, layer: str | None, unit: int, aspect: float | None = None,
                        kernel_aspect: float | None = None) -> FilterView:
    """First-layer filters as colour tiles; the selected conv unit's kernel as a grey grid per input channel
    (each grid's columns chosen to fill a pane of that width / height when given)."""
    convs = weight_layers(model)
    first, first_grid, first_shape, first_scales = None, None, None, None
    if convs:
        w = get_layer(model, convs[0]).weight.detach()
        if w.dim() == 4 and w.shape[1] in (1, 3):
            first = convs[0]
            first_shape = tuple(int(d) for d in w.shape)
            scales = filter_scales(w)
            first_scales = (float(scales.min()), float(scales.max()))
            if w.shape[1] == 1:
                w = w.expand(-1, 3, -1, -1)
            first_grid = np.ascontiguousarray(filter_grid(w, aspect=aspect)[0].cpu().numpy())
    conv = conv_for_layer(model, layer)
    kgrid, klayout, kunit = None, None, None
    if conv is not None:
        w = get_layer(model, conv).weight.detach()
        if w.dim() == 4:
            kunit = min(max(unit, 0), w.shape[0] - 1)
            grid, klayout = kernel_grid(w, kunit, aspect=kernel_aspect)
            kgrid = np.ascontiguousarray(grid.cpu().numpy())
    return FilterView(first, first_grid, conv, kunit, kgrid, klayout, first_shape, first_scales)
