"""``deep-explorer visualize``, ``dream`` and ``invert``: optimisation over the image, headless
(:mod:`explorer.core.optimize`), and ``bench visualize`` (our Fourier mode against Lucent's ``render_vis``).

Each writes a PNG at the model's input size, in pixel space (what the model saw, de-normalised), and
beside it a JSON file with everything needed to make it again (model, target, method, settings, seed).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from explorer.cli.options import (CommandError, add_json_arg, add_model_args, cli_progress, describe_model, emit,
                                  model_from_args, nonnegative_int, positive_float, positive_int)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("visualize", help="an image a class or unit responds to most (class model, "
                                                "Yosinski's regularised ascent, Fourier feature visualisation)")
    add_model_args(p)
    add_json_arg(p)
    t = p.add_argument_group("target (a class, or --layer with --unit)")
    t.add_argument("--target", default=None, help="class index or label")
    t.add_argument("--layer", default=None, help="layer name of a unit target")
    t.add_argument("--unit", type=nonnegative_int, default=None, help="channel (unit) of --layer")
    t.add_argument("--position", default=None, help="ROW,COL: one neuron instead of the channel mean")
    m = p.add_argument_group("method")
    m.add_argument("--method", choices=["simonyan", "yosinski", "fourier"], default=None,
                   help="default: fourier for units, yosinski for classes")
    m.add_argument("--preset", type=int, choices=[1, 2, 3, 4], default=None,
                   help="Yosinski et al. Table 1 setting (implies --method yosinski)")
    m.add_argument("--steps", type=positive_int, default=None)
    m.add_argument("--lr", type=positive_float, default=None, help="learning rate (Caffe 0..255 units for "
                                                                   "simonyan/yosinski, Adam's for fourier)")
    m.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("regularisers")
    r.add_argument("--l2", type=float, default=None, help="simonyan: lambda of -lambda ||I||^2")
    r.add_argument("--decay", type=float, default=None, help="yosinski: L2 decay per step")
    r.add_argument("--blur-sigma", type=float, default=None, help="yosinski: Gaussian blur width (pixels)")
    r.add_argument("--blur-every", type=nonnegative_int, default=None, help="yosinski: blur every N steps")
    r.add_argument("--norm-percentile", type=float, default=None, help="yosinski: clip pixels of small norm")
    r.add_argument("--contribution-percentile", type=float, default=None,
                   help="yosinski: clip pixels of small contribution")
    r.add_argument("--jitter", type=nonnegative_int, default=None, help="yosinski: random roll (pixels)")
    r.add_argument("--size", type=positive_int, default=None, help="fourier: image side (default: input size)")
    r.add_argument("--no-transforms", action="store_true", help="fourier: no transformation robustness")
    r.add_argument("--no-decorrelate", action="store_true", help="fourier: plain RGB instead of decorrelated")
    r.add_argument("--batch", type=positive_int, default=1, help="fourier: several images (side by side)")
    r.add_argument("--diversity", type=float, default=0.0, help="fourier: weight of the diversity term")
    p.add_argument("--out", required=True, help="PNG file (its settings go beside it as .json)")
    p.set_defaults(func=run_visualize)

    d = subparsers.add_parser("dream", help="DeepDream: amplify what a layer sees in an image")
    add_model_args(d)
    add_json_arg(d)
    d.add_argument("--input", required=True, help="an image or .npy")
    d.add_argument("--layer", required=True)
    d.add_argument("--octaves", type=positive_int, default=4)
    d.add_argument("--octave-scale", type=positive_float, default=1.4)
    d.add_argument("--steps", type=positive_int, default=10, help="steps per octave")
    d.add_argument("--step-size", type=positive_float, default=1.5)
    d.add_argument("--jitter", type=nonnegative_int, default=32)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, help="PNG file (settings beside it as .json)")
    d.set_defaults(func=run_dream)

    v = subparsers.add_parser("invert", help="feature inversion: reconstruct an image from a layer's code")
    add_model_args(v)
    add_json_arg(v)
    v.add_argument("--input", required=True, help="an image or .npy")
    v.add_argument("--layer", required=True, nargs="+", help="one or more layers (several: side by side)")
    v.add_argument("--steps", type=positive_int, default=200)
    v.add_argument("--lr", type=positive_float, default=None)
    v.add_argument("--lambda-alpha", type=float, default=None, help="weight of the alpha-norm")
    v.add_argument("--lambda-tv", type=float, default=None, help="weight of total variation")
    v.add_argument("--alpha", type=positive_float, default=None)
    v.add_argument("--beta", type=positive_float, default=None)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", required=True, help="PNG file (settings beside it as .json)")
    v.set_defaults(func=run_invert)


def _destinations(out: str) -> tuple[Path, Path]:
    from explorer.core.outputs import check_destination  # noqa: PLC0415

    png = check_destination(out, (".png",))
    return png, check_destination(png.with_suffix(".json"), (".json",))


def _progress(label: str):
    bar = cli_progress(label)
    state = {"done": 0}

    def on_step(step) -> None:
        state["done"] += 1
        bar(step.step, step.total)

    return on_step


def _save(png: Path, sidecar: Path, picture, settings: dict) -> None:
    from PIL import Image  # noqa: PLC0415

    from explorer.core.outputs import atomic_write  # noqa: PLC0415

    with atomic_write(png) as tmp:
        Image.fromarray(picture).save(tmp)
    with atomic_write(sidecar) as tmp:
        tmp.write_text(json.dumps(settings, indent=2, default=str) + "\n")


def _parse_target(args, loaded):
    from explorer.core.attribution.target import Target  # noqa: PLC0415

    if (args.target is None) == (args.layer is None):
        raise CommandError("give either --target CLASS or --layer NAME with --unit N")
    if args.layer is not None:
        if args.unit is None:
            raise CommandError("--layer needs --unit N")
        position = None
        if args.position:
            try:
                position = tuple(int(v) for v in args.position.split(","))
                assert len(position) == 2
            except (ValueError, AssertionError):
                raise CommandError(f"--position must be ROW,COL, not {args.position!r}") from None
        return Target.for_unit(args.layer, args.unit, position)
    labels = loaded.spec.labels
    if args.target.lstrip("-").isdigit():
        index = int(args.target)
    elif args.target in labels:
        index = labels.index(args.target)
    else:
        raise CommandError(f"--target {args.target!r} is neither a class index nor one of the model's labels")
    if index < 0 or (labels and index >= len(labels)):
        raise CommandError(f"--target {index} is out of range: the model has {len(labels)} classes")
    return Target.for_class(index)


def run_visualize(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415

    from explorer.core.optimize.visualize import VisualizeSettings, visualize_steps  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415

    png, sidecar = _destinations(args.out)
    loaded = model_from_args(args)
    target = _parse_target(args, loaded)
    method = args.method or ("yosinski" if args.preset else "fourier" if target.is_unit else "yosinski")
    settings = VisualizeSettings(
        method=method, steps=args.steps, lr=args.lr, seed=args.seed, l2=args.l2, preset=args.preset,
        decay=args.decay, blur_sigma=args.blur_sigma, blur_every=args.blur_every,
        norm_percentile=args.norm_percentile, contribution_percentile=args.contribution_percentile,
        jitter=args.jitter, size=args.size, transforms=not args.no_transforms,
        decorrelate=not args.no_decorrelate, batch=args.batch, diversity=args.diversity).resolved()
    result = drive(visualize_steps(loaded.module, loaded.spec, target, settings, loaded.device),
                   _progress(f"visualize ({method})"))
    picture = result.pictures[0] if len(result.pictures) == 1 else np.concatenate(result.pictures, axis=1)
    what = target.describe(loaded.spec.labels)
    record = {"command": "visualize", "model": describe_model(loaded), "target": what,
              "target_spec": {"class": target.class_index, "layer": target.layer, "unit": target.unit,
                              "position": target.position},
              "method": method, "settings": result.settings.to_dict(), "objective": result.objective,
              "values": result.values, "probabilities": result.probabilities, "seconds": result.seconds,
              "out": str(png)}
    _save(png, sidecar, picture, record)
    record["settings_file"] = str(sidecar)
    prob = f", probability {result.probabilities[0]:.3f}" if result.probabilities else ""
    emit(args, record, f"{png}: {method} for {what}, {result.settings.steps} steps in {result.seconds:.1f} s, "
                       f"objective {result.objective:.4g}, value {result.values[0]:.4g}{prob}")
    return 0


def _input(args, loaded):
    from explorer.core.preprocess import load_input  # noqa: PLC0415

    x, _ = load_input(args.input, loaded.spec, args.fit)
    return x.to(loaded.device)


def run_dream(args: argparse.Namespace) -> int:
    from explorer.core.optimize.dream import DreamSettings, dream_steps  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415

    png, sidecar = _destinations(args.out)
    loaded = model_from_args(args)
    x = _input(args, loaded)
    settings = DreamSettings(layer=args.layer, octaves=args.octaves, octave_scale=args.octave_scale,
                             steps=args.steps, step_size=args.step_size, jitter=args.jitter, seed=args.seed)
    from explorer.core.attribution.target import find_layer  # noqa: PLC0415

    find_layer(loaded.module, args.layer)
    result = drive(dream_steps(loaded.module, loaded.spec, x, settings, loaded.device), _progress("dream"))
    record = {"command": "dream", "model": describe_model(loaded), "input": str(args.input),
              "settings": settings.to_dict(), "objective": result.objective, "octaves": result.octaves,
              "seconds": result.seconds, "out": str(png)}
    _save(png, sidecar, result.picture, record)
    record["settings_file"] = str(sidecar)
    norms = ", ".join(f"{o['norm_before']:.3g}→{o['norm_after']:.3g}" for o in result.octaves)
    emit(args, record, f"{png}: DeepDream at {args.layer}, objective {result.objective:.4g}; "
                       f"activation norm per octave {norms}")
    return 0


def run_invert(args: argparse.Namespace) -> int:
    from dataclasses import replace  # noqa: PLC0415

    from explorer.core.attribution.target import find_layer  # noqa: PLC0415
    from explorer.core.optimize.invert import InvertSettings, invert_steps  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415

    png, sidecar = _destinations(args.out)
    loaded = model_from_args(args)
    x = _input(args, loaded)
    for layer in args.layer:
        find_layer(loaded.module, layer)
    settings = InvertSettings(layers=tuple(args.layer), steps=args.steps, seed=args.seed)
    given = {k: getattr(args, k) for k in ("lr", "lambda_alpha", "lambda_tv", "alpha", "beta")
             if getattr(args, k) is not None}
    settings = replace(settings, **given)
    result = drive(invert_steps(loaded.module, loaded.spec, x, settings, loaded.device), _progress("invert"))
    picture = result.inversions[0].picture if len(result.inversions) == 1 else result.strip
    rows = [i.summary() for i in result.inversions]
    record = {"command": "invert", "model": describe_model(loaded), "input": str(args.input),
              "settings": settings.to_dict(), "layers": rows, "objective": rows[-1]["objective"],
              "representation_error": rows[-1]["representation_error"], "seconds": result.seconds,
              "out": str(png)}
    _save(png, sidecar, picture, record)
    record["settings_file"] = str(sidecar)
    lines = [f"{png}: inversion in {result.seconds:.1f} s"] + [
        f"  {r['layer']}: representation error {r['representation_error']:.4g}, "
        f"image error {r['image_error']:.3f}, pixel correlation {r['pixel_correlation']:.3f}" for r in rows]
    emit(args, record, "\n".join(lines))
    return 0


# --- bench visualize -----------------------------------------------------------------------------------

VISUALIZE_HELP = "our Fourier feature visualisation vs torch-lucent's render_vis (when installed)"


def configure_bench_visualize(p: argparse.ArgumentParser) -> None:
    p.set_defaults(model="resnet18", weights="none")
    p.add_argument("--layer", default="layer3")
    p.add_argument("--unit", type=nonnegative_int, default=5)
    p.add_argument("--size", type=positive_int, default=128)
    p.add_argument("--steps", type=positive_int, default=512)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="run ours and Lucent this many times each, alternating; the best of each is compared")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_bench_visualize)


def _lucent_render(model, layer: str, unit: int, size: int, steps: int, seed: int):
    """Lucent's render_vis with its defaults; None (and the reason) when it cannot be imported."""
    import torch  # noqa: PLC0415

    try:
        import kornia  # noqa: PLC0415
        import kornia.geometry.transform as kt  # noqa: PLC0415
        # current kornia moved these two; lucent 0.1.8 looks for them at the top level
        for name in ("get_rotation_matrix2d", "warp_affine"):
            if not hasattr(kornia, name):
                setattr(kornia, name, getattr(kt, name))
        from lucent.optvis import param, render  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001 - any import failure means: no reference
        return None, f"{type(exc).__name__}: {exc}"
    torch.manual_seed(seed)
    start = time.perf_counter()
    images = render.render_vis(model, f"{layer.replace('.', '_')}:{unit}", lambda: param.image(size),
                               thresholds=(steps,), show_image=False, progress=False)
    return (images[-1], time.perf_counter() - start), ""


