"""Re-asking (``core/reask.py``): how often a repeat comes, which pairs, the agreement and the label smoothing
it implies, worked by hand; the data check's words; and that training never counts a repeat."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from desktop_dpo.core.data_check import check_data
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.data import pairs_from_comparisons
from desktop_dpo.core.dpo.labels import labels_from_comparisons
from desktop_dpo.core.dpo.pair_counts import store_pair_counts
from desktop_dpo.core.dpo.runs import model_pair_ids, plan_run
from desktop_dpo.core.reask import (
    MIN_JUDGED,
    REASK_EVERY,
    agrees,
    choose_repeat,
    flip_probability,
    pick_repeat,
    pick_repeat_in,
    repeat_agreement,
    repeat_candidates,
    suggested_smoothing,
)
from desktop_dpo.core.store import Store


def judged(store: Store, count: int, *, start: int = 0) -> list[int]:
    """``count`` pairs judged in Collect (shown side by side), A better for even ones, B for odd ones."""
    return [
        store.record_pair(
            messages=[{"role": "user", "content": f"Question {index}?"}],
            text_a=f"Answer A{index}, with its own words.",
            text_b=f"Answer B{index} says something else.",
            verdict="a" if index % 2 == 0 else "b",
            a_shown_left=index % 3 == 0,
        )
        for index in range(start, start + count)
    ]


def repeat(store: Store, original_id: int, verdict: str) -> int:
    """The verdict on ``original_id`` shown again, sides swapped, as Collect stores it."""
    original = store.get_comparison(original_id)
    return store.add_comparison(
        prompt_id=original.prompt_id,
        generation_a_id=original.generation_a_id,
        generation_b_id=original.generation_b_id,
        verdict=verdict,
        a_shown_left=not original.a_shown_left,
        repeat_of=original_id,
    )


def test_a_repeat_comes_one_pair_in_twenty_never_twice_in_a_row(memory_store):
    judged(memory_store, 30)
    views = memory_store.comparison_views()
    rng = random.Random(16)
    shown, last = [], False
    for _ in range(4000):
        choice = choose_repeat(views, rng, last_was_repeat=last)
        last = choice is not None
        shown.append(last)
    rate = sum(shown) / len(shown)
    # p = 1/20 per eligible pair, and none right after a repeat: p / (1 + p) ≈ 4.8 % of pairs.
    p = 1 / REASK_EVERY
    assert rate == pytest.approx(p / (1 + p), abs=0.01)
    assert not any(a and b for a, b in itertools.pairwise(shown)), "never twice in a row"


def test_nothing_is_repeated_before_ten_judged_pairs_nor_a_pair_twice(memory_store):
    ids = judged(memory_store, MIN_JUDGED - 1)
    memory_store.record_pair(  # imported (never shown) and skipped ones are no judged pairs
        messages=[{"role": "user", "content": "Imported?"}], text_a="x", text_b="y", verdict="a"
    )
    judged_skip = judged(memory_store, 1, start=100)[0]
    memory_store.update_comparison(judged_skip, verdict="skip")
    always = random.Random(0)
    always.random = lambda: 0.0  # type: ignore[method-assign]
    assert choose_repeat(memory_store.comparison_views(), always, last_was_repeat=False) is None

    ids += judged(memory_store, 1, start=200)  # the tenth
    chosen = choose_repeat(memory_store.comparison_views(), always, last_was_repeat=False)
    assert chosen is not None and chosen.comparison.id in ids
    assert choose_repeat(memory_store.comparison_views(), always, last_was_repeat=True) is None
    repeat(memory_store, chosen.comparison.id, "a")
    candidates = [v.comparison.id for v in repeat_candidates(memory_store.comparison_views())]
    assert chosen.comparison.id not in candidates and len(candidates) == MIN_JUDGED - 1


def test_agreement_and_the_label_smoothing_it_implies_worked_by_hand(memory_store):
    ids = judged(memory_store, 20)
    flipped = {"a": "b", "b": "a"}
    for number, original in enumerate(ids):
        verdict = memory_store.get_comparison(original).verdict
        repeat(memory_store, original, flipped[verdict] if number in (2, 5, 11) else verdict)
    agreement = repeat_agreement(memory_store.comparison_views())
    assert (agreement.agreed, agreement.total) == (17, 20)
    assert len(agreement.disagreeing_ids) == 6  # three originals and their three repeats

    # a = 1 − 2ε(1 − ε) with a = 0.85: 2ε² − 2ε + 0.15 = 0, ε = (1 − √0.7) / 2 = 0.0817.
    assert flip_probability(0.85) == pytest.approx((1 - math.sqrt(0.7)) / 2)
    assert 1 - 2 * flip_probability(0.85) * (1 - flip_probability(0.85)) == pytest.approx(0.85)
    assert suggested_smoothing(17, 20) == 0.08
    assert suggested_smoothing(19, 20) is None  # 95 %: not low
    assert suggested_smoothing(7, 9) is None  # too few repeats to say
    assert flip_probability(0.4) == 0.5

    check = check_data(memory_store)
    assert check.checked == 20, "repeats are not pairs of their own"
    assert [f.key for f in check.problems] == ["low_agreement"], "a repeat is no duplicate nor conflict"
    (finding,) = check.problems
    assert finding.ids == agreement.disagreeing_ids
    assert "You agreed with yourself on 17 of 20 repeated pairs (85%; 95% interval 64–95%)." in finding.advice
    assert "train with label smoothing 0.08" in finding.advice
    assert check.label_smoothing == 0.08


def test_training_and_the_counts_skip_repeats(memory_store):
    model = memory_store.add_model(name="m", path="/m", kind="hf", fingerprint="fp")
    ids = judged(memory_store, 12)
    before = (store_pair_counts(memory_store), plan_run(memory_store, model, TrainConfig()).pairs)
    repeats = [repeat(memory_store, original, "a") for original in ids[:4]]

    assert (store_pair_counts(memory_store), plan_run(memory_store, model, TrainConfig()).pairs) == before
    views = memory_store.comparison_views()
    assert {p.comparison_id for p in pairs_from_comparisons(views)} == set(ids)
    assert not {x.comparison_id for x in labels_from_comparisons(views)} & set(repeats)
    assert set(model_pair_ids(memory_store, model, "kto")) == set(ids)


def test_a_rewrite_made_on_a_repeated_pair_still_trains(memory_store):
    """The repeat's verdict is only a consistency measure, but a rewrite typed on it is new work: it trains."""
    ids = judged(memory_store, 12)
    again = repeat(memory_store, ids[0], "a")
    memory_store.update_comparison(
        again, edited_text=" A far better answer, written by hand.", edited_side="a"
    )
    views = memory_store.comparison_views()
    from_repeat = [p for p in pairs_from_comparisons(views) if p.comparison_id == again]
    assert {p.origin for p in from_repeat} == {"edit_vs_original", "edit_vs_other"}  # no verdict pair
    assert all(p.chosen == " A far better answer, written by hand." for p in from_repeat)
    labels = [x for x in labels_from_comparisons(views) if x.comparison_id == again]
    assert [(x.origin, x.desirable) for x in labels] == [("rewrite", True)]


