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


def replay_steps(model: CharRNN, text: str, chunk: int = 8192,
                 method: str = "forced") -> Generator[tuple[int, int], None, Replay]:
    """Generator form of :func:`replay`: yields ``(done, total)`` while working (``total`` counts
    characters × layers) and returns the :class:`Replay`. Close it to cancel."""
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
                yield layer * T + min(start + chunk, T), total
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
    return result


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
            a = qs[gate]
            out[(layer, gate)] = np.stack([(a < low).mean(0), (a > high).mean(0)], axis=1).astype(np.float32)
    return out


def top_next_chars(probs_row: np.ndarray, vocab: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(-probs_row)[:k]
    return [(vocab[int(j)], float(probs_row[j])) for j in order]


