"""Sampling pairs for the Collect view: the GGUF a model runs as, the pair job, and prompt files."""

from __future__ import annotations

import json
import shutil

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError, ImportFormatError, JobCancelled, ModelError
from desktop_dpo.core.jobs import CancelToken, Log
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.llm.generation import ResponseFinished, TokenEvent
from desktop_dpo.core.llm.llama_child import FAULT_ENV
from desktop_dpo.core.llm.llamacpp import LlamaCppEngine
from desktop_dpo.core.models import register_model
from desktop_dpo.core.prompt_files import read_prompt_file
from desktop_dpo.core.sampling import (
    GGUF_COPY_INFO_KEY,
    GgufCopyMade,
    engine_key,
    gguf_copy_path,
    gguf_for_model,
    sample_pair,
)
from tests.plugins import tiny_model as _tiny_model_plugin

# The session's tiny model (an HF folder) and its GGUF, from tests/plugins/tiny_model.py.
tiny_model_dir = _tiny_model_plugin.tiny_model_dir
tiny_gguf = _tiny_model_plugin.tiny_gguf

MESSAGES = [{"role": "user", "content": "Tell me about tea."}]
SETTINGS = SamplingSettings(max_tokens=6)


def drive(job, on_event=None):
    """Run a job to the end; return (events, result)."""
    events = []
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return events, stop.value
        events.append(event)
        if on_event is not None:
            on_event(event)


@pytest.fixture
def pool():
    p = EnginePool()
    yield p
    p.close_all()


# ------------------------------------------------------------------------------------------- GGUF of a model


def test_a_gguf_model_runs_as_its_own_file(store, app_home, tiny_gguf):
    model = register_model(store, tiny_gguf)
    events, path = drive(gguf_for_model(model, app_home))
    assert path == tiny_gguf
    assert events == []


def test_a_moved_gguf_is_explained(store, app_home, tiny_gguf, tmp_path):
    copy = tmp_path / "moved.gguf"
    shutil.copyfile(tiny_gguf, copy)
    model = register_model(store, copy)
    copy.unlink()
    with pytest.raises(ModelError, match="moved or deleted") as caught:
        drive(gguf_for_model(model, app_home))
    assert str(copy) in str(caught.value)


def test_hf_model_is_converted_once_then_reused(store, app_home, tiny_model_dir, monkeypatch):
    from desktop_dpo.core.export import gguf as gguf_export

    calls = []
    real = gguf_export.convert_hf_to_gguf

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(gguf_export, "convert_hf_to_gguf", counting)
    model = register_model(store, tiny_model_dir)

    events, first = drive(gguf_for_model(model, app_home))
    assert len(calls) == 1
    assert first == gguf_copy_path(model, app_home)
    assert first.is_file() and first.parent.parent == app_home.models_dir
    made = [e for e in events if isinstance(e, GgufCopyMade)]
    assert made == [GgufCopyMade(model_id=model.id, path=str(first), outtype="q8_0")]
    # The driver records the copy on the model.
    store.update_model_info(model.id, **made[0].info)
    assert store.get_model(model.id).info[GGUF_COPY_INFO_KEY] == str(first)
    # No half-written files are left next to the copy.
    assert [p.name for p in first.parent.iterdir()] == [first.name]

    events, second = drive(gguf_for_model(model, app_home))
    assert second == first
    assert len(calls) == 1, "the cached copy must be reused, not converted again"
    assert not any(isinstance(e, GgufCopyMade) for e in events)

    # The copy runs in llama.cpp.
    with LlamaCppEngine(second, n_ctx=64, safe_mode=True) as engine:
        _, result = drive(engine.generate(MESSAGES, SETTINGS, seed=1))
    assert result.completion_tokens >= 1


def test_stopping_a_conversion_leaves_nothing_behind(store, app_home, tiny_model_dir):
    model = register_model(store, tiny_model_dir)
    token = CancelToken()
    job = gguf_for_model(model, app_home, token)
    first = next(job)
    assert isinstance(first, Log)
    token.cancel()
    with pytest.raises(JobCancelled):
        drive(job)
    target = gguf_copy_path(model, app_home)
    assert not target.exists()
    assert not any(target.parent.iterdir()) if target.parent.exists() else True


