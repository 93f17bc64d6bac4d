"""Batch norms folded into the convolutions before them: the same outputs from fewer operations.

An eval-mode ``BatchNorm2d`` right after a ``Conv2d`` is an affine map per channel, so the convolution's
weights and bias can absorb it (``w' = w·γ/σ``, ``b' = (b − μ)·γ/σ + β``, ``σ = sqrt(var + eps)``).
:func:`foldable_pairs` finds the pairs for which this changes nothing that is looked at (from the autograd
graph of one probe pass) and :func:`folded_model` makes the folded copy. The optimisation loops
(:mod:`explorer.core.optimize.truncate`) and the live view (:mod:`explorer.core.live`) run such copies.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from explorer.core.probe import first_tensor


def _consumers(root: torch.Tensor) -> dict:
    """For every autograd node reachable from ``root``'s, how many edges of the graph lead into it."""
    counts: dict = {}
    seen, stack = set(), [root.grad_fn] if root.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is not None:
                counts[nxt] = counts.get(nxt, 0) + 1
                stack.append(nxt)
    return counts


def foldable_pairs(model: nn.Module, layer: nn.Module | None, x: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, batch norm) module names whose pair can be folded into one convolution for this input:
    an eval-mode BatchNorm2d with running statistics whose input is exactly the output of a Conv2d,
    each called once per pass, and that output used by nothing else on the way to ``layer``'s output
    (found from the autograd graph of one probe pass), nor being that output itself. Modules with hooks
    or parametrisations are left alone."""
    from torch.nn.utils import parametrize  # noqa: PLC0415

    names = {m: n for n, m in model.named_modules()}
    calls: dict[nn.Module, list] = {}
    handles = []

    def plain(m: nn.Module) -> bool:
        return not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                    or getattr(m, "_backward_pre_hooks", None) or parametrize.is_parametrized(m))

    for m in model.modules():
        if isinstance(m, nn.Conv2d) and plain(m):
            handles.append(m.register_forward_hook(
                lambda mod, i, o: calls.setdefault(mod, []).append(o.grad_fn if isinstance(o, torch.Tensor)
                                                                     else None)))
        elif (isinstance(m, nn.BatchNorm2d) and not m.training and m.running_mean is not None
              and m.running_var is not None and plain(m)):
            handles.append(m.register_forward_hook(
                lambda mod, i, o: calls.setdefault(mod, []).append(
                    (i[0].grad_fn if isinstance(i[0], torch.Tensor) else None,
                     o.grad_fn if isinstance(o, torch.Tensor) else None))))
    out: list[torch.Tensor] = []
    if layer is not None:
        handles.append(layer.register_forward_hook(lambda mod, i, o: out.append(first_tensor(o))))
    try:
        with torch.enable_grad():
            full = model(x[:1].detach().clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    root = out[-1] if out else (full if isinstance(full, torch.Tensor) else first_tensor(full))
    counts = _consumers(root)
    convs = {c[0]: m for m, c in calls.items() if isinstance(m, nn.Conv2d) and len(c) == 1 and c[0] is not None}
    pairs = []
    for m, c in calls.items():
        if not isinstance(m, nn.BatchNorm2d) or len(c) != 1:
            continue
        bn_in, bn_out = c[0]
        conv = convs.get(bn_in)
        if (conv is None or bn_out is None or conv.out_channels != m.num_features or bn_in is root.grad_fn
                or counts.get(bn_in, 0) != 1 or bn_out not in counts and bn_out is not root.grad_fn):
            continue
        pairs.append((names[conv], names[m]))
    return pairs


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        bias = (bias - bn.running_mean.double()) * scale
        if bn.bias is not None:
            bias = bias + bn.bias.double()
        weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    return weight.to(conv.weight.dtype), bias.to(conv.weight.dtype)


def folded_model(model: nn.Module, pairs: list[tuple[str, str]], channels_last: bool = False) -> nn.Module:
    """A copy of ``model`` with each (conv, batch norm) pair folded: the convolution's weights and bias
    absorb the normalisation, the batch norm becomes ``nn.Identity`` (so every module keeps its name).
    The copy shares every other parameter and buffer with ``model`` (nothing else is duplicated);
    ``channels_last`` stores the folded weights in that layout (for channels-last inputs)."""
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    copy_ = copy.deepcopy(model, memo)
    for conv_name, bn_name in pairs:
        conv, bn = copy_.get_submodule(conv_name), copy_.get_submodule(bn_name)
        weight, bias = _fold(conv, bn)
        if channels_last and weight.dim() == 4:  # mkldnn's layout for channels-last inputs: no reorders
            weight = weight.contiguous(memory_format=torch.channels_last)
        conv.weight = nn.Parameter(weight, requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)
        parent_name, _, child = bn_name.rpartition(".")
        parent = copy_.get_submodule(parent_name) if parent_name else copy_
        parent._modules[child] = nn.Identity()
    return copy_


def modules_sharing_output(model: nn.Module, names: set[str], x: torch.Tensor) -> dict[str, str]:
    """Which module's output is the very tensor that a module in ``names`` returned, in one probe pass:
    {module name: name in ``names``} (each of ``names`` maps to itself). A hook on any of them sees that
    output, so folding that module's batch norm would change what the hook sees."""
    outputs: dict[str, list] = {}
    modules = dict(model.named_modules())

    def record(name: str):
        return lambda _m, _i, o: outputs.setdefault(name, []).append(o)

    handles = [m.register_forward_hook(record(n)) for n, m in modules.items() if n]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    owner = {id(o): name for name in names for o in outputs.get(name, ()) if isinstance(o, torch.Tensor)}
    return {n: owner[id(o)] for n, outs in outputs.items() for o in outs
            if isinstance(o, torch.Tensor) and id(o) in owner}


