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

    ``computed_layers`` after a call lists the leaf modules that ran (a test checks that none above
    the layer did).
    """

    def __init__(self, model: nn.Module, layer: str | None):
        self.model, self.layer = model, layer
        self.module = find_layer(model, layer) if layer else None
        if isinstance(self.module, torch.jit.ScriptModule):
            raise TargetError(f"layer {layer} is inside a TorchScript module, which takes no hooks")
        self._calls: dict[tuple, int] = {}

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
        if self.module is None:
            out = self.model(x)
            return first_tensor(out) if not isinstance(out, torch.Tensor) else out
        last = self.calls(x)
        seen: list[torch.Tensor] = []

        def hook(_mod, _inp, out):
            seen.append(first_tensor(out))
            if len(seen) == last:
                raise _LayerDone

        handle = self.module.register_forward_hook(hook)
        try:
            self.model(x)
        except _LayerDone:
            pass
        finally:
            handle.remove()
        if not seen:
            raise TargetError(f"layer {self.layer} did not run in the forward pass")
        return seen[-1]


def target_values(truncated: Truncated, target: Target, x: torch.Tensor) -> torch.Tensor:
    """The target's value per input (N,): the class logit (score before the softmax) or the unit."""
    out = truncated(x)
    if target.is_unit:
        return target.from_activation(out, truncated.model, tuple(x.shape[-2:]))
    return Target.for_class(target.class_index).from_output(out)


def truncate_for(model: nn.Module, target: Target) -> Truncated:
    target.validate(model)
    return Truncated(model, target.layer if target.is_unit else None)


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