# ------------------------------------------------------------------------------------------- the pair job


def test_pair_from_one_model_streams_both_answers_from_one_engine(store, app_home, tiny_gguf, pool):
    model = register_model(store, tiny_gguf)
    events, (result_a, result_b) = drive(
        sample_pair(pool, model, None, app_home, MESSAGES, SETTINGS, seeds=(11, 22), n_ctx=64)
    )
    streamed = ["", ""]
    for event in events:
        if isinstance(event, TokenEvent):
            streamed[event.seq] += event.text
    assert streamed == [result_a.text, result_b.text]
    assert (result_a.seed, result_b.seed) == (11, 22)
    assert result_a.settings["max_tokens"] == 6 and 1 <= result_a.completion_tokens <= 6
    finished = [e.seq for e in events if isinstance(e, ResponseFinished)]
    assert sorted(finished) == [0, 1]
    assert pool.loaded() == [engine_key(tiny_gguf, 64)]
    # Each answer is what a single generation with its seed gives: a pick can be reproduced from its seed.
    with pool.acquire(engine_key(tiny_gguf, 64), lambda: None) as engine:
        _, alone = drive(engine.generate(MESSAGES, SETTINGS, seed=22))
    assert alone.text == result_b.text


def test_pair_draws_two_different_seeds(store, app_home, tiny_gguf, pool):
    model = register_model(store, tiny_gguf)
    _, (result_a, result_b) = drive(sample_pair(pool, model, None, app_home, MESSAGES, SETTINGS, n_ctx=64))
    assert result_a.seed != result_b.seed


def test_pair_from_two_models_streams_a_then_b(store, app_home, tiny_gguf, tiny_model_dir, pool):
    model_a = register_model(store, tiny_gguf)
    model_b = register_model(store, tiny_model_dir)  # an HF folder: converted to its own GGUF first
    events, (result_a, result_b) = drive(
        sample_pair(pool, model_a, model_b, app_home, MESSAGES, SETTINGS, seeds=(5, 6), n_ctx=64)
    )
    seqs = [e.seq for e in events if isinstance(e, (TokenEvent, ResponseFinished))]
    assert seqs == sorted(seqs) and set(seqs) == {0, 1}, "A streams first, then B"
    assert any(isinstance(e, GgufCopyMade) and e.model_id == model_b.id for e in events)
    assert (result_a.seed, result_b.seed) == (5, 6)
    assert sorted(pool.loaded()) == sorted(
        [engine_key(tiny_gguf, 64), engine_key(gguf_copy_path(model_b, app_home), 64)]
    )


def test_stopping_a_pair_keeps_the_text_so_far(store, app_home, tiny_gguf, pool, tmp_path, monkeypatch):
    # The model's child pauses after its first text until the stop reaches it: on a busy machine the tiny
    # model would otherwise write all 50 tokens before the stop arrives.
    (tmp_path / "hold").write_text("held")
    monkeypatch.setenv(FAULT_ENV, f"hold:{tmp_path / 'hold'}")
    model = register_model(store, tiny_gguf)
    token = CancelToken()

    def stop_at_first_token(event):
        if isinstance(event, TokenEvent):
            token.cancel()

    _, (result_a, result_b) = drive(
        sample_pair(
            pool, model, None, app_home, MESSAGES, SamplingSettings(max_tokens=50), (1, 2), token, n_ctx=64
        ),
        stop_at_first_token,
    )
    assert {result_a.finish_reason, result_b.finish_reason} == {"cancelled"}
    assert result_a.completion_tokens < 50
    (tmp_path / "hold").unlink()  # the child writes on without pausing again
    # The engine is free again at once.
    _, (again, _) = drive(sample_pair(pool, model, None, app_home, MESSAGES, SETTINGS, (1, 2), n_ctx=64))
    assert again.finish_reason in ("stop", "length")


