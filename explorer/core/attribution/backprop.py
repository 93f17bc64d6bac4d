"""Gradient (Simonyan et al. 2014), deconvnet (Zeiler & Fergus 2014) and guided backprop (Springenberg et
al. 2015), each defined by what happens to the gradient at every ReLU.

With R the gradient arriving from above and f the ReLU's input, the backward rules are:

    gradient         R · 1[f > 0]
    deconvnet        R · 1[R > 0]
    guided backprop  R · 1[f > 0] · 1[R > 0]

The rule is applied to every ReLU however the network calls it: ``nn.ReLU`` modules (in-place or not,
shared or not), and the functional ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` (and their in-place
forms) that torchvision's GoogLeNet, Inception and DenseNet use. A :class:`TorchFunctionMode` sees every
one of those calls during the forward pass and swaps in an autograd Function carrying the rule; nothing
in the model is modified. Other activations (ReLU6, GELU, SiLU, LeakyReLU, ...) are recorded and left
with their plain gradient, and the result says so.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from explorer.core.attribution.target import Target, target_fn

METHODS = ("gradient", "deconvnet", "guided-backprop")

_RELU_FUNCS = {F.relu, torch.relu, torch.Tensor.relu, torch.nn.functional.relu_, torch.relu_, torch.Tensor.relu_}
_INPLACE_RELU_FUNCS = {torch.relu_, torch.Tensor.relu_, torch.nn.functional.relu_}

# Activations that are not ReLU: their gradient is left as it is; we report that we saw them.
_OTHER_ACTIVATION_FUNCS = {
    F.relu6: "ReLU6", F.hardtanh: "Hardtanh", F.gelu: "GELU", F.silu: "SiLU", F.leaky_relu: "LeakyReLU",
    F.elu: "ELU", F.selu: "SELU", F.celu: "CELU", F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid",
    F.mish: "Mish", F.softplus: "Softplus", F.prelu: "PReLU", torch.sigmoid: "Sigmoid",
    torch.Tensor.sigmoid: "Sigmoid", torch.tanh: "Tanh", torch.Tensor.tanh: "Tanh", F.glu: "GLU",
    F.rrelu: "RReLU", F.logsigmoid: "LogSigmoid",
}
_OTHER_ACTIVATION_MODULES = (nn.ReLU6, nn.Hardtanh, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU,
                             nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.PReLU, nn.Sigmoid, nn.Tanh,
                             nn.GLU, nn.RReLU, nn.LogSigmoid)


@dataclass
class ActivationReport:
    """Which activation functions the backward rule was applied to, and which were left alone.

    ``handled`` and ``unhandled`` count calls seen in one forward pass, by activation name.
    """

    method: str
    handled: dict[str, int] = field(default_factory=dict)
    unhandled: dict[str, int] = field(default_factory=dict)

    @property
    def note(self) -> str:
        """One sentence for the GUI and the command line; empty when nothing needs saying."""
        if self.method == "gradient":
            return ""
        parts = []
        if self.handled:
            parts.append(f"{self.method} rule applied at {sum(self.handled.values())} ReLU calls")
        else:
            parts.append(f"no ReLU found: {self.method} equals the plain gradient here")
        if self.unhandled:
            names = ", ".join(f"{name} x{n}" for name, n in sorted(self.unhandled.items()))
            parts.append(f"plain gradient kept at {names} (the rule is defined for ReLU only)")
        return "; ".join(parts)

    @property
    def warning(self) -> bool:
        """The note warns (the rule could not be applied everywhere) rather than only informs."""
        return self.method != "gradient" and (bool(self.unhandled) or not self.handled)

    def as_dict(self) -> dict:
        return {"method": self.method, "handled": dict(self.handled), "unhandled": dict(self.unhandled),
                "note": self.note}


def _rule_backward(method: str, out: torch.Tensor | None, grad: torch.Tensor) -> torch.Tensor:
    """The backward rule; ``out`` = relu(f), so 1[f > 0] == 1[out > 0]. Fused native kernels keep the cost
    of the rule close to the plain ReLU backward."""
    if method == "deconvnet":
        return grad.clamp(min=0)
    if method == "guided-backprop":
        return torch.ops.aten.threshold_backward(grad.clamp(min=0), out, 0)
    return torch.ops.aten.threshold_backward(grad, out, 0)


class _RuleReLU(torch.autograd.Function):
    """relu(f) forward; the method's rule backward."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, method: str) -> torch.Tensor:  # noqa: D102
        out = torch.relu(f)
        ctx.method = method
        if method != "deconvnet":  # deconvnet does not look at f at all
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        out = ctx.saved_tensors[0] if ctx.method != "deconvnet" else None
        return _rule_backward(ctx.method, out, grad), None


