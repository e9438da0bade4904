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
    return _totals(Counter(pair.comparison_id for pair in pairs))


def _totals(per_comparison: Counter[int]) -> PairCounts:
    """The counts of comparisons that give ``per_comparison[id]`` training pairs each."""
    return PairCounts(
        usable=sum(1 for count in per_comparison.values() if count > 0),
        pairs=sum(per_comparison.values()),
        rewrites=sum(1 for count in per_comparison.values() if count > 1),
    )


def count_pairs(views: Iterable[ComparisonView]) -> PairCounts:
    """How many of ``views`` can train, and how many training pairs they give (deleted ones give none)."""
    return pair_counts(pairs_from_comparisons(views))


def _pairs_per_comparison(views: Iterable[ComparisonView]) -> Counter[int]:
    """The training pairs each of ``views`` gives, by comparison id, built as training builds them (those
    that give none are absent)."""
    return Counter(pair.comparison_id for pair in pairs_from_comparisons(views))


@dataclass
class _Tally:
    """One store's count, kept comparison by comparison so that a change recounts only what changed."""

    stamp: tuple[int, int]  # Store.change_stamp() when last brought up to date
    mark: int | None  # the store's comparison change mark then; None: it keeps no log (count all each time)
    pairs_of: Counter[int]  # training pairs per comparison that gives any
    counts: PairCounts  # the totals of pairs_of

    @classmethod
    def of(cls, views: Iterable[ComparisonView], stamp: tuple[int, int], mark: int | None) -> _Tally:
        """A tally of every comparison in ``views``."""
        pairs_of = _pairs_per_comparison(views)
        return cls(stamp, mark, pairs_of, _totals(pairs_of))

    def recount(self, ids: Iterable[int], views: Iterable[ComparisonView]) -> None:
        """Count the comparisons ``ids`` again: ``views`` holds those of them that are live now."""
        fresh = _pairs_per_comparison(views)
        usable, pairs, rewrites = self.counts.usable, self.counts.pairs, self.counts.rewrites
        for comparison_id in set(ids).union(fresh):
            old, new = self.pairs_of.pop(comparison_id, 0), fresh[comparison_id]
            usable += (new > 0) - (old > 0)
            pairs += new - old
            rewrites += (new > 1) - (old > 1)
            if new:
                self.pairs_of[comparison_id] = new
        self.counts = PairCounts(usable=usable, pairs=pairs, rewrites=rewrites)


# Each store's tally: the status bar, Collect and Data all ask after one save, and only the first reads
# anything; after a verdict, an edit or a delete, it reads just the comparisons that changed.
_tallies: weakref.WeakKeyDictionary[Store, _Tally] = weakref.WeakKeyDictionary()


def store_pair_counts(store: Store) -> PairCounts:
    """Every comparison in ``store`` not deleted, counted as training counts it (for every model).

    Read again only when the store changed since the last call (``Store.change_stamp``): another
    connection's commit counts too. The first call counts every comparison; later ones recount only the
    comparisons written since (the store's change log, ``Store.comparisons_changed_since``), each with the
    same :func:`~desktop_dpo.core.dpo.data.pairs_from_comparisons` that training uses, so after one verdict
    the recount costs the same with 20 comparisons or 20,000.
    """
    stamp = store.change_stamp()
    tally = _tallies.get(store)
    if tally is not None and tally.stamp == stamp:
        return tally.counts
    mark = store.comparison_change_mark()  # before the rows: a write after it is read again next time
    if tally is None or tally.mark is None or mark is None or mark < tally.mark:
        tally = _Tally.of(store.comparison_views(), stamp, mark)
        _tallies[store] = tally
    else:
        tally.recount(*store.comparisons_changed_since(tally.mark))
        tally.stamp, tally.mark = stamp, mark
    return tally.counts


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
