"""timm models by name (the optional extra ``vit``): ``timm:NAME`` and plain names torchvision lacks, their input
specs, random and pretrained weights (read from the cache, never the network here), one clear line without timm
and one when the hub cannot be reached. Tests that need timm skip without the extra."""
from __future__ import annotations

import socket
import sys

import pytest
import torch

from explorer.cli import main
from explorer.core.errors import ModelLoadError, WeightsDownloadError
from explorer.core.models import load_model
from explorer.core.models.zoo import TIMM_EXTRA, TimmWeights, build_timm_model, timm_weights

TINY = "vit_tiny_patch16_224"


@pytest.fixture
def hub_dir(tmp_path):
    """torch.hub's folder (where every download is cached) moved to an empty temporary folder."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(before)


@pytest.fixture
def offline(monkeypatch):
    """No network: name lookups and connections fail as they do with the cable out."""
    def unreachable(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    monkeypatch.setattr(socket, "create_connection", unreachable)


def test_without_timm_a_timm_name_gets_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ModelLoadError) as err:
        load_model(f"timm:{TINY}", weights="none")
    assert str(err.value) == TIMM_EXTRA and "'vit'" in str(err.value)
    with pytest.raises(ModelLoadError, match="optional extra 'vit'"):  # a plain unknown name says so too
        load_model(TINY, weights="none")
    rc = main(["layers", "--model", f"timm:{TINY}", "--weights", "none"])
    err_text = capsys.readouterr().err
    assert rc == 2 and "optional extra 'vit'" in err_text
    assert len(err_text.strip().splitlines()) == 1 and "Traceback" not in err_text


def test_timm_model_by_prefixed_and_plain_name():
    timm = pytest.importorskip("timm")
    loaded = load_model(f"timm:{TINY}", weights="none")
    assert loaded.name == f"timm:{TINY}" and not loaded.trained and "timm" in loaded.source
    reference = timm.create_model(TINY, pretrained=False)
    cfg = reference.pretrained_cfg
    assert loaded.spec.size == tuple(cfg["input_size"][1:]) and loaded.spec.mean == tuple(cfg["mean"])
    assert loaded.spec.std == tuple(cfg["std"]) and len(loaded.spec.labels) == 1000
    assert type(loaded.module) is type(reference)
    assert [n for n, _ in loaded.module.named_parameters()] == [n for n, _ in reference.named_parameters()]
    plain = load_model("deit_tiny_distilled_patch16_224", weights="none")  # not a torchvision name
    assert plain.name == "timm:deit_tiny_distilled_patch16_224"
    assert type(plain.module).__name__ == "VisionTransformerDistilled"
    assert load_model("resnet18", weights="none").source.startswith("torchvision")  # torchvision's names first
    with pytest.raises(ModelLoadError, match="timm has no model called 'no_such_net'"):
        load_model("timm:no_such_net", weights="none")


def test_timm_vit_built_for_another_input_size():
    pytest.importorskip("timm")
    loaded = load_model(f"timm:{TINY}", weights="none", input_size=(64, 64))
    assert loaded.spec.size == (64, 64)
    assert loaded.module.pos_embed.shape[1] == 1 + 4 * 4  # 64 px / 16: a 4x4 grid and the class token
    with torch.no_grad():
        assert loaded.module(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_pretrained_timm_weights_load_from_the_cache_without_network(hub_dir, offline):
    pytest.importorskip("timm")
    from safetensors.torch import save_file  # noqa: PLC0415

    torch.manual_seed(5)
    source = build_timm_model(TINY)
    weights = timm_weights(source, TINY)
    assert weights.url.startswith("https://huggingface.co/timm/") and weights.url.endswith("model.safetensors")
    folder = weights.cache_folder
    assert str(folder).startswith(str(hub_dir))
    folder.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    loaded = load_model(f"timm:{TINY}", weights="pretrained")
    assert loaded.trained
    for name, value in loaded.module.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)


def test_pretrained_timm_weights_offline_give_one_line_and_the_random_weights_way_out(hub_dir, offline, capsys):
    pytest.importorskip("timm")
    with pytest.raises(WeightsDownloadError) as err:
        load_model(f"timm:{TINY}", weights="pretrained")
    message = str(err.value)
    assert err.value.random_weights_fallback and TINY in message and "huggingface.co" in message
    assert "offline" in message and "\n" not in message
    assert not any(p.is_file() for p in hub_dir.rglob("*"))  # nothing half-downloaded is left
    rc = main(["predict", "--model", f"timm:{TINY}", "--input", "x.png"])
    text = capsys.readouterr().err.strip()
    assert rc == 2 and text.endswith("(--weights none)") and len(text.splitlines()) == 1


def test_timm_weights_without_hub_id_use_the_config_url():
    pytest.importorskip("timm")
    module = build_timm_model(TINY)
    module.pretrained_cfg = {**module.pretrained_cfg, "hf_hub_id": None}
    w = timm_weights(module, TINY)
    assert isinstance(w, TimmWeights) and w.url.endswith(".npz") and w.custom_load
