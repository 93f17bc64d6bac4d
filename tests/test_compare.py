"""Two checkpoints layer by layer: the CKA estimator against independent references, and what it shows."""
from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from compare_fixtures import FROZEN, fine_tuned, image_folder, reinitialised
from explorer.core.compare import (MIN_BATCH, batch_bounds, cka_of_batches, compare_image, compare_steps,
                                   default_layers, gram, hsic1, match_layers, minibatch_cka, top_overlap,
                                   weight_change)
from explorer.core.errors import InputError
from explorer.core.models import load_model
from explorer.core.models.shapes import ShapesNet
from explorer.core.preprocess import image_to_tensor, load_image
from explorer.core.probe import run_forward, top_k
from explorer.core.steps import drive
from explorer.core.topk.scan import folder_images, scan_steps


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes", device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = image_folder(tmp_path_factory.mktemp("compare") / "images", 22, seed=5)
    (d / "zz-broken.png").write_bytes(b"not an image")
    return d


def naive_hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012's unbiased HSIC as the U-statistic it is: the mean over ordered distinct
    (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    n = len(k)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def naive_full_batch_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased linear CKA over all rows at once, in numpy, from the closed form of HSIC_1."""
    def hsic(k, l):
        n = len(k)
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        one = np.ones(n)
        return (np.trace(k @ l) + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_hsic1_equals_the_u_statistic_over_4_tuples():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    k, l = gram(x), gram(y)
    ours = hsic1(torch.stack([k, l]), torch.stack([l]))
    assert ours[0, 0].item() == pytest.approx(naive_hsic1(k.numpy(), l.numpy()), rel=1e-10)
    assert ours[1, 0].item() == pytest.approx(naive_hsic1(l.numpy(), l.numpy()), rel=1e-10)


def test_one_minibatch_equals_a_naive_full_batch_unbiased_cka():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 30, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(30, 12, generator=g, dtype=torch.float64)) + 0.3 * torch.randn(40, 12, generator=g,
                                                                                                   dtype=torch.float64)
    assert minibatch_cka(x, y, batch_size=40) == pytest.approx(naive_full_batch_cka(x.numpy(), y.numpy()), abs=1e-12)
    # minibatches estimate the same quantity: close to it, not equal
    assert abs(minibatch_cka(x, y, batch_size=10) - naive_full_batch_cka(x.numpy(), y.numpy())) < 0.15


def test_float32_features_give_the_float64_cka_because_the_gram_is_centred():
    """Post-ReLU features share a large common part; the Gram of the centred float32 features keeps
    CKA at float64 accuracy (an uncentred float32 product is off by about 1e-5 here)."""
    g = torch.Generator().manual_seed(3)
    x = torch.relu(torch.randn(50, 50_000, generator=g) + 2.0) * 3
    y = torch.relu(x[:, :20_000] * 0.5 + torch.randn(50, 20_000, generator=g) * 2) + 1

    def cka(k, l):
        return (hsic1(k[None], l[None]) / torch.sqrt(hsic1(k[None], k[None]) * hsic1(l[None], l[None]))).item()

    reference = naive_full_batch_cka(x.double().numpy(), y.double().numpy())
    assert gram(x).dtype == torch.float64
    assert cka(gram(x), gram(y)) == pytest.approx(reference, abs=1e-6)


def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling_not_to_any_linear_map():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3.0, 16, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    assert minibatch_cka(x, x, 16) == pytest.approx(1.0, abs=1e-12)
    assert minibatch_cka(x, 3.7 * (x @ q), 16) == pytest.approx(1.0, abs=1e-10)
    m = torch.randn(16, 16, generator=g, dtype=torch.float64) * torch.logspace(-2, 1, 16, dtype=torch.float64)
    assert minibatch_cka(x, x @ m, 16) < 0.9


def test_batch_bounds_keep_every_minibatch_big_enough():
    assert batch_bounds(22, 8) == [(0, 8), (8, 16), (16, 22)]
    assert batch_bounds(17, 8) == [(0, 8), (8, 17)]  # a remainder of 1 joins the last minibatch
    with pytest.raises(InputError):
        batch_bounds(MIN_BATCH - 1, 8)


def _no_inplace(model):
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False  # pytorch-cka keeps views of the outputs: an in-place ReLU would change them
    return model


def test_cka_heatmap_equals_pytorch_cka(shapes):
    import cka  # pytorch-cka, the dev extra: the oracle
    from torch.utils.data import DataLoader, TensorDataset

    a = _no_inplace(copy.deepcopy(shapes.module)).double()
    b = _no_inplace(reinitialised(shapes).module).double()
    layers = ["features.conv1", "features.bn2", "features.relu3", "features.conv5", "classifier.fc1",
              "classifier.fc2"]
    x = torch.randn(24, 3, 128, 128, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = cka_of_batches(a, b, list(x.split(8)), layers, layers[::-1])
    theirs = cka.compute_cka(a, b, DataLoader(TensorDataset(x), batch_size=8), layers=layers,
                             model2_layers=layers[::-1], device="cpu", progress=False)[0].numpy()
    # pytorch-cka clamps to [0, 1]; ours keeps the estimator's small negative values
    np.testing.assert_allclose(np.clip(ours, 0, 1), theirs, atol=1e-4)
    assert ours.shape == (6, 6) and np.isfinite(ours).all()


def test_a_model_compared_with_itself_has_cka_one_and_no_weight_change(shapes, folder):
    result = drive(compare_steps(shapes, copy.deepcopy(shapes), folder, batch_size=8))
    assert result.images == 22 and result.batches == 3
    assert [s["path"] for s in result.skipped] == [str(folder / "zz-broken.png")]
    for name, value in result.layer_cka().items():
        assert value == pytest.approx(1.0, abs=1e-9), name
    assert all(v == 0.0 for v in result.weight_change.values())
    assert result.layers_a == default_layers(shapes.module, match_layers(shapes, shapes).matched)


def test_the_folder_pass_equals_the_estimator_on_the_same_minibatches(shapes, folder):
    b = reinitialised(shapes)
    layers = ["features.bn1", "features.conv4", "classifier.fc2"]
    result = drive(compare_steps(shapes, b, folder, layers, batch_size=8))
    paths = [p for p, _ in folder_images(folder) if p.name != "zz-broken.png"]
    x = torch.cat([image_to_tensor(load_image(p), shapes.spec) for p in paths])
    batches = [x[s:e] for s, e in batch_bounds(len(x), 8)]
    np.testing.assert_allclose(result.cka, cka_of_batches(shapes.module, b.module, batches, layers, layers),
                               atol=1e-10)


def test_fine_tuning_with_frozen_early_layers_changes_only_the_layers_above(shapes, folder):
    b = fine_tuned(shapes)
    result = drive(compare_steps(shapes, b, folder, batch_size=8))
    cka = result.layer_cka()
    for name in FROZEN:
        assert result.weight_change[name] == 0.0
        assert cka[name] == pytest.approx(1.0, abs=1e-9)
    above = [n for n in result.layers_a if n not in FROZEN]
    for name in above:  # the independent reference: the parameters themselves
        moved = any(not torch.equal(p, q) for p, q in zip(shapes.module.get_submodule(name).parameters(),
                                                             b.module.get_submodule(name).parameters()))
        assert (result.weight_change[name] > 0) == moved
    assert result.weight_change["classifier.fc1"] > 0.01
    assert cka["classifier.fc2"] < 0.95 and cka["classifier.fc1"] < 0.95
    assert min(cka[n] for n in above) < min(cka[n] for n in FROZEN)


def test_pretrained_against_reinitialised_has_low_cka_in_late_layers(shapes, folder):
    """anatome#18: a trained ResNet and a random one came out nearly identical there; CKA must not."""
    result = drive(compare_steps(shapes, reinitialised(shapes), folder, batch_size=8))
    cka = result.layer_cka()
    for name in ("features.conv5", "features.bn5", "classifier.fc1", "classifier.fc2"):
        assert cka[name] < 0.3, (name, cka[name])
    assert all(result.weight_change[n] > 0.1 for n in result.layers_a if n.endswith(("conv5", "fc1", "fc2")))


def test_weight_change_is_the_relative_norm_of_the_difference(shapes):
    b = copy.deepcopy(shapes)
    fc = b.module.get_submodule("classifier.fc1")
    fc.weight.add_(0.01)
    w, bias = shapes.module.get_submodule("classifier.fc1").weight, shapes.module.get_submodule("classifier.fc1").bias
    expected = (0.01 * np.sqrt(w.numel())) / float(torch.cat([w.flatten(), bias.flatten()]).double().norm())
    assert weight_change(shapes.module, b.module, "classifier.fc1") == pytest.approx(expected, rel=1e-6)
    assert weight_change(shapes.module, b.module, "features.relu1") is None


def test_different_architectures_compare_only_the_layers_that_match(shapes, folder):
    from explorer.core.models.spec import LoadedModel

    other = ShapesNet(num_classes=4).eval()
    other.load_state_dict({k: v for k, v in shapes.module.state_dict().items() if not k.startswith("classifier.fc2")},
                          strict=False)
    b = LoadedModel("four classes", other, shapes.spec, trained=False, source="test")
    match = match_layers(shapes, b)
    assert "classifier.fc2" in match.differ and "classifier.fc2" not in match.matched
    result = drive(compare_steps(shapes, b, folder, batch_size=11))
    assert "classifier.fc2" not in result.layers_a
    assert result.layer_cka()["classifier.fc1"] == pytest.approx(1.0, abs=1e-9)


def test_one_image_gives_both_top5_and_the_units_activation_in_each(shapes, folder):
    b = reinitialised(shapes)
    x = image_to_tensor(load_image(folder / "00000.png"), shapes.spec)
    out = compare_image(shapes, b, x, "features.conv3", 5)
    ra, rb = run_forward(shapes.module, x, ["features.conv3"]), run_forward(b.module, x, ["features.conv3"])
    assert out["top_a"] == top_k(ra.logits, shapes.spec.labels, 5)
    assert out["top_b"] == top_k(rb.logits, b.spec.labels, 5)
    np.testing.assert_array_equal(out["unit_a"], ra.activations["features.conv3"][0, 5].numpy())
    np.testing.assert_array_equal(out["unit_b"], rb.activations["features.conv3"][0, 5].numpy())
    with pytest.raises(InputError):
        compare_image(shapes, b, x, "features.conv3", 64)


def test_top_overlap_counts_the_shared_top_images_of_each_unit(shapes, folder):
    b = reinitialised(shapes)
    ia = drive(scan_steps(shapes, folder, ["features.conv5"], k=4, code_layer=None))
    ib = drive(scan_steps(b, folder, ["features.conv5"], k=4, code_layer=None))
    same = top_overlap(ia, ia, "features.conv5")
    assert (same == 4).all()
    overlap = top_overlap(ia, ib, "features.conv5")
    la, lb = ia.layer("features.conv5"), ib.layer("features.conv5")
    for u in range(0, la.units, 17):
        pa = {ia.paths[i] for i in la.images[u]}
        pb = {ib.paths[i] for i in lb.images[u]}
        assert overlap[u] == len(pa & pb)
    assert overlap.mean() < 4


def test_closing_the_pass_midway_removes_its_hooks(shapes, folder):
    a, b = copy.deepcopy(shapes), reinitialised(shapes)
    steps = compare_steps(a, b, folder, batch_size=4)
    first = next(steps)
    assert first.done < first.total
    assert any(m._forward_hooks for m in a.module.modules())  # the Gram hooks are on while it runs
    steps.close()  # what Cancel does
    assert not any(m._forward_hooks for m in list(a.module.modules()) + list(b.module.modules()))
