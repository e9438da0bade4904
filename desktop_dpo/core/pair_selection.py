"""Which two of several sampled answers Collect shows: the pair a pick teaches the most from.

A person makes one pick per pair, and most random pairs teach little: two near-identical answers, two
equally poor ones, or a difference the model already knows. So Collect samples ``k`` answers in the
background and shows two of them:

- **After a training run** (the model's last run is known): the pair whose *implicit-reward margin* under
  that run's adapter is smallest, ``|r(x, y_i) − r(x, y_j)|`` with ``r = β·(log π_θ − log π_ref)``
  (``core/dpo/implicit_reward.py``): the two answers the model is least sure between. That is active
  preference learning's uncertainty rule (Muldrew et al. 2024, "Active Preference Learning for Large
  Language Models": the preference model's predictive entropy, ``σ(r_i − r_j)`` closest to ½). Pairs
  whose answers are nearly the same text are left out first (:data:`MIN_DIFFERENCE`): the model is
  unsure between them only because they are the same answer, and a pick between them is a tie.
- **Before the first run** (no adapter to ask): the two answers that differ the most in their words
  (:func:`word_distance`). A clear difference is the easiest pick and, for a base model that has learnt
  nothing of the person yet, the most informative one.

The person still sees two answers and makes one pick; :attr:`PairChoice.reason` is the line Collect
shows to say why this pair. No Qt, no torch.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

MIN_DIFFERENCE = 0.2  # word distance under which two answers count as the same answer (see module doc)
_WORD = re.compile(r"\w+", re.UNICODE)


class PairChoice(NamedTuple):
    """The two answers to show (indices into the sampled answers, ``first < second``) and why."""

    first: int
    second: int
    how: str  # "margin": least sure under a run; "different": most different words; "only": two answers
    margin: float | None  # the implicit-reward margin |r_first − r_second| ("margin" only)
    distance: float  # the two answers' word distance, 0 (same words) to 1 (no word in common)
    considered: int  # how many answers it chose from
    reason: str  # one line for the person


def word_distance(a: str, b: str) -> float:
    """How different two answers' words are: 1 − (shared words ÷ all words), counting repeats (the
    multiset Jaccard distance of their lower-cased words). 0: the same words in any order; 1: none in
    common. Two empty answers are the same (0)."""
    words_a = Counter(w.lower() for w in _WORD.findall(a))
    words_b = Counter(w.lower() for w in _WORD.findall(b))
    union = sum((words_a | words_b).values())
    if union == 0:
        return 0.0
    return 1.0 - sum((words_a & words_b).values()) / union


def reason_for(
    how: str, considered: int, margin: float | None = None, run_label: str = "the last run"
) -> str:
    """The line that says why a pair chosen ``how`` ("margin", "different") from ``considered`` answers is
    shown (:attr:`PairChoice.reason`); "" for "only". ``margin``: the pair's reward gap ("margin" only)."""
    if how == "margin":
        return (
            f"Of {considered} answers, {run_label} is least sure between these two (reward gap "
            f"{margin or 0.0:.2f}): your pick here teaches it the most."
        )
    if how == "different":
        return (
            f"Of {considered} answers, these two differ the most: before the first training run, a clear "
            "difference teaches the most."
        )
    if how == "similar":
        return (
            f"Of {considered} answers, these two are the closest that still differ: a small difference shows "
            "exactly what you prefer."
        )
    return ""


def _pairs(count: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(count), 2))


def most_different(texts: Sequence[str]) -> PairChoice:
    """The two answers with the largest :func:`word_distance` (the earliest such pair on a tie).

    Raises:
        ValueError: fewer than two answers.
    """
    if len(texts) < 2:
        raise ValueError("Choosing a pair needs at least two answers.")
    distances = {(i, j): word_distance(texts[i], texts[j]) for i, j in _pairs(len(texts))}
    (i, j), distance = max(distances.items(), key=lambda item: (item[1], -item[0][0], -item[0][1]))
    if len(texts) == 2:
        return PairChoice(i, j, "only", None, distance, 2, "")
    return PairChoice(i, j, "different", None, distance, len(texts), reason_for("different", len(texts)))


def closest_distinct(texts: Sequence[str]) -> PairChoice:
    """The two answers with the smallest :func:`word_distance` of at least :data:`MIN_DIFFERENCE` (a minimal
    pair: what differs is what the pick is about); :func:`most_different` when no pair is that far apart.

    Raises:
        ValueError: fewer than two answers.
    """
    if len(texts) < 2:
        raise ValueError("Choosing a pair needs at least two answers.")
    distinct = [
        (distance, i, j)
        for i, j in _pairs(len(texts))
        if (distance := word_distance(texts[i], texts[j])) >= MIN_DIFFERENCE
    ]
    if len(texts) == 2 or not distinct:
        return most_different(texts)
    distance, i, j = min(distinct)
    return PairChoice(i, j, "similar", None, distance, len(texts), reason_for("similar", len(texts)))


BEFORE_A_RUN = {"different": most_different, "similar": closest_distinct}  # choose_pair's before_run


def smallest_margin(
    texts: Sequence[str], rewards: Sequence[float], run_label: str = "the last run"
) -> PairChoice:
    """The pair of answers whose implicit rewards are closest (the model least sure between them), among
    pairs at least :data:`MIN_DIFFERENCE` apart in their words; among all pairs when none is.

    ``rewards[i]`` is answer ``i``'s implicit reward under ``run_label``'s adapter. On equal margins the
    more different pair wins, then the earliest.

    Raises:
        ValueError: fewer than two answers, or not one reward per answer.
    """
    if len(texts) < 2:
        raise ValueError("Choosing a pair needs at least two answers.")
    if len(rewards) != len(texts):
        raise ValueError(f"{len(texts)} answers but {len(rewards)} rewards.")
    scored = [
        (abs(rewards[i] - rewards[j]), -word_distance(texts[i], texts[j]), i, j)
        for i, j in _pairs(len(texts))
    ]
    distinct = [row for row in scored if -row[1] >= MIN_DIFFERENCE]
    margin, negative_distance, i, j = min(distinct or scored)
    reason = reason_for("margin", len(texts), margin, run_label)
    return PairChoice(i, j, "margin", margin, -negative_distance, len(texts), reason)


def choose_pair(
    texts: Sequence[str],
    rewards: Sequence[float] | None = None,
    run_label: str = "the last run",
    before_run: str = "different",
) -> PairChoice:
    """The pair to show: :func:`smallest_margin` when ``rewards`` (one per answer, from the model's last
    run) are known, else the rule ``before_run`` names in :data:`BEFORE_A_RUN` (:func:`most_different`, or
    :func:`closest_distinct`). Two answers are shown as they are.

    Raises:
        ValueError: fewer than two answers, not one reward per answer, or an unknown ``before_run``.
    """
    if before_run not in BEFORE_A_RUN:
        raise ValueError(
            f"No rule {before_run!r} for choosing a pair before a run: {', '.join(BEFORE_A_RUN)}."
        )
    if rewards is not None:
        return smallest_margin(texts, rewards, run_label)
    return BEFORE_A_RUN[before_run](texts)
