"""Vision transformers seen as grids: the patch grid and prefix tokens of a (tokens, dim) output, inferred
from the model itself, and Swin-style (H, W, C) outputs turned into channel maps.

The grid comes from the model's patch embedding (its stride and the input size), never from a fixed 14x14:
a ViT-B/16 at 224 px has 14x14 patches, at 384 px 24x24. Tokens beyond the grid are prefix tokens (class,
distillation, register tokens), which sit before the patch tokens in every common implementation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MAX_PREFIX = 16  # more leftover tokens than this is not a patch sequence with a few prefix tokens


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens of a (tokens, dim) sequence sit: ``prefix`` tokens first, then ``grid``
    (rows, cols) patch tokens in row-major order."""

    grid: tuple[int, int]
    prefix: int

    @property
    def tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]


def patch_embedding(model: nn.Module) -> nn.Conv2d | None:
    """The model's patch embedding: the first Conv2d whose stride equals its kernel (and is above 1)."""
    for _name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if tuple(m.stride) == tuple(m.kernel_size) and max(m.stride) > 1:
                return m
            return None  # the first conv is not a patch embedding: a CNN (or a hybrid we do not grid)
    return None


def patch_grid(model: nn.Module, input_hw: tuple[int, int]) -> tuple[int, int] | None:
    """(rows, cols) of patches the model cuts an input of ``input_hw`` into, from its patch embedding."""
    conv = patch_embedding(model)
    if conv is None:
        return None
    pad = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
    return tuple((int(n) + 2 * int(p) - int(k)) // int(s) + 1
                 for n, p, k, s in zip(input_hw, pad, conv.kernel_size, conv.stride))


def token_layout(model: nn.Module, input_hw: tuple[int, int], tokens: int) -> TokenLayout | None:
    """The layout of a sequence of ``tokens`` tokens inside ``model`` for an input of ``input_hw``.

    The grid is the patch embedding's output grid; the prefix is what is left over (0 to 16 tokens).
    None when the count does not fit (e.g. a pooled sequence, or a model without patch embedding).
    """
    grid = patch_grid(model, input_hw)
    if grid is None:
        return None
    prefix = tokens - grid[0] * grid[1]
    if 0 <= prefix <= MAX_PREFIX:
        return TokenLayout(grid, prefix)
    return None


def is_channels_last(model: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether a 4-D output (N, H, W, C) is channels-last, as Swin's and ConvNeXt's blocks give.

    Told apart by shape: a square (H, W) in front of a different last size, in a model with LayerNorm
    (channels-first CNN outputs (N, C, H, W) have their square grid at the end).
    """
    if len(shape) != 4 or not (shape[1] == shape[2] and shape[3] != shape[2]):
        return False
    return any(isinstance(m, nn.LayerNorm) for m in model.modules())


@dataclass
class ChannelMaps:
    """An activation seen as channel maps: ``maps`` (C, H, W); ``prefix`` (P, C) the prefix tokens' values
    (None when there are none); ``layout`` for token outputs; ``kind`` 'tokens', 'channels-last' or ''."""

    maps: torch.Tensor
    prefix: torch.Tensor | None = None
    layout: TokenLayout | None = None
    kind: str = ""


def channel_maps(model: nn.Module, act: torch.Tensor, input_hw: tuple[int, int]) -> ChannelMaps | None:
    """A transformer activation of one input, with its batch dimension ((1, T, D) or (1, H, W, C)), as
    channel maps (C, rows, cols) over the patch grid. None when it is not a token or channels-last output."""
    if act.dim() == 3:
        layout = token_layout(model, input_hw, int(act.shape[1]))
        if layout is None:
            return None
        return ChannelMaps(*split_tokens(act[0], layout), layout, "tokens")
    if act.dim() == 4 and is_channels_last(model, tuple(act.shape)):
        return ChannelMaps(act[0].permute(2, 0, 1), None, None, "channels-last")
    return None


def units_first(model: nn.Module, act: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """A batched layer output with its units on dimension 1, as a unit (a channel) is everywhere else.

    A ViT's (N, T, D) tokens become (N, D, rows, cols): unit c is embedding channel c, its map is
    ``act[:, prefix:, c]`` over the patch grid (prefix tokens left out), never token c. A Swin-style
    (N, H, W, C) output becomes (N, C, H, W). Anything else (CNN maps, flat layers) is returned as it is.
    Differentiable (views and a reshape), so unit targets can be explained by gradients.
    """
    if act.dim() == 3:
        layout = token_layout(model, input_hw, int(act.shape[1]))
        if layout is None:
            return act
        rows, cols = layout.grid
        patches = act[:, layout.prefix:layout.prefix + rows * cols]
        return patches.transpose(1, 2).reshape(act.shape[0], act.shape[2], rows, cols)
    if act.dim() == 4 and is_channels_last(model, tuple(act.shape)):
        return act.permute(0, 3, 1, 2)
    return act


def unit_count(model: nn.Module, shape: tuple[int, ...], input_hw: tuple[int, int]) -> int | None:
    """How many units a layer output of ``shape`` (without the batch dimension) has: its channels
    (embedding dimension for tokens, the last size for channels-last outputs), else its first size."""
    if not shape:
        return None
    return int(units_first(model, torch.empty((1, *shape), device="meta"), input_hw).shape[1])


def split_tokens(tokens: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(T, D) tokens → (D, rows, cols) patch maps and (P, D) prefix tokens (None without prefix)."""
    rows, cols = layout.grid
    patches = tokens[layout.prefix:layout.prefix + rows * cols]
    maps = patches.transpose(0, 1).reshape(tokens.shape[1], rows, cols)
    return maps, (tokens[:layout.prefix] if layout.prefix else None)


def prefix_names(model: nn.Module, prefix: int) -> list[str]:
    """Names of the prefix tokens: class, then distillation (when the model has one), then registers."""
    has_class = not any(hasattr(m, "cls_token") and getattr(m, "cls_token") is None for m in model.modules())
    names = ["class"] if prefix and has_class else []
    if prefix > len(names) and any(hasattr(m, "dist_token") and getattr(m, "dist_token") is not None
                          for m in model.modules()):
        names.append("distillation")
    names += [f"register {i}" for i in range(prefix - len(names))]
    return names[:prefix]


def token_at(grid: tuple[int, int], prefix: int, size: tuple[int, int], row: float, col: float) -> int | None:
    """The token of the patch under pixel (row, col) of an input of ``size`` (H, W), or None outside."""
    h, w = size
    if not (0 <= row < h and 0 <= col < w):
        return None
    r, c = int(row * grid[0] / h), int(col * grid[1] / w)
    return prefix + r * grid[1] + c
