"""Which two of several sampled answers Collect shows (core/pair_selection.py)."""

from __future__ import annotations

import pytest

from desktop_dpo.core.pair_selection import (
    MIN_DIFFERENCE,
    as_they_come,
    as_they_come_again,
    changed_mind,
    choose_pair,
    favourites,
    keeps_choosing,
    largest_margin,
    most_different,
    smallest_margin,
    word_distance,
)

ANSWERS = [
    "Water boils at one hundred degrees at sea level, lower up a mountain.",  # 0
    "Water boils at one hundred degrees at sea level, lower up the mountain.",  # 1: nearly 0
    "Bring the pot to a rolling boil, then add salt and the pasta.",  # 2
    "I do not know. Ask someone who cooks more than I do, they will tell you.",  # 3
]


def test_word_distance_counts_shared_words_not_order() -> None:
    assert word_distance("the cat sat", "sat the cat") == 0.0
    assert word_distance("the cat", "a dog") == 1.0
    assert word_distance("", "") == 0.0
    # "the the cat" and "the cat": 2 of 3 words shared.
    assert word_distance("The the cat", "the cat") == pytest.approx(1 / 3)


def test_smallest_margin_picks_the_pair_the_model_is_least_sure_between() -> None:
    # Hand-worked margins: |0.9 - (-1.2)| = 2.1 (0,2), |0.9 - 0.5| = 0.4 (0,3), |-1.2 - 0.5| = 1.7 (2,3),
    # |0.95 - 0.5| = 0.45 (1,3), ... The smallest of all is (0,1) at 0.05, but those two answers are
    # nearly the same text, so the smallest among distinct pairs, (0,3) at 0.4, is shown.
    rewards = [0.9, 0.95, -1.2, 0.5]
    assert word_distance(ANSWERS[0], ANSWERS[1]) < MIN_DIFFERENCE
    choice = smallest_margin(ANSWERS, rewards, "Run 3")
    assert (choice.first, choice.second) == (0, 3)
    assert choice.how == "margin"
    assert choice.margin == pytest.approx(0.4)
    assert choice.considered == 4
    assert "Run 3 is least sure between these two" in choice.reason
    assert "0.40" in choice.reason


def test_largest_margin_picks_the_pair_the_model_is_surest_about() -> None:
    # Same hand-worked rewards: (1,2) at |0.95 - (-1.2)| = 2.15 is the widest gap, just ahead of (0,2) at 2.1.
    rewards = [0.9, 0.95, -1.2, 0.5]
    choice = largest_margin(ANSWERS, rewards, "Run 3")
    assert (choice.first, choice.second) == (1, 2)
    assert choice.how == "surest" and choice.margin == pytest.approx(2.15)
    assert "Run 3 is surest which of these two is better" in choice.reason and "2.15" in choice.reason
    # choose_pair uses it after a run unless told to use the smallest margin.
    assert choose_pair(ANSWERS, rewards, "Run 3") == choice
    assert choose_pair(ANSWERS, rewards, "Run 3", after_run="least_sure") == smallest_margin(
        ANSWERS, rewards, "Run 3"
    )


def test_favourites_are_the_two_answers_the_run_likes_most() -> None:
    # Same hand-worked rewards: the two highest are 0 (0.9) and 1 (0.95), but they are nearly the same
    # text; of the distinct pairs, (0,3) and (1,3) both have 0.5 as their lower reward and share no word,
    # so the earlier, (0,3), is shown: gap |0.9 - 0.5| = 0.4.
    rewards = [0.9, 0.95, -1.2, 0.5]
    choice = favourites(ANSWERS, rewards, "Run 3")
    assert (choice.first, choice.second) == (0, 3)
    assert choice.how == "favourites" and choice.margin == pytest.approx(0.4)
    assert "Run 3 likes these two the most" in choice.reason
    assert choose_pair(ANSWERS, rewards, "Run 3", after_run="favourites") == choice
    # The run's worst answer (2) is not shown, where the surest pair (its best against its worst) shows it.
    surest = largest_margin(ANSWERS, rewards)
    assert 2 not in (choice.first, choice.second) and 2 in (surest.first, surest.second)


def test_changed_mind_picks_the_pair_the_last_run_reversed_most_surely() -> None:
    # Same hand-worked rewards now; before, the run that made the model ordered them otherwise:
    #   now    [0.9, 0.95, -1.2, 0.5]      before [-0.3, -0.2, 0.6, 0.4]
    # Distinct pairs whose order the runs disagree on, with min(|gap now|, |gap before|):
    #   (0,2) min(2.1, 0.9) = 0.9; (1,2) min(2.15, 0.8) = 0.8; (0,3) min(0.4, 0.7) = 0.4;
    #   (1,3) min(0.45, 0.6) = 0.45; (2,3) min(1.7, 0.2) = 0.2. (0,1) is the same text, left out.
    # The surest pair now, (1,2), is reversed less surely than (0,2), which is shown.
    rewards, before = [0.9, 0.95, -1.2, 0.5], [-0.3, -0.2, 0.6, 0.4]
    choice = changed_mind(ANSWERS, rewards, "Run 3", before)
    assert (choice.first, choice.second) == (0, 2)
    assert choice.how == "changed_mind" and choice.margin == pytest.approx(2.1)
    assert choice.chosen_by == "changed_mind"
    assert "Run 3 and the run before it disagree most" in choice.reason
    assert choose_pair(ANSWERS, rewards, "Run 3", after_run="changed_mind", earlier=before) == choice
    # Runs that order every pair alike, or a first run (nothing before it): the surest pair now.
    assert changed_mind(ANSWERS, rewards, "Run 3", [2 * r for r in rewards]) == largest_margin(
        ANSWERS, rewards, "Run 3"
    )
    assert choose_pair(ANSWERS, rewards, "Run 3", after_run="changed_mind") == largest_margin(
        ANSWERS, rewards, "Run 3"
    )
    with pytest.raises(ValueError, match="4 answers but 3 earlier rewards"):
        changed_mind(ANSWERS, rewards, "Run 3", before[:3])


