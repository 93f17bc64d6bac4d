"""``deep-explorer attribute``: occlusion, gradient, deconvnet, guided backprop and Grad-CAM maps."""
from __future__ import annotations

import argparse
from pathlib import Path

from explorer.cli.options import (
    CommandError,
    InputFailures,
    add_json_arg,
    add_model_args,
    check_memory,
    cli_progress,
    describe_model,
    emit,
    fraction,
    model_from_args,
    nonnegative_int,
    positive_int,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from explorer.core.attribution.attention import FUSIONS  # noqa: PLC0415
    from explorer.core.attribution.methods import METHODS  # noqa: PLC0415
    from explorer.core.attribution.occlusion import BASELINES  # noqa: PLC0415

    p = subparsers.add_parser(
        "attribute", help="which pixels matter to a class score or a unit",
        description="Attribution maps. MAP.npy holds the raw map, float32: (C, H, W) for occlusion and the "
                    "gradient methods, (H, W) for Grad-CAM, (heads, rows, cols) for attention and (rows, cols) for "
                    "the rollouts, over a vision transformer's patch grid. With several inputs or a folder, --out is a "
                    "folder with one <input stem>.npy per input.")
    add_model_args(p)
    p.add_argument("--input", nargs="+", required=True, help="image files, .npy tensors or folders")
    p.add_argument("--method", choices=METHODS, default="guided-backprop")
    p.add_argument("--target", default=None, help="class index or label (default: the top class)")
    p.add_argument("--layer", default=None,
                   help="with --unit: the layer whose unit is the target; for Grad-CAM alone: the conv layer")
    p.add_argument("--unit", type=nonnegative_int, default=None, help="unit (channel) of --layer to explain")
    p.add_argument("--position", default=None, help="ROW,COL: one neuron of the unit instead of its mean")
    p.add_argument("--cam-layer", default=None,
                   help="Grad-CAM layer (default: --layer, else the last conv; a transformer's late block "
                        "normalisation); attention: the block (default: the last)")
    p.add_argument("--query", type=nonnegative_int, default=0,
                   help="attention: the query token (0: the class token; prefix + row*cols + col: a patch)")
    p.add_argument("--head", type=nonnegative_int, default=None,
                   help="attention: the head shown in the PNG (default: their mean; the map holds every head)")
    p.add_argument("--fusion", choices=FUSIONS, default="mean", help="rollout: head fusion (default mean)")
    p.add_argument("--discard-ratio", type=float, default=0.9,
                   help="rollouts: the fraction of lowest attention weights dropped per block (default 0.9)")
    p.add_argument("--window", type=positive_int, default=16, help="occlusion window size (default 16)")
    p.add_argument("--stride", type=positive_int, default=8, help="occlusion stride (default 8)")
    p.add_argument("--baseline", choices=BASELINES, default="zero", help="what fills the occluded window")
    p.add_argument("--score", choices=["logit", "prob"], default="logit", help="class score to explain")
    p.add_argument("--batch-size", type=positive_int, default=16, help="occluded images per batch (default 16)")
    p.add_argument("--no-fast", action="store_true", help="occlusion: evaluate every occluded image in full")
    p.add_argument("--out", required=True, help="MAP.npy, or a folder for several inputs")
    p.add_argument("--png", default=None, help="overlay.png (a folder for several inputs)")
    p.add_argument("--opacity", type=fraction, default=0.5, help="overlay opacity (default 0.5)")
    add_json_arg(p)
    p.set_defaults(func=run_attribute)


def _position(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        r, c = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise CommandError(f"--position must be ROW,COL, not {text!r}") from None
    return r, c


def run_attribute(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from explorer.core.attribution.methods import (  # noqa: PLC0415
        AttentionSettings,
        compute_attribution,
        overlay_image,
        parse_target,
    )
    from explorer.core.attribution.occlusion import OcclusionSettings  # noqa: PLC0415
    from explorer.core.outputs import (  # noqa: PLC0415
        ARRAY_OUTPUT_SUFFIXES,
        IMAGE_OUTPUT_SUFFIXES,
        check_destination,
        check_destination_folder,
        save_image,
        save_npy,
    )
    from explorer.core.preprocess import expand_inputs, load_input  # noqa: PLC0415

    if args.window < 1 or args.stride < 1 or args.batch_size < 1:
        raise CommandError("--window, --stride and --batch-size must be at least 1")
    if not 0.0 <= args.discard_ratio < 1.0:
        raise CommandError(f"--discard-ratio must be at least 0 and below 1, not {args.discard_ratio}")
    attention = AttentionSettings(query=args.query, head=args.head, fusion=args.fusion,
                                  discard_ratio=args.discard_ratio)
    position = _position(args.position)
    if position is not None and min(position) < 0:
        raise CommandError(f"--position must be two numbers of 0 or more, not {args.position!r}")
    inputs = expand_inputs(args.input, keep_missing=True)
    many = len(inputs) > 1 or len(args.input) > 1 or any(Path(p).is_dir() for p in args.input)
    out = Path(args.out)
    png = Path(args.png) if args.png else None
    if many:
        if out.suffix.lower() == ".npy":
            raise CommandError("--out must be a folder when there are several inputs")
        check_destination_folder(out)
        if png is not None:
            check_destination_folder(png)
    else:
        check_destination(out, ARRAY_OUTPUT_SUFFIXES)
        if png is not None:
            check_destination(png, IMAGE_OUTPUT_SUFFIXES)
    stems = [p.stem for p in inputs]
    if many and len(set(stems)) != len(stems):
        raise CommandError("two inputs share a file name stem; their maps would overwrite each other")

    loaded = model_from_args(args, weights=None)
    model, spec = loaded.module, loaded.spec
    occluding = args.method == "occlusion"
    check_memory(args, loaded, batch=args.batch_size + 1 if occluding else 1, gradients=not occluding,
                 what="occlusion" if occluding else args.method)
    cam_layer = args.cam_layer or (args.layer if args.unit is None else None)
    settings = OcclusionSettings(window=args.window, stride=args.stride, baseline=args.baseline,
                                 batch_size=args.batch_size, fast=not args.no_fast)
    failures = InputFailures("attribute", many)
    records = []

    def attribute(path: Path) -> None:
        x, picture = load_input(path, spec, args.fit)
        x = x.to(loaded.device)
        target = parse_target(args.target, spec.labels, model, x, args.layer, args.unit, args.score, position)
        progress = cli_progress(f"occlusion {path.name}") if occluding and not args.json else None
        result = compute_attribution(model, x, args.method, target, settings, cam_layer, progress=progress,
                                     attention=attention)
        if not np.isfinite(result.map).all():
            raise CommandError(f"the {args.method} map of {path.name} holds NaN or infinite values (the model's "
                               f"output is not finite for this input); nothing was written")
        map_path = out / f"{path.stem}.npy" if many else out
        save_npy(map_path, result.map.astype(np.float32))
        png_path = None
        if png is not None:
            png_path = png / f"{path.stem}.png" if many else png
            save_image(png_path, Image.fromarray(overlay_image(picture, result.display, args.opacity)))
        records.append({
            "input": str(path), "out": str(map_path), "png": str(png_path) if png_path else None,
            "method": args.method, "target": target.describe(spec.labels),
            "class_index": target.class_index, "layer": target.layer, "unit": target.unit,
            "cam_layer": result.layer, "shape": list(result.map.shape), "seconds": round(result.seconds, 4),
            "mode": result.mode or None, "note": result.note or None,
            "grid": list(result.grid) if result.grid else None, "prefix_tokens": result.prefix if result.grid else None,
        })

    for path in inputs:
        failures.run(path, lambda path=path: attribute(path))
    lines = []
    for r in records:
        extra = f" [{r['mode']}]" if r["mode"] else ""
        lines.append(f"{r['input']}: {r['method']} of {r['target']}{extra} -> {r['out']} "
                     f"{tuple(r['shape'])} in {r['seconds']:.2f} s")
        if r["note"]:
            lines.append(f"  note: {r['note']}")
    data = {"model": describe_model(loaded), "results": records, "failed": failures.failed}
    emit(args, data, "\n".join(lines))
    return failures.finish()
