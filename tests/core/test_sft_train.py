"""The SFT start end to end on the tiny Llama: one run, a supervised phase on the rewrites, then DPO.

What a person would see is asserted: the run completes, its stored metrics hold both phases (the supervised
steps under their own split, saying so), the supervised phase lowers the NLL of the demonstrations, the
reference after it is π_SFT (its own cache rows), and a stop in the middle of the supervised phase resumes
there and ends with the same adapter as an uninterrupted run.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from desktop_dpo.core.dpo.checkpoint import latest_checkpoint
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.events import (
    Finished,
    Loading,
    ReferenceReady,
    SftEvalMetrics,
    SftStepMetrics,
    StepMetrics,
    TrainWarning,
)
from desktop_dpo.core.dpo.sft_phase import NO_HELDOUT_DEMONSTRATIONS, SFT_ADAPTER, demonstrations
from desktop_dpo.core.dpo.train import drive_training
from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.jobs import CancelToken
from tests.core.test_train import TOPICS, adapter_weights, chosen_text, new_run, of_type, rejected_text

SFT = TrainConfig(
    lr=5e-3, epochs=1, batch_size=4, grad_accum=1, max_length=64, max_prompt_length=32, lora_r=8,
    lora_alpha=16, lora_dropout=0.1, warmup_ratio=0.0, checkpoint_every=2, eval_every=100,
    heldout_fraction=0.25, seed=7, threads=1, quantization="none", device="cpu",
    sft_phase="rewrites", sft_epochs=3,
)  # fmt: skip


def rewritten(topic: str) -> str:
    return f" Of course! Here is a warm note on {topic}, with thanks."


def add_rewrites(store, topics=TOPICS[:16]) -> None:
    """Pairs whose chosen side the person rewrote (the rewrite is the demonstration)."""
    for topic in topics:
        store.record_pair(
            messages=[{"role": "user", "content": f"Tell me about {topic}."}],
            text_a=chosen_text(topic),
            text_b=rejected_text(topic),
            verdict="a",
            edited_text=rewritten(topic),
            edited_side="a",
        )


def drive(store, run_id: int, *, stop_after_sft: int | None = None, events: list | None = None) -> list:
    token, events = CancelToken(), ([] if events is None else events)

    def on_event(event: object) -> None:
        events.append(event)
        if stop_after_sft is not None and isinstance(event, SftStepMetrics) and event.step == stop_after_sft:
            token.cancel()

    drive_training(store, run_id, cancel=token, on_event=on_event)
    return events


def test_demonstrations_are_the_rewrites_and_optionally_the_chosen_answers(store):
    add_rewrites(store, TOPICS[:2])
    store.record_pair(messages=[{"role": "user", "content": "Hi"}], text_a=" one", text_b=" two", verdict="b")
    views = store.comparison_views()
    assert sorted(d.chosen for d in demonstrations(views, "rewrites")) == sorted(
        rewritten(t) for t in TOPICS[:2]
    )
    # The chosen answer of a rewritten side is superseded by its rewrite; "two" won a plain verdict.
    both = demonstrations(views, "rewrites_and_chosen")
    assert sorted(d.chosen for d in both) == sorted([*(rewritten(t) for t in TOPICS[:2]), " two"])
    assert demonstrations(views, "off") == []


def test_two_phase_run_stores_both_phases_and_the_sft_phase_teaches_the_demonstrations(
    store, tmp_path, tiny_model_dir
):
    add_rewrites(store)
    run_id = new_run(store, tmp_path, tiny_model_dir, SFT)
    events = drive(store, run_id)
    run = store.get_run(run_id)
    assert run.status == "completed" and of_type(events, Finished)
    sft_rows = store.run_metrics(run_id, split="sft")
    dpo_rows = store.run_metrics(run_id, split="train")
    assert sft_rows and dpo_rows
    assert all(m["phase"] == "sft" for _, m in sft_rows)
    assert [s for s, _ in sft_rows] == list(range(1, len(sft_rows) + 1))
    # The supervised phase comes first, then the preference phase.
    kinds = [type(e) for e in events if isinstance(e, (SftStepMetrics, StepMetrics))]
    assert kinds == [SftStepMetrics] * len(sft_rows) + [StepMetrics] * len(dpo_rows)
    # The NLL of the demonstrations, each epoch's first step against the last epoch's: lower after training.
    losses = [m["loss"] for _, m in sft_rows]
    per_epoch = len(losses) // SFT.sft_epochs
    assert sum(losses[-per_epoch:]) < 0.9 * sum(losses[:per_epoch])
    # π_ref = π_SFT: computed after the supervised phase, under its own keys (none were cached before).
    ready = of_type(events, ReferenceReady)[0]
    assert ready.computed > 0 and ready.cached == 0
    assert not (Path(run.checkpoint_dir) / SFT_ADAPTER).exists()  # the phase's copy is dropped at the end

    # The same pairs with the phase off: the adapter-off reference is not π_SFT's (new cache rows).
    off = new_run(store, tmp_path, tiny_model_dir, SFT.replace(sft_phase="off"), name="off")
    off_events = drive(store, off)
    assert of_type(off_events, ReferenceReady)[0].computed > 0
    assert store.run_metrics(off, split="sft") == []


def test_no_demonstrations_skips_the_phase_with_a_warning(store, tmp_path, tiny_model_dir):
    for topic in TOPICS[:8]:
        store.record_pair(
            messages=[{"role": "user", "content": f"Tell me about {topic}."}],
            text_a=chosen_text(topic), text_b=rejected_text(topic), verdict="a",
        )  # fmt: skip
    run_id = new_run(store, tmp_path, tiny_model_dir, SFT)
    events = drive(store, run_id)
    assert store.get_run(run_id).status == "completed"
    assert any(w.kind == "no_demonstrations" for w in of_type(events, TrainWarning))
    assert not of_type(events, SftStepMetrics)


def test_the_heldout_demonstrations_nll_is_recorded_before_during_and_after_the_phase_and_falls(
    store, tmp_path, tiny_model_dir
):
    add_rewrites(store)
    run_id = new_run(store, tmp_path, tiny_model_dir, SFT.replace(eval_every=4))
    events = drive(store, run_id)
    assert store.get_run(run_id).status == "completed"
    sft_steps = len(store.run_metrics(run_id, split="sft"))
    rows = store.run_metrics(run_id, split="sft_heldout")
    # Before the first step, every eval_every steps, and at the end; as the run's events said.
    assert [s for s, _ in rows] == sorted({0, *range(4, sft_steps, 4), sft_steps})
    assert [(e.step, e.loss) for e in of_type(events, SftEvalMetrics)] == [(s, m["loss"]) for s, m in rows]
    heldout_prompts = {p.id for p in store.list_prompts() if p.split == "heldout"}
    assert heldout_prompts and all(m["demonstrations"] == len(heldout_prompts) for _, m in rows)
    nll = [m["loss"] for _, m in rows]
    assert all(math.isfinite(v) and v > 0 for v in nll)
    # The held-out answers are in the style the phase trains on: learning it lowers their NLL, which the
    # training NLL alone could not show (it might only be memorising the training answers).
    assert nll[-1] < 0.9 * nll[0]


def test_no_heldout_demonstrations_says_so_and_records_no_heldout_nll(store, tmp_path, tiny_model_dir):
    add_rewrites(store, TOPICS[:12])
    for topic in TOPICS[12:16]:  # held out, and never rewritten
        store.record_pair(
            messages=[{"role": "user", "content": f"Tell me about {topic}."}],
            text_a=chosen_text(topic), text_b=rejected_text(topic), verdict="a",
        )  # fmt: skip
    prompts = {p.text: p.id for p in store.list_prompts()}
    store.set_prompt_splits(
        {
            pid: "heldout" if any(t in text for t in TOPICS[12:16]) else "train"
            for text, pid in prompts.items()
        }
    )
    run_id = new_run(store, tmp_path, tiny_model_dir, SFT)
    events = drive(store, run_id)
    assert store.get_run(run_id).status == "completed"
    assert of_type(events, SftStepMetrics)  # the phase ran, on the training prompts' rewrites
    assert NO_HELDOUT_DEMONSTRATIONS in [e.stage for e in of_type(events, Loading)]
    assert not of_type(events, SftEvalMetrics) and store.run_metrics(run_id, split="sft_heldout") == []


@pytest.fixture(scope="module")
def uninterrupted_sft(tmp_path_factory, tiny_model_dir):
    from desktop_dpo.core.store import Store

    tmp = tmp_path_factory.mktemp("sft-uninterrupted")
    store = Store.open(tmp / "db.sqlite")
    add_rewrites(store)
    run_id = new_run(store, tmp, tiny_model_dir, SFT)
    events = drive(store, run_id)
    run = store.get_run(run_id)
    sft_losses = [m["loss"] for _, m in store.run_metrics(run_id, split="sft")]
    store.close()
    return run, events, sft_losses


def test_stop_mid_sft_resumes_in_that_phase_and_ends_like_an_uninterrupted_run(
    store, tmp_path, tiny_model_dir, uninterrupted_sft
):
    reference_run, _, reference_losses = uninterrupted_sft
    add_rewrites(store)
    run_id = new_run(store, tmp_path, tiny_model_dir, SFT)
    first: list[object] = []
    with pytest.raises(JobCancelled):
        drive(store, run_id, stop_after_sft=3, events=first)  # after the checkpoint at 2
    assert not of_type(first, StepMetrics)  # stopped in the supervised phase
    stopped = store.get_run(run_id)
    assert stopped.status == "stopped"
    assert latest_checkpoint(Path(stopped.checkpoint_dir)) is not None

    events = drive(store, run_id)
    assert of_type(events, SftStepMetrics)[0].step == 4  # resumed in the supervised phase
    run = store.get_run(run_id)
    assert run.status == "completed" and run.step == reference_run.step
    losses = [m["loss"] for _, m in store.run_metrics(run_id, split="sft")]
    assert losses == pytest.approx(reference_losses, abs=1e-6)
    ours, theirs = adapter_weights(run.adapter_path), adapter_weights(reference_run.adapter_path)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_the_preset_starts_a_base_model_with_the_sft_phase_and_an_instruct_model_without(store, tmp_path):
    from desktop_dpo.core.dpo.config import DeviceInfo, default_preset
    from desktop_dpo.core.dpo.sft_phase import is_base_model

    chatml = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    instruct = store.add_model(
        name="instruct",
        path=str(tmp_path / "i"),
        kind="hf",
        fingerprint="fp-i",
        info={"chat_template": chatml},
    )
    base = store.add_model(name="base", path=str(tmp_path / "b"), kind="hf", fingerprint="fp-b")
    assert is_base_model(store.get_model(base)) and not is_base_model(store.get_model(instruct))
    cpu = DeviceInfo(kind="cpu", name="CPU", memory_bytes=None)
    base_preset = default_preset(cpu, None, base_model=True)
    assert base_preset.config.sft_phase == "rewrites"
    assert "first learns from your rewritten answers" in base_preset.reason
    assert default_preset(cpu, None, base_model=False).config.sft_phase == "off"


def test_stop_in_the_preference_phase_resumes_there_with_the_sft_reference(
    store, tmp_path, tiny_model_dir, uninterrupted_sft
):
    reference_run, reference_events, _ = uninterrupted_sft
    add_rewrites(store)
    run_id = new_run(store, tmp_path, tiny_model_dir, SFT)
    token, first = CancelToken(), []

    def on_event(event: object) -> None:
        first.append(event)
        if isinstance(event, StepMetrics) and event.step == 1:
            token.cancel()

    with pytest.raises(JobCancelled):
        drive_training(store, run_id, cancel=token, on_event=on_event)
    assert of_type(first, SftStepMetrics) and store.get_run(run_id).step == 1
    assert (Path(store.get_run(run_id).checkpoint_dir) / SFT_ADAPTER).is_dir()  # π_SFT kept for the resume

    events = drive(store, run_id)
    assert not of_type(events, SftStepMetrics)  # the supervised phase is not run again
    ready = of_type(events, ReferenceReady)[0]
    assert ready.computed == 0 and ready.cached > 0  # π_SFT's values, from the cache
    run = store.get_run(run_id)
    assert run.status == "completed"
    dpo_losses = [m["loss"] for _, m in store.run_metrics(run_id)]
    assert dpo_losses == pytest.approx([s.loss for s in of_type(reference_events, StepMetrics)], abs=1e-6)
    ours, theirs = adapter_weights(run.adapter_path), adapter_weights(reference_run.adapter_path)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_a_crash_after_keeping_the_sft_adapter_resumes_in_the_preference_phase_like_an_uninterrupted_run(
    store, tmp_path, tiny_model_dir, uninterrupted_sft, monkeypatch
):
    """The window between keeping ``sft-adapter`` and deleting the phase's checkpoints: a crash there leaves π_SFT
    complete beside a stale mid-phase checkpoint. The resume skips the phase and ignores (drops) that checkpoint."""
    from desktop_dpo.core.dpo import sft_phase
    from desktop_dpo.core.dpo.sft_phase import sft_id

    reference_run, reference_events, _ = uninterrupted_sft
    add_rewrites(store)
    run_id = new_run(store, tmp_path, tiny_model_dir, SFT)
    run_dir = Path(store.get_run(run_id).checkpoint_dir)
    remove = sft_phase.remove_checkpoints

    def crash(folder: Path) -> None:
        if (folder / SFT_ADAPTER).is_dir():  # the phase's end, after its adapter was kept
            raise OSError("power cut")
        remove(folder)

    monkeypatch.setattr(sft_phase, "remove_checkpoints", crash)
    with pytest.raises(OSError, match="power cut"):
        drive(store, run_id)
    monkeypatch.setattr(sft_phase, "remove_checkpoints", remove)
    assert store.get_run(run_id).status == "failed"
    assert sft_id(run_dir) is not None  # π_SFT kept whole, with its id ...
    stale = latest_checkpoint(run_dir)
    assert (
        stale is not None and sft_phase._checkpoint_phase(stale) == "sft"
    )  # ... beside a mid-phase checkpoint

    events = drive(store, run_id)
    assert not of_type(events, SftStepMetrics)  # the supervised phase is not run again
    run = store.get_run(run_id)
    assert run.status == "completed" and run.step == reference_run.step
    dpo_losses = [m["loss"] for _, m in store.run_metrics(run_id)]
    assert dpo_losses == pytest.approx([s.loss for s in of_type(reference_events, StepMetrics)], abs=1e-6)
    ours, theirs = adapter_weights(run.adapter_path), adapter_weights(reference_run.adapter_path)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert not (run_dir / "checkpoints").exists() and not (run_dir / SFT_ADAPTER).exists()
