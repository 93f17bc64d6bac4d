"""The cost table: the cs231n VGG16 slide, GoogLeNet's blocks, the counting rule, and the training estimate."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from explorer.core.costs import block_params, cost_table

ROOT = Path(__file__).resolve().parents[1]

# cs231n lecture 9's VGG16 walk-through: the activation count of every layer (the ReLUs are folded in)
VGG16_SLIDE = ([224 * 224 * 64] * 2 + [112 * 112 * 64] + [112 * 112 * 128] * 2 + [56 * 56 * 128]
               + [56 * 56 * 256] * 3 + [28 * 28 * 256] + [28 * 28 * 512] * 3 + [14 * 14 * 512]
               + [14 * 14 * 512] * 3 + [7 * 7 * 512] + [4096, 4096, 1000])
# the slide's weights per conv / fc layer (biases not counted there)
VGG16_SLIDE_WEIGHTS = ([3 * 3 * 3 * 64, 3 * 3 * 64 * 64, 3 * 3 * 64 * 128, 3 * 3 * 128 * 128, 3 * 3 * 128 * 256]
                       + [3 * 3 * 256 * 256] * 2 + [3 * 3 * 256 * 512] + [3 * 3 * 512 * 512] * 5
                       + [7 * 7 * 512 * 4096, 4096 * 4096, 4096 * 1000])


@pytest.fixture(scope="module")
def vgg16_table():
    return cost_table(torchvision.models.vgg16(weights=None).eval(), (3, 224, 224))


def test_vgg16_every_layer_matches_the_slide(vgg16_table):
    rows = [r for r in vgg16_table.rows if r.type in ("Conv2d", "MaxPool2d", "Linear")]
    assert [r.activations for r in rows] == VGG16_SLIDE
    assert rows[0].activations == 3_211_264
    weighted = [r for r in rows if r.params]
    biases = [r.output_shape[0] for r in weighted]
    assert [r.params - b for r, b in zip(weighted, biases)] == VGG16_SLIDE_WEIGHTS
    assert vgg16_table.params == 138_357_544
    assert vgg16_table.rows[0].name == "input" and vgg16_table.rows[0].activations == 224 * 224 * 3


def test_vgg16_totals_are_the_slides_layers_plus_the_adaptive_pool(vgg16_table):
    """The slide's per-layer values sum to 15.2M (with the input), not the 24M it prints; we count the
    same layers plus torchvision's AdaptiveAvgPool2d (7x7x512), and no in-place ReLU or Dropout."""
    slide_sum = 224 * 224 * 3 + sum(VGG16_SLIDE)
    assert slide_sum == 15_237_608
    extra = [r for r in vgg16_table.rows if r.activations and r.type not in ("Conv2d", "MaxPool2d", "Linear", "input")]
    assert [(r.name, r.activations) for r in extra] == [("avgpool", 7 * 7 * 512)]
    assert vgg16_table.activations == slide_sum + 7 * 7 * 512
    assert vgg16_table.activation_bytes == 4 * vgg16_table.activations
    # memory early, parameters late
    conv_rows = [r for r in vgg16_table.rows if r.type == "Conv2d"]
    fc_rows = [r for r in vgg16_table.rows if r.type == "Linear"]
    assert sum(r.activations for r in conv_rows[:4]) > 0.5 * vgg16_table.activations
    assert sum(r.params for r in fc_rows) > 0.85 * vgg16_table.params


def test_batch_multiplies_activations_and_macs_not_params():
    model = torchvision.models.alexnet(weights=None).eval()
    one, four = cost_table(model, (3, 224, 224)), cost_table(model, (3, 224, 224), batch=4)
    assert four.activations == 4 * one.activations and four.macs == 4 * one.macs
    assert four.params == one.params and one.totals()["flops"] == 2 * one.macs


# GoogLeNet (Szegedy et al. 2014, Table 1): #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, input channels
GOOGLENET_TABLE = {"inception3a": (64, 96, 128, 16, 32, 32, 192), "inception3b": (128, 128, 192, 32, 96, 64, 256),
                   "inception4a": (192, 96, 208, 16, 48, 64, 480), "inception4b": (160, 112, 224, 24, 64, 64, 512),
                   "inception4c": (128, 128, 256, 24, 64, 64, 512), "inception4d": (112, 144, 288, 32, 64, 64, 512),
                   "inception4e": (256, 160, 320, 32, 128, 128, 528),
                   "inception5a": (256, 160, 320, 32, 128, 128, 832),
                   "inception5b": (384, 192, 384, 48, 128, 128, 832)}
