"""From judged comparisons to preference pairs: the first step of the path a preference takes::

    ComparisonView (store) --pairs_from_comparisons (here)--> PreferencePair (text)
        --tokenize_pair (tokenizing.py)--> TokenizedPair (token ids)
        --collate_for (batches.py)--> batch
        --sequence_logps (logps.py)--> log π(y|x) for chosen and rejected ([B] each) --> loss.py

Here: :class:`PreferencePair`, :func:`pairs_from_comparisons`, the train/held-out split by prompt
(:func:`split_by_prompt`) and :func:`reference_cache_key`, the name of one cached reference value.

No torch: the GUI may import this module (for :class:`PreferencePair`) at start-up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from desktop_dpo.core.store import ComparisonView

if TYPE_CHECKING:
    from desktop_dpo.core.dpo.tokenizing import TokenizedPair

log = logging.getLogger(__name__)

SPLITS = ("train", "heldout")
# Bumped whenever the way a pair becomes token ids changes, so no stale cached reference is reused.
_CACHE_KEY_VERSION = 3  # 2: templated answers end as the template ends them, without EOS;
# 3: an empty answer in the default layout keeps its turn end (" \n" + EOS, was EOS alone), and a template
# that writes the earlier turns differently once an answer follows trains on the prompt the model was shown


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
    - "tie", "both_bad", "skip" give no verdict pair; deleted comparisons give nothing at all. A re-asked
      pair (``repeat_of``) gives no verdict pair either: it measures the person's consistency, and the original
      already trains (once); a rewrite made on it still trains, as it is new work.
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
        if comparison.verdict in ("a", "b") and comparison.repeat_of is None:
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
    import hashlib  # here: loading OpenSSL costs the window ~3 ms, and the counts on its first screen hash nothing

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
    import hashlib

    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
