"""llama.cpp inference: reproducible streaming, pairs decoded together, cancel, stop strings, UTF-8.

The model is the tiny random-weight Llama of ``tests/plugins/tiny_model.py`` converted to GGUF, so these
tests check mechanics (seeds, streaming, cutting, counting), not the quality of the text. Most use its
Q8_0 conversion: quantized like the models people run, whose matrix products do not depend on how many
rows a batch has (see the pair tests).

The engine runs in this process here, in safe mode (no AMX or CPU repack buffers), because what is tested is
decoding, and the normal mode crashes the whole process on AVX-512 + AMX CPUs. In the app the engine runs in
a supervised child that tries the normal mode first: ``test_supervised_engine.py``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import random
from collections import deque
from pathlib import Path

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError, ModelError
from desktop_dpo.core.jobs import CancelToken
from desktop_dpo.core.llm.engine_base import PENALTY_LAST_N
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent
from desktop_dpo.core.llm.gguf_info import read_gguf_info
from desktop_dpo.core.llm.llamacpp import LlamaCppEngine, _RepeatPenalty
from tests.plugins.llama_oracle import safe_llama
from tests.plugins.tiny_model import CHAT_TEMPLATE

SAMPLED = SamplingSettings(
    temperature=1.0, top_p=0.95, top_k=40, min_p=0.0, repeat_penalty=1.1, max_tokens=24
)
GREEDY = dataclasses.replace(SAMPLED, temperature=0.0)
PROMPT = "User: Tell me about tea.\nAssistant:"


def drive(job) -> tuple[list[object], object]:
    """Run a job to the end: (events, return value)."""
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            return events, stop.value


def streamed_text(events, seq: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenEvent) and e.seq == seq)


# ---------------------------------------------------------------------------------------------------------
# The engine on the tiny model
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_q8_gguf(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """The tiny model converted to a Q8_0 GGUF by the app's own export path."""
    from desktop_dpo.core.export.gguf import convert_hf_to_gguf

    out = tmp_path_factory.mktemp("tiny-q8") / "tiny-llama-q8_0.gguf"
    return drive(convert_hf_to_gguf(tiny_model_dir, out, outtype="q8_0"))[1]


@pytest.fixture(scope="module")
def engine(tiny_q8_gguf: Path):
    with LlamaCppEngine(tiny_q8_gguf, n_ctx=128, n_threads=1, event_interval_s=0, safe_mode=True) as engine:
        yield engine


def test_same_seed_gives_the_same_text_and_the_seed_is_recorded(engine):
    events, first = drive(engine.generate(PROMPT, SAMPLED, seed=11))
    _, again = drive(engine.generate(PROMPT, SAMPLED, seed=11))
    _, other = drive(engine.generate(PROMPT, SAMPLED, seed=12))
    assert isinstance(first, GenerationResult)
    assert first.text == again.text and first.completion_tokens == again.completion_tokens
    assert other.text != first.text
    assert (first.seed, other.seed) == (11, 12)
    assert first.settings == {**SAMPLED.to_dict(), "stop": []}
    assert first.prompt_tokens == len(engine.tokenize(PROMPT))
    # What streamed is what was returned.
    assert streamed_text(events) == first.text
    assert events[-1] == ResponseFinished(0, first)


def test_seeds_drawn_by_the_engine_are_recorded_and_reproduce(engine):
    _, drawn = drive(engine.generate(PROMPT, SAMPLED))
    _, replay = drive(engine.generate(PROMPT, SAMPLED, seed=drawn.seed))
    assert replay.text == drawn.text


def test_pair_streams_two_responses_with_their_own_seeds(engine):
    events, (first, second) = drive(engine.generate_pair(PROMPT, SAMPLED, seeds=(21, 22)))
    assert (first.seed, second.seed) == (21, 22)
    assert first.text != second.text
    assert streamed_text(events, 0) == first.text and streamed_text(events, 1) == second.text
    finished = [e for e in events if isinstance(e, ResponseFinished)]
    assert sorted(e.seq for e in finished) == [0, 1]
    # Drawn seeds differ from each other.
    _, (a, b) = drive(engine.generate_pair(PROMPT, SAMPLED))
    assert a.seed != b.seed


