"""The training job, end to end on the tiny Llama built from a config (``tiny_model_dir``): it learns, it stops and resumes
exactly, it survives a crash and an out-of-memory error, and it computes reference log-probs once.

Every test drives the job the way the CLI and the GUI worker do (events persisted with
``persist_event`` / ``persist_outcome``), so what is asserted is what a person would see: the run's
status, step and metrics in the database, the adapter on disk, the messages.
"""

from __future__ import annotations

import math
import sqlite3
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from desktop_dpo.core import jobs
from desktop_dpo.core.dpo import reference as reference_module
from desktop_dpo.core.dpo import train as train_module
from desktop_dpo.core.dpo.checkpoint import latest_checkpoint
from desktop_dpo.core.dpo.config import TrainConfig, TrainingOutOfMemoryError
from desktop_dpo.core.dpo.events import (
    Checkpointed,
    EvalMetrics,
    Finished,
    ReferenceReady,
    Started,
    StepMetrics,
    TrainingWatch,
    TrainWarning,
)
from desktop_dpo.core.dpo.train import drive_training, persist_event, persist_outcome
from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.jobs import CancelToken

TOPICS = [
    "apples", "rivers", "trains", "music", "winter", "cats", "maps", "bread", "stars", "clocks",
    "boats", "roses", "tea", "hills", "books", "lamps", "snow", "birds", "rain", "chess",
    "wolves", "kites", "pears", "bees", "coins", "forks", "ships", "caves", "ducks", "plums",
    "owls", "bells", "ferns", "moths", "reefs", "dunes",
]  # fmt: skip


def chosen_text(topic: str) -> str:
    return f" Yes, gladly! {topic} are lovely, thank you."


def rejected_text(topic: str) -> str:
    return f" No. {topic} bore me, go away."


# The learnable preference: chosen answers are always the warm "Yes, gladly ... thank you" kind,
# rejected ones the curt "No ... go away" kind, whatever the topic. A held-out prompt has an unseen topic.


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The shared tiny Llama, and a second one with other random weights (a previous round's model)."""
    from tests.plugins.tiny_model import build_tiny_model

    return tiny_model_dir, build_tiny_model(tmp_path_factory.mktemp("other") / "tiny-other", seed=1)


BASE = TrainConfig(
    lr=5e-3, epochs=2, batch_size=4, grad_accum=1, max_length=64, max_prompt_length=32, lora_r=8,
    lora_alpha=16, lora_dropout=0.1, warmup_ratio=0.1, checkpoint_every=3, eval_every=100,
    heldout_fraction=0.25, seed=7, threads=1, quantization="none", device="cpu",
)  # fmt: skip


def add_pairs(store, topics=TOPICS) -> list[int]:
    return [
        store.record_pair(
            messages=[{"role": "user", "content": f"Tell me about {topic}."}],
            text_a=chosen_text(topic) if i % 2 == 0 else rejected_text(topic),
            text_b=rejected_text(topic) if i % 2 == 0 else chosen_text(topic),
            verdict="a" if i % 2 == 0 else "b",  # the chosen answer is shown on both sides
        )
        for i, topic in enumerate(topics)
    ]


def new_run(
    store,
    tmp_path: Path,
    model_dir: Path,
    config: TrainConfig,
    *,
    reference="adapter_off",
    name="r",
    other_model=None,
) -> int:
    model_id = store.add_model(
        name=model_dir.name, path=str(model_dir), kind="hf", fingerprint=f"fp-{model_dir.name}"
    )
    ids = [v.comparison.id for v in store.comparison_views()]
    if reference == "previous":
        other = store.add_model(name="other", path=str(other_model), kind="hf", fingerprint="fp-other")
        reference = f"model:{other}"
    return store.create_run(
        name=name,
        base_model_id=model_id,
        config=config.to_dict(),
        comparison_ids=ids,
        reference=reference,
        checkpoint_dir=str(tmp_path / f"run-{name}"),
    )


def drive(store, run_id: int, *, stop_after: int | None = None, events: list | None = None) -> list[object]:
    """Run the job as a driver does (events into ``events``); stop after ``stop_after`` steps if given."""
    token = CancelToken()
    events = [] if events is None else events

    def on_event(event: object) -> None:
        events.append(event)
        if stop_after is not None and isinstance(event, StepMetrics) and event.step == stop_after:
            token.cancel()

    drive_training(store, run_id, cancel=token, on_event=on_event)
    return events


def adapter_weights(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "adapter_model.safetensors"))


