"""Open the Optimize panel on the bundled shapes model and a sample image, run one method, save the panel.

    QT_QPA_PLATFORM=offscreen python scripts/screenshot_optimize_panel.py --method fourier --class 3 \
        --out docs/optimize_panel.png
    QT_QPA_PLATFORM=offscreen python scripts/screenshot_optimize_panel.py --method invert \
        --invert-layers "features.conv1, features.relu2, features.relu4" --out docs/optimize_invert.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--image", default="0004_star.png", help="a file in resources/images")
    parser.add_argument("--method", default="fourier")
    parser.add_argument("--class", dest="class_index", type=int, default=3)
    parser.add_argument("--invert-layers", default="features.conv1, features.relu2, features.relu4")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", default="1100x900")
    parser.add_argument("--out", type=Path, default=Path("optimize_panel.png"))
    args = parser.parse_args(argv)

    from PySide6.QtCore import QEventLoop, QTimer  # noqa: PLC0415
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from explorer.core.models import load_model  # noqa: PLC0415
    from explorer.core.preprocess import load_input  # noqa: PLC0415
    from explorer.core.resources import SAMPLE_IMAGES  # noqa: PLC0415
    from explorer.gui.panels.optimize import OptimizePanel  # noqa: PLC0415

    app = QApplication.instance() or QApplication([])
    loaded = load_model(args.model, device="cpu")
    x, picture = load_input(SAMPLE_IMAGES / args.image, loaded.spec)
    panel = OptimizePanel()
    w, h = (int(v) for v in args.size.split("x"))
    panel.resize(w, h)
    panel.show()
    panel.set_context(loaded, x, picture)
    panel.set_target_class(args.class_index)
    panel.method.setCurrentText(args.method)
    if args.method == "invert":
        panel.invert_layers.setText(args.invert_layers)
    panel.steps.setValue(args.steps)
    loop = QEventLoop()
    panel.finished.connect(loop.quit)
    panel.failed.connect(loop.quit)
    guard = QTimer(singleShot=True, interval=600_000)
    guard.timeout.connect(loop.quit)
    guard.start()
    panel.run()
    loop.exec()
    while panel.busy:
        app.processEvents()
    if panel.result is None:
        print(f"the run did not finish: {panel.status.text()}", file=sys.stderr)
        return 2
    app.processEvents()
    if not panel.grab().save(str(args.out)):
        print(f"cannot write {args.out}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {panel.status.text()}")
    panel.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
