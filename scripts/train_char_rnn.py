"""Train the bundled char-LSTM on the Python standard library's own source code.

Files are picked deterministically: every tenth ``*.py`` file directly in the standard library folder
(sorted by name, index % 10 == 7) is held out; the model trains on the other files of the whole standard
library, its packages and tests included (``--corpus all``; ``--corpus top``: the top-level modules only).
The bits per character on the held-out files are printed every ten minutes and at the end and stored in the
checkpoint. Training stops after a wall-clock budget and can be resumed: the whole state (weights,
optimiser, step) is saved every few minutes to ``--state``.

How the bundled model was made (docs/lstm.md; about 3 hours on a 2-core CPU in all):

    python scripts/train_char_rnn.py --corpus top --budget-min 70            # first run, one core
    python scripts/train_char_rnn.py --init resources/models/char_rnn_python.pt --threads 2 --budget-min 120 \
        --lr 2e-3 --state build/second.state.pt                               # then on everything

    python scripts/train_char_rnn.py --cell gru --budget-min 105 --lr 3e-3 --seq-len 256 \
        --out resources/models/char_gru_python.pt                             # the bundled GRU, one thread
    python scripts/train_char_rnn.py --budget-min 5 --out /tmp/small.pt      # a quick small try
"""
from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core.rnn.model import CharRNNConfig, load_char_rnn, read_char_rnn_payload, save_char_rnn  # noqa: E402
from explorer.core.rnn.train import (TrainSettings, evaluate_bpc, join_texts, load_training_state,  # noqa: E402
                                     new_char_rnn, read_texts, train_steps)


SKIPPED_PACKAGES = {"site-packages", "pydoc_data", "encodings"}  # installed packages; generated tables and docs


def stdlib_files(folder: Path, corpus: str = "all") -> tuple[list[Path], list[Path]]:
    """Training and held-out files, both sorted by path.

    The held-out files are every tenth ``*.py`` file directly in the standard library folder (index % 10 == 7).
    ``corpus="top"`` trains on the other top-level files only; ``"all"`` also on every ``*.py`` file in the
    standard library's packages, its tests included (about 8 times more text), except installed packages
    and the generated ``encodings`` tables and ``pydoc_data``.
    """
    top = sorted(p for p in folder.glob("*.py") if p.is_file())
    held_out = [p for k, p in enumerate(top) if k % 10 == 7]
    train = [p for k, p in enumerate(top) if k % 10 != 7]
    if corpus == "all":
        train += sorted(p for p in folder.glob("*/**/*.py")
                        if p.is_file() and p.relative_to(folder).parts[0] not in SKIPPED_PACKAGES)
    return train, held_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "models" / "char_rnn_python.pt")
    parser.add_argument("--state", type=Path, default=ROOT / "build" / "char_rnn_python.state.pt",
                        help="resumable training state (resumed from when it exists)")
    parser.add_argument("--corpus", choices=("all", "top"), default="all",
                        help="all: the whole standard library (default); top: its top-level modules only")
    parser.add_argument("--budget-min", type=float, default=65.0, help="wall-clock budget in minutes")
    parser.add_argument("--epochs", type=float, default=50.0)
    parser.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm",
                        help="recurrent cell of a new model (ignored with --init or a resumed --state)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--embedding", type=int, default=48)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this char-RNN checkpoint's weights (and vocabulary) instead of at random")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    train_files, held_files = stdlib_files(args.stdlib, args.corpus)
    train_texts, held_texts = read_texts(train_files), read_texts(held_files)
    train_text, held_text = join_texts(train_texts), join_texts(held_texts)
    print(f"{len(train_files)} training files ({len(train_text):,} chars), {len(held_files)} held out "
          f"({len(held_text):,} chars): {', '.join(p.name for p in held_files)}", flush=True)
    settings = TrainSettings(epochs=args.epochs, seq_len=args.seq_len, batch=args.batch, lr=args.lr,
                             time_budget_s=args.budget_min * 60, checkpoint_every_s=180)
    resume, init_info = None, None
    if args.state.is_file():
        model, resume = load_training_state(args.state)
        init_info = read_char_rnn_payload(args.state).get("initialised_from")
        print(f"resuming from {args.state} at step {resume['step']} ({resume['elapsed_s'] / 60:.1f} min)",
              flush=True)
    elif args.init is not None:
        model = load_char_rnn(args.init)
        before = read_char_rnn_payload(args.init)
        init_info = {"file": args.init.name, **{k: before.get(k) for k in ("train_steps", "train_minutes", "heldout_bpc")}}
        print(f"starting from the weights of {args.init}", flush=True)
    else:
        model = new_char_rnn(train_texts, CharRNNConfig(args.cell, args.layers, args.hidden, args.embedding),
                             min_count=20)
    print(f"vocab {len(model.vocab)}, {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    t0 = time.monotonic()
    last_eval = t0
    progress = None
    extra = {"initialised_from": init_info} if init_info else None
    for progress in train_steps(model, train_text, settings, resume=resume, state_path=args.state,
                                extra=extra):
        if progress.step % 100 == 0:
            print(f"step {progress.step}/{progress.total_steps} epoch {progress.epoch:.2f} "
                  f"train {progress.train_bpc:.3f} bpc, {progress.elapsed_s / 60:.1f} min, "
                  f"{progress.fraction:.0%}", flush=True)
        if time.monotonic() - last_eval > 600:
            print(f"  held-out (first 100k chars): {evaluate_bpc(model, held_text, max_chars=100_000):.3f} bpc",
                  flush=True)
            model.train()
            last_eval = time.monotonic()
    bpc = evaluate_bpc(model, held_text)
    print(f"held-out bits per character: {bpc:.3f} ({len(held_files)} files, {len(held_text):,} chars)",
          flush=True)
    save_char_rnn(model, args.out, extra={
        "trained_on": f"Python standard library source ({args.corpus}; held out: top-level *.py, sorted, index % 10 == 7)",
        "heldout_files": [p.name for p in held_files], "heldout_bpc": bpc,
        "train_steps": progress.step if progress else None,
        "train_minutes": progress.elapsed_s / 60 if progress else None, **(extra or {})})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
