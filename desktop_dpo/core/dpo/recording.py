"""Recording a training job: what its events and its end mean for the run's row and metrics.

The job (``train.train``, or ``train_child.train_in_child`` in the GUI) never writes run status or metrics
itself: it yields events, and whoever drives it calls :func:`persist_event` / :func:`persist_outcome` with its
own store connection, or wraps the job in :func:`record_training`, which does both. Moved out of ``train.py``
(which re-exports these names) so the job's file holds the job.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from desktop_dpo.core.dpo.config import TrainingError
from desktop_dpo.core.dpo.events import (
    Checkpointed,
    EvalMetrics,
    Finished,
    SftEvalMetrics,
    SftStepMetrics,
    Started,
    StepMetrics,
    TrainWarning,
)
from desktop_dpo.core.dpo.run_lock import RunBusyError
from desktop_dpo.core.errors import DesktopDpoError, JobCancelled
from desktop_dpo.core.jobs import STOPPED_MESSAGE, Job, recorded

if TYPE_CHECKING:
    from desktop_dpo.core.store import Store

log = logging.getLogger(__name__)


def persist_event(store: Store, run_id: int, event: object) -> None:
    """Write what an event means to the run's row and metrics. Events that change nothing are ignored."""
    if isinstance(event, Started):
        run = store.get_run(run_id)
        store.update_run(
            run_id,
            status="running",
            step=event.start_step,
            total_steps=event.total_steps,
            checkpoint_dir=event.run_dir,
            error=None,
            finished_at=None,
            **({"started_at": time.time()} if run is not None and run.started_at is None else {}),
        )
    elif isinstance(event, StepMetrics):
        with store.atomic():
            store.add_run_metrics(run_id, event.step, event.as_metrics(), split="train")
            store.update_run(run_id, step=event.step, total_steps=event.total_steps)
    elif isinstance(event, SftStepMetrics):  # the supervised phase: its own split and step numbers
        store.add_run_metrics(run_id, event.step, event.as_metrics(), split="sft")
    elif isinstance(event, SftEvalMetrics):  # its held-out demonstrations, step 0 (before training) included
        store.add_run_metrics(run_id, event.step, event.as_metrics(), split="sft_heldout")
    elif isinstance(event, EvalMetrics):
        store.add_run_metrics(run_id, event.step, event.as_metrics(), split="heldout")
    elif isinstance(event, TrainWarning):
        # Several warnings can land on one step: keep them all under that step.
        earlier = dict(store.run_metrics(run_id, split="warning")).get(event.step, {})
        messages = [*earlier.get("messages", []), {"kind": event.kind, "message": event.message}]
        store.add_run_metrics(run_id, event.step, {"messages": messages}, split="warning")
    elif isinstance(event, Checkpointed):
        store.update_run(run_id, step=event.step)
    elif isinstance(event, Finished):
        store.update_run(
            run_id,
            status="completed",
            step=event.step,
            adapter_path=event.adapter_path,
            final_metrics=event.metrics,
            finished_at=time.time(),
            error=None,
        )


def persist_outcome(store: Store, run_id: int, error: BaseException | None) -> None:
    """Record how the job ended when it did not finish: stopped (resumable) or failed (with the reason)."""
    if error is None or isinstance(error, RunBusyError):
        return  # busy: the run belongs to the process training it, which records how it ends
    if isinstance(error, JobCancelled):
        store.update_run(run_id, status="stopped", error=None)
        return
    if not isinstance(error, (DesktopDpoError, MemoryError)):
        log.error("Training run %s failed", run_id, exc_info=error)
    store.update_run(run_id, status="failed", error=failure_message(error))


def failure_message(error: BaseException) -> str:
    """What a failed run's row says about ``error``: our messages as they are, anything else in words."""
    if isinstance(error, DesktopDpoError):
        return str(error)
    if isinstance(error, MemoryError):
        return "The computer ran out of memory. Close other programs or choose smaller settings, then resume."
    return (
        f"Training stopped on an unexpected error ({type(error).__name__}: {error}). Details are in the "
        "log. Resuming continues from the last finished step that was saved."
    )


def record_training(store: Store, run_id: int, job: Job) -> Job:
    """The training job ``job`` of run ``run_id``, recorded on ``store`` (a recorded job; returns :class:`Finished`).

    Each event is written with :func:`persist_event` before it is passed on, and however the job ends the
    run row says so (completed, stopped or failed with the reason) before the error goes on. ``job`` is
    :func:`train` in this process (:func:`recorded_training`: the CLI, the demo) or
    ``train_child.train_in_child``, whose events come from the training process (the GUI's worker): the
    same rows either way, written by whoever drives this job, on its own connection.
    """
    finished: Finished | None = None

    def record(event: object) -> None:
        nonlocal finished
        persist_event(store, run_id, event)
        if isinstance(event, Finished):
            finished = event

    try:
        result = yield from recorded(job, record)
    except BaseException as exc:
        # A stop after the run finished changes nothing; a job abandoned at a yield (closed, never thrown
        # into) stopped at a step boundary as a stop does.
        if finished is None and store.get_run(run_id) is not None:
            persist_outcome(
                store, run_id, JobCancelled(STOPPED_MESSAGE) if isinstance(exc, GeneratorExit) else exc
            )
        raise
    if not isinstance(result, Finished):  # cannot happen: the job either finishes or raises
        error = TrainingError("Training ended without an adapter.")
        persist_outcome(store, run_id, error)
        raise error
    return result
