"""Top-k patches and the map of codes: receptive fields, the scan against brute force, resume, skips, t-SNE."""
from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from explorer.cli import main
from explorer.cli.topk import generate_folder
from explorer.core.models import load_model
from explorer.core.preprocess import image_to_tensor, load_image
from explorer.core.receptive_field import receptive_fields
from explorer.core.steps import drive
from explorer.core.topk.embed import embed_steps, map_quality, snap_to_grid
from explorer.core.topk.index import TopKIndex
from explorer.core.topk.scan import folder_images, scan_steps


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes", device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = generate_folder(tmp_path_factory.mktemp("shapes") / "images", 36, seed=3)
    (root / "circle" / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEP_EXPLORER_INDEX_DIR", str(tmp_path / "index"))


def _linearised(model: nn.Module) -> nn.Module:
    """ReLU → identity, max → average pooling, every weight positive: the gradient of a unit is non-zero
    exactly on the pixels it can see."""
    m = copy.deepcopy(model)
    for mod in list(m.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(mod, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    with torch.no_grad():
        for t in list(m.parameters()) + [b for b in m.buffers() if b.dtype.is_floating_point]:
            t.abs_().add_(0.01)
    return m.eval()


def _gradient_support(model, layer, shape, pos):
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.update(o=o))
    x = torch.ones(1, *shape, requires_grad=True)
    model(x)
    handle.remove()
    (g,) = torch.autograd.grad(store["o"][0, 0, pos[0], pos[1]], x)
    nz = (g[0].abs().sum(0) > 0).nonzero()
    return (int(nz[:, 1].min()), int(nz[:, 0].min()), int(nz[:, 1].max()) + 1, int(nz[:, 0].max()) + 1)


def test_receptive_field_is_the_gradient_support(shapes):
    fields, traced = receptive_fields(shapes.module, shapes.spec.shape)
    assert traced
    lin = _linearised(shapes.module)
    for layer in ("features.relu1", "features.pool2", "features.conv4", "features.relu5"):
        for pos in ((0, 0), (3, 2), (5, 7)):
            assert fields[layer].box(pos, shapes.spec.size) == _gradient_support(lin, layer, shapes.spec.shape, pos)
    # a real (non-linear) unit sees no pixel outside its field
    x = torch.randn(1, *shapes.spec.shape, requires_grad=True)
    store = {}
    h = dict(shapes.module.named_modules())["features.conv4"].register_forward_hook(lambda m, i, o: store.update(o=o))
    with torch.enable_grad():
        shapes.module(x)
        h.remove()
        (g,) = torch.autograd.grad(store["o"][0, :, 6, 5].sum(), x)
    x0, y0, x1, y1 = fields["features.conv4"].box((6, 5), shapes.spec.size)
    outside = g[0].abs().sum(0).clone()
    outside[y0:y1, x0:x1] = 0
    assert float(outside.max()) == 0.0


def test_receptive_field_through_residual_blocks():
    import torchvision  # noqa: PLC0415

    model = torchvision.models.resnet18().eval()
    fields, traced = receptive_fields(model, (3, 96, 96))
    assert traced
    lin = _linearised(model)
    for layer in ("maxpool", "layer1", "layer2.0.conv1"):
        for pos in ((0, 0), (3, 2)):
            assert fields[layer].box(pos, (96, 96)) == _gradient_support(lin, layer, (3, 96, 96), pos)


def _brute_force(loaded, paths, layer, k):
    """Every image alone, its whole activation map kept; the top k per unit by a stable sort in file order."""
    maps = []
    for p in paths:
        store = {}
        h = dict(loaded.module.named_modules())[layer].register_forward_hook(
            lambda m, i, o: store.update(o=o.detach().clone()))
        with torch.no_grad():
            loaded.module(image_to_tensor(load_image(p), loaded.spec))
        h.remove()
        maps.append(store["o"][0].flatten(1).numpy())  # (C, HW)
    maps = np.stack(maps)  # (N, C, HW)
    values, where = maps.max(2), maps.argmax(2)  # (N, C)
    order = np.argsort(-values, axis=0, kind="stable")[:k]  # (k, C)
    return values, where, order


def test_scan_equals_brute_force_and_skips_unreadable(shapes, folder):
    index = drive(scan_steps(shapes, folder, ["features.conv3", "features.relu5"], k=5, batch_size=8))
    assert [s["path"] for s in index.skipped] == [str(folder / "circle" / "broken.png")]
    assert "broken.png" in index.skipped[0]["error"]
    paths = [str(p) for p, _ in folder_images(folder) if p.name != "broken.png"]
    assert index.paths == paths and len(index.predictions) == 36 and index.codes.shape == (36, 64)
    assert index.classes[0] == "circle"
    for layer in ("features.conv3", "features.relu5"):
        lt = index.layer(layer)
        values, where, order = _brute_force(shapes, paths, layer, 5)
        width = lt.shape[-1]
        for unit in range(lt.units):
            expect = values[order[:, unit], unit]
            np.testing.assert_allclose(lt.values[unit], expect, rtol=1e-4, atol=1e-4)
            distinct = np.all(np.abs(np.diff(np.sort(values[:, unit]))) > 1e-3) and expect[-1] > 0
            if distinct:  # no near-ties: the same images and positions
                assert list(lt.images[unit]) == list(order[:, unit])
                for j, i in enumerate(order[:, unit]):
                    assert tuple(lt.positions[unit, j]) == divmod(int(where[i, unit]), width)
        entry = lt.top(0, index)[0]
        x0, y0, x1, y1 = entry["box"]
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128


def test_cancelled_scan_resumes_to_the_same_index(shapes, folder, tmp_path):
    full = drive(scan_steps(shapes, folder, ["features.relu4"], k=4, batch_size=8))
    out = tmp_path / "index.npz"
    gen = scan_steps(shapes, folder, ["features.relu4"], k=4, batch_size=8, out=out)
    next(gen), next(gen)
    gen.close()  # a cancel: what was done is saved
    partial = TopKIndex.load(out)
    assert not partial.complete and 0 < len(partial.paths) < 36
    progress = []
    resumed = drive(scan_steps(shapes, folder, ["features.relu4"], k=4, batch_size=8, out=out), progress.append)
    assert progress[0].note.startswith("resumed")
    assert resumed.complete and TopKIndex.load(out).complete
    assert resumed.paths == full.paths and resumed.predictions == full.predictions
    np.testing.assert_allclose(resumed.codes, full.codes, atol=1e-5)
    a, b = resumed.layer("features.relu4"), full.layer("features.relu4")
    np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    assert (a.images == b.images).all() and (a.positions == b.positions).all()


def test_map_groups_shapes_by_class(shapes, tmp_path):
    root = generate_folder(tmp_path / "map", 90, seed=5)
    index = drive(scan_steps(shapes, root, [], batch_size=30))
    layouts = []
    final = drive(embed_steps(index.codes, iterations=400), layouts.append)
    assert layouts[0].method == "pca" and final.final and final.coords.shape == (90, 2)
    quality = map_quality(index.codes, final.coords, index.classes)
    assert quality["knn_agreement"] >= 0.9 and quality["trustworthiness"] > 0.9
    grid = snap_to_grid(final.coords)
    assert len({(round(float(x), 4), round(float(y), 4)) for x, y in grid}) == 90


def test_cli_topk_and_embed(folder, tmp_path, capsys):
    out = tmp_path / "i.npz"
    rc = main(["topk", "--layer", "features.relu2", "--input", str(folder), "--k", "3", "--out", str(out),
               "--json", "--png", str(tmp_path / "g.png"), "--unit", "2"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 1  # one file was skipped (named)
    assert data["skipped"][0]["path"].endswith("broken.png")
    layer = data["layers"][0]
    assert layer["layer"] == "features.relu2" and len(layer["units"]) == 32
    top = layer["units"][2]["top"]
    assert len(top) == 3 and top[0]["value"] >= top[1]["value"] and set(top[0]) == {"path", "value", "y", "x", "box"}
    assert (tmp_path / "g.png").stat().st_size > 0
    rc = main(["embed", "--input", str(folder), "--out", str(tmp_path / "m.png"), "--csv", str(tmp_path / "c.csv"),
               "--iterations", "200"])
    text = capsys.readouterr().out
    assert "trustworthiness" in text and "5-NN agreement" in text
    rows = list(csv.reader(open(tmp_path / "c.csv")))
    assert rows[0] == ["path", "x", "y", "predicted"] and len(rows) == 37
    assert main(["topk", "--layer", "nope", "--input", str(folder)]) == 2
