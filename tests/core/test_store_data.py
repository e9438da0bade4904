"""The store's queries for the Data view: table summaries with previews, filters and search."""

from __future__ import annotations

import pytest

from desktop_dpo.core.store import Store


def record(store: Store, prompt: str, a: str, b: str, verdict: str = "a", **kw) -> int:
    messages = kw.pop("messages", None) or [{"role": "user", "content": prompt}]
    return store.record_pair(messages=messages, text_a=a, text_b=b, verdict=verdict, **kw)


def by_id(summaries):
    return {s.id: s for s in summaries}


def test_summaries_say_what_was_chosen_and_rejected_as_training_would(memory_store):
    s = memory_store
    a_better = record(s, "Name a colour.", "Blue.", "Grey.", "a", a_shown_left=False)
    b_better = record(s, "Name a fruit.", "Stone.", "Apple.", "b", a_shown_left=True)
    tie = record(s, "Name a bird.", "Crow.", "Raven.", "tie")
    # The rewrite is chosen over the response it rewrites, whatever the verdict named.
    edited = record(s, "Name a tree.", "Oak.", "Rock.", "a", edited_text="An oak.", edited_side="b")
    imported = record(s, "Name a fish.", "Trout.", "Boot.", "a", source="import")

    rows = by_id(s.comparison_summaries())
    assert list(rows) == [a_better, b_better, tie, edited, imported]  # oldest first
    assert (rows[a_better].chosen, rows[a_better].rejected) == ("Blue.", "Grey.")
    assert (rows[b_better].chosen, rows[b_better].rejected) == ("Apple.", "Stone.")
    assert (rows[tie].chosen, rows[tie].rejected) == ("", "")
    assert (rows[edited].chosen, rows[edited].rejected) == ("An oak.", "Rock.")
    assert rows[edited].edited and rows[edited].edited_side == "b" and not rows[a_better].edited
    assert rows[a_better].a_shown_left is False and rows[b_better].a_shown_left is True
    assert rows[imported].a_shown_left is None and rows[imported].source == "import"
    assert rows[a_better].prompt == "Name a colour." and rows[a_better].verdict == "a"
    assert not rows[a_better].deleted and not rows[a_better].has_note


def test_the_prompt_is_the_last_user_message_and_previews_are_cut(memory_store):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "And now a long question? " * 40},
    ]
    long_answer = "word " * 500
    cid = record(memory_store, "", long_answer, "short", messages=conversation)
    (row,) = memory_store.comparison_summaries(preview_chars=50)
    assert row.id == cid
    assert row.turns == 4
    assert row.user_turns == 2  # the second turn of a conversation (the system prompt is not a turn)
    assert row.prompt == ("And now a long question? " * 40)[:50]
    assert row.chosen == long_answer[:50] and row.rejected == "short"
    with pytest.raises(ValueError):
        memory_store.comparison_summaries(preview_chars=0)


def test_summaries_filter_by_verdict_edit_usable_and_deleted(memory_store):
    s = memory_store
    a = record(s, "P1", "x1", "y1", "a")
    b = record(s, "P2", "x2", "y2", "b")
    tie = record(s, "P3", "x3", "y3", "tie")
    tie_edited = record(s, "P4", "x4", "y4", "tie", edited_text="z4", edited_side="a")
    skip = record(s, "P5", "x5", "y5", "skip")
    s.set_comparisons_deleted([b])

    def ids(**kw):
        return [row.id for row in s.comparison_summaries(**kw)]

    assert ids() == [a, tie, tie_edited, skip]
    assert ids(include_deleted=True) == [a, b, tie, tie_edited, skip]
    assert by_id(s.comparison_summaries(include_deleted=True))[b].deleted
    assert ids(verdicts=["tie"]) == [tie, tie_edited]
    assert ids(verdicts=["tie", "skip"], edited=False) == [tie, skip]
    assert ids(edited=True) == [tie_edited]
    # Usable = what count_usable_pairs counts: verdict A or B, or an edit; never a deleted one.
    assert ids(usable=True) == [a, tie_edited]
    assert len(ids(usable=True)) == s.count_usable_pairs()
    assert ids(usable=False) == [tie, skip]
    assert ids(ids=[skip, b, a]) == [a, skip]
    assert ids(ids=[]) == [] and ids(verdicts=[]) == []


