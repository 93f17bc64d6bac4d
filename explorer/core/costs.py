"""What a network costs, layer by layer: activation memory, parameter memory, MACs and FLOPs.

The table the cs231n lectures draw for VGG16 ("CONV3-64: [224x224x64] memory: 224*224*64 = 3.2M,
params: (3*3*3)*64 = 1,728 …"), for any model, at its input size and a chosen batch size.

The counting rule
-----------------
- A leaf module's activation memory is the size of the tensors it returns that are new storage: an
  in-place ReLU returns its input's storage and adds nothing, nor does a view (``Flatten``, ``view``,
  an identity ``Dropout`` in eval mode). A module called several times (a ReLU reused in every block)
  counts every call's output.
- The input counts as its own row (``input``), as on the slide.
- Parameter memory is each module's own parameters (not its children's) at their dtype; buffers
  (BatchNorm's running statistics) are counted apart.
- A module with children has a row when it computes something itself: it owns parameters (a ViT's
  position embedding, ``nn.MultiheadAttention``'s input projection; the model's own class token is the row
  ``(model)``) or multiply-accumulates (attention's QK^T and AV products). Its activation memory is what
  it returns that is new storage and no child returned (MultiheadAttention's output, computed
  functionally: its ``out_proj`` never runs as a module).
- MACs are multiply-accumulates (conv: output elements x C_in/groups x kernel area; linear: output
  elements x in-features); FLOPs are 2 x MACs. Other layers count 0, as in the cs231n / Netscope tables.

Totals
------
``forward_bytes`` is what a forward pass holds if every activation were kept (an upper bound for a
no-grad forward, which frees them as it goes). ``training_bytes(optimizer)`` estimates one training
step: the weights, the activations kept for backward (all of them, counted as above, plus max-pooling's
int64 indices), the two largest activation gradients (alive together during backward), one gradient per
parameter, the optimizer's state (SGD with momentum: one buffer per parameter; Adam: two) and, for
Adam, one parameter-sized temporary of its update. The bad-input rules refuse a forward by the same activation count
(:func:`explorer.core.memory.estimate_forward_bytes` extrapolates it to sizes too large to run).
"""
from __future__ import annotations

import csv
import io
import threading
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from explorer.core.probe import module_macs
from explorer.core.tensors import first_tensor

OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "adam": 2}  # extra buffers per parameter