def of_type(events, kind):
    return [e for e in events if isinstance(e, kind)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, model_dirs):
    """One uninterrupted run of BASE, the yardstick for the stop/crash/resume tests."""
    from desktop_dpo.core.store import Store

    tmp = tmp_path_factory.mktemp("uninterrupted")
    store = Store.open(tmp / "db.sqlite")
    add_pairs(store)
    run_id = new_run(store, tmp, model_dirs[0], BASE)
    events = drive(store, run_id)
    run = store.get_run(run_id)
    store.close()
    return run, events


# --------------------------------------------------------------------------------------------------


def test_training_raises_heldout_accuracy(store, tmp_path, model_dirs):
    add_pairs(store)
    config = BASE.replace(epochs=3, lr=1e-2, lora_dropout=0.0, eval_every=6)
    run_id = new_run(store, tmp_path, model_dirs[0], config)

    events = drive(store, run_id)

    started = of_type(events, Started)[0]
    assert started.train_pairs == 27 and started.heldout_pairs == 9  # 25% of 36 prompts, split by prompt
    evals = of_type(events, EvalMetrics)
    assert evals[0].step == 0 and evals[-1].step == started.total_steps
    # A fresh adapter is the reference itself: no pair is ranked right yet (a tie counts as wrong).
    assert evals[0].accuracy == 0.0 and evals[0].loss == pytest.approx(math.log(2), abs=1e-5)
    # Unseen topics, same taste: the preference generalises.
    assert evals[-1].accuracy >= 0.9 and evals[-1].margins > 0.5
    assert evals[-1].loss < 0.6 * math.log(2)
    assert [e.loss for e in evals] == sorted((e.loss for e in evals), reverse=True)  # steadily better

    run = store.get_run(run_id)
    assert run.status == "completed" and run.step == run.total_steps == started.total_steps
    assert of_type(events, Finished)[0].adapter_path == run.adapter_path
    assert run.final_metrics["heldout/rewards/accuracies"] >= 0.9
    assert [step for step, _ in store.run_metrics(run_id)] == list(range(1, run.total_steps + 1))
    assert "rewards/margins" in store.run_metrics(run_id)[-1][1]
    assert [step for step, _ in store.run_metrics(run_id, split="heldout")] == [0, 6, 12, 18, 21]
    assert (Path(run.adapter_path) / "adapter_model.safetensors").is_file()
    assert latest_checkpoint(Path(run.checkpoint_dir)) is None  # checkpoints are cleaned up at the end
    # The held-out split is fixed in the database, one split per prompt.
    splits = [p.split for p in store.list_prompts()]
    assert splits.count("heldout") == 9 and splits.count("train") == 27


def test_nf4_path_trains(store, tmp_path, model_dirs):
    add_pairs(store, TOPICS[:12])
    config = BASE.replace(quantization="nf4", epochs=1, heldout_fraction=0.0, checkpoint_every=100)
    run_id = new_run(store, tmp_path, model_dirs[0], config)

    events = drive(store, run_id)

    assert of_type(events, Started)[0].quantization == "nf4"
    steps = of_type(events, StepMetrics)
    assert len(steps) == 3 and all(math.isfinite(s.loss) and math.isfinite(s.grad_norm) for s in steps)
    adapter = adapter_weights(store.get_run(run_id).adapter_path)
    assert any("lora_B" in name and t.abs().sum() > 0 for name, t in adapter.items())  # it moved
    assert store.get_run(run_id).status == "completed"


