"""``deep-explorer bench live``: the live pipeline's frame rate against the bare model's.

It runs the real thing — a video through Qt Multimedia into :class:`~explorer.gui.panels.live.LivePanel`
in a real window (the offscreen platform when there is no display), the overlapped worker threads, tiling,
painting — and then, in the same process, the bare forward pass on the frames that were shown, with torch's
thread count and with one thread (the faster is ``bare_forward_fps``: the model's own rate on this machine,
whatever thread count the live forward chose). ``ratio`` is ``live_fps / bare_forward_fps``; ``ceiling`` is ``min(source fps, bare forward fps)``, the most the live
pipeline could show, and ``ceiling_ratio`` is ``live_fps / ceiling``. Latencies run from a frame's arrival
to its grid being painted; CPU time is the whole process's (all threads), per frame shown or forward run.

:mod:`explorer.cli.bench` registers it; the timing of the bare forward is core's
(:func:`explorer.core.live.bare_forward`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from explorer.cli.options import CommandError, describe_model, emit, model_from_args, positive_float, positive_int
from explorer.core.live import bare_forward_on_worker

WARMUP_FRAMES = 3  # shown frames left out of the figures (first forwards allocate and tune)


LIVE_HELP = "live pipeline fps vs bare forward fps on a video"
LIVE_DESCRIPTION = ("Play a video through the live panel (Qt Multimedia, worker thread, tiling, a real window) "
                    "and compare its frame rate with the bare model forward on the same frames.")


def configure_bench_live(p: argparse.ArgumentParser) -> None:
    """``bench live``'s own options (the model options and ``--json`` are added by :mod:`.bench`)."""
    p.add_argument("--video", required=True, help="video file to play (looped)")
    p.add_argument("--layer", default=None, help="layer whose grid is shown (default: the first convolution)")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="how long to measure the live pipeline")
    p.add_argument("--rounds", type=positive_int, default=4,
                   help="alternate this many live and bare rounds (both then see the same machine load)")
    p.add_argument("--rate", type=positive_float, default=1.0,
                   help="playback rate; raise it when the model is faster than the video's frame rate")
    p.add_argument("--half", action="store_true", help="float16 forward (CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (CUDA only)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch intra-op threads of the live forward stage (default: chosen by measuring "
                        "torch's count against 1); the bare forward runs with torch's count and with 1, and "
                        "the faster sets the ceiling")
    p.add_argument("--helper-threads", type=positive_int, default=1,
                   help="torch intra-op threads of the prepare and tile stages (default 1)")
    p.add_argument("--switch-interval", type=positive_float, default=None, metavar="MS",
                   help="Python's thread switch interval for the run (sys.setswitchinterval; default 5 ms): "
                        "how long the forward thread may wait for the GIL that another thread holds")
    p.add_argument("--serial", action="store_true",
                   help="run the stages one after the other on one thread (the pipeline before it was overlapped)")
    p.set_defaults(func=run_bench_live)


