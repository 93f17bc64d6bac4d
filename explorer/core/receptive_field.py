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

The graph comes from ``torch.fx`` (so branches and functional additions are seen). A model fx cannot
trace falls back to forward hooks on the leaf modules, each taken as fed by the one that ran before it,
which is exact for chains (VGG, AlexNet, the bundled CNN) and an approximation otherwise (``traced`` says
which was used).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn

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


def _fx_fields(model: nn.Module) -> dict[str, ReceptiveField]:
    import torch.fx  # noqa: PLC0415

    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    node_field: dict[torch.fx.Node, ReceptiveField] = {}
    by_module: dict[str, ReceptiveField] = {}
    for node in graph.nodes:
        inputs = [node_field[n] for n in node.all_input_nodes if n in node_field]
        if node.op == "placeholder":
            node_field[node] = IDENTITY
        elif node.op == "get_attr":
            continue
        elif node.op == "call_module":
            node_field[node] = _module_field(modules[node.target], inputs)
            by_module[node.target] = node_field[node]
            parts = node.target.split(".")
            for i in range(1, len(parts)):  # the containers' output: their last node (graph order)
                by_module[".".join(parts[:i])] = node_field[node]
        elif node.op == "call_function" and node.target in _GLOBAL_FUNCTIONS:
            node_field[node] = WHOLE
        elif node.op == "call_function" and node.target in (torch.nn.functional.max_pool2d,
                                                             torch.nn.functional.avg_pool2d):
            node_field[node] = _functional_pool(node, inputs)
        elif node.op == "call_method" and node.target in _GLOBAL_METHODS:
            node_field[node] = WHOLE
        elif node.op in ("call_function", "call_method"):
            node_field[node] = _union(inputs) if inputs else IDENTITY
        elif node.op == "output":
            by_module[""] = _union(inputs)
    return by_module


def _functional_pool(node, inputs: list[ReceptiveField]) -> ReceptiveField:
    args = list(node.args) + [None] * 5
    kw = node.kwargs
    k = _pair(kw.get("kernel_size", args[1]))
    stride = kw.get("stride", args[2])
    s = _pair(stride if stride not in (None, []) else k)
    p = _pair(kw.get("padding", args[3] if args[3] is not None else 0))
    field = _union(inputs)
    return ReceptiveField(field.y.through(k[0], s[0], p[0], 1), field.x.through(k[1], s[1], p[1], 1))


def _hook_fields(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, ReceptiveField]:
    """Leaves in the order they run, each fed by the previous one (exact for chains)."""
    order: list[tuple[str, nn.Module]] = []
    handles = []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_hook(lambda m, i, o, n=name: order.append((n, m))))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
    field, out = IDENTITY, {}
    for name, module in order:
        field = _module_field(module, [field])
        out[name] = field
        parts = name.split(".")
        for i in range(1, len(parts)):
            out[".".join(parts[:i])] = field
    return out


def receptive_fields(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, ReceptiveField], bool]:
    """The field of every named module's output, and whether torch.fx traced the graph (else hooks)."""
    try:
        return _fx_fields(model), True
    except Exception:  # noqa: BLE001 - fx cannot trace every model (data-dependent control flow)
        return _hook_fields(model, input_shape), False


def receptive_field(model: nn.Module, layer: str, input_shape: tuple[int, ...]) -> ReceptiveField:
    """The receptive field of ``layer``'s units (the whole image when it is not known)."""
    fields, _ = receptive_fields(model, input_shape)
    return fields.get(layer, WHOLE)
