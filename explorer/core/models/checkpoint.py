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

import io
import itertools
import logging
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from explorer.core.errors import ModelLoadError, UnknownArchitectureError, UntrustedCheckpointError
from explorer.core.models.architecture import (
    SHAPES_ARCH,
    SHOWN_KEYS,
    ArchitectureMatch,
    canonical_arch,
    closest_architecture,
    count_words,
    inferred_spec,
    instantiate,
    match_architecture,
    shape_words,
    signature_of,
    spec_for,
)
from explorer.core.models.scripted import explorable_script, is_script_module
from explorer.core.models.shapes import SHAPES_FORMAT
from explorer.core.models.spec import InputSpec, LoadedModel
from torch import nn

# Keys under which training scripts commonly nest the state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module")
# Prefixes added by nn.DataParallel / DistributedDataParallel, torch.compile, and wrappers that hold the
# network as ``self.model`` or ``self.net`` (PyTorch Lightning modules, for one).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
_log = logging.getLogger("explorer.checkpoint")

def load_checkpoint(path: str | Path, arch: str | None = None, trust: bool = False,
                    bundled_name: str | None = None) -> LoadedModel:
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
    bundled_name : the name of a bundled model this file is (it is then named and described as such).

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
    return _from_payload(_torch_load(path, trust), path, arch, fmt="state dict", bundled_name=bundled_name)


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
                f"{path.name} holds pickled Python objects{what}; unpickling runs code from the file, so load "
                f"it only if you trust where it came from") from None
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
    captured = _CapturedLog()
    torch_export_log = logging.getLogger("torch.export")
    try:
        # torch.export logs a traceback as warnings before it raises; keep it out of the user's terminal
        # (it goes to the log file) and name its last line, the actual reason, in the one-line error.
        handlers, torch_export_log.handlers = torch_export_log.handlers, [captured]
        propagate, torch_export_log.propagate = torch_export_log.propagate, False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
            module = program.module()
    except Exception as exc:  # noqa: BLE001 - deserialisation raises many kinds
        reason = captured.reason() or f"{type(exc).__name__}: {_first_line(exc)}"
        _log.debug("torch.export.load(%s) failed: %s\n%s", path, exc, captured.text())
        raise ModelLoadError(f"{path.name} is a torch.export archive that cannot be loaded ({reason})") from None
    finally:
        torch_export_log.handlers = handlers
        torch_export_log.propagate = propagate
    # ExportedProgram.module() replaces train()/eval() with methods that raise. The graph fixed its
    # train/eval behaviour when it was exported, so the flags change nothing; restore nn.Module's
    # methods so that callers can put every model in eval mode the same way.
    for method in ("train", "eval"):
        module.__dict__.pop(method, None)
    shape = _exported_input_shape(program)
    class_name = "exported graph" + (f", fixed batch size {shape[0]}" if shape and shape[0] != 1 else "")
    return _self_described(module, path, arch, fmt="torch.export program", class_name=class_name,
                           input_shape=shape, compiled=True)


