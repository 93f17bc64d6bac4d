"""Long texts: the streamed replay and the streamed cell search equal the whole-text ones (and
nn.LSTM), and what cannot fit in memory is refused with one line before anything big is allocated."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rnn_fixtures import QUOTE_TEXT, planted_quote_model, random_char_rnn

from explorer.cli import main
from explorer.core.rnn import memory
from explorer.core.rnn.cells import (analysis_bytes, analyse_text_steps, auroc_columns, cell_search,
                                     cell_search_steps, indicator_sequences, kept_characters)
from explorer.core.rnn.model import QUANTITIES, save_char_rnn
from explorer.core.rnn.replay import replay, replay_chunks
from explorer.core.steps import drive

TEXT = QUOTE_TEXT * 6 + "# a comment\ndef f(x):\n    '''doc\n    string'''\n    return [x, (1, 2)]\n"


def _exact_auroc(values: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = values[labels], values[~labels]
    diff = pos[:, None].astype(np.float64) - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@pytest.mark.parametrize("method", ["forced", "loop"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_streamed_replay_equals_the_whole_text_replay_across_chunks(cell, method):
    model = random_char_rnn(cell, layers=2, hidden=9)
    whole = replay(model, TEXT, method=method)
    parts = list(replay_chunks(model, TEXT, chunk=97, method=method))
    assert len(parts) == -(-len(TEXT) // 97) > 3
    assert [p.start for p in parts] == list(range(0, len(TEXT), 97)) and parts[-1].stop == len(TEXT)
    for layer in range(2):
        for q in QUANTITIES[cell]:
            streamed = np.concatenate([p.layers[layer][q] for p in parts])
            assert streamed.dtype == np.float32
            # (the loop's float32 rounding differs in the last bit with the chunking, amplified by the
            # recurrence of these deliberately large weights)
            np.testing.assert_allclose(streamed, whole.layers[layer][q], atol=1e-6 if method == "forced" else 1e-5)
    np.testing.assert_allclose(np.concatenate([p.probs for p in parts]), whole.probs, atol=1e-6)
    targets = np.concatenate([p.targets for p in parts])
    np.testing.assert_array_equal(targets[:-1], whole.indices[1:])
    assert targets[-1] == -1
    # and the module's own outputs, after many chunk boundaries
    with torch.no_grad():
        out, state = model.rnn(model.embed(model.encode(TEXT)).unsqueeze(0))
    np.testing.assert_allclose(np.concatenate([p.layers[1]["h"] for p in parts]), out[0].numpy(), atol=1e-5)
    if cell == "lstm":
        np.testing.assert_allclose(parts[-1].layers[0]["c"][-1], state[1][0, 0].numpy(), atol=1e-5)


def test_streamed_replay_keeps_only_what_is_asked_for():
    model = random_char_rnn("lstm", layers=2, hidden=6)
    parts = list(replay_chunks(model, TEXT, chunk=50, quantities=("h", "c"), layers=(1,), probs=False))
    assert all(p.layers[0] == {} and set(p.layers[1]) == {"h", "c"} and p.probs is None for p in parts)
    whole = replay(model, TEXT)
    np.testing.assert_allclose(np.concatenate([p.layers[1]["c"] for p in parts]), whole.layers[1]["c"], atol=1e-6)


@pytest.mark.parametrize("make", [lambda: random_char_rnn("lstm", layers=2, hidden=12), planted_quote_model,
                                  lambda: random_char_rnn("gru", layers=1, hidden=10)])
def test_streamed_search_equals_the_full_search(make):
    model = make()
    rep = replay(model, TEXT)
    ind = indicator_sequences(TEXT, [r"print\("])
    full = cell_search(rep, ind, top=4)
    # the histogram AUROC is the pairwise definition's to the bin resolution
    rs = np.random.default_rng(0)
    vals = rs.normal(size=3000).astype(np.float32)
    labels = rs.random(3000) < 0.3
    vals[labels] += 0.7
    from explorer.core.rnn.cells import _Histograms
    hist = _Histograms(1, 4096, 2)
    for a in range(0, 3000, 97):
        hist.add(vals[a:a + 97, None], hist.base(labels[a:a + 97].astype(np.int32)))
    assert abs(hist.auroc(0, np.array([False, True])) - _exact_auroc(vals, labels)) < 1e-3
    # one chunk and the same bins: the same ranking and figures
    one = drive(cell_search_steps(model, TEXT, ind, top=4, chunk=len(TEXT), bins=4096))
    assert abs(one.bits_per_char - rep.bits_per_char()) < 1e-6
    for name, cells in full.items():
        got = one.search[name]
        assert [c.cell for c in got] == [c.cell for c in cells], name
        for a, b in zip(got, cells):
            assert abs(a.r - b.r) < 1e-5
            assert (a.auroc is None) == (b.auroc is None)
            if a.auroc is not None:
                assert abs(a.auroc - b.auroc) < 2 / 4096  # the same bins, up to float32 rounding of edges
    # many chunks: r exact to float64 (the full search's float32 sums are only within 1e-5),
    # AUROC within the resolution of its histograms
    many = drive(cell_search_steps(model, TEXT, ind, top=4, chunk=97, bins=4096))
    for name, cells in many.search.items():
        y = np.asarray(ind[name].values, dtype=np.float64)
        assert {c.cell for c in cells[:1]} <= {c.cell for c in full[name]} or cells[0].score < 1e-3
        for c in cells:
            a = rep.layers[c.cell.layer][c.cell.quantity][:, c.cell.index].astype(np.float64)
            if a.std() > 1e-4 and y.std() > 0:
                assert abs(c.r - np.corrcoef(a, y)[0, 1]) < 1e-6
            if c.auroc is not None:  # the full search's binned figure (values closer than a bin tie in both)
                assert abs(c.auroc - auroc_columns(a[:, None], y)[0]) < 4e-3


def test_streamed_search_refuses_what_cannot_fit(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 10_000)
    with pytest.raises(memory.NotEnoughMemory, match="needs about .* of memory, but only"):
        drive(cell_search_steps(random_char_rnn(), TEXT))
    with pytest.raises(memory.NotEnoughMemory, match="characters fit"):
        drive(analyse_text_steps(random_char_rnn(), TEXT))


def test_a_text_too_long_to_keep_keeps_a_prefix_and_searches_all_of_it():
    model = random_char_rnn("lstm", layers=2, hidden=9)
    text = TEXT * 8
    assert len(text) > 3000
    limit = analysis_bytes(model, 1200)
    kept = kept_characters(model, len(text), max_bytes=limit)
    assert 1000 <= kept <= 1200 and analysis_bytes(model, kept) <= limit < analysis_bytes(model, kept + 1)
    steps = []
    result = drive(analyse_text_steps(model, text, max_bytes=limit), steps.append)
    assert result.truncated and result.length == len(text) and result.replay.length == kept
    assert result.replay.text == text[:kept]
    prefix = replay(model, text[:kept])  # the kept gates are the prefix's own
    for layer in range(2):
        for q in QUANTITIES["lstm"]:
            np.testing.assert_array_equal(result.replay.layers[layer][q], prefix.layers[layer][q])
    # the ranking covers the whole text: the streamed search's, not the prefix's
    whole = drive(cell_search_steps(model, text, indicator_sequences(text))).search
    assert {k: [c.to_dict() for c in v] for k, v in result.search.items()} == \
        {k: [c.to_dict() for c in v] for k, v in whole.items()}
    assert len(next(iter(result.indicators.values())).values) == len(text)
    done = [d for d, _ in steps]
    assert done == sorted(done) and steps[-1] == (kept + len(text), kept + len(text))
    # a text that fits is kept whole
    assert kept_characters(model, len(TEXT), max_bytes=analysis_bytes(model, len(TEXT))) == len(TEXT)


@pytest.fixture
def files(tmp_path):
    save_char_rnn(random_char_rnn("lstm", layers=2, hidden=10), tmp_path / "m.pt")
    save_char_rnn(planted_quote_model(), tmp_path / "q.pt")
    (tmp_path / "code.py").write_text(QUOTE_TEXT * 2)
    return tmp_path


@pytest.mark.parametrize("command", ["activations", "cells"])
def test_cli_refuses_what_cannot_fit_in_one_line(files, capsys, monkeypatch, command):
    monkeypatch.setattr(memory, "available_bytes", lambda: 50_000)
    argv = ["lstm", command, "--model", str(files / "m.pt"), "--text", str(files / "code.py")]
    if command == "activations":
        argv += ["--out", str(files / "a.npz")]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "of memory, but only" in err and "--quantities" in err
    assert not (files / "a.npz").exists()


def test_cli_activations_writes_only_the_chosen_quantities_and_layers(files, capsys):
    assert main(["lstm", "activations", "--model", str(files / "m.pt"), "--text", str(files / "code.py"),
                 "--out", str(files / "a.npz"), "--quantities", "h,c", "--layers", "1", "--json"]) == 0
    json.loads(capsys.readouterr().out)
    with np.load(files / "a.npz") as z:
        assert set(z.files) == {"h1", "c1", "probs"}


def test_cli_cells_on_a_few_hundred_kb(files, capsys):
    text = QUOTE_TEXT * 3000  # ~300 KB
    (files / "long.py").write_text(text)
    assert main(["lstm", "cells", "--model", str(files / "q.pt"), "--text", str(files / "long.py"),
                 "--top", "2", "--quantities", "c", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["characters"] == len(text)
    best = data["indicators"]["string"]["cells"][0]
    assert (best["layer"], best["quantity"], best["index"]) == (0, "c", 0)
    assert best["r"] > 0.95 and best["auroc"] > 0.99