def assert_pair_equals_singles(engine: LlamaCppEngine, settings: SamplingSettings) -> None:
    long = dataclasses.replace(settings, max_tokens=40)
    _, (first, second) = drive(engine.generate_pair(PROMPT, long, seeds=(31, 32), ignore_eos=True))
    _, alone_first = drive(engine.generate(PROMPT, long, seed=31, ignore_eos=True))
    _, alone_second = drive(engine.generate(PROMPT, long, seed=32, ignore_eos=True))
    assert first.text == alone_first.text
    assert second.text == alone_second.text
    assert first.text != second.text or settings.temperature == 0
    assert first.completion_tokens == second.completion_tokens == 40


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_pair_decoded_together_equals_two_single_decodes(engine, settings):
    # Each sequence has its own KV stream, and Q8_0 matrix products do not depend on the number of rows
    # in a batch: the pair is bit for bit two single runs, so a response is reproduced from its seed alone.
    assert_pair_equals_singles(engine, settings)


def test_pair_equals_single_decodes_greedily_on_float_weights(tiny_gguf):
    # With F32 (and F16) weights llama.cpp sums a 2-row batch in another order than a 1-row one: logits
    # differ by ~1e-6, which can flip a sampled token, so for float weights the guarantee is greedy only.
    with LlamaCppEngine(tiny_gguf, n_ctx=128, n_threads=1, safe_mode=True) as float_engine:
        assert_pair_equals_singles(float_engine, GREEDY)


def test_repeat_penalty_is_bit_identical_to_llama_cpps_penalty_sampler():
    import llama_cpp

    rng = random.Random(0)
    n_vocab = 1000
    logits = [rng.uniform(-8.0, 8.0) for _ in range(n_vocab)]
    history = [rng.randrange(0, 80) for _ in range(150)]  # repeats, and more than the 64-token window

    sampler = llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, 1.3, 0.0, 0.0)
    for token in history:
        llama_cpp.llama_sampler_accept(sampler, token)
    data = (llama_cpp.llama_token_data * n_vocab)()
    for i, value in enumerate(logits):
        data[i].id, data[i].logit, data[i].p = i, value, 0.0
    candidates = llama_cpp.llama_token_data_array(
        data=ctypes.cast(data, llama_cpp.llama_token_data_p), size=n_vocab, selected=-1, sorted=False
    )
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
    llama_cpp.llama_sampler_free(sampler)
    expected = [data[i].logit for i in range(n_vocab)]

    row = (ctypes.c_float * n_vocab)(*logits)
    _RepeatPenalty(1.3).apply(row, deque(history, maxlen=PENALTY_LAST_N))
    assert list(row) == expected
    assert list(row) != list((ctypes.c_float * n_vocab)(*logits))  # it did change something


def test_sampling_matches_llama_cpp_pythons_own_completion(tiny_q8_gguf):
    # The oracle: llama-cpp-python's high-level API, same file, seed and settings, draws the same tokens.

    settings = dataclasses.replace(SAMPLED, max_tokens=40, repeat_penalty=1.3, min_p=0.05)
    with LlamaCppEngine(tiny_q8_gguf, n_ctx=128, n_threads=1, flash_attn=False, safe_mode=True) as ours:
        prompt = ours.tokenize(PROMPT)
        _, mine = drive(ours.generate(PROMPT, settings, seed=7))
    llm = safe_llama(str(tiny_q8_gguf), n_ctx=128, n_threads=1, n_threads_batch=1, verbose=False)
    try:
        theirs = llm.create_completion(
            prompt,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            min_p=settings.min_p,
            repeat_penalty=settings.repeat_penalty,
            seed=7,
        )
    finally:
        llm.close()
    assert mine.completion_tokens == theirs["usage"]["completion_tokens"] > 10
    # (It drops bytes that are not UTF-8 where ours shows a replacement mark.)
    assert mine.text.replace("\ufffd", "") == theirs["choices"][0]["text"]


