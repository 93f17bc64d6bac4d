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
import threading
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
    p.add_argument("--rounds", type=int, default=4,
                   help="alternate this many live and bare rounds (both then see the same machine load)")
    p.add_argument("--rate", type=float, default=1.0,
                   help="playback rate; raise it when the model is faster than the video's frame rate")
    p.add_argument("--half", action="store_true", help="float16 forward (CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (CUDA only)")
    add_json_arg(p)
    p.set_defaults(func=run_bench_live)
    return p


def add_live_gui_args(parser: argparse.ArgumentParser) -> None:
    """The window's live-source options: ``--camera NAME|INDEX``, ``--camera-resolution WxH``, ``--video FILE``."""
    g = parser.add_argument_group("live")
    g.add_argument("--camera", default=None, metavar="NAME|INDEX", help="start the live view on this camera")
    g.add_argument("--camera-resolution", default=None, metavar="WxH", help="camera resolution, e.g. 640x480")
    g.add_argument("--video", default=None, metavar="FILE", help="start the live view on this video (looped)")


def open_live_source(panel, args: argparse.Namespace) -> bool:
    """Start the source that ``--camera`` / ``--video`` name on a LivePanel; False (message shown) on failure."""
    if getattr(args, "video", None):
        return panel.open_video(args.video)
    if getattr(args, "camera", None) is not None:
        resolution = None
        if args.camera_resolution:
            try:
                w, h = (int(v) for v in args.camera_resolution.lower().split("x"))
                resolution = (w, h)
            except ValueError:
                raise CommandError(f"--camera-resolution must be WxH, not {args.camera_resolution!r}") from None
        return panel.open_camera(args.camera, resolution)
    return True


def run_bench_live(args: argparse.Namespace) -> int:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415 - Qt only for this subcommand

    from explorer.gui.live_panel import LivePanel  # noqa: PLC0415

    if args.seconds <= 0 or args.rounds < 1:
        raise CommandError("--seconds must be positive and --rounds at least 1")
    app = QApplication.instance() or QApplication(["deep-explorer"])
    loaded = model_from_args(args, weights=args.weights)
    panel = LivePanel()
    panel.setWindowTitle("deep-explorer bench live")
    panel.resize(1200, 500)
    panel.show()
    try:
        figures = _measure(app, panel, loaded, args)
    finally:
        panel.shutdown()
        panel.close()
        panel.deleteLater()
        app.processEvents()
    emit(args, figures, _report(figures))
    return 0


def _measure(app, panel, loaded, args: argparse.Namespace) -> dict:
    """Alternate live rounds (the panel playing the video) and bare rounds (the panel frozen and idle, the
    module alone on the frames just shown), so that both see the same machine load."""
    from PySide6.QtCore import QEventLoop, QTimer  # noqa: PLC0415

    shown: list = []
    errors: list[str] = []
    loop = QEventLoop()
    timer = QTimer(singleShot=True)
    timer.timeout.connect(loop.quit)

    def on_shown(result) -> None:
        shown.append((time.perf_counter(), result))
        if len(shown) == WARMUP_FRAMES:
            loop.quit()

    def on_error(message: str) -> None:
        errors.append(message)
        loop.quit()

    def run_loop(ms: int) -> None:
        timer.start(ms)
        loop.exec()
        timer.stop()
        if errors:
            raise CommandError(errors[0])

    panel.set_model(loaded, args.layer, half=args.half, channels_last=args.channels_last, fit=args.fit)
    if args.layer and panel.layer != args.layer:
        raise CommandError(panel.message.text() or f"no layer named {args.layer!r}")
    panel.frame_shown.connect(on_shown)
    panel.source_error.connect(on_error)
    if not panel.open_video(args.video, rate=args.rate):
        raise CommandError(panel.message.text())
    run_loop(120_000)  # warm-up: until a few frames are shown
    if len(shown) < WARMUP_FRAMES:
        raise CommandError("fewer than 3 frames were shown in 120 s")
    pipeline = panel.pipeline
    live_frames = live_time = 0.0
    bare_count = bare_time = 0.0
    latencies: list[float] = []
    stage_ms: dict[str, list[float]] = {}
    round_ratios: list[float] = []
    live_wall = 0.0
    dropped = delivered = 0
    live_seconds = args.seconds / args.rounds
    for _ in range(args.rounds):
        panel.freeze(False)
        first = len(shown)
        dropped0, delivered0 = panel.live_stats.dropped, panel.source.frames_delivered
        t0 = time.perf_counter()
        run_loop(int(live_seconds * 1000))
        panel.freeze(True)
        live_wall += time.perf_counter() - t0
        measured = shown[first:]
        delivered += panel.source.frames_delivered - delivered0
        if len(measured) >= 2:
            live_frames += len(measured) - 1
            live_time += measured[-1][0] - measured[0][0]
        latencies += [(at - r.frame.arrived) * 1e3 for at, r in measured]
        for _, r in measured:
            for stage, seconds in r.timings.items():
                stage_ms.setdefault(stage, []).append(seconds * 1e3)
        panel.runner.wait_idle()
        app.processEvents()
        dropped += panel.live_stats.dropped - dropped0
        images = [r.frame.image for _, r in (measured or shown[-1:])]
        n, t = bare_forward_on_worker(pipeline, images, budget_s=live_seconds, min_count=len(measured),
                                      wait=lambda seconds: run_loop(int(seconds * 1000)))
        bare_count += n
        bare_time += t
        if len(measured) >= 2:
            round_ratios.append(((len(measured) - 1) / (measured[-1][0] - measured[0][0])) / (n / t))
    if live_frames < 1 or live_time <= 0:
        raise CommandError(f"too few frames shown in {args.seconds:g} s to measure; use a longer --seconds")
    live_fps = live_frames / live_time
    bare_fps = bare_count / bare_time
    lat = np.array(latencies)
    return {
        "live_fps": round(live_fps, 2),
        "bare_forward_fps": round(bare_fps, 2),
        "ratio": round(live_fps / bare_fps, 4),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "dropped": int(dropped),
        "frames_shown": len(latencies),
        "source_fps": round(delivered / live_wall, 2),
        "model": loaded.display_name,
        "layer": pipeline.layer,
        "device": str(pipeline.device),
        "input_size": list(loaded.spec.size),
        "stage_ms": {stage: round(float(np.mean(v)), 2) for stage, v in stage_ms.items()},
        "bare_forward_ms": round(1e3 / bare_fps, 2),
        "round_ratios": [round(r, 3) for r in round_ratios],
    }


