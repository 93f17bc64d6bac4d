"""Loading the user's checkpoint files.

Formats: TorchScript archives, ``torch.export`` programs (.pt2), state dicts saved with ``torch.save``
(.pt/.pth, bare or wrapped as ``{"state_dict": ...}``), safetensors files, the bundled
``deep-explorer/bundled-cnn/1`` format, and (only when the user trusts the file) whole pickled modules.

A state dict holds tensor names and shapes but no architecture. Unless the caller names it, the
architecture is detected by matching those names and shapes against ShapesNet and every torchvision
classification model, each built without allocating its weights.

Every failure is one :class:`~explorer.core.errors.ModelLoadError` line that names the problem.
"""
from __future__ import annotations

import functools
import io
import itertools
import math
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import ModelLoadError, UntrustedCheckpointError
from .models import IMAGENET_MEAN, IMAGENET_STD, InputSpec, LoadedModel, build_zoo_model, zoo_names, zoo_spec
from .shapes_data import SHAPE_CLASSES
from .shapes_net import SHAPES_FORMAT, SHAPES_INPUT_SIZE, SHAPES_MEAN, SHAPES_STD, ShapesNet

SHAPES_ARCH = "shapes_net"
_ARCH_ALIASES = {"shapes": SHAPES_ARCH, "shapesnet": SHAPES_ARCH, "shapes_net": SHAPES_ARCH}
# Keys under which training scripts commonly nest the state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module")
# Prefixes added by nn.DataParallel / DistributedDataParallel, torch.compile, and wrappers that hold the
# network as ``self.model`` or ``self.net`` (PyTorch Lightning modules, for one).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
# build_zoo_model drops GoogLeNet's and Inception's auxiliary heads; torchvision's own files have them.
_AUX_PREFIXES = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
_SHOWN_KEYS = 3
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
            parts.append(f"{_count(len(self.missing), 'missing key')} ({_first(self.missing)})")
        if self.unexpected:
            parts.append(f"{_count(len(self.unexpected), 'unexpected key')} ({_first(self.unexpected)})")
        if parts:
            return "; ".join(parts)
        key, in_file, in_model = self.mismatched[0]
        more = len(self.mismatched) - 1
        return (f"shape mismatch: {key} is {_shape(in_file)} in the file but {_shape(in_model)} in the model"
                + (f" (and {_count(more, 'more tensor')})" if more else ""))


def load_checkpoint(path: str | Path, arch: str | None = None, trust: bool = False) -> LoadedModel:
    """A model from a checkpoint file, on the CPU, in eval mode, marked trained.

    Parameters
    ----------
    path : the file: TorchScript, ``torch.export`` .pt2, ``torch.save``'d state dict (.pt/.pth), safetensors,
        the bundled format, or a pickled ``nn.Module``.
    arch : the architecture of a state dict: a torchvision classification model name or ``shapes_net``.
        None detects it. Files that carry their own architecture (TorchScript, .pt2, modules) use it only
        for the input spec.
    trust : allow unpickling arbitrary Python objects (a whole module, or a dict holding objects that
        are not tensors). Unpickling runs code from the file, so only for files the user trusts.

    Raises
    ------
    ModelLoadError : one line naming the problem. :class:`UntrustedCheckpointError` (a subclass) when the
        file needs ``trust=True``, so that a dialog can ask.
    """
    path = Path(path)
    kind = _sniff(path)
    if kind == "torchscript":
        return _load_torchscript(path, arch)
    if kind == "export":
        return _load_exported(path, arch)
    if kind == "safetensors":
        return _from_payload(_read_safetensors(path), path, arch, fmt="safetensors state dict")
    return _from_payload(_torch_load(path, trust), path, arch, fmt="state dict")


def detect_architecture(signature: Mapping[str, tuple[int, ...]]) -> ArchitectureMatch | None:
    """The architecture whose state dict has exactly these names and shapes, or None.

    ``signature`` maps state-dict keys to shapes. ShapesNet and every torchvision classification model
    are tried; a classifier with other out-features than the default counts as a match (with
    ``num_classes`` set).
    """
    match, _ = _detect(signature)
    return match


# --- reading files --------------------------------------------------------------------------------


