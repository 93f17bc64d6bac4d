"""Look inside a forward pass: the layer table (shapes, parameters, MACs) and activation capture by hooks."""
from __future__ import annotations

from collections.abc import Sequence

import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn

from explorer.core.errors import ExplorerError, InputError
from explorer.core.tensors import first_tensor  # noqa: F401 - part of this module's interface


@dataclass
class LayerInfo:
    """One row of the layer table (the Netscope / cs231n per-layer table)."""

    name: str  # dotted module path, e.g. "features.0" or "layer1.0.conv1"
    type: str  # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...] | None  # without the batch dimension; None if the module never ran
    params: int  # parameters the module owns itself (not its children)
    macs: int  # multiply-accumulates for one input, summed over every call of the module
    depth: int  # nesting depth (0 = child of the root)
    is_leaf: bool  # has no child modules
    calls: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape) if self.output_shape is not None else None
        return d


def module_macs(module: nn.Module, inputs: tuple, output: torch.Tensor, batch: int | None = None) -> int:
    """Multiply-accumulates of one call for one input (batch dimension divided out).

    ``batch`` is the model input's batch size; without it, the output's first size (which is wrong inside
    modules that fold something else into the batch, like the windows of timm's Swin: pass it).

    Conv: out_elements * (C_in / groups) * prod(kernel); Linear: out_elements * in_features; attention: the
    projections and the QK^T and AV products (L*S*E each). Other layers (ReLU, pooling, normalisation)
    count 0, as in the cs231n / Netscope tables.
    """
    if batch is None:
        batch = output.shape[0] if output.dim() > 0 else 1
    if hasattr(module, "script_macs"):  # a stand-in for a compiled layer (core.models.scripted)
        return module.script_macs(output)
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            x = inputs[0]
            return x.numel() // batch * (module.out_channels // module.groups) * kernel
        return output.numel() // batch * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return output.numel() // batch * module.in_features
    if isinstance(module, nn.Bilinear):
        return output.numel() // batch * module.in1_features * module.in2_features
    if isinstance(module, nn.MultiheadAttention):
        return _attention_macs(module, inputs, output)
    if _is_window_attention(module) and output.dim() == 4:
        return _window_attention_macs(module, output)
    if hasattr(module, "window_size") and callable(getattr(module, "_get_rel_pos_bias", None)) and output.dim() == 3:
        # timm's Swin window attention gets windows as its batch: (batch * windows, N, C); QK^T and AV
        # within every window (its qkv and proj Linears count themselves, given the batch)
        return 2 * (output.shape[0] // batch) * output.shape[1] * output.shape[1] * output.shape[2]
    if isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads") and output.dim() == 3:
        # timm-style attention: its qkv and proj Linears count themselves; the QK^T and AV products here
        tokens, dim = output.shape[1], output.shape[2]
        return 2 * tokens * tokens * dim
    return 0


def _is_window_attention(module: nn.Module) -> bool:
    return isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "window_size") \
        and hasattr(module, "shift_size") and callable(getattr(module, "get_relative_position_bias", None))


def _window_attention_macs(module: nn.Module, output: torch.Tensor) -> int:
    """torchvision's Swin window attention, for one input: its qkv and proj Linears are applied by a
    functional call (their hooks never run), over the map padded to whole windows of N positions, and the
    QK^T and AV products within each window (N per position each)."""
    h, w, c = output.shape[1:]
    wh, ww = (int(s) for s in module.window_size)
    positions = (h + (wh - h % wh) % wh) * (w + (ww - w % ww) % ww)
    return positions * c * 3 * c + positions * c * c + 2 * positions * wh * ww * c


def _attention_macs(module: nn.MultiheadAttention, inputs: tuple, output: torch.Tensor) -> int:
    """``nn.MultiheadAttention``: the q, k, v and output projections and the QK^T and AV products, for one
    input (its projections are applied by a functional call, so the out_proj child's hook never runs)."""
    query = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else output
    key = inputs[1] if len(inputs) > 1 and isinstance(inputs[1], torch.Tensor) else query
    seq_dim = 1 if module.batch_first or query.dim() == 2 else 0
    if query.dim() == 2:
        seq_dim = 0
    q_len, k_len = query.shape[seq_dim], key.shape[seq_dim]
    e, kdim, vdim = module.embed_dim, module.kdim, module.vdim
    projections = q_len * e * e + k_len * e * kdim + k_len * e * vdim + q_len * e * e
    return projections + 2 * q_len * k_len * e


