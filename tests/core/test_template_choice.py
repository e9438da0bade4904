"""A model's chat template: the known ones render as the models' own, a choice is stored per model, and a
broken or missing template is refused with a message instead of a silent fallback."""

from __future__ import annotations

import pytest

from desktop_dpo.core.llm.template_choice import (
    KNOWN_TEMPLATES,
    TemplateChoice,
    TemplateChoiceNeeded,
    check_template,
    chosen_template,
    require_usable_template,
    set_template_choice,
    template_for,
    template_status,
)
from desktop_dpo.core.llm.templates import (
    DEFAULT_STOP_STRINGS,
    ChatTemplateError,
    end_of_turn_marker,
    render_text,
    stop_strings,
    turn_end,
)
from desktop_dpo.core.model_files import TEMPLATE_CHOICE_KEY
from desktop_dpo.core.store import Store
from tests.core.test_dpo_templates_oracle import GEMMA3_TEMPLATE, LLAMA3_TEMPLATE, QWEN25_TEMPLATE

# mistralai/Mistral-7B-Instruct-v0.1, tokenizer_config.json "chat_template", verbatim.
MISTRAL_V01_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)
# microsoft/Phi-3.5-mini-instruct, tokenizer_config.json "chat_template", verbatim.
PHI35_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + "
    "'<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}"
    "{{ eos_token }}{% endif %}"
)

SYSTEM = {"role": "system", "content": "Answer in one line."}
TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Japan? 東京 😀"},
]
# name: (the model's own template verbatim, bos, eos, whether that template takes a system message)
SHIPPED = {
    "chatml": (QWEN25_TEMPLATE, "", "<|im_end|>", True),
    "llama3": (LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>", True),
    "gemma": (GEMMA3_TEMPLATE, "<bos>", "<eos>", True),
    "mistral": (MISTRAL_V01_TEMPLATE, "<s>", "</s>", False),
    "phi3": (PHI35_TEMPLATE, "<s>", "<|endoftext|>", True),
}
MARKERS = {
    "chatml": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "gemma": "<end_of_turn>",
    "mistral": "</s>",
    "phi3": "<|end|>",
}


@pytest.mark.parametrize("name", list(SHIPPED))
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_known_templates_render_as_the_models_own(name, generation_prompt):
    shipped, bos, eos, takes_system = SHIPPED[name]
    conversations = [TURNS, TURNS[:2]] + ([[SYSTEM, *TURNS]] if takes_system else [])
    for messages in conversations:
        ours = render_text(messages, KNOWN_TEMPLATES[name].text, bos, eos, generation_prompt)
        theirs = render_text(messages, shipped, bos, eos, generation_prompt)
        if name == "chatml" and messages[0]["role"] != "system":
            # Qwen2.5 adds its own default system prompt; plain ChatML adds none.
            theirs = theirs.split("<|im_end|>\n", 1)[1]
        assert ours == theirs, (name, messages)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_each_template_ends_an_answer_with_its_marker_and_stops_there(name):
    template = KNOWN_TEMPLATES[name].text
    _shipped, bos, eos, _system = SHIPPED[name]
    assert end_of_turn_marker(template, bos, eos) == MARKERS[name]
    assert stop_strings(template, bos, eos) == list(dict.fromkeys([MARKERS[name], eos]))
    # The shipped template ends a turn the same way (Phi-3.5 writes EOS after the last turn only: not a turn end).
    assert end_of_turn_marker(SHIPPED[name][0], bos, eos) == MARKERS[name]


def test_the_plain_layout_ends_turns_with_a_newline_and_stops_at_either_speaker():
    plain = KNOWN_TEMPLATES["plain"].text
    assert turn_end(plain) == "\n" and end_of_turn_marker(plain) == ""
    assert stop_strings(plain) == stop_strings(None) == list(DEFAULT_STOP_STRINGS)


def test_a_template_that_cannot_render_has_no_turn_end():
    assert turn_end("{% for m in messages %}") == ""
    assert stop_strings("{{ raise_exception('no') }}", "<s>", "</s>") == ["</s>"]


def test_check_template_renders_the_sample_or_says_what_is_wrong():
    text = check_template(KNOWN_TEMPLATES["chatml"].text)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert text.endswith("<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n")
    # Mistral v0.1 refuses a system message: it is checked without one.
    assert check_template(MISTRAL_V01_TEMPLATE).startswith("<s>[INST] What is the capital of France? [/INST]")
    with pytest.raises(ChatTemplateError, match="not valid Jinja"):
        check_template("{% if %}")
    with pytest.raises(ChatTemplateError, match="leaves out the conversation's text"):
        check_template("{% for m in messages %}<|turn|>{% endfor %}")
    with pytest.raises(ChatTemplateError, match="empty"):
        check_template("  ")


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "db.sqlite")
    yield store
    store.close()


