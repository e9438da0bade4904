"""From judged comparisons to the tensors the DPO loss needs.

The path a preference takes::

    ComparisonView (store) --pairs_from_comparisons--> PreferencePair (text)
        --tokenize_pair--> TokenizedPair (token ids) --collate_for--> batch
        --sequence_logps--> log π(y|x) for chosen and rejected ([B] each) --> loss.py

Two batch layouts give the same log-probabilities: :func:`collate` pads chosen and rejected into 2B rows
(TRL's layout, the one the oracle test compares against), and :func:`collate_shared` puts each prompt
once, followed by both responses, with pairs packed into rows (what training uses: the prompt is
computed once and almost no padding is). :func:`collate_for` picks the shared layout where the model
scores it correctly (checked once per model). The LM head runs only where a response token is
predicted, and on a plain frozen head through :func:`head_token_logps`, which never keeps
[tokens, vocab] logits for the backward pass.

Prompts are rendered with the same template the sampler used (``core/llm/templates.py``): the model's own
chat template when its tokenizer has one, else the project's ``User:``/``Assistant:`` layout. So the
model is trained on exactly the text it was shown when the responses were sampled.

torch is imported lazily: the GUI may import this module (for :class:`PreferencePair`) at start-up.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.llm.templates import common_prefix_length
from desktop_dpo.core.store import ComparisonView

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SPLITS = ("train", "heldout")
# Bumped whenever the way a pair becomes token ids changes, so no stale cached reference is reused.
_CACHE_KEY_VERSION = 3  # 2: templated answers end as the template ends them, without EOS;
# 3: an empty answer in the default layout keeps its turn end (" \n" + EOS, was EOS alone), and a template
# that writes the earlier turns differently once an answer follows trains on the prompt the model was shown

# How far before an answer its turn may start, and how much of the prompt's end is compared (_answer_turn).
_TURN_START_SEARCH = 64
_ENDING_COMPARED = 256
# Rows of [N, vocab] logits upcast to fp32 at once: about 64 MiB per chunk whatever the vocabulary.
_LOGSUMEXP_CHUNK_ELEMENTS = 1 << 24


class PairTokenizationError(DesktopDpoError):
    """A preference pair cannot be turned into training tokens (e.g. the tokenizer has no end token)."""


# --------------------------------------------------------------------------------------------------
# Comparisons -> pairs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencePair:
    """One chosen-over-rejected example for DPO, still as text."""

    comparison_id: int  # the comparison it came from (one comparison can give up to three pairs)
    prompt_id: int  # the prompt, which decides the train/held-out split
    messages: list[dict[str, str]]  # the conversation up to the response: [{role, content}, ...]
    chosen: str  # the preferred response
    rejected: str  # the other response
    origin: str = "verdict"  # "verdict" (A over B), "edit_vs_original" or "edit_vs_other"


def _other(side: str) -> str:
    return "b" if side == "a" else "a"


def pairs_from_comparisons(views: Iterable[ComparisonView]) -> list[PreferencePair]:
    """Turn judged comparisons into preference pairs, in input order.

    - Verdict "a" or "b": the named generation is chosen, the other rejected.
    - "tie", "both_bad", "skip" give no verdict pair; deleted comparisons give nothing at all.
    - An edit (the person rewrote one response into what they wanted) adds the edited text as chosen
      against the unedited original, and against the other response as well unless the verdict
      named that other response (the person judged it better than the original, and we do not
      know how it compares with the rewrite). The verdict pair itself is kept: it is a judgement
      the person made, and with an edit it never contradicts the edit pairs.
    - A pair whose two texts are identical (up to surrounding whitespace, which the default layout
      trims anyway) teaches nothing and is left out.
    """
    pairs: list[PreferencePair] = []
    for view in views:
        comparison = view.comparison
        if comparison.deleted:
            continue
        texts = {"a": view.text_a, "b": view.text_b}
        candidates: list[tuple[str, str, str]] = []  # (chosen, rejected, origin)
        if comparison.verdict in ("a", "b"):
            candidates.append((texts[comparison.verdict], texts[_other(comparison.verdict)], "verdict"))
        if comparison.edited_text is not None and comparison.edited_side in ("a", "b"):
            side = comparison.edited_side
            candidates.append((comparison.edited_text, texts[side], "edit_vs_original"))
            if comparison.verdict != _other(side):
                candidates.append((comparison.edited_text, texts[_other(side)], "edit_vs_other"))
        messages = [{"role": m["role"], "content": m["content"]} for m in view.messages]
        pairs.extend(
            PreferencePair(
                comparison_id=comparison.id,
                prompt_id=comparison.prompt_id,
                messages=messages,
                chosen=chosen,
                rejected=rejected,
                origin=origin,
            )
            for chosen, rejected, origin in candidates
            if chosen.strip() != rejected.strip()
        )
    return pairs


# --------------------------------------------------------------------------------------------------
# Train / held-out split
# --------------------------------------------------------------------------------------------------


def _split_rank(prompt_id: int, seed: int) -> str:
    # A hash, not random.Random: the order of a prompt depends on its id and the seed only, never on
    # which other prompts are present, so the same prompts always land on the same side.
    return hashlib.sha256(f"desktop-dpo-split:{seed}:{prompt_id}".encode()).hexdigest()


def split_by_prompt(
    prompt_ids: Iterable[int],
    heldout_fraction: float = 0.1,
    seed: int = 0,
    existing: dict[int, str] | None = None,
) -> dict[int, str]:
    """Assign each prompt to ``"train"`` or ``"heldout"``; every pair of a prompt follows its prompt.

    Splitting by prompt (not by pair) keeps a held-out prompt unseen in training, even when one
    comparison gave several pairs or the prompt was judged in several rounds.

    Deterministic: the held-out prompts are those with the smallest ``sha256(seed, prompt_id)``,
    enough of them to make ``round(heldout_fraction × number of prompts)`` held out overall, but never
    all prompts. Prompts in ``existing`` keep their split (the store fixes a split once made:
    ``Store.set_prompt_splits``); only new prompts are placed, counted towards the same target.

    Returns a split for every id in ``prompt_ids``.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction}.")
    existing = existing or {}
    unique = sorted(set(int(p) for p in prompt_ids))
    splits: dict[int, str] = {}
    new: list[int] = []
    for prompt_id in unique:
        split = existing.get(prompt_id)
        if split is None:
            new.append(prompt_id)
        elif split in SPLITS:
            splits[prompt_id] = split
        else:
            raise ValueError(
                f"Prompt {prompt_id} has an unknown split {split!r}; expected 'train' or 'heldout'."
            )

    target = int(heldout_fraction * len(unique) + 0.5)  # round half up
    target = min(target, len(unique) - 1) if unique else 0  # always leave something to train on
    have = sum(1 for split in splits.values() if split == "heldout")
    wanted = max(0, min(target - have, len(new)))
    ranked = sorted(new, key=lambda prompt_id: _split_rank(prompt_id, seed))
    heldout = set(ranked[:wanted])
    for prompt_id in new:
        splits[prompt_id] = "heldout" if prompt_id in heldout else "train"
    return splits


