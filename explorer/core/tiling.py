"""Channels of an activation (or a filter bank) laid out as one tiled image, built with tensor ops.

The grid is computed where the activation lives (on the GPU when there is one) and handed to the view as
one array, so showing 2048 channels costs one upload.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GridLayout:
    """Where each unit's tile sits: unit ``u`` is at row ``u // cols``, column ``u % cols``."""

    count: int
    rows: int
    cols: int
    tile_h: int
    tile_w: int
    pad: int

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the whole grid image in pixels."""
        return (self.rows * (self.tile_h + self.pad) + self.pad, self.cols * (self.tile_w + self.pad) + self.pad)

    def tile_origin(self, unit: int) -> tuple[int, int]:
        """(top, left) pixel of ``unit``'s tile."""
        r, c = divmod(unit, self.cols)
        return (self.pad + r * (self.tile_h + self.pad), self.pad + c * (self.tile_w + self.pad))

    def unit_at(self, y: float, x: float) -> int | None:
        """The unit whose tile holds pixel (y, x), or None for padding / outside."""
        if y < 0 or x < 0:
            return None
        r, ry = divmod(int(y) - self.pad, self.tile_h + self.pad)
        c, rx = divmod(int(x) - self.pad, self.tile_w + self.pad)
        if not (0 <= r < self.rows and 0 <= c < self.cols) or ry >= self.tile_h or rx >= self.tile_w or ry < 0 or rx < 0:
            return None
        unit = r * self.cols + c
        return unit if unit < self.count else None


def grid_layout(count: int, tile_h: int, tile_w: int, pad: int = 1, aspect: float = 1.0) -> GridLayout:
    """Rows and columns for ``count`` tiles so the grid is about ``aspect`` (width / height)."""
    cols = max(1, math.ceil(math.sqrt(count * aspect * (tile_h + pad) / (tile_w + pad))))
    cols = min(cols, count) if count else 1
    rows = max(1, math.ceil(count / cols))
    return GridLayout(count, rows, cols, tile_h, tile_w, pad)


def fitted_layout(count: int, tile_h: int, tile_w: int, aspect: float, pad: int = 1) -> GridLayout:
    """The column count that shows ``count`` tiles largest in a box of ``aspect`` (width / height): the
    grid fills a tall narrow pane with few columns and a wide one with many (every count is tried)."""
    if count <= 0:
        return GridLayout(count, 1, 1, tile_h, tile_w, pad)
    best, best_scale = 1, -1.0
    for cols in range(1, count + 1):
        rows = math.ceil(count / cols)
        h, w = rows * (tile_h + pad) + pad, cols * (tile_w + pad) + pad
        scale = min(aspect / w, 1.0 / h)  # the pane's height is 1, its width ``aspect``
        if scale > best_scale * (1 + 1e-9):
            best, best_scale = cols, scale
    return GridLayout(count, math.ceil(count / best), best, tile_h, tile_w, pad)


