"""scripts/train_char_rnn.py picks its files deterministically and never trains on a held-out file."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("train_char_rnn", ROOT / "scripts" / "train_char_rnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stdlib_file_selection(tmp_path):
    for k in range(25):
        (tmp_path / f"mod{k:02d}.py").write_text("x = 1\n")
    for rel in ("email/parser.py", "test/test_x.py", "test/deep/test_y.py", "site-packages/pkg/z.py",
                "encodings/cp1252.py", "pydoc_data/topics.py", "email/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("y = 2\n")
    script = _script()
    train, held = script.stdlib_files(tmp_path, "all")
    assert [p.name for p in held] == ["mod07.py", "mod17.py"]
    rel = {p.relative_to(tmp_path).as_posix() for p in train}
    assert not rel & {p.relative_to(tmp_path).as_posix() for p in held}
    assert {"email/parser.py", "test/test_x.py", "test/deep/test_y.py", "mod00.py", "mod24.py"} <= rel
    assert not any(r.startswith(("site-packages/", "encodings/", "pydoc_data/")) or r.endswith(".txt") for r in rel)
    assert len(rel) == 23 + 3
    top_train, top_held = script.stdlib_files(tmp_path, "top")
    assert top_held == held and len(top_train) == 23 and all(p.parent == tmp_path for p in top_train)