class _CapturedLog(logging.Handler):
    """Keeps the records a library logs while it runs (to report their gist, not print them)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        formatter = logging.Formatter()
        return "\n".join(formatter.format(r) for r in self.records)

    def reason(self) -> str:
        """The exception a record carries (else its message), on one line, shortened."""
        if not self.records:
            return ""
        record = self.records[-1]
        exc = record.exc_info[1] if record.exc_info else None
        line = f"{type(exc).__name__}: {_first_line(exc)}" if exc is not None else record.getMessage()
        line = re.sub(r"\s*\(Could this error message be improved\?.*$", "", line)
        return line[:200]


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
    signature = signature_of(state)
    match = None
    if arch:
        named = match_architecture(canonical_arch(arch, path), signature)
        match = named if named.ok else None
    if match is None:
        match, _ = closest_architecture(signature, hint=path.stem)
    if match is not None:
        spec = spec_for(match)
        source = f"{fmt}, architecture detected: {match.describe()}"
    else:
        spec = inferred_spec(state)
        source = f"{fmt} ({class_name}; architecture not recognised)"
    if input_shape is not None and input_shape[1] == spec.channels:
        spec = InputSpec(size=tuple(input_shape[2:]), channels=spec.channels, mean=spec.mean, std=spec.std,
                         labels=spec.labels)
    module.eval()
    eager = None
    if compiled and match is not None:
        eager = _equivalent_eager_model(module, match, state, input_shape or (1, *spec.shape), path)
        if eager is not None:
            module = eager
            source += " (weights loaded into the eager model; outputs checked equal)"
    if eager is None and is_script_module(module):
        example = torch.randn(*(input_shape or (1, *spec.shape)), generator=torch.Generator().manual_seed(0))
        chain = explorable_script(module, example)
        if chain is not None:  # else it runs as it is; capturing a layer inside names what to save instead
            module = chain
            source += "; its layers are run one by one so that they can be seen"
    return LoadedModel(path.name, module, spec, trained=True, source=source)


def _equivalent_eager_model(module: nn.Module, match: ArchitectureMatch, state: Mapping[str, torch.Tensor],
                            input_shape: tuple[int, ...], path: Path) -> nn.Module | None:
    """``match``'s architecture holding ``state``, if it gives ``module``'s outputs on a random input."""
    try:
        eager = instantiate(match, _normalised(state), path)
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


def _from_payload(payload, path: Path, arch: str | None, fmt: str, bundled_name: str | None = None) -> LoadedModel:
    if isinstance(payload, Mapping) and payload.get("format") == SHAPES_FORMAT:
        return _from_bundled(payload, path, bundled_name)
    content = _unwrap(payload, path)
    if isinstance(content, nn.Module):
        return _self_described(content, path, arch, fmt="pickled module (trusted)",
                               class_name=type(content).__name__)
    state = _normalised(content)
    signature = signature_of(state)
    if arch:
        match = match_architecture(canonical_arch(arch, path), signature)
        if not match.ok:
            raise ModelLoadError(f"{path.name} does not fit {match.arch}: {match.problem()}")
        how = f"architecture {match.describe()} (as named)"
    else:
        match, closest = closest_architecture(signature, hint=path.stem)
        if match is None:
            hint = f"; closest: {closest.arch}, {closest.problem()}" if closest is not None else ""
            raise UnknownArchitectureError(f"no known architecture matches {path.name} "
                                           f"({count_words(len(state), 'tensor')}{hint}); name its architecture")
        how = f"architecture detected: {match.describe()}"
    module = instantiate(match, state, path)
    return LoadedModel(path.name, module, spec_for(match), trained=True,
                       source=f"{fmt}, {how} (matched {count_words(match.matched, 'tensor')})")


def _from_bundled(payload: Mapping, path: Path, bundled_name: str | None = None) -> LoadedModel:
    """The bundled format (the one reader of it, for bundled models and copies of them alike)."""
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
    match = match_architecture(canonical_arch(arch, path), signature_of(state))
    if not match.ok:
        raise ModelLoadError(f"{path.name} does not fit {match.arch}: {match.problem()}")
    acc = payload.get("held_out_accuracy")
    accuracy = f" (held-out accuracy {acc:.1%})" if acc is not None else ""
    if bundled_name is not None:
        return LoadedModel(bundled_name, instantiate(match, state, path), spec, trained=True,
                           source=f"bundled {bundled_name} CNN{accuracy}")
    source = f"bundled-format {match.describe()}{accuracy}"
    return LoadedModel(path.name, instantiate(match, state, path), spec, trained=True, source=source)


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
        raise ModelLoadError(f"{path.name} holds a single tensor of shape {shape_words(tuple(payload.shape))}, "
                             f"not a model's weights")
    if isinstance(payload, Mapping):
        keys = ", ".join(str(k) for k in itertools.islice(payload, SHOWN_KEYS))
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__

