"""``deep-explorer compare``: two checkpoints layer by layer (weight change, CKA heatmap); ``bench
compare`` (ours against pytorch-cka on the same images) is registered in :mod:`.bench`."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from explorer.cli.options import (CommandError, add_json_arg, add_model_args, check_output, describe_model, emit,
                                  model_from_args, positive_int)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="two checkpoints layer by layer: weight change and CKA",
                              description="Compare model A (--model/--checkpoint) with checkpoint B "
                                          "(--checkpoint-b): per layer the relative weight change "
                                          "||W_B - W_A|| / ||W_A|| and linear CKA of the two layers' "
                                          "activations on a folder of images (minibatch unbiased estimator), "
                                          "and CKA for every pair of layers (the heatmap). Layers are matched "
                                          "by name and shape; only what matches is compared.")
    add_model_args(p)
    add_json_arg(p)
    p.add_argument("--checkpoint-b", required=True, help="checkpoint B (architecture as --model, or detected)")
    p.add_argument("--input", required=True, help="a folder of images (or of class sub-folders)")
    p.add_argument("--layers", nargs="+", default=None,
                   help="A's layers to compare (default: the matched layers with weights)")
    p.add_argument("--out", required=True, help="the report (.json)")
    p.add_argument("--png", default=None, help="save the CKA heatmap (A's layers x B's) as a picture")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per minibatch (at least 4)")
    p.add_argument("--top9", default=None, metavar="LAYER",
                   help="also scan the folder with both models: how many of each unit's top-9 images of LAYER "
                        "stay the same")
    p.set_defaults(func=run_compare)


def _progress(label: str):
    def show(p) -> None:
        if p.note:
            print(f"\r{label}: {p.note}", file=sys.stderr)
        sys.stderr.write(f"\r{label}: {p.describe()}   ")
        sys.stderr.flush()
    return show


def load_b(args: argparse.Namespace, a):
    """Checkpoint B, loaded with the same model options as A (its architecture detected, else --model's)."""
    from explorer.core.compare import load_checkpoint_b  # noqa: PLC0415

    return load_checkpoint_b(args.checkpoint_b, args.model, weights=args.weights,
                             trust_checkpoint=args.trust_checkpoint, device=args.device,
                             input_size=args.input_size or a.spec.size, mean=args.mean, std=args.std,
                             labels_file=args.labels)


def run_compare(args: argparse.Namespace) -> int:
    from explorer.core.compare import compare_steps, heatmap_picture  # noqa: PLC0415
    from explorer.core.outputs import atomic_write, save_image  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415

    out = check_output(args.out, (".json",))
    png = check_output(args.png, (".png", ".jpg", ".jpeg"))
    if not Path(args.input).is_dir():
        raise CommandError(f"--input {args.input} is not a folder")
    if args.batch_size < 4:
        raise CommandError("--batch-size must be at least 4 (the unbiased CKA estimator needs n > 3)")
    a = model_from_args(args)
    b = load_b(args, a)
    label = "deep-explorer compare"
    if args.top9 is not None:
        for which, m in (("A", a), ("B", b)):
            if args.top9 not in dict(m.module.named_modules()):
                raise CommandError(f"--top9: {which} has no layer named {args.top9!r}")
    result = drive(compare_steps(a, b, args.input, args.layers, fit=args.fit, batch_size=args.batch_size),
                   _progress(label))
    sys.stderr.write("\n")
    data = {"a": describe_model(a), "b": describe_model(b), **result.to_dict(), "out": str(out),
            "png": str(png) if png else None}
    if args.top9 is not None:
        data["top9"] = top9_overlap(a, b, args)
    with atomic_write(out) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1))
    if png is not None:
        save_image(png, heatmap_picture(result.cka, result.layers_a, result.layers_b))
    lines = [f"A {a.display_name}, B {b.display_name}: {result.images} images in {result.batches} minibatches "
             f"({result.seconds:.1f} s), {len(result.skipped)} skipped"]
    lines += [f"skipped {s['path']}: {s['error']}" for s in result.skipped]
    width = max(len(n) for n in result.layers_a)
    lines.append(f"{'layer':<{width}}  weight change     CKA")
    cka = result.layer_cka()
    for n in result.layers_a:
        wc, c = result.weight_change.get(n), cka.get(n)
        lines.append(f"{n:<{width}}  {'-' if wc is None else f'{wc:13.4g}':>13}  {'-' if c is None else f'{c:6.3f}':>6}")
    if result.match and (result.match.only_a or result.match.only_b or result.match.differ):
        m = result.match
        lines.append(f"not compared: {len(m.only_a)} layers only in A, {len(m.only_b)} only in B, "
                     f"{len(m.differ)} with other shapes")
    if args.top9 is not None:
        t = data["top9"]
        lines.append(f"top-9 of {args.top9}: on average {t['mean']:.2f} of 9 images the same "
                     f"({t['all_same']} of {len(t['units'])} units keep all 9, {t['none_same']} keep none)")
    lines.append(f"saved {out}" + (f" and {png}" if png else ""))
    emit(args, data, "\n".join(lines))
    return 1 if result.skipped else 0


