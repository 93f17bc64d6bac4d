"""The command line end to end: layer table, predictions, activations; one-line errors, exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.cli import main
from explorer.core.models import load_model
from explorer.core.resources import RESOURCES
from explorer.core.preprocess import load_input
from explorer.core.probe import run_forward

SAMPLES = RESOURCES / "images"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_layers_json_has_alexnet_figures(capsys):
    code, out, _ = run_cli(capsys, "layers", "--model", "alexnet", "--json")
    assert code == 0
    data = json.loads(out)
    rows = {r["name"]: r for r in data["layers"]}
    assert rows["features.0"]["params"] == 23_296
    assert rows["features.0"]["output_shape"] == [64, 55, 55]
    assert rows["features.0"]["macs"] == 70_276_800
    assert data["total_params"] == 61_100_840


def test_layers_follows_input_size(capsys):
    code, out, _ = run_cli(capsys, "layers", "--model", "resnet18", "--input-size", "64x96", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["layers"]}
    assert rows["conv1"]["output_shape"] == [64, 32, 48]


def test_predict_json_matches_an_independent_forward(capsys):
    images = [SAMPLES / "chelsea.jpg", SAMPLES / "coffee.jpg"]
    code, out, _ = run_cli(capsys, "predict", "--model", "resnet18", "--weights", "none", "--input",
                           *map(str, images), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["trained"] is False and len(data["predictions"]) == 2
    for pred in data["predictions"]:
        probs = [t["probability"] for t in pred["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0


def test_predict_with_the_bundled_model_names_the_shapes(capsys):
    files = sorted(SAMPLES.glob("000*_*.png"))
    code, out, _ = run_cli(capsys, "predict", "--input", str(SAMPLES), "--json")
    assert code == 0
    by_name = {Path(p["input"]).name: p["top"][0]["label"] for p in json.loads(out)["predictions"]}
    hits = sum(by_name[f.name] == f.stem.split("_", 1)[1] for f in files)
    assert hits >= len(files) - 1


def test_activations_saved_equal_a_forward_with_hooks(capsys, tmp_path):
    out_npy, out_png = tmp_path / "a.npy", tmp_path / "grid.png"
    image = SAMPLES / "0004_star.png"
    code, out, _ = run_cli(capsys, "activations", "--input", str(image), "--layer", "features.relu2",
                           "--out", str(out_npy), "--png", str(out_png), "--json")
    assert code == 0
    saved = np.load(out_npy)
    loaded = load_model("shapes")
    x, _ = load_input(image, loaded.spec)
    expected = run_forward(loaded.module, x, ["features.relu2"]).activations["features.relu2"][0]
    np.testing.assert_allclose(saved, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert saved.dtype == np.float32 and json.loads(out)["shape"] == list(saved.shape)
    assert Image.open(out_png).size[0] >= 512


def test_npy_input_is_accepted(capsys, tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 128, 128)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run_cli(capsys, "predict", "--input", str(tmp_path / "x.npy"), "--json")
    assert code == 0
    loaded = load_model("shapes")
    expected = torch.softmax(loaded.module(torch.from_numpy(x)[None]), 1).max().item()
    assert abs(json.loads(out)["predictions"][0]["top"][0]["probability"] - expected) < 1e-5


@pytest.mark.parametrize("argv, fragment", [
    (["predict", "--input", "MISSING.png"], "no such file"),
    (["activations", "--input", "IMG", "--layer", "nope", "--out", "o.npy"], "no layer named 'nope'"),
    (["layers", "--model", "resnet19"], "unknown model"),
    (["layers", "--model", "resnet18", "--mean", "1,2"], "mean has 2 values"),
    (["layers", "--device", "gpu7"], "unknown device 'gpu7'"),
])
def test_bad_input_is_one_line_and_nonzero(capsys, tmp_path, argv, fragment):
    argv = [str(SAMPLES / "0001_circle.png") if a == "IMG" else a for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code != 0
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unreadable_image_fails_cleanly_in_a_subprocess(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00" * 100)
    result = subprocess.run([sys.executable, "-m", "explorer", "predict", "--input", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "bad.jpg is not an image" in result.stderr and "Traceback" not in result.stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch.hub cache and a weights mirror nobody answers at."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("DEEP_EXPLORER_WEIGHTS_URL", f"http://127.0.0.1:{_closed_port()}/")


def test_offline_pretrained_is_one_line_suggesting_weights_none(capsys, offline_hub):
    code, _, err = run_cli(capsys, "predict", "--model", "squeezenet1_1", "--input",
                           str(SAMPLES / "chelsea.jpg"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--weights none" in lines[0] and "squeezenet1_1" in lines[0]


def test_layers_never_downloads(capsys, offline_hub):
    code, out, _ = run_cli(capsys, "layers", "--model", "squeezenet1_1", "--json")
    assert code == 0 and json.loads(out)["model"]["name"] == "squeezenet1_1"


def test_download_shows_a_progress_bar_then_predicts(capsys, tmp_path, monkeypatch):
    import functools
    import hashlib
    import http.server
    import io
    import threading

    import torchvision

    from explorer.core.models import build_zoo_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    torch.manual_seed(0)
    reference = build_zoo_model("squeezenet1_1").eval()
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    data = buffer.getvalue()
    name = f"squeezenet1_1-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    served = tmp_path / "served"
    served.mkdir()
    (served / name).write_bytes(data)
    enum = torchvision.models.get_model_weights("squeezenet1_1").DEFAULT
    monkeypatch.setattr(enum.value, "url", f"https://download.pytorch.org/models/{name}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("DEEP_EXPLORER_WEIGHTS_URL", f"http://127.0.0.1:{httpd.server_address[1]}/")
        code, out, err = run_cli(capsys, "predict", "--model", "squeezenet1_1", "--input",
                                 str(SAMPLES / "coffee.jpg"), "--json")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert code == 0
    assert "downloading weights" in err and "100.0%" in err
    data = json.loads(out)
    assert data["trained"] is True
    x, _ = load_input(SAMPLES / "coffee.jpg", load_model("squeezenet1_1", weights="none").spec)
    with torch.no_grad():
        best = int(reference(x).argmax())
    assert data["predictions"][0]["top"][0]["index"] == best
