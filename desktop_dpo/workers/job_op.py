"""One way for the GUI to run a job: :class:`JobOp` (after superqt's workers and Anki's ``CollectionOp``).

A view says what to run, on which resource, and what to do with each outcome; the op does the rest::

    self._export = (
        JobOp(self.registry, export_job(run.id, settings, exports_dir), store=db_path, owner=self)
        .resource(EXPORT_RESOURCE)
        .on_event(self._on_export_event)
        .on_success(self._on_export_succeeded)
        .on_failure(self._on_export_failed)
        .on_cancelled(self._on_export_cancelled)  # these four: .slots("export") says the same
        .start()  # raises DesktopDpoError when an export already runs
    )
    ...
    self._export.cancel()  # Stop: the job's clean-up runs in its thread, then on_cancelled here

What the op guarantees, so that a view writes no plumbing of its own:

- **Connected before started.** Every signal of the worker is connected before its thread starts, so
  a job that fails at once is reported like any other.
- **In order, on the GUI thread.** The callbacks run on the thread that started the op: the events in
  the order the job yielded them, then exactly one of success, failure or cancelled. Until then
  :attr:`JobOp.active` is True.
- **Stale jobs are dropped.** Once a job is no longer its owner's current one, nothing of it reaches the
  owner: after :meth:`JobOp.drop`, after the owner starts another op of the same kind (the resource up to
  its ``:``, so ``generate:3`` replaces ``generate:7``), or after the owner is destroyed.
- **The worker's store.** With ``store=<database file>``, the factory is called as ``factory(store,
  cancel)`` with a :class:`~desktop_dpo.core.store.Store` opened in the worker thread, and that store is
  closed when the job ends, however it ends.
- **The registry holds it.** One job per resource; the window names it in the status bar (in words: what
  the job does, never the resource) and asks before closing while it runs, unless the op is
  :meth:`JobOp.quiet`. Cancel follows the one rule of :func:`desktop_dpo.core.jobs.drive`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Slot

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.core.store import Store
from desktop_dpo.workers.job_worker import JobFactory, JobRegistry, JobThread

StoreJobFactory = Callable[[Store, CancelToken], Job]
"""Builds a job that works on a store opened for it in the worker thread (``store=`` of :class:`JobOp`)."""


class JobOp:
    """One background job of a view: build it, say what each outcome does, :meth:`start` it.

    Args:
        registry: the app's job registry (the one the views get).
        factory: ``factory(cancel)`` returns the job generator; called in the worker thread. With
            ``store``: ``factory(store, cancel)``.
        store: the database file to open a store on for the job, in the worker thread (closed after it).
        owner: the object the callbacks belong to (a view): a newer op of the owner of the same kind makes
            this one stale, and so does the owner's destruction.
    """

    def __init__(
        self,
        registry: JobRegistry,
        factory: JobFactory | StoreJobFactory,
        *,
        store: str | Path | None = None,
        owner: QObject | None = None,
    ):
        self._registry = registry
        self.owner = owner
        self.key = ""
        self._quiet = False
        self._on_event: Callable[[Any], object] | None = None
        self._on_success: Callable[[Any], object] | None = None
        self._on_failure: Callable[[str], object] | None = None
        self._on_cancelled: Callable[[], object] | None = None
        self._started = False
        self._delivered = False  # the outcome was handed to a callback (or the op was dropped)
        self._ended = False  # the worker thread has finished
        if store is not None:
            factory = _with_store(Path(store), factory)  # type: ignore[arg-type]
        self.thread = JobThread("", factory)  # type: ignore[arg-type]
        """The worker (not started until :meth:`start`): for tests that must act inside its thread."""

    # ---------------------------------------------------------------- building

    def resource(self, key: str, *, describe: str = "") -> JobOp:
        """The registry resource the job holds while it runs ("train", "generate:<model id>", ...).

        The window never shows ``key``: it says what the job does, ``describe`` when given ("Writing
        answers with Gemma"), else the resource's words (:func:`~desktop_dpo.workers.job_worker.
        describe_resource`: "Training").
        """
        self.key = key
        self.thread.name = key
        self.thread.described_as = describe
        self.thread.setObjectName(key)
        return self

    def quiet(self) -> JobOp:
        """A job of moments (a scan of folders): held in the registry and waited for when the app quits, but
        neither named in the status bar nor asked about before closing."""
        self._quiet = True
        return self

    def on_event(self, callback: Callable[[Any], object]) -> JobOp:
        """Call ``callback(event)`` for every event the job yields."""
        self._on_event = callback
        return self

    def on_success(self, callback: Callable[[Any], object]) -> JobOp:
        """Call ``callback(result)`` with the job's return value."""
        self._on_success = callback
        return self

    def on_failure(self, callback: Callable[[str], object]) -> JobOp:
        """Call ``callback(message)`` when the job fails (the message is for the person)."""
        self._on_failure = callback
        return self

    def on_cancelled(self, callback: Callable[[], object]) -> JobOp:
        """Call ``callback()`` when the job stopped as asked."""
        self._on_cancelled = callback
        return self

    def slots(self, thing: str) -> JobOp:
        """Use the owner's slots for ``thing``, named as the style guide names slots (and as Qt's
        ``connectSlotsByName`` finds them): ``_on_<thing>_event``, ``_on_<thing>_succeeded``,
        ``_on_<thing>_failed`` and ``_on_<thing>_cancelled``, those the owner has.

        Raises:
            ValueError: the op has no owner, or the owner has none of these slots (a misspelt ``thing``).
        """
        setters = {
            "event": self.on_event,
            "succeeded": self.on_success,
            "failed": self.on_failure,
            "cancelled": self.on_cancelled,
        }
        found = {
            suffix: getattr(self.owner, f"_on_{thing}_{suffix}")
            for suffix in setters
            if hasattr(self.owner, f"_on_{thing}_{suffix}")
        }
        if self.owner is None or not found:
            raise ValueError(f"{self.owner!r} has no _on_{thing}_event/succeeded/failed/cancelled slots")
        for suffix, slot in found.items():
            setters[suffix](slot)
        return self

    # ---------------------------------------------------------------- running

    def start(self) -> JobOp:
        """Connect, register and start the job; returns the op.

        Raises:
            DesktopDpoError: a job already holds the resource (nothing started; say it to the person).
        """
        if not self.key:
            raise ValueError("JobOp.resource(...) names the resource before start()")
        if self._started:
            raise ValueError("a JobOp starts once; build a new one")
        relay = _Relay(self, self._registry)
        thread = self.thread
        thread.event.connect(relay.on_event)
        thread.succeeded.connect(relay.on_succeeded)
        thread.failed.connect(relay.on_failed)
        thread.cancelled.connect(relay.on_cancelled)
        thread.finished.connect(relay.on_finished)
        if self.owner is not None:
            self.owner.destroyed.connect(relay.on_owner_destroyed)
        try:
            self._registry.start(thread, quiet=self._quiet)
        except DesktopDpoError:
            relay.deleteLater()
            raise
        self._started = True
        self._drop_earlier_ops()
        return self

    def _drop_earlier_ops(self) -> None:
        if self.owner is None:
            return
        kind = self.key.split(":")[0]
        for relay in self._registry.findChildren(_Relay):
            other = relay.op
            if other is not self and other.owner is self.owner and other.key.split(":")[0] == kind:
                other.drop()

    @property
    def active(self) -> bool:
        """True from :meth:`start` until the outcome reached its callback (or the op was dropped)."""
        return self._started and not self._delivered

    def cancel(self) -> None:
        """Ask the job to stop (returns at once); ``on_cancelled`` follows once its clean-up ran."""
        if self._started and not self._ended:
            self.thread.cancel()

    def drop(self) -> None:
        """Hear nothing more from this job: it is not its owner's current one any more. It still runs to
        its end (and holds its resource until then) unless it is cancelled too."""
        self._delivered = True

    def wait(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for the worker thread to end; True when it has (or never started)."""
        if not self._started or self._ended:
            return True
        return self.thread.wait(timeout_ms)

    # ---------------------------------------------------------------- delivery (GUI thread)

    def _deliver(self, callback: Callable[..., object] | None, *args: Any, final: bool) -> None:
        if self._delivered:
            return
        if final:
            self._delivered = True
        if callback is not None:
            callback(*args)

    def _thread_ended(self) -> None:
        self._ended = True


class _Relay(QObject):
    """Receives the worker's signals on the GUI thread (queued, in order) and hands them to its op.

    A child of the registry until the worker thread finishes, so it outlives neither the app nor its job.
    """

    def __init__(self, op: JobOp, parent: QObject):
        super().__init__(parent)
        self.op = op

    @Slot(object)
    def on_event(self, event: object) -> None:
        self.op._deliver(self.op._on_event, event, final=False)

    @Slot(object)
    def on_succeeded(self, result: object) -> None:
        self.op._deliver(self.op._on_success, result, final=True)

    @Slot(str)
    def on_failed(self, message: str) -> None:
        self.op._deliver(self.op._on_failure, message, final=True)

    @Slot()
    def on_cancelled(self) -> None:
        self.op._deliver(self.op._on_cancelled, final=True)

    @Slot()
    def on_owner_destroyed(self) -> None:
        self.op.drop()

    @Slot()
    def on_finished(self) -> None:
        self.op._thread_ended()
        self.deleteLater()


def _with_store(db_path: Path, factory: StoreJobFactory) -> JobFactory:
    """A job factory that opens a store in the worker thread, hands it to ``factory`` and closes it after."""

    def job_factory(cancel: CancelToken) -> Job:
        return _store_job(db_path, factory, cancel)

    return job_factory


def _store_job(db_path: Path, factory: StoreJobFactory, cancel: CancelToken) -> Generator[Any, None, Any]:
    store = Store.open(db_path)  # runs at the job's first step, in the worker thread
    try:
        return (yield from factory(store, cancel))
    finally:
        store.close()