def top9_overlap(a, b, args: argparse.Namespace) -> dict:
    """Scan the folder with each model (a top-9 index each, not kept) and count each unit's shared top-9."""
    from explorer.core.compare import top_overlap  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415
    from explorer.core.topk.scan import scan_steps  # noqa: PLC0415

    indexes = []
    for which, m in (("A", a), ("B", b)):
        indexes.append(drive(scan_steps(m, args.input, [args.top9], k=9, code_layer=None, fit=args.fit),
                             _progress(f"deep-explorer compare: top-9 of {which}")))
        sys.stderr.write("\n")
    counts = top_overlap(indexes[0], indexes[1], args.top9)
    return {"layer": args.top9, "k": 9, "units": counts.tolist(), "mean": float(counts.mean()),
            "all_same": int((counts == 9).sum()), "none_same": int((counts == 0).sum())}


# --- bench compare (registered in .bench's BENCHES) ----------------------------------------------

COMPARE_HELP = "CKA heatmap of two models over generated images: ours vs pytorch-cka (same minibatches)"


def configure_bench_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=positive_int, default=1000, help="generated shapes images (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=50)
    p.add_argument("--layers", nargs="+", default=None, help="layers (default: the layers with weights)")
    p.add_argument("--repeat", type=positive_int, default=1, help="runs per side, alternating; the best counts")
    p.set_defaults(func=run_bench_compare)


def run_bench_compare(args: argparse.Namespace) -> int:
    """A vs a re-initialised copy of A on the same generated inputs, in memory (no decoding): our
    minibatch CKA against pytorch-cka's, both on the same minibatches, plus a plain forward of both."""
    import copy  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from explorer.core.compare import cka_of_batches, default_layers, match_layers  # noqa: PLC0415
    from explorer.core.models.shapes_data import generate_batch  # noqa: PLC0415
    from explorer.core.preprocess import image_to_tensor  # noqa: PLC0415

    a = model_from_args(args)
    b = copy.deepcopy(a)
    torch.manual_seed(0)
    for m in b.module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for m in list(a.module.modules()) + list(b.module.modules()):
        if isinstance(m, torch.nn.ReLU):  # pytorch-cka keeps views: an in-place ReLU would change its features
            m.inplace = False
    b.module.eval()
    layers = args.layers or default_layers(a.module, match_layers(a, b).matched)
    images, _ = generate_batch(0, args.images, max(a.spec.size))
    x = torch.cat([image_to_tensor(np.asarray(img), a.spec, args.fit) for img in images]).to(a.device)
    batches = list(x.split(args.batch_size))
    if batches[-1].shape[0] < 4:
        raise CommandError("--images leaves a last minibatch under 4 images; choose another --batch-size")
    try:
        from cka import compute_cka  # noqa: PLC0415
    except ImportError:
        raise CommandError("bench compare needs pytorch-cka (pip install pytorch-cka)") from None
    from torch.utils.data import DataLoader, TensorDataset  # noqa: PLC0415

    def plain():
        with torch.no_grad():
            for xb in batches:
                a.module(xb)
                b.module(xb)

    def ours():
        return cka_of_batches(a.module, b.module, batches, layers, layers)

    def theirs():
        loader = DataLoader(TensorDataset(x), batch_size=args.batch_size)
        return compute_cka(a.module, b.module, loader, layers=layers, device=a.device, progress=False)[0].cpu().numpy()

    plain()  # warm-up
    best = {k: [float("inf"), float("inf"), None] for k in ("plain", "ours", "pytorch_cka")}
    for _ in range(args.repeat):  # alternating, so that all see the same load from other processes
        for key, fn in (("plain", plain), ("ours", ours), ("pytorch_cka", theirs)):
            t, c = time.perf_counter(), time.process_time()
            value = fn()
            best[key][0] = min(best[key][0], time.perf_counter() - t)
            best[key][1] = min(best[key][1], time.process_time() - c)
            best[key][2] = value
    diff = float(np.nanmax(np.abs(np.clip(best["ours"][2], 0, 1) - best["pytorch_cka"][2])))
    (pw, pc, _), (ow, oc, _), (tw, tc, _) = best["plain"], best["ours"], best["pytorch_cka"]
    data = {"model": a.display_name, "device": str(a.device), "images": len(x), "batch_size": args.batch_size,
            "layers": layers, "threads": torch.get_num_threads(), "plain_s": pw, "plain_cpu_s": pc,
            "ours_s": ow, "ours_cpu_s": oc, "pytorch_cka_s": tw, "pytorch_cka_cpu_s": tc,
            "ratio": tw / ow, "cpu_ratio": tc / oc, "max_abs_diff": diff}
    emit(args, data,
         f"model {a.display_name} vs a re-initialised copy on {a.device}, {len(x)} images in minibatches of "
         f"{args.batch_size}, {len(layers)} layers ({len(layers) ** 2} pairs), {torch.get_num_threads()} threads\n"
         f"plain forward of both {pw:.2f} s (CPU {pc:.1f} s)\n"
         f"ours {ow:.2f} s (CPU {oc:.1f} s), pytorch-cka {tw:.2f} s (CPU {tc:.1f} s): pytorch-cka / ours "
         f"{tw / ow:.2f}x wall, {tc / oc:.2f}x CPU; max |diff| {diff:.3g} (theirs float32, ours float64 from the centred Gram on)")
    return 0
