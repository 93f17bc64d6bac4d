"""Gate-level replay: every gate of every layer at every step, recomputed from the module's own weights.

PyTorch's gate order: i, f, g, o for the LSTM; r, z, n for the GRU. The values shown are the ones the
network computes, not an approximation; tests check them against ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Generator, Sequence

import numpy as np
import torch
from torch import nn

from explorer.core.errors import InputError
from explorer.core.rnn.model import CELL_TYPES, GATES, QUANTITIES, CharRNN
from explorer.core.steps import drive

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


@dataclass
class ReplayChunk:
    """What the network computed over characters ``start``..``stop`` − 1 of a text (one chunk).

    ``layers[l]`` holds the requested quantities of layer ``l`` as (n, H) float32 arrays (an empty dict
    for a layer that was not asked for); ``probs`` (n, V) is the next-character distribution or None;
    ``targets`` (n,) the index of the character after each one (−1 after the last character of the text).
    """

    start: int
    stop: int
    total: int
    layers: list[dict[str, np.ndarray]]
    probs: np.ndarray | None
    indices: np.ndarray
    targets: np.ndarray


def _check_selection(cell: str, num_layers: int, quantities: Sequence[str] | None,
                     layers: Sequence[int] | None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    qs = QUANTITIES[cell] if quantities is None else tuple(quantities)
    for q in qs:
        if q not in QUANTITIES[cell]:
            raise InputError(f"no quantity {q!r} in a {cell.upper()}; choose from {', '.join(QUANTITIES[cell])}")
    ls = tuple(range(num_layers)) if layers is None else tuple(layers)
    for layer in ls:
        if not 0 <= layer < num_layers:
            raise InputError(f"no layer {layer}: this {cell.upper()} has layers 0..{num_layers - 1}")
    return qs, ls


def replay_chunks(model: CharRNN, text: str, chunk: int = 8192, quantities: Sequence[str] | None = None,
                  layers: Sequence[int] | None = None, probs: bool = True,
                  method: str = "forced") -> Generator[ReplayChunk, None, None]:
    """Read ``text`` from a zero state ``chunk`` characters at a time, yielding a :class:`ReplayChunk`
    per chunk; nothing of earlier chunks is kept, so memory does not grow with the text.

    Between chunks only the recurrent state of every layer ((h, c) for the LSTM) is carried. Within a
    chunk, with ``method="forced"``, each layer's own module runs the recurrence for h and every gate of
    every step follows in one matrix product over h_{t−1} (see :func:`_forced_layer`); ``"loop"`` runs
    the whole recurrence step by step in Python. ``quantities``/``layers`` choose what the chunks carry
    (all by default); every layer is computed either way, since each feeds the next. Close it to cancel.
    """
    if not text:
        raise InputError("the text is empty")
    if method not in ("forced", "loop"):
        raise ValueError(f"method must be 'forced' or 'loop', not {method!r}")
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    cell = model.config.cell
    qs, keep_layers = _check_selection(cell, model.config.num_layers, quantities, layers)
    rnn = model.rnn
    nonlinearity = getattr(rnn, "nonlinearity", "tanh")
    T = len(text)
    L = model.config.num_layers
    H = model.config.hidden_size
    with torch.no_grad():
        weights = []
        for layer in range(L):
            w_ih, w_hh, b_ih, b_hh = _layer_weights(rnn, layer)
            weights.append((w_ih.t().contiguous(), b_ih, w_hh.t().contiguous(), b_hh.unsqueeze(0),
                            _single_layer(rnn, cell, layer) if method == "forced" else None))
        # per layer: the module's state for "forced" (plus the c carried by the replay), the loop's state
        states: list = [None] * L
        c_prev = [torch.zeros(1, H) for _ in range(L)]
        h_prev = [torch.zeros(1, H) for _ in range(L)]
        next_index = model.encode(text[:1])
        for start in range(0, T, chunk):
            stop = min(start + chunk, T)
            idx = torch.cat([next_index, model.encode(text[start + 1:stop + 1])])
            next_index = idx[stop - start:]
            idx = idx[:stop - start]
            x = model.embed(idx).float()
            kept: list[dict[str, np.ndarray]] = []
            for layer, (w_ih_t, b_ih, w_hh_t, b_hh, one) in enumerate(weights):
                x_proj = torch.addmm(b_ih, x, w_ih_t)  # all steps of the chunk at once: (n, G·H)
                if method == "forced":
                    # The module's own recurrence gives h_{t−1}; the gates follow in one product.
                    h_seq, states[layer] = one(x.unsqueeze(0), states[layer])
                    out = _forced_layer(cell, x_proj, w_hh_t, b_hh, h_seq[0], h_prev[layer], c_prev[layer],
                                        nonlinearity)
                    h_prev[layer] = h_seq[0, -1:]
                    if cell == "lstm":
                        c_prev[layer] = out["c"][-1:].clone()
                elif cell == "lstm":
                    out = _lstm_layer(x_proj, w_hh_t, b_hh, states[layer])
                    states[layer] = (out["h"][-1:].clone(), out["c"][-1:].clone())
                elif cell == "gru":
                    out = _gru_layer(x_proj, w_hh_t, b_hh, states[layer])
                    states[layer] = out["h"][-1:].clone()
                else:
                    out = _rnn_layer(x_proj, w_hh_t, b_hh, states[layer], nonlinearity)
                    states[layer] = out["h"][-1:].clone()
                kept.append({q: np.ascontiguousarray(out[q].numpy(), dtype=np.float32) for q in qs}
                            if layer in keep_layers else {})
                x = out["h"]
            p = (np.ascontiguousarray(torch.softmax(model.head(x), dim=-1).numpy(), dtype=np.float32)
                 if probs else None)
            targets = np.full(stop - start, -1, dtype=np.int64)
            targets[:-1] = idx[1:].numpy()
            if len(next_index):
                targets[-1] = int(next_index[0])
            yield ReplayChunk(start, stop, T, kept, p, idx.numpy(), targets)


def replay_bytes(model: CharRNN, length: int, quantities: Sequence[str] | None = None,
                 layers: Sequence[int] | None = None, probs: bool = True) -> int:
    """Bytes a whole-text :class:`Replay` of ``length`` characters holds (float32 arrays, int64 indices)."""
    cfg = model.config
    qs = QUANTITIES[cfg.cell] if quantities is None else tuple(quantities)
    n_layers = cfg.num_layers if layers is None else len(tuple(layers))
    per_char = 4 * len(qs) * n_layers * cfg.hidden_size + (4 * len(model.vocab) if probs else 0) + 8
    return int(length) * per_char


def replay_steps(model: CharRNN, text: str, chunk: int = 8192, method: str = "forced",
                 quantities: Sequence[str] | None = None,
                 layers: Sequence[int] | None = None) -> Generator[tuple[int, int], None, Replay]:
    """Generator form of :func:`replay`: yields ``(done, total)`` characters while working and returns
    the :class:`Replay` (only ``quantities`` of ``layers``, all by default). Close it to cancel.

    Built on :func:`replay_chunks`: the whole-text arrays are allocated once and filled chunk by chunk.
    """
    if not text:
        raise InputError("the text is empty")
    cell = model.config.cell
    qs, keep_layers = _check_selection(cell, model.config.num_layers, quantities, layers)
    T = len(text)
    H = model.config.hidden_size
    out = [{q: np.empty((T, H), dtype=np.float32) for q in qs} if layer in keep_layers else {}
           for layer in range(model.config.num_layers)]
    probs = np.empty((T, len(model.vocab)), dtype=np.float32)
    indices = np.empty(T, dtype=np.int64)
    chunks = replay_chunks(model, text, chunk, qs, keep_layers, method=method)
    try:
        for part in chunks:
            for layer, arrays in enumerate(part.layers):
                for q, a in arrays.items():
                    out[layer][q][part.start:part.stop] = a
            probs[part.start:part.stop] = part.probs
            indices[part.start:part.stop] = part.indices
            yield part.stop, T
    finally:
        chunks.close()
    return Replay(text=text, cell=cell, layers=out, probs=probs, indices=indices)


def replay(model: CharRNN, text: str, method: str = "forced") -> Replay:
    """Read ``text`` from a zero state and return every gate, state and output at every step.

    Computed from the module's own weights with PyTorch's gate order (i, f, g, o; r, z, n). Each
    layer's input projections W_ih x_t + b_ih for all T steps are one matrix product. ``method``:

    - ``"forced"`` (default, fast): the layer's module runs its own recurrence for h; then every gate at
      every step is one more matrix product over h_{t−1}, c follows by an elementwise loop and h is
      recomputed from the gates (it matches the module's h to float precision; a test checks it).
    - ``"loop"``: the whole recurrence step by step in Python, independent of the module's kernels.
    """
    return drive(replay_steps(model, text, method=method))


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
            if gate not in qs:  # a replay of some quantities only
                continue
            a = qs[gate]
            out[(layer, gate)] = np.stack([(a < low).mean(0), (a > high).mean(0)], axis=1).astype(np.float32)
    return out


def top_next_chars(probs_row: np.ndarray, vocab: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(-probs_row)[:k]
    return [(vocab[int(j)], float(probs_row[j])) for j in order]


