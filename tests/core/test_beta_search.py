"""Finding β (``core/dpo/beta_search.py``): short trainings at a few β on the tiny model, measured held-out."""

from __future__ import annotations

import math

import pytest

from desktop_dpo.core.dpo import reference as reference_module
from desktop_dpo.core.dpo.beta_search import (
    SEARCH_BETAS,
    BetaMeasured,
    BetaResult,
    beta_search,
    recommend,
    recommendation_text,
    search_in_child,
)
from desktop_dpo.core.dpo.config import TrainingError
from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.jobs import CancelToken, Progress, drive, run_job
from tests.core.test_train import BASE, add_pairs

STEPS = 16


def _setup(store, tiny_model_dir) -> tuple[int, list[int]]:
    add_pairs(store)
    model_id = store.add_model(name="tiny", path=str(tiny_model_dir), kind="hf", fingerprint="fp-tiny")
    return model_id, [v.comparison.id for v in store.comparison_views()]


def test_one_result_per_beta_with_kl_shrinking_as_beta_grows(store, tiny_model_dir, monkeypatch):
    model_id, ids = _setup(store, tiny_model_dir)
    reference_passes = []
    fill = reference_module.fill_reference
    monkeypatch.setattr(
        "desktop_dpo.core.dpo.train.fill_reference",
        lambda *a, **k: (reference_passes.append(len(a[4])), (yield from fill(*a, **k)))[1],
    )

    result, events = run_job(beta_search(store, model_id, ids, BASE, cancel=CancelToken(), steps=STEPS))

    assert [r.beta for r in result.results] == list(SEARCH_BETAS)
    assert [e.result for e in events if isinstance(e, BetaMeasured)] == list(result.results)
    for r in result.results:
        assert math.isfinite(r.accuracy) and math.isfinite(r.kl) and r.kl > 0 and r.steps == STEPS
        assert r.accuracy >= 0.9  # the tiny data's taste is easy: every β learns it in a short run
    kl = {r.beta: r.kl for r in result.results}
    # Larger β holds the model closer. Below saturation AdamW's step does not depend on the gradient's
    # scale (β/2 at the start), so the two smallest β move about equally: only the order from 0.1 up,
    # and the smallest β against the largest, are reliable on 16 steps.
    assert kl[1.0] < kl[0.3] < kl[0.1] and kl[0.03] > 1.5 * kl[1.0]
    # The reference log-probs were computed once, for every pair, and shared by the four β.
    assert reference_passes == [36]
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == len(SEARCH_BETAS) * STEPS
    assert result.heldout_pairs == 9 and result.train_pairs == 27
    # Nothing is recorded as a run.
    assert store.list_runs() == []
    assert result.recommended.beta == 1.0  # all equally accurate: the one that moved least
    assert "Use β = 1" in result.recommendation() and "moving the model least" in result.recommendation()


def test_a_stop_between_steps_ends_the_search(store, tiny_model_dir):
    model_id, ids = _setup(store, tiny_model_dir)
    cancel, events = CancelToken(), []

    def on_event(event: object) -> None:
        events.append(event)
        if isinstance(event, Progress) and "step 2 of" in event.message:
            cancel.cancel()

    with pytest.raises(JobCancelled):
        drive(beta_search(store, model_id, ids, BASE, cancel=cancel, steps=STEPS), on_event, cancel)
    assert not any(isinstance(e, BetaMeasured) for e in events)
    assert "step 2 of" in events[-1].message  # no step after the stop
    assert store.list_runs() == []


def test_no_heldout_pairs_is_explained(store, tiny_model_dir):
    model_id, ids = _setup(store, tiny_model_dir)
    with pytest.raises(TrainingError, match="held-out"):
        run_job(beta_search(store, model_id, ids, BASE.replace(heldout_fraction=0.0), cancel=CancelToken()))


