"""Long work as generators: typed progress events and a cooperative cancel token.

A job is a generator that yields small frozen dataclasses and returns its result. The same generator
drives a progress bar in the CLI and a worker in the GUI; whoever drives it persists what it yields (each
thread with its own database connection).

**The cancel rule.** A job stops by raising :class:`~desktop_dpo.core.errors.JobCancelled` once its
:class:`CancelToken` is set. It may notice the token itself (``cancel.raise_if_cancelled()`` between
steps); :func:`drive`, the one driver, also checks the token after every event and, when it is set, throws
``JobCancelled`` into the generator at the ``yield`` where it waits. Either way the same exception unwinds
the job, so its clean-up (``except JobCancelled``, ``finally``) runs once, the same way, in the driver's
thread, and may still yield a last event (a checkpoint) before it re-raises. ``close()`` (``GeneratorExit``)
is not a stop: it only abandons a generator nobody drives any more. For example::

    def count_to(n: int, cancel: CancelToken) -> Job:
        try:
            for i in range(n):
                cancel.raise_if_cancelled()  # noticed here, or thrown in at the yield below
                yield Progress(i, n)
            return n
        except JobCancelled:
            yield Log(f"Stopped at {i}.")  # clean-up: seen by on_event like any event
            raise

    token = CancelToken()
    drive(count_to(10, token), lambda event: token.cancel(), token)  # raises JobCancelled after Progress(0)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

from desktop_dpo.core.errors import JobCancelled

STOPPED_MESSAGE = "Stopped as you asked."  # what a job stopped by its token says


class CancelToken:
    """Set from any thread; checked by the job between steps. Never kills a thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next step boundary."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if a stop was requested."""
        if self._event.is_set():
            raise JobCancelled(STOPPED_MESSAGE)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on cancel. Returns True if cancelled."""
        return self._event.wait(seconds)


class Progress(NamedTuple):
    """Generic progress: ``done`` of ``total`` units (total 0 = unknown), with a short message."""

    done: float
    total: float
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """0..1, or None when the total is unknown."""
        return None if self.total <= 0 else min(1.0, self.done / self.total)


class Log(NamedTuple):
    """A line worth showing to the person (status bar, CLI)."""

    message: str
    level: str = "info"  # info | warning


Job = Generator[Any, None, Any]
"""A job: yields progress events; its return value is the result."""


def drive(job: Job, on_event: Callable[[Any], object], cancel: CancelToken | None = None) -> Any:
    """Drive a job to its end on the calling thread, handing each event to ``on_event``; return its result.

    The one place the cancel rule (module docstring) is applied: after each event, when ``cancel`` is set,
    ``JobCancelled`` is thrown into the job once; the events its clean-up yields still reach ``on_event``,
    and whatever it raises then comes out of here (``JobCancelled`` for a job that stopped as asked). When
    ``on_event`` raises, the job is abandoned (closed now, in this thread) and the error goes on.

    ``JobThread`` (the GUI's worker, ``workers/job_worker.py``) runs every GUI job through it; so do the
    CLI's commands (``desktop-dpo train``, ``export``, ``demo``), the training child, the benches and the tests.
    """
    thrown = False
    try:
        event = next(job)
    except StopIteration as stop:
        return stop.value
    while True:
        try:
            on_event(event)
        except BaseException:
            job.close()
            raise
        try:
            if cancel is not None and cancel.cancelled and not thrown:
                thrown = True
                event = job.throw(JobCancelled(STOPPED_MESSAGE))
            else:
                event = next(job)
        except StopIteration as stop:
            return stop.value


def relayed(job: Job, change: Callable[[Any], Any]) -> Job:
    """``yield from job``, with each event given to ``change`` first: what it returns is passed on in the
    event's place, and None passes nothing (the event is dropped).

    A stop thrown in (the cancel rule above) reaches ``job`` at the ``yield`` where it waits, and the events
    its clean-up yields are changed too; closing this generator closes ``job``.
    """
    try:
        event = next(job)
    except StopIteration as stop:
        return stop.value
    while True:
        passed = change(event)
        if passed is not None:
            try:
                yield passed
            except GeneratorExit:
                job.close()
                raise
            except BaseException as exc:  # thrown in by the driver (JobCancelled): the job's clean-up runs
                try:
                    event = job.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value


def recorded(job: Job, record: Callable[[Any], object]) -> Job:
    """``yield from job``, with ``record(event)`` called on each event before it is passed on (:func:`relayed`).

    How a *recorded job* writes its rows (``train.record_training``, ``sampling.record_model_info``): the
    record is in the database before any driver sees the event, and the events a stop's clean-up yields are
    recorded too.
    """

    def record_and_pass(event: Any) -> Any:
        record(event)
        return event

    return relayed(job, record_and_pass)


def run_job(job: Job) -> tuple[Any, list[Any]]:
    """Drive a job to its end on the calling thread: ``(result, every event it yielded)``.

    For headless callers with nothing to show meanwhile (tests, scripts).
    """
    events: list[Any] = []
    return drive(job, events.append), events
