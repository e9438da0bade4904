"""The data check: what in the stored comparisons would teach the model less than the person thinks.

"DPO is sensitive to preference data quality. Noisy or inconsistent preferences degrade the trained model."
:func:`check_data` reads the live comparisons (``Store.comparison_views``) and returns :class:`Finding` s,
each in plain words with what to do, how many comparisons it concerns and their ids (the Data view filters
its table to them). Pure Python: no Qt, no torch; the GUI runs it as a job (it reads every text).

The rules, chosen to be cheap (one pass and a few dictionaries, linear in the data) and easy to explain:

- **Same pair.** Two comparisons are the same pair when their prompts (every message, role and text) and
  their two answers (in either order) are equal after :func:`normalise`: case folded, punctuation dropped,
  runs of whitespace made one space. Exactly equal texts make *duplicates*; texts equal only after that
  make *near-duplicates*. No similarity ratio: comparing every two answers of a prompt costs quadratic
  time, and a threshold such as "95 % alike" is hard to explain. Skipped comparisons never count, nor
  comparisons whose two answers are identical (their own finding, below).
- **Conflicting verdicts.** A group of the same pair where one comparison preferred one answer and another
  the other answer. These groups are reported as conflicts, not as duplicates.
- **Identical answers.** The two answers are equal once runs of whitespace are made one space. A rewrite
  teaches even then, so comparisons with a rewrite are left out; skipped ones too.
- **Position bias.** Among pairs decided (A or B better) and shown side by side, how often the answer on
  the left won: a finding when the 95 % Wilson interval excludes 50 % and at least
  :data:`MIN_DECIDED_FOR_BIAS` pairs were decided (fewer prove little, and would raise a false alarm).
- **Length bias.** Among decided pairs whose answers differ in length (characters after whitespace is
  made one space), how often the longer one won; the same rule. It may be a true preference.
- **Prompts with a single pair.** Prompts with exactly one usable pair (A or B better, or a rewrite): a
  suggestion, not a problem (``Finding.suggestion``).
- Identical answers are left out of the bias counts: neither is longer, and neither could really win.
- **Agreement with yourself.** Re-asked pairs (``core/reask.py``) are left out of every rule above (a
  repeat is the same pair on purpose) and counted on their own: how often the second verdict matched the
  first, with its Wilson interval. Below :data:`~desktop_dpo.core.reask.LOW_AGREEMENT` over enough repeats,
  a finding suggests cDPO label smoothing of the ε that agreement implies (``reask.suggested_smoothing``).
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from desktop_dpo.core.evaluate import wilson_interval
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.reask import repeat_agreement, suggested_smoothing
from desktop_dpo.core.store import ComparisonView
from desktop_dpo.core.wording import plural

MIN_DECIDED_FOR_BIAS = 10  # below this many decided pairs, no bias finding (see the module docstring)
DECIDED = ("a", "b")

_PUNCTUATION = re.compile(r"[^\w\s]+")


class ComparisonSource(Protocol):
    """What the check reads: :class:`~desktop_dpo.core.store.Store` provides it."""

    def comparison_views(self) -> list[ComparisonView]: ...


@dataclass(frozen=True)
class Rate:
    """``hits`` of ``total`` with the 95 % Wilson score interval ``low``–``high`` (fractions)."""

    hits: int
    total: int
    low: float
    high: float

    @property
    def share(self) -> float:
        """``hits / total`` (0 when there is nothing to count)."""
        return self.hits / self.total if self.total else 0.0

    def excludes_half(self) -> bool:
        """True when the interval lies wholly above or wholly below 50 %."""
        return self.total > 0 and (self.low > 0.5 or self.high < 0.5)

    def words(self) -> str:
        """E.g. "18 of 20 (90%; 95% interval 70–97%)"."""
        return (
            f"{self.hits} of {self.total} ({self.share:.0%}; "
            f"95% interval {self.low * 100:.0f}–{self.high * 100:.0f}%)"
        )


@dataclass(frozen=True)
class Finding:
    """One thing the check found.

    ``key`` names the rule (``duplicates``, ``near_duplicates``, ``identical_answers``, ``position_bias``,
    ``length_bias``, ``conflicts``, ``single_pair_prompts``); ``title`` and ``advice`` are what a person reads;
    ``ids`` the comparisons concerned, in id order (``count`` of them). A ``suggestion`` is no problem.
    """

    key: str
    title: str
    advice: str
    ids: tuple[int, ...]
    suggestion: bool = False

    @property
    def count(self) -> int:
        """How many comparisons the finding concerns."""
        return len(self.ids)


@dataclass(frozen=True)
class DataCheck:
    """What :func:`check_data` found in ``checked`` live comparisons."""

    checked: int
    findings: tuple[Finding, ...] = ()
    position: Rate | None = None  # how often the left answer won (None: no pair decided side by side)
    length: Rate | None = None  # how often the longer answer won (None: no decided pair of unequal lengths)
    agreement: Rate | None = None  # re-asked pairs given the same verdict again (None: none re-asked yet)
    label_smoothing: float | None = None  # the smoothing suggested for a low agreement (None: none)
    problems: tuple[Finding, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "problems", tuple(f for f in self.findings if not f.suggestion))

    def summary(self) -> str:
        """One line: "2 findings in your data" (problems only), or that nothing needs a look."""
        if not self.checked:
            return "No comparisons to check yet."
        if not self.problems:
            return f"Checked {plural(self.checked, 'comparison')}: nothing needs your attention."
        return f"{plural(len(self.problems), 'finding')} in your data"


def rate(hits: int, total: int) -> Rate:
    """``hits`` of ``total`` with its 95 % Wilson interval."""
    low, high = wilson_interval(hits, total)
    return Rate(hits, total, low, high)


def spaces(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space, trimmed."""
    return " ".join(text.split())


