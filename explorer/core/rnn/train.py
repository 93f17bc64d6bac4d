"""Training character-level language models: truncated backpropagation through time over text streams.

:func:`train_steps` is a generator (one yield per optimisation step), driven by the command line with a
progress bar and by ``scripts/train_char_rnn.py``. It stops after the planned epochs or when a
wall-clock budget runs out, and can save and resume its whole state (weights, optimiser, position).
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

from explorer.core.errors import InputError, ModelLoadError
from explorer.core.rnn.model import (FORMAT, UNKNOWN_CHAR, CharRNN, CharRNNConfig, char_rnn_from_payload,
                                     read_char_rnn_payload, save_char_rnn)


@dataclass
class TrainSettings:
    epochs: float = 10.0
    seq_len: int = 128  # characters per truncated-BPTT chunk
    batch: int = 64  # parallel streams through the text
    lr: float = 2e-3
    min_lr_fraction: float = 0.05  # cosine decay down to lr × this
    clip: float = 5.0
    seed: int = 0
    time_budget_s: float | None = None  # stop (and decay the learning rate) by this wall-clock time
    checkpoint_every_s: float = 180.0


@dataclass
class TrainProgress:
    step: int
    total_steps: int
    epoch: float
    train_bpc: float  # running mean over recent steps
    elapsed_s: float
    fraction: float  # of the planned work (steps or time budget, whichever is further along)
    saved: bool = False


def build_vocab(texts: Iterable[str], min_count: int = 1) -> list[str]:
    """Characters seen at least ``min_count`` times, sorted; plus U+FFFD for the rest when any are rare."""
    counts = Counter()
    for text in texts:
        counts.update(text)
    vocab = sorted(ch for ch, n in counts.items() if n >= min_count and ch != UNKNOWN_CHAR)
    if len(vocab) < len(counts) or UNKNOWN_CHAR in counts:
        vocab.append(UNKNOWN_CHAR)
    if not vocab:
        raise InputError("the training text is empty")
    return vocab


def read_texts(paths: Iterable[str | Path]) -> list[str]:
    texts = []
    for path in paths:
        path = Path(path)
        try:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not any(texts):
        raise InputError("the training files hold no text")
    return texts


def join_texts(texts: Iterable[str]) -> str:
    """Files one after another, each ending with a newline, separated by a blank line."""
    return "\n".join(t if t.endswith("\n") else t + "\n" for t in texts)


def _streams(indices: torch.Tensor, batch: int) -> torch.Tensor:
    """(N,) → (batch, N // batch): ``batch`` contiguous streams read in parallel."""
    n = indices.numel() // batch
    if n < 2:
        raise InputError(f"the text is too short for {batch} streams; use a smaller --batch")
    return indices[: n * batch].view(batch, n)


def _detach(state):
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def evaluate_bpc(model: CharRNN, text: str, batch: int = 32, seq_len: int = 256,
                 max_chars: int | None = None) -> float:
    """Bits per character of ``model`` on ``text`` (streams read with carried state, no gradient)."""
    if max_chars is not None:
        text = text[:max_chars]
    idx = model.encode(text)
    batch = max(1, min(batch, idx.numel() // (seq_len + 1) or 1))
    data = _streams(idx, batch)
    total_nll, count, state = 0.0, 0, None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, data.shape[1] - 1, seq_len):
            x = data[:, start:start + seq_len]
            y = data[:, start + 1:start + seq_len + 1]
            x = x[:, : y.shape[1]]
            logits, state = model(x, state)
            total_nll += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                     reduction="sum").item()
            count += y.numel()
    model.train(was_training)
    return total_nll / max(count, 1) / math.log(2)


def save_training_state(path: str | Path, model: CharRNN, optimizer: torch.optim.Optimizer,
                        settings: TrainSettings, step: int, elapsed_s: float, extra: dict | None = None) -> None:
    save_char_rnn(model, path, extra={"training": {"optimizer": optimizer.state_dict(), "step": step,
                                                   "elapsed_s": elapsed_s, "settings": asdict(settings)},
                                      **(extra or {})})


def load_training_state(path: str | Path) -> tuple[CharRNN, dict]:
    payload = read_char_rnn_payload(path)
    model = char_rnn_from_payload(payload, where=Path(path).name)
    training = payload.get("training")
    if not isinstance(training, dict):
        raise ModelLoadError(f"{Path(path).name} holds no training state to resume from")
    return model, training


def train_steps(model: CharRNN, text: str, settings: TrainSettings, resume: dict | None = None,
                state_path: str | Path | None = None, extra: dict | None = None) -> Iterator[TrainProgress]:
    """Train ``model`` on ``text`` with Adam and truncated BPTT; yields after every step.

    The hidden state is carried from one chunk to the next of each stream (detached), so the model sees
    context far longer than ``seq_len``. The learning rate follows a cosine from ``lr`` to
    ``lr × min_lr_fraction`` over the planned steps or the time budget, whichever ends first. With
    ``state_path`` the whole state is saved every ``checkpoint_every_s`` and at the end.
    """
    torch.manual_seed(settings.seed)
    data = _streams(model.encode(text), settings.batch)
    steps_per_epoch = max(1, (data.shape[1] - 1) // settings.seq_len)
    total_steps = max(1, int(round(settings.epochs * steps_per_epoch)))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    step, elapsed_before = 0, 0.0
    if resume:
        optimizer.load_state_dict(resume["optimizer"])
        step = int(resume.get("step", 0))
        elapsed_before = float(resume.get("elapsed_s", 0.0))
    model.train()
    t0 = time.monotonic()
    last_save = t0
    state = None
    recent: list[float] = []
    budget = settings.time_budget_s
    while step < total_steps:
        elapsed = elapsed_before + time.monotonic() - t0
        frac = step / total_steps
        if budget:
            frac = max(frac, elapsed / budget)
        if frac >= 1.0:
            break
        lr = settings.lr * (settings.min_lr_fraction
                            + (1 - settings.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        pos = (step % steps_per_epoch) * settings.seq_len
        if pos == 0:
            state = None  # a new epoch starts every stream afresh
        x = data[:, pos:pos + settings.seq_len]
        y = data[:, pos + 1:pos + settings.seq_len + 1]
        logits, state = model(x, state)
        state = _detach(state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        optimizer.step()
        step += 1
        recent.append(loss.item() / math.log(2))
        del recent[:-50]
        saved = False
        now = time.monotonic()
        if state_path is not None and now - last_save >= settings.checkpoint_every_s:
            save_training_state(state_path, model, optimizer, settings, step, elapsed_before + now - t0, extra)
            last_save, saved = now, True
        yield TrainProgress(step=step, total_steps=total_steps, epoch=step / steps_per_epoch,
                            train_bpc=sum(recent) / len(recent), elapsed_s=elapsed_before + now - t0,
                            fraction=frac, saved=saved)
    model.eval()
    if state_path is not None:
        save_training_state(state_path, model, optimizer, settings, step,
                            elapsed_before + time.monotonic() - t0, extra)


def new_char_rnn(texts: list[str], config: CharRNNConfig, min_count: int = 1) -> CharRNN:
    return CharRNN(build_vocab(texts, min_count), config)


__all__ = ["TrainSettings", "TrainProgress", "build_vocab", "read_texts", "join_texts", "evaluate_bpc",
           "train_steps", "save_training_state", "load_training_state", "new_char_rnn", "FORMAT"]
