"""The window's own options (``deep-explorer`` with no subcommand opens the window)."""
from __future__ import annotations

import argparse


def parse_resolution(text: str) -> tuple[int, int]:
    """``640x480`` → (640, 480): width by height, as cameras name their modes."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--camera-resolution must be WxH, not {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"--camera-resolution must be WxH with positive sizes, not {text!r}")
    return w, h


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
    add_live_gui_args(parser)


def add_live_gui_args(parser: argparse.ArgumentParser) -> None:
    """The window's live-source options: ``--camera NAME|INDEX``, ``--camera-resolution WxH``, ``--video FILE``."""
    g = parser.add_argument_group("live")
    g.add_argument("--camera", default=None, metavar="NAME|INDEX", help="start the live view on this camera")
    g.add_argument("--camera-resolution", default=None, metavar="WxH", type=parse_resolution,
                   help="camera resolution, e.g. 640x480")
    g.add_argument("--video", default=None, metavar="FILE", help="start the live view on this video (looped)")


def run_window(args: argparse.Namespace) -> int:
    from explorer.gui.app import run_gui  # noqa: PLC0415 - Qt only when the window is asked for

    return run_gui(args)
