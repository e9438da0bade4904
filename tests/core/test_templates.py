"""Conversations render to the exact prompt text a model is trained and sampled on."""

from __future__ import annotations

import pytest

from desktop_dpo.core.llm.templates import (
    DEFAULT_STOP_STRINGS,
    DEFAULT_TEMPLATE,
    ChatTemplateError,
    render_prompt,
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": " Hello!"},  # as generated after "Assistant:", leading space included
    {"role": "user", "content": "Bye?"},
]

# A Gemma-style template (the shape of many instruction models' templates): it prints the BOS token itself,
# refuses system messages, and marks assistant text with HF's {% generation %} tag.
GEMMA_LIKE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<start_of_turn>user\n{{ message['content'] }}<end_of_turn>\n"
    "{% elif message['role'] == 'assistant' %}{% generation %}<start_of_turn>model\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endgeneration %}"
    "{% else %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def test_default_layout_is_user_assistant_with_both_stop_markers():
    text, stops = render_prompt(CONVERSATION)
    assert text == "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Bye?\nAssistant:"
    # A base model goes on to write the next turn of either speaker: both end the answer.
    assert stops == ["\nUser:", "\nAssistant:"]
    assert tuple(stops) == DEFAULT_STOP_STRINGS


def test_generated_answer_appended_to_the_prompt_matches_the_rendered_history():
    prompt, _ = render_prompt(CONVERSATION[:2])
    answer = " Hello!"  # what the model writes after "Assistant:"
    history, _ = render_prompt(
        [*CONVERSATION[:2], {"role": "assistant", "content": answer}], add_generation_prompt=False
    )
    assert history == prompt + answer + "\n"


def test_without_generation_prompt_the_text_ends_after_the_last_turn():
    text, _ = render_prompt(CONVERSATION, add_generation_prompt=False)
    assert text.endswith("User: Bye?\n")


def test_default_template_written_into_a_model_still_gets_its_stop_strings():
    # An export may store DEFAULT_TEMPLATE in the GGUF; the layout and its stop strings must not change.
    assert render_prompt(CONVERSATION, DEFAULT_TEMPLATE) == render_prompt(CONVERSATION, None)
    assert render_prompt(CONVERSATION, "") == render_prompt(CONVERSATION, None)


def test_model_template_is_rendered_with_its_tokens_and_tags():
    text, stops = render_prompt(CONVERSATION[1:], GEMMA_LIKE, bos="<bos>", eos="<eos>")
    assert text == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    # The engines stop on the end-of-turn token by id; its text (a model may write it as plain text) and
    # EOS are the stop strings.
    assert stops == ["<end_of_turn>", "<eos>"]


def test_same_rendering_as_transformers_apply_chat_template():
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[CONVERSATION[1:]],
        chat_template=GEMMA_LIKE,
        add_generation_prompt=True,
        bos_token="<bos>",
        eos_token="<eos>",
    )
    assert render_prompt(CONVERSATION[1:], GEMMA_LIKE, bos="<bos>", eos="<eos>")[0] == rendered[0]


def test_template_refusal_becomes_a_sentence_for_the_person():
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        render_prompt(CONVERSATION, GEMMA_LIKE)


def test_broken_template_and_malformed_messages_are_reported():
    with pytest.raises(ChatTemplateError, match="not valid Jinja"):
        render_prompt(CONVERSATION, "{% for m in messages %}")
    with pytest.raises(ChatTemplateError, match="Message 2"):
        render_prompt([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])
    with pytest.raises(ChatTemplateError, match="empty"):
        render_prompt([])


def test_templates_run_sandboxed():
    sneaky = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ChatTemplateError):
        render_prompt(CONVERSATION, sneaky)
