"""``deep-explorer bench``: timed comparisons against the tools people use today.

:data:`BENCHES` is the one registry: a benchmark is a name, a help line and a function that adds its
options and ``func``. ``bench attribution`` is defined here, ``bench live`` in :mod:`.live`.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

from explorer.cli.live import LIVE_DESCRIPTION, LIVE_HELP, configure_bench_live
from explorer.cli.topk import TOPK_HELP, configure_bench_topk
from explorer.cli.compare import COMPARE_HELP, configure_bench_compare
from explorer.cli.optimize import VISUALIZE_HELP, configure_bench_visualize
from explorer.cli.options import add_json_arg, add_model_args, check_memory, describe_model, emit, model_from_args, positive_int

BenchConfigure = Callable[[argparse.ArgumentParser], None]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` and every benchmark in :data:`BENCHES` (each gets the model options and ``--json``)."""
    bench = subparsers.add_parser("bench", help="benchmarks against reference tools",
                                  description="Benchmarks: our time, the reference's time, their ratio "
                                              "and the largest difference between the results.")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    for name, (help_text, description, configure) in BENCHES.items():
        p = sub.add_parser(name, help=help_text, description=description or help_text)
        add_model_args(p)
        add_json_arg(p)
        configure(p)


# --- bench attribution -------------------------------------------------------------------------------

BENCH_METHODS = ("occlusion", "guided-backprop", "deconvnet")


ATTRIBUTION_HELP = "occlusion vs Captum's Occlusion; guided backprop / deconvnet vs the plain gradient"


def configure_attribution(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", nargs="+", choices=BENCH_METHODS, default=list(BENCH_METHODS),
                   help="methods to time (default: all)")
    p.add_argument("--input", default=None, help="an image or .npy (default: a seeded random input)")
    p.add_argument("--window", type=positive_int, default=16)
    p.add_argument("--stride", type=positive_int, default=8)
    p.add_argument("--baseline", choices=["zero", "mean", "blur"], default="zero")
    p.add_argument("--batch-size", type=positive_int, default=16, help="occluded images per batch, for both (default 16)")
    p.add_argument("--repeat", type=positive_int, default=1, help="occlusion runs per side; the best time counts")
    p.add_argument("--grad-repeat", type=positive_int, default=10, help="gradient runs per method; the best time counts")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.set_defaults(func=run_bench_attribution)


