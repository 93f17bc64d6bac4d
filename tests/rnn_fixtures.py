"""Small char-RNNs for the tests: random ones, and one with a planted quote cell."""
from __future__ import annotations

import torch

from explorer.core.rnn.model import CharRNN, CharRNNConfig

VOCAB = list("\n \"#'()+,.:=[]_abcdefghijklmnopqrstuvwxyz0123456789")
QUOTE_TEXT = ('x = "abc" + y\nprint("hello world", z)\nname = "q" if a else b\n'
              'call(foo, "bar baz")\nk = 1\ns = "end"\n')


def random_char_rnn(cell: str = "lstm", layers: int = 2, hidden: int = 16, embedding: int | None = 8,
                    seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    model = CharRNN(VOCAB, CharRNNConfig(cell, layers, hidden, embedding))
    with torch.no_grad():  # larger than default weights so that gates move over their whole range
        for p in model.rnn.parameters():
            p.mul_(3.0)
    return model.eval()


def planted_quote_model(hidden: int = 6, seed: int = 1) -> CharRNN:
    """A one-layer one-hot LSTM whose cell 0 flips at every double quote: c ≈ +1 inside strings, −1 out.

    On a quote: i = 1, f = 0, g = tanh(−20 h_{t−1} + 5), so the new c is the opposite of the old one
    (and +1 from the zero start); elsewhere i = 0, f = 1 and c is kept. o = 1 throughout. The other cells
    get small random weights.
    """
    torch.manual_seed(seed)
    model = CharRNN(VOCAB, CharRNNConfig("lstm", 1, hidden, None))
    H, V = hidden, len(VOCAB)
    q = VOCAB.index('"')
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.mul_(0.5)
        w_ih, w_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0
        b_ih, b_hh = model.rnn.bias_ih_l0, model.rnn.bias_hh_l0
        rows = {"i": 0, "f": H, "g": 2 * H, "o": 3 * H}
        for gate in rows.values():
            w_ih[gate].zero_()
            w_hh[gate].zero_()
            b_ih[gate] = 0
            b_hh[gate] = 0
        w_ih[rows["i"]] = -10.0
        w_ih[rows["i"], q] = 10.0
        w_ih[rows["f"]] = 10.0
        w_ih[rows["f"], q] = -10.0
        w_hh[rows["g"], 0] = -20.0
        b_ih[rows["g"]] = 5.0
        b_ih[rows["o"]] = 10.0
        assert V == w_ih.shape[1]
    return model.eval()
