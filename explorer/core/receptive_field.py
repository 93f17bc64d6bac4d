"""Receptive fields from the module graph: which input pixels a unit at a position can see.

Per spatial axis a field is three whole numbers (Araujo et al., "Computing receptive fields of
convolutional neural networks", Distill 2019): ``size`` (pixels seen), ``jump`` (input pixels between
neighbouring output positions) and ``start`` (the input coordinate of the first pixel seen by output
position 0; negative when padding reaches outside the image). Position ``i`` sees input pixels
``start + i * jump`` up to ``start + i * jump + size`` (exclusive); :meth:`ReceptiveField.box` clips that
to the image.

A convolution or pooling with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` maps an
input field ``(size, jump, start)`` to ``(size + (d(k-1)) * jump, jump * s, start - p * jump)``.
Element-wise layers (ReLU, batch norm, dropout) keep the field; a sum or concatenation of branches (a
residual connection) takes the union; global pooling, flattening and linear layers see the whole image
(``size`` None).

The graph is followed during one forward pass of a zero input: forward hooks on the leaf modules apply
their rule, and a :class:`~torch.overrides.TorchFunctionMode` (thread-local) sees the functions called
between them (residual additions, concatenations, ``torch.flatten``, functional pooling), each tensor
known by identity. Unlike ``torch.fx``, whose tracer patches ``nn.Module.__call__`` for every thread
while it runs (breaking forwards running at the same time in the window's workers), this changes
nothing outside the calling thread, and it follows models with data-dependent control flow.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                        nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus,
                        nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
                        nn.InstanceNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity)
_GLOBAL_MODULES = (nn.Linear, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Bilinear)
# functions and methods that change no geometry (several inputs: the union of their fields)
_GLOBAL_FUNCTIONS = {torch.flatten, torch.nn.functional.linear, torch.nn.functional.adaptive_avg_pool2d,
                     torch.nn.functional.adaptive_max_pool2d, torch.mean, torch.sum}
_GLOBAL_METHODS = {"flatten", "view", "reshape", "mean", "sum", "amax", "max"}


@dataclass(frozen=True)
class Axis:
    size: int | None  # None: the whole input
    jump: int = 1
    start: int = 0

    def through(self, kernel: int, stride: int, padding: int, dilation: int) -> "Axis":
        if self.size is None:
            return self
        return Axis(self.size + dilation * (kernel - 1) * self.jump, self.jump * stride, self.start - padding * self.jump)

    def union(self, other: "Axis") -> "Axis":
        if self.size is None or other.size is None:
            return Axis(None)
        lo = min(self.start, other.start)
        hi = max(self.start + self.size, other.start + other.size)
        return Axis(hi - lo, max(self.jump, other.jump), lo)


@dataclass(frozen=True)
class ReceptiveField:
    """The field of one layer's units, per axis (rows, then columns)."""

    y: Axis
    x: Axis

    @property
    def whole(self) -> bool:
        return self.y.size is None or self.x.size is None

    def box(self, position: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` in input pixels (x1, y1 exclusive) seen by the unit at ``position`` = (y, x),
        clipped to an image of ``image_size`` = (H, W)."""
        h, w = image_size
        if self.whole:
            return 0, 0, w, h
        y, x = position
        y0, x0 = self.y.start + y * self.y.jump, self.x.start + x * self.x.jump
        return (max(0, x0), max(0, y0), min(w, x0 + self.x.size), min(h, y0 + self.y.size))

    def to_dict(self) -> dict:
        return {"size": [self.y.size, self.x.size], "jump": [self.y.jump, self.x.jump],
                "start": [self.y.start, self.x.start]}

    @classmethod
    def from_dict(cls, d: dict) -> "ReceptiveField":
        return cls(Axis(d["size"][0], d["jump"][0], d["start"][0]), Axis(d["size"][1], d["jump"][1], d["start"][1]))


IDENTITY = ReceptiveField(Axis(1), Axis(1))
WHOLE = ReceptiveField(Axis(None), Axis(None))


def _pair(value, kernel=None) -> tuple[int, int]:
    if isinstance(value, str):  # "valid" / "same" padding
        if value == "valid":
            return 0, 0
        return tuple((k - 1) // 2 for k in kernel)
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1])) if len(value) else (0, 0)
    return int(value), int(value)


def _module_field(module: nn.Module, inputs: list[ReceptiveField]) -> ReceptiveField:
    field = _union(inputs)
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        dilation = _pair(getattr(module, "dilation", 1))
        if isinstance(module, nn.Conv2d):
            dk = (dilation[0] * (k[0] - 1) + 1, dilation[1] * (k[1] - 1) + 1)
            p = _pair(module.padding, dk)
        else:
            p = _pair(module.padding)
        return ReceptiveField(field.y.through(k[0], s[0], p[0], dilation[0]),
                              field.x.through(k[1], s[1], p[1], dilation[1]))
    if isinstance(module, _ELEMENTWISE_MODULES):
        return field
    if isinstance(module, _GLOBAL_MODULES):
        return WHOLE
    return WHOLE if list(module.children()) == [] else field  # an unknown leaf: assume it sees everything


def _union(fields: list[ReceptiveField]) -> ReceptiveField:
    if not fields:
        return IDENTITY
    out = fields[0]
    for f in fields[1:]:
        out = ReceptiveField(out.y.union(f.y), out.x.union(f.x))
    return out


class _FieldMode(TorchFunctionMode):
    """Sees every torch function and tensor method outside the leaf modules (additions, concatenations,
    flattening, functional pooling) and gives its outputs a field from its inputs' fields."""

    def __init__(self):
        super().__init__()
        self.fields: dict[int, ReceptiveField] = {}
        self.keep: list[torch.Tensor] = []  # alive until the end, so that no id is reused
        self.depth = 0  # > 0 inside a leaf module: its own field rule applies

    def set(self, value, field: ReceptiveField) -> None:
        for t in _tensors(value):
            self.fields[id(t)] = field
            self.keep.append(t)

    def field_of(self, value) -> list[ReceptiveField]:
        return [self.fields[id(t)] for t in _tensors(value) if id(t) in self.fields]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0 and isinstance(out, (torch.Tensor, tuple, list)):
            inputs = self.field_of((args, kwargs))
            if inputs:
                name = getattr(func, "__name__", "")
                if func in (torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d):
                    field = _functional_pool(args, kwargs, inputs)
                elif func in _GLOBAL_FUNCTIONS or name in _GLOBAL_METHODS:
                    field = WHOLE
                else:
                    field = _union(inputs)
                self.set(out, field)
        return out


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def _traced_fields(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, ReceptiveField]:
    mode = _FieldMode()
    by_module: dict[str, ReceptiveField] = {}
    handles = []
    leaf_input: dict[str, list[ReceptiveField]] = {}

    def pre(module, inputs, name):
        if not list(module.children()):
            leaf_input[name] = mode.field_of(inputs)
            mode.depth += 1

    def post(module, inputs, output, name):
        if not list(module.children()):
            mode.depth -= 1
            mode.set(output, _module_field(module, leaf_input.pop(name, [])))
        found = mode.field_of(output)
        if found:
            by_module[name] = found[0]

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(lambda m, i, n=name: pre(m, i, n)))
            handles.append(module.register_forward_hook(lambda m, i, o, n=name: post(m, i, o, n)))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros((1, *input_shape), device=device)
    try:
        with torch.no_grad(), mode:
            mode.set(x, IDENTITY)
            out = model(x)
            found = mode.field_of(out)
            by_module[""] = found[0] if found else WHOLE
    finally:
        for h in handles:
            h.remove()
    return by_module


def _functional_pool(args, kw, inputs: list[ReceptiveField]) -> ReceptiveField:
    args = list(args) + [None] * 5
    k = _pair(kw.get("kernel_size", args[1]))
    stride = kw.get("stride", args[2])
    s = _pair(stride if stride not in (None, []) else k)
    p = _pair(kw.get("padding", args[3] if args[3] is not None else 0))
    field = _union(inputs)
    return ReceptiveField(field.y.through(k[0], s[0], p[0], 1), field.x.through(k[1], s[1], p[1], 1))


_KNOWN: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def receptive_fields(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, ReceptiveField], bool]:
    """The field of every named module's output (after one zero input of ``input_shape``), and True.

    Kept per model and input shape (the geometry does not change with the weights)."""
    known = _KNOWN.setdefault(model, {})
    key = tuple(input_shape)
    if key not in known:
        known[key] = _traced_fields(model, input_shape)
    return dict(known[key]), True


def receptive_field(model: nn.Module, layer: str, input_shape: tuple[int, ...]) -> ReceptiveField:
    """The receptive field of ``layer``'s units (the whole image when it is not known)."""
    fields, _ = receptive_fields(model, input_shape)
    return fields.get(layer, WHOLE)