class FoldedForward:
    """``model`` with its batch norms folded (channels-last where that gives the same output), for a
    forward pass whose output and one layer's output are both looked at, as the live view does.

    :meth:`for_layer` gives the copy to run when ``layer`` is shown: every foldable pair folded except
    the one whose convolution's raw output the layer shows. Copies are made on first use (one probe
    pass, then a check that the copy's output equals the model's on the probe) and kept per set of
    pairs, so most layers share one. A model with nothing to fold, or whose copy fails the check, runs
    as it is. The copies share every weight that is not folded with ``model``.
    """

    def __init__(self, model: nn.Module, probe: torch.Tensor) -> None:
        self.model = model
        self.probe = probe[:1].detach()
        try:
            self.pairs = foldable_pairs(model, None, self.probe)
            self._sharing = modules_sharing_output(model, {conv for conv, _ in self.pairs}, self.probe)
        except Exception:  # noqa: BLE001 - a model that cannot be probed runs as it is
            self.pairs, self._sharing = [], {}
        self._copies: dict[tuple, tuple[nn.Module, bool]] = {}
        self._want: torch.Tensor | None = None

    def pairs_for(self, layer: str) -> tuple[tuple[str, str], ...]:
        """The pairs folded while ``layer`` is shown."""
        raw = self._sharing.get(layer)
        return tuple(p for p in self.pairs if p[0] != raw)

    def for_layer(self, layer: str) -> tuple[nn.Module, bool]:
        """(module to run, whether its input must be channels-last) while ``layer`` is shown."""
        pairs = self.pairs_for(layer)
        if pairs not in self._copies:
            self._copies[pairs] = self._build(list(pairs))
        return self._copies[pairs]

    def _build(self, pairs: list[tuple[str, str]]) -> tuple[nn.Module, bool]:
        if not pairs:
            return self.model, False
        with torch.no_grad():
            if self._want is None:
                self._want = first_tensor(self.model(self.probe)).detach()
            want = self._want
            tolerance = 1e-4 * float(want.abs().max()) + 1e-6
            for channels_last in (self.probe.dim() == 4, False):
                try:
                    copy_ = folded_model(self.model, pairs, channels_last)
                    x = self.probe.contiguous(memory_format=torch.channels_last) if channels_last else self.probe
                    got = first_tensor(copy_(x))
                except Exception:  # noqa: BLE001 - strides a .view() refuses, or a copy that fails
                    continue
                if got.shape == want.shape and float((got - want).abs().max()) <= tolerance:
                    return copy_, channels_last
        return self.model, False
