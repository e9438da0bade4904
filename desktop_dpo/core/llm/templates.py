"""Turn a conversation into the exact prompt text a model sees, for inference and for training alike.

A model that ships a chat template (GGUF ``tokenizer.chat_template`` or HF ``chat_template``) is rendered
with it, in a sandboxed Jinja environment set up like transformers' ``apply_chat_template`` (so both sides
of the app render a conversation to the same characters). A model without one, such as a base model, gets
:data:`DEFAULT_TEMPLATE`: a plain ``User:`` / ``Assistant:`` layout. A base model does not know where its
turn ends and goes on writing the dialogue, so that layout comes with stop strings for both markers
(:data:`DEFAULT_STOP_STRINGS`).

Only the standard library and jinja2 (a dependency of llama-cpp-python and torch) are used, imported
lazily, so the GUI may import this module at startup.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from desktop_dpo.core.errors import DesktopDpoError

# ---------------------------------------------------------------------------------------------------------
# DEFAULT TEMPLATE: used when a model has no chat template of its own (base models, e.g. the Gemma 270M demo).
#
#     <system text>            (only when there is a system message, followed by a blank line)
#     User: <text>
#     Assistant: <text>
#     User: <text>
#     Assistant:               (the generation prompt: the model writes " <answer>" after the colon)
#
# Contents are trimmed, so a stored answer " Hello" (as generated, with the space after the colon) and
# "Hello" render the same way. It is a Jinja template like any other, so an export can write it into a
# GGUF and the exported model keeps the layout it was trained on (render_prompt recognises it there and
# still returns the stop strings).
# ---------------------------------------------------------------------------------------------------------
DEFAULT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ message['content'] | trim }}{{ '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ 'User: ' }}{{ message['content'] | trim }}{{ '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'Assistant: ' }}{{ message['content'] | trim }}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)

# Stop strings of the default layout: a base model continues the dialogue with either speaker.
DEFAULT_STOP_STRINGS: tuple[str, ...] = ("\nUser:", "\nAssistant:")
# What ends a turn in the default layout: the newline before the next speaker marker. Training keeps it at
# the end of each answer (core/dpo/data.render_response_text), as the model writes it when it stops.
DEFAULT_TURN_END = "\n"

ROLES = ("system", "user", "assistant")

Message = Mapping[str, str]
"""One turn of a conversation: ``{"role": "system" | "user" | "assistant", "content": str}`` (TRL's format)."""


class ChatTemplateError(DesktopDpoError):
    """A conversation cannot be rendered with the model's chat template."""


def uses_default_template(chat_template: str | None) -> bool:
    """Whether ``chat_template`` means the default layout: none at all, or :data:`DEFAULT_TEMPLATE` itself
    (which an export writes into the GGUF of a model trained on it)."""
    return not chat_template or chat_template.strip() == DEFAULT_TEMPLATE


def render_prompt(
    messages: Sequence[Message],
    chat_template: str | None = None,
    bos: str = "",
    eos: str = "",
    add_generation_prompt: bool = True,
) -> tuple[str, list[str]]:
    """Render ``messages`` into prompt text and return it with the stop strings that go with it.

    Args:
        messages: the conversation, oldest first; each a mapping with ``role`` and ``content``.
        chat_template: the model's Jinja chat template, or None (or "") for :data:`DEFAULT_TEMPLATE`.
        bos: the model's beginning-of-sequence token text, passed to the template as ``bos_token``.
            Templates often print it; the caller tokenizes the text without adding a second one.
        eos: the end-of-sequence token text, passed as ``eos_token``.
        add_generation_prompt: end with the opening of an assistant turn (for generating a reply).

    Returns:
        ``(text, stop_strings)``. The default layout stops on both speaker markers; a model with its own
        template stops on its end-of-turn token, which the engine recognises by id, so its list holds only
        ``eos`` (useful when a converted model's EOS token is rendered as text).

    Raises:
        ChatTemplateError: a message is malformed, or the template refused the conversation (many
            templates insist on alternating user/assistant turns).
    """
    checked = _check_messages(messages)
    uses_default = uses_default_template(chat_template)
    template = DEFAULT_TEMPLATE if uses_default else str(chat_template)
    compiled = _compile(template)
    try:
        text = compiled.render(
            messages=checked,
            bos_token=bos,
            eos_token=eos,
            add_generation_prompt=add_generation_prompt,
        )
    except Exception as exc:  # jinja2.TemplateError and whatever a template's own code raises
        raise ChatTemplateError(
            f"The model's chat template could not render this conversation ({exc}). Check the order of the "
            "turns (many models expect user and assistant to alternate, some accept no system message)."
        ) from exc
    stops = list(DEFAULT_STOP_STRINGS) if uses_default else ([eos] if eos else [])
    return text, stops


def _check_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    # Plain dicts of str only: templates run sandboxed, and rich objects would widen what they can reach.
    checked: list[dict[str, str]] = []
    for number, message in enumerate(messages, start=1):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if role not in ROLES or not isinstance(content, str):
            raise ChatTemplateError(
                f"Message {number} of the conversation is not a turn the app understands: it needs a role "
                f"(system, user or assistant) and a text content, got {message!r}."
            )
        checked.append({"role": str(role), "content": content})
    if not checked:
        raise ChatTemplateError("The conversation is empty: write a prompt first.")
    return checked


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    """Compile a chat template in a sandbox configured like transformers' (cached: templates repeat)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _GenerationTag(jinja2.ext.Extension):
        # HF templates may mark assistant text with {% generation %}...{% endgeneration %} (for training
        # masks); rendering passes the body through unchanged, as transformers does.
        tags = {"generation"}  # noqa: RUF012 - jinja2's API is a class attribute

        def parse(self, parser: Any) -> Any:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON (as in transformers).
        return json.dumps(
            value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(
            f"The model's chat template is not valid Jinja ({exc}). Choose another model, or remove the "
            "template so the plain User:/Assistant: layout is used."
        ) from exc
