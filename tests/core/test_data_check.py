"""The data check: each finding on data built to have it, with its numbers worked out by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from desktop_dpo.core.data_check import (
    MIN_DECIDED_FOR_BIAS,
    DataCheck,
    Finding,
    check_data,
    data_check_job,
    normalise,
)
from desktop_dpo.core.jobs import run_job
from desktop_dpo.core.store import Store


@pytest.fixture()
def store() -> Iterator[Store]:
    with Store.open(":memory:") as opened:
        yield opened


def judge(
    store: Store,
    prompt: str,
    a: str,
    b: str,
    verdict: str = "a",
    *,
    left: bool | None = True,
    edited: str | None = None,
) -> int:
    """One comparison: ``a`` shown on the left when ``left`` (None: imported, never shown)."""
    return store.record_pair(
        messages=[{"role": "user", "content": prompt}],
        text_a=a,
        text_b=b,
        verdict=verdict,
        a_shown_left=left,
        edited_text=edited,
        edited_side=None if edited is None else "a",
    )


def keys(check: DataCheck) -> list[str]:
    return [finding.key for finding in check.findings]


def finding(check: DataCheck, key: str) -> Finding:
    found = [f for f in check.findings if f.key == key]
    assert len(found) == 1, keys(check)
    return found[0]


def clean_data(store: Store) -> list[int]:
    """Six prompts with two pairs each; left and longer answers win 6 of 12 times: nothing to find."""
    ids = []
    for p in range(6):
        # Pair 1: A (the longer) on the left wins. Pair 2: B (the shorter) on the right wins.
        ids.append(judge(store, f"Prompt {p}", f"A long answer number {p}", f"Short {p}", "a", left=True))
        ids.append(judge(store, f"Prompt {p}", f"Another long answer {p}", f"Brief {p}", "b", left=True))
    return ids


def test_a_clean_data_set_gives_no_findings(store: Store) -> None:
    clean_data(store)
    check = check_data(store)
    assert check.checked == 12
    assert check.findings == ()
    # Left won 6 of 12 and the longer answer 6 of 12: p = 0.5, both intervals straddle 50 %.
    assert (check.position.hits, check.position.total) == (6, 12)
    assert (check.length.hits, check.length.total) == (6, 12)
    assert check.summary() == "Checked 12 comparisons: nothing needs your attention."


def test_no_comparisons_no_findings(store: Store) -> None:
    check = check_data(store)
    assert (check.checked, check.findings, check.position, check.length) == (0, (), None, None)
    assert check.summary() == "No comparisons to check yet."


def test_exact_duplicates_in_either_order(store: Store) -> None:
    clean_data(store)
    first = judge(store, "Name a fruit", "Apple", "Stone", "a")
    again = judge(store, "Name a fruit", "Apple", "Stone", "a")
    swapped = judge(store, "Name a fruit", "Stone", "Apple", "b", left=False)  # same pair, sides swapped
    check = check_data(store)
    assert keys(check) == ["duplicates"]
    duplicates = finding(check, "duplicates")
    assert duplicates.ids == (first, again, swapped)
    assert duplicates.count == 3
    assert duplicates.title == "Pairs judged more than once"
    assert duplicates.advice.startswith("3 comparisons repeat the same prompt and answers (1 pair in all)")
    assert "keep one of each" in duplicates.advice


def test_near_duplicates_ignore_case_punctuation_and_spacing(store: Store) -> None:
    clean_data(store)
    first = judge(store, "Say hello", "Hello, world!", "Go away.", "a")
    near = judge(store, "say  hello?", "hello world", "go away", "a")
    judge(store, "Say hello", "Hello, wide world!", "Go away.", "a")  # another word: not the same pair
    assert normalise("  Hello,\n WORLD! ") == "hello world"
    check = check_data(store)
    assert keys(check) == ["near_duplicates"]
    assert finding(check, "near_duplicates").ids == (first, near)
    assert finding(check, "near_duplicates").title == "Nearly identical pairs"


def test_skipped_and_deleted_comparisons_are_not_duplicates(store: Store) -> None:
    clean_data(store)
    fruit = judge(store, "Name a fruit", "Apple", "Stone", "a")
    judge(store, "Name a fruit", "Apple", "Stone", "skip")
    deleted = judge(store, "Name a colour", "Blue", "Chair", "a")
    store.set_comparisons_deleted([deleted, judge(store, "Name a colour", "Blue", "Chair", "a")])
    colour = judge(store, "Name a colour", "Blue", "Chair", "a")
    check = check_data(store)
    # No duplicates: what is left of each pair is one comparison, alone with its prompt.
    assert keys(check) == ["single_pair_prompts"]
    assert finding(check, "single_pair_prompts").ids == (fruit, colour)


def test_conflicting_verdicts_on_the_same_two_answers(store: Store) -> None:
    clean_data(store)
    first = judge(store, "Capital of France?", "Paris", "Lyon", "a")
    agree = judge(store, "Capital of France?", "Lyon", "Paris", "b", left=False)  # Paris again
    disagree = judge(store, "Capital of France?", "Paris", "Lyon", "b")  # Lyon this time
    tie = judge(store, "Capital of France?", "Paris", "Lyon", "tie")
    check = check_data(store)
    # A group with a conflict is reported as one, not as duplicates too; its tie is shown with it.
    assert keys(check) == ["conflicts"]
    conflicts = finding(check, "conflicts")
    assert conflicts.ids == (first, agree, disagree, tie)
    assert conflicts.advice.startswith("4 comparisons judge the same two answers differently (1 pair in all)")


def test_identical_answers_teach_nothing(store: Store) -> None:
    clean_data(store)
    same = judge(store, "Yes or no?", "Yes.", "Yes.", "a")
    spacing = judge(store, "Ready?", "Ready  to go.\n", " Ready to\tgo.", "tie")
    again = judge(store, "Yes or no?", "Yes. ", "Yes.", "b")  # the same pair again: not also a duplicate
    judge(store, "Skip me", "Same", "Same", "skip")  # a skip was never judged
    judge(store, "Fix me", "Same", "Same", "a", edited="Better")  # the rewrite teaches
    judge(store, "Punctuation counts here", "Yes.", "Yes!", "a")  # not only whitespace
    check = check_data(store)
    assert keys(check) == ["identical_answers", "single_pair_prompts"]  # "Fix me" and "Punctuation…"
    identical = finding(check, "identical_answers")
    assert identical.ids == (same, spacing, again)
    assert identical.title == "Both answers the same"
    assert identical.advice.startswith("In 3 comparisons the two answers differ at most in spacing")


def side_pairs(store: Store, left_wins: int, total: int) -> list[int]:
    """``total`` decided pairs of equal-length answers (no length bias), the left one winning ``left_wins``."""
    ids = []
    for i in range(total):
        prompt = f"Question {i}"
        ids.append(judge(store, prompt, f"Answer A{i:02d}", f"Answer B{i:02d}", "a", left=i < left_wins))
        judge(store, prompt, f"Other A{i:02d}", f"Other B{i:02d}", "tie")  # a second comparison, undecided
    return ids


def test_position_bias_towards_the_left(store: Store) -> None:
    ids = side_pairs(store, 18, 20)
    check = check_data(store)
    assert keys(check) == ["position_bias", "single_pair_prompts"]
    bias = finding(check, "position_bias")
    assert bias.title == "The left answer wins too often"
    assert "The left answer won 18 of 20 (90%; 95% interval 70–97%)" in bias.advice
    assert bias.ids == tuple(ids[:18])  # the pairs the left side won
    assert check.length is None  # every decided pair's answers are the same length


def test_position_bias_towards_the_right(store: Store) -> None:
    ids = side_pairs(store, 2, 20)  # left won 2 of 20: 10 %, interval 3–30 %
    bias = finding(check_data(store), "position_bias")
    assert bias.title == "The right answer wins too often"
    assert "The left answer won 2 of 20 (10%; 95% interval 3–30%)" in bias.advice
    assert bias.ids == tuple(ids[2:])


@pytest.mark.parametrize(
    ("left_wins", "total", "found"),
    [
        # 14 of 20: p = 0.7, centre = 0.6678, half = 1.96 · √(0.21/20 + 0.0024) / 1.19207 = 0.1868 → 48–85 %.
        (14, 20, False),
        # 15 of 20: p = 0.75, centre = 0.7097, half = 0.1784 → 53–89 %: excludes 50 %.
        (15, 20, True),
        # 9 of 9: the interval (70–100 %) excludes 50 %, but fewer than ten decided pairs prove too little.
        (MIN_DECIDED_FOR_BIAS - 1, MIN_DECIDED_FOR_BIAS - 1, False),
        (MIN_DECIDED_FOR_BIAS, MIN_DECIDED_FOR_BIAS, True),
    ],
)
def test_position_bias_only_when_the_interval_excludes_half(
    store: Store, left_wins: int, total: int, found: bool
) -> None:
    side_pairs(store, left_wins, total)
    check = check_data(store)
    assert ("position_bias" in keys(check)) is found
    assert (check.position.hits, check.position.total) == (left_wins, total)


def test_length_bias_may_be_a_true_preference(store: Store) -> None:
    longer_won = []
    for i in range(20):
        prompt = f"Explain {i}"
        long, short = f"A longer answer {i:02d}", f"Short {i:02d}"
        # Imported pairs (never shown): no position to count. The longer answer wins 16 of 20.
        verdict = "a" if i < 16 else "b"
        comparison = judge(store, prompt, long, short, verdict, left=None)
        if i < 16:
            longer_won.append(comparison)
        judge(store, prompt, f"Other {i:02d}", f"Else {i:02d}", "both_bad", left=None)
    check = check_data(store)
    assert check.position is None
    bias = finding(check, "length_bias")
    # 16 of 20: p = 0.8, centre = 0.8960 / 1.19207 = 0.7517, half = 1.96 · √(0.16/20 + 0.0024) / 1.19207
    # = 0.1677 → 58–92 %.
    assert "The longer answer won 16 of 20 (80%; 95% interval 58–92%)" in bias.advice
    assert "may be a true preference" in bias.advice
    assert bias.title == "The longer answer usually wins"
    assert bias.ids == tuple(longer_won)


def test_prompts_with_a_single_pair_are_a_suggestion(store: Store) -> None:
    clean_data(store)
    single = judge(store, "Only once", "One answer here", "Another one", "a")
    judge(store, "Only once", "Third answer", "Fourth answer", "tie")  # a tie gives DPO no pair
    check = check_data(store)
    assert keys(check) == ["single_pair_prompts"]
    suggestion = finding(check, "single_pair_prompts")
    assert suggestion.suggestion
    assert suggestion.ids == (single,)
    assert suggestion.advice.startswith(
        "1 prompt has only one usable pair. That is fine, but DPO learns more"
    )
    # A suggestion is no problem: the one-line summary says nothing needs attention.
    assert check.problems == ()
    assert check.summary() == "Checked 14 comparisons: nothing needs your attention."


def test_summary_counts_problems_and_the_job_returns_the_check(store: Store) -> None:
    clean_data(store)
    judge(store, "Name a fruit", "Apple", "Stone", "a")
    judge(store, "Name a fruit", "Apple", "Stone", "a")
    judge(store, "Yes or no?", "Yes.", "Yes.", "a")
    judge(store, "Yes or no?", "No.", "Yes.", "b")
    check, events = run_job(data_check_job(store))
    assert keys(check) == ["identical_answers", "duplicates"]
    assert check.summary() == "2 findings in your data"
    assert [event.message for event in events] == ["Checking your data…"]
