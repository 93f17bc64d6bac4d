"""The core is Qt-free: every explorer.core module imports with PySide6 blocked."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import explorer.core

CORE = Path(explorer.core.__file__).parent


def test_every_core_module_imports_without_qt():
    names = [info.name for info in pkgutil.walk_packages([str(CORE)], prefix="explorer.core.")]
    assert "explorer.core.models" in names and len(names) >= 8
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'shiboken6'):\n"
        "            raise ImportError('Qt is blocked in core: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import importlib\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")


def test_no_qt_import_statement_in_core_sources():
    offenders = [str(p) for p in CORE.rglob("*.py")
                 if any(word in p.read_text() for word in ("PySide6", "PyQt", "pyqtgraph"))]
    assert offenders == []
