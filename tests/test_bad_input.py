"""Every bad input gets a clear answer: sizes, folders, values, outputs, formats, descriptions, tracebacks.

Each test names the kind of bad input it covers; removing the handling of that kind makes it fail.
"""
from __future__ import annotations

import json
import logging
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from explorer.cli import main
from explorer.core import memory
from explorer.core.errors import ImageTooLargeError, InputError, ModelLoadError, OutputError, ResourceLimitError
from explorer.core.models import load_model, read_labels_file
from explorer.core.models.shapes import ShapesNet
from explorer.core.outputs import atomic_write, check_destination, check_destination_folder, save_npy
from explorer.core.preprocess import load_image, load_npy_input
from explorer.core.resources import RESOURCES

SAMPLES = RESOURCES / "images"
CIRCLE, TRIANGLE = SAMPLES / "0001_circle.png", SAMPLES / "0002_triangle.png"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --- size: memory estimated before allocating; image decoding capped ----------------------------------


def test_a_huge_input_size_is_refused_before_anything_is_allocated(capsys, monkeypatch):
    from explorer.core import probe

    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * 2**30)
    monkeypatch.setattr(probe, "layer_table", lambda *a, **k: pytest.fail("the forward ran"))
    code, _, err = run_cli(capsys, "layers", "--input-size", "100000")
    line = one_line(err)
    assert code == 2
    assert "8.0 GB" in line and "available memory" in line
    assert memory.LIMIT_ENV in line and "--input-size" in line


def test_the_estimate_counts_activations_not_only_the_input(monkeypatch):
    model = ShapesNet().eval()
    shape = (3, 256, 256)
    estimate = memory.estimate_forward_bytes(model, shape)
    measured = []
    # the counting rule (core.costs): outputs that are new storage; an in-place ReLU's output is its input
    def count(_m, inputs, out):
        if out.untyped_storage().data_ptr() not in {t.untyped_storage().data_ptr() for t in inputs}:
            measured.append(out.numel())

    handles = [m.register_forward_hook(count) for m in model.modules() if not any(True for _ in m.children())]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    actual = 4 * (sum(measured) + np.prod(shape)) + 6 * shape[1] * shape[2]
    assert 0.9 * actual <= estimate <= 1.1 * actual
    # a limit above the input's size but below the activations' refuses it
    monkeypatch.setenv(memory.LIMIT_ENV, str(int(4 * np.prod(shape) * 2)))
    with pytest.raises(ResourceLimitError, match=memory.LIMIT_ENV):
        memory.check_forward_memory(model, shape)
    monkeypatch.setenv(memory.LIMIT_ENV, "0")  # 0: no limit
    assert memory.check_forward_memory(model, shape) == 0


def test_batches_and_gradients_multiply_the_estimate():
    model = ShapesNet().eval()
    one = memory.estimate_forward_bytes(model, (3, 128, 128))
    assert memory.estimate_forward_bytes(model, (3, 128, 128), batch=8) > 7 * one
    assert memory.estimate_forward_bytes(model, (3, 128, 128), gradients=True) > 1.8 * one