def test_recommendation_prefers_the_least_kl_within_a_few_points_of_the_best():
    results = [
        BetaResult(beta=0.03, accuracy=0.90, kl=0.40, loss=0.3, steps=1),
        BetaResult(beta=0.1, accuracy=0.88, kl=0.20, loss=0.3, steps=1),
        BetaResult(beta=0.3, accuracy=0.70, kl=0.05, loss=0.3, steps=1),
    ]
    assert recommend(results).beta == 0.1
    words = recommendation_text(results, recommend(results), heldout_pairs=9)
    assert (
        words.startswith("Use β = 0.1:") and "With 9 held-out pairs, one pair is 11% of the accuracy" in words
    )
    one = recommendation_text(results, recommend(results), heldout_pairs=1)
    assert "With one held-out pair, the accuracy is all or nothing" in one and "1 held-out pairs" not in one


def test_the_search_runs_in_a_child_process(store, tiny_model_dir):
    model_id, ids = _setup(store, tiny_model_dir)
    request = {"model_id": model_id, "comparison_ids": ids, "config": BASE.to_dict(), "steps": 2,
               "betas": [0.1, 1.0]}  # fmt: skip
    result, events = run_job(search_in_child(store.path, request, cancel=CancelToken()))
    assert [r.beta for r in result.results] == [0.1, 1.0]
    assert sum(isinstance(e, BetaMeasured) for e in events) == 2


def test_with_the_sft_start_each_beta_starts_from_one_shared_sft_phase(
    store, tiny_model_dir, monkeypatch, tmp_path
):
    """The real run would train on the written answers first, then compare against π_SFT: so does the search,
    with that phase run once for every β (it does not depend on β), in a folder deleted after."""
    import tempfile

    import torch

    from desktop_dpo.core.dpo import beta_search as search_module
    from desktop_dpo.core.dpo import sft_phase
    from tests.core.test_sft_train import add_rewrites

    add_rewrites(store)  # 16 prompts whose chosen answer the person rewrote
    model_id = store.add_model(name="tiny", path=str(tiny_model_dir), kind="hf", fingerprint="fp-tiny")
    ids = [v.comparison.id for v in store.comparison_views()]
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    ends, starts = [], []  # π_SFT as the phase kept it; the LoRA weights each β's steps start from
    finish, train_steps = sft_phase.SftPhase._finish, search_module._train_steps

    def kept(phase):
        ends.append(
            {n: p.detach().clone() for n, p in phase.session.model.named_parameters() if p.requires_grad}
        )
        return (yield from finish(phase))

    def started(session, steps):
        starts.append({n: p.detach().clone() for n, p in session.model.named_parameters() if p.requires_grad})
        return train_steps(session, steps)

    monkeypatch.setattr(sft_phase.SftPhase, "_finish", kept)
    monkeypatch.setattr(search_module, "_train_steps", started)
    config = BASE.replace(sft_phase="rewrites", sft_epochs=2)
    betas = (0.1, 1.0)
    result, events = run_job(
        beta_search(store, model_id, ids, config, cancel=CancelToken(), betas=betas, steps=4)
    )

    assert len(ends) == 1 and len(starts) == len(betas)  # one supervised phase, shared by both β
    sft_steps = [
        e for e in events if isinstance(e, Progress) and "Learning your written answers" in e.message
    ]
    assert sft_steps and sft_steps[-1].done == sft_steps[-1].total
    for start in starts:  # each β from π_SFT, not from the fresh adapter (its lora_B would be all zeros)
        assert all(torch.equal(start[name], ends[0][name]) for name in start)
        assert any(name.endswith("lora_B.default.weight") and start[name].abs().sum() > 0 for name in start)
    for r in result.results:  # KL from π_SFT: it moved, but from where the preference phase starts
        assert math.isfinite(r.kl) and r.kl > 0 and math.isfinite(r.accuracy)
    assert store.list_runs() == [] and list(temp.iterdir()) == []  # nothing recorded, no folder left

    # The same search without the SFT start measures something else: its start and its reference differ.
    monkeypatch.setattr(sft_phase.SftPhase, "_finish", finish)
    off, _ = run_job(
        beta_search(
            store, model_id, ids, config.replace(sft_phase="off"), cancel=CancelToken(), betas=betas, steps=4
        )
    )
    assert len(ends) == 1  # no supervised phase this time
    measured = [[v for r in found.results for v in (r.loss, r.kl)] for found in (off, result)]
    assert measured[0] != pytest.approx(measured[1], rel=0.05)