def test_max_tokens_is_respected(engine):
    short = dataclasses.replace(SAMPLED, max_tokens=7)
    _, result = drive(engine.generate(PROMPT, short, seed=3, ignore_eos=True))
    assert result.completion_tokens == 7 and result.finish_reason == "length"
    _, (a, b) = drive(engine.generate_pair(PROMPT, short, seeds=(1, 2), ignore_eos=True))
    assert a.completion_tokens == b.completion_tokens == 7


def test_cancel_stops_at_the_next_token_and_keeps_the_text(engine):
    cancel = CancelToken()
    job = engine.generate(
        PROMPT, dataclasses.replace(SAMPLED, max_tokens=60), seed=5, cancel=cancel, ignore_eos=True
    )
    first = next(job)
    second = next(job)
    cancel.cancel()
    events, result = drive(job)
    assert result.finish_reason == "cancelled"
    # Not one more token was decoded after the cancel: the count is the one the last event reported.
    assert result.completion_tokens == second.n_tokens == 2
    assert result.text == first.text + second.text + streamed_text(events)
    assert events[-1] == ResponseFinished(0, result)


def test_cancel_stops_both_responses_of_a_pair(engine):
    cancel = CancelToken()
    job = engine.generate_pair(PROMPT, SAMPLED, seeds=(1, 2), cancel=cancel, ignore_eos=True)
    next(job)
    cancel.cancel()
    _, (a, b) = drive(job)
    assert a.finish_reason == b.finish_reason == "cancelled"
    assert a.completion_tokens == b.completion_tokens == 1


def test_cancel_before_the_prompt_is_evaluated_returns_empty_cancelled_results(engine):
    cancel = CancelToken()
    cancel.cancel()
    events, (a, b) = drive(engine.generate_pair(PROMPT, SAMPLED, seeds=(1, 2), cancel=cancel))
    assert [e.seq for e in events if isinstance(e, ResponseFinished)] == [0, 1]
    assert (a.finish_reason, a.completion_tokens, a.text) == ("cancelled", 0, "")
    assert b.finish_reason == "cancelled"


def test_stop_strings_are_trimmed_and_never_streamed(engine):
    _, free = drive(engine.generate(PROMPT, GREEDY, ignore_eos=True))
    # Take a stop string from the middle of what the model writes, so it is bound to appear.
    cut_at = len(free.text) // 2
    stop = free.text[cut_at : cut_at + 3]
    events, stopped = drive(engine.generate(PROMPT, GREEDY, stop=[stop], ignore_eos=True))
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(stop)]
    assert stop not in streamed_text(events) and streamed_text(events) == stopped.text
    assert stopped.settings["stop"] == [stop]


def test_conversation_is_rendered_with_the_models_template(engine):
    messages = [{"role": "user", "content": "Tell me about tea."}]
    text, stops = engine.render(messages)
    assert text == "<s><|user|>\nTell me about tea.<|end|>\n<|assistant|>\n"
    # Its end-of-turn token <|end|> ends a response by id; its text too, should the model write it as text.
    assert stops == ["<|end|>", "</s>"]
    tokens, _ = engine.prompt_tokens(messages)
    bos = engine.tokenize("", add_bos=True)
    user_marker = engine.tokenize("<|user|>", add_bos=False, parse_special=True)
    # The template writes BOS itself: it is not doubled; the markers are single control tokens.
    assert tokens[0] == bos[0] and tokens[1] != bos[0]
    assert len(user_marker) == 1 and tokens[1] == user_marker[0]
    _, result = drive(engine.generate(messages, GREEDY, seed=1))
    assert result.prompt_tokens == len(tokens)
    assert result.settings["stop"] == ["<|end|>", "</s>"]


def test_model_without_a_template_gets_the_plain_layout_and_its_stop_strings(engine, monkeypatch):
    monkeypatch.setattr(engine, "chat_template", None)
    messages = [{"role": "user", "content": "Tell me about tea."}]
    text, stops = engine.render(messages)
    assert text == PROMPT and stops == ["\nUser:", "\nAssistant:"]
    _, from_messages = drive(engine.generate(messages, SAMPLED, seed=1))
    _, from_text = drive(engine.generate(PROMPT, SAMPLED, seed=1, stop=stops))
    assert from_messages.text == from_text.text
    assert from_messages.settings["stop"] == ["\nUser:", "\nAssistant:"]