def test_occlusion_batch_is_refused_with_both_options_named(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(memory.LIMIT_ENV, "200M")
    code, _, err = run_cli(capsys, "attribute", "--input", str(CIRCLE), "--method", "occlusion",
                           "--batch-size", "4096", "--out", str(tmp_path / "m.npy"))
    line = one_line(err)
    assert code == 2 and "--batch-size" in line and "200.0 MB" in line
    assert not (tmp_path / "m.npy").exists()


def test_memory_limit_setting_is_parsed_or_refused(monkeypatch):
    assert memory.parse_bytes("8G") == 8 * 2**30 and memory.parse_bytes("512MiB") == 512 * 2**20
    assert memory.parse_bytes("1000") == 1000 and memory.parse_bytes("none") is None
    monkeypatch.setenv(memory.LIMIT_ENV, "lots")
    with pytest.raises(ResourceLimitError, match="not a size"):
        memory.memory_limit()


def test_available_memory_without_psutil_reads_proc_meminfo(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psutil", None)  # import fails
    available = memory.available_memory()
    assert available is None or available > 0
    with open("/proc/meminfo") as f:
        assert available is not None or "MemAvailable" not in f.read()


def test_a_decompression_bomb_is_one_line_naming_the_limit(capsys, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 megapixels, a few kB on disk
    assert bomb.stat().st_size < 200_000
    code, _, err = run_cli(capsys, "predict", "--input", str(bomb))
    line = one_line(err)
    assert code == 2
    assert "144,000,000 pixels" in line and "100,000,000" in line and "DEEP_EXPLORER_MAX_IMAGE_PIXELS" in line


@pytest.mark.parametrize("side", [40, 200])  # 1.6x the limit (our check), 40x (Pillow's bomb error)
def test_images_above_the_pixel_limit_are_an_input_error(tmp_path, monkeypatch, side):
    monkeypatch.setenv("DEEP_EXPLORER_MAX_IMAGE_PIXELS", "1000")
    path = tmp_path / "big.png"
    Image.new("RGB", (side, side)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(ImageTooLargeError, match="limit of 1,000 pixels") as info:
            load_image(path)
    assert isinstance(info.value, InputError)
    monkeypatch.setenv("DEEP_EXPLORER_MAX_IMAGE_PIXELS", "0")  # 0: no limit
    assert load_image(path).shape == (side, side, 3)


# --- folders: every good file processed, each bad one reported -------------------------------------


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(CIRCLE.read_bytes())
    (folder / "b.png").write_bytes(b"not an image at all")
    (folder / "c.png").write_bytes(TRIANGLE.read_bytes())
    return folder


def _assert_reported(err: str, command: str) -> None:
    lines = err.strip().splitlines()
    assert lines == [f"deep-explorer {command}: skipped {lines[0].split('skipped ')[1]}",
                     f"deep-explorer {command}: 2 of 3 inputs done, 1 failed"]
    assert "b.png" in lines[0] and "not an image" in lines[0]


def test_predict_goes_on_past_a_bad_file(capsys, mixed_folder):
    code, out, err = run_cli(capsys, "predict", "--input", str(mixed_folder), "--json")
    assert code == 1
    data = json.loads(out)
    assert [p["input"].rsplit("/", 1)[1] for p in data["predictions"]] == ["a.png", "c.png"]
    assert [f["input"].rsplit("/", 1)[1] for f in data["failed"]] == ["b.png"]
    assert "not an image" in data["failed"][0]["error"]
    _assert_reported(err, "predict")


def test_attribute_goes_on_past_a_bad_file(capsys, mixed_folder, tmp_path):
    out_dir = tmp_path / "maps"
    code, out, err = run_cli(capsys, "attribute", "--input", str(mixed_folder), "--method", "gradient",
                             "--out", str(out_dir), "--json")
    assert code == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.npy", "c.npy"]  # no temporary files left
    assert [f["input"].rsplit("/", 1)[1] for f in json.loads(out)["failed"]] == ["b.png"]
    _assert_reported(err, "attribute")


def test_activations_of_several_inputs_go_on_past_a_bad_file(capsys, mixed_folder, tmp_path):
    out_dir, png_dir = tmp_path / "acts", tmp_path / "grids"
    code, out, err = run_cli(capsys, "activations", "--input", str(mixed_folder), "--layer", "features.conv1",
                             "--out", str(out_dir), "--png", str(png_dir), "--json")
    assert code == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.npy", "c.npy"]
    assert sorted(p.name for p in png_dir.iterdir()) == ["a.png", "c.png"]
    data = json.loads(out)
    assert len(data["results"]) == 2 and len(data["failed"]) == 1
    _assert_reported(err, "activations")


def test_a_missing_file_among_several_is_skipped(capsys, tmp_path):
    code, out, err = run_cli(capsys, "predict", "--input", str(CIRCLE), str(tmp_path / "gone.png"), "--json")
    assert code == 1 and len(json.loads(out)["predictions"]) == 1
    assert "no such file" in err.splitlines()[0]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "map.npy"
    save_npy(path, np.arange(3, dtype=np.float32))

    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert np.load(path).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["map.npy"]


# --- values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_a_tensor_with_nan_or_inf_is_refused(tmp_path, bad, word, capsys):
    x = np.zeros((3, 128, 128), np.float32)
    x[0, 5, 5] = bad
    np.save(tmp_path / "x.npy", x)
    spec = load_model("shapes").spec
    with pytest.raises(InputError, match=f"1 {word} value"):
        load_npy_input(tmp_path / "x.npy", spec)
    code, _, err = run_cli(capsys, "attribute", "--input", str(tmp_path / "x.npy"), "--method", "occlusion",
                           "--out", str(tmp_path / "m.npy"))
    assert code == 2 and word in one_line(err)
    assert not (tmp_path / "m.npy").exists()


def test_labels_that_do_not_match_the_classes_are_refused(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    code, _, err = run_cli(capsys, "predict", "--input", str(CIRCLE), "--labels", str(labels))
    assert code == 2 and "3 labels but the model has 6 output classes" in one_line(err)
    labels.write_text("\n".join("abcdef"))
    code, out, _ = run_cli(capsys, "predict", "--input", str(CIRCLE), "--labels", str(labels), "--json")
    assert code == 0 and json.loads(out)["predictions"][0]["top"][0]["label"] == "a"


@pytest.mark.parametrize("content", [bytes(range(256)), b"\xff\xfe\x00\x00garbage", b"", b"\n \n"])
def test_binary_or_empty_labels_files_are_one_line(tmp_path, content):
    path = tmp_path / "labels.txt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="labels file"):
        read_labels_file(path)


@pytest.mark.parametrize("argv", [
    ["predict", "--input", "IMG", "--top", "-3"],
    ["predict", "--input", "IMG", "--top", "0"],
    ["attribute", "--input", "IMG", "--out", "OUT", "--window", "0"],
    ["attribute", "--input", "IMG", "--out", "OUT", "--stride", "-2"],
    ["attribute", "--input", "IMG", "--out", "OUT", "--batch-size", "0"],
    ["attribute", "--input", "IMG", "--out", "OUT", "--opacity", "1.5"],
    ["attribute", "--input", "IMG", "--out", "OUT", "--layer", "features.conv1", "--unit", "-1"],
    ["layers", "--mean", "nan"],
])
def test_out_of_range_numbers_are_usage_errors(capsys, tmp_path, argv):
    argv = [str(CIRCLE) if a == "IMG" else str(tmp_path / "m.npy") if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and "error: argument" in err


def test_a_unit_out_of_range_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "attribute", "--input", str(CIRCLE), "--layer", "features.conv1", "--unit", "999",
                           "--out", str(tmp_path / "m.npy"))
    assert code == 2 and "unit 999 is out of range" in one_line(err)


# --- outputs: checked before the work -------------------------------------------------------------


def test_an_unwritable_out_is_one_line_before_the_work(capsys, tmp_path, monkeypatch):
    from explorer.core import probe

    monkeypatch.setattr(probe, "run_forward", lambda *a, **k: pytest.fail("the work ran"))
    code, _, err = run_cli(capsys, "activations", "--input", str(CIRCLE), "--layer", "features.conv1",
                           "--out", "/proc/x.npy")
    assert code == 2 and "/proc" in one_line(err)


def test_a_folder_as_png_is_refused_before_the_npy_is_written(capsys, tmp_path):
    out = tmp_path / "a.npy"
    code, _, err = run_cli(capsys, "activations", "--input", str(CIRCLE), "--layer", "features.conv1",
                           "--out", str(out), "--png", str(tmp_path))
    assert code == 2 and "is a folder" in one_line(err)
    assert not out.exists()
    code, _, err = run_cli(capsys, "attribute", "--input", str(CIRCLE), "--out", str(out), "--png", str(tmp_path))
    assert code == 2 and "is a folder" in one_line(err) and not out.exists()


def test_check_destination(tmp_path):
    assert check_destination(tmp_path / "new" / "a.npy", (".npy",)) == tmp_path / "new" / "a.npy"
    with pytest.raises(OutputError, match="must end in .npy"):
        check_destination(tmp_path / "a.txt", (".npy",))
    with pytest.raises(OutputError, match="is a folder"):
        check_destination(tmp_path, (".npy",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_destination(tmp_path / "file" / "a.npy")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_destination_folder(tmp_path / "file")
    with pytest.raises(OutputError, match="not writable"):
        check_destination("/proc/x.png", (".png",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "new"]  # the probe files are gone


# --- formats that should work -----------------------------------------------------------------------


def _sequential() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5)),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 6)).eval()


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_sequentials_are_explorable(capsys, tmp_path, how):
    reference = _sequential()
    path = tmp_path / f"{how}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.jit.trace(reference, torch.randn(1, 3, 16, 16)) if how == "trace" \
            else torch.jit.script(reference)
        torch.jit.save(compiled, str(path))
    code, out, err = run_cli(capsys, "layers", "--model", str(path), "--input-size", "32", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)["layers"]}
    assert rows["2.0"]["type"] == "Conv2d" and rows["2.0"]["output_shape"] == [5, 30, 30]
    assert rows["2.0"]["macs"] == 5 * 30 * 30 * 4 * 9 and rows["2.1"]["params"] == 10
    assert rows["2"]["type"] == "Sequential"

    out_npy = tmp_path / "act.npy"
    code, _, err = run_cli(capsys, "activations", "--model", str(path), "--input", str(CIRCLE), "--layer", "2.0",
                           "--input-size", "32", "--out", str(out_npy))
    assert code == 0, err
    loaded = load_model(str(path), input_size=(32, 32))
    from explorer.core.preprocess import load_input

    x, _ = load_input(CIRCLE, loaded.spec)
    with torch.no_grad():
        expected = reference[2][0](reference[1](reference[0](x)))[0]
    np.testing.assert_allclose(np.load(out_npy), expected.numpy(), rtol=1e-5, atol=1e-5)


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3))) * 2


