"""The one rule for long work: a generator that yields progress and returns its result.

Every long computation in the core (weight downloads, occlusion sweeps, text analysis, training,
folder scans) is a generator. Each ``yield`` hands out progress (and partial results) and is where a
caller may stop: closing the generator cancels the work. Its ``return`` value is the result. The GUI
runs such a generator in a worker (:class:`explorer.gui.workers.Task` emits ``yielded``, ``returned``
and ``errored``); the command line runs it with :func:`drive` and a progress bar.
"""
from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

R = TypeVar("R")


def drive(steps: Generator[Any, Any, R], on_yield: Callable[[Any], None] | None = None) -> R:
    """Run ``steps`` to its end, passing each yielded value to ``on_yield``; return its return value.

    If ``on_yield`` raises (a cancel from a progress callback, Ctrl+C), the generator is closed first,
    so its ``finally`` blocks clean up, and the exception propagates.
    """
    try:
        while True:
            try:
                value = next(steps)
            except StopIteration as stop:
                return stop.value
            if on_yield is not None:
                on_yield(value)
    finally:
        steps.close()


def map_yields(steps: Generator[Any, Any, R], fn: Callable[[Any], Any]) -> Generator[Any, Any, R]:
    """``steps`` with each yielded value passed through ``fn``; the same return value (closing closes it)."""
    try:
        while True:
            try:
                value = next(steps)
            except StopIteration as stop:
                return stop.value
            yield fn(value)
    finally:
        steps.close()
