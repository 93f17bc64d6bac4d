"""Which architecture a state dict is: matching tensor names and shapes, without allocating weights.

ShapesNet and every torchvision classification model are candidates; each is built on the meta device
(no memory for its weights) to read its state dict's names and shapes.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from explorer.core.errors import ModelLoadError
from explorer.core.models.shapes import (
    SHAPES_INPUT_SIZE,
    SHAPES_MEAN,
    SHAPES_STD,
    ShapesNet,
)
from explorer.core.models.shapes_data import SHAPE_CLASSES
from explorer.core.models.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from explorer.core.models.zoo import build_zoo_model, zoo_names, zoo_spec
from torch import nn
from torch.overrides import TorchFunctionMode

SHAPES_ARCH = "shapes_net"
_ARCH_ALIASES = {"shapes": SHAPES_ARCH, "shapesnet": SHAPES_ARCH, "shapes_net": SHAPES_ARCH}

# build_zoo_model drops GoogLeNet's and Inception's auxiliary heads; torchvision's own files have them.
_AUX_PREFIXES = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
SHOWN_KEYS = 3
# Factories that take a shape; sending them to the meta device builds a model without memory for its
# weights, while value-producing factories (arange, tensor) stay real so that constructors that compute
# on values (RegNet's block widths call .tolist()) still work, which `with torch.device("meta")` breaks.
_SHAPE_FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
                              torch.randint, torch.empty_strided, torch.normal})


class _ShapeFactoriesOnMeta(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _SHAPE_FACTORIES and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


@dataclass
class ArchitectureMatch:
    """How a state dict fits one architecture: ``ok`` when names and shapes all agree."""

    arch: str
    num_classes: int | None = None  # set when the checkpoint's classifier has other out-features
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (key, file, model)
    matched: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def distance(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self) -> str:
        """The architecture in words: ``resnet18`` or ``resnet18 with 10 classes``."""
        return self.arch if self.num_classes is None else f"{self.arch} with {self.num_classes} classes"

    def problem(self) -> str:
        """Why the state dict does not fit, in one phrase."""
        parts = []
        if self.missing:
            parts.append(f"{count_words(len(self.missing), 'missing key')} ({_first(self.missing)})")
        if self.unexpected:
            parts.append(f"{count_words(len(self.unexpected), 'unexpected key')} ({_first(self.unexpected)})")
        if parts:
            return "; ".join(parts)
        key, in_file, in_model = self.mismatched[0]
        more = len(self.mismatched) - 1
        return (f"shape mismatch: {key} is {shape_words(in_file)} in the file but {shape_words(in_model)} in the model"
                + (f" (and {count_words(more, 'more tensor')})" if more else ""))


def detect_architecture(signature: Mapping[str, tuple[int, ...]]) -> ArchitectureMatch | None:
    """The architecture whose state dict has exactly these names and shapes, or None.

    ``signature`` maps state-dict keys to shapes. ShapesNet and every torchvision classification model
    are tried; a classifier with other out-features than the default counts as a match (with
    ``num_classes`` set).
    """
    match, _ = closest_architecture(signature)
    return match


# --- architectures -------------------------------------------------------------------------------


def canonical_arch(arch: str, path: Path) -> str:
    name = _ARCH_ALIASES.get(arch.lower(), arch)
    if name == SHAPES_ARCH or name in zoo_names():
        return name
    raise ModelLoadError(f"unknown architecture {arch!r} for {path.name}: name a torchvision classification model "
                         f"(resnet18, vgg16, ...) or {SHAPES_ARCH}, or leave it out to detect it")


def build_architecture(arch: str, num_classes: int | None = None) -> nn.Module:
    if arch == SHAPES_ARCH:
        return ShapesNet() if num_classes is None else ShapesNet(num_classes=num_classes)
    return build_zoo_model(arch, num_classes=num_classes)


@functools.cache
def architecture_signature(arch: str, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of an architecture, from a copy built without weight memory."""
    with _ShapeFactoriesOnMeta():
        module = build_architecture(arch, num_classes)
    return signature_of(module.state_dict())


def _candidates(hint: str = "") -> list[str]:
    """Every architecture; those named in ``hint`` (the file name) first, as they are the likeliest."""
    names = [SHAPES_ARCH, *zoo_names()]
    named = sorted((n for n in names if n in hint.lower()), key=len, reverse=True)
    return named + [n for n in names if n not in named]


def match_architecture(arch: str, signature: Mapping[str, tuple[int, ...]]) -> ArchitectureMatch:
    signature = without_aux(arch, signature)
    expected = architecture_signature(arch)
    match = _compare(arch, None, expected, signature)
    num_classes = _changed_num_classes(expected, signature, match)
    if num_classes is not None:
        match = _compare(arch, num_classes, architecture_signature(arch, num_classes), signature)
    return match


def _compare(arch: str, num_classes: int | None, expected: Mapping[str, tuple[int, ...]],
             actual: Mapping[str, tuple[int, ...]]) -> ArchitectureMatch:
    # Files from before BatchNorm counted batches lack num_batches_tracked; BatchNorm loads them anyway.
    missing = [k for k in expected if k not in actual and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in actual if k not in expected]
    mismatched = [(k, actual[k], shape) for k, shape in expected.items() if k in actual and actual[k] != shape]
    matched = sum(1 for k in actual if k in expected)
    return ArchitectureMatch(arch, num_classes, missing, unexpected, mismatched, matched)


