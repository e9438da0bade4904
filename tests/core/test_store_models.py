"""Forgetting a model: what was made with it (answers, comparisons, runs, chats, exports) stays."""

from __future__ import annotations


def _add_model(store, name: str = "tiny", path: str = "/models/tiny.gguf") -> int:
    return store.add_model(
        name=name, path=path, kind="gguf", fingerprint="f" * 64, info={"architecture": "llama"}
    )


def test_removing_a_model_keeps_everything_made_with_it(store):
    model_id = _add_model(store)
    other_id = _add_model(store, "other", "/models/other.gguf")
    comparison_id = store.record_pair(
        messages=[{"role": "user", "content": "Tell me about tea."}],
        text_a="Tea is a drink.",
        text_b="Tea grows on bushes.",
        verdict="a",
        model_a_id=model_id,
        model_b_id=other_id,
    )
    run_id = store.create_run(name="run", base_model_id=model_id, config={}, comparison_ids=[comparison_id])
    conversation_id = store.create_conversation(model_id, "About tea")
    store.add_message(conversation_id, "user", "Hello")
    store.add_export(
        path="/exports/x.gguf", quantization="Q8_0", sha256="0" * 64, size_bytes=1, model_id=model_id
    )
    store.set_default_model(model_id)

    store.remove_model(model_id)

    assert [m.id for m in store.list_models()] == [other_id]
    (view,) = store.comparison_views()
    assert (view.text_a, view.text_b) == ("Tea is a drink.", "Tea grows on bushes.")
    assert (view.model_a_id, view.model_b_id) == (None, other_id)
    assert view.comparison.verdict == "a"
    assert store.count_usable_pairs() == 1
    assert store.get_run(run_id).base_model_id is None
    (conversation,) = store.list_conversations()
    assert conversation.model_id is None
    assert [m.content for m in store.conversation_messages(conversation_id)] == ["Hello"]
    assert store.list_exports()[0].model_id is None
    assert store.default_model().id == other_id


def test_removing_a_model_forgets_its_parent_link(store):
    gguf_id = _add_model(store)
    copy_id = store.add_model(
        name="tiny (trainable)",
        path="/models/tiny-trainable",
        kind="hf",
        fingerprint="c" * 64,
        parent_model_id=gguf_id,
    )
    store.remove_model(gguf_id)
    assert store.get_model(copy_id).parent_model_id is None
