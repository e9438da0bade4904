"""The training worker: a run driven on a JobThread, trained in a child process that persists each event first.

Everything here runs the real training job on the tiny Llama (``tiny_model_dir``), in its child process,
through a real ``JobRegistry``; what is asserted is what the database (read on the test's own connection) and the
signals say, as the Train view would see them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt

from desktop_dpo.core.dpo.checkpoint import latest_checkpoint
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.events import StepMetrics
from desktop_dpo.core.dpo.train_child import FAULT_ENV
from desktop_dpo.core.store import Store
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry, JobThread
from desktop_dpo.workers.training_worker import (
    DEVICE_RESOURCE,
    TRAIN_RESOURCE,
    DevicePreset,
    OutOfMemory,
    device_preset_job,
    training_job,
)

WAIT_MS = 180_000  # generous: the machine is shared; nothing here asserts on time

TINY = TrainConfig(
    lr=5e-3, epochs=2, batch_size=4, grad_accum=1, max_length=64, max_prompt_length=32, lora_r=4,
    lora_alpha=8, checkpoint_every=100, eval_every=100, heldout_fraction=0.25, seed=3, threads=1,
    quantization="none", device="cpu",
)  # fmt: skip
TOPICS = ["apples", "rivers", "trains", "music", "winter", "cats", "maps", "bread", "stars", "clocks",
          "boats", "roses"]  # fmt: skip


@pytest.fixture
def registry():
    jobs = JobRegistry()
    yield jobs
    jobs.cancel_all_and_wait(60_000)


@pytest.fixture
def db(tmp_path):
    store = Store.open(tmp_path / "db.sqlite")
    yield store
    store.close()


def make_run(store: Store, tmp_path: Path, model_dir: Path, config: TrainConfig = TINY) -> int:
    for topic in TOPICS:
        store.record_pair(
            messages=[{"role": "user", "content": f"Tell me about {topic}."}],
            text_a=f" Yes, gladly! {topic} are lovely, thank you.",
            text_b=f" No. {topic} bore me, go away.",
            verdict="a",
        )
    model_id = store.add_model(name="tiny", path=str(model_dir), kind="hf", fingerprint="fp-tiny")
    return store.create_run(
        name="worker",
        base_model_id=model_id,
        config=config.to_dict(),
        comparison_ids=[v.comparison.id for v in store.comparison_views()],
        checkpoint_dir=str(tmp_path / "run"),
    )


class Recorder:
    """Connects to a JobThread: keeps every event and how the job ended."""

    def __init__(self, db: Store, run_id: int, stop_after: int | None = None):
        self.db, self.run_id, self.stop_after = db, run_id, stop_after
        self.events: list[object] = []
        self.stored_when_seen: list[tuple[int, list[int]]] = []
        self.outcome: str | None = None
        self.message = ""
        self.thread = None

    def connect(self, thread) -> None:
        self.thread = thread
        thread.event.connect(self.on_event)
        # In the worker thread, during the emit: the stop reaches the training process at once.
        thread.event.connect(self.maybe_stop, Qt.ConnectionType.DirectConnection)
        thread.succeeded.connect(lambda _result: self.end("succeeded"))
        thread.failed.connect(lambda message: self.end("failed", message))
        thread.cancelled.connect(lambda: self.end("cancelled"))

    def on_event(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, StepMetrics):
            # Read on the GUI thread's own connection: the step must already be stored.
            steps = [step for step, _ in self.db.run_metrics(self.run_id)]
            self.stored_when_seen.append((event.step, steps))

    def maybe_stop(self, event: object) -> None:
        if isinstance(event, StepMetrics) and event.step == self.stop_after:
            self.thread.cancel()

    def end(self, outcome: str, message: str = "") -> None:
        self.outcome, self.message = outcome, message

    def of_type(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def run_to_end(qtbot, registry, db_path, run_id, recorder: Recorder) -> None:
    def job(cancel):  # what JobOp(..., store=db_path) runs: a store of the worker thread's own
        store = Store.open(db_path)
        try:
            return (yield from training_job(run_id)(store, cancel))
        finally:
            store.close()

    thread = JobThread(TRAIN_RESOURCE, job)
    recorder.connect(thread)  # before it starts, as JobOp does (and a direct connection into its thread)
    registry.start(thread)
    qtbot.waitUntil(
        lambda: recorder.outcome is not None and not registry.is_busy(TRAIN_RESOURCE), timeout=WAIT_MS
    )


def test_worker_trains_a_run_persisting_each_event_before_passing_it_on(
    qtbot, registry, db, tmp_path, tiny_model_dir
):
    run_id = make_run(db, tmp_path, tiny_model_dir)
    recorder = Recorder(db, run_id)

    run_to_end(qtbot, registry, db.path, run_id, recorder)

    assert recorder.outcome == "succeeded", recorder.message
    steps = [e.step for e in recorder.of_type(StepMetrics)]
    assert steps == list(range(1, 7))  # 9 training pairs, 4 per step, 2 epochs
    # Every step the GUI saw was in the database already, on another connection.
    assert all(step in stored for step, stored in recorder.stored_when_seen)
    run = db.get_run(run_id)
    assert run.status == "completed" and run.step == run.total_steps == 6
    assert "heldout/rewards/accuracies" in run.final_metrics
    assert (Path(run.adapter_path) / "adapter_model.safetensors").is_file()


def test_stop_checkpoints_and_resume_finishes_at_the_same_step_count(
    qtbot, registry, db, tmp_path, tiny_model_dir
):
    # 36 steps (12 epochs of 3): the training process runs on while a busy machine delivers the stop, and
    # the run must still be short of its end when the stop lands.
    run_id = make_run(db, tmp_path, tiny_model_dir, TINY.replace(epochs=12))
    first = Recorder(db, run_id, stop_after=2)

    run_to_end(qtbot, registry, db.path, run_id, first)

    assert first.outcome == "cancelled"
    stopped = db.get_run(run_id)
    # The training process may have begun later steps when the stop arrives: it lands at a step boundary.
    assert stopped.status == "stopped" and 2 <= stopped.step < 36 and stopped.total_steps == 36
    assert latest_checkpoint(Path(stopped.checkpoint_dir)).name == f"step-{stopped.step:07d}"

    second = Recorder(db, run_id)
    run_to_end(qtbot, registry, db.path, run_id, second)

    assert second.outcome == "succeeded", second.message
    assert second.of_type(StepMetrics)[0].step == stopped.step + 1
    run = db.get_run(run_id)
    assert run.status == "completed" and run.step == 36
    assert [step for step, _ in db.run_metrics(run_id)] == list(range(1, 37))


def test_out_of_memory_reaches_the_gui_with_smaller_settings(
    qtbot, registry, db, tmp_path, tiny_model_dir, monkeypatch
):
    run_id = make_run(db, tmp_path, tiny_model_dir, TINY.replace(batch_size=2, grad_accum=2))
    # The training process raises torch's CUDA out-of-memory error inside step 2 (before its first pass).
    monkeypatch.setenv(FAULT_ENV, "oom:2")
    recorder = Recorder(db, run_id)
    run_to_end(qtbot, registry, db.path, run_id, recorder)

    assert recorder.outcome == "failed"
    assert "ran out of memory at step 2" in recorder.message
    (oom,) = recorder.of_type(OutOfMemory)
    assert oom.run_id == run_id and oom.message == recorder.message
    assert oom.suggested.gradient_checkpointing  # the first thing to lower
    run = db.get_run(run_id)
    assert run.status == "failed" and run.error == recorder.message and run.step == 1


def test_a_run_that_cannot_start_fails_with_a_message(qtbot, registry, db):
    recorder = Recorder(db, 999)
    run_to_end(qtbot, registry, db.path, 999, recorder)
    assert recorder.outcome == "failed" and "There is no training run 999" in recorder.message


def test_device_detection_reports_a_preset_for_this_machine(qtbot, registry):
    results: list[object] = []
    JobOp(registry, device_preset_job).resource(DEVICE_RESOURCE).on_success(results.append).start()
    qtbot.waitUntil(lambda: bool(results), timeout=WAIT_MS)
    (preset,) = results
    assert isinstance(preset, DevicePreset)
    assert preset.device.kind == ("cuda" if torch.cuda.is_available() else "cpu")
    assert preset.config.device == ("cuda" if preset.device.kind == "cuda" else "cpu")
