"""How many judged comparisons can train, and how many training pairs they make: one count for every screen.

A person judges comparisons; training learns from preference pairs, and the two numbers differ. A tie,
"both bad" or a skip gives no pair (it is not *usable*), and a rewrite gives one or two pairs besides the
pick (:func:`~desktop_dpo.core.dpo.data.pairs_from_comparisons`). A run then holds some of those pairs
out, by prompt (:func:`~desktop_dpo.core.dpo.data.split_by_prompt`).

Every place that shows these numbers (Collect's pill, the Data view, the status bar, the Train view's plan
and the run as it starts) takes them, and the words for them, from here, so they cannot drift apart:

- :class:`PairCounts` / :func:`count_pairs` / :func:`store_pair_counts`: usable comparisons ("usable
  pairs", the unit a person counts in) and the training pairs they give;
- :func:`usable_text`, :func:`training_text`, :func:`split_text` and the tooltips :data:`PAIRS_EXPLAINED`
  and :data:`SPLIT_EXPLAINED`: the words.

No torch and no Qt: the GUI calls these on its own thread.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from desktop_dpo.core.dpo.data import PreferencePair, pairs_from_comparisons
from desktop_dpo.core.store import ComparisonView, Store
from desktop_dpo.core.wording import plural

PAIRS_EXPLAINED = (
    "Usable pairs are the comparisons you judged that can train: one answer picked, or an answer you "
    "rewrote. A tie, “both bad” or a skip teaches nothing, so it is not counted.\n"
    "Training learns from training pairs, each a better and a worse answer. A pick gives one. A rewrite "
    "adds your rewrite over the answer you rewrote, and over the other answer too unless you picked that "
    "one: so one comparison with a rewrite can give up to three training pairs."
)

SPLIT_EXPLAINED = (
    "Held-out pairs are chosen by prompt: a share of the prompts (the held-out share in the settings) is "
    "kept aside with all its training pairs, so the run can check how the model does on prompts it never "
    "trained on. A prompt keeps its side once chosen: later runs hold out the same prompts."
)


@dataclass(frozen=True)
class PairCounts:
    """Usable comparisons and the training pairs they give."""

    usable: int  # comparisons that give at least one training pair: the "usable pairs" a person counts
    pairs: int  # the training pairs they give (a rewrite adds one or two)
    rewrites: int = 0  # usable comparisons that give more than one training pair

    @property
    def extra(self) -> int:
        """Training pairs beyond one per usable comparison: what the rewrites add."""
        return self.pairs - self.usable


def pair_counts(pairs: Iterable[PreferencePair]) -> PairCounts:
    """Count ``pairs`` (from :func:`pairs_from_comparisons`) and the comparisons they come from."""
    per_comparison = Counter(pair.comparison_id for pair in pairs)
    return PairCounts(
        usable=len(per_comparison),
        pairs=sum(per_comparison.values()),
        rewrites=sum(1 for count in per_comparison.values() if count > 1),
    )


def count_pairs(views: Iterable[ComparisonView]) -> PairCounts:
    """How many of ``views`` can train, and how many training pairs they give (deleted ones give none)."""
    return pair_counts(pairs_from_comparisons(views))


# The last count of each store, with the store's change stamp then: the status bar, Collect and Data all ask
# after one save, and only the first reads the comparisons.
_counted: weakref.WeakKeyDictionary[Store, tuple[tuple[int, int], PairCounts]] = weakref.WeakKeyDictionary()


def store_pair_counts(store: Store) -> PairCounts:
    """Every comparison in ``store`` not deleted, counted as training counts it (for every model).

    Read again only when the store changed since the last call (``Store.change_stamp``): another
    connection's commit counts too.
    """
    stamp = store.change_stamp()
    cached = _counted.get(store)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    counts = count_pairs(store.comparison_views())
    _counted[store] = (stamp, counts)
    return counts


# --------------------------------------------------------------------------------------------------
# The words
# --------------------------------------------------------------------------------------------------


def usable_text(usable: int) -> str:
    """The headline count: ``12 usable pairs``."""
    return plural(usable, "usable pair")


def rewrites_text(counts: PairCounts) -> str:
    """What the rewrites add: ``1 rewrite adds 2 pairs``, ``3 rewrites add 4 pairs``."""
    verb = "adds" if counts.rewrites == 1 else "add"
    return f"{plural(counts.rewrites, 'rewrite')} {verb} {plural(counts.extra, 'pair')}"


def training_text(counts: PairCounts, *, why: bool = True) -> str:
    """Usable pairs, and the training pairs where they differ, in one phrase:
    ``12 usable pairs → 14 training pairs (1 rewrite adds 2 pairs)``, or ``12 usable pairs``.
    ``why=False`` leaves out the bracket (for a pill, whose tooltip says it)."""
    if counts.pairs == counts.usable:
        return usable_text(counts.usable)
    reason = f" ({rewrites_text(counts)})" if why else ""
    return f"{usable_text(counts.usable)} → {plural(counts.pairs, 'training pair')}{reason}"


def plan_text(
    counts: PairCounts, prompts: int, train_pairs: int, heldout_pairs: int, heldout_prompts: int
) -> str:
    """What a new run would train on, in a sentence; held-out pairs are counted with their prompts:
    ``12 usable pairs → 14 training pairs (1 rewrite adds 2 pairs), from 10 prompts: 13 to train on;
    1 prompt (1 pair) held out to check that the model generalises.``"""
    comma = "," if counts.pairs != counts.usable else ""  # after the bracket that says what rewrites add
    return (
        f"{training_text(counts)}{comma} from {plural(prompts, 'prompt')}: {train_pairs} to train on; "
        f"{plural(heldout_prompts, 'prompt')} ({plural(heldout_pairs, 'pair')}) held out "
        "to check that the model generalises."
    )


def split_text(train_pairs: int, heldout_pairs: int) -> str:
    """How a run splits its training pairs: ``14 training pairs: 13 to train on, 1 held out``."""
    total = plural(train_pairs + heldout_pairs, "training pair")
    return f"{total}: {train_pairs} to train on, {heldout_pairs} held out"
