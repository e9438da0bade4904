"""Whether a new run has enough to learn from, counted in what its loss learns from, and what to add if not.

DPO, IPO, ORPO and SimPO learn from preference pairs: Start needs :data:`~desktop_dpo.core.dpo.runs.
MIN_TRAIN_PAIRS` training pairs. KTO learns from single answers marked good or bad (``labels.py``): picks,
"both bad" picks, rewrites and chat replies rated with a thumb all give them, so a person who has only rated
chat replies can train it. Counting pairs would stop them; a KTO run is counted in labelled answers:

- at least :data:`MIN_KTO_EXAMPLES` (16), as many answers as the 8 pairs the other losses need give;
- at least :data:`MIN_KTO_EACH` (3) of each kind, good and bad. KTO's loss (Eq. 7 of Ethayarajh et al. 2024)
  pushes a good answer's reward above the reference point z0 and a bad one's below it: with one kind only it
  learns "more of everything I showed" (or "less"), not the person's taste, the weights of Eq. (8) have
  nothing to balance, and the held-out accuracy says nothing (every answer asks for the same side). TRL's
  ``KTOTrainer`` does not refuse such a set (it counts a missing kind as 1 when it checks the weights), but
  the paper's experiments all keep both kinds. They also show KTO still learns when one kind is far rarer
  than the other (down to one good answer in ten, with the weights balanced), so a few of the rarer kind are
  enough: 3, not 1, so that holding out a prompt or two rarely leaves training none of them.

The held-out split of labelled answers is the one training makes (``train._Session.load_pairs``):
:func:`~desktop_dpo.core.dpo.data.split_by_prompt` over the prompts of the labels, so a set made only of chat
ratings is split too (a rated reply's prompt is the conversation before it, stored as a prompt).

No torch and no Qt: the Train view calls these on its own thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.data import split_by_prompt
from desktop_dpo.core.dpo.labels import (
    LabelCounts,
    count_labels,
    labels_from_comparisons,
    labels_from_replies,
)
from desktop_dpo.core.dpo.pair_counts import PairCounts, training_text
from desktop_dpo.core.dpo.runs import MIN_TRAIN_PAIRS, RunPlan
from desktop_dpo.core.store import Store
from desktop_dpo.core.wording import plural

MIN_KTO_EXAMPLES = 2 * MIN_TRAIN_PAIRS  # labelled answers: what MIN_TRAIN_PAIRS pairs give
MIN_KTO_EACH = 3  # answers of each kind, good and bad


@dataclass(frozen=True)
class LabelPlan:
    """What a new KTO run would train on: its labelled answers and how they split by prompt."""

    counts: LabelCounts
    prompts: int  # distinct prompts behind the labels
    heldout_prompts: int  # prompts the split keeps out of training
    heldout: int  # labelled answers of those prompts
    train: int  # labelled answers left to train on


def plan_labels(store: Store, plan: RunPlan, config: TrainConfig) -> LabelPlan:
    """The labels a KTO run made now would take (``plan``'s comparisons and rated chat replies, as
    ``kto_batches.training_texts`` reads them) and their split (prompts keep a split once fixed)."""
    views = store.comparison_views(ids=plan.comparison_ids) if plan.comparison_ids else []
    replies = store.reply_labels(ids=plan.reply_label_ids) if plan.reply_label_ids else []
    labels = [*labels_from_comparisons(views), *labels_from_replies(replies)]
    prompt_ids = sorted({label.prompt_id for label in labels})
    existing = {pid: row.split for pid in prompt_ids if (row := store.get_prompt(pid)) and row.split}
    splits = split_by_prompt(prompt_ids, config.heldout_fraction, config.seed, existing)
    heldout = sum(1 for label in labels if splits[label.prompt_id] == "heldout")
    return LabelPlan(
        counts=count_labels(labels),
        prompts=len(prompt_ids),
        heldout_prompts=sum(1 for split in splits.values() if split == "heldout"),
        heldout=heldout,
        train=len(labels) - heldout,
    )


def label_plan_text(labels: LabelPlan, model_name: str) -> str:
    """What a new KTO run of ``model_name`` would train on, in a sentence: ``20 labelled answers (14 good, 6 bad)
    from 20 prompts: 18 to train on; 2 prompts (2 answers) held out to check that the model generalises.``"""
    counts = labels.counts
    if not counts.total:
        return (
            f"No answers marked good or bad for {model_name} yet: pick the better answer in Collect, or rate "
            f"its replies in Chat with 👍 or 👎 (KTO needs at least {MIN_KTO_EXAMPLES})."
        )
    return (
        f"{plural(counts.total, 'labelled answer')} ({counts.desirable} good, {counts.undesirable} bad) from "
        f"{plural(labels.prompts, 'prompt')}: {labels.train} to train on; "
        f"{plural(labels.heldout_prompts, 'prompt')} ({plural(labels.heldout, 'answer')}) held out "
        "to check that the model generalises."
    )


def _what_to_add(counts: LabelCounts) -> str:
    """What would bring ``counts`` to the KTO minimum, in Chat or in Collect: ``Rate 3 more replies as bad (👎)
    in Chat, or pick the better answer of 3 more pairs in Collect (each gives a good answer and a bad one).``"""
    good = max(0, MIN_KTO_EACH - counts.desirable)
    bad = max(0, MIN_KTO_EACH - counts.undesirable)
    more = max(MIN_KTO_EXAMPLES - counts.total, good + bad)
    picks = max(-(-more // 2), good, bad)  # a pick gives one good answer and one bad
    replies = f"{more} more {'reply' if more == 1 else 'replies'}"
    if more == good + bad and not (good and bad):  # one kind is all that is missing
        rate = f"Rate {replies} as {'bad (👎)' if bad else 'good (👍)'}"
    else:
        kinds = " and ".join(f"{n} {thumb}" for n, thumb in ((good, "👍"), (bad, "👎")) if n)
        rate = f"Rate {replies}" + (f" (at least {kinds})" if kinds else "")
    return (
        f"{rate} in Chat, or pick the better answer of {plural(picks, 'more pair')} in Collect "
        "(each gives a good answer and a bad one)."
    )


def kto_blocker(labels: LabelPlan, model_name: str) -> str:
    """Why a KTO run of ``model_name`` cannot start with ``labels`` ("" when it can), and what to add."""
    counts = labels.counts
    if counts.total < MIN_KTO_EXAMPLES or min(counts.desirable, counts.undesirable) < MIN_KTO_EACH:
        return (
            f"KTO needs at least {MIN_KTO_EXAMPLES} answers marked good or bad, {MIN_KTO_EACH} or more of "
            f"each; {model_name} has {counts.total} ({counts.desirable} good, {counts.undesirable} bad). "
            f"{_what_to_add(counts)}"
        )
    if labels.train < 1:
        return "Every labelled answer is held out: lower the held-out share or rate answers to more prompts."
    return ""


def data_blocker(model_name: str, plan: RunPlan | None, labels: LabelPlan | None) -> str:
    """Why a new run of ``model_name`` cannot start for want of data ("" when it can): counted in labelled
    answers for KTO (``labels``, from :func:`plan_labels`), in training pairs for every other loss (``plan``)."""
    if labels is not None:
        return kto_blocker(labels, model_name)
    counts = plan.counts if plan is not None else PairCounts(usable=0, pairs=0)
    if counts.pairs < MIN_TRAIN_PAIRS:  # training pairs: what a run learns from
        unit = "usable" if counts.pairs == counts.usable else "training"
        return (
            f"Train needs at least {MIN_TRAIN_PAIRS} {unit} pairs; {model_name} has "
            f"{training_text(counts, why=False)}. Pick the better answer of more pairs in Collect."
        )
    if plan is not None and plan.train_pairs < 1:
        return "Every training pair is held out: lower the held-out share or collect pairs for more prompts."
    return ""
