"""Models by name: the bundled shapes CNN, torchvision's zoo, input-spec overrides, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core.errors import ModelLoadError
from explorer.core.models import InputSpec, load_model, read_labels_file, zoo_names, zoo_spec
from explorer.core.preprocess import image_to_tensor
from explorer.core.models.shapes_data import SHAPE_CLASSES, generate_shape


def test_zoo_lists_the_classic_models():
    names = zoo_names()
    for name in ("alexnet", "vgg16", "resnet18", "googlenet", "inception_v3"):
        assert name in names


def test_zoo_spec_comes_from_weights_metadata_without_download():
    spec = zoo_spec("inception_v3")
    assert spec.size == (299, 299)
    assert len(spec.labels) == 1000 and spec.labels[0] == "tench"
    assert zoo_spec("resnet18").mean == (0.485, 0.456, 0.406)


def test_random_weights_are_marked_untrained():
    loaded = load_model("resnet18", weights="none", device="cpu")
    assert not loaded.trained and loaded.display_name == "resnet18 (untrained)"
    assert not loaded.module.training


def test_unknown_model_name_is_one_clear_error():
    with pytest.raises(ModelLoadError, match="unknown model 'resnet19'"):
        load_model("resnet19", weights="none")


def test_input_overrides_apply_and_are_checked(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(1000)))
    loaded = load_model("resnet18", weights="none", input_size=(96, 128), mean=(0.5,), std=(0.25,),
                        labels_file=labels)
    assert loaded.spec.size == (96, 128) and loaded.spec.mean == (0.5, 0.5, 0.5)
    assert loaded.spec.labels[3] == "thing 3"
    with pytest.raises(ModelLoadError, match="^mean has 2 values"):
        InputSpec().with_overrides(mean=(0.1, 0.2))


def test_labels_file_as_json_list(tmp_path):
    (tmp_path / "l.json").write_text('["cat", "dog"]')
    assert read_labels_file(tmp_path / "l.json") == ("cat", "dog")
    (tmp_path / "bad.json").write_text('{"cat": 1')
    with pytest.raises(ModelLoadError):
        read_labels_file(tmp_path / "bad.json")


def test_bundled_shapes_model_recognises_generated_shapes():
    loaded = load_model("shapes", device="cpu")
    assert loaded.trained and loaded.spec.size == (128, 128) and loaded.spec.labels == SHAPE_CLASSES
    rng = np.random.default_rng(12345)
    samples = [generate_shape(rng, label=i % 6) for i in range(60)]
    x = torch.cat([image_to_tensor(s.image, loaded.spec) for s in samples])
    with torch.no_grad():
        predicted = loaded.module(x).argmax(1).numpy()
    accuracy = float((predicted == np.array([s.label for s in samples])).mean())
    assert accuracy >= 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_layer_view_on_cuda_equals_cpu():
    from explorer.core.explore import compute_layer_view

    cpu = load_model("shapes", device="cpu")
    gpu = load_model("shapes", device="cuda")
    x = image_to_tensor(generate_shape(np.random.default_rng(3), label=3).image, cpu.spec)
    a = compute_layer_view(cpu, x, "features.relu3")
    b = compute_layer_view(gpu, x, "features.relu3")
    np.testing.assert_allclose(a.activation, b.activation, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(a.grid, b.grid, rtol=1e-3, atol=1e-4)
    assert gpu.device.type == "cuda" and a.top5[0]["index"] == b.top5[0]["index"]


def test_device_switch_moves_the_model():
    loaded = load_model("shapes", device="cpu")
    assert loaded.to("cpu").device.type == "cpu"
    assert all(p.device.type == "cpu" for p in loaded.module.parameters())
    from explorer.core.models.device import available_devices, resolve_device

    assert available_devices()[-1] == "cpu" and resolve_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
