"""What every subcommand shares: the model options, ``--json``, progress bars, one-line errors."""
from __future__ import annotations

import argparse
import json
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


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from None


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

    text = str(exc)
    if isinstance(exc, WeightsDownloadError) and exc.random_weights_fallback:
        text += " (--weights none)"
    elif isinstance(exc, UntrustedCheckpointError):
        text += " (--trust-checkpoint)"
    elif isinstance(exc, UnknownArchitectureError):
        text += " with --model ARCH"
    return text