def test_stop_then_resume_ends_like_an_uninterrupted_run(store, tmp_path, model_dirs, uninterrupted):
    reference_run, reference_events = uninterrupted
    add_pairs(store)
    run_id = new_run(store, tmp_path, model_dirs[0], BASE)

    first_part: list[object] = []
    with pytest.raises(JobCancelled):
        drive(store, run_id, stop_after=4, events=first_part)  # between the checkpoints at 3 and 6
    assert [e.step for e in of_type(first_part, Checkpointed)] == [3, 4]  # the stop wrote one
    assert not of_type(first_part, Finished)
    stopped = store.get_run(run_id)
    assert stopped.status == "stopped" and stopped.step == 4
    assert latest_checkpoint(Path(stopped.checkpoint_dir)).name == "step-0000004"

    events = drive(store, run_id)
    assert of_type(events, Started)[0].start_step == 4
    assert of_type(events, StepMetrics)[0].step == 5
    run = store.get_run(run_id)
    assert run.status == "completed" and run.step == reference_run.step == reference_run.total_steps
    ours, theirs = adapter_weights(run.adapter_path), adapter_weights(reference_run.adapter_path)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    # The metrics of every step are there once, and equal the uninterrupted run's.
    losses = [m["loss"] for _, m in store.run_metrics(run_id)]
    assert losses == pytest.approx([s.loss for s in of_type(reference_events, StepMetrics)], abs=1e-6)


def test_a_stop_thrown_in_at_an_event_checkpoints_like_the_gui_worker_stop(
    store, tmp_path, model_dirs, uninterrupted
):
    """The GUI worker stops a job with ``jobs.drive``: right after an event, ``JobCancelled`` is thrown in at
    the yield where the job waits (``JobThread.run``); the job does not check the token there itself."""
    reference_run, _ = uninterrupted
    add_pairs(store)
    run_id = new_run(store, tmp_path, model_dirs[0], BASE)
    token = CancelToken()
    events: list[object] = []

    def on_event(event: object) -> None:
        persist_event(store, run_id, event)
        events.append(event)
        if isinstance(event, StepMetrics) and event.step == 5:
            token.cancel()

    with pytest.raises(JobCancelled) as stopped_by:
        jobs.drive(train_module.train(store, run_id, cancel=token), on_event, token)
    persist_outcome(store, run_id, stopped_by.value)
    # The clean-up is the one a noticed stop runs: the checkpoint of step 5 is announced like any other.
    assert of_type(events, Checkpointed)[-1].step == 5
    assert not [e for e in events if isinstance(e, StepMetrics) and e.step > 5]

    stopped = store.get_run(run_id)
    assert stopped.status == "stopped" and stopped.step == 5
    assert latest_checkpoint(Path(stopped.checkpoint_dir)).name == "step-0000005"
    drive(store, run_id)
    run = store.get_run(run_id)
    assert run.status == "completed"
    ours, theirs = adapter_weights(run.adapter_path), adapter_weights(reference_run.adapter_path)
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    # Asking a completed run to train again changes nothing and reports the same adapter.
    assert of_type(drive(store, run_id), Finished)[0].adapter_path == run.adapter_path