def test_largest_margin_leaves_out_answers_that_are_the_same_text() -> None:
    # (0,1) are nearly the same answer: even with the widest gap, they are not a pair worth a pick.
    rewards = [5.0, -5.0, 0.0, 1.0]
    choice = largest_margin(ANSWERS, rewards)
    assert (choice.first, choice.second) == (1, 3)  # |-5 - 1| = 6 beats (0,2) and (1,2) at 5
    assert choice.distance >= MIN_DIFFERENCE


def test_smallest_margin_without_distinct_pairs_still_chooses() -> None:
    texts = ["a b c d e", "a b c d e", "a b c d e f"]
    choice = smallest_margin(texts, [0.0, 0.3, 0.31])
    assert (choice.first, choice.second) == (1, 2)


def test_equal_margins_prefer_the_more_different_pair() -> None:
    choice = smallest_margin(ANSWERS, [0.0, 0.0, 1.0, 1.0])
    # (0,1) margin 0 but too alike; (2,3) margin 0 and distinct.
    assert (choice.first, choice.second) == (2, 3)


def test_before_any_run_two_answers_are_shown_as_they_come() -> None:
    choice = choose_pair(ANSWERS[:2])
    assert (choice.first, choice.second, choice.how) == (0, 1, "as_they_come")
    assert "No training run yet" in choice.reason
    assert as_they_come(ANSWERS) == choose_pair(ANSWERS)


def test_before_any_run_the_most_different_pair_can_be_shown() -> None:
    choice = choose_pair(ANSWERS, before_run="different")
    assert choice.how == "different"
    assert {choice.first, choice.second} != {0, 1}
    best = max(word_distance(ANSWERS[i], ANSWERS[j]) for i in range(4) for j in range(i + 1, 4))
    assert choice.distance == best
    assert "differ the most" in choice.reason


def test_two_answers_are_shown_as_they_come_with_no_reason() -> None:
    choice = most_different(ANSWERS[:2])
    assert (choice.first, choice.second, choice.how, choice.reason) == (0, 1, "only", "")


def test_bad_input_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="at least two"):
        choose_pair(["only one"])
    with pytest.raises(ValueError, match="3 answers but 2 rewards"):
        choose_pair(ANSWERS[:3], [0.1, 0.2])


def test_the_closest_pair_that_still_differs_is_a_minimal_pair():
    # (0,1) are nearly the same answer (under MIN_DIFFERENCE): the closest of the other pairs is shown.
    distinct = [
        (word_distance(ANSWERS[i], ANSWERS[j]), i, j)
        for i in range(4)
        for j in range(i + 1, 4)
        if word_distance(ANSWERS[i], ANSWERS[j]) >= MIN_DIFFERENCE
    ]
    choice = choose_pair(ANSWERS, before_run="similar")
    assert (choice.distance, choice.first, choice.second) == min(distinct)
    assert {choice.first, choice.second} != {0, 1}
    assert choice.how == "similar" and "closest that still differ" in choice.reason
    # When every pair is too alike to compare, the most different of them is shown.
    alike = ["a b c d e f g h i j", "a b c d e f g h i k", "a b c d e f g h i j"]
    assert choose_pair(alike, before_run="similar").how == "different"
    with pytest.raises(ValueError, match="No rule 'longest'"):
        choose_pair(ANSWERS, before_run="longest")
    with pytest.raises(ValueError, match="No rule 'random' for choosing a pair after a run"):
        choose_pair(ANSWERS, [0.0] * 4, after_run="random")


def test_the_rounds_alternate_after_a_run_that_learnt_mostly_from_chosen_pairs() -> None:
    # A run trained on pairs as they came (or on a minority of chosen ones) chooses the next pairs ...
    assert keeps_choosing(0.0) and keeps_choosing(0.5)
    # ... one trained mostly on pairs a run chose does not: the next ones come as they are.
    assert not keeps_choosing(0.51) and not keeps_choosing(1.0)
    again = as_they_come_again(ANSWERS, "Run 4")
    assert (again.first, again.second, again.how, again.considered) == (0, 1, "after_chosen", 4)
    assert again.reason.startswith("Run 4 learnt from pairs chosen by an earlier run")
    # What a pick records of its pair: chosen by a run, or as it came.
    assert largest_margin(ANSWERS, [0.9, 0.95, -1.2, 0.5]).chosen_by == "surest"
    assert smallest_margin(ANSWERS, [0.9, 0.95, -1.2, 0.5]).chosen_by == "margin"
    assert most_different(ANSWERS).chosen_by == "different"
    assert again.chosen_by is None and as_they_come(ANSWERS).chosen_by is None
    assert most_different(ANSWERS[:2]).chosen_by is None  # "only": two answers, nothing chosen
