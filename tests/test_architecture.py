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


ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """pyproject.toml's import-linter contracts: core knows no Qt, gui or cli; gui no cli; no cycles."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _static_graph():
    import grimp

    return grimp.build_graph("explorer", cache_dir=None)


def test_every_module_is_reachable_from_the_entry_point_by_static_imports():
    """What a frozen app (PyInstaller follows import statements) would hold: every module, no string imports."""
    graph = _static_graph()
    reachable = graph.find_upstream_modules("explorer.__main__") | {"explorer.__main__"}
    packages = {m for m in graph.modules if (ROOT / Path(*m.split("."))).is_dir()}
    assert sorted(set(graph.modules) - reachable - packages) == []
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "explorer").rglob("*.py")
                 if "import_module(" in p.read_text() or "__import__(" in p.read_text()]
    assert offenders == []


def test_every_subcommand_module_registers_through_the_static_list():
    from explorer import cli
    from explorer.cli import bench

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"layers", "predict", "activations", "attribute", "lstm", "bench"} <= set(sub.choices)
    bench_sub = next(a for a in sub.choices["bench"]._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(bench_sub.choices) == set(bench.BENCHES) >= {"attribution", "live"}
    cli_modules = {p.stem for p in (ROOT / "explorer" / "cli").glob("*.py")} - {"__init__"}
    assert all(m in sys.modules for m in (f"explorer.cli.{name}" for name in cli_modules))


def test_packaging_spec_covers_modules_and_resources():
    """The PyInstaller spec starts from explorer/__main__.py (whose static imports reach every module, as
    the test above checks), names every hidden import that exists, and bundles the whole resources folder."""
    spec = (ROOT / "packaging" / "deep-explorer.spec").read_text()
    assert '"explorer" / "__main__.py"' in spec
    assert '(str(root / "resources"), "resources")' in spec
    import re

    hidden = re.search(r"hiddenimports=\[([^\]]*)\]", spec).group(1)
    graph_modules = set(_static_graph().modules)
    for name in re.findall(r'"([\w.]+)"', hidden):
        assert not name.startswith("explorer") or name in graph_modules, name
    folders = sorted(p.name for p in (ROOT / "resources").iterdir() if p.is_dir())
    assert folders and all((ROOT / "resources" / f).is_dir() for f in folders)
