"""``deep-explorer topk`` (every unit's top images in a folder) and ``embed`` (the map of codes);
``bench topk`` (the scan against a plain forward pass) is registered in :mod:`.bench`."""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

from explorer.cli.options import (CommandError, add_json_arg, add_model_args, check_output, emit, model_from_args,
                                  nonnegative_int, positive_int)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("topk", help="every unit's top-k images (and patches) in a folder",
                              description="One pass over a folder: for every unit of the layers, the k images "
                                          "where it fires most, where, and its receptive field there. The index "
                                          "is kept in the cache (or --out) and a cancelled scan resumes.")
    add_model_args(p)
    add_json_arg(p)
    p.add_argument("--layer", action="append", required=True, help="a layer (repeat for several in one pass)")
    p.add_argument("--input", required=True, help="a folder of images (or of class sub-folders)")
    p.add_argument("--k", type=positive_int, default=9, help="images per unit (default 9)")
    p.add_argument("--out", default=None, help="the index file (.npz; default: in the user's cache)")
    p.add_argument("--png", default=None, help="save unit --unit's top-k patches as a grid picture")
    p.add_argument("--unit", type=nonnegative_int, default=0, help="the unit for --png (default 0)")
    p.add_argument("--view", choices=["image", "guided-backprop", "deconvnet"], default="image",
                   help="the patches of --png: the image, or its guided-backprop / deconvnet view")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--restart", action="store_true", help="scan again instead of resuming a saved index")
    p.set_defaults(func=run_topk)

    e = subparsers.add_parser("embed", help="the t-SNE map of a folder's codes (thumbnails)",
                              description="The codes of a layer (default: the input of the classifier) for "
                                          "every image of a folder, embedded in 2-D by t-SNE; prints the "
                                          "map's trustworthiness and 5-NN label agreement.")
    add_model_args(e)
    add_json_arg(e)
    e.add_argument("--input", required=True, help="a folder of images (or of class sub-folders)")
    e.add_argument("--layer", default=None, help="the code layer (default: the input of the last Linear)")
    e.add_argument("--out", required=True, help="the map picture (.png)")
    e.add_argument("--csv", default=None, help="one row per image: path, x, y, predicted class")
    e.add_argument("--index", default=None, help="the index file to read or write (default: in the cache)")
    e.add_argument("--grid", action="store_true", help="snap the thumbnails to a grid")
    e.add_argument("--perplexity", type=float, default=30.0)
    e.add_argument("--iterations", type=positive_int, default=750)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=positive_int, default=None)
    e.set_defaults(func=run_embed)


def _progress(label: str):
    def show(p) -> None:
        if p.note:
            print(f"\r{label}: {p.note}", file=sys.stderr)
        sys.stderr.write(f"\r{label}: {p.describe()}   ")
        if p.done >= p.total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def scan_for(args, loaded, layers: list[str], code_layer, out: str | None, restart: bool = False):
    """Run (or resume, or reuse from the cache) the scan; return (index, index path)."""
    from explorer.core.steps import drive  # noqa: PLC0415
    from explorer.core.topk.index import TopKIndex, find_cached, index_path, weights_id  # noqa: PLC0415
    from explorer.core.topk.scan import CLASSIFIER_INPUT, classifier_input_layer, scan_steps  # noqa: PLC0415

    weights = weights_id(loaded.module)
    code_key = f"{classifier_input_layer(loaded.module)} (input)" if code_layer == CLASSIFIER_INPUT else code_layer
    if out is None:
        if not restart:
            cached = find_cached(loaded.name, weights, args.input, layers[0] if layers else None,
                                 code_key, args.fit)
            if cached is not None and (not layers or all(
                    layer in TopKIndex.load(cached).layers for layer in layers)):
                index = TopKIndex.load(cached)
                if index.meta.get("k") == getattr(args, "k", index.meta.get("k")) and index.codes is not None:
                    return index, cached
        out = index_path(loaded.name, weights, args.input, layers, str(code_layer), args.k if hasattr(args, "k")
                         else 9, args.fit, loaded.spec.size)
    else:
        out = check_output(out, (".npz",))
    index = drive(scan_steps(loaded, args.input, layers, k=getattr(args, "k", 9), code_layer=code_layer,
                             out=out, fit=args.fit, batch_size=args.batch_size, resume=not restart,
                             weights=weights), _progress(f"deep-explorer {args.command}"))
    return index, Path(out)


