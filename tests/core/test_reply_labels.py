"""Thumbs on chat replies (migration 4): stored, toggled, kept across an upgrade, and learnt from by KTO runs
of the model that wrote them (``store/reply_labels.py``, ``labels.labels_from_replies``, ``runs.py``)."""

from __future__ import annotations

import pytest

from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.events import ReferenceReady, Started
from desktop_dpo.core.dpo.kto_batches import training_texts
from desktop_dpo.core.dpo.labels import count_labels, labels_from_replies, single_labels_text
from desktop_dpo.core.dpo.runs import create_run_for_model, model_reply_label_ids, plan_run
from desktop_dpo.core.errors import StoreError
from desktop_dpo.core.store import MIGRATIONS, SCHEMA_VERSION, Store
from tests.core.test_train import BASE, TOPICS, add_pairs, chosen_text, drive, of_type, rejected_text


def chat(store: Store, model_id: int | None, question: str, reply: str, system: str = "") -> int:
    """A conversation with one question and one reply of ``model_id``; returns the reply's message id."""
    conversation = store.create_conversation(model_id, question)
    if system:
        store.set_system_prompt(conversation, system)
    store.add_message(conversation, "user", question)
    return store.add_message(conversation, "assistant", reply, {"model_id": model_id, "model": "M"})


def add_model(store: Store, name: str = "m") -> int:
    return store.add_model(name=name, path=f"/models/{name}", kind="hf", fingerprint=f"fp-{name}")


def test_a_thumb_is_saved_toggled_and_taken_back(memory_store):
    model = add_model(memory_store)
    message = chat(memory_store, model, "Hi?", " Hello there!", system="Be kind.")
    conversation = memory_store.conversation_messages(1)[0].conversation_id

    label_id = memory_store.set_reply_label(message, True)
    assert memory_store.conversation_reply_labels(conversation) == {message: True}
    (row,) = memory_store.reply_labels()
    assert (row.id, row.reply, row.model_id, row.desirable) == (label_id, " Hello there!", model, True)
    # The conversation up to the reply, system prompt first, is its prompt (a prompt row: its split).
    assert row.messages == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}]
    assert memory_store.get_prompt(row.prompt_id).messages == row.messages

    assert memory_store.set_reply_label(message, False) == label_id  # the other thumb: the same row
    assert memory_store.conversation_reply_labels(conversation) == {message: False}
    memory_store.set_reply_label(message, None)  # taken back: kept for lineage, but no longer a label
    assert memory_store.conversation_reply_labels(conversation) == {}
    assert memory_store.reply_labels() == []
    assert [r.id for r in memory_store.reply_labels(include_deleted=True)] == [label_id]

    with pytest.raises(StoreError):
        memory_store.set_reply_label(message - 1, True)  # the question, not a reply


def test_labels_from_replies_keep_the_model_that_wrote_them(memory_store):
    mine, other = add_model(memory_store, "mine"), add_model(memory_store, "other")
    up = memory_store.set_reply_label(chat(memory_store, mine, "A?", " Good answer."), True)
    down = memory_store.set_reply_label(chat(memory_store, mine, "B?", " Bad answer."), False)
    memory_store.set_reply_label(chat(memory_store, other, "C?", " Someone else's."), True)

    labels = labels_from_replies(memory_store.reply_labels(), mine)
    assert [(x.reply_label_id, x.completion, x.desirable, x.origin) for x in labels] == [
        (up, " Good answer.", True, "chat"),
        (down, " Bad answer.", False, "chat"),
    ]
    assert model_reply_label_ids(memory_store, mine, "kto") == [up, down]
    assert model_reply_label_ids(memory_store, mine, "sigmoid") == []  # pairs only for the other losses
    counts = count_labels(labels)
    assert (counts.chat_replies, counts.added) == (2, 2)
    assert single_labels_text(counts) == (
        "Single labels add 2 examples: 2 chat replies you rated (KTO learns from each answer on its own)."
    )


def test_a_kto_run_fixes_its_rated_replies_and_trains_on_them(memory_store):
    model_id = add_model(memory_store)
    model = memory_store.get_model(model_id)
    add_pairs(memory_store, TOPICS[:4])
    rated = [memory_store.set_reply_label(chat(memory_store, model_id, "Q?", " A warm reply."), True)]
    kto = TrainConfig(loss_type="kto")

    plan = plan_run(memory_store, model_id, kto)
    assert plan.reply_label_ids == tuple(rated)
    assert "1 chat reply you rated" in plan.single_labels
    run_id = create_run_for_model(memory_store, model, kto)
    run = memory_store.get_run(run_id)
    assert run.reply_label_ids == tuple(rated)
    memory_store.set_reply_label(chat(memory_store, model_id, "Later?", " Later."), False)  # after: not in it
    texts = training_texts(kto, memory_store.comparison_views(ids=run.comparison_ids), memory_store, run)
    assert [x.completion for x in texts if x.origin == "chat"] == [" A warm reply."]
    assert len(texts) == 4 * 2 + 1
    dpo = create_run_for_model(memory_store, model, TrainConfig())  # pairs only: no replies
    assert memory_store.get_run(dpo).reply_label_ids == ()


def test_a_kto_run_on_the_tiny_model_includes_the_rated_replies(store, tiny_model_dir):
    model_id = store.add_model(
        name="tiny", path=str(tiny_model_dir), kind="hf", fingerprint=f"fp-{tiny_model_dir.name}"
    )
    add_pairs(store, TOPICS[:6])
    for topic in TOPICS[6:10]:
        store.set_reply_label(chat(store, model_id, f"Chat about {topic}?", chosen_text(topic)), True)
        store.set_reply_label(chat(store, model_id, f"Talk {topic}?", rejected_text(topic)), False)
    config = BASE.replace(loss_type="kto", epochs=1, heldout_fraction=0.2)
    run_id = create_run_for_model(store, store.get_model(model_id), config)

    events = drive(store, run_id)

    started = of_type(events, Started)[0]
    assert started.train_pairs + started.heldout_pairs == 6 * 2 + 8  # 8 rated replies besides the picks
    assert of_type(events, ReferenceReady)[0].computed == 6 * 2 + 8
    assert store.get_run(run_id).status == "completed"


def test_a_schema_3_database_upgrades_with_every_row(tmp_path):
    path = tmp_path / "prefs.sqlite"
    with Store.open(path, migrations=MIGRATIONS[:3]) as old:
        model_id = add_model(old)
        ids = add_pairs(old, TOPICS[:3])
        old.update_comparison(ids[0], note="kept")
        old.set_comparisons_deleted([ids[1]])
        message = chat(old, model_id, "Hi?", " Hello.")
        old.create_run(name="r", base_model_id=model_id, config={"lr": 1e-3}, comparison_ids=ids)
        before = old.table_counts()
        views_before = old.comparison_views(include_deleted=True)
        runs_before = old.list_runs()
    with Store.open(path) as upgraded:
        assert upgraded.schema_version == SCHEMA_VERSION >= 4
        assert upgraded.last_backup is not None and ".v3." in upgraded.last_backup.name
        after = upgraded.table_counts()
        assert {name: after[name] for name in before} == before, "every row of schema 3 is still there"
        assert upgraded.comparison_views(include_deleted=True) == views_before
        assert all(v.comparison.repeat_of is None for v in views_before)
        assert upgraded.list_runs() == runs_before and runs_before[0].reply_label_ids == ()
        assert upgraded.set_reply_label(message, True) == 1  # the new table works on the old rows
        assert upgraded.reply_labels()[0].model_id == model_id
