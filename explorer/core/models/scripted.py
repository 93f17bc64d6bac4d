"""TorchScript modules made explorable: an eager tree of stand-ins that forward hooks can see.

TorchScript modules refuse forward hooks ("register_forward_hook is not supported on ScriptModules"),
so neither the layer table nor activation capture can look inside them. When a TorchScript module is
an ``nn.Sequential`` (traced or scripted, nested Sequentials included), its forward is nothing but its
children called in order, so an eager :class:`ScriptSequential` that calls the same children in the
same order computes the same thing. Each child that is not a Sequential becomes a
:class:`ScriptLayer`: an eager module named after the original class (``Conv2d``, ``ReLU``, ...)
that calls the compiled child and shares its parameters and buffers. Hooks then work on every
stand-in. :func:`explorable_script` returns None for anything else (a ResNet's forward is not a chain
of its children); such modules still run, but their layers cannot be captured.
"""
from __future__ import annotations

import torch
from torch import nn

_classes: dict[str, type] = {}


def is_script_module(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


class ScriptLayer(nn.Module):
    """An eager stand-in for one compiled submodule (see the module docstring)."""

    def __init__(self, script: nn.Module):
        super().__init__()
        self.__dict__["script"] = script  # not a registered child: hooks would be refused on it
        self.original_name = str(getattr(script, "original_name", type(script).__name__))
        self._sync()

    def _sync(self) -> None:
        script = self.__dict__["script"]
        self._parameters.clear()
        self._buffers.clear()
        for name, p in script.named_parameters():
            self._parameters[name.replace(".", "_")] = p
        for name, b in script.named_buffers():
            self._buffers[name.replace(".", "_")] = b

    def forward(self, *args):
        return self.__dict__["script"](*args)

    def _apply(self, fn, recurse=True):
        self.__dict__["script"]._apply(fn)
        self._sync()
        return self

    def train(self, mode: bool = True):
        self.__dict__["script"].train(mode)
        return super().train(mode)

    def script_macs(self, output: torch.Tensor) -> int:
        """Multiply-accumulates for one input of a compiled Conv*d or Linear (0 for other layers)."""
        weight = self._parameters.get("weight")
        if weight is None or output.dim() == 0:
            return 0
        per_output = 1
        if self.original_name.startswith("Conv") and "Transpose" not in self.original_name and weight.dim() >= 3:
            for s in weight.shape[1:]:
                per_output *= int(s)
        elif self.original_name == "Linear" and weight.dim() == 2:
            per_output = int(weight.shape[1])
        else:
            return 0
        return output.numel() // output.shape[0] * per_output

    def extra_repr(self) -> str:
        return f"compiled {self.original_name}"


class ScriptSequential(nn.Module):
    """An eager Sequential over stand-ins for a compiled Sequential's children."""

    def __init__(self, script: nn.Module):
        super().__init__()
        for name, child in script.named_children():
            self.add_module(name, _stand_in(child))

    def forward(self, x):
        for child in self.children():
            x = child(x)
        return x


class _Sequential(ScriptSequential):
    """A nested compiled Sequential (named so in the layer table)."""


_Sequential.__name__ = _Sequential.__qualname__ = "Sequential"


def _stand_in(child: nn.Module) -> nn.Module:
    name = str(getattr(child, "original_name", type(child).__name__))
    if name == "Sequential":
        return _Sequential(child)
    cls = _classes.get(name)
    if cls is None:
        cls = _classes[name] = type(name if name.isidentifier() else "ScriptLayer", (ScriptLayer,), {})
    return cls(child)


def explorable_script(module: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """An eager stand-in tree for a compiled Sequential that gives its outputs on ``example``, or None."""
    if not is_script_module(module) or getattr(module, "original_name", "") != "Sequential":
        return None
    try:
        eager = _Sequential(module)
        with torch.no_grad():
            expected, actual = module(example), eager(example)
    except Exception:  # noqa: BLE001 - any failure: keep the compiled module as it is
        return None
    if not (isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor)
            and expected.shape == actual.shape and torch.equal(expected, actual)):
        return None
    return eager.train(module.training)
