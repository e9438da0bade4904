"""Training in a supervised child process: a native fault or a crash in a step becomes a message, never a dead window.

Measured (``tests/core/test_train.py``): a segfault inside bitsandbytes during a training step run in a
worker thread kills the whole process, window included, with no exception and no ``finally``. So the app
trains in a child process (``python -m desktop_dpo.core.dpo.train_child``), as llama.cpp runs in one
(``core/llm/supervised.py``; both through ``core/child_process.py``), and :func:`train_in_child` is the job
the GUI worker drives: it yields the same events as :func:`~desktop_dpo.core.dpo.train.train` and returns
the same :class:`Finished`.

Who records what: the parent, as every driver does. :func:`train_in_child` writes no rows; the GUI's
worker records it with :func:`~desktop_dpo.core.dpo.train.record_training`, the recording code the CLI
and the demo run around the in-process job: each event the child sends is written (``persist_event``)
before it is passed on, and how the run ended (``persist_outcome``), the child's death included: the job
then raises :class:`TrainingCrashed` with a message in words (what happened, at which step, which
checkpoint Resume continues from), and that is what the run row says. The child opens its own
:class:`Store` on the database file (SQLite's WAL serves two processes) only for what the training job
itself writes: the prompt split and the reference cache.

Protocol (frames of ``core/child_process.py``: a 4-byte length and a pickle): the parent sends
``("train", kwargs)`` once and ``("cancel",)`` at any moment; the child answers ``("event", event)`` for
each event, then ``("done", finished)`` or ``("error", kind, message, data)``, and exits. A cancel sets the
job's cancel token, so the step under way ends and a checkpoint is written at that boundary; the parent
relays those last events and the child's ``JobCancelled``, exactly as a stop in process. When the parent's end of the pipe closes (the app
quit or died) the child exits at once: it never outlives the app, and the run, left "running", shows as
interrupted and resumes from its last checkpoint.

Start-up costs one Python process that imports torch, transformers and peft, for every run: measured on a
2-core machine, a tiny run took 6.8-7.9 s in the child against 0.4 s in a process that had already
imported torch (a fresh ``import torch, transformers, peft`` alone took 6.2 s); the first event arrives
after 1.2-1.9 s. Small next to any real run, and the price of a window that survives a native fault.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import pickle
import queue
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, BinaryIO

from desktop_dpo.core import errors
from desktop_dpo.core.child_process import (
    PIPE_CLOSED,
    ChildProcess,
    describe_exit,
    read_frame,
    take_over_pipes,
    write_frame,
)
from desktop_dpo.core.dpo import train as train_module
from desktop_dpo.core.dpo.config import TrainConfig, TrainingError, TrainingOutOfMemoryError
from desktop_dpo.core.dpo.events import Checkpointed, Finished, Loading, Started, StepMetrics
from desktop_dpo.core.dpo.train import failure_message
from desktop_dpo.core.errors import DesktopDpoError, JobCancelled
from desktop_dpo.core.jobs import CancelToken, drive

log = logging.getLogger(__name__)
child_log = logging.getLogger("desktop_dpo.train_child")

CHILD_MODULE = "desktop_dpo.core.dpo.train_child"
# After a stop, the child finishes the step under way and writes a checkpoint; a step of a large model on
# a CPU takes minutes. A child that has not ended this long after a stop is killed (its last checkpoint
# stays, and Resume continues from it).
STOP_TIMEOUT_S = 600.0
_POLL_S = 0.05  # how often the parent looks at its cancel token while it waits for the child

# Set in tests only, through the environment the parent passes on: makes the training child fail at a
# given step, in the middle of its forward and backward pass. "KIND:STEP" or "hold:STEP:PATH". Kinds:
# "segv" (a real native fault: reads address 0, as a bad bitsandbytes kernel would), "oom" (torch's CUDA
# out-of-memory error, which the job turns into smaller settings), and "hold", no fault: the step waits
# while PATH exists (at most three minutes), after creating PATH + ".reached", so a test can act mid-step.
FAULT_ENV = "DESKTOP_DPO_INJECT_TRAIN_FAULT"


class TrainingCrashed(TrainingError):
    """The training process ended without a word (a native fault, killed for memory); ``how`` says how."""

    def __init__(self, message: str, how: str = ""):
        super().__init__(message)
        self.how = how


# ---------------------------------------------------------------------------------------------------------
# The parent's side: the job the GUI worker drives
# ---------------------------------------------------------------------------------------------------------


def train_in_child(
    db_path: str | Path,
    run_id: int,
    *,
    cancel: CancelToken,
    resume: bool = True,
    runs_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> Generator[object, None, Finished]:
    """Train ``run_id`` in a child process (a job): yields the child's events, returns :class:`Finished`.

    Writes no rows: record it with :func:`~desktop_dpo.core.dpo.train.record_training` (see the module
    docstring).

    A stop (``cancel`` set, or ``JobCancelled`` thrown in at a yield by :func:`~desktop_dpo.core.jobs.drive`)
    reaches the child at once; the step under way finishes and a checkpoint is written. The events the
    child sends meanwhile are still yielded, then its ``JobCancelled`` is raised here. A child that has
    not ended :data:`STOP_TIMEOUT_S` after a stop is killed. Closing the generator at a yield waits for
    the child the same way, with nobody to hand its last events to.

    Args:
        db_path: the database file; the child opens its own connection to it.
        run_id, resume, runs_dir: as for :func:`~desktop_dpo.core.dpo.train.train`.
        cancel: the job's cancel token.
        env: the child's environment (None: this process's).

    Raises:
        TrainingCrashed: the child died (signal, exit) before it finished.
        TrainingOutOfMemoryError: with its ``suggested`` smaller settings, as in process.
        JobCancelled: stopped as asked, before or between steps.
        TrainingError, ModelError, ...: the job's own errors, rebuilt from the child's words.
    """
    path = Path(db_path)
    started_at = time.perf_counter()
    try:
        child = ChildProcess(CHILD_MODULE, env, logger=child_log)
    except OSError as exc:
        raise TrainingError(
            f"The training process could not start ({exc}). Nothing was changed; try again."
        ) from exc
    log.info("Training run %s in child process %d", run_id, child.pid)
    progress = _Progress()
    finished_cleanly = False
    stop_deadline: float | None = None  # set once the child was told to stop

    def stop() -> None:
        nonlocal stop_deadline
        if stop_deadline is None:
            child.send(("cancel",))  # the step under way ends, then a checkpoint; the events go on
            stop_deadline = time.monotonic() + STOP_TIMEOUT_S

    try:
        child.send(
            ("train", {"db_path": str(path), "run_id": run_id, "resume": resume, "runs_dir": runs_dir})
        )
        while True:
            if cancel.cancelled:
                stop()
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                finished_cleanly = True
                raise _stop_timed_out(child, progress)
            try:
                frame = child.frames.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if frame is PIPE_CLOSED:
                finished_cleanly = True  # nothing left to stop
                raise _crashed(child, run_id, progress)
            kind = frame[0]
            if kind == "event":
                event = frame[1]
                if progress.first_event_s is None:
                    progress.first_event_s = time.perf_counter() - started_at
                    log.info("The training child answered after %.1f s", progress.first_event_s)
                progress.observe(event)
                try:
                    yield event
                except JobCancelled:
                    stop()  # the cancel rule: the child's last events and its JobCancelled follow
            elif kind == "done":
                finished_cleanly = True
                return frame[1]
            elif kind == "error":
                finished_cleanly = True
                raise _rebuild_error(frame[1], frame[2], frame[3])
    finally:
        if not finished_cleanly:
            # Abandoned at a yield (closed) or failed here: the child checkpoints at the end of the step
            # under way; wait for that.
            _stop(child, run_id, progress)
        elif child.wait_exit(5.0) is None:
            child.kill()
        child.kill()  # idempotent: closes the pipes, forgets the child


class _Progress:
    """What the parent knows of the run from the events it relayed: enough to say where a crash happened."""

    def __init__(self) -> None:
        self.stage = "starting"
        self.step: int | None = None  # steps done (None: not started)
        self.checkpoint_step = 0  # the newest checkpoint written (0: none)
        self.first_event_s: float | None = None

    def observe(self, event: object) -> None:
        if isinstance(event, Loading):
            self.stage = event.stage
        elif isinstance(event, Started):
            self.step = event.start_step
            self.checkpoint_step = event.start_step  # a resumed run starts from a checkpoint of that step
        elif isinstance(event, StepMetrics):
            self.step = event.step
        elif isinstance(event, Checkpointed):
            self.checkpoint_step = event.step

    def crash_message(self, how: str) -> str:
        if self.step is None:
            return (
                f"Training crashed ({how}) before its first step, while: {self.stage}. Your pairs are safe. "
                "Try again with Resume; if it crashes again, try smaller settings or the CPU."
            )
        if self.checkpoint_step:
            return (
                f"Training crashed ({how}) at step {self.step + 1}. Your pairs and the checkpoint at step "
                f"{self.checkpoint_step} are safe: Resume continues from there."
            )
        return (
            f"Training crashed ({how}) at step {self.step + 1}. Your pairs are safe, but no checkpoint was "
            "written yet: Resume starts the run again from the beginning."
        )


def _crashed(child: ChildProcess, run_id: int, progress: _Progress) -> TrainingCrashed:
    """The child ended without a last word: say how, and where Resume continues, in words."""
    how = describe_exit(child.wait_exit(5.0))
    tail = " | ".join(list(child.stderr_tail)[-5:])
    log.error("Training child %d of run %s ended: %s. Last output: %s", child.pid, run_id, how, tail)
    return TrainingCrashed(progress.crash_message(how), how=how)


def _stop_timed_out(child: ChildProcess, progress: _Progress) -> TrainingError:
    """The child did not stop within :data:`STOP_TIMEOUT_S`: end it, and say where Resume continues."""
    log.error("Training child %d did not stop within %.0f s; it was ended", child.pid, STOP_TIMEOUT_S)
    child.kill()
    return TrainingError(
        f"Training did not stop within {STOP_TIMEOUT_S:.0f} s, so it was ended. Your pairs are safe"
        + (
            f" and Resume continues from the checkpoint at step {progress.checkpoint_step}."
            if progress.checkpoint_step
            else "; Resume starts the run again from the beginning."
        )
    )


def _stop(child: ChildProcess, run_id: int, progress: _Progress) -> None:
    """Ask the child to stop and wait for its last word (nobody listens to it any more); kill it after
    :data:`STOP_TIMEOUT_S`."""
    child.send(("cancel",))
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            frame = child.frames.get(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            continue
        if frame is PIPE_CLOSED:
            _crashed(child, run_id, progress)  # logged; the stop itself goes on as a stop
            return
        if frame[0] == "event":
            progress.observe(frame[1])
        elif frame[0] in ("done", "error"):
            child.wait_exit(5.0)
            return
    _stop_timed_out(child, progress)


def _rebuild_error(kind: str, message: str, data: dict[str, Any]) -> Exception:
    """The child's error as the parent raises it: the same class where it is one of ours."""
    if kind == "TrainingOutOfMemoryError":
        return TrainingOutOfMemoryError(message, TrainConfig.from_dict(data["suggested"]))
    cls = getattr(train_module, kind, None) or getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, DesktopDpoError):
        with contextlib.suppress(TypeError):  # a class whose constructor takes more than the message
            return cls(message)
    return TrainingError(message)