def add(store, *, kind="hf", source="user", template=None, name="m"):
    info = {"chat_template": template, "bos_token": "<s>", "eos_token": "</s>"}
    model_id = store.add_model(
        name=name, path=f"/models/{name}", kind=kind, fingerprint=name, source=source, info=info
    )
    return model_id


def test_a_choice_is_stored_per_model_and_used_everywhere(store):
    own = KNOWN_TEMPLATES["phi3"].text
    first, second = add(store, template=own, name="a"), add(store, template=own, name="b")
    set_template_choice(store, first, TemplateChoice("known", name="chatml"))
    a, b = store.get_model(first), store.get_model(second)
    assert (
        chosen_template(a) == KNOWN_TEMPLATES["chatml"].text
        and template_for(a) == KNOWN_TEMPLATES["chatml"].text
    )
    assert chosen_template(b) is None and template_for(b) == own  # the other model keeps its own
    assert template_status(a).kind == "chosen" and "ChatML" in template_status(a).message
    # An edit: stored as text, checked first.
    custom = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    set_template_choice(store, first, TemplateChoice("custom", text=custom))
    assert template_for(store.get_model(first)) == custom
    with pytest.raises(ChatTemplateError):
        set_template_choice(store, first, TemplateChoice("custom", text="{% for %}"))
    assert template_for(store.get_model(first)) == custom, "a refused edit changes nothing"
    # Back to its own.
    set_template_choice(store, first, None)
    assert (
        TEMPLATE_CHOICE_KEY not in store.get_model(first).info and template_for(store.get_model(first)) == own
    )


def test_a_broken_own_template_needs_a_choice_and_engines_refuse_it(store):
    model = store.get_model(add(store, template="{% for m in messages %}{{ m.content }"))
    status = template_status(model)
    assert status.kind == "broken" and status.needs_choice
    with pytest.raises(TemplateChoiceNeeded, match=r"Models → Chat template"):
        require_usable_template(model)
    set_template_choice(store, model.id, TemplateChoice("known", name="mistral"))
    require_usable_template(store.get_model(model.id))  # chosen: usable


def test_a_gguf_without_template_needs_a_choice_but_a_base_folder_and_the_demo_do_not(store):
    gguf = store.get_model(add(store, kind="gguf", name="lost.gguf"))
    status = template_status(gguf)
    assert status.kind == "missing" and status.needs_choice and "no chat template" in status.message
    with pytest.raises(TemplateChoiceNeeded):
        require_usable_template(gguf)
    set_template_choice(store, gguf.id, TemplateChoice("known", name="plain"))
    assert not template_status(store.get_model(gguf.id)).needs_choice
    for model_id in (
        add(store, name="base-folder"),
        add(store, kind="gguf", source="demo", name="demo.gguf"),
    ):
        status = template_status(store.get_model(model_id))
        assert status.kind == "plain" and not status.needs_choice


def test_a_choice_this_version_cannot_read_is_ignored(store):
    model_id = add(store, template=KNOWN_TEMPLATES["gemma"].text)
    store.update_model_info(model_id, **{TEMPLATE_CHOICE_KEY: {"kind": "known", "name": "no-such-template"}})
    assert template_for(store.get_model(model_id)) == KNOWN_TEMPLATES["gemma"].text
