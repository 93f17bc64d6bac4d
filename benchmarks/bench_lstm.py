"""Time the LSTM explorer over 100,000 characters of Python on the CPU.

    python benchmarks/bench_lstm.py [--model bundled|FILE] [--chars 100000] [--threads 1]

Prints the replay time (all gates of all layers), the full cell search (indicator sequences plus Pearson
r for every cell and indicator, AUROC for the on/off ones), and rendering: the colours for every
character, the HTML page, and painting the text view (setting the text and colours, then frames at
scroll positions through the text). Targets (issue 5): search and render under 2 s each.
"""
from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def corpus(chars: int) -> str:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    held_out = [p for k, p in enumerate(files) if k % 10 == 7]  # the bundled model never saw these
    text = ""
    for p in held_out * 4:
        text += p.read_text(encoding="utf-8", errors="replace")
        if len(text) >= chars:
            break
    return text[:chars]


def timed(label: str, fn, repeat: int = 1):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    print(f"{label:<48} {best:8.3f} s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-gui", action="store_true")
    parser.add_argument("--write-text", type=Path, default=None,
                        help="only write the held-out text used here to this file (for `lstm cells`)")
    args = parser.parse_args(argv)
    if args.write_text:
        args.write_text.write_text(corpus(args.chars), encoding="utf-8")
        print(f"wrote {args.write_text} ({args.chars:,} characters of held-out standard library files)")
        return 0

    import torch  # noqa: PLC0415

    from explorer.core.rnn.model import load_char_rnn  # noqa: PLC0415
    from explorer.core.rnn.replay import replay  # noqa: PLC0415
    from explorer.core.rnn.cells import cell_search, cell_values, indicator_sequences  # noqa: PLC0415
    from explorer.core.rnn.render import display_values, render_html, value_colors  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    model = load_char_rnn(args.model)
    cfg = model.config
    text = corpus(args.chars)
    print(f"{len(text):,} characters, {cfg.cell.upper()} {cfg.num_layers}x{cfg.hidden_size}, "
          f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}")
    rep = timed("replay (every gate, every layer)", lambda: replay(model, text))

    def search():
        return cell_search(rep, indicator_sequences(text), top=5)

    results = timed("cell search (indicators + r + AUROC), best of 3", search, repeat=3)
    best = results["string"][0].cell
    values = display_values(best.quantity, cell_values(rep, best))
    colors = timed("render: colours for every character", lambda: value_colors(values), repeat=3)
    timed("render: HTML page", lambda: render_html(text, values, "bench"), repeat=3)

    if not args.no_gui:
        from PySide6.QtWidgets import QApplication  # noqa: PLC0415

        from explorer.gui.panels.lstm import CellTextView  # noqa: PLC0415

        app = QApplication.instance() or QApplication([])
        view = CellTextView()
        view.resize(1400, 900)
        view.show()
        app.processEvents()

        def load():
            view.set_text(text)
            view.set_colors(colors)
            view.viewport().grab()

        timed("render: text view, set text + colours + first frame", load)
        bar = view.verticalScrollBar()
        frames = 30

        def scroll():
            for k in range(frames):
                bar.setValue(bar.maximum() * k // (frames - 1))
                view.viewport().grab()

        t = timed(f"render: text view, {frames} frames while scrolling", lambda: scroll() or None)
        del t
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
