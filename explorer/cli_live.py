"""``deep-explorer bench live``: the live pipeline's frame rate against the bare model's.

It runs the real thing — a video through Qt Multimedia into :class:`~explorer.gui.live_panel.LivePanel`
in a real window (the offscreen platform when there is no display), the worker thread, tiling, painting —
and then, in the same process, the bare forward pass on the frames that were shown. ``ratio`` is
``live_fps / bare_forward_fps``; latencies run from a frame's arrival to its grid being painted.

Hooking in: ``register(subparsers)`` adds ``bench live`` (creating ``bench`` when no other module has);
a module that owns ``bench`` can instead call ``add_bench_live(bench_subparsers)``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from explorer.cli import CommandError, add_json_arg, add_model_args, emit, model_from_args

WARMUP_FRAMES = 3  # shown frames left out of the figures (first forwards allocate and tune)


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.choices.get("bench")
    if bench is None:
        bench = subparsers.add_parser("bench", help="measure speed (live pipeline, ...)")
        bench_subparsers = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    else:
        bench_subparsers = next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    add_bench_live(bench_subparsers)


def add_bench_live(bench_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = bench_subparsers.add_parser(
        "live", help="live pipeline fps vs bare forward fps on a video",
        description="Play a video through the live panel (Qt Multimedia, worker thread, tiling, a real window) "
                    "and compare its frame rate with the bare model forward on the same frames.")
    p.add_argument("--video", required=True, help="video file to play (looped)")
    add_model_args(p)
    p.add_argument("--layer", default=None, help="layer whose grid is shown (default: the first convolution)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to measure the live pipeline")
    p.add_argument("--rate", type=float, default=1.0,
                   help="playback rate; raise it when the model is faster than the video's frame rate")
    p.add_argument("--half", action="store_true", help="float16 forward (CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (CUDA only)")
    add_json_arg(p)
    p.set_defaults(func=run_bench_live)
    return p


def run_bench_live(args: argparse.Namespace) -> int:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QTimer  # noqa: PLC0415 - Qt only for this subcommand
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from explorer.gui.live_panel import LivePanel  # noqa: PLC0415

    app = QApplication.instance() or QApplication(["deep-explorer"])
    loaded = model_from_args(args, weights=args.weights)
    panel = LivePanel()
    panel.setWindowTitle("deep-explorer bench live")
    panel.resize(1200, 500)
    panel.show()
    shown: list = []
    errors: list[str] = []
    loop = QEventLoop()

    def on_shown(result) -> None:
        shown.append((time.perf_counter(), result))
        if len(shown) == WARMUP_FRAMES:
            loop.quit()

    def on_error(message: str) -> None:
        errors.append(message)
        loop.quit()

    try:
        panel.set_model(loaded, args.layer, half=args.half, channels_last=args.channels_last)
        if args.layer and panel.layer != args.layer:
            raise CommandError(panel.message.text() or f"no layer named {args.layer!r}")
        panel.frame_shown.connect(on_shown)
        panel.source_error.connect(on_error)
        if not panel.open_video(args.video, rate=args.rate):
            raise CommandError(panel.message.text())
        # Warm up until a few frames are shown, then measure for --seconds.
        give_up = QTimer(singleShot=True, interval=120_000)
        give_up.timeout.connect(loop.quit)
        give_up.start()
        loop.exec()
        give_up.stop()
        if errors:
            raise CommandError(errors[0])
        if len(shown) < WARMUP_FRAMES:
            raise CommandError("no frame was shown within 120 s")
        start_index = len(shown)
        dropped0 = panel.live_stats.dropped
        delivered0 = panel.source.frames_delivered
        t0 = time.perf_counter()
        QTimer.singleShot(int(args.seconds * 1000), loop.quit)
        loop.exec()
        elapsed = time.perf_counter() - t0
        if errors:
            raise CommandError(errors[0])
        delivered = panel.source.frames_delivered - delivered0 if panel.source else 0
        dropped = panel.live_stats.dropped - dropped0
        measured = shown[start_index:]
        pipeline = panel.pipeline
    finally:
        panel.shutdown()
        panel.close()
        panel.deleteLater()
        app.processEvents()
    if len(measured) < 2:
        raise CommandError(f"only {len(measured)} frames shown in {args.seconds:g} s; measure longer (--seconds)")
    live_fps = (len(measured) - 1) / (measured[-1][0] - measured[0][0])
    latencies = np.array([shown_at - r.frame.arrived for shown_at, r in measured]) * 1e3
    bare_fps = bare_forward_fps(pipeline, [r.frame.image for _, r in measured], budget_s=min(args.seconds, 10.0))
    data = {
        "live_fps": round(live_fps, 2),
        "bare_forward_fps": round(bare_fps, 2),
        "ratio": round(live_fps / bare_fps, 3),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "dropped": int(dropped),
        "frames_shown": len(measured),
        "source_fps": round(delivered / elapsed, 2),
        "model": loaded.display_name,
        "layer": pipeline.layer,
        "device": str(pipeline.device),
        "input_size": list(loaded.spec.size),
    }
    text = (f"live_fps          {data['live_fps']:.2f}\n"
            f"bare_forward_fps  {data['bare_forward_fps']:.2f}\n"
            f"ratio             {data['ratio']:.3f}\n"
            f"p50_ms            {data['p50_ms']:.1f}\n"
            f"p95_ms            {data['p95_ms']:.1f}\n"
            f"dropped           {data['dropped']}\n"
            f"({data['model']}, layer {data['layer']}, {data['device']}, "
            f"{data['input_size'][0]}x{data['input_size'][1]}, {data['frames_shown']} frames shown, "
            f"source {data['source_fps']:.1f} fps)")
    if data["source_fps"] < 1.2 * bare_fps:
        text += "\nnote: the video delivers frames barely faster than the model runs; raise --rate"
    emit(args, data, text)
    return 0


def bare_forward_fps(pipeline, images: list[np.ndarray], budget_s: float = 10.0) -> float:
    """Forward passes per second of the pipeline's module alone (no hooks, no tiling, no display),
    on ``images`` preprocessed beforehand, cycling through them for about ``budget_s`` seconds."""
    import torch  # noqa: PLC0415

    inputs = [pipeline.preprocess(im)[0] for im in images[:64]]
    cuda = pipeline.device.type == "cuda"
    count, elapsed = 0, 0.0
    with torch.inference_mode():
        pipeline.module(inputs[0])  # warm-up
        if cuda:
            torch.cuda.synchronize(pipeline.device)
        start = time.perf_counter()
        while count < max(5, len(images)) and elapsed < budget_s or count < 5:
            pipeline.module(inputs[count % len(inputs)])
            if cuda:
                torch.cuda.synchronize(pipeline.device)
            count += 1
            elapsed = time.perf_counter() - start
    return count / elapsed
