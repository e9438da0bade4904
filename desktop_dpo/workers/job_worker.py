"""Run a core job (a generator of progress events) on a QThread.

The worker never touches widgets: it emits signals carrying the plain Python objects the job yields.
Stop = set the cancel token, then ``wait()``; a thread is never terminated.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from desktop_dpo.core.errors import DesktopDpoError, JobCancelled
from desktop_dpo.core.jobs import CancelToken, Job, drive

log = logging.getLogger(__name__)

# A job that already reported how it ended is only leaving its thread: a new job on its resource waits
# for that (moments) instead of being refused.
FINISHING_WAIT_MS = 2000

JobFactory = Callable[[CancelToken], Job]
"""Builds the generator inside the worker thread (so heavy imports happen there too)."""

# What a job on each resource does, in the words the window shows (status bar, quit question, "busy"
# messages): the one place a resource id becomes text. Keyed by the resource up to its ``:``. A resource the
# app starts jobs on must be listed here (tests/workers/test_job_op.py checks every ``*RESOURCE = "..."``);
# ``JobOp.resource(key, describe=...)`` may say more (which model writes the answers).
JOB_DESCRIPTIONS = {
    "train": "Training",
    "detect-device": "Detecting your GPU",
    "export": "Exporting the aligned model",
    "generate": "Writing answers",
    "data": "Importing or exporting preferences",
    "register-model": "Adding a model",
    "scan-models": "Looking for models",
    "trainable-copy": "Making a trainable copy of a model",
    "demo-model": "Unpacking the demo model",
    "hardware": "Gathering the diagnostics report",
    "storage": "Measuring or freeing disk space",
    "data-check": "Checking your data",
}
UNKNOWN_JOB = "A background task"  # never a resource id on screen


def describe_resource(resource: str) -> str:
    """What a job on ``resource`` ("train", "generate:3", ...) does, for the person: "Training"."""
    return JOB_DESCRIPTIONS.get(resource.split(":")[0], UNKNOWN_JOB)


def describe_error(exc: BaseException) -> str:
    """A sentence for the person. Our own errors already are; others get their type named."""
    if isinstance(exc, DesktopDpoError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return (
            "The computer ran out of memory. Close other programs or choose smaller settings, then try again."
        )
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return "The disk is full. Free some space, then try again; nothing already saved was lost."
    return f"Unexpected error ({type(exc).__name__}: {exc}). Details are in the log file."


class JobThread(QThread):
    """Drives one job generator. Signals carry plain objects; connect them with queued connections.

    Signals:
        event(object): every event the job yields, in order.
        succeeded(object): the generator's return value.
        failed(str): a message a person can act on.
        cancelled(): the job stopped at a step boundary after ``cancel()``.

    Views start and follow jobs through :class:`~desktop_dpo.workers.job_op.JobOp`, which connects them.

    ``name`` is the resource the job holds; :attr:`description` says what it does, in words.
    """

    event = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, name: str, factory: JobFactory, parent: QObject | None = None):
        super().__init__(parent)
        self.setObjectName(name)
        self.name = name
        self.described_as = ""  # what the job does, in words; "" = the resource's (describe_resource)
        self._factory = factory
        self.token = CancelToken()
        self.outcome: str | None = None  # "succeeded" | "failed" | "cancelled" once finished

    @property
    def description(self) -> str:
        """What the job does, for the person ("Training", "Writing answers with Gemma")."""
        return self.described_as or describe_resource(self.name)

    def cancel(self) -> None:
        """Ask the job to stop at its next step boundary (returns at once)."""
        self.token.cancel()

    def run(self) -> None:  # Qt override: runs in the worker thread
        try:
            # drive applies the cancel rule: after cancel(), JobCancelled is thrown into the job at its next
            # event, so its clean-up runs here, in the worker thread.
            result: Any = drive(self._factory(self.token), self.event.emit, self.token)
        except JobCancelled:
            self.outcome = "cancelled"
            self.cancelled.emit()
        except BaseException as exc:
            log.error("Job %s failed:\n%s", self.name, traceback.format_exc())
            self.outcome = "failed"
            self.failed.emit(describe_error(exc))
        else:
            self.outcome = "succeeded"
            self.succeeded.emit(result)


class JobRegistry(QObject):
    """Keeps the running jobs, one per resource ("train", "generate:<model>", ...).

    A *quiet* job (a scan of folders that ends in moments) holds its resource and is stopped and waited
    for by :meth:`cancel_all_and_wait` like any other, but :meth:`running` leaves it out: the window
    neither names it in the status bar nor asks about it before closing.

    Signals:
        changed(): a job started or finished (buttons re-check whether they may start one).
    """

    changed = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._jobs: dict[str, JobThread] = {}
        self._quiet: set[str] = set()

    def is_busy(self, resource: str) -> bool:
        """True while a job holds ``resource``."""
        thread = self._jobs.get(resource)
        return thread is not None and thread.isRunning()

    def running(self) -> list[str]:
        """Resources held by running jobs, quiet ones left out (the jobs the window names and asks about)."""
        return [name for name, thread in self._jobs.items() if thread.isRunning() and name not in self._quiet]

    def running_descriptions(self) -> list[str]:
        """What the jobs of :meth:`running` do, in words: what the window shows ("Training", ...)."""
        return [self._jobs[name].description for name in self.running()]

    def idle(self) -> bool:
        """True when no job runs, quiet ones included."""
        return not any(thread.isRunning() for thread in self._jobs.values())

    def start(self, thread: JobThread, *, quiet: bool = False) -> JobThread:
        """Start ``thread`` on its resource (``thread.name``). Raises if a job already runs there (one that
        already reported how it ended is waited for instead, up to :data:`FINISHING_WAIT_MS`).

        Connect the thread's signals before calling this (:class:`~desktop_dpo.workers.job_op.JobOp`
        does): a signal emitted before anyone is connected is lost, and a quick job (a file that fails
        to parse) can emit ``failed`` before ``start()`` even returns.
        """
        resource = thread.name
        current = self._jobs.get(resource)
        if current is not None and current.isRunning() and current.outcome is not None:
            current.wait(FINISHING_WAIT_MS)
        if current is not None and self.is_busy(resource):
            raise DesktopDpoError(f"{current.description} is already running; wait for it or stop it.")
        thread.setParent(self)
        self._jobs[resource] = thread
        if quiet:
            self._quiet.add(resource)
        else:
            self._quiet.discard(resource)
        thread.finished.connect(lambda: self._on_thread_finished(resource, thread))
        thread.start()
        self.changed.emit()
        return thread

    def _on_thread_finished(self, resource: str, thread: JobThread) -> None:
        if self._jobs.get(resource) is thread:
            del self._jobs[resource]
            self._quiet.discard(resource)
        thread.deleteLater()
        self.changed.emit()

    def cancel(self, resource: str) -> None:
        """Ask the job on ``resource`` to stop."""
        thread = self._jobs.get(resource)
        if thread is not None:
            thread.cancel()

    def cancel_all(self) -> None:
        """Ask every job to stop (returns at once); :attr:`changed` follows as each one ends (see
        :meth:`idle`). The window quits this way, its event loop running meanwhile."""
        for thread in list(self._jobs.values()):
            thread.cancel()

    def cancel_all_and_wait(self, timeout_ms: int = -1) -> bool:
        """Cancel every job and wait for each to reach a step boundary (blocking: the app's last safety net
        after its event loop ended, and tests). True if all stopped."""
        threads = list(self._jobs.values())
        self.cancel_all()
        ok = True
        for thread in threads:
            ok = (thread.wait() if timeout_ms < 0 else thread.wait(timeout_ms)) and ok
        return ok
