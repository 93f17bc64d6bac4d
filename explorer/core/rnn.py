"""Character-level recurrent language models: the module, the checkpoint format, gate-level replay.

The checkpoint format ``deep-explorer/char-rnn/1`` is a ``torch.save``d dict::

    {"format": "deep-explorer/char-rnn/1",
     "vocab": ["\\n", " ", "!", ...],            # characters in index order
     "config": {"cell": "lstm" | "gru" | "rnn", "num_layers": L, "hidden_size": H,
                "embedding_dim": E or None},     # None: one-hot inputs
     "state_dict": {...}}                        # of :class:`CharRNN`

:class:`CharRNN` holds ``embedding`` (``nn.Embedding``, absent for one-hot), ``rnn`` (``nn.LSTM``,
``nn.GRU`` or ``nn.RNN`` with ``batch_first=True``) and ``head`` (``nn.Linear`` to the vocabulary).

:func:`replay` recomputes every gate of every layer at every step from the module's own weights
(PyTorch's gate order: i, f, g, o for the LSTM; r, z, n for the GRU), so that the values shown are the
ones the network computes, not an approximation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .errors import InputError, ModelLoadError

FORMAT = "deep-explorer/char-rnn/1"
CELL_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
# Quantities that replay yields per layer, in display order.
QUANTITIES = {"lstm": ("h", "c", "i", "f", "g", "o"), "gru": ("h", "r", "z", "n"), "rnn": ("h",)}
GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": ()}  # sigmoid gates, for saturation
UNKNOWN_CHAR = "\ufffd"
RESOURCES = Path(__file__).resolve().parents[2] / "resources"
BUNDLED_CHAR_RNNS = {"python": RESOURCES / "models" / "char_rnn_python.pt",
                     "python-gru": RESOURCES / "models" / "char_gru_python.pt"}
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


# ---------------------------------------------------------------------------------------------------
# Gate-level replay


@dataclass
class Replay:
    """Everything a char-RNN computed while reading a text from a zero state.

    ``layers[l][q]`` is a (T, H) float32 array for quantity ``q`` (see :data:`QUANTITIES`) of layer
    ``l``; ``probs`` (T, V) is the next-character distribution after each character.
    """

    text: str
    cell: str
    layers: list[dict[str, np.ndarray]]
    probs: np.ndarray
    indices: np.ndarray = field(repr=False)

    @property
    def length(self) -> int:
        return len(self.text)

    def get(self, layer: int, quantity: str) -> np.ndarray:
        try:
            return self.layers[layer][quantity]
        except (IndexError, KeyError):
            raise InputError(f"no quantity {quantity!r} in layer {layer}; this {self.cell.upper()} has "
                             f"layers 0..{len(self.layers) - 1} with {', '.join(QUANTITIES[self.cell])}") \
                from None

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat dict ``{"h0": ..., "c0": ..., "probs": ...}`` as written to ``.npz``."""
        out = {f"{q}{layer}": a for layer, qs in enumerate(self.layers) for q, a in qs.items()}
        out["probs"] = self.probs
        return out

    def bits_per_char(self) -> float:
        """Mean −log2 p(next char) over the text (the last character has no successor)."""
        if len(self.indices) < 2:
            return float("nan")
        p = self.probs[np.arange(len(self.indices) - 1), self.indices[1:]]
        return float(-np.log2(np.maximum(p, 1e-12)).mean())