def test_stopping_the_first_of_two_models_does_not_start_the_second(
    store, app_home, tiny_gguf, pool, tmp_path, monkeypatch
):
    # The model's child pauses after its first text until the stop reaches it, so the stop lands mid-answer
    # however fast the tiny model writes.
    (tmp_path / "hold").write_text("held")
    monkeypatch.setenv(FAULT_ENV, f"hold:{tmp_path / 'hold'}")
    other = tmp_path / "other.gguf"
    shutil.copyfile(tiny_gguf, other)
    model_a = register_model(store, tiny_gguf)
    model_b = register_model(store, other, name="other")
    token = CancelToken()

    def stop_during_a(event):
        if isinstance(event, TokenEvent) and event.seq == 0:
            token.cancel()

    events, (result_a, result_b) = drive(
        sample_pair(
            pool,
            model_a,
            model_b,
            app_home,
            MESSAGES,
            SamplingSettings(max_tokens=50),
            (1, 2),
            token,
            n_ctx=64,
        ),
        stop_during_a,
    )
    assert result_a.finish_reason == "cancelled"
    assert (result_b.finish_reason, result_b.text, result_b.seed) == ("cancelled", "", 2)
    assert not any(isinstance(e, TokenEvent) and e.seq == 1 for e in events)
    assert pool.loaded() == [engine_key(tiny_gguf, 64)], "B's model was never loaded"


def test_equal_seeds_are_refused(store, app_home, tiny_gguf, pool):
    model = register_model(store, tiny_gguf)
    with pytest.raises(DesktopDpoError, match="two different seeds"):
        drive(sample_pair(pool, model, None, app_home, MESSAGES, SETTINGS, (3, 3)))


# ------------------------------------------------------------------------------------------- prompt files


def test_text_file_with_one_prompt_per_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("What is tea?\r\nHow is coffee made?\n  Why is the sky blue?  \n\n", encoding="utf-8")
    result = read_prompt_file(path)
    assert result.layout == "lines"
    assert result.prompts == [
        [{"role": "user", "content": "What is tea?"}],
        [{"role": "user", "content": "How is coffee made?"}],
        [{"role": "user", "content": "Why is the sky blue?"}],
    ]


def test_text_file_with_prompts_in_blocks(tmp_path):
    # Once a blank line separates text, blank lines separate prompts and a prompt may span lines.
    path = tmp_path / "prompts.txt"
    path.write_text("Write a haiku\nabout rain.\n \n\nList three fruits.\n", encoding="utf-8")
    result = read_prompt_file(path)
    assert result.layout == "blocks"
    assert [p[0]["content"] for p in result.prompts] == ["Write a haiku\nabout rain.", "List three fruits."]


def test_jsonl_prompts_and_conversations(tmp_path):
    path = tmp_path / "prompts.jsonl"
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    lines = [
        {"prompt": "What is tea?"},
        {"prompt": "Translate 'cat'.", "system": "You translate into French."},
        {"messages": conversation},
        {"prompt": [{"role": "user", "content": "TRL prompt-only"}]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    result = read_prompt_file(path)
    assert result.layout == "jsonl"
    assert result.prompts == [
        [{"role": "user", "content": "What is tea?"}],
        [
            {"role": "system", "content": "You translate into French."},
            {"role": "user", "content": "Translate 'cat'."},
        ],
        conversation,
        [{"role": "user", "content": "TRL prompt-only"}],
    ]


def test_bad_jsonl_lines_are_all_listed_and_nothing_is_read(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"prompt": "fine"}\nnot json\n{"messages": [{"role": "user", "content": "a"}, '
        '{"role": "assistant", "content": "b"}]}\n{"text": "x"}\n',
        encoding="utf-8",
    )
    with pytest.raises(ImportFormatError) as caught:
        read_prompt_file(path)
    assert [n for n, _ in caught.value.problems] == [2, 3, 4]
    assert "end with a user message" in str(caught.value)


def test_empty_or_unreadable_prompt_files_are_explained(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DesktopDpoError, match="holds no prompt"):
        read_prompt_file(empty)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DesktopDpoError, match="not UTF-8"):
        read_prompt_file(binary)
    with pytest.raises(DesktopDpoError, match="Cannot read"):
        read_prompt_file(tmp_path / "missing.txt")
