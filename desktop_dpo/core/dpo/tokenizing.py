"""Rendering and tokenising preference pairs: :class:`~desktop_dpo.core.dpo.data.PreferencePair` (text)
--:func:`tokenize_pair`--> :class:`TokenizedPair` (token ids).

Prompts are rendered with the same template the sampler used (``core/llm/templates.py``): the model's own
chat template when its tokenizer has one, else the project's ``User:``/``Assistant:`` layout. So the
model is trained on exactly the text it was shown when the responses were sampled. A change to how a pair
becomes token ids must bump ``_CACHE_KEY_VERSION`` in ``data.py`` (the reference cache key).

(Named ``tokenizing`` rather than ``tokenize`` so it never shadows the standard library's module.)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from desktop_dpo.core.dpo.data import PreferencePair
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.llm.templates import common_prefix_length

log = logging.getLogger(__name__)

# How far before an answer its turn may start, and how much of the prompt's end is compared (_answer_turn).
_TURN_START_SEARCH = 64
_ENDING_COMPARED = 256


class PairTokenizationError(DesktopDpoError):
    """A preference pair cannot be turned into training tokens (e.g. the tokenizer has no end token)."""


def resolve_chat_template(tokenizer: Any) -> str | None:
    """The tokenizer's chat template, or None when it has none (then the default layout is used).

    A tokenizer with several named templates gives its "default" one.
    """
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template if isinstance(template, str) and template.strip() else None


def template_hash(chat_template: str | None) -> str:
    """sha256 of the template text (None = the default layout), for :func:`reference_cache_key`."""
    from desktop_dpo.core.llm.templates import DEFAULT_TEMPLATE

    return hashlib.sha256((chat_template or DEFAULT_TEMPLATE).strip().encode("utf-8")).hexdigest()


def render_prompt_text(messages: Sequence[dict[str, str]], tokenizer: Any, chat_template: str | None) -> str:
    """The prompt exactly as the sampler renders it, ending with the assistant's generation prompt."""
    from desktop_dpo.core.llm.templates import render_prompt

    text, _stop_strings = render_prompt(
        list(messages),
        chat_template,
        tokenizer.bos_token or "",
        tokenizer.eos_token or "",
        add_generation_prompt=True,
    )
    return text