class _RuleReLUInplace(torch.autograd.Function):
    """In-place relu_(f): the tensor is modified and marked dirty, as ``F.relu(inplace=True)`` does."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, method: str) -> torch.Tensor:  # noqa: D102
        torch.relu_(f)
        ctx.mark_dirty(f)
        ctx.method = method
        if method != "deconvnet":
            ctx.save_for_backward(f)
        return f

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        out = ctx.saved_tensors[0] if ctx.method != "deconvnet" else None
        return _rule_backward(ctx.method, out, grad), None


class ReluRuleMode(TorchFunctionMode):
    """While active, every ReLU call (module or functional) runs with the backward rule of ``method``."""

    def __init__(self, method: str):
        super().__init__()
        self.method = method
        self.handled: Counter = Counter()
        self.unhandled: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_FUNCS:
            x = args[0] if args else kwargs["input"]
            inplace = func in _INPLACE_RELU_FUNCS or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            if torch.is_grad_enabled() and x.requires_grad:
                self.handled["ReLU"] += 1
                fn = _RuleReLUInplace if inplace and not x.is_leaf else _RuleReLU
                return fn.apply(x, self.method)
        elif func in _OTHER_ACTIVATION_FUNCS:
            name = _OTHER_ACTIVATION_FUNCS[func]
            bounds = (kwargs.get("min_val", args[1] if len(args) > 1 else -1.0),
                      kwargs.get("max_val", args[2] if len(args) > 2 else 1.0))
            if func is F.hardtanh and bounds == (0.0, 6.0):
                name = "ReLU6"  # nn.ReLU6 is hardtanh(0, 6)
            self.unhandled[name] += 1
        return func(*args, **kwargs)


def _other_activation_modules(model: nn.Module) -> Counter:
    """Activation modules that are not ReLU, by class name (those computed by a kernel we cannot see)."""
    return Counter(type(m).__name__ for m in model.modules() if isinstance(m, _OTHER_ACTIVATION_MODULES))


def backprop_attribution(model: nn.Module, x: torch.Tensor, target: Target,
                         method: str = "guided-backprop") -> tuple[torch.Tensor, ActivationReport]:
    """The input-space attribution of ``target`` by ``method``.

    Parameters
    ----------
    model : the network, in eval mode; it is not modified.
    x : input batch (N, C, H, W) on the model's device.
    target : class score or unit.
    method : ``gradient``, ``deconvnet`` or ``guided-backprop``.

    Returns
    -------
    (attribution, report): attribution has the shape of ``x`` (the raw signed values; show max |.| over
    channels), report says where the rule was applied.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    target.validate(model)
    x = x.detach().clone().requires_grad_(True)
    fn = target_fn(model, target)
    report = ActivationReport(method)
    with torch.enable_grad():
        if method == "gradient":
            value = fn(x)
        else:
            mode = ReluRuleMode(method)
            with mode:
                value = fn(x)
            report.handled = dict(mode.handled)
            seen = Counter(mode.unhandled)
            for name, n in _other_activation_modules(model).items():
                seen[name] = max(seen[name], n)
            report.unhandled = dict(seen)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return grad.detach(), report


def gradient(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    return backprop_attribution(model, x, target, "gradient")[0]


def deconvnet(model: nn.Module, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, ActivationReport]:
    return backprop_attribution(model, x, target, "deconvnet")


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, ActivationReport]:
    return backprop_attribution(model, x, target, "guided-backprop")


def saliency_image(attribution: torch.Tensor) -> torch.Tensor:
    """(C, H, W) or (1, C, H, W) signed attribution → (H, W) max |.| over channels, as Simonyan et al. show it."""
    a = attribution[0] if attribution.dim() == 4 else attribution
    return a.abs().amax(0)


def note_is_warning(note: str) -> bool:
    """Whether a method's note (as the rule report's ``note`` words it) warns: where the plain gradient was
    kept, the result is not the method's own. Notes that only say where the rule applied inform."""
    return "plain gradient" in note
