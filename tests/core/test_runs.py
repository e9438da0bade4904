"""Making and resuming runs (core/dpo/runs.py): which pairs a model's run takes and how they split."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from desktop_dpo.core.dpo.config import TrainConfig, TrainingError
from desktop_dpo.core.dpo.runs import (
    create_run_for_model,
    model_pair_ids,
    plan_run,
    resume_settings,
    run_label,
    run_name,
    trainable_reason,
)
from desktop_dpo.core.export.pipeline import aligned_model_name
from desktop_dpo.core.model_files import TRAINABLE_COPY_KEY, TRAINABLE_COPY_MARKER


def pair(store, topic: str, verdict: str = "a", model_id: int | None = None) -> int:
    return store.record_pair(
        messages=[{"role": "user", "content": f"About {topic}?"}],
        text_a=f"Yes, {topic}.",
        text_b=f"No {topic}.",
        verdict=verdict,
        model_a_id=model_id,
        model_b_id=model_id,
    )


def test_a_models_pairs_are_its_own_samples_and_imported_ones(memory_store):
    store = memory_store
    mine = store.add_model(name="mine", path="/m", kind="hf", fingerprint="m")
    other = store.add_model(name="other", path="/o", kind="hf", fingerprint="o")
    own = pair(store, "tea", model_id=mine)
    imported = pair(store, "maps")
    pair(store, "owls", model_id=other)  # what another model wrote teaches this one nothing
    pair(store, "cats", verdict="tie", model_id=mine)  # a tie gives no pair

    assert model_pair_ids(store, mine) == [own, imported]
    run_id = create_run_for_model(store, store.get_model(mine), TrainConfig(epochs=3))
    run = store.get_run(run_id)
    assert run.comparison_ids == [own, imported] and run.name.startswith(f"Run {run_id} · mine · 2 pairs · ")
    assert run.config["epochs"] == 3 and run.base_model_id == mine

    nothing = store.add_model(name="empty", path="/e", kind="gguf", fingerprint="e")
    store.set_comparisons_deleted([imported])
    with pytest.raises(TrainingError, match="empty has no usable pairs"):
        create_run_for_model(store, store.get_model(nothing), TrainConfig())


def test_plan_counts_the_prompts_the_split_holds_out(memory_store):
    store = memory_store
    model = store.add_model(name="m", path="/m", kind="hf", fingerprint="m")
    for i in range(20):
        pair(store, f"topic {i}")
    plan = plan_run(store, model, TrainConfig(heldout_fraction=0.25))
    assert (plan.pairs, plan.prompts, plan.heldout_prompts, plan.train_pairs) == (20, 20, 5, 15)
    assert plan_run(store, model, TrainConfig(heldout_fraction=0.0)).heldout_prompts == 0
    # A split once fixed by a run is kept: all prompts fixed as train stay train.
    store.set_prompt_splits({p.id: "train" for p in store.list_prompts()})
    assert plan_run(store, model, TrainConfig(heldout_fraction=0.25)).heldout_prompts == 0


def test_only_gguf_models_without_a_trainable_copy_are_refused(memory_store, tmp_path):
    store = memory_store
    hf = store.get_model(store.add_model(name="hf", path="/h", kind="hf", fingerprint="h"))
    gguf = store.get_model(store.add_model(name="g", path="/g.gguf", kind="gguf", fingerprint="g"))
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_text("{}", encoding="utf-8")
    (copy / TRAINABLE_COPY_MARKER).write_text('{"source_fingerprint": "c"}', encoding="utf-8")
    copied = store.get_model(
        store.add_model(
            name="c", path="/c.gguf", kind="gguf", fingerprint="c", info={TRAINABLE_COPY_KEY: str(copy)}
        )
    )
    # A copy recorded but made from other contents of its GGUF (fingerprint "d") is no copy of this one.
    stale = store.get_model(
        store.add_model(
            name="d", path="/d.gguf", kind="gguf", fingerprint="d", info={TRAINABLE_COPY_KEY: str(copy)}
        )
    )
    assert trainable_reason(hf) is None and trainable_reason(copied) is None
    for refused in (gguf, stale):
        reason = trainable_reason(refused)
        assert "without a trainable copy" in reason and "Models view" in reason


def test_resume_settings_change_the_stored_config_or_refuse(memory_store):
    store = memory_store
    model = store.add_model(name="m", path="/m", kind="hf", fingerprint="m")
    pair(store, "tea")
    run_id = create_run_for_model(store, store.get_model(model), TrainConfig())
    assert resume_settings(store, run_id, {"batch_size": 1}).config["batch_size"] == 1
    assert store.get_run(run_id).config["batch_size"] == 1
    with pytest.raises(TrainingError, match="learning rate must be positive"):
        resume_settings(store, run_id, {"lr": 0.0})
    assert store.get_run(run_id).config["lr"] == TrainConfig().lr  # refused: nothing changed
    with pytest.raises(TrainingError, match="no training run 42"):
        resume_settings(store, 42)


def test_runs_of_one_model_are_named_apart_by_number_pairs_and_time(memory_store):
    store = memory_store
    demo = store.get_model(
        store.add_model(name="Gemma 3 270M (demo, Q4_K_M)", path="/d.gguf", kind="hf", fingerprint="d")
    )
    for topic in ("tea", "maps", "owls"):
        pair(store, topic)
    first = store.get_run(create_run_for_model(store, demo, TrainConfig()))
    second = store.get_run(create_run_for_model(store, demo, TrainConfig()))
    named = store.get_run(create_run_for_model(store, demo, TrainConfig(), name="with a longer context"))

    assert first.name != second.name
    assert re.fullmatch(rf"Run {first.id} · Gemma 3 270M · 3 pairs · \d{{1,2}} \w{{3}} \d\d:\d\d", first.name)
    assert second.name.startswith(f"Run {second.id} · ")
    assert named.name == "with a longer context"  # a name the person gave stays
    assert run_label(first.id, first.name) == first.name  # its number is not said twice
    assert run_label(4, "with a longer context") == "Run 4 · with a longer context"
    started = datetime(2024, 12, 5, 14, 2).timestamp()  # local time
    assert run_name(7, "tiny", 1, started) == "Run 7 · tiny · 1 pair · 5 Dec 14:02"
    # A KTO run learning from chat ratings says so, alone or beside its pairs.
    assert (
        run_name(8, "tiny", 0, started, rated_replies=20) == "Run 8 · tiny · 20 rated replies · 5 Dec 14:02"
    )
    assert (
        run_name(9, "tiny", 3, started, rated_replies=1)
        == "Run 9 · tiny · 3 pairs + 1 rated reply · 5 Dec 14:02"
    )


def test_an_aligned_model_is_named_after_its_base_and_its_run():
    assert (
        aligned_model_name("Gemma 3 270M (demo, Q4_K_M)", 3, "Q4_K_M")
        == "Gemma 3 270M · aligned, run 3 · Q4_K_M"
    )
    # A next round trains the aligned model: its name says the new run, not both.
    round_two = aligned_model_name("Gemma 3 270M · aligned, run 3 · Q4_K_M", 5, "Q8_0")
    assert round_two == "Gemma 3 270M · aligned, run 5 · Q8_0"
    assert aligned_model_name("My model (v2)", 1, "Q4_K_M") == "My model (v2) · aligned, run 1 · Q4_K_M"