def _changed_num_classes(expected: Mapping[str, tuple[int, ...]], actual: Mapping[str, tuple[int, ...]],
                         match: ArchitectureMatch) -> int | None:
    """The checkpoint's class count when the only difference is the final classifier's out-features."""
    if match.missing or match.unexpected or not match.mismatched:
        return None
    weights = [k for k, shape in expected.items() if k.endswith("weight") and len(shape) >= 2]
    if not weights:
        return None
    head = weights[-1][: -len("weight")]
    if not {k for k, _, _ in match.mismatched} <= {head + "weight", head + "bias"}:
        return None
    weight = actual[head + "weight"]
    if weight[1:] != expected[head + "weight"][1:] or actual.get(head + "bias", (weight[0],)) != (weight[0],):
        return None
    return weight[0]


def without_aux(arch: str, signature: Mapping[str, tuple[int, ...]]) -> Mapping[str, tuple[int, ...]]:
    prefixes = _AUX_PREFIXES.get(arch)
    return {k: v for k, v in signature.items() if not k.startswith(prefixes)} if prefixes else signature


def closest_architecture(signature: Mapping[str, tuple[int, ...]],
            hint: str = "") -> tuple[ArchitectureMatch | None, ArchitectureMatch | None]:
    """(the matching architecture or None, the closest one).

    Torchvision's architectures differ in at least one name or shape besides the classifier, so the
    first match is the only one.
    """
    closest = None
    for arch in _candidates(hint):
        match = match_architecture(arch, signature)
        if match.ok:
            return match, match
        # Closeness: a missed or extra tensor counts one, relative to the size of both.
        if closest is None or _relative_distance(match, signature) < _relative_distance(closest, signature):
            closest = match
    return None, closest


def _relative_distance(match: ArchitectureMatch, signature: Mapping) -> float:
    return match.distance / max(1, len(signature) + len(match.missing))


def instantiate(match: ArchitectureMatch, state: Mapping[str, torch.Tensor], path: Path) -> nn.Module:
    """The architecture with the checkpoint's tensors in it, in eval mode on the CPU."""
    state = OrderedDict(without_aux(match.arch, state))
    expected = architecture_signature(match.arch, match.num_classes)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    with _ShapeFactoriesOnMeta():
        module = build_architecture(match.arch, match.num_classes)
    # Some modules read their format version from the state dict's metadata (MNASNet refuses to load
    # without it); safetensors files and re-keyed dicts have none, and the names now match this build.
    state._metadata = module.state_dict()._metadata  # type: ignore[attr-defined]
    try:
        module.load_state_dict(state, strict=True, assign=True)
        if any(t.is_meta for t in itertools.chain(module.parameters(), module.buffers())):
            # A buffer outside the state dict (non-persistent) would stay empty: build it for real.
            module = build_architecture(match.arch, match.num_classes)
            module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path.name} cannot be loaded into {match.describe()} ({first_line(exc)})") from None
    return module.eval()


# --- input specs ---------------------------------------------------------------------------------


def spec_for(match: ArchitectureMatch) -> InputSpec:
    if match.arch == SHAPES_ARCH:
        num_classes = match.num_classes or len(SHAPE_CLASSES)
        labels = tuple(SHAPE_CLASSES) if num_classes == len(SHAPE_CLASSES) else ()
        return InputSpec(size=SHAPES_INPUT_SIZE, channels=3, mean=SHAPES_MEAN, std=SHAPES_STD, labels=labels)
    spec = zoo_spec(match.arch)
    if match.num_classes is not None and match.num_classes != len(spec.labels):
        spec = InputSpec(size=spec.size, channels=spec.channels, mean=spec.mean, std=spec.std, labels=())
    return spec


def inferred_spec(state: Mapping[str, torch.Tensor]) -> InputSpec:
    """Channels (and for an MLP, the image size) from the first conv or linear weight; 224x224 otherwise."""
    for key, tensor in state.items():
        if not key.endswith("weight") or tensor.dim() not in (2, 4):
            continue
        if tensor.dim() == 4:
            return default_spec(int(tensor.shape[1]), (224, 224))
        features = int(tensor.shape[1])
        for channels in (3, 1):
            side = math.isqrt(features // channels)
            if side * side * channels == features:
                return default_spec(channels, (side, side))
        return default_spec(1, (1, features))
    return InputSpec()


def default_spec(channels: int, size: tuple[int, int]) -> InputSpec:
    if channels == 3:
        return InputSpec(size=size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if channels == 1:  # ImageNet's statistics averaged over the colour channels
        return InputSpec(size=size, channels=1, mean=(0.449,), std=(0.226,))
    return InputSpec(size=size, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)


# --- wording -------------------------------------------------------------------------------------


def count_words(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (", ..." if len(keys) > SHOWN_KEYS else "")


def shape_words(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape) if shape else "a scalar"



def signature_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