def run_topk(args: argparse.Namespace) -> int:
    from explorer.core.topk.patches import grid_picture, patch  # noqa: PLC0415
    from explorer.core.outputs import save_image  # noqa: PLC0415

    png = check_output(args.png, (".png", ".jpg", ".jpeg"))
    if not Path(args.input).is_dir():
        raise CommandError(f"--input {args.input} is not a folder")
    loaded = model_from_args(args)
    from explorer.core.topk.scan import CLASSIFIER_INPUT  # noqa: PLC0415

    index, where = scan_for(args, loaded, args.layer, CLASSIFIER_INPUT, args.out, args.restart)
    lines = [f"index {where}: {len(index.paths)} images, {len(index.skipped)} skipped, "
             f"layers {', '.join(index.layers)}"]
    for s in index.skipped:
        lines.append(f"skipped {s['path']}: {s['error']}")
    if png is not None:
        layer = args.layer[0]
        top = index.layer(layer).top(args.unit, index)
        pictures = [patch(e, loaded, layer, args.unit, args.view, args.fit) for e in top]
        save_image(png, grid_picture(pictures, [e["value"] for e in top]))
        lines.append(f"saved {png} ({layer} unit {args.unit}, {args.view})")
    if not args.json:
        layer = args.layer[0]
        for e in index.layer(layer).top(args.unit, index)[:3]:
            lines.append(f"{layer} unit {args.unit}: {e['value']:.4g} at (y {e['y']}, x {e['x']}) box {e['box']} "
                         f"in {e['path']}")
    data = index.to_dict()
    data["index"] = str(where)
    emit(args, data, "\n".join(lines))
    return 1 if index.skipped else 0


def run_embed(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415

    from explorer.core.outputs import atomic_write, save_image  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415
    from explorer.core.topk.embed import embed_steps, map_quality, snap_to_grid  # noqa: PLC0415
    from explorer.core.topk.patches import map_picture  # noqa: PLC0415
    from explorer.core.topk.scan import CLASSIFIER_INPUT  # noqa: PLC0415

    out = check_output(args.out, (".png", ".jpg", ".jpeg"))
    csv_path = check_output(args.csv, (".csv",))
    if not Path(args.input).is_dir():
        raise CommandError(f"--input {args.input} is not a folder")
    loaded = model_from_args(args)
    code_layer = args.layer or CLASSIFIER_INPUT
    start = time.perf_counter()
    index, where = scan_for(args, loaded, [], code_layer, args.index)
    scan_s = time.perf_counter() - start
    codes = np.asarray(index.codes)
    t0 = time.perf_counter()
    emb = drive(embed_steps(codes, perplexity=args.perplexity, iterations=args.iterations, seed=args.seed))
    embed_s = time.perf_counter() - t0
    coords = snap_to_grid(emb.coords) if args.grid else emb.coords
    predicted = [loaded.spec.label(p) for p in index.predictions]
    by_folder = all(index.classes) and len(set(index.classes)) > 1
    labels = list(index.classes) if by_folder else predicted
    quality = map_quality(codes, emb.coords, labels)
    save_image(out, map_picture(coords, index.paths, labels))
    if csv_path is not None:
        with atomic_write(csv_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "x", "y", "predicted"])
            for p, (x, y), c in zip(index.paths, coords, predicted):
                w.writerow([p, f"{x:.5g}", f"{y:.5g}", c])
    data = {"index": str(where), "images": len(index.paths), "skipped": index.skipped,
            "layer": index.meta.get("code_layer"), "dimensions": int(codes.shape[1]), "method": emb.method,
            "labels": "folders" if by_folder else "predictions", "scan_s": scan_s, "embed_s": embed_s,
            **quality, "out": str(out), "csv": str(csv_path) if csv_path else None,
            "points": [{"path": p, "x": float(x), "y": float(y), "predicted": c, "label": lab}
                       for p, (x, y), c, lab in zip(index.paths, coords, predicted, labels)]}
    text = (f"{len(index.paths)} images, codes of {data['layer']} ({data['dimensions']} values), {emb.method} "
            f"in {embed_s:.1f} s (scan {scan_s:.1f} s)\ntrustworthiness {quality['trustworthiness']:.3f}, "
            f"5-NN agreement with {'folder' if by_folder else 'predicted'} classes {quality['knn_agreement']:.3f}"
            f"\nsaved {out}" + (f" and {csv_path}" if csv_path else ""))
    emit(args, data, text)
    return 1 if index.skipped else 0


