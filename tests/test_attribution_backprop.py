"""Gradient, deconvnet and guided backprop: analytic cases, Captum as an oracle where it is right, and the
ReLU forms Captum misses (functional calls, a module used twice, in-place)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.attribution.backprop import backprop_attribution, saliency_image
from explorer.core.attribution.target import Target

captum_attr = pytest.importorskip("captum.attr")


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class OneConv(nn.Module):
    """y = v . relu(conv(x)): one 2x2 conv, stride 2, two filters, then a linear read-out."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = nn.Conv2d(1, 2, 2, stride=2, bias=False)
        self.conv.weight.data = torch.randn(2, 1, 2, 2, generator=g)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2 * 2 * 2, 1, bias=False)
        self.fc.weight.data = torch.randn(1, 8, generator=g)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def _one_conv_by_hand(model: OneConv, x: torch.Tensor, method: str) -> np.ndarray:
    """The backward pass written out: R = v at each ReLU output, the rule, then each filter pasted back."""
    w = model.conv.weight.detach().numpy()[:, 0]  # (2, 2, 2)
    v = model.fc.weight.detach().numpy().reshape(2, 2, 2)  # (filter, row, col)
    xin = x.detach().numpy()[0, 0]
    out = np.zeros_like(xin)
    for k in range(2):
        for i in range(2):
            for j in range(2):
                f = float((w[k] * xin[2 * i:2 * i + 2, 2 * j:2 * j + 2]).sum())
                r = float(v[k, i, j])
                if method == "gradient":
                    r = r * (f > 0)
                elif method == "deconvnet":
                    r = r * (r > 0)
                else:
                    r = r * (f > 0) * (r > 0)
                out[2 * i:2 * i + 2, 2 * j:2 * j + 2] += r * w[k]
    return out


@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided-backprop"])
def test_backward_rules_match_the_one_conv_net_by_hand(method):
    model = _frozen(OneConv())
    torch.manual_seed(3)
    for _ in range(5):
        x = torch.randn(1, 1, 4, 4)
        attr, _ = backprop_attribution(model, x, Target.for_class(0), method)
        np.testing.assert_allclose(attr[0, 0].numpy(), _one_conv_by_hand(model, x, method), rtol=1e-5, atol=1e-6)


def _small_cnn(relu_factory) -> nn.Sequential:
    torch.manual_seed(0)
    return _frozen(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), relu_factory(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), relu_factory(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 16), relu_factory(), nn.Linear(16, 5)))


@pytest.mark.parametrize("method,oracle", [("gradient", "Saliency"), ("deconvnet", "Deconvolution"),
                                           ("guided-backprop", "GuidedBackprop")])
def test_backprop_methods_equal_captum_on_relu_modules(method, oracle):
    model = _small_cnn(nn.ReLU)
    x = torch.randn(2, 3, 16, 16)
    ours, report = backprop_attribution(model, x, Target.for_class(2), method)
    kwargs = {"abs": False} if oracle == "Saliency" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(captum_attr, oracle)(model).attribute(x, target=2, **kwargs)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    if method != "gradient":
        assert report.handled == {"ReLU": 3} and not report.unhandled


