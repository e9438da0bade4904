"""Which chat template a model is used with: its own, a known one the person picked, or their edit.

One answer for every part of the app. :func:`chosen_template` is what the engines (sampling, chat,
evaluation), training and the export use; a model without a choice uses the template in its own files
(what the engines and the tokenizer read there, and what the registry recorded as ``info["chat_template"]``).

- :data:`KNOWN_TEMPLATES`: ChatML, Llama 3, Gemma, Mistral, Phi-3 and the plain ``User:``/``Assistant:``
  layout. Each renders an ordinary conversation (an optional system message, then alternating user and
  assistant turns) to the same text as the template those models ship; ``tests/core/test_template_choice.py``
  holds each to the shipped template, copied verbatim.
- The choice is stored per model in its registry row (``info[TEMPLATE_CHOICE_KEY]``), so it survives restarts.
- :func:`template_status` says whether a model can be used as it is. A model whose own template is broken
  (not valid Jinja, or it fails on an ordinary conversation), or a GGUF file with no template at all (a
  conversion that lost it: the app cannot tell which layout the model was trained on), needs a choice
  first: every engine refuses it with :class:`TemplateChoiceNeeded`, whose message says what to do,
  rather than falling back silently.
- :func:`check_template` renders a sample conversation with a template: how an edit is checked.

Standard library only (plus jinja2, lazily, through ``templates``): the GUI imports this at start-up.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from desktop_dpo.core.llm.templates import (
    DEFAULT_TEMPLATE,
    ChatTemplateError,
    end_of_turn_marker,
    render_text,
    uses_default_template,
)
from desktop_dpo.core.model_files import (
    CHAT_TEMPLATE_KEY,
    TEMPLATE_CHOICE_KEY,
    recorded_chat_template,
    special_tokens,
)

if TYPE_CHECKING:
    from desktop_dpo.core.store import ModelRow, Store

# Models whose layout the app knows even without a template: the bundled demo (a base model trained on the
# plain layout) and models this app exported (their GGUF carries the template they were trained with).
_KNOWN_LAYOUT_SOURCES = ("demo", "aligned")


@dataclass(frozen=True)
class KnownTemplate:
    """A chat template the person can pick by name."""

    name: str  # the key stored in a model's choice
    label: str  # what the person sees
    models: str  # the families that use it, as a hint
    text: str  # the Jinja template


_CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
_LLAMA3 = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
)
# Gemma has no system turn: a system message opens the first user turn, as Gemma 3's own template does.
_GEMMA = (
    "{{ bos_token }}"
    "{%- set prefix = messages[0]['content'] + '\\n\\n' if messages[0]['role'] == 'system' else '' -%}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Gemma needs the turns to alternate: user, assistant, user...') }}"
    "{%- endif -%}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n' }}"
    "{{ (prefix if loop.first else '') + message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
# Mistral [INST]: a system message opens the first instruction (Mistral's templates have no system turn).
_MISTRAL = (
    "{{ bos_token }}"
    "{%- set prefix = messages[0]['content'] + '\\n\\n' if messages[0]['role'] == 'system' else '' -%}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Mistral needs the turns to alternate: user, assistant, user...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '[INST] ' + (prefix if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{%- else -%}{{ message['content'] + eos_token }}{%- endif -%}"
    "{%- endfor -%}"
)
_PHI3 = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- else -%}{{ eos_token }}{%- endif -%}"
)

KNOWN_TEMPLATES: dict[str, KnownTemplate] = {
    t.name: t
    for t in (
        KnownTemplate("chatml", "ChatML", "Qwen, SmolLM, Hermes, Yi, many fine-tunes", _CHATML),
        KnownTemplate("llama3", "Llama 3", "Llama 3, 3.1, 3.2, 3.3 Instruct", _LLAMA3),
        KnownTemplate("gemma", "Gemma", "Gemma 2 and 3 IT", _GEMMA),
        KnownTemplate(
            "mistral", "Mistral [INST]", "Mistral and Mixtral Instruct, Llama 2 chat style", _MISTRAL
        ),
        KnownTemplate("phi3", "Phi-3", "Phi-3 and Phi-3.5 Instruct", _PHI3),
        KnownTemplate("plain", "Plain User:/Assistant:", "base models (no chat training)", DEFAULT_TEMPLATE),
    )
}

ChoiceKind = Literal["known", "custom"]


@dataclass(frozen=True)
class TemplateChoice:
    """The person's choice for one model: a known template by name, or their own text."""

    kind: ChoiceKind
    name: str = ""  # a KNOWN_TEMPLATES key (kind "known")
    text: str = ""  # the template (kind "custom")

    @property
    def template(self) -> str:
        """The Jinja text chosen."""
        return KNOWN_TEMPLATES[self.name].text if self.kind == "known" else self.text

    def describe(self) -> str:
        """What the person chose, in a few words."""
        return f"{KNOWN_TEMPLATES[self.name].label} (chosen)" if self.kind == "known" else "Edited by you"

    def to_dict(self) -> dict[str, str]:
        return (
            {"kind": self.kind, "name": self.name}
            if self.kind == "known"
            else {"kind": self.kind, "text": self.text}
        )

    @classmethod
    def from_dict(cls, data: Any) -> TemplateChoice | None:
        """The choice stored in a model's info, or None (none, or one this version cannot read)."""
        if not isinstance(data, Mapping):
            return None
        if data.get("kind") == "known" and data.get("name") in KNOWN_TEMPLATES:
            return cls("known", name=str(data["name"]))
        if data.get("kind") == "custom" and isinstance(data.get("text"), str) and data["text"].strip():
            return cls("custom", text=str(data["text"]))
        return None