def normalise(text: str) -> str:
    """What makes two texts "nearly the same": case folded, punctuation dropped, whitespace as one space."""
    return spaces(_PUNCTUATION.sub(" ", text.casefold()))


class _Pair:
    """A comparison with its texts made comparable once (the check looks at each several times).

    The normalised answers (``near``) are worked out only when asked for: only comparisons that share a
    prompt with another need them, and normalising is most of the check's time.
    """

    def __init__(self, view: ComparisonView):
        self.view = view
        self.spaced = (spaces(view.text_a), spaces(view.text_b))  # whitespace made one space
        # (role, normalised text) of every message
        self.prompt = tuple((m.get("role", ""), normalise(m.get("content", ""))) for m in view.messages)

    @functools.cached_property
    def near(self) -> tuple[str, str]:
        """Answers A and B, normalised."""
        return normalise(self.spaced[0]), normalise(self.spaced[1])

    @property
    def id(self) -> int:
        return self.view.comparison.id

    @property
    def verdict(self) -> str:
        return self.view.comparison.verdict

    def key(self, *, exact: bool) -> tuple[object, ...]:
        """The same pair: the same prompt and the same two answers in either order."""
        if exact:
            messages = tuple((m.get("role", ""), m.get("content", "")) for m in self.view.messages)
            return (messages, *sorted((self.view.text_a, self.view.text_b)))
        return (self.prompt, *sorted(self.near))

    @property
    def preferred(self) -> str | None:
        """The normalised text of the answer a decided verdict preferred (None when undecided)."""
        if self.verdict not in DECIDED:
            return None
        return self.near[0] if self.verdict == "a" else self.near[1]

    @property
    def identical(self) -> bool:
        """The two answers differ at most in whitespace."""
        return self.spaced[0] == self.spaced[1]


def _ids(pairs: Iterable[_Pair]) -> tuple[int, ...]:
    return tuple(sorted(pair.id for pair in pairs))