def mixed_store(store: Store) -> list[int]:
    """Every kind of comparison the candidate rules tell apart; returns the judged originals' ids."""
    ids = judged(store, 14)
    store.update_comparison(ids[4], verdict="tie")
    store.update_comparison(ids[5], verdict="both_bad")
    store.update_comparison(ids[6], verdict="skip")  # skipped: no verdict to repeat
    store.record_pair(  # imported: never shown side by side
        messages=[{"role": "user", "content": "Imported?"}], text_a="x", text_b="y", verdict="a"
    )
    repeat(store, ids[0], "a")  # re-asked: not again
    store.set_comparisons_deleted([repeat(store, ids[1], "b")])  # its repeat deleted: may be re-asked
    repeat(store, ids[2], "a")
    store.set_comparisons_deleted([ids[2]])  # a deleted original (with a live repeat)
    store.set_comparisons_deleted([ids[3]])  # a deleted original
    repeat(store, ids[7], "skip")  # a skipped repeat is still a repeat
    return ids


def test_the_store_picks_repeats_by_the_same_rules_as_the_spec(memory_store):
    ids = mixed_store(memory_store)
    spec = repeat_candidates(memory_store.comparison_views())
    assert [v.comparison.id for v in spec] == [ids[1], *ids[4:6], *ids[8:]]  # worked by hand
    assert [v.comparison.id for v in spec] == [
        v.comparison.id for v in repeat_candidates(memory_store.comparison_views(include_deleted=True))
    ]

    assert memory_store.repeat_candidate_ids() == [v.comparison.id for v in spec]
    # Judged: the 14 less two deleted and one skipped; re-asked already: ids[0] and ids[7].
    assert memory_store.repeat_candidate_counts() == (11, 9) and len(spec) == 9
    # Each candidate is one index away, with its texts, and nothing past the last.
    assert [memory_store.repeat_candidate(i) for i in range(len(spec))] == spec
    assert memory_store.repeat_candidate(len(spec)) is None

    # The same draw of the same generator picks the same pair as the spec does from every comparison.
    for seed in range(20):
        from_sql = pick_repeat_in(memory_store, random.Random(seed))
        assert from_sql == pick_repeat(memory_store.comparison_views(), random.Random(seed))


def test_the_store_picks_nothing_before_ten_judged_pairs_or_once_all_were_re_asked(memory_store):
    ids = judged(memory_store, MIN_JUDGED - 1)
    rng = random.Random(0)
    assert pick_repeat_in(memory_store, rng) is None and memory_store.repeat_candidate_counts() == (9, 9)
    ids += judged(memory_store, 1, start=50)
    assert pick_repeat_in(memory_store, rng) is not None
    for original in ids:
        repeat(memory_store, original, "a")
    assert memory_store.repeat_candidate_counts() == (MIN_JUDGED, 0)
    assert pick_repeat_in(memory_store, rng) is None


def test_agreement_is_the_same_answer_and_a_skip_counts_for_nothing():
    assert agrees("a", "a") is True and agrees("tie", "tie") is True
    assert agrees("a", "b") is False and agrees("tie", "both_bad") is False
    assert agrees("a", "skip") is None and agrees("skip", "a") is None
    assert agrees(None, "a") is None, "the original is deleted"