def _sniff(path: Path) -> str:
    """'torchscript', 'export', 'torch' or 'safetensors'; ModelLoadError for anything else."""
    if not path.exists():
        raise ModelLoadError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a checkpoint file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise ModelLoadError(f"{path.name} is empty (0 bytes): not a checkpoint")
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    # torch.save's legacy (non-zip) format and plain pickles start with the PROTO opcode.
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        if _starts_with_torch_magic(head):
            return "torch"
        raise ModelLoadError(f"{path.name} is not a PyTorch checkpoint: it is a plain Python pickle "
                             f"(save the model or its state_dict with torch.save)")
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if path.suffix.lower() == ".safetensors":
        raise ModelLoadError(f"{path.name} is not a valid safetensors file (its header is damaged)")
    raise ModelLoadError(f"{path.name} is not a checkpoint: {_describe_content(head)}")


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        raise ModelLoadError(f"{path.name} is damaged or incomplete (a zip archive that cannot be read; "
                             f"was the download or save cut short?)") from None
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") for n in names) or any("/models/" in n and n.endswith(".json")
                                                                   for n in names):
        return "export"
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    raise ModelLoadError(f"{path.name} is not a checkpoint: a zip archive without PyTorch data in it")


def _starts_with_torch_magic(head: bytes) -> bool:
    """Whether a pickle stream's first object is torch.save's magic number (read without unpickling)."""
    try:
        ops = itertools.islice(pickletools.genops(io.BytesIO(head)), 2)
        return [arg for _, arg, _ in ops][-1] == torch.serialization.MAGIC_NUMBER
    except (ValueError, IndexError):
        return False


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    if len(head) < 10:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