def test_crash_mid_run_leaves_database_intact_and_run_resumable(
    store, tmp_path, model_dirs, uninterrupted, monkeypatch
):
    reference_run, _ = uninterrupted
    add_pairs(store)
    run_id = new_run(store, tmp_path, model_dirs[0], BASE)
    comparisons_before = store.count_comparisons()
    real = train_module._policy_logps
    calls = {"n": 0}

    def crash_in_step_5(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real(model, batch)

    monkeypatch.setattr(train_module, "_policy_logps", crash_in_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        drive(store, run_id)
    monkeypatch.setattr(train_module, "_policy_logps", real)

    failed = store.get_run(run_id)
    assert failed.status == "failed" and "simulated crash" in failed.error
    assert store.count_comparisons() == comparisons_before
    with sqlite3.connect(store.path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Steps 1-4 finished before the crash; the job saved them on its way out.
    assert latest_checkpoint(Path(failed.checkpoint_dir)).name == "step-0000004"

    events = drive(store, run_id)
    assert of_type(events, Started)[0].start_step == 4
    run = store.get_run(run_id)
    assert run.status == "completed" and run.error is None and run.step == reference_run.step
    ours, theirs = adapter_weights(run.adapter_path), adapter_weights(reference_run.adapter_path)
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_out_of_memory_is_explained_and_resumable_with_smaller_settings(
    store, tmp_path, model_dirs, monkeypatch
):
    add_pairs(store)
    config = BASE.replace(batch_size=2, grad_accum=2, gradient_checkpointing=True)
    run_id = new_run(store, tmp_path, model_dirs[0], config)
    real = train_module._policy_logps
    calls = {"n": 0}

    def out_of_memory_in_step_3(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # two forward passes per step: the first pass of step 3
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, batch)

    monkeypatch.setattr(train_module, "_policy_logps", out_of_memory_in_step_3)
    with pytest.raises(TrainingOutOfMemoryError) as caught:
        drive(store, run_id)
    monkeypatch.setattr(train_module, "_policy_logps", real)

    message = str(caught.value)
    assert "ran out of memory at step 3" in message and "Progress up to step 2 is saved" in message
    assert "lower the batch size to 1 (gradient accumulation 4" in message
    suggested = caught.value.suggested
    assert (suggested.batch_size, suggested.grad_accum) == (1, 4)
    failed = store.get_run(run_id)
    assert failed.status == "failed" and failed.error == message and failed.step == 2

    store.update_run(run_id, config=suggested.to_dict())  # what "Resume with smaller settings" does
    events = drive(store, run_id)
    run = store.get_run(run_id)
    assert of_type(events, Started)[0].start_step == 2
    assert run.status == "completed" and run.step == run.total_steps == failed.total_steps


def test_reference_logps_are_computed_once_and_reused(store, tmp_path, model_dirs, monkeypatch):
    add_pairs(store, TOPICS[:16])
    config = BASE.replace(epochs=2, heldout_fraction=0.25, checkpoint_every=100)
    scored = {"pairs": 0}
    real = reference_module.compute_reference

    def counting(model, pairs, indices, **kwargs):
        for batch_indices, values in real(model, pairs, indices, **kwargs):
            scored["pairs"] += len(batch_indices)
            yield batch_indices, values

    monkeypatch.setattr(reference_module, "compute_reference", counting)

    first = of_type(drive(store, new_run(store, tmp_path, model_dirs[0], config, name="a")), ReferenceReady)[
        0
    ]
    # Two epochs, 16 pairs: each pair's reference is scored once (the second epoch hits the cache).
    assert (first.cached, first.computed, scored["pairs"]) == (0, 16, 16)

    second = of_type(drive(store, new_run(store, tmp_path, model_dirs[0], config, name="b")), ReferenceReady)[
        0
    ]
    assert (second.cached, second.computed, scored["pairs"]) == (16, 0, 16)  # a second run: all hits

    # Another reference model (a previous round's): every value is new.
    third_id = new_run(
        store, tmp_path, model_dirs[0], config, reference="previous", name="c", other_model=model_dirs[1]
    )
    third = of_type(drive(store, third_id), ReferenceReady)[0]
    assert (third.cached, third.computed, scored["pairs"]) == (0, 16, 32)
    assert store.get_run(third_id).status == "completed"

    # Another maximum length changes the tokens the reference saw: a miss too.
    longer = config.replace(max_length=80)
    fourth = of_type(drive(store, new_run(store, tmp_path, model_dirs[0], longer, name="d")), ReferenceReady)[
        0
    ]
    assert (fourth.cached, fourth.computed) == (0, 16)


def test_warnings_name_known_failure_shapes():
    config = TrainConfig()

    def step(n, accuracy=0.5, chosen=0.0, rejected=0.0, loss=0.69):
        return StepMetrics(
            n, 100, 0.0, loss, chosen, rejected, accuracy, chosen - rejected, -10, -10, 1e-4, 1.0, 1, 1
        )

    watch = TrainingWatch(total_steps=100)
    stuck = [w for n in range(1, 31) for w in watch.observe(step(n), config)]
    assert [w.kind for w in stuck] == ["accuracy_stuck"] and "coin toss" in stuck[0].message
    assert stuck[0].step == 25  # after a quarter of the run, not at the first noisy steps

    watch = TrainingWatch(total_steps=100)
    falling = [w for n in range(1, 13) for w in watch.observe(step(n, 1.0, -1.0, -3.0), config)]
    assert [w.kind for w in falling] == ["chosen_falling"] and "less likely too" in falling[0].message

    watch = TrainingWatch(total_steps=100)
    exploding = [w for n in range(1, 13) for w in watch.observe(step(n, 1.0, 8.0, -8.0), config)]
    assert [w.kind for w in exploding] == ["margins_exploding"]

    assert [w.kind for w in TrainingWatch(100).observe(step(1, loss=float("nan")), config)] == ["not_finite"]
    healthy = TrainingWatch(total_steps=100)
    assert not [w for n in range(1, 60) for w in healthy.observe(step(n, 0.9, 0.5, -0.5), config)]
    assert isinstance(stuck[0], TrainWarning)


def test_cli_train_runs_headless_with_a_progress_bar(tmp_path, model_dirs, capsys):
    from desktop_dpo import cli
    from desktop_dpo.config import AppPaths
    from desktop_dpo.core.store import Store

    home = tmp_path / "home"
    paths = AppPaths.in_home(home).ensure()
    with Store.open(paths.db_path) as store:
        add_pairs(store, TOPICS[:8])
        model_id = store.add_model(name="tiny", path=str(model_dirs[0]), kind="hf", fingerprint="fp-tiny")

    argv = ["train", "--home", str(home), "--model", str(model_id), "--epochs", "1", "--batch-size", "4",
            "--grad-accum", "1", "--max-length", "64", "--lora-r", "4", "--threads", "1", "--heldout-fraction", "0"]  # fmt: skip
    assert cli.main(argv) == 0

    err = capsys.readouterr().err
    assert "step 2/2" in err and "ETA" in err
    with Store.open(paths.db_path) as store:
        (run,) = store.list_runs()
        assert run.status == "completed" and run.step == 2 and len(run.comparison_ids) == 8
        assert (Path(run.adapter_path) / "adapter_model.safetensors").is_file()
        assert run.config["lora_r"] == 4 and run.config["device"] == "cpu"


# --------------------------------------------------------------------------------------------------
# The run gives its memory back, and what a native fault does today
# --------------------------------------------------------------------------------------------------


class WatchModels:
    """Weak references to the model each run trains (and one of its frozen base weights), and, at each of
    the job's calls to ``free_memory``, whether they were already gone then."""

    def __init__(self, monkeypatch):
        # Imported before any run: importing bitsandbytes logs a caught ImportError, and pytest's log capture
        # keeps that record, its traceback and so every frame above it, a run's frames included.
        import peft  # noqa: F401

        self.refs: list[weakref.ref] = []
        self.gone_when_freed: list[bool] = []
        real_attach, real_free = train_module.attach_lora, train_module.free_memory

        def attach(model, config, quantization):
            peft_model = real_attach(model, config, quantization)
            base_weight = next(
                p for name, p in peft_model.named_parameters() if name.endswith("base_layer.weight")
            )
            self.refs += [weakref.ref(peft_model), weakref.ref(base_weight)]
            return peft_model

        def free(device):
            real_free(device)  # collects first
            self.gone_when_freed.append(self.gone())

        monkeypatch.setattr(train_module, "attach_lora", attach)
        monkeypatch.setattr(train_module, "free_memory", free)

    def gone(self) -> bool:
        return bool(self.refs) and all(ref() is None for ref in self.refs)


def test_a_finished_run_releases_its_model_before_it_reports(store, tmp_path, model_dirs, monkeypatch):
    add_pairs(store, TOPICS[:12])
    config = BASE.replace(epochs=1, heldout_fraction=0.0, checkpoint_every=100)
    run_id = new_run(store, tmp_path, model_dirs[0], config)
    watch = WatchModels(monkeypatch)

    job = train_module.train(store, run_id, cancel=CancelToken())
    events = []
    for event in job:  # the job stays alive (suspended at its last event) while this checks
        events.append(event)
        if isinstance(event, Finished):
            assert watch.gone()  # released before the last event, not when the job object goes
    assert of_type(events, Finished) and watch.gone_when_freed[-1]


def test_a_failed_run_releases_its_model_while_its_error_is_still_shown(
    store, tmp_path, model_dirs, monkeypatch
):
    add_pairs(store, TOPICS[:12])
    config = BASE.replace(epochs=1, heldout_fraction=0.0, checkpoint_every=100)
    run_id = new_run(store, tmp_path, model_dirs[0], config)
    watch = WatchModels(monkeypatch)
    real = train_module._policy_logps

    def out_of_memory_in_step_2(model, batch):
        if watch.calls == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        watch.calls += 1
        return real(model, batch)

    watch.calls = 0
    monkeypatch.setattr(train_module, "_policy_logps", out_of_memory_in_step_2)
    with pytest.raises(TrainingOutOfMemoryError) as caught:
        drive(store, run_id)

    # The error (and its traceback, with the failed step's frames) is still held here, as a driver
    # holds it while showing it; the step's activations and graph held the weights through those frames.
    assert caught.value.__cause__ is not None and caught.value.__traceback__ is not None
    assert watch.gone_when_freed[-1] and watch.gone()
    assert store.get_run(run_id).status == "failed"


# The measurement (issue 11, item 3) and what the app does about it. A script stands in for the app: the
# training job runs in a worker thread (as the GUI runs it) while the main thread, the "window", keeps
# printing. From step 3 on, bitsandbytes' NF4 dequantization reads address 0 first: a native fault at the
# place a bitsandbytes crash happens, on the CPU as on a GPU. Mode "thread" trains in that thread (as the
# app did); mode "child" trains in the app's supervised training process, whose step 3 faults the same way.
NATIVE_FAULT_SCRIPT = """
import ctypes, sys, threading, time
from pathlib import Path
from desktop_dpo.core.dpo.events import StepMetrics
from desktop_dpo.core.dpo.train import drive_training, record_training
from desktop_dpo.core.dpo.train_child import TrainingCrashed, train_in_child
from desktop_dpo.core.jobs import CancelToken
from desktop_dpo.core.store import Store

db_path, run_id, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
armed = threading.Event()

def on_event(event):
    if isinstance(event, StepMetrics):
        print(f"step {event.step}", flush=True)
        if event.step == 2:
            armed.set()

if mode == "thread":
    import bitsandbytes.functional as bnb_functional

    real = bnb_functional.dequantize_4bit

    def dequantize_4bit(*args, **kwargs):
        if armed.is_set():
            print("fault", flush=True)
            ctypes.string_at(0)  # SIGSEGV in native code, as a bad kernel launch or out-of-bounds read would
        return real(*args, **kwargs)

    bnb_functional.dequantize_4bit = dequantize_4bit

def work():
    if mode == "thread":
        store = Store.open(db_path)
        drive_training(store, run_id, cancel=CancelToken(), on_event=on_event)
        return
    store = Store.open(db_path)  # the app's worker records what the child sends, on its own connection
    try:
        for event in record_training(store, run_id, train_in_child(db_path, run_id, cancel=CancelToken())):
            on_event(event)
    except TrainingCrashed as crash:
        print(f"shown: {crash}", flush=True)

worker = threading.Thread(target=work)
worker.start()
while worker.is_alive():  # the "window": still painting
    print("window alive", flush=True)
    time.sleep(0.2)
print("window survived", flush=True)
"""


def run_fault_script(store, run_id: int, mode: str, env: dict[str, str] | None = None):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", NATIVE_FAULT_SCRIPT, str(store.path), str(run_id), mode],
        capture_output=True, text=True, cwd=repo, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo), **(env or {})},
    )  # fmt: skip