# --------------------------------------------------------------------------------------------------
# Rendering and tokenising
# --------------------------------------------------------------------------------------------------


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
        if not self.truncated and not self.prompt_truncated:
            return None
        parts = []
        if self.truncated:
            parts.append(
                f"{self.truncated} of {len(self.pairs)} pairs were truncated (a response did not fit in the "
                "maximum length and was cut; raise the maximum length to keep whole answers)"
            )
        if self.prompt_truncated:
            parts.append(f"{self.prompt_truncated} prompts were shortened (older turns dropped)")
        return "; ".join(parts) + "."


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
    result = TokenizedPairs(
        pairs=tokenized,
        truncated=sum(p.truncated for p in tokenized),
        prompt_truncated=sum(p.prompt_truncated for p in tokenized),
    )
    message = result.truncation_message()
    if message:
        log.warning(message)
    return result


# --------------------------------------------------------------------------------------------------
# Batches and log-probabilities
# --------------------------------------------------------------------------------------------------


def collate(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad B pairs into one batch of 2B rows: the B chosen sequences, then the B rejected ones.

    Returns ``input_ids`` [2B, T] (right-padded with ``pad_id``), ``attention_mask`` [2B, T] (1 on
    real tokens) and ``loss_mask`` [2B, T] (1 on response tokens only: never prompt, never padding).
    One forward pass then scores both sides, and row i and row B + i belong to the same pair.
    """
    import torch

    if not pairs:
        raise ValueError("Cannot collate an empty list of pairs.")
    rows = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
    width = max(len(prompt) + len(response) for prompt, response in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (prompt, response) in enumerate(rows):
        n_prompt, n_total = len(prompt), len(prompt) + len(response)
        input_ids[row, :n_total] = torch.tensor(list(prompt) + list(response), dtype=torch.long)
        attention_mask[row, :n_total] = 1
        loss_mask[row, n_prompt:n_total] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def response_lengths(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Response token counts ([B] chosen, [B] rejected) of a :func:`collate` or :func:`collate_shared` batch
    (for IPO)."""
    if "response_lengths" in batch:
        return batch["response_lengths"].chunk(2, dim=0)
    return batch["loss_mask"].sum(dim=1).chunk(2, dim=0)


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens of the 2B sequences of a batch, padding excluded, counted as :func:`collate` lays them out
    (a shared prompt counts for both of its sequences, so the figure does not depend on the layout)."""
    if "sequence_tokens" in batch:
        return int(batch["sequence_tokens"])
    return int(batch["attention_mask"].sum())


def collate_shared(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs with each prompt computed once: one segment ``prompt + chosen + rejected`` per pair, packed into rows.

    In a segment the rejected tokens attend to the prompt and to earlier rejected tokens, never to the chosen
    ones, and their positions continue from the end of the prompt (``position_ids``): each response sees
    exactly what it sees in its own :func:`collate` row, so the log-probabilities are the same, but the prompt
    goes through the model once instead of twice. Segments are packed first-fit-decreasing into rows no longer
    than the longest segment (a row may hold several short pairs, each attending only within itself), so
    almost no padding is left and no row is longer than the longest pair needs.

    Returns a dict of tensors (R rows of width L, N scored tokens)::

        input_ids        [R, L]  (padding = pad_id)
        position_ids     [R, L]
        attention_mask   [R, 1, L, L] bool, True where a query (row) may attend a key (column); a padding
                         position attends itself only, so no softmax row is empty
        keep             [R, L] bool: positions whose hidden state predicts a response token (each once: the
                         last prompt token predicts the first token of both responses)
        label_rows       [N] index of the predicting position among the kept ones (row-major order)
        labels           [N] the predicted tokens
        label_seq        [N] the sequence each token belongs to: i = chosen of pair i, B + i = its rejected
        scored_lengths   [2B] scored tokens per sequence (what ``average=True`` divides by)
        response_lengths [2B] response tokens per sequence (:func:`response_lengths`)
        sequence_tokens  []  tokens of the 2B sequences (:func:`batch_tokens`)
    """
    import torch

    if not pairs:
        raise ValueError("Cannot collate an empty list of pairs.")
    sizes = [len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    width = max(sizes)
    # First-fit decreasing: the longest pairs open rows, shorter ones fill the gaps.
    free: list[int] = []  # room left in each row
    place: dict[int, tuple[int, int]] = {}  # pair -> (row, offset)
    for i in sorted(range(len(pairs)), key=lambda i: -sizes[i]):
        row = next((r for r, room in enumerate(free) if room >= sizes[i]), None)
        if row is None:
            free.append(width)
            row = len(free) - 1
        place[i] = (row, width - free[row])
        free[row] -= sizes[i]

    n_rows, n_pairs = len(free), len(pairs)
    input_ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n_rows, width), dtype=torch.long)
    mask = torch.eye(width, dtype=torch.bool).repeat(n_rows, 1, 1)  # padding attends itself
    keep = torch.zeros((n_rows, width), dtype=torch.bool)
    scored: list[tuple[int, int, int, int]] = []  # (row, predicting column, token, sequence)
    response_lengths_ = [0] * (2 * n_pairs)
    for i, pair in enumerate(pairs):
        row, at = place[i]
        n_prompt, n_chosen, n_rejected = len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)
        size, rejected_at = sizes[i], n_prompt + n_chosen
        input_ids[row, at : at + size] = torch.tensor(
            [*pair.prompt_ids, *pair.chosen_ids, *pair.rejected_ids], dtype=torch.long
        )
        position_ids[row, at : at + size] = torch.tensor(
            [*range(rejected_at), *range(n_prompt, n_prompt + n_rejected)], dtype=torch.long
        )
        block = torch.ones((size, size), dtype=torch.bool).tril_()
        block[rejected_at:, n_prompt:rejected_at] = False  # the rejected response never sees the chosen one
        mask[row, at : at + size, at : at + size] = block
        # Token t of a response is predicted by the position before it in its own sequence; for the
        # first rejected token that is the last prompt token (its sequence skips the chosen response).
        for j, token in enumerate(pair.chosen_ids):
            if n_prompt + j - 1 >= 0:
                scored.append((row, at + n_prompt + j - 1, token, i))
        for j, token in enumerate(pair.rejected_ids):
            before = n_prompt - 1 if j == 0 else rejected_at + j - 1
            if before >= 0:
                scored.append((row, at + before, token, n_pairs + i))
        response_lengths_[i], response_lengths_[n_pairs + i] = n_chosen, n_rejected
    rows = torch.tensor([s[0] for s in scored], dtype=torch.long)
    columns = torch.tensor([s[1] for s in scored], dtype=torch.long)
    keep[rows, columns] = True
    kept_index = (keep.flatten().cumsum(0) - 1).view(n_rows, width)
    label_seq = torch.tensor([s[3] for s in scored], dtype=torch.long)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": mask.unsqueeze(1),
        "keep": keep,
        "label_rows": kept_index[rows, columns],
        "labels": torch.tensor([s[2] for s in scored], dtype=torch.long),
        "label_seq": label_seq,
        "scored_lengths": torch.bincount(label_seq, minlength=2 * n_pairs),
        "response_lengths": torch.tensor(response_lengths_, dtype=torch.long),
        "sequence_tokens": torch.tensor(
            sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
        ),
    }


