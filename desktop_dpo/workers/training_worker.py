"""The training run the GUI drives on the job resource ``"train"``: in a supervised child process.

:func:`training_job` gives a :data:`~desktop_dpo.workers.job_op.StoreJobFactory` for a
:class:`~desktop_dpo.workers.job_op.JobOp` with ``store=<database file>`` on the resource ``"train"``.
The run itself trains in a child process (:func:`desktop_dpo.core.dpo.train_child.train_in_child`): a
native fault in bitsandbytes or a crash in a step ends that process, not the window. This worker records
the child's events on the store the op opened in its thread, with the recording code the CLI and the demo
use (:func:`~desktop_dpo.core.dpo.train.record_training`): each event is written before it is passed on
(a crash or a quit loses at most the step under way), and how the run ended, the child's death included
(failed, with a message that says so and where Resume continues).

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

from desktop_dpo.core.dpo.config import (
    DeviceInfo,
    TrainConfig,
    TrainingOutOfMemoryError,
    default_preset,
    detect_device,
    model_shape,
)
from desktop_dpo.core.dpo.events import Loading
from desktop_dpo.core.dpo.sft_phase import is_base_model
from desktop_dpo.core.dpo.train import record_training
from desktop_dpo.core.dpo.train_child import train_in_child
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.core.model_files import training_folder
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.workers.job_op import StoreJobFactory

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
    run_id: int,
    *,
    resume: bool = True,
    runs_dir: Path | None = None,
    release_engines: Callable[[], None] | None = None,
) -> StoreJobFactory:
    """A factory for ``JobOp(registry, ..., store=db_path).resource(TRAIN_RESOURCE)`` that trains ``run_id``.

    Args:
        run_id: a run made with ``Store.create_run`` (see ``core/dpo/runs.py``).
        resume: continue from the run's newest checkpoint when it has one.
        runs_dir: where the run's folder goes when it has none yet (the app's runs folder).
        release_engines: called in the worker thread before the model loads, e.g. ``EnginePool.close_all``.
    """

    def factory(store: Store, cancel: CancelToken) -> Job:
        return drive_training_run(
            store, run_id, cancel=cancel, resume=resume, runs_dir=runs_dir, release_engines=release_engines
        )

    return factory


def drive_training_run(
    store: Store,
    run_id: int,
    *,
    cancel: CancelToken,
    resume: bool = True,
    runs_dir: Path | None = None,
    release_engines: Callable[[], None] | None = None,
) -> Job:
    """Train ``run_id`` in a child process, recorded on ``store`` (this thread's own), as a job.
    Returns :class:`Finished`.

    ``release_engines`` runs first (it may wait for a generation under way to end), announced by a
    :class:`Loading` event, so the inference engines' memory is free before the base model loads.

    Raises whatever the training job raises (recorded in the run row by then), and
    :class:`~desktop_dpo.core.dpo.train_child.TrainingCrashed` when the training process died. A
    :class:`TrainingOutOfMemoryError` is preceded by an :class:`OutOfMemory` event carrying its
    suggested settings, since a failure reaches the GUI as a message only.
    """

    def in_child() -> Job:
        if release_engines is not None:
            yield Loading(RELEASING)
            release_engines()
            cancel.raise_if_cancelled()
        # ``yield from`` passes a thrown JobCancelled on to the child's job, which stops the child at a step
        # boundary.
        return (
            yield from train_in_child(store.path, run_id, cancel=cancel, resume=resume, runs_dir=runs_dir)
        )

    try:
        return (yield from record_training(store, run_id, in_child()))
    except TrainingOutOfMemoryError as exc:
        yield OutOfMemory(run_id=run_id, message=str(exc), suggested=exc.suggested)
        raise


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
    preset = default_preset(device, shape, base_model=model is not None and is_base_model(model))
    return DevicePreset(
        device=device,
        config=preset.config,
        reason=preset.reason,
        fits=preset.fits,
        model_id=model.id if model is not None else None,
    )
