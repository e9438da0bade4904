"""Re-asking: now and then Collect shows an earlier judged pair again, sides swapped, to measure how
consistent the person's own verdicts are ("Noisy or inconsistent preferences degrade the trained model").

- **When.** Once :data:`MIN_JUDGED` pairs are judged, each new pair is a repeat with probability
  1 / :data:`REASK_EVERY`, never twice in a row, and only of a pair not re-asked before (one repeat per
  pair keeps the agreement count simple: one repeat, one agreement or not). Nothing on screen says so.
- **Stored.** The verdict is a comparison of the same two stored answers with ``repeat_of`` naming the
  original; its ``a_shown_left`` is the original's swapped. Verdicts name answers, not sides, so a repeat
  agrees when its verdict equals the original's.
- **Not trained on twice.** Training and every pair count skip a repeat's verdict (``pairs_from_comparisons``,
  ``labels_from_comparisons``): the original trains, once, whatever the repeat said. A rewrite typed on a
  repeat is new work, and trains.
- **Label smoothing.** If each verdict were flipped independently with probability ε, two verdicts on the
  same pair would agree with probability ``a = (1 − ε)² + ε² = 1 − 2ε(1 − ε)``; solving for ε gives
  ``ε = (1 − √(2a − 1)) / 2`` (for ``a ≥ ½``). That ε is cDPO's label smoothing (Mitchell 2023, "A note on
  DPO with noisy preferences"): the assumed share of flipped labels.

No Qt, no torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from desktop_dpo.core.store import ComparisonView, Store

REASK_EVERY = 20  # one new pair in this many is a repeat (on average)
MIN_JUDGED = 10  # judged pairs needed before any is repeated
LOW_AGREEMENT = 0.9  # below this (with enough repeats) the data check suggests label smoothing
MIN_REPEATS_FOR_ADVICE = 10  # fewer repeats prove little
MAX_SMOOTHING = 0.4  # the most it ever suggests (0.5 would mean the verdicts carry no information)


def _judged(view: ComparisonView) -> bool:
    """A live original verdict on a pair that was shown (not skipped, not imported, not itself a repeat)."""
    c = view.comparison
    return not c.deleted and c.repeat_of is None and c.verdict != "skip" and c.a_shown_left is not None


def repeat_candidates(views: Sequence[ComparisonView]) -> list[ComparisonView]:
    """Judged pairs (see :func:`_judged`) that have no live repeat yet, oldest first."""
    repeated = {v.comparison.repeat_of for v in views if v.comparison.repeat_of and not v.comparison.deleted}
    return [v for v in views if _judged(v) and v.comparison.id not in repeated]


def due(rng: random.Random, *, last_was_repeat: bool) -> bool:
    """Whether the next pair should be a repeat: never right after one; else one draw of ``rng``, True with
    probability 1 / :data:`REASK_EVERY`. Cheap: the caller reads the pairs only when it is due."""
    return not last_was_repeat and rng.random() < 1 / REASK_EVERY


def pick_repeat(views: Sequence[ComparisonView], rng: random.Random) -> ComparisonView | None:
    """An earlier pair to show again, drawn uniformly among :func:`repeat_candidates`; None before
    :data:`MIN_JUDGED` pairs are judged, or when every judged pair was re-asked already."""
    if sum(1 for v in views if _judged(v)) < MIN_JUDGED:
        return None
    candidates = repeat_candidates(views)
    return rng.choice(candidates) if candidates else None


def pick_repeat_in(store: Store, rng: random.Random) -> ComparisonView | None:
    """:func:`pick_repeat` done by the store in SQL (``Store.repeat_candidate_counts`` and
    ``repeat_candidate``, the same rules as :func:`repeat_candidates`): two counts and one row, where
    :func:`pick_repeat` needs every comparison with its texts (about a second at 20,000, on the GUI thread).
    ``rng`` draws which candidate, uniformly, so a seeded one still picks the same pair."""
    judged, candidates = store.repeat_candidate_counts()
    if judged < MIN_JUDGED or not candidates:
        return None
    # None when another connection changed the candidates between the count and the pick: no repeat now.
    return store.repeat_candidate(rng.randrange(candidates))


def choose_repeat(
    views: Sequence[ComparisonView], rng: random.Random, *, last_was_repeat: bool
) -> ComparisonView | None:
    """The earlier pair to show again now, or None for a new pair: :func:`due`, then :func:`pick_repeat`."""
    return pick_repeat(views, rng) if due(rng, last_was_repeat=last_was_repeat) else None


@dataclass(frozen=True)
class Agreement:
    """The person's verdicts on re-asked pairs against their first verdicts."""

    agreed: int  # repeats with the same verdict as the original
    total: int  # repeats counted (both verdicts live and not skipped)
    disagreeing_ids: tuple[int, ...]  # the originals and repeats that disagree, in id order


def repeat_agreement(views: Sequence[ComparisonView]) -> Agreement:
    """Compare each live repeat with its live original (a skip on either side counts for nothing)."""
    by_id = {v.comparison.id: v.comparison for v in views if not v.comparison.deleted}
    agreed = total = 0
    disagreeing: list[int] = []
    for repeat in by_id.values():
        original = by_id.get(repeat.repeat_of) if repeat.repeat_of is not None else None
        if original is None or "skip" in (original.verdict, repeat.verdict):
            continue
        total += 1
        if agrees(original.verdict, repeat.verdict):
            agreed += 1
        else:
            disagreeing += [original.id, repeat.id]
    return Agreement(agreed, total, tuple(sorted(disagreeing)))


def agrees(original_verdict: str | None, repeat_verdict: str) -> bool | None:
    """Whether a repeat's verdict agrees with the first one (verdicts name answers, not sides, so the same
    verdict is the same answer); None when the pair counts for nothing: the original is gone (None) or
    either verdict is a skip."""
    if original_verdict is None or "skip" in (original_verdict, repeat_verdict):
        return None
    return original_verdict == repeat_verdict


def flip_probability(agreement: float) -> float:
    """ε such that two verdicts, each flipped independently with probability ε, agree with probability
    ``agreement``: ``ε = (1 − √(2a − 1)) / 2`` (½ for ``a ≤ ½``: no better than chance)."""
    return (1 - math.sqrt(max(0.0, 2 * agreement - 1))) / 2


def suggested_smoothing(agreed: int, total: int) -> float | None:
    """The label smoothing to suggest (rounded to 0.01, at most :data:`MAX_SMOOTHING`), or None when the
    agreement is not low or rests on too few repeats."""
    if total < MIN_REPEATS_FOR_ADVICE or agreed / total >= LOW_AGREEMENT:
        return None
    return min(MAX_SMOOTHING, round(flip_probability(agreed / total), 2))
