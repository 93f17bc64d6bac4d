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
from explorer.core.fold import foldable_pairs, folded_model
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
