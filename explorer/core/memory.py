"""How much memory a forward pass will need, estimated before anything of that size is allocated.

The estimate (:func:`estimate_forward_bytes`) runs the model twice on small zero inputs (square sides
of 64 and 96 pixels, then 128/192 and 224/320 for models that need larger ones) and counts the
activation elements by the cost table's rule (:mod:`explorer.core.costs`: the tensors each leaf layer
returns that are new storage; in-place layers and views add none). Each count is a + b x area (convolutions and pooling scale
with the input's area, layers after adaptive pooling do not), so the two probes fix a and b and the
total is extrapolated to the requested size. The sum of all leaf outputs is what a backward pass keeps;
a no-grad forward frees most of them early, so the estimate is an upper bound there. Models that run
at no small size (fixed-size graphs) are estimated by their input alone. Inputs, the picture decoded
for display, gradients (x2) and the batch size multiply in.

The limit (:func:`memory_limit`) is ``DEEP_EXPLORER_MEMORY_LIMIT`` when set (bytes, or with a unit:
``512M``, ``8G``, ``1.5T``; ``0`` or ``none`` turns the check off), else the available memory of the
device: free GPU memory for CUDA, else the system's available memory (psutil when importable, else
``MemAvailable`` in /proc/meminfo). When neither can be read there is no limit.
"""
from __future__ import annotations

import math
import os
import re
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from explorer.core.costs import cost_table
from explorer.core.errors import ResourceLimitError

LIMIT_ENV = "DEEP_EXPLORER_MEMORY_LIMIT"
_PROBE_SIDES = ((64, 96), (128, 192), (224, 320))
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int | None:
    """``"8G"`` → 8 GiB in bytes; ``"0"``, ``"none"``, ``"off"`` → None (no limit); ValueError otherwise."""
    t = text.strip().upper().replace("IB", "").replace(" ", "")
    if t in ("0", "NONE", "OFF", "UNLIMITED"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?B?)", t)
    if not m:
        raise ValueError(text)
    unit = m.group(2).rstrip("B") if m.group(2) != "B" else "B"
    return int(float(m.group(1)) * _UNITS[unit])


def available_memory() -> int | None:
    """Bytes of system memory available to a new allocation (psutil, else /proc/meminfo), or None."""
    try:
        import psutil  # noqa: PLC0415

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - not installed, or no answer on this platform
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def device_memory(device: torch.device | str | None) -> int | None:
    """Free bytes on ``device``: CUDA's free memory, else :func:`available_memory`."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception:  # noqa: BLE001
            return None
    return available_memory()


def memory_limit(device: torch.device | str | None = None) -> tuple[int | None, str]:
    """(limit in bytes or None for none, where it comes from in words)."""
    text = os.environ.get(LIMIT_ENV)
    if text:
        try:
            return parse_bytes(text), f"{LIMIT_ENV}={text}"
        except ValueError:
            raise ResourceLimitError(f"{LIMIT_ENV}={text!r} is not a size (use e.g. 8G, 512M or 0 for no limit)",
                                     LIMIT_ENV) from None
    device = torch.device(device) if device is not None else torch.device("cpu")
    where = "free GPU memory" if device.type == "cuda" else "available memory"
    return device_memory(device), where


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


@dataclass(frozen=True)
class ActivationModel:
    """Leaf-output elements per input as ``constant + per_pixel * H * W`` (None: the probes failed)."""

    constant: float
    per_pixel: float

    def elements(self, size: tuple[int, int]) -> float:
        return self.constant + self.per_pixel * size[0] * size[1]


# Per model (weakly held: a model that is dropped takes its entries along), per (channels, device).
_cache: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, str], ActivationModel | None]]" = \
    weakref.WeakKeyDictionary()


def _leaf_elements(model: nn.Module, channels: int, side: int, device: torch.device) -> int:
    """Activation elements of one forward at ``side`` x ``side``, by the cost table's counting rule (new
    storage only: in-place layers and views add none; :mod:`explorer.core.costs`)."""
    table = cost_table(model, (channels, side, side), device=device)
    counted = sum(r.activations for r in table.rows[1:])  # the input is counted apart
    if counted == 0:  # no hooks could be placed (a TorchScript module): count the output
        with torch.no_grad():
            out = model(torch.zeros((1, channels, side, side), device=device))
        counted = out.numel() if isinstance(out, torch.Tensor) else 0
    return counted

def activation_model(model: nn.Module, channels: int, device: torch.device | str | None = None
                     ) -> ActivationModel | None:
    """The fitted element count of ``model``'s leaf outputs (cached per model and channels)."""
    device = torch.device(device) if device is not None else _device_of(model)
    key = (channels, str(device))
    known = _cache.setdefault(model, {})
    if key in known:
        return known[key]
    fitted = None
    for small, large in _PROBE_SIDES:
        try:
            n1 = _leaf_elements(model, channels, small, device)
            n2 = _leaf_elements(model, channels, large, device)
        except Exception:  # noqa: BLE001 - too small for this model (or a fixed input size): try larger
            continue
        per_pixel = max(0.0, (n2 - n1) / (large * large - small * small))
        fitted = ActivationModel(max(0.0, n1 - per_pixel * small * small), per_pixel)
        break
    known[key] = fitted
    return fitted


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def estimate_forward_bytes(model: nn.Module, shape: tuple[int, int, int], batch: int = 1,
                           gradients: bool = False, device: torch.device | str | None = None) -> int:
    """Bytes a forward of ``batch`` inputs of ``shape`` (C, H, W) needs: input, picture, activations.

    ``gradients``: a backward pass follows (activations are kept and gradients of the same size made).
    """
    c, h, w = shape
    pixels = h * w
    input_bytes = 4 * c * pixels * batch
    picture_bytes = 3 * pixels * 2  # the fitted uint8 image and the picture shown, per input
    fitted = activation_model(model, c, device)
    activations = 4 * fitted.elements((h, w)) * batch if fitted is not None else 0.0
    factor = 2 if gradients else 1
    return int(math.ceil(input_bytes * factor + picture_bytes + activations * factor))


def check_forward_memory(model: nn.Module, shape: tuple[int, int, int], batch: int = 1,
                         gradients: bool = False, device: torch.device | str | None = None,
                         what: str = "the forward pass") -> int:
    """Refuse (:class:`ResourceLimitError`) a forward that cannot fit the limit; return the estimate.

    The input's size alone is checked first, so that a huge request never runs even the small probes.
    """
    limit, where = memory_limit(device)
    c, h, w = shape
    if limit is None:
        return 0
    needed = 4 * c * h * w * batch
    if needed <= limit:
        needed = estimate_forward_bytes(model, shape, batch, gradients, device)
    if needed > limit:
        size = f"{h}x{w}" + (f" (batch of {batch})" if batch > 1 else "")
        raise ResourceLimitError(
            f"{what} at input size {size} needs about {format_bytes(needed)}, more than the limit of "
            f"{format_bytes(limit)} ({where}); use a smaller input, or set {LIMIT_ENV} (e.g. 16G, or 0 "
            f"for no limit)", LIMIT_ENV)
    return needed
