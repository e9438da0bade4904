"""A KTO run end to end on the tiny Llama (``tiny_model_dir``): it trains on single labels (picks, "both bad"
picks and rewrites), balances their weights for the data, stores its metrics, learns the taste and reuses
its cached reference values. Driven as the CLI and the GUI worker drive it (``tests/core/test_train.py``)."""

from __future__ import annotations

import math

import pytest

from desktop_dpo.core.dpo.config import TrainConfig, TrainingError
from desktop_dpo.core.dpo.events import EvalMetrics, Finished, ReferenceReady, Started, StepMetrics
from desktop_dpo.core.dpo.kto_batches import mismatched_sources
from tests.core.test_train import BASE, TOPICS, add_pairs, chosen_text, drive, new_run, of_type, rejected_text


def add_single_labels(store, topics: list[str]) -> None:
    """A "both bad" pick (two curt answers) and a rewrite (into a warm answer) per topic."""
    for topic in topics:
        store.record_pair(
            messages=[{"role": "user", "content": f"What do you think of {topic}?"}],
            text_a=rejected_text(topic),
            text_b=f" No. I do not care about {topic}, go away.",
            verdict="both_bad",
        )
        store.record_pair(
            messages=[{"role": "user", "content": f"Say something about {topic}."}],
            text_a=rejected_text(topic),
            text_b=f" No. {topic}?",
            verdict="tie",
            edited_text=chosen_text(topic),
            edited_side="a",
        )


def test_a_kto_run_learns_from_single_labels_and_stores_its_metrics(store, tmp_path, tiny_model_dir):
    add_pairs(store, TOPICS[:12])  # 12 picks: 12 desirable and 12 undesirable answers
    add_single_labels(store, TOPICS[12:18])  # 6 × ("both bad": 2 undesirable; a rewrite: 1 desirable)
    config = BASE.replace(
        loss_type="kto", epochs=3, lr=1e-2, lora_dropout=0.0, eval_every=5, heldout_fraction=0.2
    )
    run_id = new_run(store, tmp_path, tiny_model_dir, config)

    events = drive(store, run_id)

    started = of_type(events, Started)[0]
    # 42 answers: 24 from the picks, 12 from the "both bad" picks, 6 rewrites; 20 % of the prompts held out.
    assert started.train_pairs + started.heldout_pairs == 24 + 12 + 6
    assert started.heldout_pairs > 0
    assert of_type(events, ReferenceReady)[0].computed == 42  # one reference value pair per labelled answer
    evals = of_type(events, EvalMetrics)
    # A fresh adapter is the reference: every answer sits at z0, on neither side.
    assert evals[0].step == 0 and evals[0].accuracy == 0.0
    assert evals[0].loss == pytest.approx(0.5 * _mean_weight(store, run_id), abs=1e-4)
    # Unseen prompts, same taste: warm answers above the reference point, curt ones below.
    assert evals[-1].accuracy >= 0.8 and evals[-1].margins > 0.5
    assert evals[-1].rewards_chosen > 0 > evals[-1].rewards_rejected
    run = store.get_run(run_id)
    assert run.status == "completed" and run.step == run.total_steps == started.total_steps
    metrics = store.run_metrics(run_id)
    assert [step for step, _ in metrics] == list(range(1, run.total_steps + 1))
    assert all(math.isfinite(m["loss"]) and "rewards/margins" in m for _, m in metrics)
    assert run.final_metrics["heldout/rewards/accuracies"] >= 0.8
    assert of_type(events, Finished)[0].adapter_path == run.adapter_path

    # A second run over the same labels reads every reference value from the cache.
    again = drive(store, new_run(store, tmp_path, tiny_model_dir, config.replace(epochs=1), name="again"))
    assert of_type(again, ReferenceReady)[0].computed == 0
    assert of_type(again, StepMetrics)


def _mean_weight(store, run_id: int) -> float:
    """The mean of λ over the held-out answers, with the weights balanced for the training labels: a fresh
    adapter's loss is λ·(1 − σ(0)) = λ/2 for every answer."""
    from desktop_dpo.core.dpo.kto import balanced_weights
    from desktop_dpo.core.dpo.labels import labels_from_comparisons

    run = store.get_run(run_id)
    labels = labels_from_comparisons(store.comparison_views(ids=run.comparison_ids))
    splits = {p.id: p.split for p in store.list_prompts()}
    train = [x for x in labels if splits[x.prompt_id] == "train"]
    heldout = [x for x in labels if splits[x.prompt_id] == "heldout"]
    n_d = sum(x.desirable for x in train)
    weights = balanced_weights(n_d, len(train) - n_d)
    assert weights != (1.0, 1.0)  # more bad answers than good ones: λ_D raised
    return sum(weights[0] if x.desirable else weights[1] for x in heldout) / len(heldout)


def test_kto_settings_are_checked():
    assert TrainConfig(loss_type="kto").desirable_weight is None  # balanced for the data
    with pytest.raises(TrainingError, match="weights must be positive"):
        TrainConfig(loss_type="kto", desirable_weight=0.0).validated()
    with pytest.raises(TrainingError, match="DPO losses only"):
        TrainConfig(loss_type="kto", sft_weight=0.5).validated()


def test_mismatched_answers_come_from_other_prompts():
    prompts = [1, 1, 2, 2, 3, 3, 3, 4]
    sources = mismatched_sources(prompts)
    assert sorted(sources) == list(range(len(prompts)))  # each answer used once
    assert all(prompts[i] != prompts[j] for i, j in enumerate(sources))
    assert mismatched_sources([5]) == [0] and mismatched_sources([]) == []
    # One prompt holding most answers: as few same-prompt pairings as the data allows.
    crowded = [1, 1, 1, 1, 2]
    assert sorted(mismatched_sources(crowded)) == list(range(5))


def test_a_kto_run_stores_its_reference_point_z0_every_step(store, tmp_path, tiny_model_dir):
    add_pairs(store, TOPICS[:6])  # 12 labelled answers
    config = BASE.replace(loss_type="kto", epochs=2, lr=1e-2, heldout_fraction=0.2)
    run_id = new_run(store, tmp_path, tiny_model_dir, config)

    steps = of_type(drive(store, run_id), StepMetrics)

    stored = store.run_metrics(run_id, split="train")
    assert [step for step, _ in stored] == [s.step for s in steps] and len(stored) >= 2
    # z0 is a KL divergence: never negative; at the first step the fresh adapter is the reference (z0 = 0).
    assert all(math.isfinite(m["kl"]) and m["kl"] >= 0 for _, m in stored)
    assert stored[0][1]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert [m["kl"] for _, m in stored] == pytest.approx([s.kl for s in steps])
    assert store.get_run(run_id).final_metrics["train/kl"] == pytest.approx(stored[-1][1]["kl"])
    # The other losses have no reference point: nothing stored under "kl".
    dpo = new_run(store, tmp_path, tiny_model_dir, config.replace(loss_type="sigmoid", epochs=1), name="dpo")
    drive(store, dpo)
    assert all("kl" not in m for _, m in store.run_metrics(dpo, split="train"))
