"""From judged comparisons to the tensors the DPO loss needs.

The path a preference takes::

    ComparisonView (store) --pairs_from_comparisons--> PreferencePair (text)
        --tokenize_pair--> TokenizedPair (token ids) --collate--> batch ([2B, T] tensors)
        --sequence_logps--> log π(y|x) for chosen and rejected ([B] each) --> loss.py

Prompts are rendered with the same template the sampler used (``core/llm/templates.py``): the model's own
chat template when its tokenizer has one, else the project's ``User:``/``Assistant:`` layout. So the
model is trained on exactly the text it was shown when the responses were sampled.

torch is imported lazily: the GUI may import this module (for :class:`PreferencePair`) at start-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.store import ComparisonView

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SPLITS = ("train", "heldout")
# Bumped whenever the way a pair becomes token ids changes, so no stale cached reference is reused.
_CACHE_KEY_VERSION = 1
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
    """The response as the template writes it right after the generation prompt, without the template's
    end-of-turn (an EOS token takes its place).

    This is what makes a stored answer and a person's edit line up with what the model generates: the
    default layout writes ``Assistant: <text>`` with the text trimmed, while the generation prompt ends
    at ``Assistant:``; so " Paris." (as sampled) and "Paris." (as typed) both become " Paris.".
    When the template renders the prompt alone differently from the start of the whole conversation,
    the response is used as stored. ``prompt_text`` saves rendering the prompt again when the caller
    has it (:func:`render_prompt_text` of the same arguments).
    """
    from desktop_dpo.core.llm.templates import ChatTemplateError, render_prompt

    if prompt_text is None:
        prompt_text = render_prompt_text(messages, tokenizer, chat_template)
    try:
        full, _stop_strings = render_prompt(
            [*messages, {"role": "assistant", "content": response}],
            chat_template,
            tokenizer.bos_token or "",
            tokenizer.eos_token or "",
            add_generation_prompt=False,
        )
    except ChatTemplateError:
        return response
    if not full.startswith(prompt_text):
        return response
    continuation = full[len(prompt_text) :]
    content = response.strip()
    at = continuation.find(content)
    return response if at < 0 else continuation[: at + len(content)]


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


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class TokenizedPair:
    """A preference pair as token ids. Each sequence the model sees is ``prompt_ids + response``."""

    comparison_id: int
    prompt_id: int
    prompt_ids: tuple[int, ...]  # the rendered prompt, ending with the generation prompt
    chosen_ids: tuple[int, ...]  # chosen response + EOS (the EOS is lost only when ``truncated``)
    rejected_ids: tuple[int, ...]  # rejected response + EOS
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
    as the template writes an assistant turn (:func:`render_response_text`), tokenised in context
    (prompt text + response text) and taken from where that diverges from the tokenised prompt, the
    way TRL's ``DPOTrainer`` does it, so a token merging across the boundary is scored as part of the
    response. An EOS token replaces the template's end-of-turn, so the model learns where an answer
    ends (llama.cpp stops on EOS, and on the default layout's stop strings).

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

    Raises :class:`PairTokenizationError` when the tokenizer has no EOS token and ``ValueError`` for
    lengths that leave no room for a response.
    """
    if max_prompt_length < 1 or max_length <= max_prompt_length:
        raise ValueError(
            f"max_length ({max_length}) must be larger than max_prompt_length ({max_prompt_length}) >= 1, "
            "so every response keeps at least one token."
        )
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
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

    chosen_text = render_response_text(
        messages, pair.chosen, tokenizer, chat_template, prompt_text=prompt_text
    )
    rejected_text = render_response_text(
        messages, pair.rejected, tokenizer, chat_template, prompt_text=prompt_text
    )
    full_chosen = _encode(tokenizer, prompt_text + chosen_text, add_bos)
    full_rejected = _encode(tokenizer, prompt_text + rejected_text, add_bos)
    # Where prompt and prompt+response stop agreeing; equal to len(prompt_ids) unless a token merges
    # across the boundary, in which case that merged token belongs to the response (as in TRL).
    shared = min(
        _common_prefix_length(prompt_ids, full_chosen),
        _common_prefix_length(prompt_ids, full_rejected),
    )
    if shared < len(prompt_ids):
        log.debug("Prompt tokens %s merge with the response; scored as response.", prompt_ids[shared:])
    prompt_ids = prompt_ids[:shared]
    chosen_ids = [*full_chosen[shared:], eos_id]
    rejected_ids = [*full_rejected[shared:], eos_id]

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
    """Response token counts ([B] chosen, [B] rejected) of a :func:`collate` batch (for IPO)."""
    return batch["loss_mask"].sum(dim=1).chunk(2, dim=0)


def _accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


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
    """log π(y|x) of the chosen and the rejected responses of a :func:`collate` batch.

    The logit at position t predicts token t + 1 (shift by one), so response token t is scored by
    the logit at t − 1. Only those positions reach the LM head (``logits_to_keep`` with a boolean
    mask where the model supports it): prompt and padding never cost a [vocab]-wide row. Each token's
    log-probability is ``logit[token] − logsumexp(logits)`` in fp32 (:func:`selected_token_logps`).

    Args:
        model: a causal LM (a PEFT model too; the adapter state at call time decides policy vs
            reference).
        batch: ``input_ids``, ``attention_mask``, ``loss_mask``, each [2B, T].
        average: False: sum over response tokens (DPO, hinge). True: mean per response token (what
            IPO uses as TRL computes it).

    Returns:
        ``(chosen, rejected)``, each [B] fp32, carrying gradients when the model does.
    """
    import torch

    input_ids = batch["input_ids"]
    device = input_ids.device
    attention_mask = batch["attention_mask"].to(device)
    # target_mask[:, t] says: the logit at t predicts a response token (the token at t + 1).
    target_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    target_mask[:, :-1] = batch["loss_mask"].to(device)[:, 1:].bool()
    labels = input_ids[:, 1:][target_mask[:, :-1]]  # [N], row-major like the mask

    logits = None
    if _accepts_logits_to_keep(model):
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=target_mask
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
