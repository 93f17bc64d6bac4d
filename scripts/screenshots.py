"""Every tab of the main window at laptop sizes, saved as PNGs to look at (what is cut, what is unusable).

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py [--out /tmp/shots] [--sizes 1280x720 1024x640]
        [--tabs activations lstm] [--model shapes]

Opens the main window with no settings and the bundled default model (and the sample images), then for
each size and each tab: resizes the window, shows the tab, waits until the window has no work left and
saves ``<out>/<tab>_<w>x<h>.png`` (the whole window, docks and toolbar included; the LSTM tab's gate
saturation page as ``lstm-saturation_<w>x<h>.png``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = ("1280x720", "1024x640")


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 1024x640)") from None
    if w < 200 or h < 200:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (at least 200x200)")
    return w, h


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:  # NaN, zero and negatives included
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def wait_idle(app, window, timeout_s: float = 300.0) -> bool:
    """Process events until the window has been idle for a few polls (True) or the timeout passed."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
        quiet = quiet + 1 if not window.busy else 0
        if quiet >= 6:
            app.processEvents()
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/shots"), help="folder for the PNGs")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in SIZES],
                        metavar="WxH", help=f"window sizes (default: {' '.join(SIZES)})")
    parser.add_argument("--tabs", nargs="+", default=None, help="only these tabs (their --view names)")
    parser.add_argument("--model", default=None, help="model to load (default: the bundled default)")
    parser.add_argument("--video", default=None, help="play this video in the Live tab (its shots then show frames)")
    parser.add_argument("--layer", default=None, help="select this layer first")
    parser.add_argument("--play", type=positive_seconds, default=3.0, metavar="S",
                        help="with --video: seconds the Live tab plays before its shot (default 3)")
    args = parser.parse_args(argv)
    from explorer.core.errors import OutputError  # noqa: PLC0415
    from explorer.core.outputs import check_destination_folder  # noqa: PLC0415

    try:  # before the window opens: the folder can be written
        check_destination_folder(args.out)
    except OutputError as exc:
        print(f"screenshots: error: {exc}", file=sys.stderr)
        return 2

    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from explorer.gui.app import create_window  # noqa: PLC0415

    app = QApplication.instance() or QApplication([])
    window = create_window(argparse.Namespace(no_settings=True, model=args.model, weights="none"
                                              if args.model not in (None, "shapes") else "pretrained"),
                           interactive=False)
    window.show()
    wait_idle(app, window)
    if args.layer:
        names = dict(window.loaded.module.named_modules()) if window.loaded is not None else {}
        if args.layer not in names or not args.layer:
            print(f"screenshots: error: no layer named {args.layer!r} in the model", file=sys.stderr)
            return 2
        window.layers.select_layer(args.layer)
        wait_idle(app, window)
    if args.video and not window.live_panel.open_video(args.video):
        print(f"screenshots: error: {window.live_panel.message.text()}", file=sys.stderr)
        return 2
    tabs = args.tabs or list(window.views)
    unknown = [t for t in tabs if t not in window.views]
    if unknown:
        print(f"screenshots: error: no tab named {', '.join(unknown)}; tabs: {', '.join(window.views)}",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for w, h in args.sizes:
        for tab in tabs:
            window.resize(w, h)
            window.show_view(tab)
            if not wait_idle(app, window):
                print(f"{tab} at {w}x{h}: still busy after the timeout; saved as it is", file=sys.stderr)
            if tab == "live" and args.video:  # frames and their stats at the rate the video plays
                end = time.monotonic() + args.play
                while time.monotonic() < end:
                    app.processEvents()
                    time.sleep(0.002)
            shots = [(tab, None)]
            if tab == "lstm":  # its side pane's second page too
                shots.append(("lstm-saturation", window.lstm_panel.side_tabs))
            for name, side_tabs in shots:
                if side_tabs is not None:
                    side_tabs.setCurrentIndex(1)
                    wait_idle(app, window)
                path = args.out / f"{name}_{w}x{h}.png"
                if window.grab().save(str(path)):
                    print(f"saved {path} ({window.width()}x{window.height()}, centre "
                          f"{window.centralWidget().width()} px wide)")
                else:
                    print(f"could not save {path}", file=sys.stderr)
                    failed += 1
                if side_tabs is not None:
                    side_tabs.setCurrentIndex(0)
    for message in window.errors:
        print(f"window message: {message}", file=sys.stderr)
    window.close()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
