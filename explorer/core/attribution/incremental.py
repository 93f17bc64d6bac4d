"""Exact incremental inference for occlusion, after Krypton (Nakandala, Kumar & Papakonstantinou,
"Incremental and Approximate Inference for Faster Occlusion-based Deep CNN Explanations", SIGMOD 2019).

An occluded image differs from the clean one only inside the window, so every layer's output differs from
the clean image's output only inside that window's projection through the layers so far. We run the clean
image once and keep every layer's output; for a batch of occluded images each layer then computes only the
changed region of each image (a patch), reading the unchanged border it needs from the clean activations.

Regions are tracked per axis as ``[origin, origin + size)``. For a layer with kernel k, stride s, padding
p and dilation d, changed input rows ``[a, b)`` change output rows

    ceil((a + p - d(k-1)) / s) .. floor((b - 1 + p) / s)        (clipped to the output),

and computing those output rows needs the padded input rows ``o*s .. o*s + (m-1)*s + d(k-1)``. All images
of a batch carry patches of one size (the largest), shifted inward at the borders: a patch may hold a few
unchanged values, never miss a changed one, so the result is exact.

The graph comes from ``torch.fx``; convolutions, max/avg pooling, batch norm, ReLU and other elementwise
layers, dropout, residual additions and channel concatenation run incrementally. Once a patch covers most of
its map, or at the first operation that mixes all positions (global pooling, flatten, linear, anything
unknown), the patch is pasted into the clean map and the rest runs normally, in batch.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from explorer.core.attribution.target import Target

# Share of a map above which recomputing a patch costs about as much as recomputing the map.
FULL_MAP_SHARE = 0.55

_ELEMENTWISE_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                        nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Dropout, nn.Dropout2d, nn.Identity)
_ELEMENTWISE_FUNCS = {F.relu, torch.relu, torch.sigmoid, torch.tanh, F.relu6, F.silu, F.gelu, F.hardswish,
                      F.dropout}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh"}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}


class IncrementalUnsupported(Exception):
    """The model cannot be traced or its target cannot be located in the graph."""


@dataclass
class Patch:
    """The changed region of one activation for each image of a batch.

    ``clean`` (1, C, H, W) is the clean image's activation; ``values`` (B, C, h, w) the recomputed
    region of each image, whose top-left corner in the map is ``(oy[i], ox[i])``.
    """

    clean: torch.Tensor
    values: torch.Tensor
    oy: list[int]
    ox: list[int]
    bn_folded: bool = False  # values already went through the batch norm that follows (see _fold_batch_norms)

    @property
    def batch(self) -> int:
        return self.values.shape[0]

    def share(self) -> float:
        return self.values.shape[-2] * self.values.shape[-1] / (self.clean.shape[-2] * self.clean.shape[-1])


@dataclass
class Full:
    """An activation computed in full for every image of a batch (B, ...)."""

    value: torch.Tensor


def _paste(out: torch.Tensor, ry: list[int], rx: list[int], patch: Patch, shift: tuple[int, int] = (0, 0)) -> None:
    """Write each image's patch into ``out`` (B, C, h, w), whose region starts at (ry[i], rx[i]) in map
    coordinates offset by ``shift`` (the padding). Only the overlap is written."""
    h, w = out.shape[-2:]
    ph, pw = patch.values.shape[-2:]
    for i in range(out.shape[0]):
        vy, vx = patch.oy[i] + shift[0], patch.ox[i] + shift[1]
        y0, y1 = max(ry[i], vy), min(ry[i] + h, vy + ph)
        x0, x1 = max(rx[i], vx), min(rx[i] + w, vx + pw)
        if y1 > y0 and x1 > x0:
            out[i, :, y0 - ry[i]:y1 - ry[i], x0 - rx[i]:x1 - rx[i]] = \
                patch.values[i, :, y0 - vy:y1 - vy, x0 - vx:x1 - vx]


def _gather(source: torch.Tensor, ry: list[int], rx: list[int], h: int, w: int) -> torch.Tensor:
    """Regions (B, C, h, w) of one map (1, C, H, W) at per-image corners."""
    # (copying each strided view into place is several times faster than torch.stack of the views)
    out = source.new_empty((len(ry), source.shape[1], h, w))
    for i, (y, x) in enumerate(zip(ry, rx)):
        out[i].copy_(source[0, :, y:y + h, x:x + w])
    return out


def materialize(value) -> torch.Tensor:
    if isinstance(value, Full):
        return value.value
    if isinstance(value, Patch):
        out = value.clean.expand(value.batch, *value.clean.shape[1:]).clone()
        _paste(out, [0] * value.batch, [0] * value.batch, value)
        return out
    return value


def _out_range(a: int, n: int, k: int, s: int, p: int, d: int, size_out: int) -> tuple[int, int]:
    """Output indices [lo, hi] changed by input indices [a, a + n) (clipped)."""
    lo = max(0, math.ceil((a + p - d * (k - 1)) / s))
    hi = min(size_out - 1, (a + n - 1 + p) // s)
    return lo, hi


def _windowed(patch: Patch, clean_out: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int], padded_clean: torch.Tensor, op) -> Patch | Full:
    """Run a sliding-window operation (convolution or pooling, with ``padding`` already applied to
    ``padded_clean``) on the changed region only."""
    hin, win = patch.values.shape[-2:]
    hout, wout = clean_out.shape[-2:]
    origins, sizes = [], []
    for axis, (org, n, size_out) in enumerate(((patch.oy, hin, hout), (patch.ox, win, wout))):
        ranges = [_out_range(a, n, kernel[axis], stride[axis], padding[axis], dilation[axis], size_out) for a in org]
        # (a strided 1x1 layer can skip a thin patch entirely: keep at least one row)
        m = max(1, max(hi - lo + 1 for lo, hi in ranges))
        origins.append([min(lo, size_out - m) for lo, _ in ranges])
        sizes.append(m)
    if sizes[0] * sizes[1] >= FULL_MAP_SHARE * hout * wout:
        return None  # the caller runs the layer in full
    need = [(sizes[a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 for a in range(2)]
    ry = [o * stride[0] for o in origins[0]]
    rx = [o * stride[1] for o in origins[1]]
    region = _gather(padded_clean, ry, rx, need[0], need[1])
    _paste(region, ry, rx, patch, shift=padding)
    return Patch(clean_out, op(region), origins[0], origins[1])


def _union(patches: list[Patch]) -> tuple[list[int], list[int], int, int]:
    """Per-image corners and common size of a region holding every patch's region."""
    hmap, wmap = patches[0].clean.shape[-2:]
    out = []
    for axis, size_map in ((0, hmap), (1, wmap)):
        lo = [min((p.oy if axis == 0 else p.ox)[i] for p in patches) for i in range(patches[0].batch)]
        hi = [max((p.oy if axis == 0 else p.ox)[i] + p.values.shape[-2 + axis] for p in patches)
              for i in range(patches[0].batch)]
        m = max(h - l for l, h in zip(lo, hi))
        out.append(([min(l, size_map - m) for l in lo], m))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def _expand(patch: Patch, ry: list[int], rx: list[int], h: int, w: int) -> torch.Tensor:
    if patch.values.shape[-2:] == (h, w) and patch.oy == ry and patch.ox == rx:
        return patch.values
    region = _gather(patch.clean, ry, rx, h, w)
    _paste(region, ry, rx, patch)
    return region


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class IncrementalModel:
    """A traced model with the clean input's activations, ready to score batches of occluded inputs.

    Parameters
    ----------
    model : network in eval mode.
    x : the clean input (1, C, H, W).
    target : class score, or a unit of a leaf layer (a module that appears in the traced graph).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, target: Target):
        if any(m.training for m in model.modules()):
            raise IncrementalUnsupported("the model is in training mode")
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as exc:  # noqa: BLE001 - any tracing failure means: use the plain path
            raise IncrementalUnsupported(f"cannot trace the model ({type(exc).__name__})") from None
        self.target = target
        self.model, self.input_hw = model, tuple(x.shape[-2:])  # unit targets on token layers
        self.modules = dict(self.gm.named_modules())
        nodes = list(self.gm.graph.nodes)
        if target.is_unit:
            hits = [n for n in nodes if n.op == "call_module" and n.target == target.layer]
            if not hits:
                raise IncrementalUnsupported(f"layer {target.layer} is not a leaf of the traced graph")
            self.stop = hits[-1]
        else:
            self.stop = next(n for n in nodes if n.op == "output")
        self.nodes = nodes[:nodes.index(self.stop) + 1]
        self.clean: dict[fx.Node, object] = {}
        self._padded: dict[tuple, torch.Tensor] = {}
        # multiply-accumulates of conv and linear layers: what we computed, and what full passes would
        self.macs_done = 0
        self.macs_full = 0
        with torch.no_grad():
            self._run_clean(x)
            self._fold_batch_norms()

    def _run_clean(self, x: torch.Tensor) -> None:
        interp = fx.Interpreter(self.gm)
        env: dict[fx.Node, object] = {}
        for node in self.nodes:
            if node.op == "placeholder":
                value = x
            else:
                args = fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
                value = getattr(interp, node.op)(node.target, args, kwargs)
            # in-place layers later overwrite this tensor; keep the value as it was produced
            env[node] = value.clone() if isinstance(value, torch.Tensor) else value
        self.clean = env
        out = env[self.stop]
        out = out[0] if isinstance(out, (tuple, list)) else out
        self.clean_score = float(self._score(out)[0])

    def _fold_batch_norms(self) -> None:
        """Fold each eval-mode BatchNorm2d into the convolution before it (conv's only consumer): patches
        then skip one pass over memory per layer. BN(conv(x)) = conv'(x) with w' = w * g / sqrt(v + eps),
        b' = (b - mu) * g / sqrt(v + eps) + beta; equal up to float rounding."""
        self.folded: dict[fx.Node, tuple[fx.Node, torch.Tensor, torch.Tensor]] = {}
        for node in self.nodes:
            if node.op != "call_module" or not isinstance(self.modules[node.target], nn.Conv2d):
                continue
            users = list(node.users)
            if len(users) != 1 or users[0].op != "call_module" or users[0] not in self.clean:
                continue
            bn = self.modules[users[0].target]
            if not isinstance(bn, nn.BatchNorm2d) or bn.training or bn.running_mean is None:
                continue
            conv = self.modules[node.target]
            scale = bn.running_var.add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            bias = (bias - bn.running_mean) * scale + (bn.bias if bn.bias is not None else 0)
            self.folded[node] = (users[0], conv.weight * scale.view(-1, 1, 1, 1), bias)

    def _score(self, out: torch.Tensor) -> torch.Tensor:
        if self.target.is_unit:
            return self.target.from_activation(out, self.model, self.input_hw)
        return self.target.from_output(out)

    def _pad(self, node: fx.Node, pad: tuple[int, int], value: float) -> torch.Tensor:
        key = (node, pad, value)
        if key not in self._padded:
            c = self.clean[node]
            self._padded[key] = F.pad(c, (pad[1], pad[1], pad[0], pad[0]), value=value) if any(pad) else c
        return self._padded[key]

    @torch.no_grad()
    def scores(self, values: torch.Tensor, oy: list[int], ox: list[int]) -> torch.Tensor:
        """Target scores (B,) of the inputs that equal the clean input except in regions
        ``values`` (B, C, h, w) with corners (oy[i], ox[i])."""
        env: dict[fx.Node, object] = {}
        for node in self.nodes:
            if node.op == "placeholder":
                env[node] = Patch(self.clean[node], values, list(oy), list(ox))
                continue
            if node.op == "get_attr":
                env[node] = self.clean[node]
                continue
            if node.op == "output":
                env[node] = node.args[0] if not isinstance(node.args[0], fx.Node) else env[node.args[0]]
                continue
            env[node] = self._step(node, env)
            self._count_macs(node, env[node], values.shape[0])
        out = materialize(env[self.stop])
        out = out[0] if isinstance(out, (tuple, list)) else out
        return self._score(out)

    def _count_macs(self, node: fx.Node, value, batch: int) -> None:
        if node.op != "call_module":
            return
        mod = self.modules[node.target]
        if isinstance(mod, nn.Conv2d):
            per_output = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            per_output = mod.in_features
        else:
            return
        self.macs_full += batch * self.clean[node].numel() * per_output
        done = value.values.numel() if isinstance(value, Patch) else batch * self.clean[node].numel()
        self.macs_done += done * per_output

    @property
    def saving(self) -> float:
        """Full passes' conv and linear work over the work done incrementally so far (1 = no saving)."""
        return self.macs_full / self.macs_done if self.macs_done else 1.0

    def _step(self, node: fx.Node, env: dict) -> object:
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if any(isinstance(a, Patch) for a in _flat(args)):
            result = self._incremental(node, args, kwargs)
            if result is not None:
                return result
        # anything else: full computation on pasted maps
        unpack = lambda a: materialize(a) if isinstance(a, (Patch, Full)) else a  # noqa: E731
        fargs = fx.node.map_aggregate(args, unpack)
        fkwargs = fx.node.map_aggregate(kwargs, unpack)
        if node.op == "call_module":
            value = self.modules[node.target](*fargs, **fkwargs)
        elif node.op == "call_function":
            value = node.target(*fargs, **fkwargs)
        else:
            value = getattr(fargs[0], node.target)(*fargs[1:], **fkwargs)
        batched = any(isinstance(a, (Patch, Full)) for a in _flat(args) + _flat(kwargs))
        return Full(value) if batched and isinstance(value, torch.Tensor) else value

    def _incremental(self, node: fx.Node, args: tuple, kwargs: dict) -> Patch | None:
        patch = args[0]
        clean_out = self.clean[node]
        if node.op == "call_function" and node.target is torch.cat:
            return self._cat(clean_out, args, kwargs)
        if not isinstance(patch, Patch):
            return None
        if node.op == "call_module":
            mod = self.modules[node.target]
            if patch.bn_folded and isinstance(mod, nn.BatchNorm2d):
                return Patch(clean_out, patch.values, patch.oy, patch.ox)
            if isinstance(mod, _ELEMENTWISE_MODULES) and len(args) == 1:
                return Patch(clean_out, mod(patch.values), patch.oy, patch.ox)
            if isinstance(mod, nn.Conv2d) and mod.padding_mode == "zeros" and not isinstance(mod.padding, str):
                pad = _pair(mod.padding)
                bn_node, weight, bias = self.folded.get(node, (None, mod.weight, mod.bias))
                out = self._window_or_none(node, patch, clean_out, _pair(mod.kernel_size), _pair(mod.stride), pad,
                                           _pair(mod.dilation), 0.0,
                                           lambda r: F.conv2d(r, weight, bias, mod.stride, 0, mod.dilation,
                                                              mod.groups))
                if out is not None and bn_node is not None:
                    out = Patch(self.clean[bn_node], out.values, out.oy, out.ox, bn_folded=True)
                return out
            if isinstance(mod, nn.MaxPool2d) and not mod.ceil_mode and not mod.return_indices:
                pad = _pair(mod.padding)
                return self._window_or_none(node, patch, clean_out, _pair(mod.kernel_size),
                                            _pair(mod.stride or mod.kernel_size), pad, _pair(mod.dilation),
                                            -math.inf,
                                            lambda r: F.max_pool2d(r, mod.kernel_size, mod.stride, 0, mod.dilation))
            if (isinstance(mod, nn.AvgPool2d) and not mod.ceil_mode and mod.divisor_override is None
                    and (mod.count_include_pad or _pair(mod.padding) == (0, 0))):
                pad = _pair(mod.padding)
                return self._window_or_none(node, patch, clean_out, _pair(mod.kernel_size),
                                            _pair(mod.stride or mod.kernel_size), pad, (1, 1), 0.0,
                                            lambda r: F.avg_pool2d(r, mod.kernel_size, mod.stride, 0))
            if isinstance(mod, nn.AdaptiveAvgPool2d) and tuple(clean_out.shape) == tuple(patch.clean.shape):
                return Patch(clean_out, patch.values, patch.oy, patch.ox)
            return None
        if node.op == "call_function":
            if node.target in _ELEMENTWISE_FUNCS and len(args) == 1:
                return Patch(clean_out, node.target(patch.values, **kwargs), patch.oy, patch.ox)
            if node.target in _ADD_FUNCS and len(args) == 2 and not kwargs:
                return self._add(clean_out, args[0], args[1])
            return None
        if node.op == "call_method" and node.target in _ELEMENTWISE_METHODS and len(args) == 1 and not kwargs:
            return Patch(clean_out, getattr(patch.values, node.target)(), patch.oy, patch.ox)
        return None

    def _window_or_none(self, node, patch, clean_out, kernel, stride, pad, dilation, pad_value, op):
        if clean_out.dim() != 4:
            return None
        padded = self._pad(node.args[0], pad, pad_value)
        return _windowed(patch, clean_out, kernel, stride, pad, dilation, padded, op)

    def _add(self, clean_out: torch.Tensor, a, b) -> Patch | None:
        if isinstance(b, (int, float)):
            return Patch(clean_out, a.values + b, a.oy, a.ox)
        if not isinstance(b, Patch) or b.clean.shape != a.clean.shape:
            return None
        ry, rx, h, w = _union([a, b])
        if h * w >= FULL_MAP_SHARE * clean_out.shape[-2] * clean_out.shape[-1]:
            return None
        return Patch(clean_out, _expand(a, ry, rx, h, w) + _expand(b, ry, rx, h, w), ry, rx)

    def _cat(self, clean_out: torch.Tensor, args: tuple, kwargs: dict) -> Patch | None:
        parts = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if dim not in (1, -3) or not all(isinstance(p, Patch) for p in parts):
            return None
        ry, rx, h, w = _union(list(parts))
        if h * w >= FULL_MAP_SHARE * clean_out.shape[-2] * clean_out.shape[-1]:
            return None
        return Patch(clean_out, torch.cat([_expand(p, ry, rx, h, w) for p in parts], 1), ry, rx)


def _flat(value) -> list:
    out: list = []
    fx.node.map_aggregate(value, lambda v: out.append(v))
    return out
