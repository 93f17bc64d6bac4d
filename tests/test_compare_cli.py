"""``deep-explorer compare`` end to end: the report, the heatmap picture, and bad input (one line, exit 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from compare_fixtures import FROZEN, fine_tuned, image_folder
from explorer.cli import main
from explorer.core.compare import compare_steps
from explorer.core.models import load_model
from explorer.core.steps import drive


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare-cli")
    a = load_model("shapes", device="cpu")
    b = fine_tuned(a, steps=4, seed=1)
    torch.save(a.module.state_dict(), d / "a.pt")
    torch.save(b.module.state_dict(), d / "b.pt")
    folder = image_folder(d / "images", 14, seed=7)
    (folder / "zz-broken.png").write_bytes(b"not an image")
    return d, a, b, folder


def test_compare_writes_the_report_and_the_heatmap(capsys, checkpoints, tmp_path):
    d, a, b, folder = checkpoints
    out, png = tmp_path / "report.json", tmp_path / "heatmap.png"
    code, stdout, err = run_cli(capsys, "compare", "--model", "shapes", "--checkpoint", str(d / "a.pt"),
                                "--checkpoint-b", str(d / "b.pt"), "--input", str(folder), "--out", str(out),
                                "--png", str(png), "--batch-size", "5", "--device", "cpu")
    assert code == 1, err  # one file skipped: as topk, the exit status says so
    assert "skipped" in err and "zz-broken.png" in err and "Traceback" not in err
    report = json.loads(out.read_text())
    assert report["images"] == 14 and report["batches"] == 3  # 5, 5 and 4
    assert [s["path"] for s in report["skipped"]] == [str(folder / "zz-broken.png")]
    rows = {r["layer"]: r for r in report["layers"]}
    for name in FROZEN:
        assert rows[name]["weight_change"] == 0.0 and rows[name]["cka"] == pytest.approx(1.0, abs=1e-9)
    assert rows["classifier.fc1"]["weight_change"] > 0 and rows["classifier.fc2"]["cka"] < 0.99
    # the same figures as the core on the same models (the independent path: no files, no CLI)
    expected = drive(compare_steps(a, b, folder, batch_size=5))
    np.testing.assert_allclose(np.array(report["cka"], dtype=float), expected.cka, atol=1e-9)
    assert report["layers_a"] == expected.layers_a
    assert "classifier.fc2" in stdout and str(out) in stdout
    picture = np.asarray(Image.open(png))
    assert picture.ndim == 3 and picture.shape[0] > 12 * 24 and picture.shape[1] > 12 * 24


def test_compare_json_on_stdout(capsys, checkpoints, tmp_path):
    d, _, _, folder = checkpoints
    code, stdout, _ = run_cli(capsys, "compare", "--checkpoint-b", str(d / "b.pt"), "--input", str(folder),
                              "--layers", "features.conv1", "classifier.fc2", "--out", str(tmp_path / "r.json"),
                              "--json", "--batch-size", "8", "--device", "cpu")
    data = json.loads(stdout)
    assert code == 1 and data["layers_a"] == ["features.conv1", "classifier.fc2"]
    assert len(data["cka"]) == 2 and len(data["cka"][0]) == 2
    assert data == json.loads((tmp_path / "r.json").read_text())


@pytest.mark.parametrize("case", ["missing folder", "unwritable out", "wrong suffix", "missing b", "unknown layer",
                                  "small batch"])
def test_compare_bad_input_is_one_line_and_exit_2(capsys, checkpoints, tmp_path, case):
    d, _, _, folder = checkpoints
    args = {"--checkpoint-b": str(d / "b.pt"), "--input": str(folder), "--out": str(tmp_path / "r.json")}
    extra: list[str] = []
    if case == "missing folder":
        args["--input"] = str(tmp_path / "no-such-folder")
    elif case == "unwritable out":
        args["--out"] = str(tmp_path / "no" / "such" / "folder" / "r.json")
        (tmp_path / "no").write_text("a file where a folder should be")
    elif case == "wrong suffix":
        args["--out"] = str(tmp_path / "r.png")
    elif case == "missing b":
        args["--checkpoint-b"] = str(tmp_path / "none.pt")
    elif case == "unknown layer":
        extra = ["--layers", "features.conv9"]
    elif case == "small batch":
        extra = ["--batch-size", "3"]
    argv = ["compare", "--device", "cpu"] + [v for kv in args.items() for v in kv] + extra
    code, stdout, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("deep-explorer compare: error: "), err
    assert not (tmp_path / "r.json").exists()


def test_bench_compare_reports_both_times_and_their_ratio(capsys):
    code, stdout, err = run_cli(capsys, "bench", "compare", "--images", "12", "--batch-size", "6",
                                "--layers", "features.conv2", "classifier.fc1", "--json", "--device", "cpu")
    assert code == 0, err
    data = json.loads(stdout)
    for key in ("ours_s", "ours_cpu_s", "pytorch_cka_s", "pytorch_cka_cpu_s", "plain_s"):
        assert data[key] > 0
    assert data["ratio"] == pytest.approx(data["pytorch_cka_s"] / data["ours_s"])
    assert data["images"] == 12 and data["max_abs_diff"] < 0.05


def test_compare_top9_frozen_layers_keep_every_units_top9(capsys, checkpoints, tmp_path):
    d, a, b, folder = checkpoints
    code, stdout, err = run_cli(capsys, "compare", "--checkpoint-b", str(d / "b.pt"), "--input", str(folder),
                                "--layers", "features.conv1", "--top9", "features.relu2", "--out",
                                str(tmp_path / "r.json"), "--json", "--device", "cpu")
    top9 = json.loads(stdout)["top9"]
    assert code == 1, err
    assert top9["units"] == [9] * 32 and top9["all_same"] == 32  # relu2 is after frozen layers only
    code, stdout, err = run_cli(capsys, "compare", "--checkpoint-b", str(d / "b.pt"), "--input", str(folder),
                                "--layers", "features.conv1", "--top9", "classifier.fc2", "--out",
                                str(tmp_path / "r.json"), "--json", "--device", "cpu")
    top9 = json.loads(stdout)["top9"]
    # the reference: each model's own ranking of the images by the unit's output
    from explorer.core.preprocess import image_to_tensor, load_image
    from explorer.core.probe import run_forward
    paths = sorted(p for p in folder.iterdir() if p.name != "zz-broken.png")
    x = torch.cat([image_to_tensor(load_image(p), a.spec) for p in paths])
    ra = run_forward(a.module, x, ["classifier.fc2"]).activations["classifier.fc2"]
    rb = run_forward(b.module, x, ["classifier.fc2"]).activations["classifier.fc2"]
    expected = [len(set(ra[:, u].argsort(descending=True)[:9].tolist()) & set(rb[:, u].argsort(descending=True)[:9].tolist()))
                for u in range(ra.shape[1])]
    assert top9["units"] == expected and top9["mean"] < 9


def test_compare_another_architecture_compares_what_matches(capsys, checkpoints, tmp_path):
    from explorer.core.models.shapes import ShapesNet

    d, a, _, folder = checkpoints
    other = ShapesNet(num_classes=4)
    other.load_state_dict({k: v for k, v in a.module.state_dict().items() if not k.startswith("classifier.fc2")},
                          strict=False)
    torch.save(other.state_dict(), tmp_path / "four.pt")
    code, stdout, err = run_cli(capsys, "compare", "--checkpoint-b", str(tmp_path / "four.pt"), "--input", str(folder),
                                "--out", str(tmp_path / "r.json"), "--json", "--device", "cpu")
    data = json.loads(stdout)
    assert code == 1, err
    assert data["unmatched"]["shapes_differ"] == ["classifier.fc2"] and "classifier.fc2" not in data["layers_a"]
    rows = {r["layer"]: r for r in data["layers"]}
    assert rows["classifier.fc1"]["weight_change"] == 0.0 and rows["classifier.fc1"]["cka"] == pytest.approx(1, abs=1e-9)