def _best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object, float]:
    """(best wall-clock seconds, the last result, best CPU seconds of this process).

    On a machine shared with other work the wall clock mostly measures the neighbours; the process's CPU
    time (all its threads) is the steadier figure, so both are reported."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(max(1, repeat)):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return best, out, best_cpu


def run_bench_attribution(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from explorer.core.attribution.backprop import backprop_attribution  # noqa: PLC0415
    from explorer.core.attribution.occlusion import OcclusionSettings, make_baseline, occlusion  # noqa: PLC0415
    from explorer.core.attribution.target import Target, top_class  # noqa: PLC0415
    from explorer.core.preprocess import load_input  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = model_from_args(args)
    check_memory(args, loaded, batch=args.batch_size + 1, gradients=True, what="the benchmark")
    model, spec, device = loaded.module, loaded.spec, loaded.device
    if args.input:
        x = load_input(args.input, spec, args.fit)[0].to(device)
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, *spec.shape, generator=g).to(device)
    cls = top_class(model, x)
    target = Target.for_class(cls)
    rows: list[dict] = []
    for method in args.method:
        if method == "occlusion":
            rows.append(_bench_occlusion(args, model, x, target, cls, OcclusionSettings, make_baseline, occlusion))
        else:
            rows.append(_bench_backprop(args, model, x, target, cls, method, backprop_attribution))
    data = {"model": describe_model(loaded), "device": str(device), "input_shape": list(x.shape),
            "threads": torch.get_num_threads(), "target_class": cls, "results": rows}
    lines = [f"model {loaded.display_name} on {device}, input {tuple(x.shape)}, "
             f"{torch.get_num_threads()} threads, target class {cls}"]
    for r in rows:
        lines.append(f"{r['method']:>16}: ours {r['ours_s']:.3f} s, {r['baseline']} {r['baseline_s']:.3f} s, "
                     f"ratio {r['ratio']:.2f}x"
                     + (f" (CPU time {r['ours_cpu_s']:.1f} s vs {r['baseline_cpu_s']:.1f} s: {r['cpu_ratio']:.2f}x)"
                        if "cpu_ratio" in r else "")
                     + f", max |diff| {r['max_abs_diff']:.3g} "
                     f"(relative {r['max_rel_diff']:.3g})" + (f"; {r['detail']}" if r.get("detail") else ""))
    emit(args, data, "\n".join(lines))
    return 0


def _bench_occlusion(args, model, x, target, cls, OcclusionSettings, make_baseline, occlusion) -> dict:  # noqa: N803
    import torch  # noqa: PLC0415

    settings = OcclusionSettings(window=args.window, stride=args.stride, baseline=args.baseline,
                                 batch_size=args.batch_size, fast=True)
    ours_s, ours, ours_cpu = _best_time(lambda: occlusion(model, x, target, settings), args.repeat)
    try:
        from captum.attr import Occlusion  # noqa: PLC0415
    except ImportError:
        settings_full = OcclusionSettings(window=args.window, stride=args.stride, baseline=args.baseline,
                                          batch_size=args.batch_size, fast=False)
        base_s, base, base_cpu = _best_time(lambda: occlusion(model, x, target, settings_full), args.repeat)
        ref, name = base.map, "full forward passes (Captum not installed)"
    else:
        baseline = make_baseline(x, args.baseline, settings.window)
        c = x.shape[1]

        def captum_run():
            with torch.no_grad():
                return Occlusion(model).attribute(x, sliding_window_shapes=(c, args.window, args.window),
                                                  strides=(c, args.stride, args.stride), baselines=baseline,
                                                  target=cls, perturbations_per_eval=args.batch_size)[0]

        base_s, ref, base_cpu = _best_time(captum_run, args.repeat)
        name = "Captum Occlusion"
    diff = float((ours.map - ref.float().cpu()).abs().max())
    scale = float(ref.abs().max()) or 1.0
    return {"method": "occlusion", "ours_s": ours_s, "baseline": name, "baseline_s": base_s,
            "ratio": base_s / ours_s, "ours_cpu_s": ours_cpu, "baseline_cpu_s": base_cpu,
            "cpu_ratio": base_cpu / ours_cpu, "max_abs_diff": diff, "max_rel_diff": diff / scale,
            "detail": f"{ours.windows} windows, window {args.window}, stride {args.stride}, "
                      f"batch {args.batch_size}, {ours.mode}"}


def _bench_backprop(args, model, x, target, cls, method, backprop_attribution) -> dict:
    """Our guided backprop / deconvnet against our plain gradient (the cost ratio the issue bounds), with
    Captum's implementation as the reference map."""
    backprop_attribution(model, x, target, "gradient")  # warm-up
    backprop_attribution(model, x, target, method)
    # alternate the two so that both see the same load from other processes
    grad_s = ours_s = grad_cpu = ours_cpu = float("inf")
    for _ in range(max(1, args.grad_repeat)):
        t, _, c = _best_time(lambda: backprop_attribution(model, x, target, "gradient"), 1)
        grad_s, grad_cpu = min(grad_s, t), min(grad_cpu, c)
        t, (ours, report), c = _best_time(lambda: backprop_attribution(model, x, target, method), 1)
        ours_s, ours_cpu = min(ours_s, t), min(ours_cpu, c)
    detail = (f"cost vs plain gradient {ours_s / grad_s:.2f}x wall, {ours_cpu / grad_cpu:.2f}x CPU "
              f"(gradient {grad_s:.4f} s)")
    row = {"method": method, "ours_s": ours_s, "gradient_s": grad_s, "cost_vs_gradient": ours_s / grad_s,
           "ours_cpu_s": ours_cpu, "gradient_cpu_s": grad_cpu, "cpu_cost_vs_gradient": ours_cpu / grad_cpu,
           "note": report.note}
    try:
        from captum.attr import Deconvolution, GuidedBackprop  # noqa: PLC0415
    except ImportError:
        row.update(baseline="none", baseline_s=float("nan"), ratio=float("nan"), max_abs_diff=float("nan"),
                   max_rel_diff=float("nan"), detail=detail)
        return row
    cls_ref = GuidedBackprop if method == "guided-backprop" else Deconvolution
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base_s, ref, _ = _best_time(lambda: cls_ref(model).attribute(x, target=cls), args.grad_repeat)
    diff = float((ours - ref).abs().max())
    row.update(baseline=f"Captum {cls_ref.__name__}", baseline_s=base_s, ratio=base_s / ours_s,
               max_abs_diff=diff, max_rel_diff=diff / (float(ref.abs().max()) or 1.0), detail=detail)
    return row


# name → (one-line help, description, configure function): the one registry of benchmarks
BENCHES: dict[str, tuple[str, str, BenchConfigure]] = {
    "attribution": (ATTRIBUTION_HELP, "", configure_attribution),
    "live": (LIVE_HELP, LIVE_DESCRIPTION, configure_bench_live),
    "visualize": (VISUALIZE_HELP, "", configure_bench_visualize),
    "topk": (TOPK_HELP, "", configure_bench_topk),
    "compare": (COMPARE_HELP, "", configure_bench_compare),
}
