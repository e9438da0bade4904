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

import contextvars
import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.llm.generation import Message

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
# the end of each answer (core/dpo/tokenizing.render_response_text), as the model writes it when it stops.
DEFAULT_TURN_END = "\n"

ROLES = ("system", "user", "assistant")

"""One turn of a conversation: ``{"role": "system" | "user" | "assistant", "content": str}`` (TRL's format)."""


class ChatTemplateError(DesktopDpoError):
    """A conversation cannot be rendered with the model's chat template."""


class ChatTemplateTooCostly(ChatTemplateError):
    """A chat template ran past its rendering budget (time, steps or text) and was stopped."""


# ---------------------------------------------------------------------------------------------------------
# RENDERING BUDGET. A chat template comes with the model, so it is untrusted code: the sandbox keeps it from
# reaching the system, and these limits keep it from hanging the app or filling memory. Real templates loop
# once over the messages and render in milliseconds; these bounds are far above that.
# ---------------------------------------------------------------------------------------------------------
_RENDER_SECONDS = 5.0  # wall-clock time one rendering may take
_MAX_STEPS = 1_000_000  # loop iterations over range(), calls and intercepted operators, together
_MIN_OUTPUT_CHARS = 1_000_000  # text a rendering may produce, plus _OUTPUT_PER_INPUT_CHAR x the messages
_OUTPUT_PER_INPUT_CHAR = 4
_MAX_POWER_BITS = 1 << 16  # largest integer ``a ** b`` may build


@dataclass
class _RenderBudget:
    """What one rendering may still spend; checked by the sandbox's hooks as the template runs."""

    deadline: float  # time.monotonic() after which the rendering stops
    max_chars: int  # longest text (the output, or any string or list the template builds)
    steps: int = 0  # steps taken so far

    def tick(self) -> None:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise ChatTemplateTooCostly(_too_slow_message(f"after {_MAX_STEPS:,} steps"))
        if self.steps % 1024 == 0 and time.monotonic() > self.deadline:
            raise ChatTemplateTooCostly(_too_slow_message(f"after {_RENDER_SECONDS:g} seconds"))

    def check_size(self, value: Any) -> None:
        if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > self.max_chars:
            raise ChatTemplateTooCostly(_too_long_message(self.max_chars))


# The budget of the rendering under way in this thread (None while a template is only being compiled).
_BUDGET: contextvars.ContextVar[_RenderBudget | None] = contextvars.ContextVar(
    "chat_template_budget", default=None
)


def _current_budget() -> _RenderBudget:
    budget = _BUDGET.get()
    # Compiling folds constant expressions ("'x' * 3") by running them: bound those too.
    return budget or _RenderBudget(deadline=time.monotonic() + _RENDER_SECONDS, max_chars=_MIN_OUTPUT_CHARS)


def _too_slow_message(when: str) -> str:
    return (
        f"The model's chat template was stopped {when}: it loops far more than rendering a conversation "
        "needs. Choose another model, or remove the template so the plain User:/Assistant: layout is used."
    )


