"""Layer table figures against published counts and a naive formula; activation capture is exact."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from explorer.core.probe import capture, layer_table, run_forward, top_k


def test_alexnet_conv1_matches_published_figures():
    model = torchvision.models.alexnet(weights=None).eval()
    rows = {r.name: r for r in layer_table(model, (3, 224, 224))}
    conv1 = rows["features.0"]
    assert conv1.params == 23_296
    assert conv1.output_shape == (64, 55, 55)
    assert conv1.macs == 70_276_800
    assert rows["classifier.6"].macs == 4096 * 1000


def test_vgg16_parameter_total():
    with torch.device("meta"):
        model = torchvision.models.vgg16(weights=None)
    assert sum(r.params for r in layer_table(model.to_empty(device="cpu").eval(), (3, 32, 32))) == 138_357_544


def naive_conv_macs(conv: nn.Conv2d, out_hw: tuple[int, int]) -> int:
    macs = 0
    for _ in range(conv.out_channels):
        for _ in range(out_hw[0] * out_hw[1]):
            macs += conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    return macs


def test_macs_of_strided_grouped_conv_match_a_naive_count():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 5 * 5, 3)).eval()
    rows = {r.name: r for r in layer_table(model, (4, 10, 10))}
    assert rows["0"].macs == naive_conv_macs(model[0], (5, 5))
    assert rows["3"].macs == 8 * 5 * 5 * 3
    assert rows["1"].macs == 0


def test_module_called_twice_counts_both_calls():
    conv = nn.Conv2d(3, 3, 3, padding=1)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(self.conv(x))

    rows = {r.name: r for r in layer_table(Twice().eval(), (3, 8, 8))}
    assert rows["conv"].calls == 2
    assert rows["conv"].macs == 2 * 3 * 64 * 27


def test_capture_keeps_conv_output_although_relu_is_in_place():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True)).eval()
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad(), capture(model, ["0", "1"]) as store:
        model(x)
    expected = nn.functional.conv2d(x, model[0].weight, model[0].bias)
    torch.testing.assert_close(store["0"], expected)
    torch.testing.assert_close(store["1"], expected.clamp_min(0))
    assert (store["0"] < 0).any()


def test_capture_removes_its_hooks():
    model = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    with capture(model, ["0"]):
        assert len(model[0]._forward_hooks) == 1
    assert len(model[0]._forward_hooks) == 0


def test_top_k_orders_softmax_probabilities():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    top = top_k(logits, ["a", "b", "c", "d"], k=3)
    assert [t["label"] for t in top] == ["b", "d", "c"]
    probs = torch.softmax(logits[0], 0)
    assert abs(top[0]["probability"] - float(probs[1])) < 1e-6


def test_run_forward_returns_logits_and_requested_activation_only():
    model = torchvision.models.resnet18(weights=None).eval()
    out = run_forward(model, torch.zeros(1, 3, 64, 64), ["layer1"])
    assert out.logits.shape == (1, 1000)
    assert set(out.activations) == {"layer1"}
    assert out.activations["layer1"].shape == (1, 64, 16, 16)


@pytest.mark.parametrize("arch, expected", [("resnet18", "relu"), ("vgg11", "features.1"), ("alexnet", "features.1")])
def test_one_default_layer_rule_for_the_table_and_the_live_view(arch, expected):
    from explorer.core.live import default_layer as live_default
    from explorer.core.models import build_zoo_model
    from explorer.core.probe import default_layer, leaves_of_rows

    model = build_zoo_model(arch).eval()
    rows = layer_table(model, (3, 64, 64))
    assert default_layer(leaves_of_rows(rows)) == expected == live_default(model)


def test_default_layer_without_convolutions_is_the_first_leaf():
    from explorer.core.probe import default_layer, leaves_of

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2), torch.nn.ReLU())
    assert default_layer(leaves_of(mlp)) == "0" and default_layer([]) is None
