"""Open the LSTM panel on a model and a text, wait for the analysis, and save it as a PNG.

    QT_QPA_PLATFORM=offscreen python scripts/screenshot_lstm_panel.py --out lstm_panel.png
"""
from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--text", type=Path, default=Path(sysconfig.get_paths()["stdlib"]) / "colorsys.py")
    parser.add_argument("--out", type=Path, default=Path("lstm_panel.png"))
    parser.add_argument("--indicator", default="string", help="show the best cell for this indicator")
    parser.add_argument("--scroll-to", default="def ", help="scroll to the first occurrence of this text")
    parser.add_argument("--size", default="1500x950")
    parser.add_argument("--tab", choices=["cells", "saturation"], default="cells")
    parser.add_argument("--hover", default=None, help="show the hover text for the first occurrence of this")
    args = parser.parse_args(argv)

    from PySide6.QtCore import QEventLoop, QTimer  # noqa: PLC0415
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from explorer.gui.panels.lstm import LstmPanel  # noqa: PLC0415

    app = QApplication.instance() or QApplication([])
    panel = LstmPanel()
    w, h = (int(v) for v in args.size.split("x"))
    panel.resize(w, h)
    panel.show()
    if not panel.load_model(args.model):
        print(panel.status.text(), file=sys.stderr)
        return 2
    loop = QEventLoop()
    panel.analysisFinished.connect(loop.quit)
    guard = QTimer(singleShot=True, interval=600_000)
    guard.timeout.connect(loop.quit)
    guard.start()
    panel.open_text_file(args.text)
    loop.exec()
    if panel.analysis is None:
        print("analysis did not finish", file=sys.stderr)
        return 2
    best = panel.analysis.search.get(args.indicator)
    if best:
        panel.show_cell(best[0].cell)
    text = panel.analysis.replay.text
    if args.scroll_to and args.scroll_to in text:
        panel.view.scroll_to_char(text.index(args.scroll_to))
    if args.tab == "saturation":
        panel.side_tabs.setCurrentIndex(1)
    if args.hover and args.hover in text:
        print(panel.hover_text(text.index(args.hover)))
    app.processEvents()
    panel.export_png(args.out)
    print(f"wrote {args.out}: cell {panel.cell}; {panel.status.text()}")
    panel.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
