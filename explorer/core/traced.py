"""The live forward pass as one TorchScript graph that returns the shown layer's output with the model's.

Why: on the CPU an eager forward pass of a small network is ~60 Python-level module calls, each of which
must take the GIL back from the other threads of the live view (decoding, tiling, painting) before it can
start the next operation, and is run op by op. A graph traced once for the shown layer, frozen and
optimised for inference (:func:`torch.jit.optimize_for_inference`: batch norms folded, oneDNN
convolutions with fused ReLUs) runs in C++ from one call: ResNet-18 at 224 on 2 threads 21–22 ms against
27–29 ms eager (and 23–25 ms with :mod:`explorer.core.fold` alone).

How: TorchScript traces the model, for its fixed input shape, inside a wrapper whose forward hook on
the shown layer keeps a copy of the layer's output (:func:`explorer.core.probe.layer_and_output`, the
same hook the eager live pass and the layer views use; a copy, since an in-place op after the layer,
ResNet's ``bn1`` → ``ReLU(inplace=True)``, would otherwise change what is shown); the graph returns
(that copy, the model's output). Not torch.fx: its tracer patches ``nn.Module.__call__`` for every
thread while it runs, so a forward pass of another panel at that moment would fail, where TorchScript's
tracing state is the tracing thread's own. A tracer warning (a Python branch on a tensor's value, whose
trace would hold for one input only) ends the attempt. The result is used only if it gives the same
layer output and model output as the model itself on two probe inputs; any failure gives None, and the
caller runs the model as it is.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from explorer.core.probe import layer_and_output

# The frozen graph holds its own copy of the weights: models larger than this run eagerly instead
# (VGG-16's 528 MB would double; its time is in the convolutions, where the graph gains least).
MAX_TRACED_BYTES = 256 * 2**20


class _WithLayerOutput(nn.Module):
    """``model`` returning (a copy of ``layer``'s output, its own output), by the forward hook of
    :func:`~explorer.core.probe.layer_and_output`, which TorchScript's tracer records like any operation."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act, out = layer_and_output(self.model, self.layer, x)
        if not isinstance(out, torch.Tensor):
            raise TypeError("the model's output is not one tensor")
        return act, out


def traced_forward(model: nn.Module, layer: str, probe: torch.Tensor, reference: nn.Module | None = None
                   ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """A TorchScript function x → (layer output, model output) for inputs shaped like ``probe`` (one
    image), or None where it cannot be made, the model is over :data:`MAX_TRACED_BYTES`, or the graph
    does not give the values of ``reference`` (default: ``model`` itself; the live view traces its
    folded copy and checks it against the model as loaded)."""
    size = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    if size > MAX_TRACED_BYTES:
        return None
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
            # a value-dependent Python branch (float(x), x.item(), ...) makes a trace that holds for one
            # input only: the tracer warns, and the warning ends the attempt
            warnings.simplefilter("error", torch.jit.TracerWarning)
            probe = probe[:1].detach().clone()
            script = torch.jit.trace(_WithLayerOutput(model, layer), probe, check_trace=False)
            script = torch.jit.optimize_for_inference(torch.jit.freeze(script.eval()))
            gen = torch.Generator(device="cpu").manual_seed(0)
            checks = [probe, torch.randn(probe.shape, generator=gen).to(probe)]
            for x in checks:
                act, out = script(x)
                want_act, want_out = layer_and_output(model if reference is None else reference, layer, x)
                for got, want in ((act, want_act), (out, want_out)):
                    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                        return None
                    if float((got.float() - want.float()).abs().max()) > 1e-4 * float(want.abs().max()) + 1e-5:
                        return None
    except Exception:  # noqa: BLE001 - any model TorchScript cannot take runs as it is
        return None
    return script
