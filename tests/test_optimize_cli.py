"""``deep-explorer visualize``, ``dream`` and ``invert`` end to end, in process."""
from __future__ import annotations

import json

from PIL import Image

from explorer.cli import main
from explorer.core.resources import SAMPLE_IMAGES

STAR = str(SAMPLE_IMAGES / "0004_star.png")


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_visualize_class_and_unit(tmp_path, capsys):
    out = tmp_path / "star.png"
    assert main(["visualize", "--target", "star", "--method", "simonyan", "--steps", "5", "--out", str(out),
                 "--json"]) == 0
    data = _json(capsys)
    assert data["method"] == "simonyan" and data["target"].startswith("class 3 (star)")
    assert isinstance(data["objective"], float) and 0 <= data["probabilities"][0] <= 1
    assert Image.open(out).size == (128, 128)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["settings"]["steps"] == 5 and sidecar["settings"]["lr"] == 1e4
    out2 = tmp_path / "unit.png"
    assert main(["visualize", "--layer", "features.relu3", "--unit", "2", "--steps", "3", "--seed", "4",
                 "--out", str(out2), "--json"]) == 0
    data = _json(capsys)
    assert data["method"] == "fourier" and data["settings"]["seed"] == 4


def test_dream_and_invert(tmp_path, capsys):
    out = tmp_path / "dream.png"
    assert main(["dream", "--input", STAR, "--layer", "features.relu2", "--octaves", "2", "--steps", "2",
                 "--out", str(out), "--json"]) == 0
    data = _json(capsys)
    assert len(data["octaves"]) == 2 and Image.open(out).size == (128, 128)
    out = tmp_path / "inv.png"
    assert main(["invert", "--input", STAR, "--layer", "features.conv1", "features.relu2", "--steps", "3",
                 "--out", str(out), "--json"]) == 0
    data = _json(capsys)
    assert data["representation_error"] == data["layers"][-1]["representation_error"] > 0
    assert Image.open(out).size == (3 * 128 + 8, 128)


def test_bad_input_is_one_line_before_any_work(tmp_path, capsys):
    assert main(["visualize", "--layer", "features.relu3", "--out", str(tmp_path / "a.png")]) == 2
    assert "--unit" in capsys.readouterr().err
    assert main(["visualize", "--target", "0", "--out", str(tmp_path / "a.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ".png" in err
    assert main(["visualize", "--target", "0", "--preset", "2", "--decay", "2", "--out",
                 str(tmp_path / "a.png")]) == 2
    assert "decay" in capsys.readouterr().err
    assert main(["dream", "--input", STAR, "--layer", "nope", "--out", str(tmp_path / "d.png")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))
