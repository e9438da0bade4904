"""Chat replies on the tiny GGUF in llama.cpp, and the rules for titles and history that fits the context."""

from __future__ import annotations

import shutil

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.chat import (
    UNTITLED,
    HistoryTrimmed,
    chat_reply,
    conversation_title,
    reply_budget,
    reply_meta,
    trim_history,
)
from desktop_dpo.core.errors import DesktopDpoError, ModelError
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent
from desktop_dpo.core.llm.llama_child import FAULT_ENV
from desktop_dpo.core.llm.llamacpp import LlamaCppEngine
from desktop_dpo.core.models import register_model
from desktop_dpo.core.sampling import GgufCopyMade
from tests.plugins import tiny_model as _tiny_model_plugin

tiny_model_dir = _tiny_model_plugin.tiny_model_dir
tiny_gguf = _tiny_model_plugin.tiny_gguf

SETTINGS = SamplingSettings(max_tokens=8)


@pytest.fixture
def pool():
    p = EnginePool()
    yield p
    p.close_all()


def by_length(messages: list[dict[str, str]]) -> int:
    """A stand-in token count: one token per character of content."""
    return sum(len(m["content"]) for m in messages)


# ------------------------------------------------------------------------------------------- titles


def test_title_is_the_first_line_with_words():
    assert conversation_title("\n  Tell me   about tea \nand more") == "Tell me about tea"
    assert conversation_title("   \n\t") == UNTITLED


def test_long_title_is_cut_at_a_word():
    title = conversation_title("Explain how a rainbow forms after the rain on a summer afternoon", limit=30)
    assert title == "Explain how a rainbow forms…"
    assert len(title) <= 30
    # One long word has no space to cut at: it is cut where the limit is.
    assert conversation_title("x" * 40, limit=10) == "x" * 9 + "…"


# ------------------------------------------------------------------------------------------- history


SYSTEM = {"role": "system", "content": "S"}  # 1
HISTORY = [
    SYSTEM,
    {"role": "user", "content": "aaaa"},  # 4
    {"role": "assistant", "content": "bbbb"},  # 4
    {"role": "user", "content": "cc"},  # 2
    {"role": "assistant", "content": "dd"},  # 2
    {"role": "user", "content": "e"},  # 1   -> 14 in all
]


def test_history_that_fits_is_kept_whole():
    assert trim_history(HISTORY, by_length, 14) == HISTORY


def test_oldest_exchange_goes_first_and_the_system_prompt_stays():
    # 13 does not fit 14; dropping only "aaaa" would start the history with an answer, so the whole first
    # exchange goes: S + cc + dd + e = 6.
    assert trim_history(HISTORY, by_length, 13) == [SYSTEM, *HISTORY[3:]]
    assert trim_history(HISTORY, by_length, 6) == [SYSTEM, *HISTORY[3:]]
    assert trim_history(HISTORY, by_length, 5) == [SYSTEM, HISTORY[5]]  # S + e = 2


def test_the_message_to_answer_is_kept_even_when_it_alone_is_too_long():
    assert trim_history(HISTORY, by_length, 1) == [SYSTEM, HISTORY[5]]
    assert trim_history([{"role": "user", "content": "long"}], by_length, 1) == [
        {"role": "user", "content": "long"}
    ]


def test_reply_budget_keeps_room_for_the_reply_but_at_most_half_the_context():
    assert reply_budget(512, 100) == 412
    assert reply_budget(512, 4000) == 256


# ------------------------------------------------------------------------------------------- replies


def test_reply_streams_and_returns_what_it_streamed(store, app_home, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Tell me about tea."},
    ]
    result, events = run_job(chat_reply(pool, model, app_home, messages, SETTINGS, seed=7))
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert tokens and all(e.seq == 0 for e in tokens)
    assert "".join(e.text for e in tokens) == result.text
    (finished,) = [e for e in events if isinstance(e, ResponseFinished)]
    assert finished.result == result
    assert result.seed == 7 and 1 <= result.completion_tokens <= 8
    assert not any(isinstance(e, HistoryTrimmed) for e in events)

    # The same conversation, seed and settings give the same reply (what reply_meta keeps is enough).
    again, _ = run_job(chat_reply(pool, model, app_home, messages, SETTINGS, seed=7))
    assert again.text == result.text
    meta = reply_meta(result, model)
    assert meta["seed"] == 7 and meta["model_id"] == model.id and meta["settings"]["max_tokens"] == 8
    assert meta["stopped"] is False


