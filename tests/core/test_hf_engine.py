"""The transformers fallback: models llama.cpp's converter cannot read still stream, pair and stop.

The model is a tiny random-weight Llama whose tokenizer is a byte-level BPE trained here with
``tokenizers``. The converter recognises BPE tokenizers by a hash of known pre-tokenizers, so it refuses
this one, as it refuses many real fine-tunes. The text is gibberish: these tests check mechanics (seeds,
streaming, cutting, counting, choosing the engine), not quality.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError, ExportError, ModelError
from desktop_dpo.core.jobs import CancelToken, Log
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.llm.generation import ResponseFinished, TokenEvent
from desktop_dpo.core.llm.hf import HfEngine, _Detokenizer
from desktop_dpo.core.llm.llamacpp import LlamaCppEngine
from desktop_dpo.core.llm.supervised import SupervisedLlamaEngine
from desktop_dpo.core.llm.templates import DEFAULT_STOP_STRINGS
from desktop_dpo.core.models import register_model
from desktop_dpo.core.sampling import (
    GGUF_REFUSED_FILE,
    GGUF_REFUSED_INFO_KEY,
    GgufCopyMade,
    GgufRefused,
    ModelInfoLearned,
    engine_key,
    gguf_copy_path,
    hf_engine_key,
    model_engine,
    sample_pair,
)
from tests.plugins import tiny_model as _tiny_model_plugin

tiny_model_dir = _tiny_model_plugin.tiny_model_dir
tiny_gguf = _tiny_model_plugin.tiny_gguf

MESSAGES = [{"role": "user", "content": "Tell me about tea."}]
SAMPLED = SamplingSettings(
    temperature=1.0, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.1, max_tokens=24
)
GREEDY = dataclasses.replace(SAMPLED, temperature=0.0)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A helpful assistant answers questions clearly.
Paris is the capital of France. Water boils at one hundred degrees. Tell me about tea, please.
Café, naïve, résumé, über, jalapeño, Zürich. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. 😀 €
User: hello there. Assistant: hi! how can I help you today?
"""


