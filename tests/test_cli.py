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
from explorer.core.models import RESOURCES, load_model
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
    (["layers", "--model", "resnet18", "--mean", "1,2"], "--mean has 2 values"),
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
