"""The developer scripts added for screenshots and the GPU check refuse bad input in one line, before any
work: an unwritable destination, a nonsense value, a missing device."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=120,
                          env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"}, cwd=ROOT)


@pytest.mark.parametrize("args, says", [
    (["--out", "/proc/no/shots"], "cannot write into /proc/no/shots"),
    (["--play", "nan"], "is not a positive number of seconds"),
    (["--play", "0"], "is not a positive number of seconds"),
])
def test_screenshots_refuses_bad_input(args, says):
    r = run("scripts/screenshots.py", *args)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if "error" in line]) == 1


@pytest.mark.parametrize("args, says", [
    (["--out", "/proc/no/x.json", "--device", "cpu"], "cannot write /proc/no/x.json"),
    (["--out", "results.txt", "--device", "cpu"], "must end in .json"),
    (["--out", "/tmp/x.json", "--device", "banana"], "unknown device 'banana'"),
    (["--out", "/tmp/x.json", "--device", "cpu", "--seconds", "nan"], "--seconds must be a positive number"),
])
def test_gpu_live_refuses_bad_input_before_loading_a_model(args, says):
    r = run("benchmarks/gpu_live.py", *args)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr
    assert not r.stdout  # no model was measured