def _too_long_message(limit: int) -> str:
    return (
        f"The model's chat template was stopped: it builds more than {limit:,} characters of text for this "
        "conversation. Choose another model, or remove the template so the plain User:/Assistant: layout is "
        "used."
    )


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
        ``(text, stop_strings)``: :func:`stop_strings` of the template. The default layout stops on both
        speaker markers; a template stops on its end-of-turn marker and ``eos`` (the engines also stop on
        end-of-turn tokens by id; the strings catch a marker the model writes as plain text, as a base
        model given a known template does).

    Raises:
        ChatTemplateError: a message is malformed, or the template refused the conversation (many
            templates insist on alternating user/assistant turns).
    """
    text = render_text(messages, chat_template, bos, eos, add_generation_prompt)
    return text, stop_strings(chat_template, bos, eos)


def render_text(
    messages: Sequence[Message],
    chat_template: str | None = None,
    bos: str = "",
    eos: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """The text of :func:`render_prompt`, without the stop strings (same arguments, same errors)."""
    checked = _check_messages(messages)
    template = DEFAULT_TEMPLATE if uses_default_template(chat_template) else str(chat_template)
    compiled = _compile(template)
    input_chars = sum(len(m["content"]) for m in checked) + len(bos) + len(eos)
    budget = _RenderBudget(
        deadline=time.monotonic() + _RENDER_SECONDS,
        max_chars=_MIN_OUTPUT_CHARS + _OUTPUT_PER_INPUT_CHAR * input_chars,
    )
    token = _BUDGET.set(budget)
    try:
        parts: list[str] = []
        length = 0
        # Piece by piece, so that a template printing in a loop is stopped as its text grows.
        for part in compiled.generate(
            messages=checked,
            bos_token=bos,
            eos_token=eos,
            add_generation_prompt=add_generation_prompt,
        ):
            length += len(part)
            if length > budget.max_chars:
                raise ChatTemplateTooCostly(_too_long_message(budget.max_chars))
            budget.tick()
            parts.append(part)
        return "".join(parts)
    except ChatTemplateError:
        raise
    except Exception as exc:  # jinja2.TemplateError and whatever a template's own code raises
        raise ChatTemplateError(
            f"The model's chat template could not render this conversation ({exc}). Check the order of the "
            "turns (many models expect user and assistant to alternate, some accept no system message)."
        ) from exc
    finally:
        _BUDGET.reset(token)


# A turn's text no template trims or rewrites, to find where the template ends an assistant turn.
_ANSWER_PROBE = "Answer-9f3c."


def turn_end(chat_template: str | None, bos: str = "", eos: str = "") -> str:
    """The text a template writes right after an assistant's answer, up to the next turn: ChatML's
    ``"<|im_end|>\\n"``, Gemma's ``"<end_of_turn>\\n"``, Llama 3's ``"<|eot_id|>"``, Mistral's ``"</s>"``, the
    default layout's ``"\\n"``. "" when the template cannot render a one-exchange conversation."""
    return _turn_end(chat_template or "", bos, eos)


@functools.lru_cache(maxsize=64)
def _turn_end(chat_template: str, bos: str, eos: str) -> str:
    exchange = [{"role": "user", "content": "Question?"}, {"role": "assistant", "content": _ANSWER_PROBE}]
    try:
        one = render_text(exchange, chat_template, bos, eos, add_generation_prompt=False)
        two = render_text(
            [*exchange, {"role": "user", "content": "Next?"}],
            chat_template,
            bos,
            eos,
            add_generation_prompt=False,
        )
    except ChatTemplateError:
        return ""
    at = one.rfind(_ANSWER_PROBE)
    if at < 0:
        return ""
    after = one[at + len(_ANSWER_PROBE) :]
    # Some templates end the whole text differently from a turn (Phi-3 writes EOS after the last one):
    # keep only what the conversation with a further turn also has after the answer.
    then = two[at + len(_ANSWER_PROBE) :] if two.startswith(one[: at + len(_ANSWER_PROBE)]) else after
    common = common_prefix_length(after, then)
    if common < len(after) and common < len(then) and not after[:common].isspace():
        # Both go on and differ mid-word ("<|end|>", newline, "<|endoftext|>" vs "<|user|>"): end at the
        # last whitespace, not inside the word that differs.
        last_space = max(after.rfind(c, 0, common) for c in " \n\t")
        common = last_space + 1 if last_space >= 0 else common
    return after[:common]


def common_prefix_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items (characters, token ids) ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def end_of_turn_marker(chat_template: str | None, bos: str = "", eos: str = "") -> str:
    """The marker that ends an assistant turn in a template (``<|im_end|>``, ``<end_of_turn>``,
    ``<|eot_id|>``, ``</s>``, ``<|end|>``): :func:`turn_end` without the whitespace around it. "" for the
    default layout (its turns end with a newline) and for a template that writes nothing after an answer."""
    if uses_default_template(chat_template):
        return ""
    words = turn_end(chat_template, bos, eos).split()
    return words[0] if words else ""


def turn_end_token(
    chat_template: str | None, bos: str, eos: str, encode: Callable[[str], Sequence[int]]
) -> int | None:
    """The id of the template's end-of-turn marker when ``encode`` (the model's tokenizer, control tokens
    read as such) makes it one token; None otherwise. Decoded text has no control tokens, so only this id
    can end an answer at the marker (ChatML's ``<|im_end|>`` where EOS is another token, a known template
    picked for the model), as llama.cpp ends on its end-of-generation tokens."""
    marker = end_of_turn_marker(chat_template, bos, eos)
    ids = encode(marker) if marker else []
    return int(ids[0]) if len(ids) == 1 else None


