"""How fast the exploring views are computed on this machine.

    python benchmarks/bench_explore.py [--model resnet50] [--device cpu] [--repeat 20]

Prints, in milliseconds (median of --repeat runs): the tiled grid of a 2048-channel activation, a whole
layer view (forward with one hook + grid + top-5), and the layer table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from explorer.core.explore import compute_layer_view  # noqa: E402
from explorer.core.models import load_model  # noqa: E402
from explorer.core.probe import layer_table  # noqa: E402
from explorer.core.tiling import activation_grid  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    loaded = load_model(args.model, weights="none", device=args.device)
    x = torch.randn(1, *loaded.spec.shape)
    act = torch.rand(1, 2048, 7, 7, device=loaded.device)
    last = [n for n, _ in loaded.module.named_modules() if n][-3]
    figures = {
        "model": loaded.name, "device": str(loaded.device),
        "grid_2048x7x7_ms": median_ms(lambda: activation_grid(act), args.repeat),
        "forward_only_ms": median_ms(lambda: compute_layer_view(loaded, x, None), max(3, args.repeat // 4)),
        f"layer_view_{last}_ms": median_ms(lambda: compute_layer_view(loaded, x, last), max(3, args.repeat // 4)),
        "layer_table_ms": median_ms(lambda: layer_table(loaded.module, loaded.spec.shape), 3),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>32}: {value:.2f}" if isinstance(value, float) else f"{key:>32}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
