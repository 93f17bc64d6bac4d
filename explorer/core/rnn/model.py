"""Character-level recurrent language models: the module, the checkpoint format, sampling.

The checkpoint format ``deep-explorer/char-rnn/1`` is a ``torch.save``d dict::

    {"format": "deep-explorer/char-rnn/1",
     "vocab": ["\\n", " ", "!", ...],            # characters in index order
     "config": {"cell": "lstm" | "gru" | "rnn", "num_layers": L, "hidden_size": H,
                "embedding_dim": E or None},     # None: one-hot inputs
     "state_dict": {...}}                        # of :class:`CharRNN`

:class:`CharRNN` holds ``embedding`` (``nn.Embedding``, absent for one-hot), ``rnn`` (``nn.LSTM``,
``nn.GRU`` or ``nn.RNN`` with ``batch_first=True``) and ``head`` (``nn.Linear`` to the vocabulary).

Gate-level replay is in :mod:`explorer.core.rnn.replay`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from explorer.core.errors import InputError, ModelLoadError
from explorer.core.resources import MODELS_DIR

FORMAT = "deep-explorer/char-rnn/1"
CELL_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
# Quantities that replay yields per layer, in display order.
QUANTITIES = {"lstm": ("h", "c", "i", "f", "g", "o"), "gru": ("h", "r", "z", "n"), "rnn": ("h",)}
GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": ()}  # sigmoid gates, for saturation
UNKNOWN_CHAR = "\ufffd"
BUNDLED_CHAR_RNNS = {"python": MODELS_DIR / "char_rnn_python.pt",
                     "python-gru": MODELS_DIR / "char_gru_python.pt"}
DEFAULT_CHAR_RNN = "python"


@dataclass(frozen=True)
class CharRNNConfig:
    cell: str = "lstm"
    num_layers: int = 1
    hidden_size: int = 128
    embedding_dim: int | None = 32  # None: one-hot inputs

    def to_dict(self) -> dict:
        return {"cell": self.cell, "num_layers": self.num_layers, "hidden_size": self.hidden_size,
                "embedding_dim": self.embedding_dim}


class CharRNN(nn.Module):
    """Embedding (or one-hot) → recurrent layers (batch first) → linear head over the vocabulary."""

    def __init__(self, vocab: Sequence[str], config: CharRNNConfig) -> None:
        super().__init__()
        if config.cell not in CELL_TYPES:
            raise ModelLoadError(f"unknown cell type {config.cell!r}; expected lstm, gru or rnn")
        self.vocab = list(vocab)
        self.config = config
        self.char_to_index = {ch: k for k, ch in enumerate(self.vocab)}
        n = len(self.vocab)
        if config.embedding_dim is None:
            input_size = n
        else:
            self.embedding = nn.Embedding(n, config.embedding_dim)
            input_size = config.embedding_dim
        kwargs = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
        self.rnn = CELL_TYPES[config.cell](input_size, config.hidden_size, num_layers=config.num_layers,
                                           batch_first=True, **kwargs)
        self.head = nn.Linear(config.hidden_size, n)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """(..., T) long → (..., T, input_size) float."""
        if self.config.embedding_dim is None:
            return nn.functional.one_hot(indices, len(self.vocab)).to(self.head.weight.dtype)
        return self.embedding(indices)

    def forward(self, indices: torch.Tensor, state=None):
        """(B, T) long → logits (B, T, vocab) and the final recurrent state."""
        out, state = self.rnn(self.embed(indices), state)
        return self.head(out), state

    def encode(self, text: str) -> torch.Tensor:
        """Characters → indices (T,); characters outside the vocabulary become :func:`fallback_index`."""
        fallback = self.fallback_index()
        lookup = self.char_to_index
        return torch.tensor([lookup.get(ch, fallback) for ch in text], dtype=torch.long)

    def fallback_index(self) -> int:
        for ch in (UNKNOWN_CHAR, " "):
            if ch in self.char_to_index:
                return self.char_to_index[ch]
        return 0

    def decode(self, indices: Sequence[int]) -> str:
        return "".join(self.vocab[int(k)] for k in indices)


# ---------------------------------------------------------------------------------------------------
# The checkpoint format


def save_char_rnn(model: CharRNN, path: str | Path, extra: dict | None = None) -> None:
    """Write ``model`` in the ``deep-explorer/char-rnn/1`` format (``extra``: more plain-data keys)."""
    payload = {"format": FORMAT, "vocab": list(model.vocab), "config": model.config.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if extra:
        payload.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def char_rnn_from_payload(payload: object, where: str = "checkpoint") -> CharRNN:
    """Build a :class:`CharRNN` from a loaded checkpoint dict, checking every field."""
    if not isinstance(payload, dict):
        raise ModelLoadError(f"{where} is not a char-RNN checkpoint (a {type(payload).__name__}, "
                             f"not a dict with format {FORMAT!r})")
    fmt = payload.get("format")
    if fmt != FORMAT:
        raise ModelLoadError(f"{where} is not a char-RNN checkpoint: format is {fmt!r}, expected {FORMAT!r}")
    vocab = payload.get("vocab")
    if (not isinstance(vocab, (list, tuple)) or not vocab
            or not all(isinstance(ch, str) and len(ch) == 1 for ch in vocab)):
        raise ModelLoadError(f"{where}: 'vocab' must be a non-empty list of single characters")
    if len(set(vocab)) != len(vocab):
        raise ModelLoadError(f"{where}: 'vocab' lists a character twice")
    cfg = payload.get("config")
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{where}: 'config' is missing")
    try:
        emb = cfg.get("embedding_dim")
        config = CharRNNConfig(cell=str(cfg["cell"]).lower(), num_layers=int(cfg["num_layers"]),
                               hidden_size=int(cfg["hidden_size"]),
                               embedding_dim=None if emb is None else int(emb))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{where}: bad 'config' ({exc.__class__.__name__}: {exc}); needs cell, "
                             f"num_layers, hidden_size, embedding_dim") from None
    if config.num_layers < 1 or config.hidden_size < 1 or (emb is not None and config.embedding_dim < 1):
        raise ModelLoadError(f"{where}: 'config' sizes must be positive")
    model = CharRNN(vocab, config)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ModelLoadError(f"{where}: 'state_dict' is missing")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}" + (" ..." if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}" + (" ..." if len(unexpected) > 3 else ""))
        raise ModelLoadError(f"{where}: state_dict does not fit the config ({'; '.join(parts)})")
    for key, tensor in own.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise ModelLoadError(f"{where}: state_dict[{key!r}] is not a tensor")
        if tuple(value.shape) != tuple(tensor.shape):
            raise ModelLoadError(f"{where}: shape mismatch for {key}: file has {tuple(value.shape)}, "
                                 f"the config needs {tuple(tensor.shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def read_char_rnn_payload(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"no such model file: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:4] != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch.save's zip, or a legacy pickle
        raise ModelLoadError(f"{path.name} is not a readable torch checkpoint (not a torch.save file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one message
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text:
            raise ModelLoadError(f"{path.name} is not a readable torch checkpoint: it holds objects other than "
                                 f"tensors and plain data (a pickled module?); save the "
                                 f"{FORMAT} dict instead") from None
        first = text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
        raise ModelLoadError(f"{path.name} is not a readable torch checkpoint ({first[:160]})") from None
    return payload


def load_char_rnn(path_or_name: str | Path | None = None) -> CharRNN:
    """Load a char-RNN checkpoint file or a bundled model (``"bundled"``, ``"python"`` or None)."""
    if path_or_name is None or str(path_or_name) in ("bundled", *BUNDLED_CHAR_RNNS):
        name = DEFAULT_CHAR_RNN if path_or_name in (None, "bundled") else str(path_or_name)
        path = BUNDLED_CHAR_RNNS[name]
        if not path.is_file():
            raise ModelLoadError(f"bundled char-RNN {name!r} is missing ({path}); "
                                 f"run scripts/train_char_rnn.py")
    else:
        path = Path(path_or_name)
    payload = read_char_rnn_payload(path)
    model = char_rnn_from_payload(payload, where=Path(path).name)
    model.info = {k: v for k, v in payload.items() if k not in ("state_dict", "optimizer")}
    return model


def sample_steps(model: CharRNN, prime: str = "", length: int = 200, temperature: float = 1.0,
                 seed: int | None = None) -> Iterator[str]:
    """Let the model write: yields one character at a time after reading ``prime``.

    ``temperature`` divides the logits (→ 0: greedy; 1: the model's distribution).
    """
    if temperature < 0 or not math.isfinite(temperature):
        raise InputError("temperature must be a finite number ≥ 0")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        state = None
        if prime:
            logits, state = model(model.encode(prime).unsqueeze(0), state)
            last = logits[0, -1]
        else:
            start = model.char_to_index.get("\n", 0)
            logits, state = model(torch.tensor([[start]]), state)
            last = logits[0, -1]
        for _ in range(length):
            if temperature == 0:
                k = int(torch.argmax(last))
            else:
                p = torch.softmax(last / temperature, dim=-1)
                k = int(torch.multinomial(p, 1, generator=gen))
            yield model.vocab[k]
            logits, state = model(torch.tensor([[k]]), state)
            last = logits[0, -1]


def sample(model: CharRNN, prime: str = "", length: int = 200, temperature: float = 1.0,
           seed: int | None = None) -> str:
    return "".join(sample_steps(model, prime, length, temperature, seed))
