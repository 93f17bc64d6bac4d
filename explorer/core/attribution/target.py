"""What an attribution explains: a class score, or one unit at any layer.

A :class:`Target` turns a batch of model inputs into one scalar per input. A class target reads the
model's output (the logit, or the softmax probability); a unit target reads one layer's output: the mean
of one channel over all positions, or one neuron (a channel at a position).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.transformers import units_first

SCORES = ("logit", "prob")


class TargetError(ExplorerError):
    """A target names a class, layer, unit or position the model does not have."""


@dataclass(frozen=True)
class Target:
    """One scalar per input to explain.

    ``layer is None``: the class score ``class_index`` of the model's output, as a logit or as a
    softmax probability (``score``). Otherwise unit ``unit`` (a channel, or a feature of a flat layer)
    of the named layer's output: its mean over all positions, or the single neuron at ``position``
    ``(row, col)``. ``score`` applies to class targets only.
    """

    class_index: int | None = None
    layer: str | None = None
    unit: int | None = None
    position: tuple[int, int] | None = None
    score: str = "logit"

    @classmethod
    def for_class(cls, index: int, score: str = "logit") -> "Target":
        return cls(class_index=int(index), score=score)

    @classmethod
    def for_unit(cls, layer: str, unit: int, position: tuple[int, int] | None = None) -> "Target":
        return cls(layer=layer, unit=int(unit), position=tuple(position) if position is not None else None)

    @property
    def is_unit(self) -> bool:
        return self.layer is not None

    def describe(self, labels: tuple[str, ...] = ()) -> str:
        if self.is_unit:
            where = f" at {self.position}" if self.position is not None else " (channel mean)"
            return f"{self.layer} unit {self.unit}{where}"
        name = labels[self.class_index] if self.class_index is not None and self.class_index < len(labels) else ""
        label = f" ({name})" if name else ""
        return f"class {self.class_index}{label} {self.score}"

    def validate(self, model: nn.Module) -> None:
        if self.score not in SCORES:
            raise TargetError(f"score must be one of {', '.join(SCORES)}, not {self.score!r}")
        if self.is_unit:
            find_layer(model, self.layer)
            if self.unit is None or self.unit < 0:
                raise TargetError("a unit target needs a unit index >= 0")
        elif self.class_index is None or self.class_index < 0:
            raise TargetError("a class target needs a class index >= 0")

    def from_output(self, output: torch.Tensor) -> torch.Tensor:
        """Class score per input from the model's output (N, classes) → (N,)."""
        if output.dim() != 2:
            output = output.flatten(1)
        if not 0 <= self.class_index < output.shape[1]:
            raise TargetError(f"class {self.class_index} is out of range: the model has {output.shape[1]} outputs")
        if self.score == "prob":
            output = torch.softmax(output, dim=1)
        return output[:, self.class_index]

    def from_activation(self, act: torch.Tensor, model: nn.Module | None = None,
                        input_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Unit value per input from a layer's output (N, C, ...) → (N,).

        With the ``model`` and its input size, transformer outputs are seen as channel maps first
        (:func:`~explorer.core.transformers.units_first`): a ViT layer's unit is an embedding channel over
        the patch grid (``position`` is (row, col) on that grid), a Swin layer's its last dimension."""
        if model is not None and input_hw is not None:
            act = units_first(model, act, tuple(input_hw))
        if act.dim() < 2:
            raise TargetError(f"layer {self.layer} has output shape {tuple(act.shape)}: no units to pick")
        if not 0 <= self.unit < act.shape[1]:
            raise TargetError(f"unit {self.unit} is out of range: layer {self.layer} has {act.shape[1]} units")
        channel = act[:, self.unit]
        if self.position is None:
            return channel.flatten(1).mean(1) if channel.dim() > 1 else channel
        if channel.dim() != 3:
            raise TargetError(f"layer {self.layer} has no spatial positions (output shape {tuple(act.shape)})")
        r, c = self.position
        if not (0 <= r < channel.shape[1] and 0 <= c < channel.shape[2]):
            raise TargetError(f"position {self.position} is outside layer {self.layer}'s "
                              f"{channel.shape[1]}x{channel.shape[2]} map")
        return channel[:, r, c]


def find_layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        raise TargetError(f"model has no layer named {name!r}")
    return modules[name]


class _StopForward(Exception):
    """Raised by a hook once the target layer has run: the rest of the forward pass is not needed."""


def layer_output(model: nn.Module, x: torch.Tensor, layer: str, stop: bool = True) -> torch.Tensor:
    """The named layer's output for input ``x``.

    A module that runs more than once in a forward pass (ResNet's shared ReLU) gives its last output;
    with ``stop`` the rest of the network is skipped only when the module is known to run once.
    """
    module = find_layer(model, layer)
    captured: list[torch.Tensor] = []
    calls = _count_calls(model, module, x) if stop else 2

    def hook(_mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        captured.append(out)
        if calls == 1:
            raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise TargetError(f"layer {layer} did not run in the forward pass")
    out = captured[-1]
    return out[0] if isinstance(out, (tuple, list)) else out


_call_counts: dict[tuple[int, int, tuple], int] = {}


def _count_calls(model: nn.Module, module: nn.Module, x: torch.Tensor) -> int:
    """How many times ``module`` runs per forward pass (cached per model, module and input shape)."""
    key = (id(model), id(module), tuple(x.shape[1:]))
    if key not in _call_counts:
        count = [0]
        handle = module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        try:
            with torch.no_grad():
                model(x[:1].detach())
        finally:
            handle.remove()
        _call_counts[key] = count[0]
    return _call_counts[key]


def target_fn(model: nn.Module, target: Target) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from inputs (N, C, H, W) to target values (N,), differentiable."""
    if target.is_unit:
        return lambda x: target.from_activation(layer_output(model, x, target.layer), model, tuple(x.shape[-2:]))
    return lambda x: target.from_output(model(x))


def top_class(model: nn.Module, x: torch.Tensor) -> int:
    """The predicted class of one input (1, C, H, W)."""
    with torch.no_grad():
        return int(model(x).flatten(1)[0].argmax())