def stop_strings(chat_template: str | None, bos: str = "", eos: str = "") -> list[str]:
    """Where a response ends, as text: the one list every engine, the export's GGUF header and Modelfile
    use. The default layout: both speaker markers (a base model goes on with the dialogue). A template:
    its end-of-turn marker, then ``eos``."""
    if uses_default_template(chat_template):
        return list(DEFAULT_STOP_STRINGS)
    marker = end_of_turn_marker(chat_template, bos, eos)
    return [s for s in dict.fromkeys((marker, eos)) if s]


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
    from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

    class _BudgetedSandbox(ImmutableSandboxedEnvironment):
        # Every call a template makes, and the operators that can build huge values, go through the budget.
        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
            budget = _current_budget()
            budget.tick()
            _check_counts(budget, args, kwargs)
            result = super().call(context, obj, *args, **kwargs)
            budget.check_size(result)
            return result

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            budget = _current_budget()
            budget.tick()
            if operator == "*":
                _check_repeat(budget, left, right)
                _check_repeat(budget, right, left)
            if (
                operator == "**"
                and _is_int(left)
                and _is_int(right)
                and right > 0
                and abs(left) > 1
                and left.bit_length() * right > _MAX_POWER_BITS
            ):
                raise ChatTemplateTooCostly(_too_long_message(budget.max_chars))
            result = super().call_binop(context, operator, left, right)
            budget.check_size(result)
            return result

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

    def budgeted_range(*args: int) -> _CountedRange:
        return _CountedRange(safe_range(*args))  # safe_range refuses more than 100,000 items

    env = _BudgetedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.filters = {name: _budgeted_filter(function) for name, function in env.filters.items()}
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["range"] = budgeted_range
    try:
        return env.from_string(template)
    except ChatTemplateError:
        raise
    except Exception as exc:  # TemplateSyntaxError, and RecursionError/MemoryError for absurd nesting
        raise ChatTemplateError(
            f"The model's chat template is not valid Jinja ({exc}). Choose another model, or remove the "
            "template so the plain User:/Assistant: layout is used."
        ) from exc


class _CountedRange:
    """``range()`` for templates: each item a loop takes costs one step of the rendering budget."""

    def __init__(self, items: range):
        self._items = items

    def __iter__(self) -> Iterator[int]:
        budget = _current_budget()
        for item in self._items:
            budget.tick()
            yield item

    def __reversed__(self) -> Iterator[int]:
        return iter(_CountedRange(self._items[::-1]))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: Any) -> Any:
        item = self._items[index]
        return _CountedRange(item) if isinstance(item, range) else item

    def __contains__(self, item: object) -> bool:
        return item in self._items


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repeat(budget: _RenderBudget, sequence: Any, times: Any) -> None:
    """Refuse ``'x' * n`` or ``[0] * n`` that would build more than the budget allows, before building it."""
    if (
        isinstance(sequence, (str, bytes, list, tuple))
        and _is_int(times)
        and len(sequence) * times > budget.max_chars
    ):
        raise ChatTemplateTooCostly(_too_long_message(budget.max_chars))


def _check_counts(budget: _RenderBudget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a width or count argument larger than the text a rendering may build ("x".ljust(10**9))."""
    for value in (*args, *kwargs.values()):
        if _is_int(value) and value > budget.max_chars:
            raise ChatTemplateTooCostly(_too_long_message(budget.max_chars))


def _budgeted_filter(function: Any) -> Any:
    """A Jinja filter that checks its count arguments and the size of what it returns."""

    # The value filtered (after the context or environment some filters take first) may be any number.
    options_start = 2 if getattr(function, "jinja_pass_arg", None) else 1

    @functools.wraps(function)
    def budgeted(*args: Any, **kwargs: Any) -> Any:
        budget = _current_budget()
        budget.tick()
        _check_counts(budget, args[options_start:], kwargs)
        result = function(*args, **kwargs)
        budget.check_size(result)
        return result

    return budgeted
