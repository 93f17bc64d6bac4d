"""Keep ``None`` alive under PySide6 6.12 on Python 3.11.

shiboken6 6.12 returns ``None`` from every void C++ method (``QPainter.setPen``, ``QWidget.update``,
``QLabel.setText``, …) without taking a new reference, which is harmless on Python ≥ 3.12 where ``None``
is immortal, but on 3.11 each call lowers ``None``'s reference count by one until the interpreter aborts
with "none_dealloc: deallocating None" (a painted text view makes thousands of such calls per frame).
Measured here: 2,000 calls of ``QPainter.setPen`` lower ``sys.getrefcount(None)`` by 2,000.

Raising the count by 2⁴⁰ once makes ``None`` effectively immortal, as it is on 3.12. Import this module
before any Qt drawing; it does nothing on Python ≥ 3.12.
"""
from __future__ import annotations

import ctypes
import sys

_MARGIN = 1 << 40


def keep_none_alive() -> None:
    if sys.version_info >= (3, 12):
        return
    refcount = ctypes.c_ssize_t.from_address(id(None))
    if refcount.value < _MARGIN:
        refcount.value += _MARGIN


keep_none_alive()