def render_response_text(
    messages: Sequence[dict[str, str]],
    response: str,
    tokenizer: Any,
    chat_template: str | None,
    *,
    prompt_text: str | None = None,
) -> str:
    """The response as the template writes it right after the generation prompt: the text the model is
    trained to write for that answer.

    A model with its own chat template: everything the template renders after the prompt for the
    assistant turn, exactly as TRL's ``DPOTrainer`` takes it for conversational data (the whole
    conversation rendered, minus the rendered prompt). That is the answer as the template writes it
    (its own whitespace included, unless the template trims it, as Gemma's and Llama 3's do), the
    template's own end-of-turn marker (``<|im_end|>``, ``<end_of_turn>``, ``<|eot_id|>``, ``</s>`` ...),
    and whatever the template writes after it (ChatML's and Gemma's newline). No EOS is added: the
    end-of-turn marker is the token the model writes to stop, and the one the engines stop on; Gemma's
    ``<eos>`` never follows an answer, so training it there would teach the model a token it never
    writes and leave ``<end_of_turn>`` untrained.

    Some templates write the earlier turns differently once an answer follows: Mistral 7B Instruct
    v0.3's puts the system message into the last user turn only while that turn is the last message, so
    the whole conversation has no system message at all. TRL then takes everything after the common
    beginning as the completion: the last user turn (without the system message) and the answer, so the
    model would be trained to write the person's question, in a context it is never shown. Here the
    answer's turn is taken from the whole conversation instead (:func:`_answer_turn`: from the end of the
    text that ends like the prompt, up to the end) and :func:`tokenize_pair` puts it after the prompt as
    the sampler rendered it: the model is trained on what it was shown and what it wrote.

    The default ``User:``/``Assistant:`` layout (a base model without a template) writes
    ``Assistant: <text>`` with the text trimmed, while the generation prompt ends at ``Assistant:``; so
    " Paris." (as sampled) and "Paris." (as typed) both become " Paris.", and an empty or whitespace-only
    answer becomes " " (the space the layout writes before any answer). The turn ends with the newline
    the layout writes after the answer, kept here, and :func:`tokenize_pair` puts EOS after it: a base
    model ends its answer by writing that newline (the sampler stops at the speaker marker after it, and
    the model's EOS is all but never sampled there). Without it, training would never see the token that
    ends an answer at inference, so preferring longer or shorter answers could not teach the model where
    to stop; the Gemma demo stopped after three words just as often after training as before.

    ``prompt_text`` saves rendering the prompt again when the caller has it (:func:`render_prompt_text`
    of the same arguments).
    """
    from desktop_dpo.core.llm.templates import DEFAULT_TURN_END, uses_default_template

    if prompt_text is None:
        prompt_text = render_prompt_text(messages, tokenizer, chat_template)
    full = _render_conversation_text(messages, response, tokenizer, chat_template)
    if full is None:
        return response
    if not uses_default_template(chat_template):
        return _answer_turn(messages, response, tokenizer, chat_template, prompt_text, full)
    if not full.startswith(prompt_text):
        return response
    continuation = full[len(prompt_text) :]
    content = response.strip()
    # Look for the answer after the space the layout writes before it: an empty answer is found wherever
    # the search starts, and there it keeps the layout's space and turn end, like any other answer.
    at = continuation.find(content, len(continuation) - len(continuation.lstrip(" ")))
    if at < 0:
        return response
    end = at + len(content)
    if continuation[end:].startswith(DEFAULT_TURN_END):
        end += len(DEFAULT_TURN_END)
    return continuation[:end]


def _render_conversation_text(
    messages: Sequence[dict[str, str]], response: str, tokenizer: Any, chat_template: str | None
) -> str | None:
    """The whole conversation with ``response`` as the assistant's last turn, or None when the template
    refuses it."""
    from desktop_dpo.core.llm.templates import ChatTemplateError, render_prompt

    try:
        full, _stop_strings = render_prompt(
            [*messages, {"role": "assistant", "content": response}],
            chat_template,
            tokenizer.bos_token or "",
            tokenizer.eos_token or "",
            add_generation_prompt=False,
        )
    except ChatTemplateError:
        return None
    return full


def _answer_turn(
    messages: Sequence[dict[str, str]],
    response: str,
    tokenizer: Any,
    chat_template: str,
    prompt_text: str,
    full: str,
) -> str:
    """The assistant's turn as the template writes it in ``full`` (the whole conversation, ``response`` last),
    from where the prompt ends: ``full`` minus ``prompt_text`` when ``full`` starts with it (every usual
    template; TRL's completion, to the character).

    Otherwise the template wrote the earlier turns differently once an answer followed (Mistral v0.3 and a
    system message). Where the answer's own text starts is found by rendering the conversation with another
    answer (one that differs from the first character on); the turn starts at or shortly before it, after
    the text of ``full`` that ends most like the prompt does (Mistral: after ``[/INST]``, so the space the
    template writes before the answer stays in the turn; the later start on a tie). When the other answer
    cannot be rendered, everything after the common beginning is returned (TRL's completion).
    """
    if full.startswith(prompt_text):
        return full[len(prompt_text) :]
    diverge = common_prefix_length(prompt_text, full)
    probe = "Z" if response.strip().startswith("Q") else "Q"
    other = _render_conversation_text(messages, probe, tokenizer, chat_template)
    if other is None:
        return full[diverge:]
    answer_at = max(diverge, common_prefix_length(full, other))
    best, best_match = answer_at, -1
    # What a template writes between the prompt and the answer is short (" ", "", a newline): look a few
    # dozen characters back, comparing endings over a few hundred, so a long turn costs no more.
    for start in range(answer_at, max(diverge, answer_at - _TURN_START_SEARCH) - 1, -1):
        match = _common_ending_length(prompt_text, full, start, limit=_ENDING_COMPARED)
        if match > best_match:
            best, best_match = start, match
    return full[best:]


