"""The model cut after the target layer: nothing above the layer is computed.

How: a forward hook on the target layer that raises a private exception once the layer has run for
the last time in the forward pass (the pass is then abandoned; the hook has kept the layer's output).
Why not torch.fx graph slicing: a hook works on every ``nn.Module`` the explorer loads (torchvision's
models, user checkpoints with Python control flow in ``forward``, dict or tuple outputs), while fx
fails on data-dependent control flow and needs a new trace per model; the hook costs nothing per step.
A module that runs several times per pass (ResNet blocks reuse one ReLU) is cut after its last call:
the number of calls is counted once per input shape with a plain forward pass.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from explorer.core.attribution.target import Target, TargetError, find_layer
from explorer.core.probe import first_tensor


class _LayerDone(Exception):
    """Raised by the hook once the target layer has given its last output of the pass."""


class Truncated:
    """``Truncated(model, layer)(x)``: the output of ``layer`` for ``x`` (``layer=None``: the model's output).

    ``fast=True`` (what the optimisation loops use) runs, per input shape, a copy of the model with its
    batch norms folded into the convolutions before them (:func:`foldable_pairs`, :func:`folded_model`)
    on channels-last inputs, once a probe has shown that it gives the same output as the model
    (otherwise the model itself, as it is). The copy shares every other weight with the model.
    """

    def __init__(self, model: nn.Module, layer: str | None, fast: bool = False):
        self.model, self.layer, self.fast = model, layer, fast
        self.module = find_layer(model, layer) if layer else None
        if isinstance(self.module, torch.jit.ScriptModule):
            raise TargetError(f"layer {layer} is inside a TorchScript module, which takes no hooks")
        self._calls: dict[tuple, int] = {}
        self._fast: dict[tuple, tuple[nn.Module, nn.Module | None, bool]] = {}
        self.folded = 0  # batch norms folded in the fast path (after a call)
        self.channels_last = False

    def calls(self, x: torch.Tensor) -> int:
        """How many times the layer runs in one forward pass of an input shaped like ``x``."""
        key = tuple(x.shape[1:])
        if key not in self._calls:
            count = [0]
            handle = self.module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
            try:
                with torch.no_grad():
                    self.model(x[:1].detach())
            finally:
                handle.remove()
            if count[0] == 0:
                raise TargetError(f"layer {self.layer} did not run in the forward pass")
            self._calls[key] = count[0]
        return self._calls[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return self._run(self.model, self.module, x, False)
        model, module, channels_last = self._fast_for(x)
        return self._run(model, module, x, channels_last)

    def _fast_for(self, x: torch.Tensor) -> tuple[nn.Module, nn.Module | None, bool]:
        key = tuple(x.shape[1:])
        if key not in self._fast:
            self._fast[key] = self._build_fast(x)
        model, _, channels_last = self._fast[key]
        self.folded = len(getattr(model, "_explorer_folded", ()))
        self.channels_last = channels_last
        return self._fast[key]

    def _build_fast(self, x: torch.Tensor) -> tuple[nn.Module, nn.Module | None, bool]:
        plain = (self.model, self.module, False)
        probe = x[:1].detach()
        with torch.no_grad():
            want = self._run(self.model, self.module, probe, False)
        try:
            pairs = foldable_pairs(self.model, self.module, probe)
        except Exception:  # noqa: BLE001 - a model that cannot be probed runs as it is
            pairs = []
        tolerance = 1e-4 * float(want.abs().max()) + 1e-6
        # the folded copy with channels-last weights and inputs, then contiguous ones (a model may .view()
        # a convolution's output), then the model itself the same two ways
        for folded, channels_last in ((True, True), (True, False), (False, True), (False, False)):
            if (folded and not pairs) or (channels_last and x.dim() != 4):
                continue
            try:
                if folded:
                    model = folded_model(self.model, pairs, channels_last)
                    model._explorer_folded = pairs
                    module = model.get_submodule(self.layer) if self.layer else None
                else:
                    model, module = self.model, self.module
                with torch.no_grad():
                    got = self._run(model, module, probe, channels_last)
            except Exception:  # noqa: BLE001 - a copy that fails, or strides that a .view() refuses
                continue
            if got.shape == want.shape and float((got - want).abs().max()) <= tolerance:
                return model, module, channels_last
        return plain

    def _run(self, model: nn.Module, module: nn.Module | None, x: torch.Tensor, channels_last: bool
             ) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if module is None:
            out = model(x)
            out = first_tensor(out) if not isinstance(out, torch.Tensor) else out
            return out.contiguous() if channels_last else out
        last = self.calls(x)
        seen: list[torch.Tensor] = []

        def hook(_mod, _inp, out):
            seen.append(first_tensor(out))
            if len(seen) == last:
                raise _LayerDone

        handle = module.register_forward_hook(hook)
        try:
            model(x)
        except _LayerDone:
            pass
        finally:
            handle.remove()
        if not seen:
            raise TargetError(f"layer {self.layer} did not run in the forward pass")
        return seen[-1].contiguous() if channels_last else seen[-1]


def target_values(truncated: Truncated, target: Target, x: torch.Tensor) -> torch.Tensor:
    """The target's value per input (N,): the class logit (score before the softmax) or the unit."""
    out = truncated(x)
    if target.is_unit:
        return target.from_activation(out, truncated.model, tuple(x.shape[-2:]))
    return Target.for_class(target.class_index).from_output(out)


def truncate_for(model: nn.Module, target: Target, fast: bool = True) -> Truncated:
    target.validate(model)
    return Truncated(model, target.layer if target.is_unit else None, fast=fast)


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """The model's parameters marked as needing no gradient while the block runs, then restored.

    ``torch.autograd.grad`` with respect to the image alone still computes the weights' gradients of
    every layer whose weights require them (measured: ResNet-18 up to layer3, 224x224, 2 threads:
    0.37 s per step against 0.18 s frozen); the optimisation needs only the image's gradient.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


# --- the fast path: batch norms folded into their convolutions, channels-last -----------------------------

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