GOOGLENET_SLIDE_K = {"inception3a": 159, "inception3b": 380, "inception4a": 364, "inception4b": 437,
                     "inception4c": 463, "inception4d": 580, "inception4e": 840, "inception5a": 1072,
                     "inception5b": 1388}


def test_googlenet_block_params_follow_the_papers_filter_counts():
    """torchvision's GoogLeNet uses a 3x3 kernel in the "5x5" branch (and BatchNorm): with that branch
    made 5x5 as in the paper, each block's parameters are the paper's filter counts' weights plus
    BatchNorm's 2 per channel. Those weights are within 5 % of the table's printed #params, except
    inception4c, whose own columns give 509K where the table prints 463K (the table's inconsistency)."""
    g = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    for name, (c1, r3, c3, r5, c5, pp, cin) in GOOGLENET_TABLE.items():
        block = g.get_submodule(name)
        conv = block.branch3[1].conv
        block.branch3[1].conv = nn.Conv2d(conv.in_channels, conv.out_channels, 5, padding=2, bias=False)
        weights = cin * c1 + cin * r3 + 9 * r3 * c3 + cin * r5 + 25 * r5 * c5 + cin * pp
        batchnorm = 2 * (c1 + r3 + c3 + r5 + c5 + pp)
        assert block_params(g, name) == weights + batchnorm, name
        if name == "inception4c":
            assert weights == 509_440
        else:
            assert abs(weights / 1000 - GOOGLENET_SLIDE_K[name]) <= 0.05 * GOOGLENET_SLIDE_K[name], name


def test_counting_rule_in_place_and_views_add_nothing_reuse_counts_each_call():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.inplace = nn.ReLU(inplace=True)
            self.copy = nn.ReLU()
            self.flat = nn.Flatten()
            self.reused = nn.Tanh()

        def forward(self, x):
            x = self.copy(self.inplace(self.conv(x)))
            return self.reused(self.reused(self.flat(x)))

    rows = {r.name: r for r in cost_table(Net().eval(), (3, 8, 8)).rows}
    n = 4 * 8 * 8
    assert rows["conv"].activations == n and rows["inplace"].activations == 0 and rows["inplace"].shares_input
    assert rows["copy"].activations == n and rows["flat"].activations == 0
    assert rows["reused"].activations == 2 * n and rows["reused"].calls == 2


@pytest.mark.parametrize("arch, batch, size, optimizer", [("alexnet", 8, 224, "momentum"),
                                                           ("vgg11", 2, 128, "momentum")])
def test_training_estimate_within_20_percent_of_a_measured_step(arch, batch, size, optimizer):
    """The measured peak (VmHWM of the child: ru_maxrss would carry pytest's own size across execve, which
    is what made this fail inside the full suite) is what was alive plus whatever the allocator kept (it
    only adds), so the smallest of up to three measurements counts."""
    # a clean environment: what earlier tests left in os.environ must not change the allocator or torch
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}  # peak = what was alive
    outputs = []
    for _ in range(3):
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step_memory.py"), arch, str(batch),
                            str(size), optimizer], capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        outputs.append(r.stdout.strip())
        ratio = float(r.stdout.split("ratio")[1])  # estimate / measured: the smallest measurement, the largest ratio
        if ratio >= 0.8:
            break
    assert 0.8 <= ratio <= 1.2, outputs


def test_csv_has_a_row_per_layer_and_the_totals():
    table = cost_table(torchvision.models.alexnet(weights=None).eval(), (3, 224, 224), batch=2)
    lines = table.to_csv().strip().splitlines()
    assert lines[0].startswith("name,type,output_shape,activations") and len(lines) == len(table.rows) + 2
    assert lines[-1].split(",")[3] == str(table.activations)


def test_layers_command_prints_the_cost_columns_totals_and_csv(tmp_path, capsys):
    import json

    from explorer.cli import main
    from explorer.core.models import load_model

    out = tmp_path / "costs.csv"
    assert main(["layers", "--model", "alexnet", "--weights", "none", "--batch", "2", "--csv", str(out),
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    loaded = load_model("alexnet", weights="none")
    expected = cost_table(loaded.module, loaded.spec.shape, batch=2)
    assert data["batch"] == 2 and data["totals"] == json.loads(json.dumps(expected.totals()))
    conv = next(d for d in data["layers"] if d["name"] == "features.0")
    assert conv["activations"] == 2 * 64 * 55 * 55 and conv["flops"] == 2 * conv["macs"]
    assert next(d for d in data["layers"] if d["name"] == "features.1")["activations"] == 0  # in-place ReLU
    assert out.read_text().splitlines()[-1].startswith("total,")
    assert main(["layers", "--csv", str(tmp_path)]) == 2  # a folder: refused before the work
    assert "it is a folder" in capsys.readouterr().err
