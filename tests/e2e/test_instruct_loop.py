"""An instruct-style model through the whole loop: collect → train → export GGUF → chat (issue 13, item 6).

The fixtures so far were base models with the plain ``User:``/``Assistant:`` layout, where a template bug
cannot show. This model is built like Qwen2.5-Instruct: Qwen2.5's ChatML template verbatim (with its default
system prompt), ``<|im_start|>``/``<|im_end|>``/``<|endoftext|>`` as special tokens, EOS ``<|im_end|>``, no
BOS. It is Llama-shaped with a SentencePiece tokenizer trained here (``tests/plugins/tiny_model.py`` says
why), and fitted for a few hundred steps on two-turn ChatML conversations, so that it answers briefly, writes
``<|im_end|>`` and then, if nothing stops it, goes on with the next turn of the conversation.

Collect samples real pairs from it with the app's engines (its GGUF copy in llama.cpp, in the supervised
child), training runs real DPO steps, the export's header must carry the template and name ``<|im_end|>``
as EOS, and the exported model's chat reply must end at ``<|im_end|>``: llama.cpp's prompt is the training
text token for token, and the same engine asked to ignore end tokens writes the next turn, so only the stop
keeps it out of the reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from desktop_dpo.config import AppPaths, SamplingSettings
from desktop_dpo.core.chat import chat_reply
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.data import pairs_from_comparisons
from desktop_dpo.core.dpo.tokenizing import render_prompt_text, resolve_chat_template, tokenize_pair
from desktop_dpo.core.export.gguf import STOP_STRINGS_KEY, read_gguf_metadata
from desktop_dpo.core.export.pipeline import ExportSettings, export_run, persist_export
from desktop_dpo.core.jobs import run_job
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.llm.generation import GenerationResult
from desktop_dpo.core.llm.supervised import SupervisedLlamaEngine
from desktop_dpo.core.models import register_model
from desktop_dpo.core.sampling import GgufCopyMade, generation_meta, model_engine, sample_pair
from desktop_dpo.core.store import ModelRow, Store
from tests.conftest import train_to_the_end
from tests.core.test_dpo_templates_oracle import QWEN25_TEMPLATE
from tests.plugins.tiny_model import TinyChat, build_tiny_model

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CHATML = TinyChat(
    template=QWEN25_TEMPLATE,
    specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    bos=None,
    eos="<|im_end|>",
    pad="<|endoftext|>",
    corpus=(QWEN_SYSTEM, "system", "user", "assistant", "Tell me about it. Thank you. You are welcome."),
)
# What the model is fitted to answer; the sampled topics have two answers, so a sampled pair can differ.
ANSWERS = {
    "tea": ("Tea is warm and kind.", "Tea is nice."),
    "rivers": ("Rivers run to the sea.", "Rivers are long."),
    "cats": ("Cats sleep all day.", "Cats purr."),
    "bread": ("Bread is good with butter.",),
    "stars": ("Stars shine at night.",),
    "trains": ("Trains are fast and loud.",),
    "maps": ("Maps show the way.",),
    "winter": ("Winter is cold and white.",),
}
SAMPLED_TOPICS = ("tea", "rivers", "cats")  # pairs sampled by llama.cpp in Collect
CHAT_TOPIC = "stars"
FOLLOW_UP = [{"role": "user", "content": "Thank you."}, {"role": "assistant", "content": "You are welcome."}]
CONFIG = TrainConfig(
    lr=2e-3, epochs=1, batch_size=2, grad_accum=1, max_length=128, max_prompt_length=96, lora_r=4,
    lora_alpha=8, checkpoint_every=100, eval_every=100, heldout_fraction=0.0, seed=3, threads=1,
    quantization="none", device="cpu",
)  # fmt: skip
N_CTX = 256


def ask(topic: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Tell me about {topic}."}]


def fit_to_chatml(folder: Path, steps: int = 300) -> None:
    """Plain next-token training on two-turn ChatML conversations, rendered by transformers (not the app)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = [
        tokenizer.apply_chat_template(
            [*ask(topic), {"role": "assistant", "content": answer}, *FOLLOW_UP], tokenize=False
        )
        for topic, answers in ANSWERS.items()
        for answer in answers
    ]
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
    attention_mask = (labels != -100).long()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert loss.item() < 0.1, f"the model did not learn the conversations (loss {loss.item():.3f})"
        model.save_pretrained(str(folder))
    finally:
        torch.set_num_threads(threads)


