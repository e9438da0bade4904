"""The store keeps every pick: round-trips of each table, atomic writes, threads, migrations, refusals.

The in-memory fixture is used where the file does not matter; durability, WAL, migrations and refusals
need a real file (``store`` fixture or a path under ``tmp_path``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from desktop_dpo.core.errors import NewerSchemaError, NotADatabaseError, StoreError
from desktop_dpo.core.store import MIGRATIONS, Store

REPO_ROOT = Path(__file__).resolve().parents[2]
ASK = [{"role": "user", "content": "Name a colour."}]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(store: Store, prompt: str = "Name a colour.", a: str = "Blue.", b: str = "Grey.", **kw) -> int:
    return store.record_pair(messages=[{"role": "user", "content": prompt}], text_a=a, text_b=b, **kw)


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


def test_model_round_trip_update_default_and_removal(memory_store):
    s = memory_store
    base = s.add_model(
        name="Gemma 270M",
        path="/models/gemma.gguf",
        kind="gguf",
        fingerprint="sha256:abc",
        source="demo",
        info={"architecture": "gemma3", "context_length": 32768, "chat_template": None},
    )
    aligned = s.add_model(
        name="Gemma aligned",
        path="/models/aligned",
        kind="hf",
        fingerprint="sha256:def",
        source="aligned",
        parent_model_id=base,
    )
    row = s.get_model(base)
    assert (row.name, row.path, row.kind, row.fingerprint, row.source) == (
        "Gemma 270M",
        "/models/gemma.gguf",
        "gguf",
        "sha256:abc",
        "demo",
    )
    assert row.info == {"architecture": "gemma3", "context_length": 32768, "chat_template": None}
    assert s.get_model(aligned).parent_model_id == base

    # The same path again updates the entry instead of adding a second one.
    assert (
        s.add_model(name="Renamed", path="/models/gemma.gguf", kind="gguf", fingerprint="sha256:new") == base
    )
    assert s.get_model(base).name == "Renamed"
    assert len(s.list_models()) == 2

    s.update_model_info(base, gguf_path="/x.gguf")
    assert s.get_model(base).info["gguf_path"] == "/x.gguf"
    s.set_default_model(aligned)
    assert s.default_model().id == aligned
    assert [m.id for m in s.list_models()] == [aligned, base]

    # Forgetting a model keeps the responses it wrote (their model becomes unknown).
    prompt_id = s.add_prompt(ASK)
    gen = s.add_generation(prompt_id=prompt_id, text="Red.", model_id=base)
    s.remove_model(base)
    assert s.get_model(base) is None
    assert s.get_model(aligned).parent_model_id is None
    assert s.get_generation(gen).model_id is None
    assert s.get_generation(gen).text == "Red."
    with pytest.raises(StoreError):
        s.update_model_info(base, x=1)


def test_multi_turn_prompt_round_trip_reuse_queue_and_split(memory_store):
    s = memory_store
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a colour.\nOnly one."},
    ]
    prompt_id = s.add_prompt(conversation, source="user")
    row = s.get_prompt(prompt_id)
    assert row.messages == conversation
    assert row.text == "Name a colour.\nOnly one."
    assert row.split is None
    # The same conversation is the same prompt; a different one is not.
    assert s.add_prompt([dict(m) for m in conversation]) == prompt_id
    assert s.add_prompt(conversation[:2]) != prompt_id
    with pytest.raises(StoreError):
        s.add_prompt([])

    queued = s.queue_prompts([ASK, [{"role": "user", "content": "Why?"}]])
    assert [p.id for p in s.queued_prompts()] == queued
    s.dequeue_prompt(queued[0])
    assert [p.id for p in s.queued_prompts()] == [queued[1]]

    s.set_prompt_splits({prompt_id: "heldout"})
    s.set_prompt_splits({prompt_id: "train"})  # a split once made never changes
    assert s.get_prompt(prompt_id).split == "heldout"
    assert len(s.list_prompts()) == 4


def test_generation_round_trip_with_unknown_model_and_seed(memory_store):
    s = memory_store
    prompt_id = s.add_prompt(ASK)
    imported = s.add_generation(prompt_id=prompt_id, text="Blue.")
    row = s.get_generation(imported)
    assert (row.model_id, row.seed, row.prompt_tokens, row.seconds, row.finish_reason) == (None,) * 5
    assert row.sampling == {}
    assert row.text == "Blue."

    model = s.add_model(name="m", path="/m.gguf", kind="gguf", fingerprint="f")
    sampled = s.add_generation(
        prompt_id=prompt_id,
        text="Green.",
        model_id=model,
        sampling={"temperature": 0.9, "top_p": 0.95},
        seed=1234,
        prompt_tokens=7,
        completion_tokens=3,
        seconds=0.25,
        finish_reason="stop",
    )
    row = s.get_generation(sampled)
    assert (row.prompt_id, row.model_id, row.seed, row.prompt_tokens, row.completion_tokens) == (
        prompt_id,
        model,
        1234,
        7,
        3,
    )
    assert row.sampling == {"temperature": 0.9, "top_p": 0.95}
    assert (row.seconds, row.finish_reason) == (0.25, "stop")
    assert s.get_generation(999) is None


def test_comparison_round_trip_with_verdict_edit_note_and_side(memory_store):
    s = memory_store
    model = s.add_model(name="m", path="/m.gguf", kind="gguf", fingerprint="f")
    cid = s.record_pair(
        messages=ASK,
        text_a="Blue.",
        text_b="Grey, maybe.",
        verdict="b",
        model_a_id=model,
        model_b_id=None,
        a_shown_left=False,
        generation_meta_a={"seed": 7, "sampling": {"temperature": 0.7}},
        edited_text="Grey.",
        edited_side="b",
        note="B hedges; trimmed it.",
    )
    row = s.get_comparison(cid)
    assert (row.verdict, row.a_shown_left, row.edited_text, row.edited_side, row.note, row.source) == (
        "b",
        False,
        "Grey.",
        "b",
        "B hedges; trimmed it.",
        "collect",
    )
    assert row.deleted is False
    assert s.get_generation(row.generation_a_id).seed == 7
    assert s.get_generation(row.generation_a_id).model_id == model
    assert s.get_generation(row.generation_b_id).model_id is None

    (view,) = s.comparison_views()
    assert (view.messages, view.text_a, view.text_b, view.prompt_text) == (
        ASK,
        "Blue.",
        "Grey, maybe.",
        ASK[0]["content"],
    )
    assert (view.model_a_id, view.model_b_id) == (model, None)

    # An imported pair was never shown: its side is unknown.
    imported = record(s, "Other?", verdict="a", source="import")
    assert s.get_comparison(imported).a_shown_left is None
    assert s.get_comparison(imported).source == "import"

    s.update_comparison(cid, verdict="a", note="changed my mind")
    assert (s.get_comparison(cid).verdict, s.get_comparison(cid).note) == ("a", "changed my mind")
    with pytest.raises(StoreError):
        s.update_comparison(cid, verdict="maybe")
    with pytest.raises(StoreError):
        s.update_comparison(cid, edited_text="no side given")
    assert s.get_comparison(cid).edited_text == "Grey."
    with pytest.raises(StoreError):
        record(s, verdict="a", edited_text="half an edit")

    tie = record(s, "Third?", verdict="tie")
    assert s.count_comparisons() == 3
    assert s.count_usable_pairs() == 2  # the tie teaches nothing
    assert [v.comparison.id for v in s.comparison_views(verdicts=["tie"])] == [tie]
    assert [v.comparison.id for v in s.comparison_views(ids=[tie, cid])] == [cid, tie]
    assert s.comparison_views(ids=[]) == []


def test_search_matches_text_literally(memory_store):
    s = memory_store
    percent = record(s, "Is 100% sure?", a="yes", b="no", verdict="a")
    record(s, "Is 1000 sure?", a="yes", b="no", verdict="a")
    snake = record(s, "Rename it", a="snake_case", b="snakeXcase", verdict="a")
    assert [v.comparison.id for v in s.comparison_views(search="100%")] == [percent]
    assert [v.comparison.id for v in s.comparison_views(search="snake_case")] == [snake]
    assert [v.comparison.id for v in s.comparison_views(search="Rename")] == [snake]


def test_run_and_metrics_round_trip(memory_store):
    s = memory_store
    model = s.add_model(name="m", path="/m.gguf", kind="gguf", fingerprint="f")
    ids = [record(s, f"q{i}", verdict="a") for i in range(3)]
    run = s.create_run(
        name="round 1",
        base_model_id=model,
        config={"beta": 0.1, "lr": 5e-5, "lora": {"r": 16}},
        comparison_ids=[ids[2], ids[0]],
        checkpoint_dir="/ckpt",
    )
    record(s, "later", verdict="a")  # a pick made after the run started is not in its snapshot
    row = s.get_run(run)
    assert row.comparison_ids == [ids[0], ids[2]]
    assert (row.name, row.base_model_id, row.reference, row.status, row.step) == (
        "round 1",
        model,
        "adapter_off",
        "pending",
        0,
    )
    assert row.config == {"beta": 0.1, "lr": 5e-5, "lora": {"r": 16}}

    s.update_run(
        run, status="completed", step=30, total_steps=30, final_metrics={"accuracy": 0.9}, finished_at=5.0
    )
    row = s.get_run(run)
    assert (row.status, row.step, row.total_steps, row.final_metrics, row.finished_at) == (
        "completed",
        30,
        30,
        {"accuracy": 0.9},
        5.0,
    )
    with pytest.raises(StoreError):
        s.update_run(run, status="exploded")
    with pytest.raises(StoreError):
        s.update_run(run, colour="blue")

    s.add_run_metrics(run, 2, {"loss": 0.6})
    s.add_run_metrics(run, 1, {"loss": 0.69})
    s.add_run_metrics(run, 2, {"loss": 0.5})  # written again after a resume: replaces
    s.add_run_metrics(run, 2, {"loss": 0.7}, split="heldout")
    assert s.run_metrics(run) == [(1, {"loss": 0.69}), (2, {"loss": 0.5})]
    assert s.run_metrics(run, "heldout") == [(2, {"loss": 0.7})]
    assert [r.id for r in s.list_runs()] == [run]


def test_export_round_trip(memory_store):
    s = memory_store
    run = s.create_run(name="r", base_model_id=None, config={}, comparison_ids=[])
    first = s.add_export(
        path="/out/model-q4.gguf",
        quantization="Q4_K_M",
        sha256="ab" * 32,
        size_bytes=250_000_000,
        run_id=run,
        parity={"max_abs_logit_diff": 0.01, "greedy_identical": True},
        meta={"types": {"Q4_K": 10, "Q8_0": 2}},
    )
    s.add_export(path="/out/other.gguf", quantization="F16", sha256="cd" * 32, size_bytes=1)
    (row,) = s.list_exports(run_id=run)
    assert (row.id, row.run_id, row.model_id, row.path, row.quantization, row.sha256, row.size_bytes) == (
        first,
        run,
        None,
        "/out/model-q4.gguf",
        "Q4_K_M",
        "ab" * 32,
        250_000_000,
    )
    assert row.parity == {"max_abs_logit_diff": 0.01, "greedy_identical": True}
    assert row.meta == {"types": {"Q4_K": 10, "Q8_0": 2}}
    assert len(s.list_exports()) == 2


def test_reference_logp_cache_round_trip(memory_store):
    s = memory_store
    # More keys than one query's chunk, so the chunked lookup is exercised.
    values = {f"pair-{i}": (-float(i), -float(i) - 0.5) for i in range(1203)}
    s.put_reference_logps(values)
    assert s.get_reference_logps(list(values)) == values
    assert s.get_reference_logps(["pair-3", "never-computed"]) == {"pair-3": (-3.0, -3.5)}
    s.put_reference_logps({"pair-3": (-1.25, -2.5)})  # a recomputed value replaces the old one
    assert s.get_reference_logps(["pair-3"]) == {"pair-3": (-1.25, -2.5)}
    assert s.get_reference_logps([]) == {}


def test_conversation_and_message_round_trip(memory_store):
    s = memory_store
    model = s.add_model(name="m", path="/m.gguf", kind="gguf", fingerprint="f")
    first = s.create_conversation(model, "Colours")
    second = s.create_conversation(None)
    created = s.list_conversations()
    s.add_message(first, "user", "Name a colour. 🎨")
    time.sleep(0.01)  # so the conversation's updated_at visibly moves
    answer = s.add_message(first, "assistant", "Blue.", meta={"tokens": 2, "seconds": 0.1})
    messages = s.conversation_messages(first)
    assert [(m.role, m.content, m.meta) for m in messages] == [
        ("user", "Name a colour. 🎨", {}),
        ("assistant", "Blue.", {"tokens": 2, "seconds": 0.1}),
    ]
    conversations = s.list_conversations()
    assert [c.id for c in conversations] == [first, second]  # most recently used first
    assert conversations[0].title == "Colours"
    assert conversations[0].model_id == model
    assert conversations[0].updated_at > next(c for c in created if c.id == first).updated_at
    s.delete_message(answer)
    assert [m.content for m in s.conversation_messages(first)] == ["Name a colour. 🎨"]
    assert s.conversation_messages(second) == []


# --------------------------------------------------------------------------------------------------
# Soft delete, restore, undo
# --------------------------------------------------------------------------------------------------


def test_soft_delete_hides_a_pair_and_restore_brings_it_back(memory_store):
    s = memory_store
    keep, drop = record(s, "one", verdict="a"), record(s, "two", verdict="b")
    s.set_comparisons_deleted([drop])
    assert [v.comparison.id for v in s.comparison_views()] == [keep]
    assert s.count_comparisons() == 1
    assert s.count_usable_pairs() == 1
    assert s.count_comparisons(include_deleted=True) == 2
    assert s.get_comparison(drop).deleted is True
    assert [v.comparison.id for v in s.comparison_views(include_deleted=True)] == [keep, drop]

    s.set_comparisons_deleted([drop], deleted=False)
    assert [v.comparison.id for v in s.comparison_views()] == [keep, drop]
    assert s.get_comparison(drop).deleted is False
    assert s.get_comparison(drop).verdict == "b"
    assert s.count_usable_pairs() == 2


def test_undo_removes_the_pick_and_keeps_the_responses(memory_store):
    s = memory_store
    earlier = record(s, "one", verdict="a")
    cid = record(s, "two", verdict="b")
    row = s.get_comparison(cid)
    s.delete_comparison_for_undo(cid)
    assert s.get_comparison(cid) is None
    assert [v.comparison.id for v in s.comparison_views(include_deleted=True)] == [earlier]
    # The responses stay, so the same pair can be judged again without sampling.
    assert s.get_generation(row.generation_a_id) is not None
    again = s.add_comparison(
        prompt_id=row.prompt_id,
        generation_a_id=row.generation_a_id,
        generation_b_id=row.generation_b_id,
        verdict="a",
    )
    assert s.get_comparison(again).verdict == "a"


# --------------------------------------------------------------------------------------------------
# Durability settings and atomic writes
# --------------------------------------------------------------------------------------------------


def test_file_store_uses_wal_full_sync_and_foreign_keys(store):
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.schema_version == len(MIGRATIONS)
    # Foreign keys are enforced: a response to a prompt that does not exist is refused.
    with pytest.raises(sqlite3.IntegrityError):
        store.add_generation(prompt_id=12345, text="orphan")
    # WAL is a property of the file: a second connection sees it too.
    with Store.open(store.path) as other:
        assert other._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_memory_store_enforces_foreign_keys(memory_store):
    with pytest.raises(sqlite3.IntegrityError):
        memory_store.add_comparison(prompt_id=1, generation_a_id=1, generation_b_id=2, verdict="a")


def test_record_pair_rolls_back_fully_when_the_comparison_insert_fails(store):
    before = store.table_counts()
    # The CHECK constraint on edited_side fails on the last of the four inserts.
    with pytest.raises(sqlite3.IntegrityError):
        store.record_pair(messages=ASK, text_a="x", text_b="y", verdict="a", edited_text="z", edited_side="c")
    with pytest.raises(StoreError):
        store.record_pair(messages=ASK, text_a="x", text_b="y", verdict="not-a-verdict")
    assert store.table_counts() == before
    assert store.list_prompts() == []
    # Nothing is left half-open: the next pick saves normally and is visible to another connection.
    cid = store.record_pair(messages=ASK, text_a="x", text_b="y", verdict="a")
    with Store.open(store.path) as other:
        assert other.get_comparison(cid).verdict == "a"
        assert other.table_counts()["generations"] == 2


def test_multi_row_writes_are_all_or_nothing(memory_store):
    s = memory_store
    existing = s.add_prompt(ASK)
    before = s.table_counts()

    with pytest.raises(StoreError):  # the second prompt is empty
        s.queue_prompts([[{"role": "user", "content": "fine"}], []])
    assert s.table_counts() == before
    assert s.queued_prompts() == []

    other = s.add_prompt([{"role": "user", "content": "other"}])
    with pytest.raises(StoreError):  # the second split is unknown
        s.set_prompt_splits({existing: "train", other: "validation"})
    assert s.get_prompt(existing).split is None

    conversation = s.create_conversation(None)
    updated_at = s.list_conversations()[0].updated_at
    with pytest.raises(sqlite3.IntegrityError):  # the role CHECK fails; updated_at must not move
        s.add_message(conversation, "narrator", "Once upon a time")
    assert s.conversation_messages(conversation) == []
    assert s.list_conversations()[0].updated_at == updated_at

    with pytest.raises(TypeError):  # a value that is not a number, after valid ones
        s.put_reference_logps({"ok": (-1.0, -2.0), "bad": (None, -1.0)})
    assert s.get_reference_logps(["ok", "bad"]) == {}


def test_atomic_nests_and_an_inner_failure_undoes_only_the_inner_block(memory_store):
    s = memory_store
    with s.atomic():
        outer = record(s, "outer", verdict="a")
        with pytest.raises(RuntimeError), s.atomic():
            record(s, "inner", verdict="a")
            raise RuntimeError("give up the inner block")
        after = record(s, "after", verdict="b")
    assert [v.comparison.id for v in s.comparison_views()] == [outer, after]

    with pytest.raises(RuntimeError), s.atomic():
        record(s, "all of it", verdict="a")
        with s.atomic():
            record(s, "nested", verdict="a")
        raise RuntimeError("give up everything")
    assert [v.prompt_text for v in s.comparison_views()] == ["outer", "after"]


def test_a_full_disk_is_reported_as_such_and_nothing_is_half_written(store):
    """SQLite ends the whole transaction on SQLITE_FULL; the person must see "full", not a savepoint error."""
    kept = record(store, "before", verdict="a")
    store._conn.execute("PRAGMA max_page_count = 40")  # a tiny "disk" for this connection
    with pytest.raises(sqlite3.OperationalError, match="full"), store.atomic():
        for i in range(100):
            record(store, f"q{i}", a="x" * 3000, b="y" * 3000, verdict="a")
    assert not store._conn.in_transaction
    assert [v.comparison.id for v in store.comparison_views()] == [kept]


# --------------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------------


def test_a_store_cannot_be_used_from_another_thread(store):
    errors: list[BaseException] = []

    def use_it() -> None:
        try:
            record(store, verdict="a")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=use_it)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], sqlite3.ProgrammingError)
    assert "thread" in str(errors[0])
    assert store.count_comparisons() == 0


def test_each_thread_with_its_own_store_writes_to_the_same_file(store):
    """A worker records picks while the GUI thread keeps writing and reading: nothing is lost."""
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            with Store.open(store.path) as own:
                for i in range(20):
                    record(own, f"worker {i}", verdict="a")
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    for i in range(20):
        record(store, f"main {i}", verdict="b")
        store.count_comparisons()
    thread.join()
    assert failures == []
    texts = {v.prompt_text for v in store.comparison_views()}
    assert texts == {f"worker {i}" for i in range(20)} | {f"main {i}" for i in range(20)}


# --------------------------------------------------------------------------------------------------
# Migrations and refusals
# --------------------------------------------------------------------------------------------------


def _add_rating_column(db) -> None:
    """A second schema version: comparisons gain a 1..5 confidence."""
    db.execute("ALTER TABLE comparisons ADD COLUMN confidence INTEGER")
    db.execute("UPDATE comparisons SET confidence = 3")


def _add_tags_table(db) -> None:
    db.execute("CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")


def _broken(db) -> None:
    db.execute("CREATE TABLE half_done (id INTEGER PRIMARY KEY)")
    raise RuntimeError("migration bug")


def test_migration_backs_up_first_and_advances_user_version(tmp_path):
    path = tmp_path / "prefs.sqlite"
    v1 = [MIGRATIONS[0]]
    with Store.open(path, migrations=v1) as s:
        assert s.schema_version == 1
        cid = record(s, "kept across upgrades", verdict="b")
        assert s.last_backup is None  # creating a database backs nothing up
    assert not (tmp_path / "backups").exists()

    with Store.open(path, migrations=[*v1, _add_rating_column, _add_tags_table]) as s:
        assert s.schema_version == 3
        assert s.get_comparison(cid).verdict == "b"
        assert s._conn.execute("SELECT confidence FROM comparisons").fetchall() == [(3,)]
        assert "tags" in s.db.table_names()
        backup = s.last_backup

    backups = list((tmp_path / "backups").iterdir())
    assert backups == [backup]
    assert "v1" in backup.name
    # The copy holds the old data at the old version, and opens as it was.
    copy = sqlite3.connect(backup)
    try:
        assert copy.execute("PRAGMA user_version").fetchone()[0] == 1
        assert copy.execute("SELECT verdict FROM comparisons").fetchall() == [("b",)]
        columns = [row[1] for row in copy.execute("PRAGMA table_info(comparisons)")]
        assert "confidence" not in columns
    finally:
        copy.close()
    with Store.open(backup, migrations=v1, backups_dir=tmp_path / "b2") as old:
        assert [v.prompt_text for v in old.comparison_views()] == ["kept across upgrades"]

    # Opening again at the same version neither migrates nor backs up.
    with Store.open(path, migrations=[*v1, _add_rating_column, _add_tags_table]) as s:
        assert s.last_backup is None
    assert len(list((tmp_path / "backups").iterdir())) == 1


def test_a_failing_migration_leaves_the_old_version_and_data(tmp_path):
    path = tmp_path / "prefs.sqlite"
    v1 = [MIGRATIONS[0]]
    with Store.open(path, migrations=v1) as s:
        cid = record(s, "precious", verdict="a", note="do not lose")

    with pytest.raises(StoreError) as caught:
        Store.open(path, migrations=[*v1, _add_tags_table, _broken])
    message = str(caught.value)
    assert "schema 1" in message
    assert "backups" in message  # tells the person where the copy is

    with Store.open(path, migrations=v1) as s:
        assert s.schema_version == 1
        assert s.get_comparison(cid).note == "do not lose"
        # Every pending migration is one transaction: the one that worked was undone as well.
        assert "tags" not in s.db.table_names()
        assert "half_done" not in s.db.table_names()


def test_a_newer_database_is_refused_and_left_byte_identical(tmp_path):
    path = tmp_path / "prefs.sqlite"
    with Store.open(path) as s:
        record(s, verdict="a")
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    raw.close()
    digest = sha256(path)

    with pytest.raises(NewerSchemaError) as caught:
        Store.open(path)
    assert "newer version" in str(caught.value)
    assert sha256(path) == digest
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"prompt,chosen,rejected\nhello,hi,go away\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,
        b"SQLite",  # shorter than the header
    ],
    ids=["text", "png", "truncated-header"],
)
def test_a_file_that_is_not_sqlite_is_refused_and_left_byte_identical(tmp_path, content):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(content)
    with pytest.raises(NotADatabaseError) as caught:
        Store.open(path)
    assert "left untouched" in str(caught.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]  # no -wal, -shm or backups


def test_a_damaged_sqlite_file_is_refused_and_left_byte_identical(tmp_path):
    path = tmp_path / "damaged.sqlite"
    content = b"SQLite format 3\x00" + b"\xff" * 4080
    path.write_bytes(content)
    with pytest.raises(NotADatabaseError):
        Store.open(path)
    assert path.read_bytes() == content


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(NotADatabaseError):
        Store.open(tmp_path)


# --------------------------------------------------------------------------------------------------
# Crash safety
# --------------------------------------------------------------------------------------------------

_CRASH_SCRIPT = """
import os, signal, sys
from desktop_dpo.core.store import Store
store = Store.open(sys.argv[1])
cid = store.record_pair(
    messages=[{"role": "user", "content": "Will this survive?"}],
    text_a="Yes.", text_b="No.", verdict="b", a_shown_left=True, note="picked just before the crash",
)
print(cid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_pick_survives_the_process_being_killed_right_after(tmp_path):
    path = tmp_path / "prefs.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, str(path)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    cid = int(done.stdout.strip())
    # Killed before it could close: the pick is still in the write-ahead log, not yet in the main file.
    assert (tmp_path / "prefs.sqlite-wal").stat().st_size > 0

    with Store.open(path) as s:
        row = s.get_comparison(cid)
        assert row is not None
        assert (row.verdict, row.a_shown_left, row.note) == ("b", True, "picked just before the crash")
        (view,) = s.comparison_views()
        assert (view.prompt_text, view.text_a, view.text_b) == ("Will this survive?", "Yes.", "No.")


def test_a_pick_remembers_how_its_pair_was_chosen_and_older_picks_came_as_they_are(tmp_path):
    path = tmp_path / "prefs.sqlite"
    with Store.open(path, migrations=MIGRATIONS[:4]) as old:  # before comparisons.chosen_by
        earlier = [record(old, f"Old question {n}?", verdict="a") for n in range(3)]
    with Store.open(path) as s:
        assert [s.get_comparison(i).chosen_by for i in earlier] == [None] * 3, "as they came, as they did"
        chosen = [record(s, f"New question {n}?", verdict="b", chosen_by="surest") for n in range(2)]
        assert s.get_comparison(chosen[0]).chosen_by == "surest"
        assert s.comparison_views(ids=chosen)[0].comparison.chosen_by == "surest"
        # The share of a run's pairs that were chosen (what Collect asks before choosing by that run).
        assert s.chosen_share(earlier) == 0.0 and s.chosen_share([]) == 0.0
        assert s.chosen_share(chosen) == 1.0
        assert s.chosen_share([*earlier, *chosen]) == pytest.approx(2 / 5)
        s.set_comparisons_deleted([chosen[0]])  # a run learnt from it all the same
        assert s.chosen_share([*chosen, earlier[0]]) == pytest.approx(2 / 3)
        many = [record(s, f"Question {n}?", verdict="a", chosen_by="surest") for n in range(600)]
        assert s.chosen_share([*many, *earlier]) == pytest.approx(600 / 603)  # over SQLite's 500 per query