def test_a_native_fault_in_a_training_step_kills_a_thread_but_not_the_app(store, tmp_path, model_dirs):
    """The measurement, then the answer: in a thread, a native fault kills the whole process (no exception,
    no ``finally``, no message); trained in its child process, the "window" lives and says what happened.

    Either way what survives is what was written before the fault: the database and the step checkpoints.
    """
    import signal

    from desktop_dpo.core.dpo.train_child import FAULT_ENV

    add_pairs(store)
    config = BASE.replace(quantization="nf4", epochs=1, checkpoint_every=1)
    comparisons = store.count_comparisons()

    # 1. In a worker thread, as the app trained before: the process dies with the fault.
    in_thread = new_run(store, tmp_path, model_dirs[0], config, name="thread")
    child = run_fault_script(store, in_thread, "thread")
    assert child.returncode == -signal.SIGSEGV, child.stdout[-2000:] + child.stderr[-2000:]
    lines = child.stdout.splitlines()
    assert lines.index("step 2") < lines.index("fault") and "window survived" not in lines
    assert "Segmentation fault" in child.stderr and "dequantize_4bit" in child.stderr
    # Nothing in the process ran after the fault: the run was never marked failed, so the app shows it as
    # interrupted. The database is intact and the steps before the fault are checkpointed.
    run = store.get_run(in_thread)
    assert run.status == "running" and run.error is None and run.step == 2
    assert latest_checkpoint(Path(run.checkpoint_dir)).name == "step-0000002"

    # 2. In the app's training process: the same fault ends only that process.
    in_child = new_run(store, tmp_path, model_dirs[0], config, name="child")
    app = run_fault_script(store, in_child, "child", {FAULT_ENV: "segv:3"})
    assert app.returncode == 0, app.stdout[-2000:] + app.stderr[-2000:]
    lines = app.stdout.splitlines()
    shown = (
        "shown: Training crashed (a segmentation fault (signal 11)) at step 3. Your pairs and the checkpoint "
        "at step 2 are safe: Resume continues from there."
    )
    assert lines.index("step 2") < lines.index(shown) < lines.index("window survived")
    run = store.get_run(in_child)
    assert run.status == "failed" and run.error == shown.removeprefix("shown: ") and run.step == 2

    with sqlite3.connect(store.path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.count_comparisons() == comparisons
    for run_id in (in_thread, in_child):  # and both resume at step 2
        events = drive(store, run_id)
        assert of_type(events, Started)[0].start_step == 2 and store.get_run(run_id).status == "completed"


def test_a_crashed_training_process_is_explained_and_resume_completes(
    store, tmp_path, model_dirs, monkeypatch
):
    """The app's path end to end: the run trains in a child process, which segfaults in step 2; the parent
    records the crash in words, and Resume (in a new child) continues from the step 1 checkpoint."""
    from desktop_dpo.core.dpo.train import record_training
    from desktop_dpo.core.dpo.train_child import FAULT_ENV, TrainingCrashed, train_in_child

    add_pairs(store)
    run_id = new_run(store, tmp_path, model_dirs[0], BASE.replace(epochs=1, checkpoint_every=1))
    comparisons = store.count_comparisons()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv(FAULT_ENV, "segv:2")
    seen: list[object] = []

    with pytest.raises(TrainingCrashed) as crash:
        for event in record_training(store, run_id, train_in_child(store.path, run_id, cancel=CancelToken())):
            seen.append(event)

    message = str(crash.value)
    assert message == (
        "Training crashed (a segmentation fault (signal 11)) at step 2. Your pairs and the checkpoint at "
        "step 1 are safe: Resume continues from there."
    )
    assert [e.step for e in of_type(seen, StepMetrics)] == [1]
    run = store.get_run(run_id)
    assert run.status == "failed" and run.error == message and run.step == 1
    assert latest_checkpoint(Path(run.checkpoint_dir)).name == "step-0000001"
    with sqlite3.connect(store.path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.count_comparisons() == comparisons

    monkeypatch.delenv(FAULT_ENV)
    resumed: list[object] = []
    job = record_training(store, run_id, train_in_child(store.path, run_id, cancel=CancelToken()))
    while True:
        try:
            resumed.append(next(job))
        except StopIteration as stop:
            finished = stop.value
            break
    run = store.get_run(run_id)
    assert of_type(resumed, Started)[0].start_step == 1
    assert run.status == "completed" and run.error is None and run.step == run.total_steps
    assert isinstance(finished, Finished) and finished.adapter_path == run.adapter_path
    assert (Path(run.adapter_path) / "adapter_model.safetensors").is_file()