def _lstm_layer(x_proj: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Recurrence of one LSTM layer given the input projections ``x_proj`` = W_ih x_t + b_ih, (T, 4H).

    i, f, o = σ(·), g = tanh(·), c_t = f ⊙ c_{t−1} + i ⊙ g, h_t = o ⊙ tanh(c_t) (Hochreiter &
    Schmidhuber 1997; PyTorch's gate order i, f, g, o).
    """
    T, four_h = x_proj.shape
    H = four_h // 4
    pre = x_proj + b_hh  # the per-step recurrent term is added in place below
    acts = torch.empty_like(pre)
    c_all = torch.empty(T, H, dtype=pre.dtype)
    h_all = torch.empty(T, H, dtype=pre.dtype)
    h = state[0].clone() if state else torch.zeros(1, H, dtype=pre.dtype)
    c = state[1].clone() if state else torch.zeros(1, H, dtype=pre.dtype)
    for t in range(T):
        row = pre[t:t + 1]
        row.addmm_(h, w_hh_t)
        a = acts[t:t + 1]
        torch.sigmoid(row, out=a)
        torch.tanh(row[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])
        c = torch.addcmul(a[:, H:2 * H] * c, a[:, :H], a[:, 2 * H:3 * H])
        h = a[:, 3 * H:] * torch.tanh(c)
        c_all[t] = c[0]
        h_all[t] = h[0]
    return {"h": h_all, "c": c_all, "i": acts[:, :H], "f": acts[:, H:2 * H], "g": acts[:, 2 * H:3 * H],
            "o": acts[:, 3 * H:]}


def _gru_layer(x_proj: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
               state: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One GRU layer: r, z = σ(W_i x + b_i + W_h h + b_h), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1} (Cho et al. 2014, PyTorch's variant and gate order r, z, n)."""
    T, three_h = x_proj.shape
    H = three_h // 3
    rz_all = torch.empty(T, 2 * H, dtype=x_proj.dtype)
    n_all = torch.empty(T, H, dtype=x_proj.dtype)
    h_all = torch.empty(T, H, dtype=x_proj.dtype)
    h = state.clone() if state is not None else torch.zeros(1, H, dtype=x_proj.dtype)
    for t in range(T):
        hh = torch.addmm(b_hh, h, w_hh_t)
        rz = torch.sigmoid(x_proj[t:t + 1, :2 * H] + hh[:, :2 * H])
        n = torch.tanh(torch.addcmul(x_proj[t:t + 1, 2 * H:], rz[:, :H], hh[:, 2 * H:]))
        h = torch.lerp(n, h, rz[:, H:])  # (1 − z) n + z h
        rz_all[t] = rz[0]
        n_all[t] = n[0]
        h_all[t] = h[0]
    return {"h": h_all, "r": rz_all[:, :H], "z": rz_all[:, H:], "n": n_all}


def _rnn_layer(x_proj: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
               state: torch.Tensor | None = None, nonlinearity: str = "tanh") -> dict[str, torch.Tensor]:
    """Elman RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh)."""
    T, H = x_proj.shape
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    pre = x_proj + b_hh
    h_all = torch.empty(T, H, dtype=x_proj.dtype)
    h = state.clone() if state is not None else torch.zeros(1, H, dtype=x_proj.dtype)
    for t in range(T):
        h = act(torch.addmm(pre[t:t + 1], h, w_hh_t))
        h_all[t] = h[0]
    return {"h": h_all}


def _forced_layer(cell: str, x_proj: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
                  h_seq: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
                  nonlinearity: str = "tanh") -> dict[str, torch.Tensor]:
    """All gates of one layer at once, given the layer's outputs h_1..h_T from the module's own forward.

    With h_{t−1} known for every step, every gate pre-activation W_ih x_t + b_ih + W_hh h_{t−1} + b_hh is
    one matrix product over all steps; only the LSTM's cell state c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t is a
    recurrence, and an elementwise one. h is then recomputed from the gates (h_t = o_t ⊙ tanh(c_t)),
    so it checks the gates rather than being copied.
    """
    H = h_seq.shape[1]
    h_prev = torch.cat([h0, h_seq[:-1]])
    rec = torch.addmm(b_hh, h_prev, w_hh_t)  # (T, G·H)
    if cell == "lstm":
        pre = x_proj + rec
        acts = torch.sigmoid(pre)
        acts[:, 2 * H:3 * H] = torch.tanh(pre[:, 2 * H:3 * H])
        i, f, g, o = (acts[:, k * H:(k + 1) * H] for k in range(4))
        ig = (i * g).numpy()
        f_np = f.contiguous().numpy()
        c_np = np.empty_like(ig)
        c = c0[0].numpy().copy()
        for t in range(len(ig)):  # the one recurrence left: elementwise, H values per step
            np.multiply(f_np[t], c, out=c)
            c += ig[t]
            c_np[t] = c
        c_all = torch.from_numpy(c_np)
        return {"h": o * torch.tanh(c_all), "c": c_all, "i": i, "f": f, "g": g, "o": o}
    if cell == "gru":
        rz = torch.sigmoid(x_proj[:, :2 * H] + rec[:, :2 * H])
        n = torch.tanh(torch.addcmul(x_proj[:, 2 * H:], rz[:, :H], rec[:, 2 * H:]))
        return {"h": torch.lerp(n, h_prev, rz[:, H:]), "r": rz[:, :H], "z": rz[:, H:], "n": n}
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    return {"h": act(x_proj + rec)}


def _layer_weights(rnn: nn.Module, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    w_ih = getattr(rnn, f"weight_ih_l{layer}")
    w_hh = getattr(rnn, f"weight_hh_l{layer}")
    rows = w_hh.shape[0]
    b_ih = getattr(rnn, f"bias_ih_l{layer}", None)
    b_hh = getattr(rnn, f"bias_hh_l{layer}", None)
    return (w_ih, w_hh, b_ih if b_ih is not None else torch.zeros(rows),
            b_hh if b_hh is not None else torch.zeros(rows))


def _single_layer(rnn: nn.Module, cell: str, layer: int) -> nn.Module:
    """Layer ``layer`` of a stacked recurrent module as a one-layer module sharing its weights."""
    w_ih, w_hh, b_ih, b_hh = _layer_weights(rnn, layer)
    kwargs = {"nonlinearity": rnn.nonlinearity} if cell == "rnn" else {}
    one = CELL_TYPES[cell](w_ih.shape[1], w_hh.shape[1], num_layers=1, batch_first=True, **kwargs)
    with torch.no_grad():
        for name, value in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh), ("bias_ih_l0", b_ih),
                            ("bias_hh_l0", b_hh)):
            getattr(one, name).copy_(value)
    return one.eval()


def replay_steps(model: CharRNN, text: str, chunk: int = 8192,
                 method: str = "forced") -> Iterator[tuple[int, int, Replay | None]]:
    """Generator form of :func:`replay`: yields ``(done, total, None)`` while working (``total`` counts
    characters × layers) and finally ``(total, total, result)``. Stop iterating to cancel."""
    if not text:
        raise InputError("the text is empty")
    if method not in ("forced", "loop"):
        raise ValueError(f"method must be 'forced' or 'loop', not {method!r}")
    cell = model.config.cell
    rnn = model.rnn
    nonlinearity = getattr(rnn, "nonlinearity", "tanh")
    indices = model.encode(text)
    T = len(indices)
    L = model.config.num_layers
    H = model.config.hidden_size
    total = T * L
    layers: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        x = model.embed(indices).float()  # (T, input)
        for layer in range(L):
            w_ih, w_hh, b_ih, b_hh = _layer_weights(rnn, layer)
            w_hh_t = w_hh.t().contiguous()
            b_hh = b_hh.unsqueeze(0)
            x_proj = torch.addmm(b_ih, x, w_ih.t())  # all steps at once: (T, G·H)
            one = _single_layer(rnn, cell, layer) if method == "forced" else None
            parts: list[dict[str, torch.Tensor]] = []
            h0 = torch.zeros(1, H)
            c0 = torch.zeros(1, H)
            state = None
            for start in range(0, T, chunk):
                seg = x_proj[start:start + chunk]
                if method == "forced":
                    # The module's own recurrence gives h_{t−1}; the gates follow in one product.
                    h_seq, state = one(x[start:start + chunk].unsqueeze(0), state)
                    out = _forced_layer(cell, seg, w_hh_t, b_hh, h_seq[0], h0, c0, nonlinearity)
                    h0 = h_seq[0, -1:]
                    if cell == "lstm":
                        c0 = out["c"][-1:].clone()
                elif cell == "lstm":
                    out = _lstm_layer(seg, w_hh_t, b_hh, state)
                    state = (out["h"][-1:].clone(), out["c"][-1:].clone())
                elif cell == "gru":
                    out = _gru_layer(seg, w_hh_t, b_hh, state)
                    state = out["h"][-1:].clone()
                else:
                    out = _rnn_layer(seg, w_hh_t, b_hh, state, nonlinearity)
                    state = out["h"][-1:].clone()
                parts.append(out)
                yield layer * T + min(start + chunk, T), total, None
            merged = {q: torch.cat([p[q] for p in parts]) if len(parts) > 1 else parts[0][q]
                      for q in QUANTITIES[cell]}
            layers.append(merged)
            x = merged["h"]
        probs = torch.softmax(model.head(x), dim=-1)
    result = Replay(text=text, cell=cell,
                    layers=[{q: np.ascontiguousarray(t.numpy(), dtype=np.float32) for q, t in d.items()}
                            for d in layers],
                    probs=np.ascontiguousarray(probs.numpy(), dtype=np.float32),
                    indices=indices.numpy())
    yield total, total, result


def replay(model: CharRNN, text: str, method: str = "forced") -> Replay:
    """Read ``text`` from a zero state and return every gate, state and output at every step.

    Computed from the module's own weights with PyTorch's gate order (i, f, g, o; r, z, n). Each
    layer's input projections W_ih x_t + b_ih for all T steps are one matrix product. ``method``:

    - ``"forced"`` (default, fast): the layer's module runs its own recurrence for h; then every gate at
      every step is one more matrix product over h_{t−1}, c follows by an elementwise loop and h is
      recomputed from the gates (it matches the module's h to float precision; a test checks it).
    - ``"loop"``: the whole recurrence step by step in Python, independent of the module's kernels.
    """
    result = None
    for _, _, result in replay_steps(model, text, method=method):
        pass
    return result


# ---------------------------------------------------------------------------------------------------
# Gate saturation and sampling


def gate_saturation(rep: Replay, low: float = 0.1, high: float = 0.9) -> dict[tuple[int, str], np.ndarray]:
    """Fraction of steps each gate is left-saturated (< ``low``) and right-saturated (> ``high``).

    Karpathy, Johnson & Fei-Fei (2016), §4.2. Returns ``{(layer, gate): (H, 2) array}`` with columns
    (left fraction, right fraction).
    """
    out = {}
    for layer, qs in enumerate(rep.layers):
        for gate in GATES[rep.cell]:
            a = qs[gate]
            out[(layer, gate)] = np.stack([(a < low).mean(0), (a > high).mean(0)], axis=1).astype(np.float32)
    return out


def top_next_chars(probs_row: np.ndarray, vocab: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(-probs_row)[:k]
    return [(vocab[int(j)], float(probs_row[j])) for j in order]


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