def run_bench_live(args: argparse.Namespace) -> int:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415 - Qt only for this subcommand

    from explorer.gui.panels.live import LivePanel  # noqa: PLC0415

    if args.seconds <= 0 or args.rounds < 1:
        raise CommandError("--seconds must be positive and --rounds at least 1")
    app = QApplication.instance() or QApplication(["deep-explorer"])
    switch_interval = sys.getswitchinterval()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval / 1e3)
    loaded = model_from_args(args, weights=args.weights)
    panel = LivePanel()
    panel.setWindowTitle("deep-explorer bench live")
    panel.resize(1200, 500)
    panel.show()
    try:
        figures = _measure(app, panel, loaded, args)
        figures["switch_interval_ms"] = round(sys.getswitchinterval() * 1e3, 3)
    finally:
        sys.setswitchinterval(switch_interval)
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

    panel.set_model(loaded, args.layer, half=args.half, channels_last=args.channels_last, fit=args.fit,
                    forward_threads=args.threads, helper_threads=args.helper_threads, serial=args.serial)
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
    bare_threads = sorted(set(panel.runner.thread_choices) | {panel.runner.default_threads}, reverse=True)
    bare_count = dict.fromkeys(bare_threads, 0)
    bare_time = dict.fromkeys(bare_threads, 0.0)
    bare_cpu = dict.fromkeys(bare_threads, 0.0)
    latencies: list[float] = []
    stage_ms: dict[str, list[float]] = {}
    round_ratios: list[float] = []
    round_ceiling_ratios: list[float] = []
    live_wall = live_cpu = 0.0
    dropped = delivered = 0
    live_seconds = args.seconds / args.rounds
    for _ in range(args.rounds):
        panel.freeze(False)
        first = len(shown)
        dropped0, delivered0 = panel.live_stats.dropped, panel.source.frames_delivered
        t0, c0 = time.perf_counter(), time.process_time()
        run_loop(int(live_seconds * 1000))
        panel.freeze(True)
        round_wall = time.perf_counter() - t0
        live_wall += round_wall
        live_cpu += time.process_time() - c0
        measured = shown[first:]
        round_delivered = panel.source.frames_delivered - delivered0
        delivered += round_delivered
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
        # the bare model at each thread count the runner chooses from (the ceiling takes the faster)
        round_bare_fps = 0.0
        for threads in bare_threads:
            c0 = time.process_time()
            n, t = bare_forward_on_worker(pipeline, images, budget_s=live_seconds / len(bare_threads),
                                          min_count=len(measured) // len(bare_threads),
                                          wait=lambda seconds: run_loop(int(seconds * 1000)), threads=threads)
            bare_cpu[threads] += time.process_time() - c0
            bare_count[threads] += n
            bare_time[threads] += t
            round_bare_fps = max(round_bare_fps, n / t)
        if len(measured) >= 2:
            round_fps = (len(measured) - 1) / (measured[-1][0] - measured[0][0])
            round_ratios.append(round_fps / round_bare_fps)
            round_ceiling_ratios.append(round_fps / min(round_delivered / round_wall, round_bare_fps))
    if live_frames < 1 or live_time <= 0:
        raise CommandError(f"too few frames shown in {args.seconds:g} s to measure; use a longer --seconds")
    live_fps = live_frames / live_time
    bare_fps_by_threads = {n: bare_count[n] / bare_time[n] for n in bare_threads}
    best = max(bare_threads, key=lambda n: bare_fps_by_threads[n])
    bare_fps = bare_fps_by_threads[best]
    source_fps = delivered / live_wall
    ceiling = min(source_fps, bare_fps)
    lat = np.array(latencies)
    return {
        "live_fps": round(live_fps, 2),
        "bare_forward_fps": round(bare_fps, 2),
        "ratio": round(live_fps / bare_fps, 4),
        "ceiling_fps": round(ceiling, 2),
        "ceiling_ratio": round(live_fps / ceiling, 4),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "dropped": int(dropped),
        "frames_shown": len(latencies),
        "source_fps": round(source_fps, 2),
        "model": describe_model(loaded),
        "layer": pipeline.layer,
        "device": str(pipeline.device),
        "input_size": list(loaded.spec.size),
        "stage_ms": {stage: round(float(np.mean(v)), 2) for stage, v in stage_ms.items()},
        "bare_forward_ms": round(1e3 / bare_fps, 2),
        "round_ratios": [round(r, 3) for r in round_ratios],
        "round_ceiling_ratios": [round(r, 3) for r in round_ceiling_ratios],
        "live_wall_s": round(live_wall, 2),
        "live_cpu_s": round(live_cpu, 2),
        "live_cpu_ms_per_frame": round(live_cpu * 1e3 / max(1, len(latencies)), 2),
        "bare_wall_s": round(sum(bare_time.values()), 2),
        "bare_cpu_s": round(sum(bare_cpu.values()), 2),
        "bare_cpu_ms_per_forward": round(bare_cpu[best] * 1e3 / max(1, bare_count[best]), 2),
        "bare_forward_fps_by_threads": {str(n): round(v, 2) for n, v in bare_fps_by_threads.items()},
        "forward_threads": panel.runner.forward_threads,
        "forward_thread_ms": {str(n): round(ms, 1) for n, ms in panel.runner.thread_ms.items()},
        "forward_threads_on_trial": panel.runner.measuring_threads,  # the run ended while re-measuring
        "bare_threads": best,
        "helper_threads": panel.runner.helper_threads,
        "pipeline": "serial" if panel.runner.serial else "overlapped",
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _report(d: dict) -> str:
    text = (f"live_fps          {d['live_fps']:.2f}\n"
            f"bare_forward_fps  {d['bare_forward_fps']:.2f}\n"
            f"ratio             {d['ratio']:.3f}\n"
            f"ceiling_fps       {d['ceiling_fps']:.2f}   (min of source {d['source_fps']:.2f} and bare forward)\n"
            f"ceiling_ratio     {d['ceiling_ratio']:.3f}\n"
            f"p50_ms            {d['p50_ms']:.1f}\n"
            f"p95_ms            {d['p95_ms']:.1f}\n"
            f"dropped           {d['dropped']}\n"
            f"({d['model']}, layer {d['layer']}, {d['device']}, {d['input_size'][0]}x{d['input_size'][1]}, "
            f"{d['frames_shown']} frames shown, source {d['source_fps']:.1f} fps)\n"
            "mean ms per live frame: " + ", ".join(f"{k} {v:.1f}" for k, v in d["stage_ms"].items())
            + f"; bare forward {d['bare_forward_ms']:.1f}\n"
            "ratio per round: " + ", ".join(f"{r:.2f}" for r in d["round_ratios"])
            + "; to the ceiling: " + ", ".join(f"{r:.2f}" for r in d["round_ceiling_ratios"]) + "\n"
            f"wall / CPU time: live {d['live_wall_s']:.1f} s / {d['live_cpu_s']:.1f} s "
            f"({d['live_cpu_ms_per_frame']:.1f} ms CPU per frame shown), bare {d['bare_wall_s']:.1f} s / "
            f"{d['bare_cpu_s']:.1f} s ({d['bare_cpu_ms_per_forward']:.1f} ms CPU per forward)\n"
            f"{d['pipeline']} stages; threads: forward {d['forward_threads']}"
            + (" (on trial: re-measuring)" if d["forward_threads_on_trial"] else "")
            + (" (chosen: median forward " + ", ".join(f"{ms:.1f} ms with {n}" for n, ms in d["forward_thread_ms"].items())
               + ")" if d["forward_thread_ms"] else "")
            + f", prepare and tile {d['helper_threads']}; bare forward fps "
            + ", ".join(f"{fps:.2f} with {n}" for n, fps in d["bare_forward_fps_by_threads"].items())
            + f" (the ceiling takes {d['bare_threads']})"
            + (f"; switch interval {d['switch_interval_ms']:g} ms" if "switch_interval_ms" in d else "")
            + (f"; load average {d['load_average'][0]:.2f}" if d.get("load_average") else ""))
    if d["source_fps"] < 1.2 * d["bare_forward_fps"]:
        text += ("\nnote: the video delivers frames barely faster than the model runs, so it sets the ceiling; "
                 "raise --rate to measure the pipeline against the model alone")
    return text