def _same_pair_findings(pairs: Sequence[_Pair]) -> list[Finding]:
    """Duplicates, near-duplicates and conflicting verdicts: groups of the same pair."""
    by_prompt: dict[tuple[tuple[str, str], ...], list[_Pair]] = defaultdict(list)
    for pair in pairs:
        if pair.verdict != "skip" and not pair.identical:  # identical answers are a finding of their own
            by_prompt[pair.prompt].append(pair)
    groups: dict[tuple[object, ...], list[_Pair]] = defaultdict(list)
    for shared in by_prompt.values():
        if len(shared) > 1:  # a pair alone with its prompt cannot be repeated
            for pair in shared:
                groups[pair.key(exact=False)].append(pair)
    exact: list[_Pair] = []
    near: list[_Pair] = []
    conflicts: list[_Pair] = []
    exact_groups = near_groups = conflict_groups = 0
    for group in groups.values():
        if len(group) < 2:
            continue
        if len({pair.preferred for pair in group} - {None}) > 1:
            conflicts += group
            conflict_groups += 1
        elif len({pair.key(exact=True) for pair in group}) == 1:
            exact += group
            exact_groups += 1
        else:
            near += group
            near_groups += 1
    findings = []
    if exact:
        findings.append(
            Finding(
                "duplicates",
                "Pairs judged more than once",
                f"{plural(len(exact), 'comparison')} repeat the same prompt and answers "
                f"({plural(exact_groups, 'pair')} in all), so training counts them more than once: "
                "keep one of each and delete the others.",
                _ids(exact),
            )
        )
    if near:
        findings.append(
            Finding(
                "near_duplicates",
                "Nearly identical pairs",
                f"{plural(len(near), 'comparison')} have the same prompt and answers once case, punctuation "
                f"and spacing are ignored ({plural(near_groups, 'pair')} in all): check them and keep one "
                "of each.",
                _ids(near),
            )
        )
    if conflicts:
        findings.append(
            Finding(
                "conflicts",
                "Conflicting verdicts",
                f"{plural(len(conflicts), 'comparison')} judge the same two answers differently "
                f"({plural(conflict_groups, 'pair')} in all), so one verdict undoes the other in training: "
                "read them again and keep the verdict you agree with.",
                _ids(conflicts),
            )
        )
    return findings


def _identical_answers(pairs: Sequence[_Pair]) -> Finding | None:
    same = [
        pair
        for pair in pairs
        if pair.verdict != "skip" and pair.view.comparison.edited_text is None and pair.identical
    ]
    if not same:
        return None
    return Finding(
        "identical_answers",
        "Both answers the same",
        f"In {plural(len(same), 'comparison')} the two answers differ at most in spacing, so "
        + ("it teaches nothing: delete it" if len(same) == 1 else "they teach nothing: delete them")
        + ", or rewrite the answer you wanted.",
        _ids(same),
    )


def _bias(
    first: list[_Pair],
    second: list[_Pair],
    names: tuple[str, str],
    finding: Callable[[Rate, str, list[_Pair]], Finding],
) -> tuple[Rate | None, Finding | None]:
    """How often ``first`` won of ``first`` and ``second`` (the pairs split by which kind of answer won), and,
    when enough pairs were decided and the interval leaves out ½, ``finding(rate, favoured kind's name,
    its pairs)``."""
    total = len(first) + len(second)
    if not total:
        return None, None
    measured = rate(len(first), total)
    if total < MIN_DECIDED_FOR_BIAS or not measured.excludes_half():
        return measured, None
    favoured, name = (first, names[0]) if measured.low > 0.5 else (second, names[1])
    return measured, finding(measured, name, favoured)


def _position_bias(decided: Sequence[_Pair]) -> tuple[Rate | None, Finding | None]:
    left: list[_Pair] = []
    right: list[_Pair] = []
    for pair in decided:
        a_shown_left = pair.view.comparison.a_shown_left
        if a_shown_left is not None:
            (left if (pair.verdict == "a") == a_shown_left else right).append(pair)

    def finding(measured: Rate, side: str, favoured: list[_Pair]) -> Finding:
        return Finding(
            "position_bias",
            f"The {side} answer wins too often",
            f"The left answer won {measured.words()} of the pairs you judged side by side; by chance it would "
            f"be about half, so the side may sway you: read the answers in full before picking, and check "
            f"some of the {plural(len(favoured), 'pair')} the {side} side won.",
            _ids(favoured),
        )

    return _bias(left, right, ("left", "right"), finding)


def _length_bias(decided: Sequence[_Pair]) -> tuple[Rate | None, Finding | None]:
    longer_won: list[_Pair] = []
    shorter_won: list[_Pair] = []
    for pair in decided:
        a, b = len(pair.spaced[0]), len(pair.spaced[1])
        if a != b:
            (longer_won if (a > b) == (pair.verdict == "a") else shorter_won).append(pair)

    def finding(measured: Rate, which: str, favoured: list[_Pair]) -> Finding:
        return Finding(
            "length_bias",
            f"The {which} answer usually wins",
            f"The longer answer won {measured.words()} of the decided pairs. This may be a true preference, "
            f"but the trained model will learn to write {which} answers either way: if length was not the "
            "reason, check some of these pairs.",
            _ids(favoured),
        )

    return _bias(longer_won, shorter_won, ("longer", "shorter"), finding)