def normalize(x: torch.Tensor, mode: str = "layer") -> torch.Tensor:
    """Scale (C, H, W) to [0, 1]: over the whole layer (``layer``), or each channel on its own (``channel``)."""
    x = x.float()
    if mode == "channel":
        flat = x.reshape(x.shape[0], -1)
        lo = flat.min(1).values.view(-1, *([1] * (x.dim() - 1)))
        hi = flat.max(1).values.view(-1, *([1] * (x.dim() - 1)))
    elif mode == "layer":
        lo, hi = x.min(), x.max()
    else:
        raise ValueError(f"normalisation must be 'layer' or 'channel', not {mode!r}")
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def tile(x: torch.Tensor, layout: GridLayout | None = None, pad_value: float = 0.0) -> tuple[torch.Tensor, GridLayout]:
    """Tile (C, H, W) or (C, 3, H, W) into one (H', W') or (H', W', 3) image, with ``pad`` pixels between tiles.

    Pure tensor reshapes, on ``x``'s device; values are not rescaled (see :func:`normalize`).
    """
    colour = x.dim() == 4
    count, th, tw = x.shape[0], x.shape[-2], x.shape[-1]
    layout = layout or grid_layout(count, th, tw)
    p = layout.pad
    cells = layout.rows * layout.cols
    if colour:
        x = x.permute(0, 2, 3, 1)  # (C, H, W, 3)
    extra = (cells - count, *x.shape[1:])
    x = torch.cat([x, x.new_full(extra, pad_value)]) if cells > count else x
    # pad each tile on its bottom/right, then one more row/column on the grid's top/left
    pad_spec = (0, 0, 0, p, 0, p) if colour else (0, p, 0, p)
    x = torch.nn.functional.pad(x, pad_spec, value=pad_value)
    th_p, tw_p = th + p, tw + p
    x = x.reshape(layout.rows, layout.cols, th_p, tw_p, *x.shape[3:])
    x = x.transpose(1, 2).reshape(layout.rows * th_p, layout.cols * tw_p, *x.shape[4:])
    top = x.new_full((p, *x.shape[1:]), pad_value)
    x = torch.cat([top, x], 0)
    left = x.new_full((x.shape[0], p, *x.shape[2:]), pad_value)
    return torch.cat([left, x], 1), layout


def activation_grid(act: torch.Tensor, norm: str = "layer", pad: int = 1,
                    aspect: float | None = None) -> tuple[torch.Tensor, GridLayout]:
    """One captured activation (1, C, H, W) or (C, H, W) → (grid in [0, 1] as float32, layout).

    1-D activations (fully connected layers) are laid out as 1x1 tiles; use bars for those in the GUI.
    ``aspect`` (width / height of the pane that shows the grid): columns that fill it (:func:`fitted_layout`);
    None: a square grid.
    """
    if act.dim() == 4:
        act = act[0]
    if act.dim() == 2 and act.shape[0] == 1:
        act = act[0]
    if act.dim() == 1:
        act = act.view(-1, 1, 1)
    if act.dim() != 3:
        act = act.reshape(act.shape[0], 1, -1)
    scaled = normalize(act, norm)
    layout = (grid_layout(act.shape[0], act.shape[1], act.shape[2], pad=pad) if aspect is None else
              fitted_layout(act.shape[0], act.shape[1], act.shape[2], aspect, pad=pad))
    return tile(scaled, layout, pad_value=0.0)


def filter_scales(weight: torch.Tensor) -> torch.Tensor:
    """Each filter's max |w| (C_out,): what :func:`filter_grid` divides it by (its tile's full colour)."""
    return weight.detach().float().reshape(weight.shape[0], -1).abs().max(1).values.clamp_min(1e-12)


def filter_grid(weight: torch.Tensor, pad: int = 1, aspect: float | None = None) -> tuple[torch.Tensor, GridLayout]:
    """First-layer filters (C_out, 3, kh, kw) as colour tiles (H', W', 3) in [0, 1], each filter scaled
    symmetrically about zero so that grey means 0 (``aspect``: as in :func:`activation_grid`)."""
    w = weight.detach().float()
    w = 0.5 + 0.5 * w / filter_scales(w).view(-1, 1, 1, 1)
    layout = (grid_layout(w.shape[0], w.shape[2], w.shape[3], pad=pad) if aspect is None else
              fitted_layout(w.shape[0], w.shape[2], w.shape[3], aspect, pad=pad))
    return tile(w, layout, pad_value=1.0)


def kernel_grid(weight: torch.Tensor, unit: int, pad: int = 1,
                aspect: float | None = None) -> tuple[torch.Tensor, GridLayout]:
    """One unit's kernel per input channel, (C_in, kh, kw) → grey grid in [0, 1] (0.5 is zero weight)."""
    w = weight.detach().float()[unit]
    w = 0.5 + 0.5 * w / w.abs().max().clamp_min(1e-12)
    layout = (grid_layout(w.shape[0], w.shape[1], w.shape[2], pad=pad) if aspect is None else
              fitted_layout(w.shape[0], w.shape[1], w.shape[2], aspect, pad=pad))
    return tile(w, layout, pad_value=1.0)
