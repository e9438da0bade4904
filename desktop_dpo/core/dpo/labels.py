"""From judged comparisons to single-response labels: what KTO learns from (Ethayarajh et al. 2024).

DPO learns from pairs (:func:`~desktop_dpo.core.dpo.data.pairs_from_comparisons`): one answer better than
another. KTO ("Model Alignment as Prospect Theoretic Optimization") learns from each answer on its own,
labelled desirable or undesirable, so judgements that give no pair still teach:

    ComparisonView (store) --labels_from_comparisons (here)--> SingleLabel (text)
        --tokenize_labels (kto_batches.py)--> TokenizedLabel --> kto.py
    ReplyLabelRow (a thumb on a chat reply) --labels_from_replies (here)--> SingleLabel

Here: :class:`SingleLabel`, :func:`labels_from_comparisons`, and the counts and words the Train view shows
(:class:`LabelCounts`, :func:`count_labels`, :func:`single_labels_text`), taken from the same function so
the line a person reads and what training uses cannot drift apart.

No torch and no Qt: the GUI calls these on its own thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from desktop_dpo.core.store import ComparisonView, ReplyLabelRow
from desktop_dpo.core.wording import listed, plural

ORIGINS = ("chosen", "rejected", "both_bad", "rewrite", "chat")

KTO_EXPLAINED = (
    "KTO learns from each answer on its own, marked good or bad, instead of from pairs. So besides the "
    "answers you picked (good) and the ones you passed over (bad), both answers of a “both bad” pick and "
    "each of your rewrites teach it too."
)


@dataclass(frozen=True)
class SingleLabel:
    """One answer to a prompt, labelled desirable (good) or undesirable (bad), still as text."""

    comparison_id: int  # the comparison it came from (one gives up to three labels); 0: a chat reply
    prompt_id: int  # the prompt, which decides the train/held-out split
    messages: list[dict[str, str]]  # the conversation up to the answer: [{role, content}, ...]
    completion: str  # the answer
    desirable: bool  # True: an answer the person wants; False: one they do not
    origin: str  # one of ORIGINS: "chosen", "rejected" (a pick), "both_bad", "rewrite", "chat" (a thumb)
    reply_label_id: int | None = None  # a thumb on a chat reply: its id (store.reply_labels)


def _other(side: str) -> str:
    return "b" if side == "a" else "a"


def _labels_of(view: ComparisonView) -> list[tuple[str, bool, str]]:
    """(answer, desirable, origin) of one comparison that is not deleted, before any is left out."""
    comparison = view.comparison
    texts = {"a": view.text_a, "b": view.text_b}
    labels: list[tuple[str, bool, str]] = []
    if comparison.verdict in ("a", "b"):
        chosen, rejected = texts[comparison.verdict], texts[_other(comparison.verdict)]
        # Two identical answers, one picked over the other, say nothing about either (as for the pair).
        if chosen.strip() != rejected.strip():
            labels += [(chosen, True, "chosen"), (rejected, False, "rejected")]
    elif comparison.verdict == "both_bad":
        labels += [(texts["a"], False, "both_bad"), (texts["b"], False, "both_bad")]
    # "tie" and "skip" give nothing: a tie says the two answers are alike, not whether they are good or bad
    # (two good answers and two poor ones get the same tie), and a skip is no judgement at all.
    if comparison.edited_text is not None and comparison.edited_side in ("a", "b"):
        rewrite = comparison.edited_text
        # The rewrite is what the person wanted: an answer of the same comparison marked bad with the very
        # same text (a rewrite that changed nothing of a "both bad" answer) would contradict it; the later,
        # deliberate act wins.
        labels = [label for label in labels if label[1] or label[0].strip() != rewrite.strip()]
        labels.append((rewrite, True, "rewrite"))
    return labels


def labels_from_comparisons(views: Iterable[ComparisonView]) -> list[SingleLabel]:
    """Turn judged comparisons into single-response labels, in input order.

    - Verdict "a" or "b": the picked answer is desirable, the other undesirable (left out when the two texts
      are the same up to surrounding whitespace, as the pair is).
    - "both_bad": both answers are undesirable.
    - A rewrite (the person's edit of one answer into what they wanted) is desirable, whatever the verdict.
    - "tie" and "skip" give no label (see :func:`_labels_of`); deleted comparisons give nothing at all. A
      re-asked pair (``repeat_of``) gives only its rewrite, if the person made one: the original trains, once.
    """
    labels: list[SingleLabel] = []
    for view in views:
        if view.comparison.deleted:
            continue
        repeat = view.comparison.repeat_of is not None
        messages = [{"role": m["role"], "content": m["content"]} for m in view.messages]
        labels.extend(
            SingleLabel(
                comparison_id=view.comparison.id,
                prompt_id=view.comparison.prompt_id,
                messages=messages,
                completion=completion,
                desirable=desirable,
                origin=origin,
            )
            for completion, desirable, origin in _labels_of(view)
            if not repeat or origin == "rewrite"
        )
    return labels


def labels_from_replies(rows: Iterable[ReplyLabelRow], model_id: int | None = None) -> list[SingleLabel]:
    """Turn thumbs on chat replies into single labels, in input order: up is desirable, down undesirable.

    ``model_id``: keep only replies that model wrote (a thumb says what that model wrote, so it teaches that
    model only); None keeps all. Taken-back thumbs (deleted) and empty replies give nothing.
    """
    return [
        SingleLabel(
            comparison_id=0,
            prompt_id=row.prompt_id,
            messages=[{"role": m["role"], "content": m["content"]} for m in row.messages],
            completion=row.reply,
            desirable=row.desirable,
            origin="chat",
            reply_label_id=row.id,
        )
        for row in rows
        if not row.deleted and row.reply.strip() and (model_id is None or row.model_id == model_id)
    ]


# --------------------------------------------------------------------------------------------------
# The counts and the words
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelCounts:
    """How many single labels comparisons give, and what they add beyond the picks."""

    desirable: int  # answers marked good: picked ones and rewrites
    undesirable: int  # answers marked bad: passed-over ones and both answers of a "both bad" pick
    both_bad_picks: int  # "both bad" comparisons (each gives two undesirable answers)
    rewrites: int  # rewrites (each gives one desirable answer)
    chat_replies: int = 0  # chat replies rated with a thumb (each gives one answer, good or bad)

    @property
    def total(self) -> int:
        """Every labelled answer."""
        return self.desirable + self.undesirable

    @property
    def added(self) -> int:
        """The examples only single labels bring: both answers of each "both bad" pick, and each rewrite as an
        answer of its own."""
        return 2 * self.both_bad_picks + self.rewrites + self.chat_replies


def count_labels(labels: Iterable[SingleLabel]) -> LabelCounts:
    """Count ``labels`` (from :func:`labels_from_comparisons`)."""
    desirable = undesirable = rewrites = chat = 0
    both_bad: set[int] = set()
    for label in labels:
        desirable += label.desirable
        undesirable += not label.desirable
        rewrites += label.origin == "rewrite"
        chat += label.origin == "chat"
        if label.origin == "both_bad":
            both_bad.add(label.comparison_id)
    return LabelCounts(desirable, undesirable, len(both_bad), rewrites, chat)


def count_comparison_labels(views: Iterable[ComparisonView]) -> LabelCounts:
    """:func:`count_labels` of the labels ``views`` give (deleted ones give none)."""
    return count_labels(labels_from_comparisons(views))


def single_labels_text(counts: LabelCounts) -> str:
    """What single labels bring, in a sentence: ``Single labels add 9 examples: 4 from “both bad” picks,
    2 rewrites and 3 chat replies you rated (KTO learns from each answer on its own).``"""
    why = "(KTO learns from each answer on its own)"
    parts = []
    if counts.both_bad_picks:
        picks = "a “both bad” pick" if counts.both_bad_picks == 1 else "“both bad” picks"
        parts.append(f"{2 * counts.both_bad_picks} from {picks}")
    if counts.rewrites:
        parts.append(plural(counts.rewrites, "rewrite"))
    if counts.chat_replies:
        parts.append(f"{plural(counts.chat_replies, 'chat reply', 'chat replies')} you rated")
    if not parts:
        return (
            "Single labels add no examples yet: mark “both bad” answers, rewrite one, or rate replies in Chat "
            f"with 👍 or 👎 to give KTO more to learn from {why}."
        )
    return f"Single labels add {plural(counts.added, 'example')}: {listed(parts)} {why}."