# --- bench topk (registered in .bench's BENCHES) -------------------------------------------------

TOPK_HELP = "the top-k scan vs a plain forward pass over the same images (decode + preprocess + forward)"


def configure_bench_topk(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", default=None, help="a folder of images (default: --generate shapes images)")
    p.add_argument("--generate", type=positive_int, default=200, help="images to generate without --input")
    p.add_argument("--layer", action="append", default=None, help="layers to scan (default: the default layer)")
    p.add_argument("--k", type=positive_int, default=9)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--repeat", type=positive_int, default=2, help="runs per side, alternating; the best counts")
    p.set_defaults(func=run_bench_topk)


def generate_folder(folder: Path, count: int, size: int = 128, seed: int = 0, classes: bool = True) -> Path:
    """``count`` generated shapes images as PNGs, in one sub-folder per class when ``classes``."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from explorer.core.models.shapes_data import SHAPE_CLASSES, generate_batch  # noqa: PLC0415

    images, labels = generate_batch(seed, count, size)
    for i, (img, lab) in enumerate(zip(images, labels)):
        d = folder / SHAPE_CLASSES[int(lab)] if classes else folder
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(img)).save(d / f"{i:05d}.png")
    return folder


def run_bench_topk(args: argparse.Namespace) -> int:
    from explorer.core.probe import default_layer, leaves_of  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415
    from explorer.core.topk.index import weights_id  # noqa: PLC0415
    from explorer.core.topk.scan import CLASSIFIER_INPUT, plain_pass_steps, scan_steps  # noqa: PLC0415

    loaded = model_from_args(args)
    layers = args.layer or [default_layer(leaves_of(loaded.module))]
    with tempfile.TemporaryDirectory(prefix="deep-explorer-bench-") as tmp:
        folder = Path(args.input) if args.input else generate_folder(Path(tmp) / "images", args.generate)
        weights = weights_id(loaded.module)
        drive(plain_pass_steps(loaded, folder, fit=args.fit, batch_size=args.batch_size))  # warm-up
        plain_s = scan_s = plain_cpu = scan_cpu = float("inf")
        for r in range(args.repeat):  # alternating, so that both see the same load from other processes
            t, c = time.perf_counter(), time.process_time()
            n = drive(plain_pass_steps(loaded, folder, fit=args.fit, batch_size=args.batch_size))
            plain_s, plain_cpu = min(plain_s, time.perf_counter() - t), min(plain_cpu, time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            index = drive(scan_steps(loaded, folder, layers, k=args.k, code_layer=CLASSIFIER_INPUT,
                                     out=Path(tmp) / f"index{r}.npz", fit=args.fit, batch_size=args.batch_size,
                                     resume=False, weights=weights))
            scan_s, scan_cpu = min(scan_s, time.perf_counter() - t), min(scan_cpu, time.process_time() - c)
    data = {"model": loaded.display_name, "device": str(loaded.device), "images": n, "layers": layers, "k": args.k,
            "plain_s": plain_s, "scan_s": scan_s, "ratio": scan_s / plain_s, "plain_cpu_s": plain_cpu,
            "scan_cpu_s": scan_cpu, "cpu_ratio": scan_cpu / plain_cpu, "skipped": len(index.skipped)}
    emit(args, data, f"model {loaded.display_name} on {loaded.device}, {n} images, layers {', '.join(layers)}, "
                     f"k {args.k}\nplain forward pass {plain_s:.2f} s, top-k scan (with codes, index saved) "
                     f"{scan_s:.2f} s: ratio {scan_s / plain_s:.3f}x (CPU time {plain_cpu:.1f} s vs {scan_cpu:.1f} s: "
                     f"{scan_cpu / plain_cpu:.3f}x)")
    return 0