class FunctionalNet(nn.Module):
    """The torchvision GoogLeNet/DenseNet habit: ReLU called as a function, in three spellings."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.conv1(x), inplace=True)
        x = torch.relu(self.conv2(x))
        x = self.conv3(x).relu()
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ModuleNet(FunctionalNet):
    """The same network with ``nn.ReLU`` modules, where Captum is right."""

    def __init__(self):
        super().__init__()
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x = self.r3(self.conv3(self.r2(self.conv2(self.r1(self.conv1(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize("method,oracle", [("deconvnet", "Deconvolution"), ("guided-backprop", "GuidedBackprop")])
def test_guided_backprop_handles_functional_relu(method, oracle):
    functional, modules = _frozen(FunctionalNet()), _frozen(ModuleNet())
    modules.load_state_dict(functional.state_dict())
    x = torch.randn(1, 3, 12, 12)
    ours, report = backprop_attribution(functional, x, Target.for_class(1), method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        right = getattr(captum_attr, oracle)(modules).attribute(x, target=1)
        captum_on_functional = getattr(captum_attr, oracle)(functional).attribute(x, target=1)
    torch.testing.assert_close(ours, right, rtol=1e-5, atol=1e-7)
    assert report.handled == {"ReLU": 3}
    # Captum silently returns the plain gradient here; we must not
    plain, _ = backprop_attribution(functional, x, Target.for_class(1), "gradient")
    torch.testing.assert_close(captum_on_functional, plain)
    assert not torch.allclose(ours, plain)


class SharedReLUBlock(nn.Module):
    """ResNet's BasicBlock habit: one ReLU module applied twice, the second time in place after an add."""

    def __init__(self, inplace: bool, shared: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.relu_b = self.relu if shared else nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(3 * 8 * 8, 3)

    def forward(self, x):
        out = self.conv2(self.relu(self.conv1(x)))
        out = self.relu_b(out + x)
        return self.fc(out.flatten(1))


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("method,oracle", [("deconvnet", "Deconvolution"), ("guided-backprop", "GuidedBackprop")])
def test_guided_backprop_handles_relu_used_twice_and_inplace(inplace, method, oracle):
    shared = _frozen(SharedReLUBlock(inplace=inplace, shared=True))
    separate = _frozen(SharedReLUBlock(inplace=False, shared=False))
    separate.load_state_dict(shared.state_dict())
    x = torch.randn(1, 3, 8, 8)
    ours, report = backprop_attribution(shared, x, Target.for_class(0), method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(captum_attr, oracle)(separate).attribute(x, target=0)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    assert report.handled == {"ReLU": 2}


def test_other_activations_are_reported_and_left_as_gradient():
    torch.manual_seed(0)
    model = _frozen(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Conv2d(4, 4, 3), nn.GELU(),
                                  nn.Flatten(), nn.Linear(4 * 4 * 4, 2)))
    x = torch.randn(1, 3, 8, 8)
    guided, report = backprop_attribution(model, x, Target.for_class(0), "guided-backprop")
    plain, _ = backprop_attribution(model, x, Target.for_class(0), "gradient")
    torch.testing.assert_close(guided, plain)
    assert report.unhandled == {"ReLU6": 1, "GELU": 1} and not report.handled
    assert "ReLU6" in report.note and "GELU" in report.note and "plain gradient" in report.note


def test_unit_target_is_a_channel_mean_or_a_neuron():
    model = _small_cnn(nn.ReLU)
    x = torch.randn(1, 3, 16, 16)
    mean_grad, _ = backprop_attribution(model, x, Target.for_unit("3", 5), "gradient")
    xr = x.clone().requires_grad_(True)
    model[3](model[2](model[1](model[0](xr))))[0, 5].mean().backward()
    torch.testing.assert_close(mean_grad, xr.grad)
    neuron, _ = backprop_attribution(model, x, Target.for_unit("3", 5, (2, 3)), "gradient")
    xr.grad = None
    model[3](model[2](model[1](model[0](xr))))[0, 5, 2, 3].backward()
    torch.testing.assert_close(neuron, xr.grad)


def test_saliency_image_is_max_abs_over_channels():
    a = torch.tensor([[[1.0, -3.0]], [[-2.0, 0.5]]])
    torch.testing.assert_close(saliency_image(a), torch.tensor([[2.0, 3.0]]))


def test_backprop_on_torchvision_resnet_equals_captum():
    from explorer.core.models import build_zoo_model

    model = _frozen(build_zoo_model("resnet18"))
    x = torch.randn(1, 3, 32, 32)
    ours, report = backprop_attribution(model, x, Target.for_class(7), "guided-backprop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = captum_attr.GuidedBackprop(model).attribute(x, target=7)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)
    assert report.handled["ReLU"] == 17  # the stem + two per block, each shared ReLU called twice


def test_notes_that_only_inform_are_not_warnings():
    from explorer.core.attribution.backprop import note_is_warning

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    _, report = backprop_attribution(model.eval(), torch.randn(1, 3, 8, 8), Target.for_class(0), "guided-backprop")
    assert report.handled and not report.warning and not note_is_warning(report.note)
    gelu = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    gelu(torch.zeros(1, 3, 8, 8))
    _, report = backprop_attribution(gelu.eval(), torch.randn(1, 3, 8, 8), Target.for_class(0), "guided-backprop")
    assert report.warning and note_is_warning(report.note)
