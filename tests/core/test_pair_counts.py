"""One count of usable comparisons and training pairs for every screen (``core/dpo/pair_counts.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from desktop_dpo.core.dpo import pair_counts as pair_counts_module
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.data import PreferencePair, pairs_from_comparisons
from desktop_dpo.core.dpo.pair_counts import (
    PairCounts,
    count_pairs,
    pair_counts,
    plan_text,
    rewrites_text,
    split_text,
    store_pair_counts,
    training_text,
    usable_text,
)
from desktop_dpo.core.dpo.runs import plan_run
from desktop_dpo.core.preference_io import import_preferences
from desktop_dpo.core.store import MIGRATIONS, SCHEMA_VERSION, ComparisonView, Store


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


class Recorder:
    """Stands in for ``pairs_from_comparisons`` inside pair_counts and notes how many comparisons each call
    builds pairs for: a full count builds them for every comparison, a recount for those that changed."""

    def __init__(self) -> None:
        self.built: list[int] = []

    def __call__(self, views: Iterable[ComparisonView]) -> list[PreferencePair]:
        views = list(views)
        self.built.append(len(views))
        return pairs_from_comparisons(views)

    def take(self) -> list[int]:
        """What was built since the last take."""
        built, self.built = self.built, []
        return built


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(pair_counts_module, "pairs_from_comparisons", recorder)
    return recorder


def training_counts(store: Store) -> PairCounts:
    """What training builds from the store now: every live comparison through pairs_from_comparisons."""
    return pair_counts(pairs_from_comparisons(store.comparison_views()))


def counted_from_scratch(path: Path) -> PairCounts:
    """The count a fresh connection makes (no earlier count to start from: it reads every comparison)."""
    with Store.open(path) as fresh:
        return store_pair_counts(fresh)


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_each_change_recounts_only_what_changed_and_agrees_with_training(store, tmp_path, recorder):
    fill(store)
    path = tmp_path / "test.sqlite"
    assert store_pair_counts(store) == PairCounts(usable=6, pairs=9, rewrites=2)
    assert recorder.take() == [10]  # the first count reads all 10 live comparisons

    def recounted(built: list[int], expected: PairCounts) -> None:
        counts = store_pair_counts(store)
        assert recorder.take() == built, "only the comparisons just written are built again"
        assert counts == expected == training_counts(store) == counted_from_scratch(path)
        recorder.take()  # the count from scratch above

    picked = record(store, 20, "a")  # a new verdict
    recounted([1], PairCounts(usable=7, pairs=10, rewrites=2))
    store.update_comparison(picked, verdict="tie")  # the verdict changed in Data: nothing to learn now
    recounted([1], PairCounts(usable=6, pairs=9, rewrites=2))
    store.update_comparison(picked, edited_text="What I wanted.", edited_side="b")  # a rewrite of B
    recounted([1], PairCounts(usable=7, pairs=11, rewrites=3))  # the rewrite over B and over A
    store.update_comparison(picked, note="A note changes no pair.")
    recounted([0], PairCounts(usable=7, pairs=11, rewrites=3))  # nothing to build again
    first_pick = store.comparison_views()[0].comparison.id
    store.set_comparisons_deleted([picked, first_pick])  # deleted in Data: both give nothing now
    recounted([0], PairCounts(usable=5, pairs=8, rewrites=2))
    store.set_comparisons_deleted([picked, first_pick], deleted=False)  # and brought back (Ctrl+Z)
    recounted([2], PairCounts(usable=7, pairs=11, rewrites=3))
    store.delete_comparison_for_undo(picked)  # Collect's undo of a pick removes the row
    recounted([0], PairCounts(usable=6, pairs=9, rewrites=2))
    assert record(store, 21, "b") == picked  # SQLite gives the freed id to the next pick
    recounted([1], PairCounts(usable=7, pairs=10, rewrites=2))


def test_an_import_by_another_connection_is_recounted_alone(store, tmp_path, recorder):
    fill(store)
    assert store_pair_counts(store) == PairCounts(usable=6, pairs=9, rewrites=2)
    recorder.take()
    rows = [{"prompt": f"Imported {index}?", "chosen": "Good.", "rejected": "Bad."} for index in range(3)]
    # A pair of two identical answers teaches nothing: the import skips it.
    rows.append({"prompt": "Imported same?", "chosen": "Same.", "rejected": "Same."})
    job = Store.open(tmp_path / "test.sqlite")  # the import job's own connection
    try:
        result = import_preferences(job, write_jsonl(tmp_path / "pairs.jsonl", rows))
    finally:
        job.close()
    assert result.imported == 3
    counts = store_pair_counts(store)
    assert recorder.take() == [3]
    assert counts == PairCounts(usable=9, pairs=12, rewrites=2) == training_counts(store)
    config = TrainConfig(heldout_fraction=0.2, seed=3)
    assert plan_run(store, 1, config).counts == counts  # what a run made now would take (any model)


def test_a_schema_2_database_upgrades_with_every_row_and_then_recounts_only_changes(tmp_path, recorder):
    path = tmp_path / "prefs.sqlite"
    with Store.open(path, migrations=MIGRATIONS[:2]) as old:
        fill(old)
        old.update_comparison(old.comparison_views()[0].comparison.id, note="kept")
        # Without the change log (a store opened with fewer migrations), every change is counted in full.
        assert store_pair_counts(old) == PairCounts(usable=6, pairs=9, rewrites=2)
        record(old, 20, "a")
        assert store_pair_counts(old) == PairCounts(usable=7, pairs=10, rewrites=2) == training_counts(old)
        assert recorder.take() == [10, 11]
        before = old.table_counts()
        views_before = old.comparison_views(include_deleted=True)
    with Store.open(path) as upgraded:
        assert upgraded.schema_version == SCHEMA_VERSION >= 4
        assert upgraded.last_backup is not None and ".v2." in upgraded.last_backup.name
        after = upgraded.table_counts()
        assert {name: after[name] for name in before} == before, "every row of schema 2 is still there"
        assert upgraded.comparison_views(include_deleted=True) == views_before
        assert store_pair_counts(upgraded) == PairCounts(usable=7, pairs=10, rewrites=2)
        assert recorder.take() == [11]
        picked = record(upgraded, 21, "b", edited_text="Better.", edited_side="b")
        assert store_pair_counts(upgraded) == PairCounts(usable=8, pairs=13, rewrites=3)
        assert recorder.take() == [1]
        upgraded.update_comparison(picked, verdict="skip")  # the rewrite's two pairs stay
        assert store_pair_counts(upgraded) == PairCounts(usable=8, pairs=12, rewrites=3)
        assert recorder.take() == [1]
        assert store_pair_counts(upgraded) == training_counts(upgraded)


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