def test_a_conversation_longer_than_the_context_loses_its_oldest_turns(store, app_home, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    filler = "The quick brown fox jumps over the lazy dog. " * 6
    messages = [{"role": "system", "content": "Be brief."}]
    for turn in range(12):
        messages += [
            {"role": "user", "content": f"Question {turn}: {filler}"},
            {"role": "assistant", "content": f"Answer {turn}: {filler}"},
        ]
    messages.append({"role": "user", "content": "And now?"})
    settings = SamplingSettings(max_tokens=16)

    # Sent as is, the conversation does not fit the tiny model's context at all.
    engine = LlamaCppEngine(tiny_gguf, n_ctx=4096, safe_mode=True).load()
    try:
        with pytest.raises(ModelError, match="fills the model's context"):
            run_job(engine.generate(messages, settings, seed=1))
        n_ctx = engine.n_ctx
    finally:
        engine.close()

    result, events = run_job(chat_reply(pool, model, app_home, messages, settings, seed=1))
    (trimmed,) = [e for e in events if isinstance(e, HistoryTrimmed)]
    assert trimmed.n_ctx == n_ctx
    assert trimmed.prompt_tokens <= reply_budget(n_ctx, 16)
    assert trimmed.dropped > 0 and trimmed.dropped % 2 == 0, "whole exchanges are dropped"
    assert trimmed.dropped + trimmed.kept == len(messages)
    assert result.prompt_tokens == trimmed.prompt_tokens
    assert result.completion_tokens >= 1


def test_stopped_reply_keeps_its_text_and_says_so(store, app_home, tiny_gguf, pool, tmp_path, monkeypatch):
    # The model's child pauses after its first text until the stop reaches it (see test_sampling).
    (tmp_path / "hold").write_text("held")
    monkeypatch.setenv(FAULT_ENV, f"hold:{tmp_path / 'hold'}")
    model = register_model(store, tiny_gguf, name="tiny")
    cancel = CancelToken()
    job = chat_reply(
        pool, model, app_home, [{"role": "user", "content": "Tell me a story."}],
        SamplingSettings(max_tokens=400), seed=3, cancel=cancel,
    )  # fmt: skip
    streamed = ""
    result: GenerationResult | None = None
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            result = stop.value
            break
        if isinstance(event, TokenEvent):
            streamed += event.text
            cancel.cancel()  # after the first text: the engine stops at the next token
    assert result is not None and result.finish_reason == "cancelled"
    assert result.text == streamed and result.completion_tokens >= 1
    assert reply_meta(result, model)["stopped"] is True


def test_nothing_to_answer_is_refused(store, app_home, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    with pytest.raises(DesktopDpoError, match="nothing to answer"):
        run_job(chat_reply(pool, model, app_home, [{"role": "assistant", "content": "Hi"}], SETTINGS))
    with pytest.raises(DesktopDpoError, match="nothing to answer"):
        run_job(chat_reply(pool, model, app_home, [], SETTINGS))


def test_a_moved_model_file_is_explained(store, app_home, tiny_gguf, pool, tmp_path):
    copy = tmp_path / "moved.gguf"
    shutil.copyfile(tiny_gguf, copy)
    model = register_model(store, copy, name="moved")
    copy.unlink()
    with pytest.raises(ModelError, match="moved or deleted"):
        run_job(chat_reply(pool, model, app_home, [{"role": "user", "content": "Hi"}], SETTINGS))


def test_a_hugging_face_model_is_converted_once_for_chat(store, app_home, tiny_model_dir, pool):
    model = register_model(store, tiny_model_dir, name="tiny hf")
    messages = [{"role": "user", "content": "Hello"}]
    _result, events = run_job(chat_reply(pool, model, app_home, messages, SETTINGS, seed=2))
    (made,) = [e for e in events if isinstance(e, GgufCopyMade)]
    assert made.model_id == model.id and made.path.endswith(".gguf")
    # The driver records the copy; the next reply uses it without converting again.
    store.update_model_info(model.id, **made.info)
    _result, events = run_job(chat_reply(pool, store.get_model(model.id), app_home, messages, SETTINGS))
    assert not any(isinstance(e, GgufCopyMade) for e in events)
