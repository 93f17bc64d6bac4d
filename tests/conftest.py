"""Shared test set-up: Qt offscreen, one torch thread, settings in a temporary file, no leftover threads."""
from __future__ import annotations

import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle threads sleep, not spin
os.environ.setdefault("QT_LOGGING_RULES", "*.debug=false;qt.qpa.*=false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEP_EXPLORER_SETTINGS", str(tmp_path / "settings.ini"))


@pytest.fixture
def no_thread_leak():
    """Fail if a Python thread started by the test is still alive afterwards."""
    before = set(threading.enumerate())
    yield
    for _ in range(50):
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        if not extra:
            return
        threading.Event().wait(0.1)
    pytest.fail(f"threads left running: {[t.name for t in extra]}")


@pytest.fixture(autouse=True)
def _isolated_log(tmp_path, monkeypatch):
    """The command line's log file (explorer.logs) in the test's folder, not the user's state folder."""
    monkeypatch.setenv("DEEP_EXPLORER_LOG", str(tmp_path / "deep-explorer.log"))
