"""The training run the GUI drives on the job resource ``"train"``: in a supervised child process.

:func:`training_job` gives a :data:`~desktop_dpo.workers.job_worker.JobFactory` for a
:class:`~desktop_dpo.workers.job_op.JobOp` on the resource ``"train"``. The run itself trains in a child
process (:func:`desktop_dpo.core.dpo.train_child.train_in_child`): a native fault in bitsandbytes or a
crash in a step ends that process, not the window. The child opens its own :class:`Store` on the database
file and records each event with ``persist_event`` *before* passing it on (a crash or a quit loses at most
the step under way) and how the run ended with ``persist_outcome``; this worker thread only relays the
events. If the child dies, the run is recorded as failed with a message that says so and where Resume
continues.

A stop from the GUI arrives as ``JobCancelled`` thrown into this generator at the first event after
``cancel()`` (``JobThread`` drives it with :func:`~desktop_dpo.core.jobs.drive`): the child is told at once,
finishes the step under way, checkpoints at that boundary and records the run as stopped; the stop waits
for that.

:func:`device_preset_job` detects the device and sizes its preset for the chosen model off the GUI thread
(it imports torch and reads the model's safetensors headers).

Before a run starts, ``release_engines`` (the GUI passes its ``EnginePool.close_all``) runs here, in the
worker thread: the llama.cpp models the app holds for Collect, Chat and Evaluate give their memory back
before training loads the base model (see :func:`drive_training_run`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from desktop_dpo.core.dpo.train import (
    DeviceInfo,
    Loading,
    TrainConfig,
    TrainingOutOfMemoryError,
    default_preset,
    detect_device,
    model_shape,
    persist_outcome,
    training_folder,
)
from desktop_dpo.core.dpo.train_child import train_in_child
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.core.store import ModelRow, Store
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
    reason: str = ""  # why these settings, in words (free memory, model size, 4-bit or not)
    fits: bool = True  # False: even the smallest settings are estimated not to fit the free GPU memory
    model_id: int | None = None  # the model the preset was sized for (None: a typical model)


RELEASING = "Releasing the models loaded for Collect, Chat and Evaluate (their memory goes to training)"


def training_job(
    db_path: str | Path,
    run_id: int,
    *,
    resume: bool = True,
    runs_dir: Path | None = None,
    release_engines: Callable[[], None] | None = None,
) -> JobFactory:
    """A factory for ``JobOp(registry, ...).resource(TRAIN_RESOURCE)`` that trains run ``run_id``.

    Args:
        db_path: the database file; the job opens its own connection to it in the worker thread.
        run_id: a run made with ``Store.create_run`` (see ``core/dpo/runs.py``).
        resume: continue from the run's newest checkpoint when it has one.
        runs_dir: where the run's folder goes when it has none yet (the app's runs folder).
        release_engines: called in the worker thread before the model loads, e.g. ``EnginePool.close_all``.
    """
    path = Path(db_path)

    def factory(cancel: CancelToken) -> Job:
        return drive_training_run(
            path, run_id, cancel=cancel, resume=resume, runs_dir=runs_dir, release_engines=release_engines
        )

    return factory


def drive_training_run(
    db_path: Path,
    run_id: int,
    *,
    cancel: CancelToken,
    resume: bool = True,
    runs_dir: Path | None = None,
    release_engines: Callable[[], None] | None = None,
) -> Job:
    """Train ``run_id`` as a job, in a child process that records every event before it is yielded.
    Returns :class:`Finished`.

    ``release_engines`` runs first (it may wait for a generation under way to end), announced by a
    :class:`Loading` event, so the inference engines' memory is free before the base model loads.

    Raises whatever the training job raises (recorded in the run row by then), and
    :class:`~desktop_dpo.core.dpo.train_child.TrainingCrashed` when the training process died. A
    :class:`TrainingOutOfMemoryError` is preceded by an :class:`OutOfMemory` event carrying its
    suggested settings, since a failure reaches the GUI as a message only.
    """
    if release_engines is not None:
        try:
            yield Loading(RELEASING)
            release_engines()
            cancel.raise_if_cancelled()
        except Exception as exc:
            # Stopped (JobCancelled, noticed here or thrown in at the yield) or failed before the child
            # started: nobody else records it.
            _record_outcome(db_path, run_id, exc)
            raise
    try:
        # ``yield from`` passes a thrown JobCancelled on to the child's job, which stops the child at a step
        # boundary.
        return (yield from train_in_child(db_path, run_id, cancel=cancel, resume=resume, runs_dir=runs_dir))
    except TrainingOutOfMemoryError as exc:
        yield OutOfMemory(run_id=run_id, message=str(exc), suggested=exc.suggested)
        raise


def _record_outcome(db_path: Path, run_id: int, error: BaseException) -> None:
    """Record how a run ended before its training process started, on this thread's own connection."""
    store = Store.open(db_path)
    try:
        if store.get_run(run_id) is not None:
            persist_outcome(store, run_id, error)
    finally:
        store.close()


def device_preset_job(cancel: CancelToken, model: ModelRow | None = None) -> Job:
    """Detect the device (imports torch) and size a :class:`DevicePreset` for ``model``.

    A factory for a ``JobOp`` (bind ``model`` with ``functools.partial``). The model's size comes from
    the headers of its trainable folder; a model without one (a GGUF not yet copied) is sized as a
    typical model, and the preset's reason says so.
    """
    yield Loading("Detecting your GPU")
    cancel.raise_if_cancelled()
    device = detect_device()
    shape = None
    if model is not None:
        try:
            shape = model_shape(training_folder(model))
        except DesktopDpoError:
            shape = None  # not trainable yet: the view says why; a typical size stands in
    preset = default_preset(device, shape)
    return DevicePreset(
        device=device,
        config=preset.config,
        reason=preset.reason,
        fits=preset.fits,
        model_id=model.id if model is not None else None,
    )