# ---------------------------------------------------------------------------------------------------------
# The child's side
# ---------------------------------------------------------------------------------------------------------


class _Faults:
    """The fault this child was asked to simulate (tests only; see :data:`FAULT_ENV`)."""

    def __init__(self, spec: str) -> None:
        kind, _, rest = spec.partition(":")
        step, _, hold_path = rest.partition(":")
        self.kind = kind
        self.step = int(step) if step else 0
        self.hold_path = Path(hold_path) if hold_path else None
        self.stopped: Callable[[], bool] = lambda: False  # set once the child that can be stopped exists

    def install(self) -> None:
        """Wrap the training step so the fault fires inside step :attr:`step`."""
        if not self.kind:
            return
        real = train_module._Session.forward_backward
        faults = self

        def forward_backward(session: Any, indices: Any) -> dict[str, Any]:
            if session.step + 1 == faults.step:  # session.step counts finished steps
                faults.fire()
            return real(session, indices)

        train_module._Session.forward_backward = forward_backward  # type: ignore[method-assign]

    def fire(self) -> None:
        if self.kind == "segv":
            import ctypes

            faulthandler.disable()  # a real native crash, without Python's report
            ctypes.string_at(0)  # reads address 0: SIGSEGV in native code
        elif self.kind == "oom":
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        elif self.kind == "hold" and self.hold_path is not None:
            Path(f"{self.hold_path}.reached").touch()
            deadline = time.monotonic() + 180
            # A stop ends the hold too, so a test's Stop lands in this step however the race goes.
            while self.hold_path.exists() and not self.stopped() and time.monotonic() < deadline:
                time.sleep(0.01)


