"""What every subcommand shares: the model options, ``--json``, progress bars, one-line errors."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable


class CommandError(Exception):
    """A user-facing error raised by a subcommand: printed as one line, exit status 2."""


def parse_pair(text: str, name: str) -> tuple[int, int]:
    """``224`` → (224, 224); ``240x320`` → (240, 320)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be N or HxW, not {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"{name} must be N or HxW with positive sizes, not {text!r}")
    return parts[0], parts[1]


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers separated by commas, not {text!r}")
    return values


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options that choose and configure a model (shared by every subcommand and the GUI)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="bundled name (shapes, the default), torchvision name (resnet18, vgg16, ...) or a file")
    g.add_argument("--checkpoint", default=None, help="checkpoint file (TorchScript, .pt2, state dict, ...)")
    g.add_argument("--weights", choices=["pretrained", "none"], default="pretrained",
                   help="zoo models: download pretrained weights (default) or use random ones")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow unpickling whole modules from the checkpoint (runs code from the file)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    g.add_argument("--input-size", type=lambda t: parse_pair(t, "--input-size"), default=None,
                   help="N or HxW")
    g.add_argument("--mean", type=parse_floats, default=None, help="per-channel mean, e.g. 0.485,0.456,0.406")
    g.add_argument("--std", type=parse_floats, default=None, help="per-channel std")
    g.add_argument("--labels", default=None, help="class labels: a text file (one per line) or a JSON list")
    g.add_argument("--fit", choices=["crop", "stretch", "letterbox"], default="crop",
                   help="how an image is brought to the input size (default crop)")


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def cli_progress(label: str) -> Callable[[int, int], None]:
    """A progress bar on stderr for downloads and long loops: ``progress(done, total)``."""
    state = {"last": -1}

    def progress(done: int, total: int) -> None:
        if not sys.stderr.isatty() and total and done < total and done * 10 // total == state["last"]:
            return
        state["last"] = done * 10 // total if total else -1
        if total:
            frac = done / total
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{label} [{bar:<30}] {frac:6.1%}")
        else:
            sys.stderr.write(f"\r{label} {done / 1e6:.1f} MB")
        if total and done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return progress


def model_from_args(args: argparse.Namespace, weights: str | None = None):
    """Load the model that the parsed options name (``weights`` overrides ``--weights``)."""
    from explorer.core.models import load_model  # noqa: PLC0415 - torch only when a model is asked for

    return load_model(args.model, checkpoint=args.checkpoint, weights=weights or args.weights,
                      trust_checkpoint=args.trust_checkpoint, device=args.device,
                      progress=cli_progress("downloading weights"), input_size=args.input_size,
                      mean=args.mean, std=args.std, labels_file=args.labels)


def describe_model(loaded) -> dict:
    """Where the model came from, as every subcommand's JSON names it (its ``"model"`` object).

    ``name``: the model or file name; ``source``: the format and the architecture detected, in words (as
    the window shows it); ``trained``: False for random weights; ``device``; ``input``: the input spec.
    """
    spec = loaded.spec
    return {"name": loaded.name, "display_name": loaded.display_name, "source": loaded.source,
            "trained": bool(loaded.trained), "device": str(loaded.device),
            "input": {"shape": list(spec.shape), "size": list(spec.size), "channels": spec.channels,
                      "mean": list(spec.mean), "std": list(spec.std), "classes": len(spec.labels) or None}}


def check_memory(args: argparse.Namespace, loaded, batch: int = 1, gradients: bool = False,
                 what: str = "the forward pass") -> None:
    """Refuse, before any allocation of that size, a forward that cannot fit in memory (core.memory)."""
    from explorer.core.memory import check_forward_memory  # noqa: PLC0415

    check_forward_memory(loaded.module, loaded.spec.shape, batch=batch, gradients=gradients,
                         device=loaded.device, what=what)


def check_output(path: str | Path | None, suffixes=None) -> Path | None:
    """:func:`explorer.core.outputs.check_destination` for an optional option value."""
    from explorer.core.outputs import check_destination  # noqa: PLC0415

    return None if path is None else check_destination(path, suffixes)


class InputFailures:
    """Inputs that failed while the others went on: each reported on its own line as it happens.

    ``run(path, fn)`` calls ``fn()``; a user-facing error (or an OS error while writing) is recorded
    and printed as ``deep-explorer CMD: skipped PATH: reason`` instead of stopping the command.
    With a single input (``many`` False) errors propagate as before: one error line, exit status 2.
    """

    def __init__(self, command: str, many: bool):
        self.command, self.many = command, many
        self.failed: list[dict] = []
        self.done = 0

    def run(self, path, fn: Callable[[], Any]) -> Any:
        from explorer.core.errors import Cancelled, ExplorerError  # noqa: PLC0415

        if not self.many:
            result = fn()
            self.done += 1
            return result
        try:
            result = fn()
        except Cancelled:
            raise
        except (ExplorerError, CommandError, OSError) as exc:
            reason = error_line(exc) if not isinstance(exc, OSError) else (
                f"{exc.strerror or type(exc).__name__}" + (f": {exc.filename}" if exc.filename else ""))
            self.failed.append({"input": str(path), "error": reason})
            print(f"deep-explorer {self.command}: skipped {path}: {reason}", file=sys.stderr)
            return None
        self.done += 1
        return result

    def finish(self) -> int:
        """Print the summary (when something failed) and return the exit status: 1 if any input failed."""
        if not self.failed:
            return 0
        total = self.done + len(self.failed)
        print(f"deep-explorer {self.command}: {self.done} of {total} inputs done, {len(self.failed)} failed",
              file=sys.stderr)
        return 1


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None, default=_json_default))
    else:
        print(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def error_line(exc: BaseException) -> str:
    """The one line printed for a user-facing error, with the option that gets around it where one does."""
    from explorer.core.errors import (UnknownArchitectureError, UntrustedCheckpointError,  # noqa: PLC0415
                                      WeightsDownloadError)

    from explorer.core.errors import ResourceLimitError  # noqa: PLC0415

    text = str(exc)
    if isinstance(exc, ResourceLimitError) and exc.setting == "DEEP_EXPLORER_MEMORY_LIMIT":
        flags = "--input-size" + (" or --batch-size" if "batch of" in text else "")
        text = text.replace("use a smaller input", f"use a smaller input ({flags})", 1)
    elif isinstance(exc, WeightsDownloadError) and exc.random_weights_fallback:
        text += " (--weights none)"
    elif isinstance(exc, UntrustedCheckpointError):
        text += " (--trust-checkpoint)"
    elif isinstance(exc, UnknownArchitectureError):
        text += " with --model ARCH"
    return text
