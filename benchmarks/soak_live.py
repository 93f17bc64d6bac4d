"""One-hour memory soak of the live pipeline (not run in CI).

Plays a video (looped) through the real live panel — Qt Multimedia, worker thread, tiling, painting —
for ``--minutes`` and prints the process's resident memory at the start (after warm-up), every
``--every`` minutes, and at the end, with the growth. A leak shows as steady growth across the samples.

    python benchmarks/soak_live.py --video clip.mp4 --model resnet18 --weights none --layer layer1
    python benchmarks/soak_live.py --minutes 1          # generates a test video with ffmpeg

Exit status 1 when memory grew by more than ``--max-growth-mb``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; else the peak from getrusage)."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # noqa: PLC0415

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def make_video(folder: Path) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("soak_live: give --video FILE (no ffmpeg here to generate a test video)")
    path = folder / "soak.mp4"
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
                    "-t", "10", "-pix_fmt", "yuv420p", "-c:v", "mpeg4", "-q:v", "4", str(path)], check=True)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", default=None, help="video file (default: a generated test pattern)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--weights", default="none", choices=["pretrained", "none"])
    p.add_argument("--layer", default="layer1")
    p.add_argument("--device", default=None)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--every", type=float, default=5.0, help="minutes between memory samples")
    p.add_argument("--max-growth-mb", type=float, default=100.0)
    args = p.parse_args(argv)

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QTimer  # noqa: PLC0415
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from explorer.core.models import load_bundled_model, load_zoo_model  # noqa: PLC0415
    from explorer.core.models.device import resolve_device  # noqa: PLC0415
    from explorer.gui.panels.live import LivePanel  # noqa: PLC0415

    tmp = tempfile.TemporaryDirectory()
    video = Path(args.video) if args.video else make_video(Path(tmp.name))
    app = QApplication.instance() or QApplication(["soak_live"])
    loaded = (load_bundled_model(args.model) if args.model == "shapes"
              else load_zoo_model(args.model, weights=args.weights)).to(resolve_device(args.device))
    panel = LivePanel()
    panel.resize(1200, 500)
    panel.show()
    panel.set_model(loaded, args.layer)
    errors: list[str] = []
    panel.source_error.connect(errors.append)
    if not panel.open_video(video):
        print(f"soak_live: {panel.message.text()}", file=sys.stderr)
        return 2

    def spin(seconds: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    spin(min(10.0, args.minutes * 60 / 4))  # warm-up: allocator pools, first frames
    start_mb, t0 = rss_mb(), time.perf_counter()
    shown0 = panel.live_stats.shown
    print(f"start  rss {start_mb:8.1f} MiB   ({loaded.display_name}, layer {panel.layer}, {video.name})", flush=True)
    end = t0 + args.minutes * 60
    while end - time.perf_counter() > 0.05 and not errors:
        spin(min(args.every * 60, end - time.perf_counter()))
        s = panel.live_stats.summary()
        print(f"{(time.perf_counter() - t0) / 60:5.1f} min  rss {rss_mb():8.1f} MiB   {s['fps']:.1f} fps   "
              f"{int(s['shown']) - shown0} shown   {int(s['dropped'])} dropped", flush=True)
    end_mb = rss_mb()
    shown = panel.live_stats.shown - shown0
    panel.shutdown()
    panel.close()
    tmp.cleanup()
    if errors:
        print(f"soak_live: the source stopped: {errors[0]}", file=sys.stderr)
        return 2
    growth = end_mb - start_mb
    print(f"end    rss {end_mb:8.1f} MiB   growth {growth:+.1f} MiB over {args.minutes:g} min, {shown} frames shown")
    return 1 if growth > args.max_growth_mb else 0


if __name__ == "__main__":
    raise SystemExit(main())