def test_torchscript_with_its_own_forward_says_what_to_save(capsys, tmp_path):
    path = tmp_path / "custom.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Custom().eval()), str(path))
    code, out, _ = run_cli(capsys, "layers", "--model", str(path), "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["layers"]}
    assert rows["conv"]["params"] == 112 and rows["conv"]["output_shape"] is None
    code, _, err = run_cli(capsys, "activations", "--model", str(path), "--input", str(CIRCLE), "--layer", "conv",
                           "--out", str(tmp_path / "a.npy"))
    assert code == 2 and "state_dict" in one_line(err)


def test_a_garbage_pt2_is_one_line(capfd, tmp_path):
    path = tmp_path / "garbage.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("garbage/archive_format", "pt2")
        z.writestr("garbage/models/model.json", "{not json")
    code = main(["layers", "--model", str(path)])
    err = capfd.readouterr().err
    assert code == 2
    line = one_line(err)
    assert "garbage.pt2" in line and "RuntimeError" in line


# --- the model's description in every JSON ---------------------------------------------------------


def test_every_subcommand_json_describes_the_model_source(capsys, tmp_path):
    torch.manual_seed(0)
    sd = tmp_path / "sd.pt"
    torch.save(ShapesNet().state_dict(), sd)
    common = ["--checkpoint", str(sd), "--json"]
    runs = [["layers"], ["predict", "--input", str(CIRCLE)],
            ["activations", "--input", str(CIRCLE), "--layer", "features.conv1", "--out", str(tmp_path / "a.npy")],
            ["attribute", "--input", str(CIRCLE), "--method", "gradient", "--out", str(tmp_path / "m.npy")]]
    for argv in runs:
        code, out, err = run_cli(capsys, *argv, *common)
        assert code == 0, err
        model = json.loads(out)["model"]
        assert model["name"] == "sd.pt" and model["trained"] is True and model["device"] == "cpu"
        assert "state dict" in model["source"] and "architecture detected: shapes_net" in model["source"]
        assert model["input"]["shape"] == [3, 128, 128] and model["input"]["channels"] == 3


# --- no traceback: one line, the traceback in the log file ------------------------------------------


def test_an_unexpected_error_is_one_line_naming_the_log(capsys, tmp_path, monkeypatch):
    from explorer.core import probe

    log = tmp_path / "state" / "my.log"
    monkeypatch.setenv("DEEP_EXPLORER_LOG", str(log))

    def boom(*_a, **_k):
        raise ValueError("something inside broke")

    monkeypatch.setattr(probe, "layer_table", boom)
    code, _, err = run_cli(capsys, "layers")
    line = one_line(err)
    assert code == 3 and "ValueError: something inside broke" in line and str(log) in line
    logging.getLogger("explorer").handlers[0].flush()
    text = log.read_text()
    assert "Traceback" in text and "something inside broke" in text

    code, _, err = run_cli(capsys, "layers", "-v")
    assert code == 3 and "Traceback" in err  # --verbose: the log on stderr too


def test_the_log_lives_in_the_state_folder(monkeypatch, tmp_path):
    from explorer.logs import log_path, setup_logging

    monkeypatch.delenv("DEEP_EXPLORER_LOG")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert log_path() == tmp_path / "xdg" / "deep-explorer" / "deep-explorer.log"
    assert setup_logging(False) == log_path() and log_path().exists()
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert log_path() == tmp_path / "home" / ".local" / "state" / "deep-explorer" / "deep-explorer.log"
    monkeypatch.setenv("DEEP_EXPLORER_LOG", str(tmp_path / "here.log"))
    assert setup_logging(True) == tmp_path / "here.log"
    logger = logging.getLogger("explorer")
    assert len([h for h in logger.handlers if getattr(h, "_deep_explorer", False)]) == 2
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def test_a_model_whose_output_is_nan_predicts_nothing(capsys, tmp_path):
    model = ShapesNet().eval()
    with torch.no_grad():
        model.classifier[-1].bias.fill_(float("nan"))
    sd = tmp_path / "nan.pt"
    torch.save(model.state_dict(), sd)
    code, out, err = run_cli(capsys, "predict", "--checkpoint", str(sd), "--input", str(CIRCLE), str(TRIANGLE),
                             "--json")
    assert code == 1 and json.loads(out)["predictions"] == []
    assert "not finite" in err.splitlines()[0]


def test_compiled_stand_ins_follow_dtype_and_device_moves(tmp_path):
    from explorer.core.models.scripted import explorable_script

    reference = _sequential()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.jit.script(reference)
    chain = explorable_script(compiled, torch.randn(1, 3, 16, 16))
    assert chain is not None and len(list(chain.parameters())) == len(list(reference.parameters()))
    chain.to(torch.float64)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert chain(x).dtype == torch.float64
        torch.testing.assert_close(chain(x), reference.double()(x))
