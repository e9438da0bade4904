"""One count of usable comparisons and training pairs for every screen (``core/dpo/pair_counts.py``)."""

from __future__ import annotations

from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.data import pairs_from_comparisons
from desktop_dpo.core.dpo.pair_counts import (
    PairCounts,
    count_pairs,
    plan_text,
    rewrites_text,
    split_text,
    store_pair_counts,
    training_text,
    usable_text,
)
from desktop_dpo.core.dpo.runs import plan_run
from desktop_dpo.core.store import Store


def record(store: Store, index: int, verdict: str, **edit: str) -> int:
    """A comparison of two different answers to its own prompt."""
    return store.record_pair(
        messages=[{"role": "user", "content": f"Question {index}?"}],
        text_a=f"Answer A{index}.",
        text_b=f"Answer B{index}.",
        verdict=verdict,
        **edit,
    )


def fill(store: Store) -> None:
    """4 plain picks, 2 rewrites (3 and 2 training pairs), a tie, a "both bad", a skip, a deleted pick and a
    pick between two identical answers: 6 usable comparisons, 9 training pairs."""
    for index, verdict in enumerate(["a", "b", "a", "b"]):
        record(store, index, verdict)
    # Picked A and rewrote A: A over B, the rewrite over A, the rewrite over B.
    record(store, 4, "a", edited_text="A much better answer.", edited_side="a")
    # Picked B and rewrote A: B over A, the rewrite over A (B was judged better than A: no rewrite over B).
    record(store, 5, "b", edited_text="Another better answer.", edited_side="a")
    for index, verdict in enumerate(["tie", "both_bad", "skip"], start=6):
        record(store, index, verdict)
    store.set_comparisons_deleted([record(store, 9, "a")])
    store.record_pair(
        messages=[{"role": "user", "content": "Same?"}], text_a="Same.", text_b=" Same. ", verdict="a"
    )


def test_counts_are_what_training_gets(memory_store):
    fill(memory_store)
    counts = store_pair_counts(memory_store)
    assert counts == PairCounts(usable=6, pairs=9, rewrites=2)
    assert counts.extra == 3
    pairs = pairs_from_comparisons(memory_store.comparison_views())
    assert counts.pairs == len(pairs) and counts.usable == len({pair.comparison_id for pair in pairs})
    assert count_pairs(memory_store.comparison_views()) == counts


def test_a_run_plan_counts_the_same_and_its_split_adds_up(memory_store):
    fill(memory_store)
    plan = plan_run(memory_store, 1, TrainConfig(heldout_fraction=0.2, seed=3))  # imported pairs: any model
    assert plan.counts == store_pair_counts(memory_store)
    assert plan.counts.usable == len(plan.comparison_ids)
    assert plan.pairs == plan.counts.pairs == plan.train_pairs + plan.heldout_pairs
    assert plan.heldout_prompts == 1 and plan.heldout_pairs >= 1  # 6 prompts, a fifth held out


def test_the_count_follows_writes_of_this_and_other_connections(store, tmp_path):
    record(store, 0, "a")
    assert store_pair_counts(store) == PairCounts(usable=1, pairs=1)
    assert store_pair_counts(store) is store_pair_counts(store)  # nothing changed: not read again
    record(store, 1, "tie")
    record(store, 2, "b", edited_text="Better.", edited_side="b")
    assert store_pair_counts(store) == PairCounts(usable=2, pairs=4, rewrites=1)
    other = Store.open(tmp_path / "test.sqlite")  # e.g. an import job's connection
    try:
        record(other, 3, "a")
    finally:
        other.close()
    assert store_pair_counts(store) == PairCounts(usable=3, pairs=5, rewrites=1)


def test_the_words():
    assert usable_text(1) == "1 usable pair" and usable_text(12) == "12 usable pairs"
    same = PairCounts(usable=8, pairs=8)
    assert training_text(same) == "8 usable pairs"
    more = PairCounts(usable=12, pairs=14, rewrites=1)
    assert rewrites_text(more) == "1 rewrite adds 2 pairs"
    assert training_text(more) == "12 usable pairs → 14 training pairs (1 rewrite adds 2 pairs)"
    assert training_text(more, why=False) == "12 usable pairs → 14 training pairs"
    assert rewrites_text(PairCounts(usable=5, pairs=6, rewrites=1)) == "1 rewrite adds 1 pair"
    assert rewrites_text(PairCounts(usable=5, pairs=9, rewrites=3)) == "3 rewrites add 4 pairs"
    assert split_text(13, 1) == "14 training pairs: 13 to train on, 1 held out"
    assert split_text(1, 0) == "1 training pair: 1 to train on, 0 held out"
    assert plan_text(more, 10, 13, 1, 1) == (
        "12 usable pairs → 14 training pairs (1 rewrite adds 2 pairs), from 10 prompts: 13 to train on; "
        "1 prompt (1 pair) held out to check that the model generalises."
    )
    assert plan_text(same, 8, 6, 2, 2) == (
        "8 usable pairs from 8 prompts: 6 to train on; 2 prompts (2 pairs) held out to check that the model "
        "generalises."
    )