def _sequence_text(
    messages: Sequence[dict[str, str]],
    response: str,
    tokenizer: Any,
    chat_template: str | None,
    prompt_text: str,
) -> str:
    """The text of prompt + response that :func:`tokenize_pair` tokenises: the prompt as the sampler rendered
    it followed by :func:`render_response_text`. With a usual template that is the whole conversation as the
    template renders it (TRL's text, to the character)."""
    return prompt_text + render_response_text(
        messages, response, tokenizer, chat_template, prompt_text=prompt_text
    )


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of plain text (llama.cpp follows the same flag)."""
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos_id


def _encode(tokenizer: Any, text: str, add_bos: bool) -> list[int]:
    """Token ids of rendered text. Special tokens written in the text (a template's ``<s>``) become
    their ids; BOS is put in front only when the tokenizer adds one and the text did not bring it,
    so a template that writes ``{{ bos_token }}`` never ends up with two."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if add_bos and (not ids or ids[0] != tokenizer.bos_token_id):
        ids.insert(0, tokenizer.bos_token_id)
    return ids


def _common_ending_length(a: str, b: str, b_end: int, limit: int) -> int:
    """How many characters (at most ``limit``) ``a`` and ``b[:b_end]`` have in common at their end."""
    n = 0
    while n < limit and n < len(a) and n < b_end and a[-1 - n] == b[b_end - 1 - n]:
        n += 1
    return n


@dataclass(frozen=True)
class TokenizedPair:
    """A preference pair as token ids. Each sequence the model sees is ``prompt_ids + response``."""

    comparison_id: int
    prompt_id: int
    prompt_ids: tuple[int, ...]  # the rendered prompt, ending with the generation prompt
    # The response as the model writes it, up to and including how its turn ends (the template's
    # end-of-turn marker and what follows it, or the default layout's newline + EOS); the end is lost
    # only when ``truncated``.
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    truncated: bool = False  # a response was cut to fit max_length: reported, never silent
    prompt_truncated: bool = False  # older turns were dropped (or the prompt cut from the left)

    @property
    def chosen_length(self) -> int:
        """Tokens the chosen response contributes to its log-probability."""
        return len(self.chosen_ids)

    @property
    def rejected_length(self) -> int:
        """Tokens the rejected response contributes to its log-probability."""
        return len(self.rejected_ids)


def _trim_turns(messages: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """The conversation with its oldest turn dropped, or None when only the last turn is left.

    A leading system message stays (it sets the behaviour and is usually short). Messages are
    dropped until the conversation starts with a user message again, because several chat
    templates refuse a conversation that does not alternate user/assistant.
    """
    head = [m for m in messages[:1] if m["role"] == "system"]
    body = messages[len(head) :]
    last_user = max((i for i, m in enumerate(body) if m["role"] == "user"), default=len(body) - 1)
    if last_user <= 0:
        return None
    body = body[1:]
    while body and body[0]["role"] != "user" and len(body) > 1:
        body = body[1:]
    return head + body


def tokenize_pair(
    tokenizer: Any,
    pair: PreferencePair,
    *,
    chat_template: str | None,
    max_length: int,
    max_prompt_length: int,
) -> TokenizedPair:
    """Token ids of a pair, fitted into ``max_length`` tokens per sequence without silent cuts.

    Rendering: ``chat_template`` (pass :func:`resolve_chat_template` of the tokenizer; None = default
    layout) renders the prompt with its generation prompt, as the sampler did. Each response is written
    as the template writes an assistant turn (:func:`render_response_text`), tokenised in context and
    taken from where that diverges from the tokenised prompt, the way TRL's ``DPOTrainer`` does it, so
    a token merging across the boundary is scored as part of the response. With a template of the
    model's own, the context is (for every usual template) the whole conversation as the template renders
    it, and the response ends as the template ends an assistant turn (its end-of-turn marker and what it
    writes after it, no EOS): the same ids as TRL's for conversational data. With the default layout the
    response ends with the layout's newline and an EOS token, so the model learns where an answer ends
    (llama.cpp stops on EOS, and on the default layout's stop strings).

    Differences from TRL, each so that training sees the text the model sees when it generates:

    - When the tokenizer puts BOS in front of plain text and the template does not write it, the prompt
      starts with BOS (TRL's conversational ids have none). llama.cpp puts it there.
    - When the template writes the earlier turns differently once an answer follows (Mistral v0.3 with a
      system message: see :func:`render_response_text`), the prompt is the one the sampler rendered and
      the response only the answer's turn; TRL would drop the system message and score the person's last
      question as if the model had written it.
    - Truncation (below) keeps the last turn and the start of the answers where TRL keeps the start of
      the whole sequence, and flags every cut.

    Truncation, in this order (nothing is cut without a flag):

    1. While the prompt is longer than ``max_prompt_length`` tokens, its oldest turns are dropped,
       keeping a leading system message and always the last user turn (``prompt_truncated``).
    2. If the last turn alone is still too long, the prompt is cut from the left at token level,
       keeping BOS and the end of the last turn with the generation prompt (``prompt_truncated``).
    3. A response that does not fit in ``max_length − len(prompt)`` tokens keeps its beginning and
       the pair is marked ``truncated``; :func:`tokenize_pairs` counts these so the trainer reports
       "N pairs were truncated". We keep such pairs rather than drop them: the beginning of a long
       answer is usually where the preference shows, and the count tells the person to raise
       ``max_length`` if it is large.

    Raises :class:`PairTokenizationError` when the default layout is used and the tokenizer has no EOS
    token, and ``ValueError`` for
    lengths that leave no room for a response.
    """
    if max_prompt_length < 1 or max_length <= max_prompt_length:
        raise ValueError(
            f"max_length ({max_length}) must be larger than max_prompt_length ({max_prompt_length}) >= 1, "
            "so every response keeps at least one token."
        )
    from desktop_dpo.core.llm.templates import uses_default_template

    # Only the default layout ends an answer with EOS; a template writes its own end of turn.
    eos_id = tokenizer.eos_token_id
    if eos_id is None and uses_default_template(chat_template):
        raise PairTokenizationError(
            "The model's tokenizer has no end-of-sequence token, so responses cannot be marked as finished. "
            "Choose a model whose tokenizer defines one."
        )
    add_bos = _adds_bos(tokenizer)

    messages = [{"role": m["role"], "content": m["content"]} for m in pair.messages]
    prompt_text = render_prompt_text(messages, tokenizer, chat_template)
    prompt_ids = _encode(tokenizer, prompt_text, add_bos)
    prompt_truncated = False
    while len(prompt_ids) > max_prompt_length:
        shorter = _trim_turns(messages)
        if shorter is None:
            break
        messages = shorter
        prompt_text = render_prompt_text(messages, tokenizer, chat_template)
        prompt_ids = _encode(tokenizer, prompt_text, add_bos)
        prompt_truncated = True

    full_chosen = _encode(
        tokenizer, _sequence_text(messages, pair.chosen, tokenizer, chat_template, prompt_text), add_bos
    )
    full_rejected = _encode(
        tokenizer, _sequence_text(messages, pair.rejected, tokenizer, chat_template, prompt_text), add_bos
    )
    # Where prompt and prompt+response stop agreeing; equal to len(prompt_ids) unless a token merges
    # across the boundary, in which case that merged token belongs to the response (as in TRL).
    shared = min(
        common_prefix_length(prompt_ids, full_chosen),
        common_prefix_length(prompt_ids, full_rejected),
    )
    if shared < len(prompt_ids):
        log.debug("Prompt tokens %s merge with the response; scored as response.", prompt_ids[shared:])
    prompt_ids = prompt_ids[:shared]
    end = [eos_id] if uses_default_template(chat_template) else []
    chosen_ids = [*full_chosen[shared:], *end]
    rejected_ids = [*full_rejected[shared:], *end]

    if len(prompt_ids) > max_prompt_length:
        keep_bos = tokenizer.bos_token_id is not None and prompt_ids[:1] == [tokenizer.bos_token_id]
        tail = max_prompt_length - int(keep_bos)
        prompt_ids = prompt_ids[:1] + prompt_ids[-tail:] if keep_bos else prompt_ids[-tail:]
        prompt_truncated = True

    budget = max_length - len(prompt_ids)
    truncated = len(chosen_ids) > budget or len(rejected_ids) > budget
    return TokenizedPair(
        comparison_id=pair.comparison_id,
        prompt_id=pair.prompt_id,
        prompt_ids=tuple(prompt_ids),
        chosen_ids=tuple(chosen_ids[:budget]),
        rejected_ids=tuple(rejected_ids[:budget]),
        truncated=truncated,
        prompt_truncated=prompt_truncated,
    )


@dataclass(frozen=True)
class TokenizedPairs:
    """The result of :func:`tokenize_pairs`, with the counts a person should be told about."""

    pairs: list[TokenizedPair]
    truncated: int  # pairs with a response cut to fit max_length
    prompt_truncated: int  # pairs whose prompt lost older turns or was cut from the left

    def truncation_message(self) -> str | None:
        """A sentence for the run log, or None when nothing was cut."""
        return truncation_sentence(self.truncated, len(self.pairs), self.prompt_truncated)


def truncation_sentence(
    truncated: int, total: int, prompt_truncated: int, items: str = "pairs", cut: str = "a response"
) -> str | None:
    """What was cut to fit, in a sentence for the run log (None when nothing was): ``truncated`` of ``total``
    ``items`` with ``cut`` cut, ``prompt_truncated`` prompts shortened."""
    parts = []
    if truncated:
        parts.append(
            f"{truncated} of {total} {items} were truncated ({cut} did not fit in the maximum length and was "
            "cut; raise the maximum length to keep whole answers)"
        )
    if prompt_truncated:
        parts.append(f"{prompt_truncated} prompts were shortened (older turns dropped)")
    return "; ".join(parts) + "." if parts else None


class _Counts(Protocol):
    def truncation_message(self) -> str | None: ...


Counted = TypeVar("Counted", bound=_Counts)


def counted_and_logged(make: Callable[..., Counted], items: list[Any]) -> Counted:
    """``make(pairs=items, truncated=…, prompt_truncated=…)`` with the counts summed over ``items``; its
    :meth:`truncation_message`, if any, logged as a warning (what :func:`tokenize_pairs` and KTO's
    ``tokenize_labels`` return)."""
    result = make(
        pairs=items,
        truncated=sum(item.truncated for item in items),
        prompt_truncated=sum(item.prompt_truncated for item in items),
    )
    message = result.truncation_message()
    if message:
        log.warning(message)
    return result


def tokenize_pairs(
    tokenizer: Any,
    pairs: Iterable[PreferencePair],
    *,
    chat_template: str | None,
    max_length: int,
    max_prompt_length: int,
) -> TokenizedPairs:
    """:func:`tokenize_pair` over many pairs, counting the truncated ones (logged as a warning)."""
    tokenized = [
        tokenize_pair(
            tokenizer,
            pair,
            chat_template=chat_template,
            max_length=max_length,
            max_prompt_length=max_prompt_length,
        )
        for pair in pairs
    ]
    return counted_and_logged(TokenizedPairs, tokenized)