def _report(d: dict) -> str:
    text = (f"live_fps          {d['live_fps']:.2f}\n"
            f"bare_forward_fps  {d['bare_forward_fps']:.2f}\n"
            f"ratio             {d['ratio']:.3f}\n"
            f"p50_ms            {d['p50_ms']:.1f}\n"
            f"p95_ms            {d['p95_ms']:.1f}\n"
            f"dropped           {d['dropped']}\n"
            f"({d['model']}, layer {d['layer']}, {d['device']}, {d['input_size'][0]}x{d['input_size'][1]}, "
            f"{d['frames_shown']} frames shown, source {d['source_fps']:.1f} fps)\n"
            "mean ms per live frame: " + ", ".join(f"{k} {v:.1f}" for k, v in d["stage_ms"].items())
            + f"; bare forward {d['bare_forward_ms']:.1f}\n"
            "ratio per round: " + ", ".join(f"{r:.2f}" for r in d["round_ratios"]))
    if d["source_fps"] < 1.2 * d["bare_forward_fps"]:
        text += "\nnote: the video delivers frames barely faster than the model runs; raise --rate"
    return text


def bare_forward_on_worker(pipeline, images: list[np.ndarray], budget_s: float, min_count: int = 5,
                           wait=None) -> tuple[int, float]:
    """:func:`bare_forward` on a thread of its own, as the live worker runs (a thread's intra-op
    parallelism can differ from the main thread's, most of all on a busy machine).
    ``wait(seconds)``, when given, is called until the thread ends (the bench keeps Qt's event loop
    turning meanwhile, so the video does not pile up frames for the next live round)."""
    out: list = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(bare_forward(pipeline, images, budget_s, min_count))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="deep-explorer-bare-forward")
    worker.start()
    while wait is not None and worker.is_alive():
        wait(0.02)
    worker.join()
    if errors:
        raise errors[0]
    return out[0]


def bare_forward(pipeline, images: list[np.ndarray], budget_s: float, min_count: int = 5) -> tuple[int, float]:
    """Time the pipeline's module alone (no hooks, no tiling, no display) on ``images``, preprocessed
    beforehand, cycling through them: at least ``min_count`` (and 5) passes, then until ``budget_s``.
    Returns (passes, seconds)."""
    import torch  # noqa: PLC0415

    inputs = [pipeline.preprocess(im)[0] for im in images[:64]]
    cuda = pipeline.device.type == "cuda"
    count, elapsed = 0, 0.0
    with torch.inference_mode():
        pipeline.module(inputs[0])  # warm-up
        if cuda:
            torch.cuda.synchronize(pipeline.device)
        start = time.perf_counter()
        while count < max(5, min_count) or elapsed < budget_s:
            pipeline.module(inputs[count % len(inputs)])
            if cuda:
                torch.cuda.synchronize(pipeline.device)
            count += 1
            elapsed = time.perf_counter() - start
    return count, elapsed
