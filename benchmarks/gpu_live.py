"""Live pipeline throughput on CUDA, core only (no Qt): frames decoded beforehand into memory, so the
source is not the limit. For each model and precision: frames per second of the whole overlapped
pipeline (prepare → forward → tile, each frame's grid and unit map brought to the host, as the window
gets them) and of the bare forward on the same frames, and their ratio.

    PYTHONPATH=. python3 benchmarks/gpu_live.py --out results.json [--quick] [--device cpu]

``--quick`` runs a small model for a second each (to check the script on a CPU before a GPU run).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.core.errors import ExplorerError  # noqa: E402
from explorer.core.live import LiveFrame, LivePipeline, LiveRunner, bare_forward  # noqa: E402
from explorer.core.models import load_model  # noqa: E402
from explorer.core.models.device import resolve_device  # noqa: E402
from explorer.core.outputs import atomic_write, check_destination  # noqa: E402


def frames(count: int, shape=(480, 640)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    return [np.roll(base, 7 * i, axis=1) for i in range(count)]


def live_fps(pipeline: LivePipeline, images: list[np.ndarray], seconds: float, serial: bool = False) -> dict:
    """Feed frames as fast as the pipeline takes them (newest wins); frames shown per second."""
    shown: list[float] = []
    errors: list[str] = []
    done = threading.Event()
    runner = LiveRunner(pipeline, lambda r: shown.append(time.perf_counter()), errors.append,
                        forward_threads=torch.get_num_threads(), serial=serial)

    def feed() -> None:
        i = 0
        while not done.is_set():
            # a new frame as soon as the prepare stage took the last one: the source is never the limit
            if runner.slot.wait_empty(timeout=0.1):
                runner.submit(LiveFrame(images[i % len(images)], time.perf_counter(), i))
                i += 1

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    time.sleep(min(2.0, seconds))  # warm-up (cuDNN autotuning, the first allocations)
    start, first = time.perf_counter(), len(shown)
    time.sleep(seconds)
    count, elapsed = len(shown) - first, time.perf_counter() - start
    done.set()
    feeder.join()
    runner.stop()
    if errors:
        raise RuntimeError(errors[0])
    return {"live_fps": count / elapsed, "frames": count, "dropped": runner.dropped}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if not args.seconds > 0:  # NaN and non-positive durations measure nothing
        p.error(f"--seconds must be a positive number of seconds, not {args.seconds}")
    try:  # before any model is loaded: the results file can be written, the device exists
        out_path = check_destination(args.out, suffixes=(".json",))
        device = resolve_device(args.device)
    except (ExplorerError, ValueError) as exc:
        print(f"gpu_live: error: {exc}", file=sys.stderr)
        return 2
    models = [("resnet18", "layer1")] if args.quick else [("resnet18", "layer1"), ("resnet50", "layer1")]
    seconds = 1.0 if args.quick else args.seconds
    images = frames(16)
    rows = []
    for name, layer in models:
        loaded = load_model(name, weights="none", device=str(device))
        variants = [(False, False)] + ([(True, True)] if loaded.device.type == "cuda" else [])
        for half, channels_last in variants:
            pipe = LivePipeline(loaded, layer=layer, unit=3, half=half, channels_last=channels_last)
            live = live_fps(pipe, images, seconds)
            n, t = bare_forward(pipe, images, budget_s=seconds)
            row = {"model": name, "layer": layer, "device": str(loaded.device), "half": half,
                   "channels_last": channels_last, "live_fps": round(live["live_fps"], 1),
                   "bare_forward_fps": round(n / t, 1), "ratio": round(live["live_fps"] / (n / t), 3),
                   "frames_shown": live["frames"], "dropped_at_the_first_stage": live["dropped"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    info = {"torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "rows": rows}
    with atomic_write(out_path) as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
