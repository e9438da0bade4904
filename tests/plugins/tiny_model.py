"""A tiny Llama-architecture model built on the spot: nothing is downloaded.

The tokenizer is a SentencePiece BPE model trained here (byte fallback, so any unicode text encodes),
with the chat template's markers as user-defined symbols so transformers and llama.cpp split them the
same way. llama.cpp's converter refuses unknown BPE tokenizers (it recognises them by a hash), but it
reads a SentencePiece ``tokenizer.model`` directly, so this one converts.

The chat format is a :class:`TinyChat`: :data:`TINY_CHAT` (``<|user|>`` … ``<|end|>``, BOS ``<s>``, EOS
``</s>``) by default; an instruct-style model passes another one (ChatML with EOS ``<|im_end|>`` and no BOS,
as Qwen2.5-Instruct ships it). The model stays Llama-shaped: transformers 5 loads the tokenizer of any
``model_type: qwen2`` folder as its byte-level ``Qwen2Tokenizer``, whatever the folder holds, and a byte-level
BPE trained here is one the converter refuses.

Importable by benchmarks: ``build_tiny_model(out_dir, hidden=256, layers=4)``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SPECIAL_MARKERS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


@dataclass(frozen=True)
class TinyChat:
    """The chat format of a tiny model: its template, its special tokens and their roles."""

    template: str  # the Jinja chat template written into tokenizer_config.json and chat_template.jinja
    specials: tuple[str, ...]  # control symbols of the SentencePiece model (never produced by plain text)
    bos: str | None  # BOS token text; None = no BOS, and none added in front of text (as Qwen2.5 ships)
    eos: str  # EOS token text
    pad: str  # padding token text
    corpus: tuple[str, ...] = ()  # extra lines for the tokenizer's training text (the template's own words)


TINY_CHAT = TinyChat(
    template=CHAT_TEMPLATE, specials=tuple(SPECIAL_MARKERS), bos="<s>", eos="</s>", pad="</s>"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A helpful assistant answers questions clearly and kindly.
Paris is the capital of France. Water boils at one hundred degrees Celsius at sea level.
Write a short poem about the sea. Explain how a rainbow forms. What is the best way to learn to code?
Thank you very much! Please tell me a story about a dragon and a knight who became friends.
Yes, of course. No, I do not think so. Maybe tomorrow, when the weather is better.
The cat sat on the mat; the dog slept by the fire. Birds sing in the morning and owls at night.
Café, naïve, résumé, über, jalapeño, Zürich, São Paulo. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.
Good answers are short, kind and correct. Bad answers ramble, repeat themselves or say nothing at all.
"""


def train_tokenizer(out_dir: Path, vocab_size: int = 512, chat: TinyChat = TINY_CHAT) -> None:
    """Train a SentencePiece BPE model on the built-in corpus and write the tokenizer files."""
    import sentencepiece as spm

    lines = [line for line in [*_CORPUS.splitlines(), *chat.corpus] if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 20),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        # Control symbols: llama.cpp parses them as special tokens; plain text never produces them.
        control_symbols=list(chat.specials),
        normalization_rule_name="identity",
        split_digits=True,
        remove_extra_whitespaces=False,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "add_bos_token": chat.bos is not None,
                "add_eos_token": False,
                "bos_token": chat.bos,
                "eos_token": chat.eos,
                "unk_token": "<unk>",
                "pad_token": chat.pad,
                "model_max_length": 512,
                "chat_template": chat.template,
                "additional_special_tokens": list(chat.specials),
            },
            indent=2,
        )
    )


def build_tiny_model(
    out_dir: str | Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vocab: int = 512,
    max_positions: int = 512,
    seed: int = 0,
    chat: TinyChat = TINY_CHAT,
) -> Path:
    """Write a random-weight Llama model (safetensors), its tokenizer and chat template to ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(out, vocab, chat)
    _match_llama_cpp_spacing(out, chat)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger random weights: distinct, confident next-token distributions
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.08)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def _match_llama_cpp_spacing(out: Path, chat: TinyChat = TINY_CHAT) -> None:
    """Make transformers split text exactly as llama.cpp's SentencePiece tokenizer does.

    llama.cpp adds the "▁" space prefix at the start of every text fragment (after each special token
    too) even when the text already starts with a space. transformers 5's LlamaTokenizer adds it only
    once and never doubles it. A plain tokenizers pipeline with SentencePiece's original normalizer
    (prepend "▁", spaces to "▁") behaves like llama.cpp; it is saved as tokenizer.json and loaded
    verbatim.
    """
    from tokenizers import decoders, normalizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    backend = tokenizer._tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    # Saving drops the flag. Without it the converter writes none, and llama.cpp then puts BOS in front of
    # every SentencePiece prompt, where transformers puts none (Qwen2.5 ships "add_bos_token": false).
    config["add_bos_token"] = chat.bos is not None
    config["chat_template"] = chat.template
    config_path.write_text(json.dumps(config, indent=2))
    (out / "chat_template.jinja").write_text(chat.template)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny HF model folder, built once per test session (``DESKTOP_DPO_TINY_MODEL`` reuses one)."""
    reuse = os.environ.get("DESKTOP_DPO_TINY_MODEL")
    if reuse and (Path(reuse) / "config.json").exists():
        return Path(reuse)
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as an F32 GGUF (converted once per session with llama.cpp's converter)."""
    from desktop_dpo.core.export.gguf import convert_hf_to_gguf
    from desktop_dpo.core.jobs import run_job

    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama-f32.gguf"
    path, _events = run_job(convert_hf_to_gguf(tiny_model_dir, out, outtype="f32"))
    return path