def build_bpe_model(out: Path) -> Path:
    """A tiny Llama with a byte-level BPE tokenizer trained on the spot (no chat template: a base model)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS.splitlines() * 10, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(str(out))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger random weights: distinct, confident next-token distributions
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.08)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def bpe_model_dir(tmp_path_factory) -> Path:
    return build_bpe_model(tmp_path_factory.mktemp("bpe-model") / "tiny-bpe-llama")


@pytest.fixture(scope="module")
def engine(bpe_model_dir):
    # An event per token, so tests can stop at a precise point and count tokens event by event.
    with HfEngine(bpe_model_dir, n_ctx=256, event_interval_s=0.0).load() as loaded:
        yield loaded


@pytest.fixture(scope="module", params=[False, True], ids=["interleaved", "batched"])
def pair_engine(request, bpe_model_dir):
    """The engine with each way of decoding a pair (batched is the GPU's default, interleaved the CPU's)."""
    with HfEngine(bpe_model_dir, n_ctx=256, event_interval_s=0.0, batch_pairs=request.param).load() as loaded:
        yield loaded


@pytest.fixture
def pool():
    p = EnginePool()
    yield p
    p.close_all()


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


def streamed(events, seq: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenEvent) and e.seq == seq)


# ------------------------------------------------------------------------------------------ choosing the engine


def test_a_model_the_converter_refuses_runs_in_transformers_and_says_why(
    store, app_home, bpe_model_dir, pool
):
    model = register_model(store, bpe_model_dir)
    events, holder = drive(model_engine(pool, model, app_home, n_ctx=128))

    refused = [e for e in events if isinstance(e, GgufRefused)]
    assert len(refused) == 1 and refused[0].model_id == model.id
    assert "converter" in refused[0].reason
    said = " ".join(e.message for e in events if isinstance(e, Log))
    assert "transformers" in said and "slower" in said and "converter cannot read" in said
    assert not any(isinstance(e, GgufCopyMade) for e in events)
    with holder as running:
        assert isinstance(running, HfEngine)
        _, result = drive(running.generate(MESSAGES, GREEDY, seed=1))
    assert result.completion_tokens >= 1
    assert pool.loaded() == [hf_engine_key(bpe_model_dir, 128)]
    # Nothing half-written is left where the GGUF copy would have been.
    copy = gguf_copy_path(model, app_home)
    assert not copy.exists()
    assert [p.name for p in copy.parent.iterdir()] == [GGUF_REFUSED_FILE]


def test_the_refusal_is_remembered_and_not_tried_again(store, app_home, bpe_model_dir, pool, monkeypatch):
    from desktop_dpo.core.export import gguf as gguf_export

    calls = []
    real = gguf_export.convert_hf_to_gguf

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(gguf_export, "convert_hf_to_gguf", counting)
    model = register_model(store, bpe_model_dir)
    events, _ = drive(model_engine(pool, model, app_home, n_ctx=128))
    assert len(calls) == 1
    # The driver records the decision on the model, as it records a GGUF copy.
    (learned,) = [e for e in events if isinstance(e, ModelInfoLearned)]
    store.update_model_info(model.id, **learned.info)
    recorded = store.get_model(model.id)
    assert recorded.info[GGUF_REFUSED_INFO_KEY]["fingerprint"] == model.fingerprint

    # Remembered by the file beside the would-be copy (the job's ModelRow may predate the record) ...
    events, holder = drive(model_engine(pool, model, app_home, n_ctx=128))
    assert len(calls) == 1, "a refused model must not be converted again"
    assert not any(isinstance(e, GgufRefused) for e in events)
    with holder as running:
        assert isinstance(running, HfEngine)
    # ... and by the model's info when the file is gone.
    (gguf_copy_path(model, app_home).parent / GGUF_REFUSED_FILE).unlink()
    _, holder = drive(model_engine(pool, recorded, app_home, n_ctx=128))
    assert len(calls) == 1
    with holder as running:
        assert isinstance(running, HfEngine)


def test_changed_contents_are_tried_again(store, app_home, bpe_model_dir, pool, tmp_path):
    folder = tmp_path / "fine-tune"
    shutil.copytree(bpe_model_dir, folder)
    model = register_model(store, folder)
    drive(model_engine(pool, model, app_home, n_ctx=128))
    config = json.loads((folder / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5 if config.get("rms_norm_eps") != 1e-5 else 1e-6
    (folder / "config.json").write_text(json.dumps(config))
    changed = register_model(store, folder)  # same path, new fingerprint
    assert changed.fingerprint != model.fingerprint
    events, _ = drive(model_engine(pool, changed, app_home, n_ctx=128))
    assert any(isinstance(e, GgufRefused) for e in events), "new contents: the converter is asked again"


def test_a_model_that_converts_still_runs_in_llama_cpp(store, app_home, tiny_model_dir, pool):
    model = register_model(store, tiny_model_dir)
    events, holder = drive(model_engine(pool, model, app_home, n_ctx=64))
    assert any(isinstance(e, GgufCopyMade) for e in events)
    assert not any(isinstance(e, GgufRefused) for e in events)
    with holder as running:
        assert isinstance(running, SupervisedLlamaEngine)  # llama.cpp, in its supervised child process
    assert pool.loaded() == [engine_key(gguf_copy_path(model, app_home), 64)]


def test_other_conversion_failures_still_surface(store, app_home, bpe_model_dir, pool, monkeypatch, tmp_path):
    from desktop_dpo.core.export import gguf as gguf_export

    def disk_full(*args, **kwargs):
        raise ExportError("The disk filled up while writing the GGUF. Free some space and try again.")
        yield  # a job

    monkeypatch.setattr(gguf_export, "convert_hf_to_gguf", disk_full)
    model = register_model(store, bpe_model_dir)
    with pytest.raises(ExportError, match="disk filled up"):
        drive(model_engine(pool, model, app_home, n_ctx=128))
    assert not (gguf_copy_path(model, app_home).parent / GGUF_REFUSED_FILE).exists()
    assert pool.loaded() == []

    monkeypatch.undo()
    folder = tmp_path / "gone"
    shutil.copytree(bpe_model_dir, folder)
    gone = register_model(store, folder)
    drive(model_engine(pool, gone, app_home, n_ctx=128))  # refused once: it runs in transformers
    shutil.rmtree(folder)
    with pytest.raises(ModelError, match="moved or deleted"):
        drive(model_engine(pool, gone, app_home, n_ctx=128))


# ------------------------------------------------------------------------------------------ the engine


def test_a_base_model_gets_the_default_layout_and_its_stop_strings(engine):
    text, stops = engine.render(MESSAGES)
    assert text == "User: Tell me about tea.\nAssistant:"
    assert stops == list(DEFAULT_STOP_STRINGS)
    tokens, _ = engine.prompt_tokens(MESSAGES)
    assert tokens[0] == engine._tokenizer.bos_token_id and tokens[1] != tokens[0]
    # Raw text is the person's own: "<s>" written in it is text, not a second control token.
    raw, raw_stops = engine.prompt_tokens("<s>hi")
    assert raw.count(engine._tokenizer.bos_token_id) == 1 and raw_stops == []


def test_prompts_are_rendered_and_tokenized_as_llama_cpp_does(tiny_model_dir, tiny_gguf):
    # The tiny SentencePiece model runs in both engines: a conversation must reach the model as the same
    # tokens, so a model answers alike whichever engine runs it.
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour, café 😀"},
    ]
    with (
        HfEngine(tiny_model_dir, n_ctx=128) as hf,
        LlamaCppEngine(tiny_gguf, n_ctx=128, safe_mode=True) as llama,
    ):
        assert hf.render(conversation) == llama.render(conversation)
        assert hf.prompt_tokens(conversation) == llama.prompt_tokens(conversation)
        raw = "Once upon a time <|user|> there was"
        assert hf.prompt_tokens(raw) == llama.prompt_tokens(raw)


def test_answers_stream_token_by_token(engine):
    events, result = drive(engine.generate(MESSAGES, SAMPLED, seed=7))
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert streamed(events) == result.text != ""
    assert [e.n_tokens for e in tokens] == list(range(1, len(tokens) + 1))
    assert tokens[-1].n_tokens == result.completion_tokens
    assert events[-1] == ResponseFinished(0, result)
    assert {e.seq for e in tokens} == {0}
    assert result.seed == 7
    assert result.settings == {**SAMPLED.to_dict(), "stop": list(DEFAULT_STOP_STRINGS)}
    assert result.prompt_tokens == len(engine.prompt_tokens(MESSAGES)[0])
    assert result.finish_reason in ("stop", "length")


def test_max_tokens_ends_the_answer_with_length(engine):
    settings = dataclasses.replace(SAMPLED, max_tokens=5)
    _, result = drive(engine.generate(MESSAGES, settings, seed=3, ignore_eos=True))
    assert (result.finish_reason, result.completion_tokens) == ("length", 5)
    assert result.settings["ignore_eos"] is True


def test_a_stop_string_ends_the_answer_and_is_removed(engine):
    _, full = drive(engine.generate(MESSAGES, GREEDY, seed=1, ignore_eos=True))
    stop = full.text[len(full.text) // 2 :][:3]  # three characters from the middle of the answer
    expected = full.text[: full.text.find(stop)]
    events, cut = drive(engine.generate(MESSAGES, GREEDY, seed=1, stop=[stop], ignore_eos=True))
    assert cut.finish_reason == "stop"
    assert cut.text == expected and stop not in cut.text
    assert streamed(events) == expected, "the stop string never flashes up in the stream"
    assert stop in cut.settings["stop"]


def test_same_seed_same_answer_and_different_seeds_differ(engine):
    _, first = drive(engine.generate(MESSAGES, SAMPLED, seed=11, ignore_eos=True))
    _, again = drive(engine.generate(MESSAGES, SAMPLED, seed=11, ignore_eos=True))
    _, other = drive(engine.generate(MESSAGES, SAMPLED, seed=12, ignore_eos=True))
    assert again.text == first.text
    assert other.text != first.text


def test_stopping_keeps_the_text_so_far(engine):
    token = CancelToken()

    def stop_once_text_shows(event):
        if isinstance(event, TokenEvent) and event.text:
            token.cancel()

    events, result = drive(
        engine.generate(MESSAGES, dataclasses.replace(SAMPLED, max_tokens=100), seed=5, cancel=token),
        stop_once_text_shows,
    )
    assert result.finish_reason == "cancelled"
    assert result.text and result.text == streamed(events)
    assert result.completion_tokens < 100
    # The engine is free again at once.
    _, again = drive(engine.generate(MESSAGES, GREEDY, seed=5))
    assert again.finish_reason in ("stop", "length")


def test_a_second_job_on_a_busy_engine_is_refused(engine):
    running = engine.generate(MESSAGES, SAMPLED, seed=1)
    next(running)
    try:
        with pytest.raises(DesktopDpoError, match="already writing"):
            drive(engine.generate(MESSAGES, SAMPLED, seed=2))
    finally:
        running.close()
    drive(engine.generate(MESSAGES, GREEDY, seed=2))


def test_a_greedy_pair_is_two_single_answers(pair_engine):
    engine = pair_engine
    events, (first, second) = drive(engine.generate_pair(MESSAGES, GREEDY, seeds=(1, 2), ignore_eos=True))
    _, alone = drive(engine.generate(MESSAGES, GREEDY, seed=9, ignore_eos=True))
    assert streamed(events, 0) == first.text and streamed(events, 1) == second.text
    assert first.text == second.text == alone.text
    assert (first.seed, second.seed) == (1, 2)
    assert sorted(e.seq for e in events if isinstance(e, ResponseFinished)) == [0, 1]


def test_a_sampled_pair_streams_both_and_each_is_its_single_answer(pair_engine):
    engine = pair_engine
    # With this stop string answer 0 stops after 11 tokens and answer 1 runs to the limit: the pair also
    # goes on alone after dropping the finished one.
    # (Interleaved, pair == singles always. Batched, it holds here, but in general a draw exactly at the
    # boundary between two tokens may flip, because a matrix product over two rows may sum in another
    # order than over one row: see hf.py.)
    stop = ["um"]
    events, (first, second) = drive(engine.generate_pair(MESSAGES, SAMPLED, seeds=(1, 2), stop=stop))
    _, alone_1 = drive(engine.generate(MESSAGES, SAMPLED, seed=1, stop=stop))
    _, alone_2 = drive(engine.generate(MESSAGES, SAMPLED, seed=2, stop=stop))
    assert first.completion_tokens != second.completion_tokens, "one answer must end before the other"
    assert (first.text, first.finish_reason) == (alone_1.text, alone_1.finish_reason)
    assert (second.text, second.finish_reason) == (alone_2.text, alone_2.finish_reason)
    assert streamed(events, 0) == first.text and streamed(events, 1) == second.text
    assert first.text != second.text
    counts = {
        seq: [e.n_tokens for e in events if isinstance(e, TokenEvent) and e.seq == seq] for seq in (0, 1)
    }
    assert counts[0][-1] == first.completion_tokens and counts[1][-1] == second.completion_tokens
    # Both stream together, and each answer's ResponseFinished comes as soon as it is done.
    seqs = [e.seq for e in events if isinstance(e, TokenEvent)]
    assert seqs[:4] == [0, 1, 0, 1]
    finished = [i for i, e in enumerate(events) if isinstance(e, ResponseFinished)]
    shorter = 0 if first.completion_tokens < second.completion_tokens else 1
    assert events[finished[0]].seq == shorter
    assert any(isinstance(e, TokenEvent) and e.seq != shorter for e in events[finished[0] :])


def test_stopping_a_pair_stops_both(pair_engine):
    token = CancelToken()

    def stop_at_first_text(event):
        if isinstance(event, TokenEvent) and event.text:
            token.cancel()

    events, results = drive(
        pair_engine.generate_pair(
            MESSAGES, dataclasses.replace(SAMPLED, max_tokens=100), seeds=(3, 4), cancel=token
        ),
        stop_at_first_text,
    )
    assert [r.finish_reason for r in results] == ["cancelled", "cancelled"]
    assert [r.text for r in results] == [streamed(events, 0), streamed(events, 1)]
    assert all(r.completion_tokens < 100 for r in results)


def test_characters_split_across_tokens_come_out_whole(engine):
    tokenizer = engine._tokenizer
    text = " Café 😀 € über"
    context = tokenizer.encode("Assistant:", add_special_tokens=False)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split()), "some characters span several byte-level tokens"
    detokenizer = _Detokenizer(tokenizer, context)
    pieces = [detokenizer.add(token) for token in ids]
    assert "".join(pieces) + detokenizer.finish() == text  # the leading space is kept
    assert all("\ufffd" not in piece for piece in pieces)


# ------------------------------------------------------------------------------------------ pairs for Collect


def test_sample_pair_through_the_fallback(store, app_home, bpe_model_dir, pool, engine):
    model = register_model(store, bpe_model_dir)
    events, (result_a, result_b) = drive(
        sample_pair(pool, model, None, app_home, MESSAGES, SAMPLED, seeds=(21, 22), n_ctx=256)
    )
    assert any(isinstance(e, GgufRefused) for e in events)
    assert streamed(events, 0) == result_a.text and streamed(events, 1) == result_b.text
    assert (result_a.seed, result_b.seed) == (21, 22)
    assert pool.loaded() == [hf_engine_key(bpe_model_dir, 256)], "one engine decodes both answers"
    _, alone = drive(engine.generate(MESSAGES, SAMPLED, seed=22))
    assert alone.text == result_b.text


def test_a_pair_from_a_transformers_model_and_a_llama_cpp_model(
    store, app_home, bpe_model_dir, tiny_gguf, pool
):
    model_a = register_model(store, bpe_model_dir)
    model_b = register_model(store, tiny_gguf)
    settings = dataclasses.replace(SAMPLED, max_tokens=6)
    events, (result_a, result_b) = drive(
        sample_pair(pool, model_a, model_b, app_home, MESSAGES, settings, seeds=(5, 6), n_ctx=64)
    )
    seqs = [e.seq for e in events if isinstance(e, (TokenEvent, ResponseFinished))]
    assert seqs == sorted(seqs) and set(seqs) == {0, 1}, "A streams first, then B"
    assert result_a.completion_tokens >= 1 and result_b.completion_tokens >= 1
    assert sorted(pool.loaded()) == sorted([hf_engine_key(bpe_model_dir, 64), engine_key(tiny_gguf, 64)])