_MAGIC = [(b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
          (b"\x89HDF", "an HDF5 file (Keras? export the model from PyTorch instead)"),
          (b"\x93NUMPY", "a NumPy array file"), (b"\x1f\x8b", "a gzip archive")]


def _describe_content(head: bytes) -> str:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"it looks like {what}"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "it looks like a WebP image"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "it is a text file"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a multi-byte character cut by the 4 KiB window
                return "it is a text file"
    return ("its content is not recognised (expected TorchScript, torch.export .pt2, a torch.save'd state dict "
            "or safetensors)")


def _torch_load(path: Path, trust: bool):
    """``torch.load`` with ``weights_only=True`` unless trusted; unpickling errors become one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if not trust and "weights only load failed" in message.lower():
            found = re.search(r"GLOBAL ([\w.]+)", message)
            what = f" ({found.group(1)})" if found else ""
            raise UntrustedCheckpointError(
                f"{path.name} holds pickled Python objects{what}; unpickling runs code from the file, so pass "
                f"--trust-checkpoint (or confirm in the dialog) only if you trust where it came from") from None
        raise ModelLoadError(f"{path.name} is not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - torch.load and (when trusted) the file's own code raise anything
        message = _first_line(exc)
        if "magic number" in message.lower():
            raise ModelLoadError(f"{path.name} is not a PyTorch checkpoint: a Python pickle that torch.save "
                                 f"did not write") from None
        if isinstance(exc, EOFError) or "failed finding central directory" in message:
            raise ModelLoadError(f"{path.name} is damaged or incomplete ({message or 'it ends too early'})") from None
        verb = "unpickle" if trust else "read"
        raise ModelLoadError(f"cannot {verb} {path.name}: {type(exc).__name__}: {message}") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path.name} is not a valid safetensors file ({_first_line(exc)})") from None


# --- formats that carry their own architecture -----------------------------------------------------


def _load_torchscript(path: Path, arch: str | None) -> LoadedModel:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, its archives are not
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - the TorchScript loader raises plain RuntimeErrors
        raise ModelLoadError(f"{path.name} is a damaged TorchScript archive ({_first_line(exc)})") from None
    class_name = getattr(module, "original_name", type(module).__name__)
    return _self_described(module, path, arch, fmt="TorchScript archive", class_name=class_name, compiled=True)


def _load_exported(path: Path, arch: str | None) -> LoadedModel:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.export.load(str(path))
            module = program.module()
    except Exception as exc:  # noqa: BLE001 - deserialisation raises many kinds
        raise ModelLoadError(f"{path.name} is a torch.export archive that cannot be loaded "
                             f"({type(exc).__name__}: {_first_line(exc)})") from None
    # ExportedProgram.module() replaces train()/eval() with methods that raise. The graph fixed its
    # train/eval behaviour when it was exported, so the flags change nothing; restore nn.Module's
    # methods so that callers can put every model in eval mode the same way.
    for method in ("train", "eval"):
        module.__dict__.pop(method, None)
    shape = _exported_input_shape(program)
    class_name = "exported graph" + (f", fixed batch size {shape[0]}" if shape and shape[0] != 1 else "")
    return _self_described(module, path, arch, fmt="torch.export program", class_name=class_name,
                           input_shape=shape, compiled=True)


def _exported_input_shape(program) -> tuple[int, ...] | None:
    """(N, C, H, W) of the program's first user input when it is a batch of images of fixed size."""
    try:
        user_inputs = set(program.graph_signature.user_inputs)
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name in user_inputs:
                shape = tuple(int(s) for s in node.meta["val"].shape)
                return shape if len(shape) == 4 else None
    except (AttributeError, KeyError, TypeError, ValueError):  # symbolic sizes, unusual inputs
        return None
    return None


def _self_described(module: nn.Module, path: Path, arch: str | None, fmt: str, class_name: str,
                    input_shape: tuple[int, ...] | None = None, compiled: bool = False) -> LoadedModel:
    """A LoadedModel for a module that came with its own code; the architecture informs the spec.

    ``input_shape`` is the (N, C, H, W) an exported graph was exported for, when fixed.

    ``compiled`` modules (TorchScript, exported graphs) run their layers without calling submodules, so
    forward hooks cannot see inside them. When the architecture is recognised and the eager model with
    the file's weights computes the same outputs, the eager model is returned instead.
    """
    state = module.state_dict()
    signature = _signature_of(state)
    match = None
    if arch:
        named = _match(_canonical_arch(arch, path), signature)
        match = named if named.ok else None
    if match is None:
        match, _ = _detect(signature, hint=path.stem)
    if match is not None:
        spec = _spec_for(match)
        source = f"{fmt}, architecture detected: {match.describe()}"
    else:
        spec = _inferred_spec(state)
        source = f"{fmt} ({class_name}; architecture not recognised)"
    if input_shape is not None and input_shape[1] == spec.channels:
        spec = InputSpec(size=tuple(input_shape[2:]), channels=spec.channels, mean=spec.mean, std=spec.std,
                         labels=spec.labels)
    module.eval()
    if compiled and match is not None:
        eager = _equivalent_eager_model(module, match, state, input_shape or (1, *spec.shape), path)
        if eager is not None:
            module = eager
            source += " (weights loaded into the eager model; outputs checked equal)"
    return LoadedModel(path.name, module, spec, trained=True, source=source)


def _equivalent_eager_model(module: nn.Module, match: ArchitectureMatch, state: Mapping[str, torch.Tensor],
                            input_shape: tuple[int, ...], path: Path) -> nn.Module | None:
    """``match``'s architecture holding ``state``, if it gives ``module``'s outputs on a random input."""
    try:
        eager = _instantiate(match, _normalised(state), path)
        x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected, actual = module(x), eager(x)
    except Exception:  # noqa: BLE001 - any failure just means: keep the file's own module
        return None
    if not (isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor)
            and expected.shape == actual.shape):
        return None
    tolerance = 1e-4 * max(1.0, float(expected.abs().max()))
    return eager if torch.allclose(actual, expected, rtol=1e-4, atol=tolerance) else None


# --- state dicts ----------------------------------------------------------------------------------


def _from_payload(payload, path: Path, arch: str | None, fmt: str) -> LoadedModel:
    if isinstance(payload, Mapping) and payload.get("format") == SHAPES_FORMAT:
        return _from_bundled(payload, path)
    content = _unwrap(payload, path)
    if isinstance(content, nn.Module):
        return _self_described(content, path, arch, fmt="pickled module (trusted)",
                               class_name=type(content).__name__)
    state = _normalised(content)
    signature = _signature_of(state)
    if arch:
        match = _match(_canonical_arch(arch, path), signature)
        if not match.ok:
            raise ModelLoadError(f"{path.name} does not fit {match.arch}: {match.problem()}")
        how = f"architecture {match.describe()} (as named)"
    else:
        match, closest = _detect(signature, hint=path.stem)
        if match is None:
            hint = f"; closest: {closest.arch}, {closest.problem()}" if closest is not None else ""
            raise ModelLoadError(f"no known architecture matches {path.name} ({_count(len(state), 'tensor')}{hint}); "
                                 f"name it with --model ARCH")
        how = f"architecture detected: {match.describe()}"
    module = _instantiate(match, state, path)
    return LoadedModel(path.name, module, _spec_for(match), trained=True,
                       source=f"{fmt}, {how} (matched {_count(match.matched, 'tensor')})")


