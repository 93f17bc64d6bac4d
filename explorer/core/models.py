"""Loading models: torchvision's zoo by name, the bundled shapes model, the user's checkpoints.

Every loader returns a :class:`LoadedModel`: the module in eval mode on its device, and the
:class:`InputSpec` that says how to feed it (size, channels, mean/std, class labels).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from .device import resolve_device
from .errors import ModelLoadError

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
BUNDLED_MODELS = {"shapes": RESOURCES / "models" / "shapes.pt"}
DEFAULT_MODEL = "shapes"
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
                raise ModelLoadError(f"--{name} has {len(values)} values but the model takes "
                                     f"{spec.channels} channels")
        if any(s <= 0 for s in spec.std):
            raise ModelLoadError("--std values must be positive")
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


def zoo_names() -> list[str]:
    """torchvision's image-classification model names (``resnet18``, ``vgg16``, ...)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def bundled_names() -> list[str]:
    return sorted(BUNDLED_MODELS)


def read_labels_file(path: str | Path) -> tuple[str, ...]:
    """Class labels from a text file (one per line) or a JSON list."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelLoadError(f"cannot read labels file {p}: {exc.strerror or exc}") from None
    if p.suffix.lower() == ".json":
        try:
            labels = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"labels file {p} is not valid JSON: {exc.msg}") from None
        if not isinstance(labels, list):
            raise ModelLoadError(f"labels file {p} must hold a JSON list of names")
        return tuple(str(x) for x in labels)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def zoo_spec(name: str) -> InputSpec:
    """Input spec of a zoo model, from its default weights' metadata (no download)."""
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return InputSpec()
    transforms = weights.transforms()
    crop = getattr(transforms, "crop_size", [224])
    size = (crop[0], crop[-1])
    return InputSpec(size=size, channels=3, mean=tuple(getattr(transforms, "mean", IMAGENET_MEAN)),
                     std=tuple(getattr(transforms, "std", IMAGENET_STD)),
                     labels=tuple(weights.meta.get("categories", ())))


def build_zoo_model(name: str, num_classes: int | None = None) -> nn.Module:
    """An untrained torchvision model (random weights); GoogLeNet/Inception without aux heads."""
    kwargs: dict = {"weights": None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    return torchvision.models.get_model(name, **kwargs)


def load_zoo_model(name: str, weights: str = "pretrained", progress: ProgressFn | None = None,
                   weights_url: str | None = None) -> LoadedModel:
    """A torchvision model by name, pretrained (downloaded once, cached) or with random weights."""
    if name not in zoo_names():
        raise ModelLoadError(f"unknown model {name!r}: not a file, not bundled "
                             f"({', '.join(bundled_names())}), not a torchvision classification model")
    spec = zoo_spec(name)
    module = build_zoo_model(name)
    if weights == "none":
        return LoadedModel(name, module.eval(), spec, trained=False, source=f"torchvision {name}, random weights")
    if weights != "pretrained":
        raise ModelLoadError(f"--weights must be 'pretrained' or 'none', not {weights!r}")
    from .download import fetch_weights  # noqa: PLC0415 - only pretrained loading needs it

    enum = torchvision.models.get_model_weights(name).DEFAULT
    path = fetch_weights(enum, progress=progress, url=weights_url)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = module.load_state_dict(state, strict=False)
    bad = [k for k in missing if "aux" not in k] + [k for k in unexpected if "aux" not in k]
    if bad:
        raise ModelLoadError(f"downloaded weights for {name} do not fit the model (first key: {bad[0]})")
    return LoadedModel(name, module.eval(), spec, trained=True, source=f"torchvision {name}, {enum}")


def load_bundled_model(name: str) -> LoadedModel:
    path = BUNDLED_MODELS[name]
    if not path.exists():
        raise ModelLoadError(f"bundled model {name!r} is missing ({path}); run scripts/train_shapes.py")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    from .shapes_net import ShapesNet  # noqa: PLC0415

    module = ShapesNet(num_classes=len(payload["labels"]))
    module.load_state_dict(payload["state_dict"])
    info = payload["input"]
    spec = InputSpec(size=tuple(info["size"]), channels=info["channels"], mean=tuple(info["mean"]),
                     std=tuple(info["std"]), labels=tuple(payload["labels"]))
    acc = payload.get("held_out_accuracy")
    source = f"bundled {name} CNN" + (f" (held-out accuracy {acc:.1%})" if acc is not None else "")
    return LoadedModel(name, module.eval(), spec, trained=True, source=source)


def load_model(name: str | None = None, *, checkpoint: str | Path | None = None, weights: str = "pretrained",
               trust_checkpoint: bool = False, device: str | torch.device | None = None,
               progress: ProgressFn | None = None, input_size: tuple[int, int] | None = None,
               mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
               labels_file: str | Path | None = None, weights_url: str | None = None) -> LoadedModel:
    """Load a model the way the command line and the GUI name it.

    Parameters
    ----------
    name : a bundled name (``shapes``), a torchvision name (``resnet18``), a checkpoint file path, or
        None for the bundled default.
    checkpoint : a checkpoint file; ``name`` (if a zoo name) then says which architecture it fits.
    weights : ``"pretrained"`` (download once, cached) or ``"none"`` (random, shown as untrained);
        ignored when a checkpoint is given.
    trust_checkpoint : allow unpickling whole modules (this runs code from the file).
    progress : called with (bytes done, bytes total) while weights download.
    """
    if checkpoint is None and name and Path(name).suffix and Path(name).exists():
        name, checkpoint = None, name
    if checkpoint is not None:  # ``name``, when given, is the checkpoint's architecture
        from .checkpoint import load_checkpoint  # noqa: PLC0415

        loaded = load_checkpoint(checkpoint, arch=name, trust=trust_checkpoint)
    elif (name := name or DEFAULT_MODEL) in BUNDLED_MODELS:
        loaded = load_bundled_model(name)
    else:
        loaded = load_zoo_model(name, weights=weights, progress=progress, weights_url=weights_url)
    labels = read_labels_file(labels_file) if labels_file else None
    loaded.spec = loaded.spec.with_overrides(size=input_size, mean=mean, std=std, labels=labels)
    loaded.module.eval()
    for p in loaded.module.parameters():
        p.requires_grad_(False)
    return loaded.to(resolve_device(device))
