"""Blind A/B evaluation of an aligned model against its base: which prompts, the samples, the verdicts, the
win rate with its confidence interval.

An evaluation answers one question a person cares about after training: *did the aligned model really get
better?* Each evaluation prompt is answered once by each model with the same seed and sampling settings (so
the only difference is the weights), both at the same quantization (so the comparison does not also measure
the quantization). A judge says which answer is better: the person, blind, in the Evaluate view; or, for
headless runs, a rule (:func:`judge_by_rule`).

Votes are counted as the aligned model's wins and losses; ties and "both bad" say nothing about which model
is better and are counted apart, never in ``n``. The win rate's uncertainty is the Wilson score interval
(:func:`wilson_interval`), which stays inside [0, 1] and behaves at 0 and n wins, where the normal
approximation does not.

The prompts (:func:`evaluation_prompts`) are the store's prompts that no training run learned from: held-out
prompts, and prompts never in any run. A prompt once on the train side of a split leaves the set for good
(splits are fixed once made).

Jobs here write no database rows: :func:`run_rule_evaluation` yields :class:`EvaluationVoted` and
:class:`~desktop_dpo.core.sampling.GgufCopyMade` events, and whoever drives it records them
(:func:`record_vote`, ``Store.update_model_info``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from collections.abc import Generator, Hashable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.config import AppPaths, SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import CancelToken, Progress
from desktop_dpo.core.llm.generation import GenerationResult, draw_seed
from desktop_dpo.core.model_files import find_training_folder, recorded_dtype, training_folder
from desktop_dpo.core.prompt_files import read_prompt_file
from desktop_dpo.core.sampling import (
    DEFAULT_N_CTX,
    GGUF_COPY_OUTTYPE,
    Messages,
    gguf_refusal,
    model_engine,
    with_seq,
)
from desktop_dpo.core.wording import plural

if TYPE_CHECKING:
    from desktop_dpo.core.llm.engine_pool import EnginePool
    from desktop_dpo.core.store import ModelRow, PromptRow, Store

# z of a two-sided 95% interval: the 97.5th percentile of the standard normal distribution.
Z_95 = 1.959964
# Which streamed response is which in an evaluation pair (the ``seq`` of its events).
BASE_SEQ, ALIGNED_SEQ = 0, 1
VOTES = ("aligned", "base", "tie", "both_bad")
PERSON = "person"  # the judge of a vote given in the Evaluate view
PROMPT_SOURCE = "evaluate"  # the source of prompts added from an evaluation prompt file


# ---------------------------------------------------------------------------------------------------------
# The win rate and its interval
# ---------------------------------------------------------------------------------------------------------


def wilson_interval(wins: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927) of a win rate: ``wins`` out of ``n`` decisive votes.

    With p̂ = wins / n::

        centre     = (p̂ + z² / 2n) / (1 + z² / n)
        half-width = z / (1 + z² / n) · √( p̂ (1 − p̂) / n + z² / 4n² )
        interval   = (centre − half-width, centre + half-width)

    It is the set of true rates p for which |p̂ − p| ≤ z √(p (1 − p) / n), so it never leaves [0, 1] and
    is not empty at 0 or n wins (where the normal approximation p̂ ± z √(p̂ (1 − p̂) / n) collapses to a
    point). ``n`` counts decisive votes only: ties and "both bad" are not in it.

    Args:
        wins: votes the aligned model won, 0 ≤ wins ≤ n.
        n: decisive votes (wins + losses). With none the interval is (0, 1): nothing is known yet. Both may
            be fractions: an effective count (:meth:`EvaluationSummary.from_prompt_votes`).
        z: the normal quantile of the confidence level (1.959964 for 95%).

    Raises:
        ValueError: ``wins`` or ``n`` is negative, or ``wins`` exceeds ``n``.
    """
    if n < 0 or wins < 0 or wins > n:
        raise ValueError(f"wins must be between 0 and n, got wins={wins}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p_hat = wins / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p_hat + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p_hat * (1 - p_hat) / n + z2 / (4 * n * n))
    # Clamped only against rounding: at 0 or n wins the exact bound is 0 or 1.
    return max(0.0, centre - half), min(1.0, centre + half)


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


@dataclass(frozen=True)
class EvaluationSummary:
    """The votes of an evaluation, counted for the aligned model, with the 95% Wilson interval."""

    wins: int  # votes for the aligned model
    losses: int  # votes for the base model
    ties: int
    both_bad: int
    n_decisive: int  # wins + losses: the n of the interval
    win_rate: float | None  # wins / n_decisive; None before the first decisive vote
    ci_low: float
    ci_high: float

    @classmethod
    def from_counts(cls, *, wins: int, losses: int, ties: int = 0, both_bad: int = 0) -> EvaluationSummary:
        """The summary of these counts (the interval at 95%)."""
        n = wins + losses
        low, high = wilson_interval(wins, n)
        return cls(
            wins=wins,
            losses=losses,
            ties=ties,
            both_bad=both_bad,
            n_decisive=n,
            win_rate=wins / n if n else None,
            ci_low=low,
            ci_high=high,
        )

    @classmethod
    def from_votes(cls, votes: Iterable[str]) -> EvaluationSummary:
        """The summary of a sequence of votes ("aligned", "base", "tie", "both_bad")."""
        counts = dict.fromkeys(VOTES, 0)
        for vote in votes:
            if vote not in counts:
                raise ValueError(f"Unknown vote {vote!r}; expected one of {', '.join(VOTES)}")
            counts[vote] += 1
        return cls.from_counts(
            wins=counts["aligned"], losses=counts["base"], ties=counts["tie"], both_bad=counts["both_bad"]
        )

    @classmethod
    def from_prompt_votes(cls, votes: Iterable[tuple[Hashable, str]]) -> EvaluationSummary:
        """The summary of votes given several to a prompt (``(prompt, vote)``: several draws of each answer).

        The counts are every vote's; the interval is not. Two draws on one prompt agree more often than two
        prompts do (a prompt one model answers well, it answers well again), so counting every vote as news
        would narrow the interval for nothing. The interval is Wilson's on the effective number of decisive
        votes: their count divided by the design effect, the variance of the win rate between prompts
        (Σ (wins_i − p̂ · decisive_i)² / n², prompts as clusters) over a binomial's p̂ (1 − p̂) / n, at least 1.
        With one vote a prompt it is :meth:`from_votes`'s; with draws that always agree (or every vote one
        way), that of one draw."""
        per_prompt: dict[Hashable, list[int]] = {}
        every: list[str] = []
        for prompt, vote in votes:
            every.append(vote)
            if vote in ("aligned", "base"):
                counts = per_prompt.setdefault(prompt, [0, 0])
                counts[0] += vote == "aligned"
                counts[1] += 1
        summary = cls.from_votes(every)
        n = summary.n_decisive
        if n == 0:
            return summary
        p_hat = summary.wins / n
        if summary.wins in (0, n):  # no spread to measure: as if the draws always agreed
            effect = n / len(per_prompt)
        else:
            between = sum((wins - p_hat * decisive) ** 2 for wins, decisive in per_prompt.values()) / n**2
            effect = max(1.0, between / (p_hat * (1 - p_hat) / n))
        low, high = wilson_interval(p_hat * n / effect, n / effect)
        return dataclasses.replace(summary, ci_low=low, ci_high=high)

    @property
    def total(self) -> int:
        """Every vote, ties and both-bad included."""
        return self.n_decisive + self.ties + self.both_bad

    def conclusion(self) -> str:
        """What the interval allows one to say: "better", "worse" or "unclear" (it contains 50%)."""
        if self.n_decisive and self.ci_low > 0.5:
            return "better"
        if self.n_decisive and self.ci_high < 0.5:
            return "worse"
        return "unclear"

    def sentence(self) -> str:
        """The summary in words, e.g. "The aligned model won 41 of 50 decisive votes (82%, 95% CI 69–90%);
        6 ties"."""
        others = [plural(self.ties, "tie")]
        if self.both_bad:
            others.append(f"{self.both_bad} both bad")
        if self.n_decisive == 0:
            if self.total == 0:
                return "No votes yet"
            return f"No decisive votes yet; {'; '.join(others)}"
        assert self.win_rate is not None
        return (
            f"The aligned model won {self.wins} of {plural(self.n_decisive, 'decisive vote')} "
            f"({_percent(self.win_rate)}, 95% CI {self.ci_low * 100:.0f}–{_percent(self.ci_high)}); "
            + "; ".join(others)
        )


def evaluation_summary(store: Store, evaluation_id: int) -> EvaluationSummary:
    """The summary of an evaluation's stored votes (the store counts them; the interval is computed here)."""
    counts = store.evaluation_vote_counts(evaluation_id)
    return EvaluationSummary.from_counts(
        wins=counts["aligned"], losses=counts["base"], ties=counts["tie"], both_bad=counts["both_bad"]
    )


# ---------------------------------------------------------------------------------------------------------
# The evaluation prompts
# ---------------------------------------------------------------------------------------------------------


def _answerable(prompt: PromptRow) -> bool:
    return bool(prompt.messages) and prompt.messages[-1]["role"] == "user"


def evaluation_prompts(store: Store) -> list[PromptRow]:
    """The prompts an evaluation may use: held-out prompts first, then prompts never used to train.

    A prompt that was on the train side of any run's split is left out (the aligned model has seen the
    answers preferred for it, so it would measure memory, not improvement). Only conversations that end
    with a user message are kept (a model answers them). Oldest first within each group.
    """
    prompts = [p for p in store.list_prompts() if p.split != "train" and _answerable(p)]
    return [p for p in prompts if p.split == "heldout"] + [p for p in prompts if p.split is None]


def add_evaluation_prompts(store: Store, path: str | Path) -> list[int]:
    """Add the prompts of a .txt or .jsonl file (see ``read_prompt_file``) to the store for evaluation.

    They are not queued for collecting. A prompt already in the store keeps its row (and its split: a
    training prompt in the file stays out of the evaluation set). Returns their ids in file order.

    Raises:
        ImportFormatError: some lines are not prompts (nothing is added).
        DesktopDpoError: the file cannot be read or holds no prompt.
    """
    prompt_file = read_prompt_file(path)
    with store.atomic():
        return [store.add_prompt(messages, source=PROMPT_SOURCE) for messages in prompt_file.prompts]


# ---------------------------------------------------------------------------------------------------------
# Sampling both models
# ---------------------------------------------------------------------------------------------------------


def model_quantization(model: ModelRow, paths: AppPaths) -> str | None:
    """The weight type a model runs at in this app ("Q4_K_M", "Q8_0", "BF16" …); None when unknown.

    A GGUF runs as its file type. A Hugging Face folder runs as its GGUF copy (Q8_0), or, when
    llama.cpp's converter cannot read it, in transformers at the folder's own dtype.
    """
    if model.kind == "gguf":
        return recorded_dtype(model)
    if model.kind == "hf":
        if gguf_refusal(model, paths) is None:
            return GGUF_COPY_OUTTYPE.upper()
        return recorded_dtype(model)
    return None


def default_models(models: Sequence[ModelRow]) -> tuple[ModelRow | None, ModelRow | None]:
    """The pair to evaluate by default: ``(base, aligned)`` = the newest aligned model and its parent.

    Either is None when there is none (no aligned model yet, or its base is no longer registered).
    """
    by_id = {model.id: model for model in models}
    aligned = max(
        (m for m in models if m.source == "aligned"), key=lambda m: (m.created_at, m.id), default=None
    )
    if aligned is None:
        return None, None
    parent = by_id.get(aligned.parent_model_id) if aligned.parent_model_id is not None else None
    return parent, aligned


def check_comparable(base_model: ModelRow, aligned_model: ModelRow, paths: AppPaths) -> str | None:
    """Refuse a pair of models that a blind comparison cannot judge fairly; return their quantization.

    Raises:
        DesktopDpoError: the two are the same model, or they run at different quantizations (the
            comparison would measure the quantization as well as the training).
    """
    if base_model.id == aligned_model.id:
        raise DesktopDpoError(
            f"{base_model.name} is chosen as both the base and the aligned model. Choose two different models."
        )
    base_q = model_quantization(base_model, paths)
    aligned_q = model_quantization(aligned_model, paths)
    if base_q is not None and aligned_q is not None and base_q != aligned_q:
        raise DesktopDpoError(
            f"{base_model.name} runs at {base_q} and {aligned_model.name} at {aligned_q}: a comparison "
            "would measure the quantization as well as the training. Export the aligned model at "
            f"{base_q}, or choose a base model at {aligned_q}."
        )
    return base_q or aligned_q


def base_at(store: Store, base: ModelRow, quantization: str) -> ModelRow:
    """``base`` as a blind comparison runs it against a model at ``quantization``: itself at its own file type;
    at Q8_0, its training folder (a GGUF's trainable copy) registered as a Hugging Face model, which the app
    runs as a GGUF copy at Q8_0 (``sampling.gguf_for_model``), so both sides run at the same precision. Asked
    again, it registers the same folder again: the same row, brought up to date.

    Raises:
        DesktopDpoError: ``quantization`` is neither the base's own nor Q8_0.
        ModelError: the base has no training folder ready (no trainable copy yet).
    """
    from desktop_dpo.core.models.registration import register_model

    own = recorded_dtype(base)
    if quantization == own or (base.kind == "hf" and quantization == GGUF_COPY_OUTTYPE.upper()):
        return base  # a Hugging Face folder runs as its Q8_0 GGUF copy already
    if quantization != GGUF_COPY_OUTTYPE.upper():
        raise DesktopDpoError(
            f"{base.name} runs at {own or 'an unknown type'}, and no copy of it runs at {quantization}."
        )
    return register_model(
        store, training_folder(base), name=f"{base.name}, as {quantization}", parent_model_id=base.id
    )


def comparable_base(store: Store, base: ModelRow, aligned: ModelRow, paths: AppPaths) -> ModelRow:
    """What ``aligned`` is compared with when ``base`` is chosen: ``base`` itself, unless ``aligned`` runs at
    Q8_0 (the file an export goes on with) and ``base`` is a GGUF at another type whose trainable copy is
    ready: then that copy at Q8_0 (:func:`base_at`), so the comparison measures the training, not the file
    types. Otherwise ``base``, and :func:`check_comparable` says why a mismatch cannot be compared."""
    base_q, aligned_q = model_quantization(base, paths), model_quantization(aligned, paths)
    if base_q is None or base_q == aligned_q or aligned_q != GGUF_COPY_OUTTYPE.upper():
        return base
    if base.kind != "gguf" or find_training_folder(base) is None:
        return base
    return base_at(store, base, aligned_q)


def _answer(
    pool: EnginePool,
    model: ModelRow,
    paths: AppPaths,
    messages: Messages,
    settings: SamplingSettings,
    seed: int,
    seq: int,
    cancel: CancelToken,
    n_ctx: int,
) -> Generator[Any, None, GenerationResult]:
    with (yield from model_engine(pool, model, paths, cancel, n_ctx=n_ctx)) as engine:
        result = yield from with_seq(engine.generate(messages, settings, seed=seed, cancel=cancel), seq)
    cancel.raise_if_cancelled()
    return result


def sample_evaluation_pair(
    pool: EnginePool,
    base_model: ModelRow,
    aligned_model: ModelRow,
    paths: AppPaths,
    messages: Messages,
    settings: SamplingSettings,
    seed: int,
    cancel: CancelToken | None = None,
    *,
    n_ctx: int = DEFAULT_N_CTX,
    base_answer: GenerationResult | None = None,
) -> Generator[Any, None, tuple[GenerationResult, GenerationResult]]:
    """Answer ``messages`` with the base model, then the aligned model (a job), with the same seed and settings.

    ``base_answer``: the base model's answer with this seed and these settings, known already (a headless
    evaluation repeated against several aligned models: the same model, seed and settings give the same
    answer); the base model is then not asked again.

    Yields :class:`TokenEvent` and :class:`ResponseFinished` with ``seq`` 0 for the base model and 1 for
    the aligned one, ``Log`` lines while a model loads and, for a Hugging Face model seen for the first
    time, its conversion's events (:class:`~desktop_dpo.core.sampling.GgufCopyMade`: the driver records
    it). Returns ``(base_result, aligned_result)``.

    ``n_ctx`` is the tokens of context per answer (the engine pool's key: the default shares the engines
    the other views load).

    Raises:
        DesktopDpoError: the models are the same, or run at different quantizations.
        ModelError: a model's file is gone or cannot be loaded.
        JobCancelled: stopped; nothing is returned (a stopped answer cannot be judged).
    """
    cancel = cancel or CancelToken()
    check_comparable(base_model, aligned_model, paths)
    base = base_answer or (
        yield from _answer(pool, base_model, paths, messages, settings, seed, BASE_SEQ, cancel, n_ctx)
    )
    aligned = yield from _answer(
        pool, aligned_model, paths, messages, settings, seed, ALIGNED_SEQ, cancel, n_ctx
    )
    return base, aligned


# ---------------------------------------------------------------------------------------------------------
# A rule instead of a person
# ---------------------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+(?:['’]\w+)*")


def answer_words(text: str) -> list[str]:
    """The words of an answer, case-folded (letters, digits and inner apostrophes; punctuation dropped)."""
    return _WORD.findall(text.casefold())


def repeated_ngram_share(words: Sequence[str], n: int = 4) -> float:
    """The share of an answer's word n-grams that repeat an n-gram seen earlier in it (0 when it has none).

    "the cat sat on the mat the cat sat on the mat" has nine 4-grams; the last three repeat the first
    three: 3 / 9 = 0.33.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for gram in grams:
        if gram in seen:
            repeats += 1
        seen.add(gram)
    return repeats / len(grams)


@dataclass(frozen=True)
class _GuardedRule:
    """What every rule shares: an answer under ``min_words`` words or repeating itself loses whatever the
    other answer is. "Repeating itself": more than ``max_repeated_share`` of its word ``ngram``-grams repeat
    an earlier one (:func:`repeated_ngram_share`). An empty answer has no words, so it loses."""

    min_words: int = 8  # shorter answers say too little to be useful
    ngram: int = 4  # the n-grams repetition is measured on
    max_repeated_share: float = 0.2  # above this share of repeated n-grams an answer loops

    def degenerate(self, text: str) -> bool:
        """True when the answer loses whatever the other one is: too short or repeating itself."""
        words = answer_words(text)
        return (
            len(words) < self.min_words or repeated_ngram_share(words, self.ngram) > self.max_repeated_share
        )

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain data (an evaluation's settings)."""
        return dataclasses.asdict(self)


def _larger(score_a: float, score_b: float, tolerance: float = 1e-9) -> str:
    """ "a" or "b", whichever score is larger, or "tie" within ``tolerance``."""
    if math.isclose(score_a, score_b, abs_tol=tolerance):
        return "tie"
    return "a" if score_a > score_b else "b"


@dataclass(frozen=True)
class ShorterWinsRule(_GuardedRule):
    """The shorter answer wins (counted in words; equal lengths are a tie), but a degenerate one loses
    (:class:`_GuardedRule`)."""

    name: str = "shorter_wins"  # stored as the judge of each vote it gives

    def prefer(self, text_a: str, text_b: str) -> str:
        """Of two answers neither of which is degenerate: "a" or "b" (the one with fewer words), or "tie"."""
        return _larger(-len(answer_words(text_a)), -len(answer_words(text_b)))


SECOND_PERSON = frozenset({"you", "your", "yours", "yourself", "yourselves", "you're", "you've", "you'll"})


@dataclass(frozen=True)
class SpeaksToYouRule(_GuardedRule):
    """The answer that speaks to the reader wins: the larger share of its words are "you", "your" and
    the like. A taste of voice, not of length: a short answer that says "you" once beats a long one that
    never does, and two answers with the same share tie. A degenerate answer loses (:class:`_GuardedRule`),
    so a model cannot win by saying "you" and stopping.
    """

    name: str = "speaks_to_you"

    def share(self, text: str) -> float:
        """The share of the answer's words that address the reader (0 for an answer with no words)."""
        words = answer_words(text)
        return sum(1 for w in words if w in SECOND_PERSON) / len(words) if words else 0.0

    def prefer(self, text_a: str, text_b: str) -> str:
        """Of two answers neither of which is degenerate: the one with the larger :meth:`share`, or "tie"."""
        return _larger(self.share(text_a), self.share(text_b))


@dataclass(frozen=True)
class PlainWordsRule(_GuardedRule):
    """The answer in plainer words wins: fewer letters per word on average. A taste of vocabulary, neither
    of length nor of voice: a long answer in short words beats a short one in long words. Averages within
    ``tie_letters`` of each other tie. A degenerate answer loses (:class:`_GuardedRule`).
    """

    name: str = "plain_words"
    tie_letters: float = 0.1  # averages closer than this are the same to a reader

    def letters_per_word(self, text: str) -> float:
        """The answer's mean word length in characters (0 for an answer with no words)."""
        words = answer_words(text)
        return sum(len(w) for w in words) / len(words) if words else 0.0

    def prefer(self, text_a: str, text_b: str) -> str:
        """Of two answers neither of which is degenerate: the one with fewer letters per word, or "tie"."""
        return _larger(-self.letters_per_word(text_a), -self.letters_per_word(text_b), self.tie_letters)


Rule = ShorterWinsRule | SpeaksToYouRule | PlainWordsRule
"""The rules a headless evaluation can judge with: each names itself, says which answers are degenerate
(they lose whatever the other answer is) and which of two others it prefers."""
RULES: dict[str, type[ShorterWinsRule] | type[SpeaksToYouRule] | type[PlainWordsRule]] = {
    "shorter_wins": ShorterWinsRule,
    "speaks_to_you": SpeaksToYouRule,
    "plain_words": PlainWordsRule,
}


def judge_by_rule(text_a: str, text_b: str, rule: Rule) -> str:
    """Which of two answers ``rule`` prefers: "a", "b", "tie" or "both_bad"."""
    bad_a, bad_b = rule.degenerate(text_a), rule.degenerate(text_b)
    if bad_a and bad_b:
        return "both_bad"
    if bad_a != bad_b:
        return "b" if bad_a else "a"
    return rule.prefer(text_a, text_b)


def vote_for(verdict: str, aligned_is_a: bool) -> str:
    """The vote for a verdict on answers "a" and "b": which model ("aligned" or "base") won, or tie/both_bad."""
    if verdict in ("tie", "both_bad"):
        return verdict
    if verdict not in ("a", "b"):
        raise ValueError(f"Unknown verdict {verdict!r}")
    return "aligned" if (verdict == "a") == aligned_is_a else "base"


# ---------------------------------------------------------------------------------------------------------
# A headless evaluation
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationVoted:
    """One prompt judged; the driver stores it (:func:`record_vote`)."""

    prompt_id: int
    base: GenerationResult
    aligned: GenerationResult
    vote: str  # "aligned" | "base" | "tie" | "both_bad"
    judge: str  # the rule's name
    seed: int  # the sampler seed of both answers


def evaluation_settings(
    settings: SamplingSettings, rule: Rule | None = None, seed: int | None = None
) -> dict[str, Any]:
    """What an evaluation row keeps of how it was run (``Store.create_evaluation(settings=...)``)."""
    data: dict[str, Any] = {"sampling": settings.to_dict()}
    if rule is not None:
        data["rule"] = rule.to_dict()
    if seed is not None:
        data["seed"] = seed
    return data


def run_rule_evaluation(
    pool: EnginePool,
    base_model: ModelRow,
    aligned_model: ModelRow,
    paths: AppPaths,
    prompts: Sequence[PromptRow],
    settings: SamplingSettings,
    rule: Rule | None = None,
    seed: int = 0,
    cancel: CancelToken | None = None,
    *,
    n_ctx: int = DEFAULT_N_CTX,
    base_answers: MutableMapping[tuple[str, str, int, str], GenerationResult] | None = None,
) -> Generator[Any, None, EvaluationSummary]:
    """Answer every prompt with both models and judge the answers by ``rule`` (a job, for the CLI and demos).

    ``base_answers``, when given, keeps the base model's answers by (base model fingerprint, prompt, seed,
    settings) across evaluations (a curve of rounds against one base): the same model, seed and settings
    give the same answer, so a known one is not sampled again.

    Prompt i is answered by both models with the i-th seed drawn from ``random.Random(seed)``, so a run
    can be repeated exactly. Yields a :class:`Progress` before each prompt, the sampling events of
    :func:`sample_evaluation_pair` and an :class:`EvaluationVoted` per prompt (the driver stores them;
    :func:`record_vote`). Returns the summary of the votes.

    Raises:
        DesktopDpoError: no prompts, or the models cannot be compared (see :func:`check_comparable`).
        JobCancelled: stopped; the votes already yielded stand.
    """
    cancel = cancel or CancelToken()
    rule = rule or ShorterWinsRule()
    if not prompts:
        raise DesktopDpoError(
            "There is no prompt to evaluate on: every prompt was used to train. Add evaluation prompts from "
            "a file first."
        )
    check_comparable(base_model, aligned_model, paths)
    seeds = random.Random(seed)
    votes: list[str] = []
    for index, prompt in enumerate(prompts):
        cancel.raise_if_cancelled()
        yield Progress(index, len(prompts), f"Prompt {index + 1} of {len(prompts)}")
        prompt_seed = draw_seed(seeds)
        key = (
            base_model.fingerprint,
            json.dumps(prompt.messages),
            prompt_seed,
            json.dumps(settings.to_dict()),
        )
        base, aligned = yield from sample_evaluation_pair(
            pool,
            base_model,
            aligned_model,
            paths,
            prompt.messages,
            settings,
            prompt_seed,
            cancel,
            n_ctx=n_ctx,
            base_answer=base_answers.get(key) if base_answers is not None else None,
        )
        if base_answers is not None:
            base_answers[key] = base
        vote = vote_for(judge_by_rule(aligned.text, base.text, rule), aligned_is_a=True)
        votes.append(vote)
        yield EvaluationVoted(prompt.id, base, aligned, vote, rule.name, prompt_seed)
    yield Progress(len(prompts), len(prompts), "Evaluated")
    return EvaluationSummary.from_votes(votes)


def record_vote(store: Store, evaluation_id: int, event: EvaluationVoted) -> int:
    """Store a vote a rule evaluation yielded (the driver's job). Returns the vote's id."""
    return store.add_evaluation_vote(
        evaluation_id,
        prompt_id=event.prompt_id,
        base_text=event.base.text,
        aligned_text=event.aligned.text,
        vote=event.vote,
        judge=event.judge,
        seed=event.seed,
    )
