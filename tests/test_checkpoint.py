"""Loading the user's checkpoints: every format round-trips, architectures are detected, bad files get
one clear line, and pickled code never runs unless the file is trusted."""
from __future__ import annotations

import os
import pickle
import warnings
from collections import OrderedDict

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from explorer.core.models.architecture import SHAPES_ARCH, architecture_signature, detect_architecture
from explorer.core.models.checkpoint import load_checkpoint
from explorer.core.errors import ModelLoadError, UntrustedCheckpointError
from explorer.core.models import build_zoo_model, load_model, zoo_spec
from explorer.core.models.shapes_data import SHAPE_CLASSES
from explorer.core.models.shapes import SHAPES_FORMAT, ShapesNet

torch.set_num_threads(1)


def _random_model(arch: str, num_classes: int | None = None, seed: int = 0) -> nn.Module:
    """A model with random weights and randomised BatchNorm statistics, so that every tensor matters."""
    torch.manual_seed(seed)
    model = ShapesNet(**({"num_classes": num_classes} if num_classes else {})) if arch == SHAPES_ARCH \
        else build_zoo_model(arch, num_classes=num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _assert_same_outputs(reference: nn.Module, loaded: nn.Module, size: int = 64, channels: int = 3) -> None:
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference(x), loaded(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


class TinyNet(nn.Module):
    """An architecture no zoo knows: grey 28x28 input, one conv, one linear layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


class MarkerOnUnpickle:
    """Unpickling this creates a folder: stands in for a malicious payload (os.system and the like)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


# --- formats round-trip -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18():
    return _random_model("resnet18")


def test_state_dict_detects_resnet18_and_reproduces_outputs(tmp_path, resnet18):
    path = tmp_path / "my_weights.pth"
    torch.save(resnet18.state_dict(), path)
    loaded = load_checkpoint(path)
    assert loaded.trained
    assert loaded.source == (f"state dict, architecture detected: resnet18 "
                             f"(matched {len(resnet18.state_dict())} tensors)")
    assert loaded.spec == zoo_spec("resnet18") and len(loaded.spec.labels) == 1000
    assert not any(t.is_meta for t in loaded.module.state_dict().values())
    _assert_same_outputs(resnet18, loaded.module)


@pytest.mark.parametrize("arch", ["squeezenet1_1", "mobilenet_v3_small", SHAPES_ARCH])
def test_detection_picks_the_architecture_the_state_dict_came_from(tmp_path, arch):
    reference = _random_model(arch)
    path = tmp_path / "weights.pt"  # a neutral name: no hint from the file name
    torch.save(reference.state_dict(), path)
    loaded = load_checkpoint(path)
    assert f"architecture detected: {arch} (" in loaded.source
    _assert_same_outputs(reference, loaded.module)


def test_googlenet_file_with_auxiliary_heads_loads_without_them(tmp_path):
    # torchvision's own GoogLeNet files carry aux1/aux2; the explorer builds GoogLeNet without them.
    torch.manual_seed(0)
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).eval()
    path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), path)
    loaded = load_checkpoint(path)
    without_aux = [k for k in reference.state_dict() if not k.startswith(("aux1.", "aux2."))]
    assert loaded.source == f"state dict, architecture detected: googlenet (matched {len(without_aux)} tensors)"
    assert not hasattr(loaded.module, "aux1") or loaded.module.aux1 is None
    _assert_same_outputs(reference, loaded.module)


def test_detect_architecture_tells_apart_siblings():
    # vgg11 and vgg11_bn, resnet50 and wide_resnet50_2 share layouts; names and shapes still decide.
    for arch in ("vgg11_bn", "wide_resnet50_2", "regnet_x_400mf"):
        match = detect_architecture(architecture_signature(arch))
        assert match is not None and match.arch == arch and match.num_classes is None


def test_meta_build_of_regnet_has_the_real_models_names_and_shapes():
    # RegNet's constructor computes block widths from tensor values, which `torch.device("meta")` breaks.
    real = {k: tuple(v.shape) for k, v in build_zoo_model("regnet_x_400mf").state_dict().items()}
    assert architecture_signature("regnet_x_400mf") == real


@pytest.mark.parametrize("wrapper, prefix", [("state_dict", "module."), ("model", ""),
                                             ("model_state_dict", "_orig_mod."), ("state_dict", "model.")])