def test_search_looks_through_prompt_responses_edit_and_note_literally(memory_store):
    s = memory_store
    in_prompt = record(s, "What is 100% cotton?", "Fabric.", "A plant.")
    in_a = record(s, "Q2", "Use snake_case names.", "Use camelCase.")
    in_b = record(s, "Q3", "Nothing.", 'He said "tea" at noon.')
    in_edit = record(s, "Q4", "One.", "Two.", edited_text="A careful rewrite.", edited_side="a")
    in_note = record(s, "Q5", "One.", "Two.", note="Both were rude.")
    system_only = record(
        s,
        "",
        "Fine.",
        "Also fine.",
        messages=[{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Q6"}],
    )

    def found(text):
        return [row.id for row in s.comparison_summaries(search=text)]

    assert found("100%") == [in_prompt]
    assert found("100") == [in_prompt]
    assert found("%") == [in_prompt]  # a wildcard taken literally, not "everything"
    assert found("snake_case") == [in_a]
    assert found("e_c") == [in_a]  # "_" is not "any character": camelCase does not match
    assert found('"tea"') == [in_b]  # a quote mark as written, not as stored in JSON
    assert found("CAREFUL") == [in_edit]  # case-insensitive (ASCII)
    assert found("rude") == [in_note]
    assert found("pirate") == [system_only]  # earlier messages of the conversation count
    # The JSON around the messages is not searched: "role" and "user" are nobody's words here.
    assert found("role") == [] and found("user") == []
    assert found("nowhere to be seen") == []


def test_the_change_stamp_moves_on_any_write_by_either_connection_and_not_on_reads(tmp_path):
    path = tmp_path / "stamp.sqlite"
    with Store.open(path) as gui, Store.open(path) as worker:
        first = record(gui, "Q1", "x", "y")
        stamp = gui.change_stamp()
        gui.comparison_summaries()
        gui.count_usable_pairs()
        assert gui.change_stamp() == stamp  # reading changes nothing

        gui.set_comparisons_deleted([first])  # this connection writes
        assert gui.change_stamp() != stamp
        stamp = gui.change_stamp()

        record(worker, "Q2", "x", "y")  # another connection commits (an import on a worker thread)
        assert gui.change_stamp() != stamp


def test_stored_pairs_are_the_pairs_training_takes_from_live_comparisons(memory_store):
    """What an import compares against: picks either way, edits, never ties or deleted rows."""
    from desktop_dpo.core.dpo.data import pairs_from_comparisons
    from desktop_dpo.core.store import messages_key, pair_key

    s = memory_store
    record(s, "Name a colour.", "Blue.", "Grey.", "a")
    record(s, "Name a fruit.", "Stone.", "Apple.", "b")
    record(s, "Name a bird.", "Crow.", "Raven.", "tie")
    record(s, "Name a tree.", "Oak.", "Rock.", "a", edited_text="An oak.", edited_side="b")
    record(s, "Name a stone.", "Flint.", "Wood.", "tie", edited_text="Granite.", edited_side="a")
    s.set_comparisons_deleted([record(s, "Name a fish.", "Trout.", "Boot.", "a")])
    prompts = ["colour", "fruit", "bird", "tree", "stone", "fish", "cloud"]
    keys = [messages_key([{"role": "user", "content": f"Name a {p}."}]) for p in prompts]

    stored = s.stored_pair_keys(keys)
    training = {
        pair_key(p.messages, p.chosen, p.rejected) for p in pairs_from_comparisons(s.comparison_views())
    }
    assert stored == training
    assert {(chosen, rejected) for _, chosen, rejected in stored} == {
        ("Blue.", "Grey."),
        ("Apple.", "Stone."),
        ("Oak.", "Rock."),  # the verdict pair of the edited comparison
        ("An oak.", "Rock."),  # the rewrite over the response it rewrote (the verdict named the other)
        ("Granite.", "Flint."),
        ("Granite.", "Wood."),
    }
    assert s.stored_pair_keys(keys[:1]) == {(keys[0], "Blue.", "Grey.")}
    assert s.stored_pair_keys([]) == set()
