"""``deep-explorer attribute`` and ``bench attribution`` end to end, in process."""
from __future__ import annotations

import importlib
import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from explorer.cli import main
from explorer.core.models.shapes_data import generate_shape

MODEL = ["--model", "resnet18", "--weights", "none", "--input-size", "32", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _checkpoint_module(monkeypatch):
    """load_model imports explorer.core.models.checkpoint, which lives on another branch until it is merged."""
    try:
        importlib.import_module("explorer.core.models.checkpoint")
    except ModuleNotFoundError:
        stub = types.ModuleType("explorer.core.models.checkpoint")
        stub.load_checkpoint = lambda *a, **k: None
        monkeypatch.setitem(sys.modules, "explorer.core.models.checkpoint", stub)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("0001_star", "0002_ring"):
        Image.fromarray(generate_shape(rng).image).save(folder / f"{name}.png")
    return folder


@pytest.mark.parametrize("method,shape", [("occlusion", (3, 32, 32)), ("gradient", (3, 32, 32)),
                                          ("deconvnet", (3, 32, 32)), ("guided-backprop", (3, 32, 32)),
                                          ("gradcam", (32, 32)), ("guided-gradcam", (3, 32, 32))])
def test_attribute_writes_a_float32_map_of_the_documented_shape(method, shape, images, tmp_path, capsys):
    out, png = tmp_path / "map.npy", tmp_path / "overlay.png"
    rc = main(["attribute", *MODEL, "--input", str(images / "0001_star.png"), "--method", method,
               "--target", "3", "--window", "8", "--stride", "8", "--out", str(out), "--png", str(png), "--json"])
    assert rc == 0
    arr = np.load(out)
    assert arr.dtype == np.float32 and arr.shape == shape and np.isfinite(arr).all()
    assert Image.open(png).size == (32, 32)
    record = json.loads(capsys.readouterr().out)["results"][0]
    assert record["class_index"] == 3 and record["shape"] == list(shape)


def test_attribute_on_a_folder_writes_one_map_per_input_stem(images, tmp_path):
    out = tmp_path / "maps"
    rc = main(["attribute", *MODEL, "--input", str(images), "--method", "guided-backprop",
               "--layer", "layer1.0.conv1", "--unit", "2", "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["0001_star.npy", "0002_ring.npy"]
    assert np.load(out / "0002_ring.npy").shape == (3, 32, 32)


def test_attribute_errors_are_one_line_with_nonzero_status(images, tmp_path, capsys):
    rc = main(["attribute", *MODEL, "--input", str(images), "--out", str(tmp_path / "one.npy")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "folder" in err
    rc = main(["attribute", *MODEL, "--input", str(images / "0001_star.png"), "--target", "not-a-label",
               "--out", str(tmp_path / "m.npy")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "not-a-label" in err
    rc = main(["attribute", *MODEL, "--input", str(images / "0001_star.png"), "--layer", "nope", "--unit", "1",
               "--out", str(tmp_path / "m.npy")])
    assert rc == 2 and "nope" in capsys.readouterr().err


def test_bench_attribution_reports_both_times_and_the_difference(capsys):
    rc = main(["bench", "attribution", *MODEL, "--window", "16", "--stride", "16", "--grad-repeat", "1",
               "--json"])
    assert rc == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert set(rows) == {"occlusion", "guided-backprop", "deconvnet"}
    for r in rows.values():
        assert r["ours_s"] > 0 and r["baseline_s"] > 0 and r["max_rel_diff"] < 1e-4
    assert rows["guided-backprop"]["cost_vs_gradient"] > 0


def test_bench_subcommands_are_registrable():
    from explorer import cli
    from explorer.cli import bench

    seen = []
    bench.BENCHES["dummy"] = ("a dummy", "", lambda p: p.set_defaults(func=lambda a: seen.append(a.bench_command)))
    try:
        assert main(["bench", "dummy"]) == 0 and seen == ["dummy"]
    finally:
        del bench.BENCHES["dummy"]
    assert {"attribution", "live"} <= set(bench.BENCHES) and bench in cli.SUBCOMMANDS