def _single_pair_prompts(pairs: Sequence[_Pair]) -> Finding | None:
    usable: dict[tuple[tuple[str, str], ...], list[_Pair]] = defaultdict(list)
    for pair in pairs:
        if pair.verdict in DECIDED or pair.view.comparison.edited_text is not None:
            usable[pair.prompt].append(pair)
    single = [group[0] for group in usable.values() if len(group) == 1]
    if not single:
        return None
    return Finding(
        "single_pair_prompts",
        "Prompts with a single pair",
        f"{plural(len(single), 'prompt')} {'has' if len(single) == 1 else 'have'} only one usable pair. That is fine, but DPO learns more "
        "when a prompt has several answers compared: in Collect, judge a few more answers to some of them.",
        _ids(single),
        suggestion=True,
    )


def agreement_text(measured: Rate) -> str:
    """E.g. ``You agreed with yourself on 17 of 20 repeated pairs (85%; 95% interval 64–95%).``"""
    what = "repeated pair" if measured.total == 1 else "repeated pairs"
    return (
        f"You agreed with yourself on {measured.hits} of {measured.total} {what} ({measured.share:.0%}; "
        f"95% interval {measured.low * 100:.0f}–{measured.high * 100:.0f}%)."
    )


def _agreement(views: Sequence[ComparisonView]) -> tuple[Rate | None, float | None, Finding | None]:
    """The agreement on re-asked pairs, the label smoothing it suggests, and the finding when it is low."""
    agreement = repeat_agreement(views)
    if not agreement.total:
        return None, None, None
    measured = rate(agreement.agreed, agreement.total)
    smoothing = suggested_smoothing(agreement.agreed, agreement.total)
    if smoothing is None:
        return measured, None, None
    finding = Finding(
        "low_agreement",
        "Your verdicts on repeated pairs often differ",
        f"Now and then Collect shows an earlier pair again, sides swapped. {agreement_text(measured)} "
        f"That is as if about {smoothing:.0%} of your picks were flipped by chance: train with label "
        f"smoothing {smoothing:.2f} so the model trusts each pick a little less, and look again at the "
        f"{plural(len(agreement.disagreeing_ids), 'comparison')} where your two verdicts differ.",
        agreement.disagreeing_ids,
    )
    return measured, smoothing, finding


def check_views(views: Sequence[ComparisonView]) -> DataCheck:
    """Check these comparisons (deleted ones should be left out by the caller)."""
    agreement, smoothing, agreement_finding = _agreement(views)
    live = [
        _Pair(view) for view in views if not view.comparison.deleted and view.comparison.repeat_of is None
    ]
    decided = [pair for pair in live if pair.verdict in DECIDED and not pair.identical]
    same_pair = {finding.key: finding for finding in _same_pair_findings(live)}
    position, position_finding = _position_bias(decided)
    length, length_finding = _length_bias(decided)
    ordered = (  # the most harmful first; the suggestion last
        same_pair.get("conflicts"),
        _identical_answers(live),
        same_pair.get("duplicates"),
        same_pair.get("near_duplicates"),
        position_finding,
        length_finding,
        agreement_finding,
        _single_pair_prompts(live),
    )
    findings = tuple(finding for finding in ordered if finding is not None)
    return DataCheck(
        checked=len(live),
        findings=findings,
        position=position,
        length=length,
        agreement=agreement,
        label_smoothing=smoothing,
    )


def check_data(store: ComparisonSource) -> DataCheck:
    """Check every live comparison of ``store`` (one query; the rest is in memory)."""
    return check_views(store.comparison_views())


def data_check_job(store: ComparisonSource, cancel: CancelToken | None = None) -> Job:
    """:func:`check_data` as a job (for ``JobOp(..., store=db_path)``): one progress line, then the result."""
    yield Progress(0, 0, "Checking your data…")
    if cancel is not None:
        cancel.raise_if_cancelled()
    return check_data(store)
