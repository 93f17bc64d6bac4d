"""The one rule for long work: a generator that yields progress and returns its result.

Every long computation in the core (weight downloads, occlusion sweeps, text analysis, training,
folder scans) is a generator. Each ``yield`` hands out progress (and partial results) and is where a
caller may stop: closing the generator cancels the work. Its ``return`` value is the result. The GUI
runs such a generator in a worker (:class:`explorer.gui.workers.Task` emits ``yielded``, ``returned``
and ``errored``); the command line runs it with :func:`drive` and a progress bar.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

R = TypeVar("R")
T = TypeVar("T")


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


def read_ahead(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """``items``, computed in a helper thread up to ``depth`` items ahead of the consumer.

    For work in two stages where the first releases the GIL (torch ops do): while the caller works on
    item n, the thread computes item n + 1, so on two cores the stages overlap instead of adding up.
    At most ``depth`` finished items wait. An exception in ``items`` is raised to the consumer at the
    point it happened; closing this generator stops the thread (after the item it is computing) and
    closes ``items`` in that thread. Every ``next(items)`` runs in the helper thread, so thread-local
    state that ``items`` sets (``torch.no_grad``) stays consistent.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(("error", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
