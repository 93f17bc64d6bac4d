"""Time and memory of the streamed cell search over long Python texts (1 MB and 20 MB by default).

    python benchmarks/bench_lstm_long.py [--sizes 1000000,20000000] [--model bundled] [--threads 1]

The text is the running Python's standard library (.py files under its Lib folder, concatenated and
repeated if need be). Each size runs in a fresh subprocess so that its peak RSS (ru_maxrss) is its
own; the figure includes the interpreter, torch and the model (about 0.5 GB before any work). Printed per
size: seconds for the indicators and the search (replay of every layer, Pearson r for every cell and
indicator, AUROC histograms), and the peak. Targets (issue): 1 MB under 60 s and 1.5 GB; 20 MB under 2 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def corpus(chars: int) -> str:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    parts, n = [], 0
    while n < chars:
        for p in files:
            try:
                t = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            parts.append(t)
            n += len(t)
            if n >= chars:
                break
    return "".join(parts)[:chars]


def one(chars: int, model_name: str, threads: int) -> dict:
    import torch  # noqa: PLC0415

    from explorer.core.rnn.cells import cell_search_steps, indicator_sequences  # noqa: PLC0415
    from explorer.core.rnn.model import load_char_rnn  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415

    torch.set_num_threads(threads)
    text = corpus(chars)
    model = load_char_rnn(None if model_name == "bundled" else model_name)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    indicators = indicator_sequences(text)
    t1 = time.perf_counter()
    found = drive(cell_search_steps(model, text, indicators))
    t2 = time.perf_counter()
    best = found.search["string"][0]
    return {"chars": len(text), "indicators_s": round(t1 - t0, 2), "search_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2), "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                * 1024 / 1e9, 3),
            "rss_before_gb": round(base / 1e9, 3), "bits_per_char": round(found.bits_per_char, 4),
            "best_string_cell": f"{best.cell} r {best.r:+.3f} AUROC {best.auroc:.3f}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,20000000", help="characters, comma-separated")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one, args.model, args.threads)))
        return 0
    print(f"{os.cpu_count()} CPUs, {args.threads} torch thread(s), load average {os.getloadavg()[0]:.1f}, "
          f"model {args.model}", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(size), "--model", args.model,
                              "--threads", str(args.threads)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{size:>10,} chars: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['chars']:>10,} chars: indicators {r['indicators_s']:7.2f} s, search {r['search_s']:8.2f} s, "
              f"total {r['total_s']:8.2f} s, peak RSS {r['peak_rss_gb']:.2f} GB "
              f"(before the work {r['rss_before_gb']:.2f} GB); {r['bits_per_char']} bpc; "
              f"string cell {r['best_string_cell']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
