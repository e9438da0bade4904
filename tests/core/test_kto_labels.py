"""Single-response labels for KTO from judged comparisons (``core/dpo/labels.py``), one test per verdict kind,
and the sentence the Train view shows about what they add."""

from __future__ import annotations

from desktop_dpo.core.dpo.labels import (
    LabelCounts,
    count_comparison_labels,
    count_labels,
    labels_from_comparisons,
    single_labels_text,
)
from desktop_dpo.core.store import ComparisonRow, ComparisonView

MESSAGES = [{"role": "user", "content": "Capital of France?"}]


def view(
    verdict: str,
    *,
    text_a: str = "Paris.",
    text_b: str = "Lyon, I think.",
    edited_text: str | None = None,
    edited_side: str | None = None,
    deleted: bool = False,
    comparison_id: int = 1,
) -> ComparisonView:
    row = ComparisonRow(
        id=comparison_id, prompt_id=10 + comparison_id, generation_a_id=1, generation_b_id=2,
        a_shown_left=True, verdict=verdict, edited_text=edited_text, edited_side=edited_side, note=None,
        source="collect", created_at=0.0, deleted=deleted,
    )  # fmt: skip
    return ComparisonView(row, MESSAGES, text_a, text_b, 1, 2)


def triples(views: list[ComparisonView]) -> list[tuple[str, bool, str]]:
    return [(label.completion, label.desirable, label.origin) for label in labels_from_comparisons(views)]


def test_a_pick_makes_the_chosen_answer_desirable_and_the_other_undesirable():
    assert triples([view("a")]) == [("Paris.", True, "chosen"), ("Lyon, I think.", False, "rejected")]
    assert triples([view("b")]) == [("Lyon, I think.", True, "chosen"), ("Paris.", False, "rejected")]
    label = labels_from_comparisons([view("a", comparison_id=3)])[0]
    assert (label.comparison_id, label.prompt_id, label.messages) == (3, 13, MESSAGES)


def test_both_bad_gives_two_undesirable_answers():
    assert triples([view("both_bad")]) == [
        ("Paris.", False, "both_bad"),
        ("Lyon, I think.", False, "both_bad"),
    ]


def test_a_rewrite_is_desirable_whatever_the_verdict():
    rewrite = "Paris, on the Seine."
    assert triples([view("a", edited_text=rewrite, edited_side="a")]) == [
        ("Paris.", True, "chosen"),
        ("Lyon, I think.", False, "rejected"),
        (rewrite, True, "rewrite"),
    ]
    assert triples([view("both_bad", edited_text=rewrite, edited_side="b")]) == [
        ("Paris.", False, "both_bad"),
        ("Lyon, I think.", False, "both_bad"),
        (rewrite, True, "rewrite"),
    ]
    # A tie gives nothing, but the rewrite made alongside it still teaches.
    assert triples([view("tie", edited_text=rewrite, edited_side="a")]) == [(rewrite, True, "rewrite")]


def test_ties_skips_and_deleted_comparisons_give_nothing():
    assert triples([view("tie"), view("skip"), view("a", deleted=True), view("both_bad", deleted=True)]) == []


def test_contradictions_are_left_out():
    # Two identical answers, one picked over the other: neither is good or bad.
    assert triples([view("a", text_a="Paris.", text_b=" Paris. ")]) == []
    # "Both bad", then one answer "rewritten" without a change: the rewrite (the later act) wins.
    assert triples([view("both_bad", edited_text="Paris. ", edited_side="a")]) == [
        ("Lyon, I think.", False, "both_bad"),
        ("Paris. ", True, "rewrite"),
    ]


def test_counts_and_the_sentence_the_train_view_shows():
    views = [
        view("a", comparison_id=1),
        view("both_bad", comparison_id=2),
        view("both_bad", comparison_id=3),
        view("b", edited_text="Better.", edited_side="a", comparison_id=4),
        view("tie", edited_text="Also better.", edited_side="b", comparison_id=5),
        view("skip", comparison_id=6),
    ]
    counts = count_comparison_labels(views)
    assert counts == count_labels(labels_from_comparisons(views))
    assert counts == LabelCounts(desirable=4, undesirable=6, both_bad_picks=2, rewrites=2)
    assert (counts.total, counts.added) == (10, 6)
    assert single_labels_text(counts) == (
        "Single labels add 6 examples: 4 from “both bad” picks and 2 rewrites "
        "(KTO learns from each answer on its own)."
    )
    assert single_labels_text(LabelCounts(1, 3, 1, 1)) == (
        "Single labels add 3 examples: 2 from a “both bad” pick and 1 rewrite "
        "(KTO learns from each answer on its own)."
    )
    assert single_labels_text(count_comparison_labels([view("a")])).startswith(
        "Single labels add no examples yet"
    )