class _TrainingChild:
    """Serves one training request: runs the job, records it, streams its events."""

    def __init__(self, inbox: BinaryIO, outbox: BinaryIO) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.out_lock = threading.Lock()
        self.cancel = CancelToken()
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()

    def send(self, message: object) -> None:
        write_frame(self.outbox, message, self.out_lock)

    def listen(self) -> None:
        """Reader thread: take the request, apply a stop at once; exit the process when the parent is gone."""
        while True:
            try:
                frame = read_frame(self.inbox)
            except (EOFError, OSError, pickle.UnpicklingError):
                # The app quit or died: never outlive it. The run, left "running", shows as interrupted and
                # resumes from its last checkpoint; SQLite's journal keeps the database whole.
                os._exit(0)
            if frame[0] == "cancel":
                self.cancel.cancel()
            elif frame[0] == "train":
                self.requests.put(frame[1])

    def serve(self) -> None:
        threading.Thread(target=self.listen, name="train-child-listen", daemon=True).start()
        request = self.requests.get()
        self.train(**request)

    def train(self, db_path: str, run_id: int, resume: bool, runs_dir: Path | None) -> None:
        from desktop_dpo.core.store import Store

        try:
            store = Store.open(Path(db_path))  # for what the job itself writes (split, reference cache)
        except BaseException as exc:
            self.send(("error", *_error_words(exc)))
            return
        try:
            job = train_module.train(store, run_id, cancel=self.cancel, resume=resume, runs_dir=runs_dir)
            finished = drive(job, lambda event: self.send(("event", event)), self.cancel)
        except BaseException as exc:
            if not isinstance(exc, (DesktopDpoError, MemoryError)):
                child_log.error("Training run %s failed", run_id, exc_info=exc)
            self.send(("error", *_error_words(exc)))
            return
        finally:
            store.close()
        self.send(("done", finished))


def _error_words(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """(kind, message, data) the parent rebuilds the error from."""
    if isinstance(exc, TrainingOutOfMemoryError):
        return "TrainingOutOfMemoryError", str(exc), {"suggested": exc.suggested.to_dict()}
    if isinstance(exc, DesktopDpoError):
        return type(exc).__name__, str(exc), {}
    # Not one of ours (a bug, MemoryError): the words a run row gives it.
    return "TrainingError", failure_message(exc), {}


def main() -> None:
    """Entry point of the child: take the frame pipe over from stdout, then train as the parent asks."""
    inbox, outbox = take_over_pipes()  # before torch and transformers are imported
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    faults = _Faults(os.environ.get(FAULT_ENV, ""))
    faults.install()
    child = _TrainingChild(inbox, outbox)
    faults.stopped = lambda: child.cancel.cancelled
    child.serve()


if __name__ == "__main__":
    main()
