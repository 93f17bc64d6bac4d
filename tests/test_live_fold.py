"""The live view's folded forward pass (batch norms folded into their convolutions on the CPU): the same
activations, the same model output and the same grid as the model itself, for every layer."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from explorer.core.fold import FoldedForward
from explorer.core.live import LiveFrame, LivePipeline
from explorer.core.models import InputSpec, LoadedModel
from explorer.core.preprocess import image_to_tensor

from live_fixtures import layer_output, naive_layer_grid


class Wrapped(nn.Module):
    """A module whose output is its convolution's raw output (a hook on it sees what the conv returns)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class BNNet(nn.Module):
    def __init__(self, view: bool = False) -> None:
        super().__init__()
        self.view_ = view
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)
        self.block, self.bn2, self.relu2 = Wrapped(), nn.BatchNorm2d(8), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.bn2(self.block(x))))
        return self.fc(x.view(x.shape[0], -1) if self.view_ else x.flatten(1))


def randomise_batch_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return module.eval()


def loaded(module: nn.Module, size=(32, 32), classes: int = 5) -> LoadedModel:
    spec = InputSpec(size=size, labels=tuple(f"c{i}" for i in range(classes)))
    return LoadedModel("bn", module, spec, trained=False, source="test")


def frame(seed: int, shape=(40, 56)) -> LiveFrame:
    rng = np.random.default_rng(seed)
    return LiveFrame(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), time.perf_counter(), seed)


def batch_norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("fold, trace", [(True, False), (False, True), (True, True)])
def test_every_layer_shows_the_same_activation_and_output_as_the_model(view, fold, trace):
    torch.manual_seed(0)
    model = loaded(randomise_batch_norms(BNNet(view)))
    fast, plain = LivePipeline(model, fold=fold, trace=trace), LivePipeline(model, fold=False, trace=False)
    x, _ = plain.preprocess(frame(1).image)
    names = [n for n, _ in model.module.named_modules() if n]
    for name in names:
        act, out = fast.forward(x, name)
        assert (fast.traced_for(name) is not None) is trace, name  # the traced graph ran where asked for
        want_act, want_out = plain.forward(x, name)
        scale = float(want_act.abs().max()) + 1e-6
        assert act.shape == want_act.shape, name
        assert float((act - want_act).abs().max()) <= 1e-4 * scale, name
        assert float((out - want_out).abs().max()) <= 1e-4 * (float(want_out.abs().max()) + 1e-6), name
    if not fold:
        return
    folded = fast
    # which copy ran: every pair folded, except the one whose convolution's raw output is shown
    assert batch_norms(folded.module_for("relu2")[0]) == 0
    assert batch_norms(folded.module_for("conv1")[0]) == 1
    assert batch_norms(folded.module_for("block")[0]) == 1  # the wrapper shows block.conv's raw output
    assert batch_norms(folded.module_for("block.conv")[0]) == 1
    assert batch_norms(folded.module_for("bn1")[0]) == 0  # the folded conv's output is bn1's output
    assert folded.module_for("relu2")[1] is (not view)  # a .view() of a channels-last tensor fails: NCHW then
    assert batch_norms(model.module) == 2  # the shared model is left as it was


def test_the_grid_of_resnet18_layers_equals_the_naive_tiling_of_the_models_own_activations():
    torch.manual_seed(0)
    model = loaded(randomise_batch_norms(torchvision.models.resnet18(num_classes=10)), size=(64, 64), classes=10)
    f = frame(2, shape=(72, 96))
    x = image_to_tensor(f.image, model.spec)
    for layer in ("conv1", "bn1", "layer1", "layer2.0.downsample.0", "layer3.1.bn2", "layer1.0.relu"):
        pipe = LivePipeline(model, layer=layer, unit=1)
        result = pipe.process(f)
        assert pipe.traced_for(layer) is not None, layer
        expected = naive_layer_grid(layer_output(model, x, layer))
        assert result.grid.shape == expected.shape, layer
        # one level: the oracle resizes with Pillow, the pipeline with torch's uint8 kernel
        assert np.abs(result.grid.astype(int) - expected).max() <= 1, layer
        assert result.top_class == int(model.module(x).argmax())
    assert LivePipeline(model, layer="layer1").module_for("layer1")[0] is not model.module


