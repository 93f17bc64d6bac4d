"""Which compute device to run on: CUDA when present, else Apple's MPS, else the CPU."""
from __future__ import annotations

import torch
from explorer.core.errors import ExplorerError


class DeviceError(ExplorerError, ValueError):
    """A device was asked for that this machine does not have."""


def available_devices() -> list[str]:
    """Device names usable here, best first (e.g. ``["cuda:0", "cpu"]``)."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(name: str | None = None) -> torch.device:
    """``None`` or ``"auto"`` picks the best device; otherwise the named one, checked to exist."""
    if name in (None, "", "auto"):
        return torch.device(available_devices()[0])
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but CUDA is not available on this machine")
    if device.type == "mps" and "mps" not in available_devices():
        raise DeviceError(f"device {name!r} asked for, but MPS is not available on this machine")
    return device


def describe_device(device: torch.device) -> str:
    """A short label for the status bar, e.g. ``"cuda:0 (NVIDIA H100)"`` or ``"cpu"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
