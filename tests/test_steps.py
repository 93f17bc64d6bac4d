"""The long-work helpers of explorer.core.steps: drive and read_ahead."""
from __future__ import annotations

import threading
import time

import pytest

from explorer.core.steps import drive, read_ahead


def _counting(n: int, produced: list[int], closed: list[bool], threads: set[str]):
    try:
        for i in range(n):
            threads.add(threading.current_thread().name)
            produced.append(i)
            yield i
    finally:
        closed.append(True)


def test_read_ahead_yields_the_same_items_in_order_from_another_thread():
    produced, closed, threads = [], [], set()
    assert list(read_ahead(_counting(50, produced, closed, threads))) == list(range(50))
    assert closed == [True]
    assert threads == {"read-ahead"}  # the source ran in the helper thread, not the caller's


def test_read_ahead_stays_at_most_depth_items_ahead():
    produced, closed, threads = [], [], set()
    gen = read_ahead(_counting(100, produced, closed, threads), depth=2)
    ahead = []
    for i, item in enumerate(gen):
        time.sleep(0.005)  # a slow consumer: the producer would run far ahead if nothing held it
        ahead.append(len(produced) - (i + 1))
        assert item == i
    # waiting in the slots (≤ depth) plus the one the thread holds while the slots are full
    assert max(ahead) <= 2 + 1
    assert max(ahead) >= 1  # it did read ahead


def test_read_ahead_raises_the_sources_exception_in_the_consumer():
    def failing():
        yield 1
        raise ValueError("bad chunk")

    gen = read_ahead(failing())
    assert next(gen) == 1
    with pytest.raises(ValueError, match="bad chunk"):
        next(gen)


def test_closing_read_ahead_stops_the_thread_and_closes_the_source():
    produced, closed, threads = [], [], set()
    before = threading.active_count()
    gen = read_ahead(_counting(10_000, produced, closed, threads))
    assert next(gen) == 0
    gen.close()
    assert closed == [True]  # the source's finally ran
    assert len(produced) <= 3  # it stopped instead of running to the end
    assert threading.active_count() == before


def test_drive_closes_the_generator_when_the_callback_raises():
    closed = []

    def steps():
        try:
            yield 1
            yield 2
            return "done"
        finally:
            closed.append(True)

    assert drive(steps()) == "done"
    with pytest.raises(KeyboardInterrupt):
        drive(steps(), on_yield=lambda v: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert closed == [True, True]
