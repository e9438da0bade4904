"""The evaluations tables: an evaluation and its votes round-trip, the store counts them, bad votes are
refused without losing what is saved, and a schema-1 database upgrades to 2 with nothing lost."""

from __future__ import annotations

import sqlite3

import pytest

from desktop_dpo.core.errors import StoreError
from desktop_dpo.core.store import MIGRATIONS, SCHEMA_VERSION, Store


def _models(store: Store) -> tuple[int, int]:
    base = store.add_model(name="base", path="/m/base.gguf", kind="gguf", fingerprint="f1")
    aligned = store.add_model(
        name="aligned",
        path="/m/aligned.gguf",
        kind="gguf",
        fingerprint="f2",
        source="aligned",
        parent_model_id=base,
    )
    return base, aligned


def test_an_evaluation_and_its_votes_round_trip(store):
    base, aligned = _models(store)
    prompt = store.add_prompt([{"role": "user", "content": "Tell me about tea."}])
    evaluation_id = store.create_evaluation(
        name="Blind A/B",
        base_model_id=base,
        aligned_model_id=aligned,
        quantization="Q4_K_M",
        settings={"sampling": {"temperature": 0.7}},
    )
    (row,) = store.list_evaluations()
    assert (row.id, row.name, row.base_model_id, row.aligned_model_id) == (
        evaluation_id,
        "Blind A/B",
        base,
        aligned,
    )
    assert row.quantization == "Q4_K_M" and row.settings == {"sampling": {"temperature": 0.7}}
    assert store.get_evaluation(evaluation_id) == row and store.get_evaluation(999) is None

    first = store.add_evaluation_vote(
        evaluation_id,
        prompt_id=prompt,
        base_text="Tea is leaves.",
        aligned_text="Tea is a drink made from leaves.",
        vote="aligned",
        aligned_shown_left=False,
        seed=42,
    )
    store.add_evaluation_vote(
        evaluation_id, prompt_id=prompt, base_text="x", aligned_text="y", vote="tie", judge="shorter_wins"
    )
    votes = store.evaluation_votes(evaluation_id)
    assert votes[0].id == first
    assert [(v.vote, v.judge, v.aligned_shown_left, v.seed) for v in votes] == [
        ("aligned", "person", False, 42),
        ("tie", "shorter_wins", None, None),
    ]
    assert (
        votes[0].base_text == "Tea is leaves." and votes[0].aligned_text == "Tea is a drink made from leaves."
    )


def test_the_store_counts_each_kind_of_vote(store):
    base, aligned = _models(store)
    evaluation_id = store.create_evaluation(name="e", base_model_id=base, aligned_model_id=aligned)
    other = store.create_evaluation(name="other", base_model_id=base, aligned_model_id=aligned)
    for vote in ["aligned"] * 8 + ["base"] * 2 + ["tie"] * 3 + ["both_bad"]:
        store.add_evaluation_vote(evaluation_id, prompt_id=None, base_text="b", aligned_text="a", vote=vote)
    store.add_evaluation_vote(other, prompt_id=None, base_text="b", aligned_text="a", vote="base")

    assert store.evaluation_vote_counts(evaluation_id) == {"aligned": 8, "base": 2, "tie": 3, "both_bad": 1}
    assert store.evaluation_vote_counts(other) == {"aligned": 0, "base": 1, "tie": 0, "both_bad": 0}, (
        "each evaluation counts its own votes"
    )
    empty = store.create_evaluation(name="empty", base_model_id=base, aligned_model_id=aligned)
    assert store.evaluation_vote_counts(empty) == {"aligned": 0, "base": 0, "tie": 0, "both_bad": 0}


def test_list_evaluations_newest_first_and_by_model(store):
    base, aligned = _models(store)
    other = store.add_model(name="other", path="/m/other.gguf", kind="gguf", fingerprint="f3")
    first = store.create_evaluation(name="1", base_model_id=base, aligned_model_id=aligned)
    second = store.create_evaluation(name="2", base_model_id=base, aligned_model_id=other)
    assert [e.id for e in store.list_evaluations()] == [second, first]
    assert [e.id for e in store.list_evaluations(aligned_model_id=aligned)] == [first]
    assert [e.id for e in store.list_evaluations(base_model_id=base, aligned_model_id=other)] == [second]


