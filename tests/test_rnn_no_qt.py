"""The char-RNN core and its command line import and run with Qt blocked."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph"):
            raise ImportError(f"Qt is blocked: {name}")
sys.meta_path.insert(0, Block())
import explorer.core.rnn.model, explorer.core.rnn.cells, explorer.core.rnn.render, explorer.core.rnn.train
import explorer.cli.lstm
from explorer.core.rnn.model import CharRNN, CharRNNConfig
from explorer.core.rnn.replay import replay
from explorer.core.rnn.cells import cell_search
m = CharRNN(list("ab \n'"), CharRNNConfig("lstm", 1, 4, 2))
print(len(cell_search(replay(m, "a 'b'\nab"))))
"""


def test_core_imports_without_qt():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "8"  # the built-in indicators
