"""``deep-explorer bench live`` end to end on a generated video (with a tiny model standing in)."""
from __future__ import annotations

import json
import sys
import threading

import pytest

import explorer.cli.live as cli_live
from explorer.cli import main

from live_fixtures import make_video, tiny_model

pytestmark = pytest.mark.timeout(90)


def test_bench_live_prints_one_json_object_with_the_figures(qapp, tmp_path, monkeypatch, capsys):
    video = make_video(tmp_path / "clip.mp4")
    monkeypatch.setattr(cli_live, "model_from_args", lambda args, weights=None: tiny_model())
    before = {t.ident for t in threading.enumerate()}
    status = main(["bench", "live", "--video", str(video), "--model", "tiny", "--layer", "conv2",
                   "--seconds", "1", "--switch-interval", "1", "--json"])
    assert status == 0
    figures = json.loads(capsys.readouterr().out)
    assert {"live_fps", "bare_forward_fps", "ratio", "p50_ms", "p95_ms", "dropped"} <= set(figures)
    assert figures["live_fps"] > 0 and figures["bare_forward_fps"] > 0
    assert figures["ratio"] == pytest.approx(figures["live_fps"] / figures["bare_forward_fps"], rel=0.02, abs=1e-3)
    assert 0 < figures["p50_ms"] <= figures["p95_ms"]
    # the ceiling: the slower of the source and the bare model, and the live rate against it
    assert figures["ceiling_fps"] == pytest.approx(min(figures["source_fps"], figures["bare_forward_fps"]), abs=0.011)
    assert figures["ceiling_ratio"] == pytest.approx(figures["live_fps"] / figures["ceiling_fps"], rel=0.02)
    assert set(figures["stage_ms"]) == {"preprocess", "forward", "tile", "display"}
    assert figures["live_cpu_s"] > 0 and figures["bare_cpu_s"] > 0 and figures["helper_threads"] == 1
    assert figures["layer"] == "conv2"
    assert figures["switch_interval_ms"] == 1 and sys.getswitchinterval() == pytest.approx(0.005)  # restored
    assert not [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]


def test_bench_live_missing_video_is_one_line_error(qapp, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_live, "model_from_args", lambda args, weights=None: tiny_model())
    status = main(["bench", "live", "--video", str(tmp_path / "none.mp4"), "--model", "tiny", "--seconds", "1"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("deep-explorer bench: error: no such video file") and "\n" not in err