def test_a_bad_vote_is_refused_and_nothing_saved_is_lost(store):
    base, aligned = _models(store)
    evaluation_id = store.create_evaluation(name="e", base_model_id=base, aligned_model_id=aligned)
    store.add_evaluation_vote(evaluation_id, prompt_id=None, base_text="b", aligned_text="a", vote="base")
    with pytest.raises(StoreError, match="Unknown vote 'left'"):
        store.add_evaluation_vote(evaluation_id, prompt_id=None, base_text="b", aligned_text="a", vote="left")
    with pytest.raises(StoreError, match="judge"):
        store.add_evaluation_vote(
            evaluation_id, prompt_id=None, base_text="b", aligned_text="a", vote="tie", judge=""
        )
    with pytest.raises(StoreError, match="does not exist"):
        store.add_evaluation_vote(12345, prompt_id=None, base_text="b", aligned_text="a", vote="tie")
    assert [v.vote for v in store.evaluation_votes(evaluation_id)] == ["base"]


def test_removing_a_model_keeps_its_evaluations_votes(store):
    base, aligned = _models(store)
    evaluation_id = store.create_evaluation(name="e", base_model_id=base, aligned_model_id=aligned)
    store.add_evaluation_vote(evaluation_id, prompt_id=None, base_text="b", aligned_text="a", vote="aligned")
    store.remove_model(aligned)
    assert store.get_evaluation(evaluation_id).aligned_model_id is None
    assert store.evaluation_vote_counts(evaluation_id)["aligned"] == 1


def test_a_schema_1_database_upgrades_to_2_with_nothing_lost(tmp_path):
    path = tmp_path / "prefs.sqlite"
    with Store.open(path, migrations=[MIGRATIONS[0]]) as old:
        assert old.schema_version == 1
        base, aligned = _models(old)
        comparison = old.record_pair(
            messages=[{"role": "user", "content": "kept across the upgrade"}],
            text_a="first",
            text_b="second",
            verdict="b",
            model_a_id=base,
            model_b_id=base,
            a_shown_left=True,
            note="a note",
        )
        run = old.create_run(
            name="run 1", base_model_id=base, config={"beta": 0.1}, comparison_ids=[comparison]
        )
        conversation = old.create_conversation(aligned, "chat")
        old.add_message(conversation, "user", "hello")
        before = old.table_counts()
        assert "evaluations" not in before

    with Store.open(path) as upgraded:
        assert upgraded.schema_version == SCHEMA_VERSION >= 2
        backup = upgraded.last_backup
        after = upgraded.table_counts()
        assert {name: after[name] for name in before} == before, "every row of schema 1 is still there"
        assert after["evaluations"] == after["evaluation_votes"] == 0
        saved = upgraded.get_comparison(comparison)
        assert (saved.verdict, saved.note, saved.a_shown_left) == ("b", "a note", True)
        assert upgraded.get_run(run).comparison_ids == [comparison]
        assert [m.content for m in upgraded.conversation_messages(conversation)] == ["hello"]
        # The new tables work on the upgraded file.
        evaluation_id = upgraded.create_evaluation(name="e", base_model_id=base, aligned_model_id=aligned)
        upgraded.add_evaluation_vote(
            evaluation_id, prompt_id=None, base_text="b", aligned_text="a", vote="tie"
        )
        assert upgraded.evaluation_vote_counts(evaluation_id)["tie"] == 1

    assert backup is not None and backup.parent == tmp_path / "backups" and ".v1." in backup.name
    copy = sqlite3.connect(backup)
    try:
        assert copy.execute("PRAGMA user_version").fetchone()[0] == 1
        assert copy.execute("SELECT verdict, note FROM comparisons").fetchall() == [("b", "a note")]
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "evaluations" not in tables
    finally:
        copy.close()