def length_batches(indices: Sequence[int], pairs: Sequence[TokenizedPair], size: int) -> list[list[int]]:
    """Split ``indices`` into batches of ``size``, grouping similar lengths (less padding, same sums)."""

    def length(i: int) -> int:
        return len(pairs[i].prompt_ids) + max(len(pairs[i].chosen_ids), len(pairs[i].rejected_ids))

    ordered = sorted(indices, key=length)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    """Every tensor of a batch on ``device``."""
    return {key: value.to(device) for key, value in batch.items()}


def collate_for(model: Any, pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """The fastest batch layout ``model`` scores correctly: :func:`collate_shared` where it can, else
    :func:`collate`. Either goes to :func:`sequence_logps` and gives the same log-probabilities."""
    batch = None
    if _shared_layout_ok(model):
        batch = collate_shared(pairs, pad_id)
        window = getattr(_base_model(model).config, "sliding_window", None)
        if isinstance(window, int) and batch["input_ids"].shape[1] > window:
            batch = None  # a custom mask replaces the sliding window: only safe while rows fit in it
    return batch if batch is not None else collate(pairs, pad_id)


def _base_model(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(_base_model(model).forward).parameters
    except (TypeError, ValueError):
        return False


# What the probes below found out about a model object (weak keys: a freed model leaves no trace).
_FUSED_HEAD_OK: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_SHARED_LAYOUT_OK: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def _probing(model: Any) -> Iterator[None]:
    """No dropout, no gradients, no RNG use: a probe changes nothing a run depends on."""
    import torch

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(training)


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """The model's decoder stack and its plain, frozen linear LM head, when ``lm_head(decoder(x))`` is
    exactly what the model computes (checked once per model on a few tokens: models that scale or cap
    their logits, or put an adapter on the head, take the generic path)."""
    import torch

    base = _base_model(model)
    if not (
        callable(getattr(base, "get_decoder", None))
        and callable(getattr(base, "get_output_embeddings", None))
    ):
        return None
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    if decoder is None or decoder is base or type(head) is not torch.nn.Linear:
        return None
    if head.weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        return None  # the fused head computes gradients for its input only
    ok = _FUSED_HEAD_OK.get(model)
    if ok is None:
        ids = torch.arange(1, 9, device=head.weight.device).remainder(head.weight.shape[0])[None]
        try:
            with _probing(model):
                expected = model(input_ids=ids, use_cache=False).logits.float()
                got = head(decoder(input_ids=ids, use_cache=False).last_hidden_state).float()
            ok = expected.shape == got.shape and bool(torch.allclose(got, expected, rtol=1e-3, atol=1e-3))
        except Exception:  # any model this does not fit takes the generic path
            log.debug("Fused LM head not used for %s", type(base).__name__, exc_info=True)
            ok = False
        _FUSED_HEAD_OK[model] = ok
    return (decoder, head) if ok else None


def _shared_layout_ok(model: Any) -> bool:
    """Whether ``model`` scores a :func:`collate_shared` batch as it scores :func:`collate` (checked once on
    two small pairs): it needs the fused head path, an attention that takes a custom 4D mask (sdpa, eager)
    and positions from ``position_ids``."""
    import torch

    parts = _decoder_and_head(model)
    if parts is None:
        return False
    if getattr(_base_model(model).config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    ok = _SHARED_LAYOUT_OK.get(model)
    if ok is None:
        vocab = parts[1].weight.shape[0]
        pairs = [
            TokenizedPair(
                0, 0, tuple(t % vocab for t in p), tuple(t % vocab for t in c), tuple(t % vocab for t in r)
            )
            for p, c, r in [((1, 5, 6, 7), (8, 9, 10), (11, 12)), ((1, 13), (14, 15), (16, 17, 18, 19, 20))]
        ]
        device = parts[1].weight.device
        try:
            with _probing(model):
                shared = {k: v.to(device) for k, v in collate_shared(pairs, 0).items()}
                padded = {k: v.to(device) for k, v in collate(pairs, 0).items()}
                expected = torch.cat(sequence_logps(model, padded))
                got = torch.cat(sequence_logps(model, shared))
            ok = bool(torch.allclose(got, expected, rtol=1e-3, atol=1e-3))
        except Exception:
            log.debug(
                "Shared-prompt layout not used for %s", type(_base_model(model)).__name__, exc_info=True
            )
            ok = False
        _SHARED_LAYOUT_OK[model] = ok
    return ok


@functools.cache
def _fused_head_function() -> Any:
    """The autograd function behind :func:`head_token_logps` (built on first use: torch loads lazily)."""
    import torch
    import torch.nn.functional as F

    class FusedHeadTokenLogps(torch.autograd.Function):
        """log softmax(h·Wᵀ + b)[label] for selected (row, label) pairs, never keeping [rows, vocab] logits.

        The gradient with respect to h is computed in the forward pass, chunk by chunk, while each chunk's
        softmax is at hand: d log p(y | h) / dh = W[y] − Σ_v p_v W[v] = W[y] − E, with E = softmax·W, an
        [rows, hidden] matrix. The backward pass then only scales and adds small rows. Same matrix products
        as autograd through the logits (one forward, one for the gradient), but none of the [rows, vocab]
        temporaries it allocates and walks through (zeros for the gather's and the slices' gradients,
        logsumexp's several passes): about a third of a step at a 32k vocabulary.
        """

        @staticmethod
        def forward(
            ctx: Any,
            hidden: torch.Tensor,
            weight: torch.Tensor,
            bias: torch.Tensor | None,
            rows: torch.Tensor,
            labels: torch.Tensor,
        ) -> torch.Tensor:
            wants_grad = ctx.needs_input_grad[0]
            n_rows, vocab = hidden.shape[0], weight.shape[0]
            chunk = max(1, _LOGSUMEXP_CHUNK_ELEMENTS // max(1, vocab))
            out = torch.empty(rows.shape[0], dtype=torch.float32, device=hidden.device)
            expected = torch.empty_like(hidden) if wants_grad else None
            for start in range(0, n_rows, chunk):
                stop = min(start + chunk, n_rows)
                logp = torch.log_softmax(F.linear(hidden[start:stop], weight, bias).float(), dim=-1)
                here = ((rows >= start) & (rows < stop)).nonzero().squeeze(-1)
                out[here] = logp[rows[here] - start, labels[here]]
                if expected is not None:
                    expected[start:stop] = logp.exp_().to(weight.dtype) @ weight
                del logp
            if expected is not None:
                ctx.save_for_backward(expected, weight, rows, labels)
            return out

        @staticmethod
        def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
            expected, weight, rows, labels = ctx.saved_tensors
            grad = grad_out.float()
            per_row = torch.zeros(expected.shape[0], dtype=torch.float32, device=grad.device).index_add_(
                0, rows, grad
            )
            grad_hidden = expected.float() * -per_row[:, None]
            grad_hidden.index_add_(0, rows, weight[labels].float() * grad[:, None])
            return grad_hidden.to(expected.dtype), None, None, None, None

    return FusedHeadTokenLogps


def head_token_logps(
    hidden: torch.Tensor, head: Any, rows: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Log-probabilities ([N], fp32) of ``labels`` ([N]) at hidden states ``hidden[rows]`` under a frozen
    linear LM head, in fp32, at most ~64 MiB of logits at a time and none kept for the backward pass.

    Args:
        hidden: [M, H] final hidden states of the positions to score (any float dtype; may need gradients).
        head: a ``torch.nn.Linear`` whose weight (and bias) need no gradient.
        rows: [N] index into ``hidden`` for each label (a row may be used by several labels).
        labels: [N] token ids.
    """
    import torch

    if rows.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    return _fused_head_function().apply(hidden, head.weight, head.bias, rows, labels)


def _token_logps_chunk(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] for [n, V] logits and [n] labels, in fp32, without a [n, V] log-softmax:
    log p = logit[label] − logsumexp(logits)."""
    import torch

    logits = logits.float()
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def selected_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ([N], fp32) of ``labels`` ([N]) under ``logits`` ([N, V], any float dtype).

    Works in row chunks so at most ~64 MiB of logits is upcast to fp32 at a time; with gradients on and
    half-precision logits, each chunk is recomputed in the backward pass instead of keeping its fp32
    copy alive (activation checkpointing of a cheap op, to save memory on a large vocabulary).
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    if logits.shape[0] == 0:
        return logits.new_zeros(0, dtype=torch.float32)
    rows = max(1, _LOGSUMEXP_CHUNK_ELEMENTS // max(1, logits.shape[-1]))
    recompute = torch.is_grad_enabled() and logits.requires_grad and logits.dtype != torch.float32
    parts = []
    for start in range(0, logits.shape[0], rows):
        chunk, chunk_labels = logits[start : start + rows], labels[start : start + rows]
        if recompute:
            parts.append(checkpoint(_token_logps_chunk, chunk, chunk_labels, use_reentrant=False))
        else:
            parts.append(_token_logps_chunk(chunk, chunk_labels))
    return torch.cat(parts)


def sequence_logps(
    model: Any, batch: dict[str, torch.Tensor], *, average: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y|x) of the chosen and the rejected responses of a :func:`collate` or :func:`collate_shared` batch.

    The logit at position t predicts token t + 1 (shift by one), so response token t is scored by
    the hidden state at t − 1. Only those positions reach the LM head: prompt and padding never cost a
    [vocab]-wide row. Each token's log-probability is ``log_softmax(logits)[token]`` in fp32. Where the
    model allows it (a plain frozen linear head, checked once per model) the decoder's hidden states go
    through :func:`head_token_logps`, which keeps no [tokens, vocab] tensor for the backward pass;
    otherwise the model's own logits (``logits_to_keep`` with a boolean mask where supported) go
    through :func:`selected_token_logps`. Both give the same values.

    Args:
        model: a causal LM (a PEFT model too; the adapter state at call time decides policy vs
            reference).
        batch: from :func:`collate` (``input_ids``, ``attention_mask``, ``loss_mask``, each [2B, T]) or
            from :func:`collate_shared` / :func:`collate_for` (each prompt once).
        average: False: sum over response tokens (DPO, hinge). True: mean per response token (what
            IPO uses as TRL computes it).

    Returns:
        ``(chosen, rejected)``, each [B] fp32, carrying gradients when the model does.
    """
    import torch

    if "label_seq" in batch:
        return _shared_sequence_logps(model, batch, average=average)
    input_ids = batch["input_ids"]
    device = input_ids.device
    attention_mask = batch["attention_mask"].to(device)
    # target_mask[:, t] says: the logit at t predicts a response token (the token at t + 1).
    target_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    target_mask[:, :-1] = batch["loss_mask"].to(device)[:, 1:].bool()
    labels = input_ids[:, 1:][target_mask[:, :-1]]  # [N], row-major like the mask

    parts = _decoder_and_head(model)
    if parts is not None:
        decoder, head = parts
        hidden = decoder(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        rows = torch.arange(labels.shape[0], device=device)
        token_logps = head_token_logps(hidden[target_mask], head, rows, labels)  # [N] fp32
    else:
        logits = None
        if _accepts_logits_to_keep(model):
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                use_cache=False,
                logits_to_keep=target_mask,
            )
            if out.logits.dim() == 2 and out.logits.shape[0] == labels.shape[0]:
                logits = out.logits  # [N, V]
        if logits is None:  # the model ignores a boolean logits_to_keep: select after the full forward
            out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            logits = out.logits[target_mask]  # [N, V]
        token_logps = selected_token_logps(logits, labels)  # [N] fp32
    row_of_token = target_mask.nonzero()[:, 0]
    totals = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=device).index_add(
        0, row_of_token, token_logps
    )  # [2B]
    if average:
        totals = totals / target_mask.sum(dim=1).clamp(min=1).to(totals.dtype)
    chosen, rejected = totals.chunk(2, dim=0)
    return chosen, rejected


def _shared_sequence_logps(
    model: Any, batch: dict[str, torch.Tensor], *, average: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sequence_logps` of a :func:`collate_shared` batch."""
    import torch

    parts = _decoder_and_head(model)
    if parts is None:
        raise ValueError("This model cannot score a shared-prompt batch; build batches with collate_for().")
    decoder, head = parts
    device = batch["input_ids"].device
    mask = batch["attention_mask"].to(device)
    if getattr(_base_model(model).config, "_attn_implementation", None) == "eager":
        # Eager attention adds its mask to the scores: 0 where allowed, the dtype's minimum elsewhere.
        dtype = head.weight.dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill_(~mask, torch.finfo(dtype).min)
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"].to(device),
        use_cache=False,
    ).last_hidden_state  # fmt: skip
    token_logps = head_token_logps(
        hidden[batch["keep"].to(device)], head, batch["label_rows"].to(device), batch["labels"].to(device)
    )
    n_sequences = batch["response_lengths"].shape[0]
    totals = torch.zeros(n_sequences, dtype=torch.float32, device=device).index_add(
        0, batch["label_seq"].to(device), token_logps
    )  # [2B]
    if average:
        totals = totals / batch["scored_lengths"].to(device).clamp(min=1).to(totals.dtype)
    chosen, rejected = totals.chunk(2, dim=0)
    return chosen, rejected


# --------------------------------------------------------------------------------------------------
# Reference log-prob cache
# --------------------------------------------------------------------------------------------------


def reference_cache_key(
    tokenized_pair: TokenizedPair,
    reference_id: str,
    quantization: str,
    template_hash: str,
    max_length: int,
    *,
    reduction: str = "sum",
) -> str:
    """sha256 naming one cached reference value, so it is reused only when truly the same.

    Covers the exact token ids (so a changed text, template rendering or truncation gives a new key),
    the reference model (``reference_id``: e.g. the base model's fingerprint), how it was loaded
    (``quantization``: "nf4", "bf16", "fp32" ... change the numbers), the template, ``max_length`` and
    ``reduction`` ("sum" or "mean" log-probs, which must never be mixed up in one cache).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
    payload = {
        "version": _CACHE_KEY_VERSION,
        "prompt_ids": list(tokenized_pair.prompt_ids),
        "chosen_ids": list(tokenized_pair.chosen_ids),
        "rejected_ids": list(tokenized_pair.rejected_ids),
        "reference_id": reference_id,
        "quantization": quantization,
        "template_hash": template_hash,
        "max_length": int(max_length),
        "reduction": reduction,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