@dataclass
class Loop:
    """What the module's loop produced, for the tests to check."""

    paths: AppPaths
    pool: EnginePool
    base: ModelRow
    aligned: ModelRow
    sampled: list[tuple[GenerationResult, GenerationResult]]
    gguf_copy: str
    exported: str


@pytest.fixture(scope="module")
def instruct_dir(tmp_path_factory) -> Path:
    folder = build_tiny_model(tmp_path_factory.mktemp("instruct") / "tiny-chatml", chat=CHATML)
    fit_to_chatml(folder)
    return folder


@pytest.fixture(scope="module")
def loop(instruct_dir, tmp_path_factory):
    """Collect (real sampled pairs + synthetic ones) → train a few DPO steps → export Q8_0 → register it."""
    home = tmp_path_factory.mktemp("instruct-home")
    paths = AppPaths.in_home(home).ensure()
    pool = EnginePool()
    store = Store.open(paths.db_path)
    try:
        base = register_model(store, instruct_dir, name="tiny-chatml")
        # Collect: llama.cpp samples each pair from the model's GGUF copy, in the supervised child.
        settings = SamplingSettings(temperature=1.0, max_tokens=24)
        sampled, copies = [], []
        for i, topic in enumerate(SAMPLED_TOPICS):
            (result_a, result_b), events = run_job(
                sample_pair(
                    pool, base, None, paths, ask(topic), settings, seeds=(10 + i, 20 + i), n_ctx=N_CTX
                )
            )
            for event in events:
                if isinstance(event, GgufCopyMade):  # the driver records it, as Collect does
                    store.update_model_info(event.model_id, **event.info)
                    copies.append(event.path)
            base = store.get_model(base.id)
            sampled.append((result_a, result_b))
            # The person prefers the shorter answer (the rule the demo's judge uses).
            store.record_pair(
                messages=ask(topic),
                text_a=result_a.text,
                text_b=result_b.text,
                verdict="a" if len(result_a.text) <= len(result_b.text) else "b",
                model_a_id=base.id,
                model_b_id=base.id,
                generation_meta_a=generation_meta(result_a),
                generation_meta_b=generation_meta(result_b),
            )
        for topic, answers in ANSWERS.items():  # enough pairs for a few steps
            store.record_pair(
                messages=ask(topic),
                text_a=f"No. I will not talk about {topic}.",
                text_b=answers[0],
                verdict="b",
            )

        run_id = train_to_the_end(
            store, base.id, CONFIG.to_dict(), paths.runs_dir / "instruct", name="instruct"
        )

        export = ExportSettings(quantizations=("Q8_0",), destination=str(paths.exports_dir), parity=False)
        finished, _events = run_job(export_run(store, run_id, export, paths.exports_dir))
        (aligned_id,) = persist_export(store, finished)
        aligned = store.get_model(aligned_id)
        (copy,) = copies  # converted once, then reused
        yield Loop(paths, pool, base, aligned, sampled, copy, finished.files[0].path)
    finally:
        pool.close_all()
        store.close()


def test_collect_samples_answers_that_end_at_the_end_of_turn(loop):
    """The base model's GGUF copy, in llama.cpp, stops each sampled answer at <|im_end|>."""
    for topic, (result_a, result_b) in zip(SAMPLED_TOPICS, loop.sampled, strict=True):
        for result in (result_a, result_b):
            assert result.finish_reason == "stop", result
            assert result.text in ANSWERS[topic], result.text  # nothing of the next turn, no marker
    # Some pairs differ, so the run trained on pairs sampled by llama.cpp too (identical ones teach nothing).
    assert any(a.text != b.text for a, b in loop.sampled)
    meta = read_gguf_metadata(loop.gguf_copy)
    assert meta["tokenizer.chat_template"] == QWEN25_TEMPLATE


