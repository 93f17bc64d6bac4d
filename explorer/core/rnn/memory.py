"""How much memory a replay or a cell search needs, how much there is, and one clear refusal.

Estimates are made before anything big is allocated, so that a long text is refused with one sentence
instead of a crash (or the machine swapping) half way through.
"""
from __future__ import annotations

from explorer.core.errors import InputError
from explorer.core.memory import available_memory


class NotEnoughMemory(InputError):
    """The work would need more memory than is available; ``needed`` and ``available`` are in bytes."""

    def __init__(self, message: str, needed: int, available: int):
        super().__init__(message)
        self.needed = needed
        self.available = available


def available_bytes() -> int | None:
    """Memory available to a new allocation (:func:`explorer.core.memory.available_memory`: psutil if
    installed, else MemAvailable from /proc/meminfo); None where neither can tell."""
    return available_memory()


def format_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(needed: int, what: str, fraction: float = 0.8, limit: int | None = None) -> None:
    """Raise :class:`NotEnoughMemory` if ``needed`` bytes exceed ``fraction`` of the available memory.

    ``what`` completes the sentence "… needs about N GB" (e.g. "keeping every gate of 20,000,000
    characters"). ``limit`` (bytes) caps what may be used whatever is free. Does nothing else where the
    available memory cannot be read.
    """
    free = available_bytes()
    if limit is not None and needed > limit and (free is None or limit < fraction * free):
        raise NotEnoughMemory(f"{what} needs about {format_bytes(needed)} of memory, more than the "
                              f"{format_bytes(limit)} allowed", needed, limit)
    if free is None or needed <= fraction * free:
        return
    raise NotEnoughMemory(f"{what} needs about {format_bytes(needed)} of memory, but only "
                          f"{format_bytes(free)} is available", needed, free)
