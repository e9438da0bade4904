"""Which two of several sampled answers Collect shows: the pair a pick teaches the most from.

A person makes one pick per pair, and most random pairs teach little: two near-identical answers, two
equally poor ones, or a difference the model already knows. So Collect samples ``k`` answers in the
background and shows two of them:

- **After a training run** (the model's last run is known): the pair whose *implicit-reward margin* under that
  run's adapter is largest, ``|r(x, y_i) − r(x, y_j)|`` with ``r = β·(log π_θ − log π_ref)``
  (``core/dpo/implicit_reward.py``): the two answers the run is surest which is better
  (:func:`largest_margin`). Where the run is right, the pick confirms the widest contrast it knows of the
  person's taste (the demo's best-against-worst pairs, found without the rule); where it is wrong, the pick
  corrects it where it is most wrong, and DPO's loss weighs that pair the most. That is the "preference
  certainty" rule of active preference learning (Muldrew et al. 2024, "Active Preference Learning for Large
  Language Models"), and the best of the rules ``bench/efficacy.py --workflow person`` measured, though not
  shown ahead of pairs as they come: met head to head after 150 picks, its model beat the random pairs' model
  in 47% of votes over seven runs of three tastes, 36% to 68% from one run to the next (docs/ARCHITECTURE.md).
  The opposite, the pair the run is least sure between (:func:`smallest_margin`, ``after_run="least_sure"``),
  is kept for the bench: it drew near-equal answers, more ties and "both bad", and fell behind random. So is
  the pair of the two answers the run likes most (:func:`favourites`, ``after_run="favourites"``): it showed
  the person where the model was heading, but with ``shorter_wins`` its favourites fell under the rule's floor
  more often, and it ended behind random in each of three seeds (docs/ARCHITECTURE.md). So is the pair the
  last run ordered most surely against the run before it (:func:`changed_mind`, ``after_run="changed_mind"``,
  a query by a committee of two runs): where a run reversed its predecessor, the pick says which one learnt
  the person's taste. In the third round of ``shorter_wins`` (seed 1) it gave 78%, where the surest pair gave
  81% and pairs as they come 80% (docs/ARCHITECTURE.md).
  Pairs whose answers are nearly the same text are left out first (:data:`MIN_DIFFERENCE`): a pick between
  them is a tie, and their margin says nothing of the person.
- **After a run that learnt mostly from chosen pairs** (over half of its pairs were chosen, as recorded in
  ``comparisons.chosen_by``): two answers as they come again (:func:`as_they_come_again`), so the rounds
  alternate. A run trained on the pairs a run was surest about knows the person through that filter; its
  own surest pairs then all turn on the difference it has learnt most (in the bench, round 3's surest pairs
  with ``shorter_wins`` were all about length). Pairs as they come give the next run the person's taste
  unfiltered, cost half as much (2 answers, nothing scored), and the round after is chosen again
  (:func:`keeps_choosing`). Measured against choosing every round, it lost nothing: round 3 gave 0.73
  either way with ``shorter_wins`` and 0.94 against 0.96 with ``speaks_to_you`` (docs/ARCHITECTURE.md).
- **Before the first run** (no adapter to ask): two answers as they come (:func:`as_they_come`). Nothing is
  known of the person yet, and the rules that pick by the text alone taught the wrong thing in the bench:
  the most different pair (:func:`most_different`) set long good answers against degenerate short ones,
  so round 1 taught "longer"; the closest pair that differs (:func:`closest_distinct`) gave more "both
  bad". Both stay as ``before_run`` options for the bench.

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
# A run that learnt from more than this share of chosen pairs does not choose the next ones (module doc).
CHOSEN_MAJORITY = 0.5
_WORD = re.compile(r"\w+", re.UNICODE)


class PairChoice(NamedTuple):
    """The two answers to show (indices into the sampled answers, ``first < second``) and why."""

    first: int
    second: int
    how: str  # "surest" / "margin" (least sure) under a run; "as_they_come", "different", "similar";
    # "after_chosen" (as they come after a run that learnt from chosen pairs); "only" (just two answers)
    margin: float | None  # the implicit-reward margin |r_first − r_second| ("surest" and "margin" only)
    distance: float  # the two answers' word distance, 0 (same words) to 1 (no word in common)
    considered: int  # how many answers it chose from
    reason: str  # one line for the person

    @property
    def chosen_by(self) -> str | None:
        """How the two were chosen from more answers, as a comparison records it (``chosen_by``): ``how``
        when something chose them, None when they are the answers as they came."""
        return None if self.how in UNCHOSEN else self.how


UNCHOSEN = frozenset({"only", "as_they_come", "after_chosen"})  # PairChoice.how of pairs shown as they came


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
    if how == "surest":
        return (
            f"Of {considered} answers, {run_label} is surest which of these two is better (reward gap "
            f"{margin or 0.0:.2f}): your pick confirms what it learnt or corrects it where it is most wrong."
        )
    if how == "changed_mind":
        return (
            f"Of {considered} answers, {run_label} and the run before it disagree most about which of these "
            "two is better: your pick says which of them learnt your taste."
        )
    if how == "favourites":
        return (
            f"Of {considered} answers, {run_label} likes these two the most: your pick tells it which way to "
            "go from the answers it now writes."
        )
    if how == "as_they_come":
        return (
            "No training run yet, so nothing to choose by: two answers as they come. After your first run, "
            "Collect shows the pair that run is surest about."
        )
    if how == "after_chosen":
        return (
            f"{run_label} learnt from pairs chosen by an earlier run, so these two answers come as they are: "
            "the next run learns your taste unfiltered, and the round after shows chosen pairs again."
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


def as_they_come(texts: Sequence[str]) -> PairChoice:
    """The first two answers, as sampled (nothing to choose by before a run).

    Raises:
        ValueError: fewer than two answers.
    """
    if len(texts) < 2:
        raise ValueError("Choosing a pair needs at least two answers.")
    distance = word_distance(texts[0], texts[1])
    return PairChoice(
        0, 1, "as_they_come", None, distance, len(texts), reason_for("as_they_come", len(texts))
    )


def as_they_come_again(texts: Sequence[str], run_label: str = "the last run") -> PairChoice:
    """The first two answers, as sampled, after ``run_label`` learnt mostly from chosen pairs (module doc).

    Raises:
        ValueError: fewer than two answers.
    """
    choice = as_they_come(texts)
    return choice._replace(how="after_chosen", reason=reason_for("after_chosen", len(texts), None, run_label))


def keeps_choosing(chosen_share: float) -> bool:
    """Whether a run that learnt ``chosen_share`` (0 to 1) of its pairs from chosen ones (``Store.
    chosen_share``) chooses the next pairs: only when at most :data:`CHOSEN_MAJORITY` were (module doc)."""
    return chosen_share <= CHOSEN_MAJORITY


# choose_pair's before_run: how a pair is chosen while the model has no run to ask
BEFORE_A_RUN = {"as_they_come": as_they_come, "different": most_different, "similar": closest_distinct}


def _margins(texts: Sequence[str], rewards: Sequence[float]) -> list[tuple[float, float, int, int]]:
    """``(margin, word distance, i, j)`` per pair, only the pairs at least :data:`MIN_DIFFERENCE` apart
    when there are any."""
    if len(texts) < 2:
        raise ValueError("Choosing a pair needs at least two answers.")
    if len(rewards) != len(texts):
        raise ValueError(f"{len(texts)} answers but {len(rewards)} rewards.")
    scored = [
        (abs(rewards[i] - rewards[j]), word_distance(texts[i], texts[j]), i, j) for i, j in _pairs(len(texts))
    ]
    return [row for row in scored if row[1] >= MIN_DIFFERENCE] or scored


def largest_margin(
    texts: Sequence[str], rewards: Sequence[float], run_label: str = "the last run"
) -> PairChoice:
    """The pair of answers whose implicit rewards are furthest apart (the model surest which is better),
    among pairs at least :data:`MIN_DIFFERENCE` apart in their words; among all pairs when none is.

    ``rewards[i]`` is answer ``i``'s implicit reward under ``run_label``'s adapter. On equal margins the
    more different pair wins, then the earliest.

    Raises:
        ValueError: fewer than two answers, or not one reward per answer.
    """
    margin, distance, i, j = max(_margins(texts, rewards), key=lambda row: (row[0], row[1], -row[2], -row[3]))
    reason = reason_for("surest", len(texts), margin, run_label)
    return PairChoice(i, j, "surest", margin, distance, len(texts), reason)


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
    margin, distance, i, j = min(_margins(texts, rewards), key=lambda row: (row[0], -row[1], row[2], row[3]))
    reason = reason_for("margin", len(texts), margin, run_label)
    return PairChoice(i, j, "margin", margin, distance, len(texts), reason)


def favourites(texts: Sequence[str], rewards: Sequence[float], run_label: str = "the last run") -> PairChoice:
    """The two answers ``run_label`` likes most (the pair whose lower implicit reward is highest), among pairs
    at least :data:`MIN_DIFFERENCE` apart in their words; among all pairs when none is. They are the kind of
    answer the run's model now writes, so the pick refines where the model is going. On equal rewards the
    more different pair wins, then the earliest.

    Raises:
        ValueError: fewer than two answers, or not one reward per answer.
    """
    margin, distance, i, j = max(
        _margins(texts, rewards),
        key=lambda row: (min(rewards[row[2]], rewards[row[3]]), row[1], -row[2], -row[3]),
    )
    reason = reason_for("favourites", len(texts), margin, run_label)
    return PairChoice(i, j, "favourites", margin, distance, len(texts), reason)


def changed_mind(
    texts: Sequence[str],
    rewards: Sequence[float],
    run_label: str = "the last run",
    earlier: Sequence[float] | None = None,
) -> PairChoice:
    """The pair on which ``run_label`` reversed the run before it: of the pairs at least
    :data:`MIN_DIFFERENCE` apart whose two answers the two runs order differently (``rewards``: under the last
    run's adapter; ``earlier``: under the adapter of the run that made the model it trained from), the one
    both are surest about, the larger ``min(|margin now|, |margin before|)``. The pick says which run learnt
    the person's taste there. :func:`largest_margin` when the runs order every pair alike, or with no
    ``earlier`` rewards (a first run). On equal margins the more different pair wins, then the earliest.

    Raises:
        ValueError: fewer than two answers, or not one reward per answer.
    """
    if earlier is None:
        return largest_margin(texts, rewards, run_label)
    if len(earlier) != len(texts):
        raise ValueError(f"{len(texts)} answers but {len(earlier)} earlier rewards.")
    reversed_pairs = [
        (min(margin, abs(earlier[i] - earlier[j])), distance, i, j)
        for margin, distance, i, j in _margins(texts, rewards)
        if (rewards[i] - rewards[j]) * (earlier[i] - earlier[j]) < 0
    ]
    if not reversed_pairs:
        return largest_margin(texts, rewards, run_label)
    _score, distance, i, j = max(reversed_pairs, key=lambda row: (row[0], row[1], -row[2], -row[3]))
    margin = abs(rewards[i] - rewards[j])
    reason = reason_for("changed_mind", len(texts), margin, run_label)
    return PairChoice(i, j, "changed_mind", margin, distance, len(texts), reason)


# choose_pair's after_run: how a pair is chosen by the rewards under the model's last run
AFTER_A_RUN = {
    "surest": largest_margin,
    "least_sure": smallest_margin,
    "favourites": favourites,
    "changed_mind": changed_mind,
}


def check_rules(before_run: str, after_run: str) -> None:
    """Raises ValueError naming the choices when ``before_run`` is not in :data:`BEFORE_A_RUN` or
    ``after_run`` not in :data:`AFTER_A_RUN`."""
    for name, rules, when in ((before_run, BEFORE_A_RUN, "before"), (after_run, AFTER_A_RUN, "after")):
        if name not in rules:
            raise ValueError(f"No rule {name!r} for choosing a pair {when} a run: {', '.join(rules)}.")


def choose_pair(
    texts: Sequence[str],
    rewards: Sequence[float] | None = None,
    run_label: str = "the last run",
    before_run: str = "as_they_come",
    after_run: str = "surest",
    earlier: Sequence[float] | None = None,
) -> PairChoice:
    """The pair to show: the rule ``after_run`` names in :data:`AFTER_A_RUN` when ``rewards`` (one per
    answer, from the model's last run) are known, else the rule ``before_run`` names in
    :data:`BEFORE_A_RUN`. Two answers are shown as they are. ``earlier``: the rewards under the run before
    the last one, for ``"changed_mind"`` (:func:`changed_mind`).

    Raises:
        ValueError: fewer than two answers, not one reward per answer, or an unknown rule.
    """
    check_rules(before_run, after_run)
    if rewards is not None:
        if after_run == "changed_mind":
            return changed_mind(texts, rewards, run_label, earlier)
        return AFTER_A_RUN[after_run](texts, rewards, run_label)
    return BEFORE_A_RUN[before_run](texts)
