"""The chat part of the store: conversations listed newest first, renamed, re-pointed, deleted; system
prompts; message meta."""

from __future__ import annotations

from desktop_dpo.core.store import Store


def _turns(store: Store, conversation_id: int) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in store.conversation_messages(conversation_id)]


def test_conversations_are_listed_newest_first_even_within_one_clock_tick(memory_store):
    s = memory_store
    first = s.create_conversation(None, "First")
    second = s.create_conversation(None, "Second")
    # Created in the same instant (a fast machine): the later one is still first.
    assert [c.id for c in s.list_conversations()] == [second, first]
    s.add_message(first, "user", "Back to the first one.")
    assert [c.id for c in s.list_conversations()] == [first, second]


def test_rename_keeps_the_place_in_the_list(memory_store):
    s = memory_store
    first = s.create_conversation(None, "First")
    second = s.create_conversation(None, "Second")
    s.rename_conversation(first, "Tea questions")
    assert s.get_conversation(first).title == "Tea questions"
    assert [c.id for c in s.list_conversations()] == [second, first]
    assert s.get_conversation(12345) is None


def test_conversation_model_can_change_and_survives_the_model_going(memory_store):
    s = memory_store
    model = s.add_model(name="m", path="/models/m.gguf", kind="gguf", fingerprint="f")
    conversation = s.create_conversation(None, "Chat")
    s.set_conversation_model(conversation, model)
    assert s.get_conversation(conversation).model_id == model
    s.add_message(conversation, "user", "Hi")
    s.remove_model(model)
    assert s.get_conversation(conversation).model_id is None
    assert _turns(s, conversation) == [("user", "Hi")], "removing a model keeps its conversations"


def test_delete_removes_the_conversation_and_only_its_messages(memory_store):
    s = memory_store
    kept = s.create_conversation(None, "Kept")
    gone = s.create_conversation(None, "Gone")
    s.add_message(kept, "user", "stay")
    s.add_message(gone, "user", "go")
    s.add_message(gone, "assistant", "went")
    s.delete_conversation(gone)
    assert [c.id for c in s.list_conversations()] == [kept]
    assert s.conversation_messages(gone) == []
    assert _turns(s, kept) == [("user", "stay")]
    assert s.table_counts()["messages"] == 1


def test_system_prompt_is_listed_first_and_there_is_one(memory_store):
    s = memory_store
    conversation = s.create_conversation(None)
    s.add_message(conversation, "user", "Hi")
    s.add_message(conversation, "assistant", "Hello")
    s.set_system_prompt(conversation, "Be brief.")  # added after the first exchange
    assert _turns(s, conversation) == [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello")]
    s.set_system_prompt(conversation, "Answer in French.")
    assert _turns(s, conversation)[0] == ("system", "Answer in French.")
    assert len(s.conversation_messages(conversation)) == 3
    s.set_system_prompt(conversation, "")
    assert _turns(s, conversation) == [("user", "Hi"), ("assistant", "Hello")]


def test_message_meta_is_replaced(memory_store):
    s = memory_store
    conversation = s.create_conversation(None)
    answer = s.add_message(conversation, "assistant", "Blue.", meta={"seed": 1})
    s.update_message_meta(answer, {"seed": 1, "stopped": True})
    (message,) = s.conversation_messages(conversation)
    assert message.meta == {"seed": 1, "stopped": True}


def test_regenerate_replaces_the_last_answer_in_one_transaction(memory_store):
    s = memory_store
    conversation = s.create_conversation(None)
    s.add_message(conversation, "user", "Name a colour.")
    old = s.add_message(conversation, "assistant", "Blue.")
    with s.atomic():
        s.delete_message(old)
        s.add_message(conversation, "assistant", "Green.")
    assert _turns(s, conversation) == [("user", "Name a colour."), ("assistant", "Green.")]


def test_conversations_persist_across_connections(tmp_path):
    path = tmp_path / "chat.sqlite"
    with Store.open(path) as s:
        conversation = s.create_conversation(None, "Saved")
        s.add_message(conversation, "user", "Remember me")
    with Store.open(path) as s:
        (row,) = s.list_conversations()
        assert row.title == "Saved"
        assert _turns(s, row.id) == [("user", "Remember me")]
