"""``deep-explorer lstm …`` end to end, through explorer.cli.main."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rnn_fixtures import QUOTE_TEXT, planted_quote_model, random_char_rnn

from explorer.cli import main
from explorer.core.rnn.model import load_char_rnn, save_char_rnn
from explorer.core.rnn.replay import replay


@pytest.fixture
def files(tmp_path):
    model = random_char_rnn("lstm", layers=2, hidden=10)
    save_char_rnn(model, tmp_path / "m.pt")
    save_char_rnn(planted_quote_model(), tmp_path / "q.pt")
    (tmp_path / "code.py").write_text(QUOTE_TEXT * 2)
    return tmp_path, model


def test_activations_npz_matches_the_replay_and_torch(files, capsys):
    tmp, model = files
    assert main(["lstm", "activations", "--model", str(tmp / "m.pt"), "--text", str(tmp / "code.py"),
                 "--out", str(tmp / "a.npz"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    text = QUOTE_TEXT * 2
    assert info["characters"] == len(text)
    with np.load(tmp / "a.npz") as z:
        names = set(z.files)
        assert names == {f"{q}{layer}" for q in "hcifgo" for layer in (0, 1)} | {"probs"}
        for name in names - {"probs"}:
            assert z[name].shape == (len(text), 10) and z[name].dtype == np.float32
        assert z["probs"].shape == (len(text), len(model.vocab))
        rep = replay(model, text)
        for q in "hcifgo":
            np.testing.assert_array_equal(z[f"{q}1"], rep.layers[1][q])
        with torch.no_grad():
            out, (h_n, c_n) = model.rnn(model.embed(model.encode(text)).unsqueeze(0))
        np.testing.assert_allclose(z["h1"], out[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(z["c0"][-1], c_n[0, 0].numpy(), atol=1e-5)
        np.testing.assert_allclose(z["probs"].sum(1), 1.0, atol=1e-5)


def test_cells_json_finds_the_planted_cell(files, capsys):
    tmp, _ = files
    assert main(["lstm", "cells", "--model", str(tmp / "q.pt"), "--text", str(tmp / "code.py"),
                 "--regex", r"print\(", "--top", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    best = data["indicators"]["string"]["cells"][0]
    assert (best["layer"], best["index"]) == (0, 0) and best["r"] > 0.95 and best["auroc"] > 0.99
    assert r"regex:print\(" in data["indicators"]
    assert len(data["indicators"]["indentation"]["cells"]) == 3


def test_cells_text_output(files, capsys):
    tmp, _ = files
    assert main(["lstm", "cells", "--model", str(tmp / "q.pt"), "--text", str(tmp / "code.py")]) == 0
    out = capsys.readouterr().out
    assert "string (inside a string literal):" in out and "AUROC" in out


@pytest.mark.parametrize("suffix", [".html", ".png"])
def test_render(files, capsys, suffix):
    tmp, _ = files
    out = tmp / f"page{suffix}"
    assert main(["lstm", "render", "--model", str(tmp / "q.pt"), "--text", str(tmp / "code.py"),
                 "--cell", "0:h:0", "--out", str(out)]) == 0
    assert out.stat().st_size > 500
    if suffix == ".html":
        page = out.read_text()
        assert "print(" in page and "background:#" in page
    else:
        from PIL import Image
        img = np.asarray(Image.open(out).convert("RGB"))
        reds = (img[..., 0] > 150) & (img[..., 2] < 100)
        blues = (img[..., 2] > 140) & (img[..., 0] < 100)
        assert reds.sum() > 100 and blues.sum() > 100  # strings on, code off


def test_select(files, capsys):
    tmp, _ = files
    start = QUOTE_TEXT.index('"hello')
    assert main(["lstm", "select", "--model", str(tmp / "q.pt"), "--text", str(tmp / "code.py"),
                 "--spans", f"{start}:{start + 12}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cells"][0]["cell"] == "0:h:0"
    assert any(m["text"].startswith('"bar') for m in data["matches"])


def test_sample(files, capsys):
    tmp, _ = files
    assert main(["lstm", "sample", "--model", str(tmp / "m.pt"), "--prime", "x = ", "--length", "30",
                 "--seed", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["text"]) == 30


def test_train_writes_a_loadable_model(tmp_path, capsys):
    (tmp_path / "a.py").write_text(QUOTE_TEXT * 8)
    (tmp_path / "b.py").write_text(QUOTE_TEXT * 3)
    out = tmp_path / "small.pt"
    assert main(["lstm", "train", "--text", str(tmp_path / "a.py"), "--heldout", str(tmp_path / "b.py"),
                 "--out", str(out), "--hidden", "16", "--epochs", "2", "--seq-len", "32", "--batch", "4",
                 "--threads", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model = load_char_rnn(out)
    assert model.config.hidden_size == 16 and data["heldout_bpc"] < np.log2(len(model.vocab))
    assert out.with_suffix(".pt.state").is_file()
    # --resume continues from the saved state rather than starting again
    assert main(["lstm", "train", "--text", str(tmp_path / "a.py"), "--out", str(out), "--hidden", "16",
                 "--epochs", "3", "--seq-len", "32", "--batch", "4", "--threads", "1", "--resume", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["steps"] > data["steps"]


def test_train_init_fine_tunes_an_existing_model(tmp_path, capsys):
    (tmp_path / "a.py").write_text(QUOTE_TEXT * 40)
    base = tmp_path / "base.pt"
    assert main(["lstm", "train", "--text", str(tmp_path / "a.py"), "--out", str(base), "--hidden", "16",
                 "--epochs", "15", "--seq-len", "32", "--batch", "4", "--threads", "1", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    short = ["--text", str(tmp_path / "a.py"), "--epochs", "0.2", "--seq-len", "32", "--batch", "4",
             "--threads", "1", "--hidden", "16", "--json"]
    assert main(["lstm", "train", *short, "--out", str(tmp_path / "fresh.pt")]) == 0
    fresh = json.loads(capsys.readouterr().out)
    # --hidden 99 is ignored: the architecture and vocabulary come from the initial model
    assert main(["lstm", "train", *short, "--hidden", "99", "--init", str(base),
                 "--out", str(tmp_path / "tuned.pt")]) == 0
    tuned = json.loads(capsys.readouterr().out)
    base_model, tuned_model = load_char_rnn(base), load_char_rnn(tmp_path / "tuned.pt")
    assert tuned_model.config == base_model.config and tuned_model.vocab == base_model.vocab
    assert tuned_model.info["initialised_from"] == str(base)
    # the fine-tuned run starts where the base model ended, far below a fresh start after the same steps
    assert tuned["steps"] == fresh["steps"]
    assert tuned["train_bpc"] < fresh["train_bpc"] - 0.5
    assert abs(tuned["train_bpc"] - trained["train_bpc"]) < 0.5


@pytest.mark.parametrize("argv, message", [
    (["lstm", "activations", "--model", "{tmp}/nope.pt", "--text", "{tmp}/code.py", "--out", "{tmp}/a.npz"],
     "no such model file"),
    (["lstm", "activations", "--model", "{tmp}/code.py", "--text", "{tmp}/code.py", "--out", "{tmp}/a.npz"],
     "not a readable torch checkpoint"),
    (["lstm", "render", "--model", "{tmp}/m.pt", "--text", "{tmp}/code.py", "--cell", "5:h:0",
      "--out", "{tmp}/x.html"], "no quantity"),
    (["lstm", "render", "--model", "{tmp}/m.pt", "--text", "{tmp}/code.py", "--cell", "0:h:0",
      "--out", "{tmp}/x.gif"], "must end in .html or .png"),
    (["lstm", "cells", "--model", "{tmp}/m.pt", "--text", "{tmp}/code.py", "--regex", "("],
     "bad regular expression"),
    (["lstm", "cells", "--model", "{tmp}/m.pt", "--text", "{tmp}/missing.py"], "cannot read"),
    (["lstm", "sample", "--model", "{tmp}/m.pt", "--temperature", "-1"], "temperature"),
])
def test_errors_are_one_line_and_non_zero(files, capsys, argv, message):
    tmp, _ = files
    code = main([a.format(tmp=tmp) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_train_resume_never_starts_afresh_over_a_file(tmp_path, capsys):
    """--resume on a garbage file, or with nothing to resume from, is one line; OUT is left as it was."""
    from explorer.cli import main

    text = tmp_path / "t.py"
    text.write_text("def f(x):\n    return x + 1\n" * 50)
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"\x00not a checkpoint\xff" * 100)
    before = garbage.read_bytes()
    assert main(["lstm", "train", "--text", str(text), "--out", str(garbage), "--resume", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume" in err[0] and "nothing was overwritten" in err[0]
    assert garbage.read_bytes() == before
    missing = tmp_path / "new.pt"
    assert main(["lstm", "train", "--text", str(text), "--out", str(missing), "--resume"]) == 2
    assert "nothing to resume from" in capsys.readouterr().err and not missing.exists()
