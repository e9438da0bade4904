"""Oracle for real chat templates: an answer is trained exactly as the model writes it in its template.

TRL 1.16's ``DPOTrainer`` on conversational data renders the whole conversation with the template and takes
the completion as everything after the rendered prompt: the answer as the template writes it, the template's
end-of-turn marker and whatever the template writes after it, with no EOS appended. We must train the same
token ids, and so get the same loss, rewards and LoRA gradients (within 1e-4).

The templates are copied word for word from the models that ship them: Qwen2.5-Instruct's ChatML (with its
default system prompt), Gemma 3 IT's (with EOS ``<eos>``, as its tokenizer ships it, and with EOS
``<end_of_turn>``, as some conversions set it), Llama 3 Instruct's (``<|eot_id|>`` ends a turn), Mistral 7B
Instruct v0.3's (``[INST]``; the answer is ``" " + answer|trim + "</s>"``) and Llama 2 Chat's (``[INST]`` as
plain text; ``" " + answer.strip() + " </s>"``). The no-template layout is in ``test_dpo_oracle.py``.

The models are tiny Qwen2- and Llama-shaped ones with random weights and tokenizers trained here: byte-level
BPE for the first four, and for Mistral and Llama 2 a SentencePiece-style one, as transformers 5 builds it for
those models (``LlamaTokenizer``: BPE with byte fallback, ``<unk>`` ``<s>`` ``</s>``, a Metaspace pre-tokenizer
that writes spaces as "▁" and puts one in front of the text: only at the very start with ``legacy=False``,
after every special token too with ``legacy=True``). SentencePiece is where the prompt/answer boundary is
delicate: the space a template writes before the answer is the "▁" of the answer's first word. The LoRA
adapter is perturbed (``init_lora_weights=False``) so that the policy differs from the reference and the
numbers mean something (see ``test_dpo_oracle.py``).

Cases: single and multi-turn prompts, a system message, unicode (emoji, CJK, combining accents),
whitespace-only and empty answers (as chosen and as rejected), and answers cut by ``max_length``.

Where we differ from TRL, on purpose (``tokenize_pair``'s docstring; a test shows each, ours against theirs):

- Mistral v0.3's template writes the system message into the last user turn only while the conversation
  ends there, so TRL's whole conversation has none, and its completion starts inside the last user turn:
  the model would be trained to write the person's question, without the system message it is shown at
  inference. We train the prompt the sampler rendered, then the answer's turn only.
- A prompt longer than ``max_prompt_length`` loses its oldest turns (a system message and the last user
  turn stay), then is cut from the left. TRL keeps the start of prompt + answer: when the prompt alone fills
  ``max_length`` it drops the pair without a word, and when it nearly does it trains the first few tokens of
  each answer after a history it keeps whole. The person judged the answers, to the last word; the old turns
  rarely decide which one is better. So we keep the question and the whole answers, with their end of turn,
  and report how many prompts were shortened.
- Every cut is flagged (``truncated``, ``prompt_truncated``) and counted for the run log; TRL cuts silently.

Where the cut is the same (a prompt that fits, answers cut keeping their start), ids, masks, loss, rewards and
LoRA gradients agree with TRL within 1e-4. (We also put BOS in front of a prompt whose template does not write
it when the tokenizer adds one, as llama.cpp does at inference; all these templates either write it or have
none.)
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from desktop_dpo.core.dpo.batches import collate, collate_shared
from desktop_dpo.core.dpo.data import PreferencePair
from desktop_dpo.core.dpo.tokenizing import (
    TokenizedPair,
    render_prompt_text,
    render_response_text,
    resolve_chat_template,
    tokenize_pair,
)
from tests.core.test_dpo_oracle import (
    TOL,
    conversational_rows,
    lora_grads,
    our_numbers,
    trl_numbers,
    trl_trainer,
)

torch.set_num_threads(1)

# Qwen/Qwen2.5-*-Instruct, tokenizer_config.json "chat_template", verbatim.
QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# google/gemma-3-*-it, tokenizer_config.json "chat_template", verbatim.
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

# meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json "chat_template", verbatim.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' "
    "+ message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# mistralai/Mistral-7B-Instruct-v0.3, tokenizer_config.json "chat_template" (the version with tool calls that
# checks user/assistant alternation), verbatim. Copied from two public projects that vendor it word for word: a
# chat-template viewer (its MISTRAL constant, used for "mistralai/Mistral-7B-Instruct-v0.3") and a tool-use
# harness (its "lmstudio-community/Mistral-7B-Instruct-v0.3-GGUF" entry). It has no generation prompt: the
# prompt ends with "[/INST]", and the assistant turn is " " + answer|trim + eos_token.
MISTRAL_V03_TEMPLATE = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

# meta-llama/Llama-2-7b-chat-hf (and -13b-chat-hf), tokenizer_config.json "chat_template", verbatim (the double
# space in "' '  + content" is theirs). [INST] is plain text to this tokenizer; BOS opens every exchange.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
    "%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class Setup:
    """A template with the model and tokenizer it comes with."""

    template: str
    shape: str  # "qwen2" or "llama"
    tokenizer: str  # "byte_bpe" (trained here as is) or "sentencepiece" (transformers' LlamaTokenizer)
    specials: tuple[str, ...]  # special tokens of the template, added to the vocabulary
    bos: str | None
    eos: str
    pad: str | None  # None: TRL pads with EOS
    turn_end: tuple[str, ...]  # the tokens that end an assistant turn (convert_ids_to_tokens)
    written: Callable[[str], str]  # the text the template writes for an answer, after the prompt
    legacy: bool = False  # SentencePiece only: a "▁" after every special token too (Metaspace "always")


_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")
_LLAMA3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
SETUPS = {
    "chatml_qwen25": Setup(QWEN25_TEMPLATE, "qwen2", "byte_bpe", ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
                           None, "<|im_end|>", "<|endoftext|>", ("<|im_end|>", "Ċ"),
                           lambda answer: answer + "<|im_end|>\n"),
    "gemma3_eos": Setup(GEMMA3_TEMPLATE, "llama", "byte_bpe", _GEMMA_SPECIALS, "<bos>", "<eos>", "<pad>",
                        ("<end_of_turn>", "Ċ"), lambda answer: answer.strip() + "<end_of_turn>\n"),
    "gemma3_eot": Setup(GEMMA3_TEMPLATE, "llama", "byte_bpe", _GEMMA_SPECIALS, "<bos>", "<end_of_turn>", "<pad>",
                        ("<end_of_turn>", "Ċ"), lambda answer: answer.strip() + "<end_of_turn>\n"),
    # EOS <|end_of_text|>, as Meta-Llama-3-8B-Instruct first shipped it: an EOS appended after <|eot_id|> would show.
    "llama3": Setup(LLAMA3_TEMPLATE, "llama", "byte_bpe", _LLAMA3_SPECIALS, "<|begin_of_text|>", "<|end_of_text|>",
                    "<|end_of_text|>", ("<|eot_id|>",), lambda answer: answer.strip() + "<|eot_id|>"),
    # [INST] and [/INST] are control tokens of the v3 tokenizer; no pad token.
    "mistral_v03": Setup(MISTRAL_V03_TEMPLATE, "llama", "sentencepiece", ("[INST]", "[/INST]"), "<s>", "</s>", None,
                         ("</s>",), lambda answer: " " + answer.strip() + "</s>"),
    "llama2_chat": Setup(LLAMA2_CHAT_TEMPLATE, "llama", "sentencepiece", (), "<s>", "</s>", None, ("▁", "</s>"),
                         lambda answer: " " + answer.strip() + " </s>", legacy=True),
}  # fmt: skip

PAIRS = [
    PreferencePair(1, 1, [{"role": "user", "content": "What is the capital of France?"}],
                   "Paris is the capital of France.", "The cat sat on the mat, I think."),
    # A system message, several turns; an answer with a trailing newline against a whitespace-only one.
    PreferencePair(2, 2, [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Two plus two?"},
                          {"role": "assistant", "content": "Four."},
                          {"role": "user", "content": "And the moon? 🌙"}],
                   "The moon looked at the cat.\n", "   \n"),
    # Unicode: emoji, CJK, combining accents (e + U+0301), in the prompt and the answers.
    PreferencePair(3, 3, [{"role": "user", "content": "Caf\u00e9 ou the\u0301 ? 東京はどう？"}],
                   "Le the\u0301 😀, 東京は晴れ。\n", " Un caf\u00e9 ☕ "),
    # Empty answers, chosen and rejected: the turn ends at once.
    PreferencePair(4, 4, [{"role": "user", "content": "Say nothing at all."}], "", "Paris is the capital of France."),
    PreferencePair(5, 5, [{"role": "user", "content": "Two plus two?"}], "Four.", ""),
]  # fmt: skip
# (setup, comparison id) of pairs whose ids differ from TRL's on purpose; shown in their own test.
DIFFERS = {("mistral_v03", 2)}
# One question, answers of every length: with max_length = prompt + 4, the long ones are cut, the empty one is not.
_QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CUT_PAIRS = [
    PreferencePair(7, 7, _QUESTION, "Paris is the capital of France.", "The cat sat on the mat, I think."),
    PreferencePair(8, 8, _QUESTION, "Le the\u0301 😀, 東京は晴れ。\n", ""),
    PreferencePair(9, 9, _QUESTION, "", " Un caf\u00e9 ☕ and the moon looked at the cat."),
]
# A long conversation: its older turns, not the question, make the prompt long.
LONG = PreferencePair(
    6, 6,
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Tell me about the quick brown fox. " * 3},
     {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog. " * 3},
     {"role": "user", "content": "And the cat on the mat? " * 3},
     {"role": "assistant", "content": "A cat sat on the mat and looked at the moon. " * 3},
     {"role": "user", "content": "What is the capital of France?"}],
    "Paris is the capital of France.", "The cat sat on the mat.",
)  # fmt: skip
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital of France.",
    "A cat sat on the mat and looked at the moon. Be brief. Two plus two? Four.",
    "Café au lait, thé, été. 東京は晴れ。日本語 😀 ☕ 🌙",
    "user\nassistant\nmodel\nsystem\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
]
SENTENCEPIECE_CORPUS = [*CORPUS[:4], "[INST] [/INST] <<SYS>>\n<</SYS>> Un café."]


def byte_level_tokenizer(setup: Setup):
    """A byte-level BPE tokenizer trained here, with the template's special tokens (Qwen, Gemma, Llama 3 style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        CORPUS * 10,
        trainers.BpeTrainer(
            vocab_size=420,
            special_tokens=list(setup.specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    if setup.bos is not None:  # like Gemma's and Llama 3's tokenizers: BOS in front of plain text
        backend.post_processor = processors.TemplateProcessing(
            single=f"{setup.bos} $A", special_tokens=[(setup.bos, backend.token_to_id(setup.bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=setup.bos, eos_token=setup.eos, pad_token=setup.pad
    )


def sentencepiece_tokenizer(setup: Setup):
    """A SentencePiece-style tokenizer as transformers 5 builds one for Llama 2 and Mistral (``LlamaTokenizer``).

    The pieces are learnt here with the ``tokenizers`` BPE trainer on words that start with "▁", as
    SentencePiece sees them, and laid out as in those models: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, the 256 byte
    tokens ``<0x00>``…``<0xFF>`` for the byte fallback, then the pieces. ``LlamaTokenizer`` adds the rest:
    no normalizer, the Metaspace pre-tokenizer (prepend scheme "always" with ``legacy=True``, else "first"),
    the decoder, and BOS in front of plain text.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.train_from_iterator(
        SENTENCEPIECE_CORPUS * 10,
        trainers.BpeTrainer(vocab_size=420, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False),
    )
    trained = json.loads(backend.to_str())["model"]
    pieces = sorted(trained["vocab"], key=trained["vocab"].get)[3:]
    vocab = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256)), *pieces]
    tokenizer = LlamaTokenizer(
        vocab={piece: i for i, piece in enumerate(vocab)},
        merges=[tuple(merge) for merge in trained["merges"]],
        legacy=setup.legacy,
        add_bos_token=True,
    )
    if setup.specials:
        tokenizer.add_special_tokens({"additional_special_tokens": list(setup.specials)})
    return tokenizer


def build_model(folder: Path, setup: Setup) -> Path:
    """A tiny model of the setup's shape, random weights, with its tokenizer trained here."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if setup.tokenizer == "sentencepiece":
        tokenizer = sentencepiece_tokenizer(setup)
    else:
        tokenizer = byte_level_tokenizer(setup)
    tokenizer.chat_template = setup.template
    tokenizer.save_pretrained(folder)
    if setup.tokenizer == "sentencepiece":
        # LlamaTokenizer does not save its legacy flag; the model's tokenizer_config.json carries it.
        config_file = folder / "tokenizer_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "legacy": setup.legacy}))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert type(tokenizer).__name__ == "LlamaTokenizer"
        scheme = "always" if setup.legacy else "first"
        assert f"prepend_scheme={scheme}" in repr(tokenizer.backend_tokenizer.pre_tokenizer)
    torch.manual_seed(0)
    sizes = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    if setup.shape == "qwen2":
        Qwen2ForCausalLM(Qwen2Config(**sizes)).save_pretrained(folder)
    else:
        LlamaForCausalLM(LlamaConfig(**sizes)).save_pretrained(folder)
    return folder


@dataclass(frozen=True)
class Built:
    name: str
    setup: Setup
    folder: Path  # the tiny model and its tokenizer
    trainer: object  # TRL's DPOTrainer on PAIRS, no truncation
    rows: list[dict]  # TRL's tokenised PAIRS


@pytest.fixture(scope="module", params=list(SETUPS))
def built(request, tmp_path_factory) -> Built:
    """The tiny model of one setup and TRL's trainer on PAIRS; built once per setup."""
    name = request.param
    folder = build_model(tmp_path_factory.mktemp(name), SETUPS[name])
    trainer = trl_trainer(
        folder, tmp_path_factory.mktemp(f"{name}_out"), "sigmoid", conversational_rows(PAIRS)
    )
    rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    return Built(name, SETUPS[name], folder, trainer, rows)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def tokenize(tokenizer, pairs, max_length: int = 512, max_prompt_length: int = 256) -> list[TokenizedPair]:
    template = resolve_chat_template(tokenizer)
    return [
        tokenize_pair(
            tokenizer, p, chat_template=template, max_length=max_length, max_prompt_length=max_prompt_length
        )
        for p in pairs
    ]


def tokens(tokenizer, ids) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(ids))


def assert_same_numbers_as_trl(trainer, trl_rows, mine: list[TokenizedPair]) -> dict[str, float]:
    """Same padded batch as TRL's collator (which cuts at ``max_length``); same loss, rewards and LoRA gradients
    in both our layouts. Returns TRL's numbers."""
    tokenizer, model = trainer.processing_class, trainer.model
    batch = collate(mine, pad_id=tokenizer.pad_token_id)
    trl_batch = trainer.data_collator(trl_rows)
    assert torch.equal(batch["input_ids"], trl_batch["input_ids"])
    assert torch.equal(batch["attention_mask"], trl_batch["attention_mask"])
    assert torch.equal(batch["loss_mask"], trl_batch["completion_mask"])

    theirs = trl_numbers(trainer, trl_rows)
    trl_grads = lora_grads(model)
    keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]
    for layout in (collate, collate_shared):
        numbers = our_numbers(model, layout(mine, pad_id=tokenizer.pad_token_id), "sigmoid", False)
        deltas = {key: abs(numbers[key] - theirs[key]) for key in keys}
        assert max(deltas.values()) < TOL, (layout.__name__, deltas, numbers, theirs)
        for name, grad in lora_grads(model).items():
            torch.testing.assert_close(grad, trl_grads[name], atol=TOL, rtol=TOL, msg=name)
    # The comparison means something: the perturbed adapter moved the policy away from the reference, by
    # rewards well above the tolerance (the loss stays near ln 2 when chosen and rejected move alike).
    assert max(abs(theirs["rewards/chosen"]), abs(theirs["rewards/rejected"])) > 10 * TOL
    assert abs(theirs["loss"] - math.log(2)) > TOL
    return theirs


def agreeing(name: str, items: list) -> list:
    """``items`` (one per pair of PAIRS) without those of the pairs whose ids we make differ from TRL's."""
    return [
        item for pair, item in zip(PAIRS, items, strict=True) if (name, pair.comparison_id) not in DIFFERS
    ]


def test_answers_are_trained_as_the_template_writes_them(built):
    """Same ids as TRL (but where we differ on purpose: DIFFERS); each answer ends with the template's end of
    turn (and what follows it), no EOS added; the prompt is tokenised as it is alone."""
    setup, tokenizer = built.setup, built.trainer.processing_class
    template = resolve_chat_template(tokenizer)
    mine = tokenize(tokenizer, PAIRS)
    for pair, tp, theirs in zip(PAIRS, mine, built.rows, strict=True):
        ids = (list(tp.prompt_ids), list(tp.chosen_ids), list(tp.rejected_ids))
        trl_ids = (theirs["prompt_ids"], theirs["chosen_ids"], theirs["rejected_ids"])
        if (built.name, pair.comparison_id) in DIFFERS:  # see test_a_system_message_is_trained_where_...
            assert ids != trl_ids
        else:
            assert ids == trl_ids, pair.comparison_id
        assert not tp.truncated and not tp.prompt_truncated
        # The prompt is the one the sampler rendered, tokenised as it is alone: the model's context at inference.
        prompt_text = render_prompt_text(pair.messages, tokenizer, template)
        assert list(tp.prompt_ids) == tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        for response, ids in ((pair.chosen, tp.chosen_ids), (pair.rejected, tp.rejected_ids)):
            assert tuple(tokens(tokenizer, ids)[-len(setup.turn_end) :]) == setup.turn_end
            rendered = render_response_text(pair.messages, response, tokenizer, template)
            # ChatML keeps the answer as written, whitespace included; the others trim it.
            assert rendered == setup.written(response)
            if (
                not setup.legacy
            ):  # (legacy Metaspace decodes a space after every special token: no round trip)
                # (decode composes "e" + U+0301 into "é": compare composed text; the ids above are exact)
                assert nfc(tokenizer.decode([*tp.prompt_ids, *ids])) == nfc(prompt_text + rendered)
    # What used to be trained for "Paris is the capital of France.": [..., '.', EOS]. Now:
    first = tokens(tokenizer, mine[0].chosen_ids)
    assert (
        first[-len(setup.turn_end) - 1].endswith(".")
        and tuple(first[-len(setup.turn_end) :]) == setup.turn_end
    )
    assert tokenizer.eos_token_id not in mine[0].chosen_ids or tokenizer.eos_token in setup.turn_end
    # An empty answer, chosen or rejected, is what the template writes for "": its end of turn, and for
    # Mistral and Llama 2 the space they write before an answer, a lone "▁".
    written_empty = tokenizer(setup.written(""), add_special_tokens=False)["input_ids"]
    for empty in (mine[3].chosen_ids, mine[4].rejected_ids):
        assert list(empty) == written_empty and len(empty) <= len(setup.turn_end) + 1
    if setup.tokenizer == "sentencepiece":
        # The space the template writes before the answer is the "▁" of its first word, as SentencePiece
        # writes a word: "▁Paris", not a lone "▁" then "Paris" (after "[/INST]", a special token to Mistral
        # v0.3 and plain text to Llama 2, with either Metaspace prepend scheme).
        assert first[0] == "▁Paris", first
        assert tokens(tokenizer, mine[2].rejected_ids)[0] == "▁Un"  # " Un café ☕ ", trimmed, then " " + it


def test_loss_rewards_and_gradients_equal_trl(built):
    """Same padded batch as TRL's collator; same loss, rewards and LoRA gradients in both our layouts."""
    mine = tokenize(built.trainer.processing_class, PAIRS)
    assert_same_numbers_as_trl(built.trainer, agreeing(built.name, built.rows), agreeing(built.name, mine))


@pytest.mark.parametrize("built", ["mistral_v03"], indirect=True)
def test_a_system_message_is_trained_where_the_model_sees_it(built, tmp_path):
    """Where we differ from TRL, shown. Mistral v0.3's template writes the system message into the last user
    turn, and only while that turn is the last message: in the prompt the model answers (what the sampler
    rendered and llama.cpp was given), not once an answer follows. TRL renders the whole conversation, so its
    sequence has no system message at all, and its completion starts inside the last user turn: the model
    would be trained to write the person's question ("And the moon? 🌙[/INST]") before its answer, in a
    context it is never shown. We train the prompt as the model saw it, system message included, and the
    answer's turn only (" " + answer + "</s>"). Better for the person: their system message shapes the
    answers at inference, so the preference is learnt with it; and only what the model wrote is scored.
    Given that same text as a plain prompt and completion, TRL computes the same loss, rewards, gradients."""
    tokenizer = built.trainer.processing_class
    template = resolve_chat_template(tokenizer)
    pair, theirs = PAIRS[1], built.rows[1]
    [mine] = tokenize(tokenizer, [pair])
    prompt_text = render_prompt_text(pair.messages, tokenizer, template)
    assert prompt_text.endswith("[INST] Be brief.\n\nAnd the moon? 🌙[/INST]")

    # Ours: that prompt, then the answer's turn and nothing else.
    assert list(mine.prompt_ids) == tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    for answer, ids in ((pair.chosen, mine.chosen_ids), (pair.rejected, mine.rejected_ids)):
        assert list(ids) == tokenizer(" " + answer.strip() + "</s>", add_special_tokens=False)["input_ids"]
    # TRL: the same start, then no system message, and the question scored as the model's own text.
    assert theirs["prompt_ids"] == list(mine.prompt_ids[: len(theirs["prompt_ids"])])
    assert len(theirs["prompt_ids"]) < len(mine.prompt_ids)
    assert "Be brief" not in tokenizer.decode(theirs["prompt_ids"] + theirs["chosen_ids"])
    for trl_ids, ids in (
        (theirs["chosen_ids"], mine.chosen_ids),
        (theirs["rejected_ids"], mine.rejected_ids),
    ):
        assert tokenizer.decode(trl_ids).startswith("And the moon? 🌙[/INST]")
        assert trl_ids[-len(ids) :] == list(ids)  # the answer's turn, after the question

    # Fed our text (the prompt without its BOS, which TRL's tokenizer adds, and the answers' turns), TRL agrees.
    rows = [
        {
            "prompt": render_prompt_text(p.messages, tokenizer, template).removeprefix(tokenizer.bos_token),
            "chosen": render_response_text(p.messages, p.chosen, tokenizer, template),
            "rejected": render_response_text(p.messages, p.rejected, tokenizer, template),
        }
        for p in PAIRS
    ]
    trainer = trl_trainer(built.folder, tmp_path, "sigmoid", rows)
    trl_rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    everything = tokenize(tokenizer, PAIRS)
    for tp, row in zip(everything, trl_rows, strict=True):
        assert (list(tp.prompt_ids), list(tp.chosen_ids), list(tp.rejected_ids)) == (
            row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])  # fmt: skip
    assert_same_numbers_as_trl(trainer, trl_rows, everything)


def test_answers_cut_by_max_length_equal_trl(built, tmp_path):
    """A prompt that fits and answers longer than the room left: both keep the start of each answer (its end of
    turn is lost) and train the same ids, loss, rewards and LoRA gradients. We also flag each cut pair."""
    tokenizer = built.trainer.processing_class
    whole = tokenize(tokenizer, CUT_PAIRS)
    prompt_length = len(whole[0].prompt_ids)
    max_length = prompt_length + 4
    trainer = trl_trainer(
        built.folder, tmp_path, "sigmoid", conversational_rows(CUT_PAIRS), max_length=max_length
    )
    trl_rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert len(trl_rows) == len(CUT_PAIRS)  # no prompt fills max_length, so TRL keeps every pair
    mine = tokenize(tokenizer, CUT_PAIRS, max_length=max_length, max_prompt_length=prompt_length)

    cut = []
    for full, tp in zip(whole, mine, strict=True):
        assert tp.prompt_ids == full.prompt_ids and not tp.prompt_truncated
        for kept, untouched in ((tp.chosen_ids, full.chosen_ids), (tp.rejected_ids, full.rejected_ids)):
            assert kept == untouched[:4]  # the start of the answer, or all of a short one
            cut.append(len(kept) < len(untouched))
        assert tp.truncated == (cut[-2] or cut[-1])  # flagged, so the run log counts it
    assert cut == [True, True, True, False, False, True], cut  # the empty answers are whole, the rest cut
    assert_same_numbers_as_trl(trainer, trl_rows, mine)


def test_a_long_prompt_loses_its_oldest_turns_where_trl_cuts_the_answer_or_drops_the_pair(built, tmp_path):
    """Where we differ from TRL, shown. A long conversation whose older turns make the prompt nearly fill
    ``max_length``: TRL keeps the whole history and trains the first 2 tokens of each answer; with the prompt
    alone at ``max_length`` it drops the pair without a word (its ``len(prompt_ids) < max_length`` filter).
    We drop the older turns, keep the system message and the question, train both answers whole with their
    end of turn, and flag the pair (``prompt_truncated``) so the run log counts it. Better for the person:
    they judged the whole answers, which the older turns rarely decide; where an answer stops is part of what
    they preferred; and a pair they judged is never thrown away unseen."""
    setup, tokenizer = built.setup, built.trainer.processing_class
    question = {"role": "user", "content": "What is the capital of France?"}
    [untouched] = tokenize(tokenizer, [LONG])
    [last_turn] = tokenize(
        tokenizer, [PreferencePair(6, 6, [LONG.messages[0], question], LONG.chosen, LONG.rejected)]
    )
    rows = conversational_rows([LONG, PAIRS[0]])
    trl_whole = trl_trainer(built.folder, tmp_path / "whole", "sigmoid", rows).train_dataset[0]
    trl_prompt, short_prompt = len(trl_whole["prompt_ids"]), len(last_turn.prompt_ids)
    longest_answer = max(len(untouched.chosen_ids), len(untouched.rejected_ids))
    assert trl_prompt >= short_prompt + longest_answer  # the older turns are what makes it long

    for max_length, trl_keeps in ((trl_prompt + 2, True), (trl_prompt, False)):
        [ours] = tokenize(tokenizer, [LONG], max_length=max_length, max_prompt_length=short_prompt)
        # Ours: the system message and the question, then both answers whole, as without any limit.
        assert ours.prompt_truncated and not ours.truncated
        assert ours.prompt_ids == last_turn.prompt_ids
        assert (ours.chosen_ids, ours.rejected_ids) == (untouched.chosen_ids, untouched.rejected_ids)
        assert tuple(tokens(tokenizer, ours.chosen_ids)[-len(setup.turn_end) :]) == setup.turn_end
        prompt = tokenizer.decode(list(ours.prompt_ids))
        assert "Be brief." in prompt and "capital of France?" in prompt and "fox" not in prompt

        # TRL: the whole history, then the first 2 tokens of each answer; or the pair is gone.
        trainer = trl_trainer(
            built.folder, tmp_path / str(max_length), "sigmoid", rows, max_length=max_length
        )
        kept = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        if trl_keeps:
            assert len(kept) == 2 and kept[0]["prompt_ids"] == trl_whole["prompt_ids"]
            trl_batch = trainer.data_collator(kept[:1])
            assert trl_batch["completion_mask"].sum(dim=1).tolist() == [2, 2]
            assert min(len(ours.chosen_ids), len(ours.rejected_ids)) > 2
        else:
            assert len(kept) == 1 and kept[0]["prompt_ids"] != trl_whole["prompt_ids"]
