"""Oracle for real chat templates: an answer is trained exactly as the model writes it in its template.

TRL 1.16's ``DPOTrainer`` on conversational data renders the whole conversation with the template and takes
the completion as everything after the rendered prompt: the answer as the template writes it, the template's
end-of-turn marker and whatever the template writes after it, with no EOS appended. We must train the same
token ids, and so get the same loss, rewards and LoRA gradients (within 1e-4).

The templates are copied word for word from the models that ship them: Qwen2.5-Instruct's ChatML (with its
default system prompt), Gemma 3 IT's (with EOS ``<eos>``, as its tokenizer ships it, and with EOS
``<end_of_turn>``, as some conversions set it) and Llama 3 Instruct's (``<|eot_id|>`` ends a turn). The models
are tiny Qwen2- and Llama-shaped ones with random weights and byte-level BPE tokenizers trained here, with the
template's special tokens added. The LoRA adapter is perturbed (``init_lora_weights=False``) so that the
policy differs from the reference and the numbers mean something (see ``test_dpo_oracle.py``).

Where we differ from TRL: nowhere for these templates. (We put BOS in front of a prompt whose template does
not write it when the tokenizer adds one, as llama.cpp does at inference; all these templates either write
it or have none.)
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import pytest
import torch

from desktop_dpo.core.dpo.data import (
    PreferencePair,
    collate,
    collate_shared,
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

# name: (template, model shape, special tokens, bos, eos, pad)
SETUPS = {
    "chatml_qwen25": (QWEN25_TEMPLATE, "qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                      None, "<|im_end|>", "<|endoftext|>"),
    "gemma3_eos": (GEMMA3_TEMPLATE, "llama", ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
                   "<bos>", "<eos>", "<pad>"),
    "gemma3_eot": (GEMMA3_TEMPLATE, "llama", ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
                   "<bos>", "<end_of_turn>", "<pad>"),
    # EOS <|end_of_text|>, as Meta-Llama-3-8B-Instruct first shipped it: an EOS appended after <|eot_id|> would show.
    "llama3": (LLAMA3_TEMPLATE, "llama",
               ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "<|begin_of_text|>", "<|end_of_text|>", "<|end_of_text|>"),
}  # fmt: skip
# What ends an assistant turn in each template: the marker and what the template writes after it.
TURN_ENDS = {
    "chatml_qwen25": ["<|im_end|>", "\n"],
    "gemma3_eos": ["<end_of_turn>", "\n"],
    "gemma3_eot": ["<end_of_turn>", "\n"],
    "llama3": ["<|eot_id|>"],
}

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
]  # fmt: skip
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital of France.",
    "A cat sat on the mat and looked at the moon. Be brief. Two plus two? Four.",
    "Café au lait, thé, été. 東京は晴れ。日本語 😀 ☕ 🌙",
    "user\nassistant\nmodel\nsystem\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
]


def build_model(folder: Path, setup: str) -> Path:
    """A tiny model of the setup's shape, random weights, with a byte-level BPE tokenizer trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    template, shape, specials, bos, eos, pad = SETUPS[setup]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        CORPUS * 10,
        trainers.BpeTrainer(
            vocab_size=420, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    if bos is not None:  # like Gemma's and Llama 3's tokenizers: BOS in front of plain text
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    sizes = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    if shape == "qwen2":
        Qwen2ForCausalLM(Qwen2Config(**sizes)).save_pretrained(folder)
    else:
        LlamaForCausalLM(LlamaConfig(**sizes)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=list(SETUPS))
def setup(request, tmp_path_factory):
    """(name, TRL trainer on PAIRS, TRL's tokenised rows) for one template; built once per template."""
    name = request.param
    folder = build_model(tmp_path_factory.mktemp(name), name)
    trainer = trl_trainer(
        folder, tmp_path_factory.mktemp(f"{name}_out"), "sigmoid", conversational_rows(PAIRS)
    )
    rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    return name, trainer, rows


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def ours(tokenizer) -> list:
    template = resolve_chat_template(tokenizer)
    return [
        tokenize_pair(tokenizer, p, chat_template=template, max_length=512, max_prompt_length=256)
        for p in PAIRS
    ]


def test_answers_are_trained_as_the_template_writes_them(setup):
    """Same ids as TRL; each answer ends with the template's end of turn (and what follows it), no EOS added."""
    name, trainer, trl_rows = setup
    tokenizer = trainer.processing_class
    mine = ours(tokenizer)
    for pair, tp, theirs in zip(PAIRS, mine, trl_rows, strict=True):
        assert list(tp.prompt_ids) == theirs["prompt_ids"], pair.comparison_id
        assert list(tp.chosen_ids) == theirs["chosen_ids"], pair.comparison_id
        assert list(tp.rejected_ids) == theirs["rejected_ids"], pair.comparison_id
        assert not tp.truncated and not tp.prompt_truncated
        for response, ids in ((pair.chosen, tp.chosen_ids), (pair.rejected, tp.rejected_ids)):
            pieces = [tokenizer.decode([i]) for i in ids]
            assert pieces[-len(TURN_ENDS[name]) :] == TURN_ENDS[name], pieces
            # (decode composes "e" + U+0301 into "é": compare composed text; the ids above are exact)
            text = nfc(tokenizer.decode(list(ids)))
            rendered = render_response_text(
                pair.messages, response, tokenizer, resolve_chat_template(tokenizer)
            )
            assert text == nfc(rendered)
            if name == "chatml_qwen25":  # ChatML keeps the answer as written, whitespace included
                assert rendered == response + "<|im_end|>\n"
            else:  # Gemma and Llama 3 trim the answer in their templates
                assert rendered == response.strip() + "".join(TURN_ENDS[name])
    # What used to be trained for "Paris is the capital of France.": [..., '.', EOS]. Now:
    first = [tokenizer.decode([i]) for i in mine[0].chosen_ids]
    assert first[-len(TURN_ENDS[name]) - 1 :] == [".", *TURN_ENDS[name]]
    assert tokenizer.eos_token_id not in mine[0].chosen_ids or tokenizer.eos_token in TURN_ENDS[name]


def test_loss_rewards_and_gradients_equal_trl(setup):
    """Same padded batch as TRL's collator; same loss, rewards and LoRA gradients in both our layouts."""
    _name, trainer, trl_rows = setup
    tokenizer, model = trainer.processing_class, trainer.model
    mine = ours(tokenizer)
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
    # The comparison means something: the perturbed adapter moved the policy away from the reference.
    assert abs(theirs["loss"] - math.log(2)) > 1e-3
