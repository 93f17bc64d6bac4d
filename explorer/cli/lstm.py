"""``deep-explorer lstm …``: train character-level RNNs, dump their gates, find and draw their cells."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from explorer.cli.options import CommandError, add_json_arg, cli_progress, emit


MODEL_HELP = "bundled (the LSTM), python-gru (the bundled GRU) or a char-RNN checkpoint file"


def register(subparsers: argparse._SubParsersAction) -> None:
    lstm = subparsers.add_parser(
        "lstm", help="character-level LSTM/GRU/RNN language models: train, gates, cells, render, sample",
        description="Character-level recurrent language models (format deep-explorer/char-rnn/1).")
    sub = lstm.add_subparsers(dest="lstm_command", metavar="ACTION", required=True)

    p = sub.add_parser("train", help="train a char-RNN on text files (progress bar)")
    p.add_argument("--text", nargs="+", required=True, metavar="FILE", help="training text files")
    p.add_argument("--heldout", nargs="*", default=[], metavar="FILE",
                   help="held-out files: bits per character reported at the end")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (MODEL.pt)")
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embedding", type=int, default=32, help="embedding size; 0 for one-hot inputs")
    p.add_argument("--epochs", type=float, default=5.0)
    p.add_argument("--seq-len", type=int, default=100, help="characters per truncated-BPTT chunk")
    p.add_argument("--batch", type=int, default=32, help="parallel streams")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-count", type=int, default=1, help="rarer characters map to U+FFFD")
    p.add_argument("--budget-min", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--resume", action="store_true",
                   help="resume from OUT's training state (saved every few minutes and at the end)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune: start from this model's weights and vocabulary (bundled or FILE); "
                        "--cell, --layers, --hidden, --embedding and --min-count are then taken from it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    add_json_arg(p)
    p.set_defaults(func=cmd_train)

    for name, func, helptext in (
            ("activations", cmd_activations, "write every gate, state and output to .npz"),
            ("cells", cmd_cells, "find the cells that track strings, comments, indentation, ..."),
            ("render", cmd_render, "the text coloured by one cell, as HTML or PNG"),
            ("select", cmd_select, "LSTMVis: cells on inside the given spans and off around them")):
        p = sub.add_parser(name, help=helptext)
        _add_model_text_args(p)
        if name == "activations":
            p.add_argument("--out", required=True, type=Path, help="ACTS.npz")
            p.add_argument("--quantities", default=None,
                           help="comma-separated, e.g. h,c (default: all of the cell type's)")
            p.add_argument("--layers", default=None, help="comma-separated layer numbers, e.g. 0 (default: all)")
        elif name == "cells":
            p.add_argument("--regex", action="append", default=[], metavar="PATTERN",
                           help="also rank cells against 'inside a match of PATTERN' (repeatable)")
            p.add_argument("--top", type=int, default=5)
            p.add_argument("--rank-by", choices=["auto", "r"], default="auto",
                           help="auto: AUROC for on/off indicators, |r| for the others; r: |r| for all")
            p.add_argument("--quantities", default=None,
                           help="comma-separated, e.g. h,c (default: all of the cell type's)")
        elif name == "render":
            p.add_argument("--cell", required=True, help="LAYER:QUANTITY:INDEX, e.g. 1:c:42")
            p.add_argument("--out", required=True, type=Path, help="page.html or image.png")
            p.add_argument("--max-lines", type=int, default=200, help="PNG only: lines drawn")
        else:
            p.add_argument("--spans", required=True,
                           help="START:END character offsets, comma-separated, e.g. 120:131,400:415")
            p.add_argument("--threshold", type=float, default=0.3)
            p.add_argument("--margin", type=int, default=10)
            p.add_argument("--quantities", default="h")
            p.add_argument("--top", type=int, default=10)
        add_json_arg(p)
        p.set_defaults(func=func)

    p = sub.add_parser("sample", help="let the model write")
    p.add_argument("--model", default="bundled", help=MODEL_HELP)
    p.add_argument("--prime", default="", help="text the model reads first")
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=None)
    add_json_arg(p)
    p.set_defaults(func=cmd_sample)


def _add_model_text_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="bundled", help=MODEL_HELP)
    p.add_argument("--text", required=True, type=Path, help="text file the model reads")


def _load(args: argparse.Namespace):
    from explorer.core.rnn.model import load_char_rnn  # noqa: PLC0415

    return load_char_rnn(args.model)


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text:
        raise CommandError(f"{path} is empty")
    return text


def _split(value: str | None, name: str, cast=str):
    if value is None:
        return None
    try:
        items = [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise CommandError(f"--{name} must be comma-separated, not {value!r}") from None
    if not items:
        raise CommandError(f"--{name} is empty")
    return items


def _fits(needed: int, what: str, hint: str) -> None:
    """Refuse with one line (and the options that need less) before allocating ``needed`` bytes."""
    from explorer.core.rnn.memory import NotEnoughMemory, check_memory  # noqa: PLC0415

    try:
        check_memory(needed, what)
    except NotEnoughMemory as exc:
        raise CommandError(f"{exc}; {hint}") from None


def _replay(args: argparse.Namespace, quantities=None, layers=None,
            hint: str = "try a shorter text (deep-explorer lstm cells searches texts of any length)"):
    from explorer.core.rnn.replay import replay_bytes, replay_steps  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415

    model = _load(args)
    text = _read_text(args.text)
    # the arrays themselves, plus one chunk's work (and the .npz writer's buffers) on top
    needed = replay_bytes(model, len(text), quantities, layers) + 400_000_000
    _fits(needed, f"keeping every step of {len(text):,} characters", hint)
    progress = cli_progress("reading") if len(text) > 20_000 else None
    result = drive(replay_steps(model, text, quantities=quantities, layers=layers),
                   None if progress is None else (lambda step: progress(*step)))
    return model, result


def cmd_train(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from explorer.core.rnn.model import CharRNNConfig, load_char_rnn, save_char_rnn  # noqa: PLC0415
    from explorer.core.rnn.train import (TrainSettings, evaluate_bpc, join_texts,  # noqa: PLC0415
                                         load_training_state, new_char_rnn, read_texts, train_steps)
    from explorer.core.errors import ExplorerError  # noqa: PLC0415
    from explorer.core.outputs import check_destination  # noqa: PLC0415

    for name in ("layers", "hidden", "seq_len", "batch"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    if args.embedding < 0 or args.epochs <= 0 or args.lr <= 0:
        raise CommandError("--embedding must be ≥ 0, --epochs and --lr positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    check_destination(args.out)
    texts = read_texts(args.text)
    held = join_texts(read_texts(args.heldout)) if args.heldout else ""
    torch.manual_seed(args.seed)
    resume = None
    state_path = args.out.with_suffix(args.out.suffix + ".state")
    extra = {"trained_on": [str(p) for p in args.text]}
    if args.resume:
        # resume from OUT's training state, else from OUT itself when it holds one; never start afresh
        # (that would overwrite OUT with an untrained model)
        source = state_path if state_path.is_file() else args.out
        if not source.is_file():
            raise CommandError(f"nothing to resume from: neither {state_path} nor {args.out} exists "
                               f"(leave out --resume to start a new model)")
        try:
            model, resume = load_training_state(source)
        except ExplorerError as exc:
            raise CommandError(f"cannot resume from {source}: {exc}; nothing was overwritten") from None
    elif args.init:
        model = load_char_rnn(args.init)
        extra["initialised_from"] = str(args.init)
    else:
        config = CharRNNConfig(args.cell, args.layers, args.hidden, args.embedding or None)
        model = new_char_rnn(texts, config, min_count=args.min_count)
    settings = TrainSettings(epochs=args.epochs, seq_len=args.seq_len, batch=args.batch, lr=args.lr,
                             seed=args.seed, time_budget_s=args.budget_min * 60 if args.budget_min else None)
    progress = cli_progress("training")
    last = None
    for last in train_steps(model, join_texts(texts), settings, resume=resume, state_path=state_path):
        progress(min(int(last.fraction * 1000), 999), 1000)
    progress(1000, 1000)
    result = {"out": str(args.out), "steps": last.step if last else 0,
              "train_bpc": round(last.train_bpc, 4) if last else None, "vocab_size": len(model.vocab)}
    if held:
        bpc = evaluate_bpc(model, held)
        extra["heldout_bpc"] = bpc
        result["heldout_bpc"] = round(bpc, 4)
    save_char_rnn(model, args.out, extra=extra)
    text = (f"wrote {args.out}: {model.config.cell} {model.config.num_layers}×{model.config.hidden_size}, "
            f"vocab {len(model.vocab)}, {result['steps']} steps, train {result['train_bpc']} bpc"
            + (f", held-out {result['heldout_bpc']} bpc" if held else ""))
    emit(args, result, text)
    return 0


def cmd_activations(args: argparse.Namespace) -> int:
    # The .npz holds whole-text arrays, so they are kept in memory (float32) and written at the end; a
    # text too long for that is refused before the replay, naming the options that write less.
    model, rep = _replay(args, _split(args.quantities, "quantities"), _split(args.layers, "layers", int),
                         hint="write fewer arrays (e.g. --quantities h,c --layers 0) or read a shorter text")
    arrays = rep.arrays()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        np.savez_compressed(args.out, **arrays)
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    shapes = {k: list(v.shape) for k, v in arrays.items()}
    emit(args, {"out": str(args.out), "characters": rep.length, "bits_per_char": round(rep.bits_per_char(), 4),
                "arrays": shapes, "vocab": model.vocab},
         f"wrote {args.out}: {len(arrays)} arrays for {rep.length} characters "
         f"({', '.join(sorted(arrays))}); {rep.bits_per_char():.3f} bits per character")
    return 0


def cmd_cells(args: argparse.Namespace) -> int:
    from explorer.core.rnn.cells import cell_search_steps, indicator_sequences  # noqa: PLC0415
    from explorer.core.rnn.memory import NotEnoughMemory  # noqa: PLC0415
    from explorer.core.steps import drive  # noqa: PLC0415

    if args.top < 1:
        raise CommandError("--top must be at least 1")
    model = _load(args)
    text = _read_text(args.text)
    quantities = _split(args.quantities, "quantities")
    t0 = time.perf_counter()
    indicators = indicator_sequences(text, args.regex)
    # Streamed for any length: running sums and histograms, one chunk of gates at a time.
    progress = cli_progress("searching") if len(text) > 20_000 else None
    try:
        found = drive(cell_search_steps(model, text, indicators, top=args.top, quantities=quantities,
                                        rank_by=args.rank_by),
                      None if progress is None else (lambda step: progress(*step)))
    except NotEnoughMemory as exc:
        raise CommandError(f"{exc}; search fewer quantities (e.g. --quantities h,c)") from None
    results = found.search
    seconds = time.perf_counter() - t0
    bpc = found.bits_per_char
    data = {"characters": found.length, "bits_per_char": round(bpc, 4), "search_seconds":
            round(seconds, 3), "indicators": {name: {"description": indicators[name].description,
                                                      "binary": indicators[name].binary,
                                                      "cells": [c.to_dict() for c in cells]}
                                               for name, cells in results.items()}}
    lines = [f"{found.length} characters, {bpc:.3f} bits per character; search {seconds:.2f} s"]
    for name, cells in results.items():
        lines.append(f"{name} ({indicators[name].description}):")
        for c in cells:
            au = f"  AUROC {c.auroc:.3f}" if c.auroc is not None else ""
            lines.append(f"  {str(c.cell):>10}  r {c.r:+.3f}{au}")
    emit(args, data, "\n".join(lines))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from explorer.core.rnn.cells import cell_values, parse_cell_ref  # noqa: PLC0415
    from explorer.core.rnn.render import display_values, render_html, render_png  # noqa: PLC0415

    suffix = args.out.suffix.lower()
    if suffix not in (".html", ".htm", ".png"):
        raise CommandError("--out must end in .html or .png")
    _, rep = _replay(args)
    cell = parse_cell_ref(args.cell, rep)
    raw = cell_values(rep, cell)
    values = display_values(cell.quantity, raw)
    title = f"cell {cell} over {args.text.name}" + (" (c / max |c|)" if cell.quantity == "c" else "")
    try:
        if suffix == ".png":
            w, h = render_png(rep.text, values, args.out, title=title, max_lines=args.max_lines)
            detail = f"{w}×{h} PNG"
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(render_html(rep.text, values, title), encoding="utf-8")
            detail = "HTML"
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    emit(args, {"out": str(args.out), "cell": str(cell), "characters": rep.length,
                "min": float(raw.min()), "max": float(raw.max())},
         f"wrote {args.out} ({detail}): cell {cell}, values {raw.min():+.3f} … {raw.max():+.3f}")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from explorer.core.rnn.cells import selection_search  # noqa: PLC0415

    try:
        spans = [tuple(int(v) for v in part.split(":")) for part in args.spans.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--spans must be START:END,START:END…, not {args.spans!r}") from None
    if not spans or any(len(s) != 2 for s in spans):
        raise CommandError(f"--spans must be START:END,START:END…, not {args.spans!r}")
    _, rep = _replay(args)
    result = selection_search(rep, spans, threshold=args.threshold, margin=args.margin,
                              quantities=[q.strip() for q in args.quantities.split(",")], top=args.top)
    data = {"cells": [{"cell": str(c.cell), "on_inside": round(c.on_inside, 4),
                       "off_around": round(c.off_around, 4), "score": round(c.score, 4)} for c in result.cells],
            "matches": [{"start": s, "end": e, "text": rep.text[s:e]} for s, e in result.matches]}
    lines = ["cells on inside the selection and off around it:"]
    lines += [f"  {str(c.cell):>10}  on {c.on_inside:.2f}  off around {c.off_around:.2f}  score {c.score:+.2f}"
              for c in result.cells]
    lines.append(f"other places where the top {min(3, len(result.cells))} fire together:")
    lines += [f"  [{s}, {e}) {rep.text[s:e]!r}" for s, e in result.matches[:20]]
    emit(args, data, "\n".join(lines))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from explorer.core.rnn.model import sample  # noqa: PLC0415

    if args.length < 0:
        raise CommandError("--length must be ≥ 0")
    model = _load(args)
    text = sample(model, args.prime, args.length, args.temperature, args.seed)
    emit(args, {"prime": args.prime, "text": text, "temperature": args.temperature}, args.prime + text)
    return 0