def layer_table(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str | None = None
                ) -> list[LayerInfo]:
    """Run one zero input of ``input_shape`` (C, H, W) through ``model`` and describe every submodule.

    Modules that never run (e.g. auxiliary heads in eval mode) have ``output_shape=None``.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    rows: dict[str, LayerInfo] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue
        own = sum(p.numel() for p in module.parameters(recurse=False))
        rows[name] = LayerInfo(name, getattr(module, "original_name", None) if _is_script(module)
                               else type(module).__name__, None, own, 0, name.count("."),
                               is_leaf=not any(True for _ in module.children()))
        if _is_script(module):  # TorchScript takes no hooks: the row has no shape
            continue

        def hook(mod, inputs, output, row=rows[name]):
            out = first_tensor(output)
            if out is None:
                return
            if row.output_shape is None:
                row.output_shape = tuple(out.shape[1:])
            row.macs += module_macs(mod, inputs, out, batch=1)  # one input ran
            row.calls += 1

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
    return list(rows.values())


def _is_script(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a clear KeyError lists close names when there is none."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        close = [n for n in modules if n and (name in n or n.startswith(name.split(".")[0]))][:8]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no layer named {name!r}{hint}")
    return modules[name]


@contextmanager
def capture(model: nn.Module, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Hooks on just ``layers``; inside the block every forward stores their outputs (detached copies).

    The copy matters: an in-place ReLU after a conv would otherwise overwrite the conv's stored output.
    Hooks are removed on exit.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    me = threading.get_ident()
    for name in layers:
        module = get_layer(model, name)
        if _is_script(module):
            raise ExplorerError(f"layer {name} is inside a TorchScript module, whose layers cannot be "
                                f"captured (TorchScript takes no hooks); save the model's state_dict with "
                                f"torch.save, or the model as a Sequential, to explore them")

        def hook(_mod, _inputs, output, key=name):
            if threading.get_ident() != me:  # another thread (another panel) runs the same module meanwhile
                return
            out = first_tensor(output)
            if out is not None:
                store[key] = out.detach().clone()

        handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def layer_and_output(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a copy of ``layer``'s output, the model's output) for ``x``, by :func:`capture`: for a module that
    runs several times in a pass, its last output, as the layer views show it. Used by the live view's
    forward pass, eager and traced (:mod:`explorer.core.traced`)."""
    with capture(model, [layer]) as store:
        out = first_tensor(model(x))
    if layer not in store:
        raise InputError(f"layer {layer!r} did not run in the forward pass")
    return store[layer], out


@dataclass
class ForwardResult:
    """Outputs of one forward pass: logits (1, K) and the activations of the captured layers."""

    logits: torch.Tensor
    activations: dict[str, torch.Tensor]


def run_forward(model: nn.Module, x: torch.Tensor, layers: list[str] | None = None) -> ForwardResult:
    """Forward ``x`` (N, C, H, W) under no_grad, capturing ``layers``."""
    with torch.no_grad(), capture(model, layers or []) as store:
        out = first_tensor(model(x))
    return ForwardResult(out, dict(store))


def top_k(logits: torch.Tensor, labels: tuple[str, ...] | list[str], k: int = 5) -> list[dict]:
    """Top-k classes of one logit vector (K,) or (1, K): [{"index", "label", "probability"}...]."""
    logits = logits.detach().float().reshape(-1)
    probs = torch.softmax(logits, 0)
    values, indices = probs.topk(min(k, probs.numel()))
    return [{"index": int(i), "label": labels[int(i)] if int(i) < len(labels) else f"class {int(i)}",
             "probability": float(v)} for v, i in zip(values.cpu(), indices.cpu())]


def default_layer(leaves: Sequence[tuple[str, str]]) -> str | None:
    """The layer shown when none is chosen, for every view (the one rule).

    ``leaves`` are (name, type name) of the leaf modules in the order they run. The first convolution's
    activation: the first ReLU among the three leaves after the first convolution, else that
    convolution; a model without convolutions shows its first leaf. None when there are no leaves.
    """
    for i, (name, kind) in enumerate(leaves):
        if kind.startswith("Conv"):
            for after, after_kind in leaves[i + 1:i + 4]:
                if "ReLU" in after_kind:
                    return after
            return name
    return leaves[0][0] if leaves else None


def leaves_of(module: nn.Module) -> list[tuple[str, str]]:
    """(name, type name) of ``module``'s leaf modules in definition order (when no forward has run)."""
    return [(n, type(m).__name__) for n, m in module.named_modules() if n and not list(m.children())]


def leaves_of_rows(rows: Sequence[LayerInfo]) -> list[tuple[str, str]]:
    """(name, type name) of the layer table's leaves that ran, in the order they ran."""
    return [(r.name, r.type) for r in rows if r.is_leaf and r.output_shape is not None]
