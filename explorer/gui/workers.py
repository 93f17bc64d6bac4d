"""Running core work off the GUI thread and getting results back by signals.

``Task`` runs one function, or drives one core generator (:mod:`explorer.core.steps`: it yields
progress and partial results and returns its result), in Qt's thread pool, as napari's
GeneratorWorker does: ``yielded`` for each yield, ``returned`` for the return value, ``errored`` with
the exception object itself (the GUI dispatches on its type), ``cancelled``, then ``done``. A cancel
is honoured at the generator's next yield, where it is closed. ``LatestRunner`` runs one task at a time
and keeps only the newest waiting request: stepping quickly through images never queues up stale work.
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any, Callable

from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThreadPool, Signal

from explorer.core.errors import Cancelled, ExplorerError


def log_exception(exc: BaseException) -> None:
    """The full traceback for the log (the user sees :func:`describe_error`'s one line)."""
    logging.getLogger("explorer").error("%s", describe_error(exc), exc_info=(type(exc), exc, exc.__traceback__))


def describe_error(exc: BaseException | str) -> str:
    """One sentence for a dialog: our own errors as they are, others by type with the first line."""
    if isinstance(exc, str):
        return exc
    if isinstance(exc, ExplorerError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "out of memory" in text.lower():
        return "the device ran out of memory; try a smaller input, the CPU, or another model"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class TaskSignals(QObject):
    yielded = Signal(object)  # whatever the generator yielded (progress, partial results)
    returned = Signal(object)  # the return value
    errored = Signal(object)  # the exception; describe_error(exc) is its one line for the user
    cancelled = Signal()
    done = Signal()  # always last, after returned / errored / cancelled


class Task(QRunnable):
    """Run ``fn(*args, **kwargs)`` in the pool.

    If ``fn`` is a generator function (or ``fn`` is a generator object already made), each yielded value
    is emitted as ``yielded`` and cancellation is checked between yields; its return value is emitted as
    ``returned``. A plain function can check ``task.cancel_requested`` through a callback it is given.
    """

    def __init__(self, fn: Callable, *args: Any, **kwargs: Any):
        super().__init__()
        self.setAutoDelete(False)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.signals = TaskSignals()
        self.signals.task = self  # slots tell a stale task from the current one by ``self.sender().task``
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self.finished_at = 0.0

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def check_cancel(self, *_: Any) -> None:
        """Raise :class:`Cancelled` if the user asked to stop (usable as a progress callback)."""
        if self._cancel.is_set():
            raise Cancelled("cancelled")

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def run(self) -> None:  # runs in a pool thread
        try:
            if inspect.isgenerator(self.fn) or inspect.isgeneratorfunction(self.fn):
                gen = self.fn if inspect.isgenerator(self.fn) else self.fn(*self.args, **self.kwargs)
                try:
                    while True:
                        if self._cancel.is_set():
                            gen.close()
                            raise Cancelled("cancelled")
                        self.signals.yielded.emit(next(gen))
                except StopIteration as stop:
                    result = stop.value
            else:
                result = self.fn(*self.args, **self.kwargs)
            if self._cancel.is_set():
                raise Cancelled("cancelled")
            self.signals.returned.emit(result)
        except Cancelled:
            self.signals.cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - every failure reaches the GUI, the app keeps running
            log_exception(exc)
            self.signals.errored.emit(exc)
        finally:
            self.signals.done.emit()
            self.finished_at = time.monotonic()
            self._finished.set()


class TaskRunner(QObject):
    """Starts tasks and remembers them until they end, so the window can wait for all on close."""

    def __init__(self, parent: QObject | None = None, max_threads: int | None = None):
        super().__init__(parent)
        if max_threads is None:
            self.pool = QThreadPool.globalInstance()
        else:  # a pool of its own, e.g. one thread to run jobs one after another
            self.pool = QThreadPool(self)
            self.pool.setMaxThreadCount(max_threads)
        self.active: set[Task] = set()
        self._retired: list[Task] = []
        self.closed = False

    def start(self, task: Task) -> Task:
        if self.closed:
            return task  # the window is closing: start nothing new
        self._release()
        self.active.add(task)
        task.signals.done.connect(self._task_done)  # a bound slot: delivered on the GUI thread
        self.pool.start(task)
        return task

    def _task_done(self) -> None:
        task = self.sender().task
        self.active.discard(task)
        self._retired.append(task)

    def _release(self) -> None:
        """Forget ended tasks a while after they ended: when ``done`` arrives the pool thread is still
        returning from ``run()`` and the other queued deliveries of its signals may still be waiting."""
        now = time.monotonic()
        self._retired = [t for t in self._retired if not (t._finished.is_set() and now - t.finished_at > 1.0)]

    @property
    def idle(self) -> bool:
        return not self.active

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self.closed = True
        for task in list(self.active):
            task.cancel()
        for task in list(self.active):
            task.wait(timeout_s)
        self.pool.waitForDone(int(timeout_s * 1000))
        # deliver what the ended tasks already sent, while their signal objects are still alive
        QCoreApplication.sendPostedEvents()
        QCoreApplication.processEvents()
        self._retired.clear()


class LatestRunner(QObject):
    """One task at a time; a request made while busy replaces the one waiting (latest wins)."""

    result = Signal(object)
    failed = Signal(object)  # the exception

    def __init__(self, runner: TaskRunner, parent: QObject | None = None):
        super().__init__(parent)
        self.runner = runner
        self.current: Task | None = None
        self.pending: tuple | None = None
        self.dropped = 0

    @property
    def idle(self) -> bool:
        return self.current is None and self.pending is None

    def submit(self, fn: Callable, *args: Any) -> None:
        if self.runner.closed:
            self.pending = None
            return
        if self.current is not None:
            if self.pending is not None:
                self.dropped += 1
            self.pending = (fn, args)
            return
        self._start(fn, args)

    def _start(self, fn: Callable, args: tuple) -> None:
        task = Task(fn, *args)
        task.signals.returned.connect(self.result.emit)
        task.signals.errored.connect(self.failed.emit)
        task.signals.done.connect(self._next)
        self.current = task
        self.runner.start(task)

    def _next(self) -> None:
        self.current = None
        if self.pending is not None and not self.runner.closed:
            fn, args = self.pending
            self.pending = None
            self._start(fn, args)
        self.pending = None