def test_the_copy_is_folded_when_first_asked_for_inside_inference_mode():
    model = loaded(randomise_batch_norms(BNNet()))
    pipe = LivePipeline(model, layer="relu2", trace=False)
    x, _ = pipe.preprocess(frame(3).image)
    with torch.inference_mode():
        out = pipe.bare(x)  # what bare_forward does first
    assert batch_norms(pipe.module_for("relu2")[0]) == 0
    with torch.no_grad():
        assert float((out - model.module(x)).abs().max()) <= 1e-4 * float(out.abs().max())


def test_nothing_is_folded_where_it_would_change_the_model():
    net = randomise_batch_norms(BNNet())
    net.bn1.train()  # a batch norm in training mode normalises by the batch: not an affine map
    ff = FoldedForward(net, torch.randn(1, 3, 16, 16))
    assert ff.pairs == [("block.conv", "bn2")]
    plain = LivePipeline(loaded(net), fold=False)
    assert plain.module_for("relu2") == (net, False)


def test_a_model_that_cannot_be_probed_runs_as_it_is():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval()

        def forward(self, x):
            if x.requires_grad:
                raise RuntimeError("no gradients here")
            return self.bn(self.conv(x)).mean((2, 3))

    odd = Odd().eval()
    ff = FoldedForward(odd, torch.randn(1, 3, 8, 8))
    assert ff.pairs == [] and ff.for_layer("bn") == (odd, False)


def test_a_layer_followed_by_an_in_place_relu_shows_its_own_output_not_the_relus():
    torch.manual_seed(0)
    model = loaded(randomise_batch_norms(BNNet()))  # bn1 → ReLU(inplace=True)
    for fold in (True, False):
        pipe = LivePipeline(model, layer="bn1", fold=fold)
        x, _ = pipe.preprocess(frame(4).image)
        act, _ = pipe.forward(x, "bn1")
        with torch.no_grad():
            want = model.module.bn1(model.module.conv1(x))[0]
        assert float(act.min()) < 0  # the ReLU ran in place on this very tensor after the hook
        assert float((act - want).abs().max()) <= 1e-4 * float(want.abs().max())


def test_a_model_that_branches_on_a_tensors_value_runs_as_it_is():
    class Branchy(BNNet):
        def forward(self, x):
            x = self.relu1(self.bn1(self.conv1(x)))
            if float(x.detach().mean()) > 1e9:  # a branch on a value: a trace would hold for one input only
                x = x * 0
            return self.fc(self.pool(self.relu2(self.bn2(self.block(x)))).flatten(1))

    torch.manual_seed(0)
    model = loaded(randomise_batch_norms(Branchy()))
    pipe, plain = LivePipeline(model), LivePipeline(model, fold=False, trace=False)
    x, _ = pipe.preprocess(frame(5).image)
    act, out = pipe.forward(x, "bn2")
    want_act, want_out = plain.forward(x, "bn2")
    assert pipe.traced_for("bn2") is None
    assert float((act - want_act).abs().max()) <= 1e-4 * float(want_act.abs().max())
    assert float((out - want_out).abs().max()) <= 1e-4 * float(want_out.abs().max())


def test_a_model_over_the_size_limit_is_not_traced(monkeypatch):
    import explorer.core.traced as traced

    model = loaded(randomise_batch_norms(BNNet()))
    size = sum(p.numel() * 4 for p in model.module.parameters())
    monkeypatch.setattr(traced, "MAX_TRACED_BYTES", size // 100)
    assert LivePipeline(model).traced_for("relu2") is None
    monkeypatch.setattr(traced, "MAX_TRACED_BYTES", 10 * size)
    assert LivePipeline(model).traced_for("relu2") is not None


def test_tracing_leaves_other_threads_forward_passes_alone():
    """Another panel's model runs on its own thread while the live graph is traced: it must not notice."""
    import threading

    other = torchvision.models.resnet18(num_classes=3).eval()
    errors, runs, stop = [], [0], threading.Event()

    def run_other():
        x = torch.randn(1, 3, 32, 32)
        while not stop.is_set():
            try:
                with torch.no_grad():
                    assert other(x).shape == (1, 3)
                runs[0] += 1
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    worker = threading.Thread(target=run_other)
    worker.start()
    try:
        while not runs[0] and worker.is_alive():
            time.sleep(0.01)
        model = loaded(randomise_batch_norms(torchvision.models.resnet18(num_classes=10)), size=(64, 64), classes=10)
        for layer in ("layer1", "layer2", "layer3.0.bn1"):
            assert LivePipeline(model).traced_for(layer) is not None
    finally:
        stop.set()
        worker.join()
    assert not errors and runs[0] > 0
