"""The training run the GUI drives on the job resource ``"train"``: persisted event by event, on its own connection.

:func:`training_job` gives a :data:`~desktop_dpo.workers.job_worker.JobFactory` for
``JobRegistry.start("train", ...)``. In the worker thread it opens its own :class:`Store` on the
database file (a connection is never shared between threads), drives
:func:`desktop_dpo.core.dpo.train.train`, writes what each event means with ``persist_event`` *before*
passing the event on (a crash or a quit loses at most the step under way), records a stop or a failure
with ``persist_outcome``, and closes its store however the job ends.

A stop from the GUI arrives as ``close()`` on this generator (``JobThread`` closes a job at the first
event after ``cancel()``): the training job is closed in turn, which checkpoints at that step boundary,
and the run is recorded as stopped.

:func:`device_preset_job` detects the device and its preset settings off the GUI thread (it imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from desktop_dpo.core.dpo.train import (
    DeviceInfo,
    Finished,
    Loading,
    TrainConfig,
    TrainingOutOfMemoryError,
    default_config,
    detect_device,
    persist_event,
    persist_outcome,
    train,
)
from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.core.store import Store
from desktop_dpo.workers.job_worker import JobFactory

TRAIN_RESOURCE = "train"  # one training run at a time
DEVICE_RESOURCE = "detect-device"  # detecting the GPU never blocks training or collecting


@dataclass(frozen=True)
class OutOfMemory:
    """Yielded just before a run fails for lack of memory: the smaller settings to resume it with."""

    run_id: int
    message: str
    suggested: TrainConfig


@dataclass(frozen=True)
class DevicePreset:
    """What training can run on here and the settings that fit it (the result of the detection job)."""

    device: DeviceInfo
    config: TrainConfig


def training_job(
    db_path: str | Path, run_id: int, *, resume: bool = True, runs_dir: Path | None = None
) -> JobFactory:
    """A factory for ``JobRegistry.start(TRAIN_RESOURCE, ...)`` that trains run ``run_id``.

    Args:
        db_path: the database file; the job opens its own connection to it in the worker thread.
        run_id: a run made with ``Store.create_run`` (see ``core/dpo/runs.py``).
        resume: continue from the run's newest checkpoint when it has one.
        runs_dir: where the run's folder goes when it has none yet (the app's runs folder).
    """
    path = Path(db_path)

    def factory(cancel: CancelToken) -> Job:
        return drive_training_run(path, run_id, cancel=cancel, resume=resume, runs_dir=runs_dir)

    return factory


def drive_training_run(
    db_path: Path, run_id: int, *, cancel: CancelToken, resume: bool = True, runs_dir: Path | None = None
) -> Job:
    """Train ``run_id`` as a job, persisting every event before yielding it. Returns :class:`Finished`.

    Raises whatever the training job raises (after recording it in the run row). A
    :class:`TrainingOutOfMemoryError` is preceded by an :class:`OutOfMemory` event carrying its
    suggested settings, since a failure reaches the GUI as a message only.
    """
    store = Store.open(db_path)
    try:
        job = train(store, run_id, cancel=cancel, resume=resume, runs_dir=runs_dir)
        finished: Finished | None = None
        try:
            for event in job:
                persist_event(store, run_id, event)
                if isinstance(event, Finished):
                    finished = event
                yield event
        except GeneratorExit:
            # Closed at a yield, i.e. at an event boundary: closing the training job checkpoints there.
            job.close()
            if finished is None:
                persist_outcome(store, run_id, JobCancelled("Stopped as you asked."))
            raise
        except TrainingOutOfMemoryError as exc:
            persist_outcome(store, run_id, exc)
            yield OutOfMemory(run_id=run_id, message=str(exc), suggested=exc.suggested)
            raise
        except BaseException as exc:
            persist_outcome(store, run_id, exc)
            raise
        return finished
    finally:
        store.close()


def device_preset_job(cancel: CancelToken) -> Job:
    """Detect the device (imports torch) and return a :class:`DevicePreset`; a factory for the registry."""
    yield Loading("Detecting your GPU")
    cancel.raise_if_cancelled()
    device = detect_device()
    return DevicePreset(device=device, config=default_config(device))
