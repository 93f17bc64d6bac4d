"""The ``deep-explorer`` command line: the GUI's computations, headless, over the same core.

``deep-explorer`` alone opens the GUI; subcommands (``layers``, ``predict``, ``activations`` and those
that the modules in ``SUBCOMMAND_MODULES`` register) print results, or one JSON object with ``--json``.
Every error is one line on stderr and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

# Each module has ``register(subparsers)`` that adds its subcommands with ``set_defaults(func=...)``.
SUBCOMMAND_MODULES = [
    "explorer.cli_explore",
    "explorer.cli_attribution",
    "explorer.cli_bench",
    "explorer.cli_live",
    "explorer.cli_lstm",
]


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
    from explorer.core.models import load_model  # noqa: PLC0415

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


def add_gui_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("window")
    g.add_argument("--image", default=None, help="an image file or a folder to step through")
    g.add_argument("--layer", default=None, help="layer to select, e.g. features.3 or layer1")
    g.add_argument("--unit", type=int, default=None, help="unit (channel) to select")
    g.add_argument("--view", default=None, help="panel to show first (activations, filters, ...)")
    g.add_argument("--screenshot", default=None, metavar="OUT.png",
                   help="open, wait for the results, save the window as PNG and exit")
    g.add_argument("--no-settings", action="store_true", help="ignore and do not save remembered settings")
    g.add_argument("--text", default=None, metavar="FILE", help="open this text in the LSTM tab")
    from explorer.cli_live import add_live_gui_args  # noqa: PLC0415

    add_live_gui_args(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deep-explorer",
        description="See inside neural networks. With no subcommand, opens the window.")
    add_model_args(parser)
    add_gui_args(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while they wait take the CPU from the GUI thread, Qt's decoders and one
    # another when the cores are busy; a forward then runs many times slower (measured: 100 ms → 1.9 s
    # for resnet18 on a loaded 2-core machine). Waiting threads sleep instead, unless the user chose
    # otherwise. It must be set before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from explorer.gui.app import run_gui  # noqa: PLC0415 - Qt only when the window is asked for

        return run_gui(args)
    from explorer.core.errors import ExplorerError  # noqa: PLC0415

    try:
        return int(args.func(args) or 0)
    except (ExplorerError, CommandError) as exc:
        print(f"deep-explorer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deep-explorer {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"deep-explorer {args.command}: error: out of memory", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            print(f"deep-explorer {args.command}: error: out of memory on the device; try --device cpu",
                  file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