@dataclass
class CostRow:
    """One layer of the cost table (for one input; multiply activations and MACs by the batch)."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    activations: int  # elements of new storage the layer's calls return, per input
    activation_bytes: int  # the same in bytes at the outputs' dtype
    params: int
    param_bytes: int
    macs: int
    calls: int = 0
    shares_input: bool = False  # in place or a view: no memory of its own
    saved_extra_bytes: int = 0  # what backward keeps besides the output (max-pooling's int64 indices)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self, batch: int = 1) -> dict:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape) if self.output_shape is not None else None
        d["flops"] = self.flops
        for key in ("activations", "activation_bytes", "macs", "flops"):
            d[key] = d[key] * batch
        return d


@dataclass
class CostTable:
    rows: list[CostRow]
    batch: int = 1
    buffer_bytes: int = 0
    dtype: str = "float32"
    input_size: tuple[int, ...] = field(default_factory=tuple)

    @property
    def activations(self) -> int:
        return self.batch * sum(r.activations for r in self.rows)

    @property
    def activation_bytes(self) -> int:
        return self.batch * sum(r.activation_bytes for r in self.rows)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def param_bytes(self) -> int:
        return sum(r.param_bytes for r in self.rows)

    @property
    def macs(self) -> int:
        return self.batch * sum(r.macs for r in self.rows)

    @property
    def forward_bytes(self) -> int:
        """Weights, buffers and every activation of a forward pass of the batch."""
        return self.param_bytes + self.buffer_bytes + self.activation_bytes

    def training_bytes(self, optimizer: str = "momentum") -> int:
        """One training step of the batch: weights, buffers, the activations kept for backward (and
        max-pooling's indices), the two largest activation gradients alive at once during backward, one
        gradient per parameter, the optimizer's state and Adam's parameter-sized temporary."""
        state = OPTIMIZER_STATE[optimizer]
        kept = self.activation_bytes + self.batch * sum(r.saved_extra_bytes for r in self.rows)
        largest = sorted((r.activation_bytes for r in self.rows), reverse=True)[:2]
        update_temporary = self.param_bytes if optimizer == "adam" else 0  # Adam's update divides by a new tensor
        return (self.param_bytes * (2 + state) + update_temporary + self.buffer_bytes + kept
                + self.batch * sum(largest))

    def totals(self) -> dict:
        return {"batch": self.batch, "activations": self.activations, "activation_bytes": self.activation_bytes,
                "params": self.params, "param_bytes": self.param_bytes, "buffer_bytes": self.buffer_bytes,
                "macs": self.macs, "flops": 2 * self.macs, "forward_bytes": self.forward_bytes,
                "training_bytes": {name: self.training_bytes(name) for name in ("sgd", "momentum", "adam")}}

    def to_csv(self) -> str:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["name", "type", "output_shape", "activations", "activation_bytes", "params", "param_bytes",
                    "macs", "flops"])
        for r in self.rows:
            d = r.to_dict(self.batch)
            w.writerow([r.name, r.type, "x".join(map(str, r.output_shape or ())), d["activations"],
                        d["activation_bytes"], r.params, r.param_bytes, d["macs"], d["flops"]])
        t = self.totals()
        w.writerow(["total", "", "", t["activations"], t["activation_bytes"], t["params"], t["param_bytes"],
                    t["macs"], t["flops"]])
        return out.getvalue()


def _storages(value) -> set[int]:
    """Data pointers of the storages of every tensor in ``value`` (tensors, tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        return {value.untyped_storage().data_ptr()}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        out: set[int] = set()
        for item in value:
            out |= _storages(item)
        return out
    return set()


def _new_tensors(output, inputs: set[int]) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [] if output.untyped_storage().data_ptr() in inputs else [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _new_tensors(item, inputs)]
    return []


def cost_table(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1,
               device: torch.device | str | None = None) -> CostTable:
    """Run one zero input of ``input_shape`` (C, H, W) and count every leaf module's costs.

    The figures are per input; :class:`CostTable` multiplies them by ``batch``.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    rows: dict[str, CostRow] = {}
    handles = []
    me = threading.get_ident()
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    x = torch.zeros((1, *input_shape), device=device, dtype=dtype)
    input_row = CostRow("input", "input", tuple(input_shape), x.numel(), x.numel() * x.element_size(), 0, 0, 0, 1)
    returned: list[int] = []  # storages the calls of leaf modules returned, in order (for parents' rows)
    for name, module in model.named_modules():
        leaf = not any(True for _ in module.children())
        params = list(module.parameters(recurse=False))
        if not leaf and not params and not _computes_itself(module):
            continue
        if not name and params:  # the model's own parameters (a class token): counted, never hooked
            rows["(model)"] = CostRow("(model)", type(module).__name__, None, 0, 0, sum(p.numel() for p in params),
                                      sum(p.numel() * p.element_size() for p in params), 0)
            continue
        if not name:
            continue
        row = CostRow(name, type(module).__name__, None, 0, 0, sum(p.numel() for p in params),
                      sum(p.numel() * p.element_size() for p in params), 0)
        rows[name] = row

        def pre_hook(_mod, inputs, row=row):
            if threading.get_ident() == me:
                row._inputs = _storages(inputs)  # type: ignore[attr-defined]
                row._first_child = len(returned)  # type: ignore[attr-defined]

        def hook(mod, inputs, output, row=row, leaf=leaf):
            out = first_tensor(output)
            if out is None or threading.get_ident() != me:  # another thread's forward of the same module
                return
            if row.output_shape is None:
                row.output_shape = tuple(out.shape[1:])
            seen = getattr(row, "_inputs", set())
            if leaf:
                returned.extend(_storages(output))
            else:  # what its children returned is theirs
                seen = seen | set(returned[getattr(row, "_first_child", len(returned)):])
            fresh = _new_tensors(output, seen)
            if not fresh:
                row.shares_input = True
            if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
                row.saved_extra_bytes += 8 * sum(t.numel() for t in fresh)  # int64 indices for backward
            row.activations += sum(t.numel() for t in fresh)
            row.activation_bytes += sum(t.numel() * t.element_size() for t in fresh)
            row.macs += module_macs(mod, inputs, out, batch=1)  # one input ran
            row.calls += 1

        try:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(hook))
        except RuntimeError:  # TorchScript submodules take no hooks: the row stays without figures
            continue
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for row in rows.values():
        row.__dict__.pop("_inputs", None)
        row.__dict__.pop("_first_child", None)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return CostTable([input_row, *rows.values()], batch, buffers, str(dtype).replace("torch.", ""),
                     tuple(input_shape))


def _computes_itself(module: nn.Module) -> bool:
    """Attention modules multiply-accumulate themselves besides their children (core.probe.module_macs)."""
    return isinstance(module, nn.MultiheadAttention) or (
        isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads"))


def block_params(model: nn.Module, prefix: str) -> int:
    """Parameters of every module under ``prefix`` (a block such as GoogLeNet's ``inception3a``)."""
    module = model.get_submodule(prefix)
    return sum(p.numel() for p in module.parameters())


def format_count(n: float) -> str:
    """Compact numbers for narrow columns, three significant digits: 950, 7.1K, 15.5M, 116G (at most 5
    characters below 1000T; 999,950 is 1.0M, not 1000.0K)."""
    if abs(n) < 999.5:
        return f"{n:.0f}"
    for unit, div in (("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        value = n / div
        if abs(value) < 99.95:
            return f"{value:.1f}{unit}"
        if abs(value) < 999.5 or unit == "T":
            return f"{value:.0f}{unit}"
    return f"{n:.0f}"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
