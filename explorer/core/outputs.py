"""Destinations checked before the work, and files written so that nothing is ever half-written.

:func:`check_destination` is called for every output file before any computation: the path must not
be a folder, must end in a known suffix, and its folder must exist (or be creatable) and accept a new
file (tested by creating and removing one, which also catches read-only file systems and /proc).
:func:`atomic_write` writes to a temporary name beside the destination and renames it into place, so
an interrupted or failed write leaves the old file (or none), never a truncated one.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from explorer.core.errors import OutputError

IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ARRAY_OUTPUT_SUFFIXES = (".npy",)


def _writable_folder(folder: Path, what: str) -> None:
    """``folder`` (created when missing) accepts a new file; else OutputError naming ``what``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {what}: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".deep-explorer-check-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {what}: folder {folder} is not writable "
                          f"({exc.strerror or type(exc).__name__})") from None


def check_destination(path: str | Path, suffixes: Iterable[str] | None = None) -> Path:
    """Check that a file can be written at ``path`` before the work that produces it; return the Path.

    ``suffixes`` (lower case, with the dot) are the file types the writer knows; None accepts any.
    Raises :class:`~explorer.core.errors.OutputError` with one line naming the problem. A missing folder
    on the way is created (as the writers would).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputError(f"cannot write {p}: it is a folder; name a file in it")
    if suffixes is not None:
        allowed = tuple(s.lower() for s in suffixes)
        if p.suffix.lower() not in allowed:
            raise OutputError(f"cannot write {p}: the file name must end in {' or '.join(allowed)}")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"cannot write {p}: the file exists and is read-only")
    _writable_folder(p.parent if str(p.parent) else Path("."), str(p))
    return p


def check_destination_folder(path: str | Path) -> Path:
    """Check that ``path`` is (or can be created as) a writable folder for several outputs; return it."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"cannot write into {p}: it is a file, not a folder")
    _writable_folder(p, f"into {p}")
    return p


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is renamed to ``path``.

    The temporary file keeps ``path``'s suffix, so writers that choose the format by suffix work.
    On failure it is removed and the exception propagates; an existing ``path`` is left untouched.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=f".{p.stem}.", suffix=p.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, p)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def save_npy(path: str | Path, array) -> None:
    """``np.save`` through :func:`atomic_write` (exactly ``path``: no ``.npy`` is appended)."""
    import numpy as np  # noqa: PLC0415

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_image(path: str | Path, image) -> None:
    """A Pillow image (format from ``path``'s suffix) through :func:`atomic_write`."""
    suffix = Path(path).suffix.lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, suffix[1:].upper())
    with atomic_write(path) as tmp:
        image.save(tmp, format=fmt)
