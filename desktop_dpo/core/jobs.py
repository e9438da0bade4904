"""Long work as generators: typed progress events and a cooperative cancel token.

A job is a generator that yields small frozen dataclasses and calls ``cancel.raise_if_cancelled()``
between steps. The same generator drives a progress bar in the CLI and a worker in the GUI; whoever
drives it persists what it yields (each thread with its own database connection).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from desktop_dpo.core.errors import JobCancelled


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
            raise JobCancelled("Stopped as you asked.")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on cancel. Returns True if cancelled."""
        return self._event.wait(seconds)


@dataclass(frozen=True)
class Progress:
    """Generic progress: ``done`` of ``total`` units (total 0 = unknown), with a short message."""

    done: float
    total: float
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """0..1, or None when the total is unknown."""
        return None if self.total <= 0 else min(1.0, self.done / self.total)


@dataclass(frozen=True)
class Log:
    """A line worth showing to the person (status bar, CLI)."""

    message: str
    level: str = "info"  # info | warning


Job = Generator[Any, None, Any]
"""A job: yields progress events; its return value is the result."""


def drive(job: Job, on_event: Callable[[Any], object]) -> Any:
    """Drive a job to its end on the calling thread, handing each event to ``on_event``; return its result.

    For a headless caller that shows progress as it goes (the CLI, a bench); the GUI runs jobs in a
    worker thread instead (``workers/job_worker.py``).
    """
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        on_event(event)


def run_job(job: Job) -> tuple[Any, list[Any]]:
    """Drive a job to its end on the calling thread: ``(result, every event it yielded)``.

    For headless callers with nothing to show meanwhile (tests, scripts).
    """
    events: list[Any] = []
    return drive(job, events.append), events
