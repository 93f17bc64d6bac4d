"""What a loaded model is: the module, and the input spec that says how to feed it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from explorer.core.errors import ModelLoadError
from torch import nn

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input tensor: ``(x / 255 - mean) / std`` at ``size``."""

    size: tuple[int, int] = (224, 224)  # (H, W)
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    labels: tuple[str, ...] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed input."""
        return (self.channels, *self.size)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def with_overrides(self, size: tuple[int, int] | None = None, mean: tuple[float, ...] | None = None,
                       std: tuple[float, ...] | None = None, labels: tuple[str, ...] | None = None,
                       channels: int | None = None) -> "InputSpec":
        spec = replace(self,
                       size=tuple(size) if size else self.size,
                       channels=channels or self.channels,
                       mean=tuple(mean) if mean else self.mean,
                       std=tuple(std) if std else self.std,
                       labels=tuple(labels) if labels is not None else self.labels)
        for name in ("mean", "std"):
            values = getattr(spec, name)
            if len(values) == 1 and spec.channels > 1:
                spec = replace(spec, **{name: values * spec.channels})
            elif len(values) != spec.channels:
                raise ModelLoadError(f"{name} has {len(values)} values but the model takes "
                                     f"{spec.channels} channels")
        if any(s <= 0 for s in spec.std):
            raise ModelLoadError("std values must be positive")
        return spec


@dataclass
class LoadedModel:
    """A model ready to explore."""

    name: str
    module: nn.Module
    spec: InputSpec
    trained: bool  # False for random weights: shown everywhere as "untrained"
    source: str  # where it came from, in words
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def display_name(self) -> str:
        return self.name if self.trained else f"{self.name} (untrained)"

    def to(self, device: str | torch.device) -> "LoadedModel":
        """Move the module to ``device`` (in place) and return self."""
        self.device = torch.device(device)
        self.module.to(self.device)
        return self


def read_labels_file(path: str | Path) -> tuple[str, ...]:
    """Class labels from a text file (one per line) or a JSON list."""
    p = Path(path)
    if p.is_dir():
        raise ModelLoadError(f"labels file {p} is a folder")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read labels file {p}: {exc.strerror or exc}") from None
    try:
        if b"\x00" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), raw.index(b"\x00") + 1, "NUL byte")
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ModelLoadError(f"labels file {p} is not a UTF-8 text file (one label per line) "
                             f"or a JSON list") from None
    if p.suffix.lower() == ".json":
        try:
            labels = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"labels file {p} is not valid JSON: {exc.msg}") from None
        if not isinstance(labels, list):
            raise ModelLoadError(f"labels file {p} must hold a JSON list of names")
        return tuple(str(x) for x in labels)
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise ModelLoadError(f"labels file {p} holds no labels")
    return labels


def check_labels(labels: tuple[str, ...], classes: int | None, source: str = "the labels file") -> None:
    """A labels list must name every class of the model's output, no more and no fewer."""
    if classes is not None and len(labels) != classes:
        raise ModelLoadError(f"{source} has {len(labels)} label{'s' if len(labels) != 1 else ''} but the "
                             f"model has {classes} output classes")
