"""Subcommands of the foundation: ``layers``, ``predict``, ``activations``."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from explorer.cli.options import (
    CommandError,
    InputFailures,
    add_json_arg,
    add_model_args,
    check_memory,
    describe_model,
    emit,
    model_from_args,
    positive_int,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("layers", help="the layer table: shape, activation memory, parameters, MACs, FLOPs",
                              description="The layer table at the model's input size: output shape, activation "
                                          "memory (in-place layers and views add none), parameters and their "
                                          "memory, MACs and FLOPs (2 x MACs), with totals for a forward pass and "
                                          "an estimate for one training step (docs/costs.md).")
    add_model_args(p)
    add_json_arg(p)
    p.add_argument("--leaves", action="store_true", help="only modules with no children")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size for activations and MACs (default 1)")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write the per-layer cost table as CSV")
    p.set_defaults(func=cmd_layers)

    p = subparsers.add_parser("predict", help="top-5 classes for each input")
    add_model_args(p)
    add_json_arg(p)
    p.add_argument("--input", nargs="+", required=True, help="image files, folders or .npy tensors")
    p.add_argument("--top", type=positive_int, default=5, help="how many classes to list (default 5)")
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser("activations", help="save one layer's activations for an input")
    add_model_args(p)
    add_json_arg(p)
    p.add_argument("--input", nargs="+", required=True, help="image files, .npy tensors or folders")
    p.add_argument("--layer", required=True)
    p.add_argument("--out", required=True, help="A.npy: the activation without the batch dimension, float32 "
                                                "(a folder for several inputs: one <input stem>.npy each)")
    p.add_argument("--png", default=None, help="also save all channels as one tiled grid image "
                                               "(a folder for several inputs)")
    p.add_argument("--norm", choices=["layer", "channel"], default="layer")
    p.set_defaults(func=cmd_activations)


def format_count(n: int) -> str:
    return f"{n:,}"


def cmd_layers(args: argparse.Namespace) -> int:
    from explorer.core.costs import cost_table, format_bytes  # noqa: PLC0415
    from explorer.core.outputs import atomic_write, check_destination  # noqa: PLC0415
    from explorer.core.probe import layer_table  # noqa: PLC0415

    csv_path = check_destination(args.csv, (".csv",)) if args.csv else None
    loaded = model_from_args(args, weights="none")  # the table needs shapes, never a download
    check_memory(args, loaded, batch=args.batch, what="the layer table")
    rows = layer_table(loaded.module, loaded.spec.shape, loaded.device)
    costs = cost_table(loaded.module, loaded.spec.shape, args.batch, loaded.device)
    by_name = {c.name: c for c in costs.rows}
    total_macs = sum(r.macs for r in rows)  # each module's own: leaves, and attention's QK^T and AV products
    if args.leaves:
        rows = [r for r in rows if r.is_leaf]
    total_params = sum(p.numel() for p in loaded.module.parameters())
    layers = []
    for r in rows:
        d = r.to_dict()
        cost = by_name.get(r.name)
        if cost is not None:
            d.update(activations=cost.activations * args.batch, activation_bytes=cost.activation_bytes * args.batch,
                     param_bytes=cost.param_bytes, macs=cost.macs * args.batch, flops=cost.flops * args.batch)
        layers.append(d)
    totals = costs.totals()
    data = {"model": describe_model(loaded), "input_shape": list(loaded.spec.shape), "batch": args.batch,
            "total_params": total_params, "total_macs": total_macs * args.batch, "totals": totals,
            "input": costs.rows[0].to_dict(args.batch), "layers": layers,
            "counting_rule": "activation memory: tensors a leaf layer returns that are new storage (in-place "
                             "layers and views add none), per call; FLOPs = 2 x MACs"}
    width = max([len(r.name) + 2 * r.depth for r in rows] + [5])
    lines = [f"{loaded.name}: input {'x'.join(map(str, loaded.spec.shape))}, batch {args.batch}",
             f"{'layer':<{width}}  {'type':<18} {'output':<14} {'activations':>12} {'memory':>10} "
             f"{'params':>12} {'MACs':>15} {'FLOPs':>15}"]
    for r, d in zip(rows, layers):
        shape = "x".join(map(str, r.output_shape)) if r.output_shape is not None else "(not run)"
        act = format_count(d["activations"]) if "activations" in d else ""
        mem = format_bytes(d["activation_bytes"]) if d.get("activation_bytes") else ""
        flops = format_count(d["flops"]) if "flops" in d else ""
        lines.append(f"{'  ' * r.depth + r.name:<{width}}  {r.type:<18} {shape:<14} {act:>12} {mem:>10} "
                     f"{format_count(r.params):>12} {format_count(d['macs']):>15} {flops:>15}")
    train = totals["training_bytes"]
    lines += [f"total: {format_count(total_params)} parameters ({format_bytes(costs.param_bytes)}), "
              f"{format_count(totals['macs'])} MACs = {format_count(totals['flops'])} FLOPs, "
              f"{format_count(totals['activations'])} activations incl. the input "
              f"({format_bytes(totals['activation_bytes'])})",
              f"forward pass (every activation kept): {format_bytes(totals['forward_bytes'])}; one training step: "
              f"SGD {format_bytes(train['sgd'])}, SGD+momentum {format_bytes(train['momentum'])}, "
              f"Adam {format_bytes(train['adam'])} (in-place layers and views add no memory; docs/costs.md)"]
    if csv_path is not None:
        with atomic_write(csv_path) as tmp:
            tmp.write_text(costs.to_csv(), encoding="utf-8")
        data["csv"] = str(csv_path)
        lines.append(f"cost table -> {csv_path}")
    emit(args, data, "\n".join(lines))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from explorer.core.preprocess import expand_inputs, load_input  # noqa: PLC0415
    from explorer.core.probe import run_forward, top_k  # noqa: PLC0415

    files = expand_inputs(args.input, keep_missing=True)
    loaded = model_from_args(args)
    check_memory(args, loaded)
    failures = InputFailures("predict", many=_many(args.input, files))
    results = []
    lines = [] if loaded.trained else [f"note: {loaded.display_name} has random weights; predictions mean nothing"]

    def predict(path: Path) -> None:
        x, _ = load_input(path, loaded.spec, args.fit)
        out = run_forward(loaded.module, x.to(loaded.device))
        if out.logits is None or not bool(out.logits.isfinite().all()):
            raise CommandError(f"the model's output for {path.name} is not finite numbers (NaN or infinite): "
                               f"no prediction")
        top = top_k(out.logits, loaded.spec.labels, args.top)
        results.append({"input": str(path), "top": top})
        lines.append(f"{path}:")
        lines.extend(f"  {t['probability']:7.2%}  {t['index']:>5}  {t['label']}" for t in top)

    for path in files:
        failures.run(path, lambda path=path: predict(path))
    emit(args, {"model": describe_model(loaded), "trained": loaded.trained, "predictions": results,
                "failed": failures.failed}, "\n".join(lines))
    return failures.finish()


def _many(named: list[str], files: list[Path]) -> bool:
    return len(files) > 1 or len(named) > 1 or any(Path(p).is_dir() for p in named)


def cmd_activations(args: argparse.Namespace) -> int:
    from explorer.core.outputs import (  # noqa: PLC0415
        ARRAY_OUTPUT_SUFFIXES,
        IMAGE_OUTPUT_SUFFIXES,
        check_destination,
        check_destination_folder,
        save_npy,
    )
    from explorer.core.preprocess import expand_inputs, load_input  # noqa: PLC0415
    from explorer.core.probe import get_layer, run_forward  # noqa: PLC0415
    from explorer.core.transformers import channel_maps, prefix_names  # noqa: PLC0415

    files = expand_inputs(args.input, keep_missing=True)
    many = _many(args.input, files)
    if many:
        stems = [p.stem for p in files]
        if len(set(stems)) != len(stems):
            raise CommandError("two inputs share a file name stem; their activations would overwrite each other")
        if Path(args.out).suffix.lower() == ".npy":
            raise CommandError("--out must be a folder when there are several inputs")
        out_dir = check_destination_folder(args.out)
        png_dir = check_destination_folder(args.png) if args.png else None
    else:
        out_dir = png_dir = None
        check_destination(args.out, ARRAY_OUTPUT_SUFFIXES)
        if args.png:
            check_destination(args.png, IMAGE_OUTPUT_SUFFIXES)
    loaded = model_from_args(args)
    try:
        get_layer(loaded.module, args.layer)
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None
    check_memory(args, loaded)
    failures = InputFailures("activations", many)
    records = []

    def save(path: Path) -> None:
        x, _ = load_input(path, loaded.spec, args.fit)
        out = run_forward(loaded.module, x.to(loaded.device), [args.layer])
        if args.layer not in out.activations:
            raise CommandError(f"layer {args.layer!r} did not run for this input")
        captured = out.activations[args.layer].float().cpu()
        act = captured[0]
        maps = channel_maps(loaded.module, captured, tuple(x.shape[-2:]))  # a transformer's tokens: the grid
        npy = out_dir / f"{path.stem}.npy" if many else Path(args.out)
        png = (png_dir / f"{path.stem}.png" if many else Path(args.png)) if args.png else None
        save_npy(npy, act.numpy().astype(np.float32))
        if png is not None:
            save_grid_png(maps.maps if maps is not None else act, png, args.norm)
        record = {"input": str(path), "layer": args.layer, "shape": list(act.shape), "out": str(npy),
                  "png": str(png) if png else None, "min": float(act.min()), "max": float(act.max()),
                  "mean": float(act.mean())}
        if maps is not None:
            record["layout"] = maps.kind  # 'tokens': (prefix + rows*cols, dim); 'channels-last': (H, W, C)
            if maps.layout is not None:
                record.update(grid=list(maps.layout.grid), prefix_tokens=maps.layout.prefix,
                              prefix_names=prefix_names(loaded.module, maps.layout.prefix))
        records.append(record)

    for path in files:
        failures.run(path, lambda path=path: save(path))
    if many:
        data = {"model": describe_model(loaded), "layer": args.layer, "results": records, "failed": failures.failed}
    else:
        data = {"model": describe_model(loaded), **records[0]}
    emit(args, data, "\n".join(f"{r['input']}: {args.layer}: {'x'.join(map(str, r['shape']))} -> {r['out']}"
                               + (f", grid -> {r['png']}" if r["png"] else "") for r in records))
    return failures.finish()


def save_grid_png(act, path: str, norm: str = "layer", min_side: int = 512) -> None:
    """The tiled activation grid as a grey PNG, scaled up (nearest) so small tiles stay visible."""
    from PIL import Image  # noqa: PLC0415

    from explorer.core.tiling import activation_grid  # noqa: PLC0415

    grid, _ = activation_grid(act, norm)
    img = (grid.clamp(0, 1) * 255).round().byte().cpu().numpy()
    scale = max(1, -(-min_side // max(img.shape[:2])))  # ceil: at least min_side pixels
    from explorer.core.outputs import save_image  # noqa: PLC0415

    save_image(path, Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST))