def test_wrapped_and_prefixed_state_dicts_load(tmp_path, wrapper, prefix):
    # Training checkpoints nest the weights next to other things (here a lone tensor too), and
    # DataParallel, torch.compile and Lightning-style wrappers prefix every name.
    reference = _random_model(SHAPES_ARCH)
    state = OrderedDict((prefix + k, v) for k, v in reference.state_dict().items())
    path = tmp_path / "ckpt.pt"
    torch.save({wrapper: state, "epoch": 7, "ema_decay": torch.tensor(0.99), "optimizer": {"lr": 0.1}}, path)
    loaded = load_checkpoint(path)
    assert "architecture detected: shapes_net" in loaded.source
    assert loaded.spec.labels == tuple(SHAPE_CLASSES)
    _assert_same_outputs(reference, loaded.module)


def test_safetensors_round_trip(tmp_path):
    reference = _random_model("squeezenet1_1")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    loaded = load_checkpoint(path)
    assert loaded.source.startswith("safetensors state dict, architecture detected: squeezenet1_1")
    _assert_same_outputs(reference, loaded.module)


def test_half_precision_state_dict_loads_as_float32(tmp_path):
    reference = _random_model(SHAPES_ARCH)
    path = tmp_path / "half.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in reference.state_dict().items()}, path)
    loaded = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
    expected = {k: v.half().float() if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    for key, tensor in loaded.module.state_dict().items():
        torch.testing.assert_close(tensor, expected[key], rtol=0, atol=0)


def test_bundled_format_uses_its_stored_input_spec(tmp_path):
    reference = _random_model(SHAPES_ARCH, num_classes=4)
    labels = ["north", "east", "south", "west"]
    path = tmp_path / "arrows.pt"
    torch.save({"format": SHAPES_FORMAT, "arch": "shapes_net", "labels": labels,
                "input": {"size": [96, 80], "channels": 3, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]},
                "state_dict": reference.state_dict(), "held_out_accuracy": 0.5}, path)
    loaded = load_checkpoint(path)
    assert loaded.spec.size == (96, 80) and loaded.spec.labels == tuple(labels)
    assert loaded.spec.mean == (0.1, 0.2, 0.3) and loaded.spec.std == (0.4, 0.5, 0.6)
    assert "shapes_net with 4 classes" in loaded.source and "50.0%" in loaded.source
    _assert_same_outputs(reference, loaded.module)


EAGER_NOTE = " (weights loaded into the eager model; outputs checked equal)"