def run_bench_visualize(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from explorer.core.attribution.target import Target  # noqa: PLC0415
    from explorer.core.optimize.visualize import VisualizeSettings, evaluate_pictures, visualize_steps  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    loaded = model_from_args(args)
    model, spec, device = loaded.module, loaded.spec, loaded.device
    target = Target.for_unit(args.layer, args.unit)
    settings = VisualizeSettings(method="fourier", steps=args.steps, size=args.size, seed=args.seed, every=64)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    data = {"model": describe_model(loaded), "layer": args.layer, "unit": args.unit, "size": args.size,
            "steps": args.steps, "threads": torch.get_num_threads(), "repeats": args.repeats, "load_average": load}
    lines = [f"model {loaded.display_name}, {args.layer} unit {args.unit} (channel mean), image {args.size}, "
             f"{args.steps} steps, {torch.get_num_threads()} threads, {args.repeats} interleaved run(s) each "
             f"(best kept), load average {load:.2f} at the start (CPU time is the steadier figure on a shared "
             f"machine)"]
    ours_runs, lucent_runs, why, ours, image = [], [], "", None, None
    for _ in range(args.repeats):  # ours and Lucent alternate, so that both see the same neighbours
        start, cpu = time.perf_counter(), time.process_time()
        ours = drive(visualize_steps(model, spec, target, settings, device))
        ours_runs.append((time.perf_counter() - start, time.process_time() - cpu))
        cpu = time.process_time()
        lucent, why = _lucent_render(model, args.layer, args.unit, args.size, args.steps, args.seed)
        if lucent is None:
            break
        image, lucent_s = lucent
        lucent_runs.append((lucent_s, time.process_time() - cpu))
        model.eval()
    ours_s, ours_cpu = min(r[0] for r in ours_runs), min(r[1] for r in ours_runs)
    data.update(ours_s=ours_s, ours_cpu_s=ours_cpu, ours_objective=ours.values[0],
                ours_runs=[list(r) for r in ours_runs])
    lines.append(f"ours (Fourier, decorrelated, transforms, Adam 0.05; BN folded, channels-last, cut after the "
                 f"layer): {ours_s:.2f} s (CPU {ours_cpu:.1f} s), final objective {ours.values[0]:.4g}")
    if not lucent_runs:
        data.update(lucent_s=None, ratio=None, lucent_objective=None, lucent_error=why)
        lines.append(f"Lucent not available ({why}): install torch-lucent --no-deps, kornia, decorator, ipython")
    else:
        lucent_s, lucent_cpu = min(r[0] for r in lucent_runs), min(r[1] for r in lucent_runs)
        picture = np.clip(np.asarray(image[0]) * 255 + 0.5, 0, 255).astype(np.uint8)
        value = evaluate_pictures(model, target, spec, [picture], device)[0][0]
        data.update(lucent_s=lucent_s, lucent_cpu_s=lucent_cpu, lucent_objective=value, ratio=ours_s / lucent_s,
                    cpu_ratio=ours_cpu / lucent_cpu, lucent_runs=[list(r) for r in lucent_runs])
        lines.append(f"Lucent render_vis (whole model, its kornia transforms, upsampled to 224): {lucent_s:.2f} s "
                     f"(CPU {lucent_cpu:.1f} s), final objective {value:.4g}")
        lines.append(f"ratio ours/Lucent {ours_s / lucent_s:.2f}x wall, {ours_cpu / lucent_cpu:.2f}x CPU; "
                     f"objective ours {ours.values[0]:.4g} vs Lucent {value:.4g} (both measured the same way: the "
                     f"8-bit image, resized to {spec.size[0]}, no transforms)")
        if args.repeats > 1:
            lines.append("runs (wall s, CPU s): ours " + ", ".join(f"({a:.1f}, {b:.1f})" for a, b in ours_runs)
                         + "; Lucent " + ", ".join(f"({a:.1f}, {b:.1f})" for a, b in lucent_runs))
    emit(args, data, "\n".join(lines))
    return 0