def _from_bundled(payload: Mapping, path: Path) -> LoadedModel:
    try:
        labels = tuple(str(x) for x in payload["labels"])
        info = payload["input"]
        spec = InputSpec(size=tuple(int(s) for s in info["size"]), channels=int(info["channels"]),
                         mean=tuple(float(m) for m in info["mean"]), std=tuple(float(s) for s in info["std"]),
                         labels=labels)
        state = _normalised(payload["state_dict"])
        arch = str(payload.get("arch", SHAPES_ARCH))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path.name} is a damaged {SHAPES_FORMAT} file (bad or missing {exc})") from None
    match = _match(_canonical_arch(arch, path), _signature_of(state))
    if not match.ok:
        raise ModelLoadError(f"{path.name} does not fit {match.arch}: {match.problem()}")
    acc = payload.get("held_out_accuracy")
    source = f"bundled-format {match.describe()}" + (f" (held-out accuracy {acc:.1%})" if acc is not None else "")
    return LoadedModel(path.name, _instantiate(match, state, path), spec, trained=True, source=source)


def _unwrap(payload, path: Path):
    """The state dict (or module) inside what torch.load returned."""
    for _ in range(4):
        if isinstance(payload, nn.Module):
            return payload
        if not isinstance(payload, Mapping):
            break
        inner = next((payload[k] for k in _WRAPPER_KEYS
                      if isinstance(payload.get(k), (Mapping, nn.Module))), None)
        if inner is not None:
            payload = inner
            continue
        tensors = {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(payload) / 2:  # a state dict, perhaps with a few extras
            return tensors
        break
    if isinstance(payload, torch.Tensor):
        raise ModelLoadError(f"{path.name} holds a single tensor of shape {_shape(tuple(payload.shape))}, "
                             f"not a model's weights")
    if isinstance(payload, Mapping):
        keys = ", ".join(str(k) for k in itertools.islice(payload, _SHOWN_KEYS))
        raise ModelLoadError(f"{path.name} holds a dict without a state dict in it (keys: {keys or 'none'}): "
                             f"not a model checkpoint")
    raise ModelLoadError(f"{path.name} holds a {type(payload).__name__}, not a model or a state dict")


def _normalised(state: Mapping) -> dict[str, torch.Tensor]:
    """String keys without DataParallel/compile prefixes; floating tensors as float32."""
    state = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _signature_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


# --- architectures -------------------------------------------------------------------------------


def _canonical_arch(arch: str, path: Path) -> str:
    name = _ARCH_ALIASES.get(arch.lower(), arch)
    if name == SHAPES_ARCH or name in zoo_names():
        return name
    raise ModelLoadError(f"unknown architecture {arch!r} for {path.name}: name a torchvision classification model "
                         f"(resnet18, vgg16, ...) or {SHAPES_ARCH}, or leave it out to detect it")


def _build(arch: str, num_classes: int | None = None) -> nn.Module:
    if arch == SHAPES_ARCH:
        return ShapesNet() if num_classes is None else ShapesNet(num_classes=num_classes)
    return build_zoo_model(arch, num_classes=num_classes)


@functools.cache
def _architecture_signature(arch: str, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of an architecture, from a copy built without weight memory."""
    with _ShapeFactoriesOnMeta():
        module = _build(arch, num_classes)
    return _signature_of(module.state_dict())


def _candidates(hint: str = "") -> list[str]:
    """Every architecture; those named in ``hint`` (the file name) first, as they are the likeliest."""
    names = [SHAPES_ARCH, *zoo_names()]
    named = sorted((n for n in names if n in hint.lower()), key=len, reverse=True)
    return named + [n for n in names if n not in named]


def _match(arch: str, signature: Mapping[str, tuple[int, ...]]) -> ArchitectureMatch:
    signature = _without_aux(arch, signature)
    expected = _architecture_signature(arch)
    match = _compare(arch, None, expected, signature)
    num_classes = _changed_num_classes(expected, signature, match)
    if num_classes is not None:
        match = _compare(arch, num_classes, _architecture_signature(arch, num_classes), signature)
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


def _without_aux(arch: str, signature: Mapping[str, tuple[int, ...]]) -> Mapping[str, tuple[int, ...]]:
    prefixes = _AUX_PREFIXES.get(arch)
    return {k: v for k, v in signature.items() if not k.startswith(prefixes)} if prefixes else signature


def _detect(signature: Mapping[str, tuple[int, ...]],
            hint: str = "") -> tuple[ArchitectureMatch | None, ArchitectureMatch | None]:
    """(the matching architecture or None, the closest one).

    Torchvision's architectures differ in at least one name or shape besides the classifier, so the
    first match is the only one.
    """
    closest = None
    for arch in _candidates(hint):
        match = _match(arch, signature)
        if match.ok:
            return match, match
        # Closeness: a missed or extra tensor counts one, relative to the size of both.
        if closest is None or _relative_distance(match, signature) < _relative_distance(closest, signature):
            closest = match
    return None, closest


def _relative_distance(match: ArchitectureMatch, signature: Mapping) -> float:
    return match.distance / max(1, len(signature) + len(match.missing))


def _instantiate(match: ArchitectureMatch, state: Mapping[str, torch.Tensor], path: Path) -> nn.Module:
    """The architecture with the checkpoint's tensors in it, in eval mode on the CPU."""
    state = OrderedDict(_without_aux(match.arch, state))
    expected = _architecture_signature(match.arch, match.num_classes)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    with _ShapeFactoriesOnMeta():
        module = _build(match.arch, match.num_classes)
    # Some modules read their format version from the state dict's metadata (MNASNet refuses to load
    # without it); safetensors files and re-keyed dicts have none, and the names now match this build.
    state._metadata = module.state_dict()._metadata  # type: ignore[attr-defined]
    try:
        module.load_state_dict(state, strict=True, assign=True)
        if any(t.is_meta for t in itertools.chain(module.parameters(), module.buffers())):
            # A buffer outside the state dict (non-persistent) would stay empty: build it for real.
            module = _build(match.arch, match.num_classes)
            module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path.name} cannot be loaded into {match.describe()} ({_first_line(exc)})") from None
    return module.eval()


# --- input specs ---------------------------------------------------------------------------------


def _spec_for(match: ArchitectureMatch) -> InputSpec:
    if match.arch == SHAPES_ARCH:
        num_classes = match.num_classes or len(SHAPE_CLASSES)
        labels = tuple(SHAPE_CLASSES) if num_classes == len(SHAPE_CLASSES) else ()
        return InputSpec(size=SHAPES_INPUT_SIZE, channels=3, mean=SHAPES_MEAN, std=SHAPES_STD, labels=labels)
    spec = zoo_spec(match.arch)
    if match.num_classes is not None and match.num_classes != len(spec.labels):
        spec = InputSpec(size=spec.size, channels=spec.channels, mean=spec.mean, std=spec.std, labels=())
    return spec


def _inferred_spec(state: Mapping[str, torch.Tensor]) -> InputSpec:
    """Channels (and for an MLP, the image size) from the first conv or linear weight; 224x224 otherwise."""
    for key, tensor in state.items():
        if not key.endswith("weight") or tensor.dim() not in (2, 4):
            continue
        if tensor.dim() == 4:
            return _default_spec(int(tensor.shape[1]), (224, 224))
        features = int(tensor.shape[1])
        for channels in (3, 1):
            side = math.isqrt(features // channels)
            if side * side * channels == features:
                return _default_spec(channels, (side, side))
        return _default_spec(1, (1, features))
    return InputSpec()


def _default_spec(channels: int, size: tuple[int, int]) -> InputSpec:
    if channels == 3:
        return InputSpec(size=size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if channels == 1:  # ImageNet's statistics averaged over the colour channels
        return InputSpec(size=size, channels=1, mean=(0.449,), std=(0.226,))
    return InputSpec(size=size, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)


# --- wording -------------------------------------------------------------------------------------


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (", ..." if len(keys) > _SHOWN_KEYS else "")


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape) if shape else "a scalar"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__

