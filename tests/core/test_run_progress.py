"""What a finished run did, in the person's terms (core/dpo/run_progress.py)."""

from __future__ import annotations

import math

from desktop_dpo.core.dpo.run_progress import agreement_sentence, moved_sentence, progress_text


def finished_run(
    store, base_model_id: int, accuracy: float, pairs: int, chosen: float, rejected: float, **config
):
    run_id = store.create_run(
        name="",
        base_model_id=base_model_id,
        config={"beta": 0.1, "loss_type": "sigmoid", **config},
        comparison_ids=[],
    )
    metrics = {
        "heldout/rewards/accuracies": accuracy,
        "heldout/pairs": float(pairs),
        "heldout/rewards/chosen": chosen,
        "heldout/rewards/rejected": rejected,
    }
    store.update_run(run_id, status="completed", final_metrics=metrics, name=f"Run {run_id} · round")
    return store.get_run(run_id)


def add_model(store, name: str, run_id: int | None = None) -> int:
    return store.add_model(name=name, path=f"/models/{name}", kind="hf", fingerprint=name, run_id=run_id)


def test_a_round_says_how_far_the_model_moved_and_how_often_it_agrees_on_unseen_prompts(store):
    base = add_model(store, "base")
    first = finished_run(store, base, accuracy=9 / 14, pairs=14, chosen=0.02, rejected=-0.03)
    exported = add_model(store, "round one", run_id=first.id)
    # β = 0.1: rewards 0.07 and -0.05 are log ratios 0.7 and -0.5: e^0.7 = 2.01×, e^-0.5 = 0.61×.
    second = finished_run(store, exported, accuracy=14 / 18, pairs=18, chosen=0.07, rejected=-0.05)

    text = progress_text(store, second)
    assert text == (
        "This run moved the model a little from where it started: on prompts it never saw, the "
        "answers you preferred became 2.0× as likely and the ones you turned down 0.61×. The new model agrees "
        "with your picks on 78% of prompts it never saw (14 of 18 held-out pairs; 95% interval 55–91%), up "
        f"from 64% after Run {first.id} · round."
    )
    # The first round has no round before it.
    assert progress_text(store, first).endswith("(9 of 14 held-out pairs; 95% interval 39–84%).")


def test_words_follow_the_size_of_the_move_and_losses_without_a_reference_say_only_the_agreement(store):
    base = add_model(store, "base")
    barely = finished_run(store, base, 0.5, 4, chosen=0.01, rejected=-0.01)
    assert " barely " in moved_sentence(barely)
    far = finished_run(store, base, 0.9, 10, chosen=0.6, rejected=-0.5)  # |6| and |5| nats
    assert " a lot " in moved_sentence(far)
    assert f"{math.exp(6):.1f}×" in moved_sentence(far)
    simpo = finished_run(store, base, 0.75, 8, chosen=-1.0, rejected=-2.0, loss_type="simpo")
    assert moved_sentence(simpo) is None
    assert progress_text(store, simpo) == agreement_sentence(simpo)
    kto = finished_run(store, base, 0.75, 8, chosen=0.05, rejected=-0.05, loss_type="kto")
    assert "you marked good" in moved_sentence(kto) and "you marked bad" in moved_sentence(kto)


def test_nothing_is_said_of_a_run_that_did_not_finish_or_had_nothing_held_out(store):
    base = add_model(store, "base")
    stopped = finished_run(store, base, 0.8, 10, 0.1, -0.1)
    store.update_run(stopped.id, status="stopped")
    assert progress_text(store, store.get_run(stopped.id)) is None
    unmeasured = finished_run(store, base, 0.0, 0, 0.0, 0.0)
    assert agreement_sentence(unmeasured) is None
    assert "agrees" not in (progress_text(store, unmeasured) or "")