def _save_scripted(module: nn.Module, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; users still have archives
        torch.jit.save(torch.jit.script(module), str(path))


def test_torchscript_of_a_known_architecture_becomes_a_hookable_eager_model(tmp_path):
    reference = _random_model("squeezenet1_1")
    path = tmp_path / "scripted.pt"
    _save_scripted(reference, path)
    loaded = load_checkpoint(path)
    assert loaded.source == "TorchScript archive, architecture detected: squeezenet1_1" + EAGER_NOTE
    assert type(loaded.module) is torchvision.models.SqueezeNet
    assert loaded.spec == zoo_spec("squeezenet1_1")
    seen = []
    loaded.module.features[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    _assert_same_outputs(reference, loaded.module)
    assert seen == [torch.Size([2, 64, 31, 31])]


class DoubledShapesNet(ShapesNet):
    """ShapesNet's tensors, another forward: must not be swapped for the eager ShapesNet."""

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return 2 * self.classifier(torch.flatten(x, 1))


def test_torchscript_with_its_own_forward_stays_scripted(tmp_path):
    reference = DoubledShapesNet().eval()
    path = tmp_path / "doubled.pt"
    _save_scripted(reference, path)
    loaded = load_checkpoint(path)
    assert loaded.source == "TorchScript archive, architecture detected: shapes_net"
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    _assert_same_outputs(reference, loaded.module)


def test_torchscript_of_unknown_architecture_infers_grey_input(tmp_path):
    torch.manual_seed(0)
    reference = TinyNet().eval()
    path = tmp_path / "tiny.pt"
    _save_scripted(reference, path)
    loaded = load_checkpoint(path)
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    assert "TorchScript archive (TinyNet; architecture not recognised)" == loaded.source
    assert loaded.spec.channels == 1 and loaded.spec.size == (224, 224) and loaded.spec.labels == ()
    _assert_same_outputs(reference, loaded.module, size=28, channels=1)


def test_exported_program_round_trip_with_its_input_size(tmp_path):
    reference = _random_model(SHAPES_ARCH)
    path = tmp_path / "shapes.pt2"
    example = torch.randn(2, 3, 64, 64)
    torch.export.save(torch.export.export(reference, (example,)), str(path))
    loaded = load_checkpoint(path)
    assert loaded.source == "torch.export program, architecture detected: shapes_net" + EAGER_NOTE
    assert type(loaded.module) is ShapesNet
    assert loaded.spec.size == (64, 64) and loaded.spec.labels == tuple(SHAPE_CLASSES)
    _assert_same_outputs(reference, loaded.module, size=64)


def test_exported_program_of_unknown_architecture_runs_as_exported(tmp_path):
    torch.manual_seed(0)
    reference = TinyNet().eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(reference, (torch.randn(2, 1, 28, 28),)), str(path))
    loaded = load_checkpoint(path)
    assert loaded.source == "torch.export program (exported graph, fixed batch size 2; architecture not recognised)"
    assert loaded.spec.channels == 1 and loaded.spec.size == (28, 28)
    loaded.module.eval()  # callers put every model in eval mode; the exported graph must allow it
    _assert_same_outputs(reference, loaded.module, size=28, channels=1)


# --- architecture named, class count changed -------------------------------------------------------


def test_named_architecture_with_other_class_count_is_rebuilt(tmp_path, resnet18):
    reference = _random_model("resnet18", num_classes=10)
    path = tmp_path / "finetuned.pt"
    torch.save(reference.state_dict(), path)
    loaded = load_checkpoint(path, arch="resnet18")
    assert loaded.module.fc.out_features == 10
    assert "architecture resnet18 with 10 classes (as named)" in loaded.source
    assert loaded.spec.labels == () and loaded.spec.size == zoo_spec("resnet18").size
    _assert_same_outputs(reference, loaded.module)


def test_detected_architecture_with_other_class_count(tmp_path):
    reference = _random_model("mobilenet_v3_small", num_classes=7)
    path = tmp_path / "birds.pt"
    torch.save(reference.state_dict(), path)
    loaded = load_checkpoint(path)
    assert "architecture detected: mobilenet_v3_small with 7 classes" in loaded.source
    assert loaded.spec.labels == ()
    _assert_same_outputs(reference, loaded.module)


def test_load_model_passes_the_name_as_architecture(tmp_path):
    reference = _random_model("squeezenet1_1", num_classes=3)
    path = tmp_path / "sq.pth"
    torch.save(reference.state_dict(), path)
    named = load_model("squeezenet1_1", checkpoint=path, device="cpu")
    assert "as named" in named.source and named.trained
    _assert_same_outputs(reference, named.module)
    # With no name the architecture is detected, not taken to be the bundled default.
    detected = load_model(checkpoint=path, device="cpu")
    assert "architecture detected: squeezenet1_1 with 3 classes" in detected.source
    by_path = load_model(str(path), device="cpu")
    assert by_path.source == detected.source


# --- wrong files: one line naming the problem -------------------------------------------------------


def _one_line_error(path, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    error = info.value  # no chained exception for a traceback printer to show
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return message


def test_named_architecture_reports_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "sq.pt"
    torch.save(_random_model("squeezenet1_1").state_dict(), path)
    message = _one_line_error(path, arch="resnet18")
    # BatchNorm loads files saved before it counted batches, so a missing num_batches_tracked is no fault.
    missing = [k for k in build_zoo_model("resnet18").state_dict() if not k.endswith("num_batches_tracked")]
    squeezenet_keys = list(build_zoo_model("squeezenet1_1").state_dict())
    assert message.startswith("sq.pt does not fit resnet18: ")
    assert f"{len(missing)} missing keys ({', '.join(missing[:3])}, ...)" in message
    assert f"{len(squeezenet_keys)} unexpected keys ({', '.join(squeezenet_keys[:3])}, ...)" in message


def test_shape_mismatch_names_the_first_offending_tensor(tmp_path, resnet18):
    state = resnet18.state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    message = _one_line_error(path, arch="resnet18")
    assert message == ("bad.pt does not fit resnet18: shape mismatch: layer2.0.conv1.weight is 128x32x3x3 "
                       "in the file but 128x64x3x3 in the model")


def test_unknown_architecture_says_none_matches(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(TinyNet().state_dict(), path)
    message = _one_line_error(path)
    assert message.startswith("no known architecture matches tiny.pt (4 tensors; closest: ")
    assert message.endswith("name its architecture")


def test_unknown_architecture_name(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(TinyNet().state_dict(), path)
    assert "unknown architecture 'lenet5'" in _one_line_error(path, arch="lenet5")


PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))


@pytest.mark.parametrize("name, content, expected", [
    ("empty.pt", b"", "empty.pt is empty (0 bytes): not a checkpoint"),
    ("noise.pt", bytes([7, 200, 13, 0, 255, 1]) * 300, "noise.pt is not a checkpoint: its content is not recognised"),
    ("notes.pth", b"weights: see the README\n" * 10, "notes.pth is not a checkpoint: it is a text file"),
    ("cat.pt", PNG_HEADER, "cat.pt is not a checkpoint: it looks like a PNG image"),
    ("fake.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!",
     "fake.safetensors is not a valid safetensors"),
])
def test_files_that_are_not_checkpoints(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert _one_line_error(path).startswith(expected)


def test_missing_file_and_folder(tmp_path):
    assert _one_line_error(tmp_path / "nowhere.pt") == f"checkpoint file not found: {tmp_path / 'nowhere.pt'}"
    assert _one_line_error(tmp_path).endswith("is a folder, not a checkpoint file")


def test_truncated_checkpoint_is_reported_as_damaged(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(_random_model(SHAPES_ARCH).state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "cut.pt is damaged or incomplete" in _one_line_error(path)


def test_single_tensor_and_dict_without_tensors(tmp_path):
    tensor = tmp_path / "t.pt"
    torch.save(torch.zeros(3, 4), tensor)
    assert _one_line_error(tensor) == "t.pt holds a single tensor of shape 3x4, not a model's weights"
    meta = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, meta)
    assert _one_line_error(meta) == ("meta.pt holds a dict without a state dict in it (keys: epoch, lr): "
                                     "not a model checkpoint")


def test_plain_pickle_is_not_a_torch_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    assert _one_line_error(path) == ("plain.pkl is not a PyTorch checkpoint: it is a plain Python pickle "
                                     "(save the model or its state_dict with torch.save)")


def test_legacy_torch_save_format_loads(tmp_path):
    reference = _random_model(SHAPES_ARCH)
    path = tmp_path / "old.pt"
    torch.save(reference.state_dict(), path, _use_new_zipfile_serialization=False)
    _assert_same_outputs(reference, load_checkpoint(path).module)


# --- pickled code ---------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pickle_does_not_run_without_trust(tmp_path, legacy):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "boom": MarkerOnUnpickle(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UntrustedCheckpointError) as info:
        load_checkpoint(path)
    assert not marker.exists()
    message = str(info.value)
    assert message == (f"evil.pt holds pickled Python objects ({os.mkdir.__module__}.mkdir); unpickling runs code "
                       f"from the file, so load it only if you trust where it came from")


@pytest.mark.parametrize("trust", [False, True])
def test_malicious_plain_pickle_is_never_unpickled(tmp_path, trust):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"boom": MarkerOnUnpickle(marker)}, protocol=4))
    assert "is not a PyTorch checkpoint: it is a plain Python pickle" in _one_line_error(path, trust=trust)
    assert not marker.exists()


def test_malicious_pickle_runs_once_trusted(tmp_path):
    # The payload above is live: trusting the file runs it (then the file holds no model).
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"boom": MarkerOnUnpickle(marker)}, path)
    with pytest.raises(ModelLoadError):
        load_checkpoint(path, trust=True)
    assert marker.exists()


def test_whole_pickled_module_needs_trust(tmp_path):
    reference = _random_model(SHAPES_ARCH)
    path = tmp_path / "whole.pt"
    torch.save(reference, path)
    message = _one_line_error(path)
    assert "holds pickled Python objects (explorer.core.models.shapes.ShapesNet)" in message
    loaded = load_checkpoint(path, trust=True)
    assert isinstance(loaded.module, ShapesNet)
    assert loaded.source == "pickled module (trusted), architecture detected: shapes_net"
    _assert_same_outputs(reference, loaded.module)


def test_trusted_checkpoint_with_extra_objects_loads_its_state_dict(tmp_path):
    # Training scripts often save argparse namespaces next to the weights; weights_only refuses them.
    import argparse  # noqa: PLC0415

    reference = _random_model(SHAPES_ARCH)
    path = tmp_path / "run.pt"
    torch.save({"state_dict": reference.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    assert isinstance(pytest.raises(UntrustedCheckpointError, load_checkpoint, path).value, ModelLoadError)
    loaded = load_checkpoint(path, trust=True)
    _assert_same_outputs(reference, loaded.module)