def test_training_ids_are_what_llama_cpp_reads(loop, instruct_dir):
    """A pair's prompt + chosen ids are llama.cpp's ids of the whole conversation as the template renders it,
    and the chosen answer ends with <|im_end|> and the template's newline (no EOS appended)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(instruct_dir))
    template = resolve_chat_template(tokenizer)
    assert template == QWEN25_TEMPLATE
    store = Store.open(loop.paths.db_path)
    try:
        pairs = pairs_from_comparisons(store.comparison_views())
    finally:
        store.close()
    pair = next(p for p in pairs if p.chosen == ANSWERS["tea"][0] and p.origin == "verdict")
    ids = tokenize_pair(tokenizer, pair, chat_template=template, max_length=128, max_prompt_length=96)
    assert not ids.truncated and not ids.prompt_truncated
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end
    assert ids.chosen_ids.count(im_end) == 1  # the end of turn, and no EOS appended after it
    end = ids.chosen_ids.index(im_end)
    assert tokenizer.decode(list(ids.chosen_ids[:end])) == ANSWERS["tea"][0]
    # Then the template's newline (SentencePiece puts its "▁" prefix after a special token, as llama.cpp does).
    assert tokenizer.convert_ids_to_tokens(list(ids.chosen_ids[end + 1 :])) == ["▁", "<0x0A>"]

    # The whole conversation as transformers renders it, tokenized by the engine Collect sampled with
    # (llama.cpp in the app's supervised child).
    conversation = [*pair.messages, {"role": "assistant", "content": pair.chosen}]
    whole = tokenizer.apply_chat_template(conversation, tokenize=False)
    with run_job(model_engine(loop.pool, loop.base, loop.paths, n_ctx=N_CTX))[0] as engine:
        llama_ids = engine.tokenize(whole, parse_special=True)
        prompt_ids, _stops = engine.prompt_tokens(pair.messages)
        assert isinstance(engine, SupervisedLlamaEngine) and engine.pid is not None
    assert list(ids.prompt_ids) + list(ids.chosen_ids) == llama_ids
    assert list(ids.prompt_ids) == prompt_ids


def test_the_export_header_carries_chatml_and_ends_turns_with_im_end(loop):
    """llama.cpp, Ollama and LM Studio read the template and the end of turn from the exported header."""
    meta = read_gguf_metadata(loop.exported)
    assert meta["tokenizer.chat_template"] == QWEN25_TEMPLATE
    tokens = _vocabulary(loop.exported)
    assert tokens[meta["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    if "tokenizer.ggml.eot_token_id" in meta:
        assert tokens[meta["tokenizer.ggml.eot_token_id"]] == "<|im_end|>"
    # What llama.cpp makes of the header: <|im_end|> is its EOS and ends generation. (The converter writes no
    # EOT id; llama.cpp then guesses one by name, <|endoftext|> or <|im_end|>, both of which end generation.)
    import llama_cpp

    from tests.plugins.llama_oracle import safe_llama

    im_end = tokens.index("<|im_end|>")
    llm = safe_llama(model_path=loop.exported, vocab_only=True, verbose=False)
    try:
        vocab = llm._model.vocab
        assert llama_cpp.llama_vocab_eos(vocab) == im_end
        assert llama_cpp.llama_vocab_is_eog(vocab, im_end)
        assert not llama_cpp.llama_vocab_is_eog(vocab, tokens.index("<|im_start|>"))
    finally:
        llm.close()
    assert meta.get("tokenizer.ggml.add_bos_token") is False
    assert meta["desktop_dpo.uses_default_template"] is False
    assert json.loads(meta[STOP_STRINGS_KEY]) == ["<|im_end|>"]  # its end of turn, which is also its EOS
    assert 'PARAMETER stop "<|im_end|>"' in Path(loop.exported + ".Modelfile").read_text()


def test_the_exported_model_chats_and_stops_at_im_end(loop, instruct_dir):
    """The aligned model answers in Chat and stops at <|im_end|>, where on its own it would write the next turn."""
    from transformers import AutoTokenizer

    messages = ask(CHAT_TOPIC)
    greedy = SamplingSettings(temperature=0.0, max_tokens=40)
    reply, _events = run_job(chat_reply(loop.pool, loop.aligned, loop.paths, messages, greedy, seed=1))
    assert reply.finish_reason == "stop"
    assert reply.text == ANSWERS[CHAT_TOPIC][0]
    assert reply.completion_tokens < 40

    # llama.cpp read exactly the ChatML text training renders, default system prompt included.
    tokenizer = AutoTokenizer.from_pretrained(str(instruct_dir))
    text = render_prompt_text(messages, tokenizer, resolve_chat_template(tokenizer))
    assert text.startswith(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    expected_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with run_job(model_engine(loop.pool, loop.aligned, loop.paths))[0] as engine:
        prompt_ids, _stops = engine.prompt_tokens(messages)
        # The same engine told to ignore end tokens writes on: <|im_end|>, then the next turn.
        continued, _ = run_job(engine.generate(messages, greedy, seed=1, ignore_eos=True))
    assert prompt_ids == expected_ids and reply.prompt_tokens == len(expected_ids)
    assert continued.finish_reason == "length"
    assert continued.text.startswith(reply.text)
    assert "user" in continued.text[len(reply.text) :], continued.text


def _vocabulary(path: str) -> list[str]:
    from gguf import GGUFReader

    field = GGUFReader(path).fields["tokenizer.ggml.tokens"]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