def template_choice(model: ModelRow) -> TemplateChoice | None:
    """The choice stored for ``model``, or None when it uses its own template (or has made none)."""
    return TemplateChoice.from_dict(model.info.get(TEMPLATE_CHOICE_KEY))


def chosen_template(model: ModelRow) -> str | None:
    """The template the person chose for ``model``, or None: then its own files' template is used.

    The engines take this as their override of the file's template; training and the export use
    :func:`template_for`.
    """
    choice = template_choice(model)
    return choice.template if choice is not None else None


def template_for(model: ModelRow, own: str | None = None) -> str | None:
    """The template ``model`` is used with: the chosen one, else ``own`` (the template a caller read from the
    model's files, e.g. its tokenizer's), else the one the registry recorded. None: the plain layout."""
    chosen = chosen_template(model)
    if chosen is not None:
        return chosen
    if own is not None:
        return own
    return recorded_chat_template(model)


def set_template_choice(store: Store, model_id: int, choice: TemplateChoice | None) -> None:
    """Store ``choice`` for the model (None: back to the model's own template).

    Raises:
        ChatTemplateError: a custom template that cannot render a sample conversation.
    """
    if choice is None:
        store.remove_model_info_keys(model_id, TEMPLATE_CHOICE_KEY)
        return
    if choice.kind == "custom":
        check_template(choice.text)
    store.update_model_info(model_id, **{TEMPLATE_CHOICE_KEY: choice.to_dict()})


# A conversation every template must be able to render: what an edit is checked with, and what the Models
# view shows as the preview.
SAMPLE_CONVERSATION: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
)


def check_template(template: str, bos: str = "<s>", eos: str = "</s>") -> str:
    """The sample conversation rendered with ``template`` (ending with the assistant's generation prompt).

    A template that refuses system messages is tried without one (many do).

    Raises:
        ChatTemplateError: the template is not valid Jinja, cannot render the sample conversation, or does
            not show the conversation's text (then it would not show the person's prompts either).
    """
    if not template.strip():
        raise ChatTemplateError("The chat template is empty. Pick a known template or write one.")
    try:
        text = render_text(list(SAMPLE_CONVERSATION), template, bos, eos)
    except ChatTemplateError:
        text = render_text(list(SAMPLE_CONVERSATION[1:]), template, bos, eos)
    missing = [m["content"] for m in SAMPLE_CONVERSATION[1:] if m["content"] not in text]
    if missing:
        raise ChatTemplateError(
            f"The chat template leaves out the conversation's text ({missing[0]!r} is not in what it writes), "
            "so the model would never see the prompts. Templates write each message's content, e.g. "
            "{{ message['content'] }}."
        )
    return text


@functools.lru_cache(maxsize=64)
def _template_problem(template: str, bos: str, eos: str) -> str | None:
    """Why ``template`` cannot render the sample conversation, or None. Cached: the Models view asks for
    every model on each refresh, on the GUI thread, and a template's answer never changes."""
    try:
        check_template(template, bos, eos)
    except ChatTemplateError as exc:
        return str(exc)
    return None


StatusKind = Literal["chosen", "own", "plain", "missing", "broken"]


@dataclass(frozen=True)
class TemplateStatus:
    """Which template a model is used with, and whether it needs the person's choice first."""

    kind: StatusKind
    message: str  # one sentence for the Models view
    needs_choice: bool  # True: the engines refuse the model until a template is chosen


def template_status(model: ModelRow) -> TemplateStatus:
    """What template ``model`` is used with (a choice, its own, the plain layout) or why it needs a choice."""
    choice = template_choice(model)
    if choice is not None:
        return TemplateStatus("chosen", f"{choice.describe()}.", needs_choice=False)
    own = model.info.get(CHAT_TEMPLATE_KEY)
    bos, eos = special_tokens(model)
    if isinstance(own, str) and own.strip() and not uses_default_template(own):
        problem = _template_problem(own, bos, eos)
        if problem is not None:
            return TemplateStatus(
                "broken",
                f"Its own chat template does not work: {problem} Pick a known template or edit it.",
                needs_choice=True,
            )
        return TemplateStatus("own", "Its own chat template.", needs_choice=False)
    if model.kind == "gguf" and model.source not in _KNOWN_LAYOUT_SOURCES and not own:
        return TemplateStatus(
            "missing",
            "The GGUF file has no chat template, so the app cannot tell how the model expects a conversation. "
            "Pick the template of the model it was converted from (an instruct model), or the plain "
            "User:/Assistant: layout (a base model).",
            needs_choice=True,
        )
    return TemplateStatus(
        "plain",
        "No chat template of its own: the plain User:/Assistant: layout (right for a base model; for an "
        "instruct model, pick its template).",
        needs_choice=False,
    )


class TemplateChoiceNeeded(ChatTemplateError):
    """The model cannot be used until the person picks its chat template (in Models)."""


def require_usable_template(model: ModelRow) -> None:
    """Raise :class:`TemplateChoiceNeeded` when ``model`` needs a template chosen before it can be used."""
    status = template_status(model)
    if status.needs_choice:
        raise TemplateChoiceNeeded(
            f"{model.name}: {status.message} (Models → Chat template, or in a terminal: "
            f"desktop-dpo template {model.id} --use NAME)"
        )


def marker_hint(template: str | None, bos: str = "", eos: str = "") -> str:
    """How a template ends an answer, for the Models view: "ends an answer with '<|im_end|>'"."""
    if uses_default_template(template):
        return "answers end at the next 'User:' or 'Assistant:'"
    marker = end_of_turn_marker(template, bos, eos)
    return f"ends an answer with {marker!r}" if marker else "writes nothing after an answer"