def test_events_are_batched_when_an_interval_is_set(tiny_q8_gguf):
    settings = dataclasses.replace(SAMPLED, max_tokens=30)
    with LlamaCppEngine(
        tiny_q8_gguf, n_ctx=128, n_threads=1, event_interval_s=3600, safe_mode=True
    ) as slow_events:
        events, result = drive(slow_events.generate(PROMPT, settings, seed=9, ignore_eos=True))
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    # The first token is shown at once; the rest arrive together when the response ends.
    assert [e.n_tokens for e in tokens] == [1, 30]
    assert streamed_text(events) == result.text


def test_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(ModelError, match="fills the model's context"):
        drive(engine.generate("word " * 400, SAMPLED))


def test_one_generation_at_a_time_per_engine(engine):
    running = engine.generate(PROMPT, SAMPLED, seed=1)
    next(running)
    with pytest.raises(DesktopDpoError, match="already writing"):
        drive(engine.generate(PROMPT, SAMPLED, seed=2))
    running.close()  # a job closed early releases the engine
    _, result = drive(engine.generate(PROMPT, SAMPLED, seed=2))
    assert result.completion_tokens > 0


def test_close_frees_the_model_and_it_loads_again(tiny_q8_gguf):
    engine = LlamaCppEngine(tiny_q8_gguf, n_ctx=64, n_threads=1, safe_mode=True)
    assert not engine.loaded  # loading waits for first use
    _, before = drive(engine.generate(PROMPT, GREEDY, seed=1))
    engine.close()
    assert not engine.loaded
    _, after = drive(engine.generate(PROMPT, GREEDY, seed=1))
    assert after.text == before.text
    engine.close()


def test_missing_or_broken_model_file_is_explained(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        LlamaCppEngine(tmp_path / "nope.gguf").load()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelError, match="could not load"):
        LlamaCppEngine(broken).load()


# ---------------------------------------------------------------------------------------------------------
# GGUF header
# ---------------------------------------------------------------------------------------------------------


def test_gguf_info_agrees_with_the_gguf_package_reader(tiny_q8_gguf):
    from gguf import GGUFReader

    info = read_gguf_info(tiny_q8_gguf)
    reader = GGUFReader(tiny_q8_gguf)
    architecture = reader.fields["general.architecture"].contents()
    assert info["architecture"] == architecture
    assert info["parameter_count"] == sum(int(t.n_elements) for t in reader.tensors)
    assert info["tensor_count"] == len(reader.tensors)
    assert info["context_length"] == reader.fields[f"{architecture}.context_length"].contents()
    assert info["vocab_size"] == len(reader.fields["tokenizer.ggml.tokens"].data)
    assert info["file_type"] == "Q8_0" and "Q8_0" in info["tensor_types"]
    assert info["has_chat_template"] is True and info["chat_template"] == CHAT_TEMPLATE
    assert info["eos_token"] == "</s>"
    assert info["bos_token"] == reader.fields["tokenizer.ggml.tokens"].contents()[info["bos_token_id"]]
    assert info["file_size_bytes"] == tiny_q8_gguf.stat().st_size


def test_gguf_info_reads_a_chat_template(tmp_path):
    import gguf

    path = tmp_path / "templated.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(2048)
    writer.add_chat_template("{{ bos_token }}{{ messages[0]['content'] }}")
    writer.add_token_list(["<unk>", "<s>", "</s>"])
    writer.add_bos_token_id(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = read_gguf_info(path)
    assert info["has_chat_template"] is True
    assert info["chat_template"] == "{{ bos_token }}{{ messages[0]['content'] }}"
    assert (info["context_length"], info["parameter_count"], info["bos_token"]) == (2048, 0, "<s>")


def test_gguf_info_refuses_other_and_truncated_files(tmp_path, tiny_q8_gguf):
    other = tmp_path / "notes.gguf"
    other.write_text("hello, this is not a model at all")
    with pytest.raises(ModelError, match="not a GGUF"):
        read_gguf_info(other)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_q8_gguf.read_bytes()[:200])
    with pytest.raises(ModelError, match="damaged"):
        read_gguf_info(truncated)
