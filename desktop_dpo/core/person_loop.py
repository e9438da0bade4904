"""The loop as a person runs it, headless: two answers shown per prompt, one pick, a budget of picks.

The demo (``demo_loop.py``) has a luxury a person does not: eight answers per prompt and the rule's best
played against the worst of each kind. Here each prompt costs one pick, as in Collect:

    1 model, copy    as in the demo (the bundled Gemma 3 270M and its trainable copy)
    then, once per round (``rounds`` rounds share ``picks`` picks as evenly as they can):
    2 picks      per training prompt, the pair Collect would show from the current model, judged by the
                 rule as a person judges: left better, right better, tie or both bad. Every verdict
                 counts against the budget; only a winner gives a training pair (and, with
                 ``loss_type="kto"``, a "both bad" pick two undesirable answers).
                 - ``selection`` off: two answers, shown as they come (Collect without selection);
                 - ``selection`` on: before the first run, two answers as they come (nothing to choose
                   by: the same draws as without selection, so round 1 is the same in both); after it,
                   ``candidates`` answers and the pair ``pair_selection.choose_pair`` picks: the largest
                   implicit-reward margin under the run that made the current model
                   (``dpo/implicit_reward.py``), or, with ``after_run="least_sure"``, the smallest (with
                   ``"changed_mind"``, the answers are scored by the run before it too); but
                   after a run that learnt mostly from chosen pairs, two answers as they come again
                   (``alternate``: the rounds alternate, ``pair_selection.keeps_choosing``).
    3 train      the round's pairs, from the current model (the Train view's run of that model: the pairs
                 sampled from it), with the demo's settings (``sft_weight`` can change its SFT term); with
                 ``train_from="base"``, the base on every pick so far instead
    4 export     the file the app goes on with (``working``: Q8_0, as the Export view for a model this size;
                 ``"Q4_K_M"``, on the base's grid, as the app before): the next round's current model
    5 evaluate   base against the current model on the held-out prompts, judged blind by the same rule:
                 one point of the curve (win rate against picks so far), at the working file type (at Q8_0
                 the base is its trainable copy, which the app runs as a Q8_0 GGUF copy: evaluate.base_at)

Prompts are taken in a seeded order and never repeat until every training prompt was asked once. The
rule stands in for a person with one consistent taste; the selection is not told which rule it is.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from collections import Counter
from collections.abc import Callable, Generator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.demo_loop import (
    DemoSettings,
    evaluate_round,
    export_round,
    prepare_copy,
    prepare_model,
    quiet_job,
    read_demo_prompts,
    sample_answers,
    split_demo_prompts,
    store_evaluation_prompts,
    train_round,
)
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.evaluate import EvaluationSummary, base_at, judge_by_rule
from desktop_dpo.core.jobs import CancelToken, Log, Progress
from desktop_dpo.core.pair_selection import (
    PairChoice,
    as_they_come_again,
    check_rules,
    choose_pair,
    keeps_choosing,
    most_different,
)
from desktop_dpo.core.sampling import generation_meta

if TYPE_CHECKING:
    from desktop_dpo.config import AppPaths
    from desktop_dpo.core.llm.engine_pool import EnginePool
    from desktop_dpo.core.llm.generation import GenerationResult
    from desktop_dpo.core.store import ModelRow, Store

PERSON_SOURCE = "person"  # the source of the comparisons a person-workflow run records
PERSON_LOSSES = ("sigmoid", "kto")  # PersonSettings.loss_type
PERSON_TRAIN_FROM = ("current", "base")  # PersonSettings.train_from
PERSON_WORKING = ("Q4_K_M", "Q8_0")  # PersonSettings.working
MAX_EVALUATION_DRAWS = 16  # PersonSettings.evaluation_draws
DRAW_SEED_STEP = 7919  # evaluation draw d uses the demo's seed + d × this (draw 0: the demo's own)


@dataclass(frozen=True)
class PersonSettings:
    """How the simulated person works: a budget of picks over rounds, with or without pair selection."""

    picks: int = 150
    rounds: int = 3
    selection: bool = True
    candidates: int = 4  # answers sampled per prompt when selecting (2 without selection)
    # How a pair is chosen before the first run, and by the last run's rewards after it (pair_selection's
    # BEFORE_A_RUN and AFTER_A_RUN).
    before_run: str = "as_they_come"
    after_run: str = "surest"
    # After a run that learnt mostly from chosen pairs, show the next round's two answers as they come
    # (pair_selection.keeps_choosing); False: choose by every run (the bench's --keep-choosing).
    alternate: bool = True
    # The rewards a run chooses by: summed over each answer's tokens (DPO's, the app's), or per token (True:
    # the bench's --per-token), which do not grow with an answer's length. Per token chose pairs further apart
    # in length, not closer, and did no better (docs, the decisions table).
    reward_per_token: bool = False
    # The SFT term on the chosen answers, in every round: the demo's 1.0. (2.0 lifted one third round of
    # shorter_wins from 73% to 88%, but in every round it gave 69% → 73% → 69%: docs, the decisions table.)
    sft_weight: float = 1.0
    # The loss of every round: "sigmoid" (the demo's DPO) or "kto", which learns from single labels, so from
    # "both bad" picks too (their two answers undesirable); KTO has no SFT term, so sft_weight is not used.
    loss_type: str = "sigmoid"
    # What each round trains: "current", the current model on the round's picks (the Train view's run of that
    # model); "base", the base on every pick so far, so each round's model is one run away from the base.
    train_from: str = "current"
    # The file type the loop goes on with: what each round exports and the next round samples from, and the
    # precision both sides of the evaluation run at. "Q8_0" is the app's (the Export view goes on with it for a
    # model this size); "Q4_K_M" (the bench's --working Q4_K_M) is the demo's, the app's before, which rounded
    # much of each run's update away (docs, the decisions table).
    working: str = "Q8_0"
    # Each round's evaluation: how many answers each model gives per held-out prompt (each draw its own
    # seeds), pooled with an interval that counts the prompts, not the draws (EvaluationSummary.
    # from_prompt_votes). One is the demo's evaluation.
    evaluation_draws: int = 1

    def trains_on(self, verdict: str) -> bool:
        """Whether a pick with ``verdict`` trains the round's run: a winner always; "both bad" with KTO (its two
        answers undesirable), where with DPO it only costs the person's time; a tie never."""
        return verdict in ("a", "b") or (verdict == "both_bad" and self.loss_type == "kto")

    def validated(self) -> PersonSettings:
        """Self, or a :class:`DesktopDpoError` naming the setting that cannot work."""
        if self.rounds < 1 or self.picks < self.rounds:
            raise DesktopDpoError(f"{self.picks} picks cannot be spread over {self.rounds} rounds.")
        if self.candidates < 2:
            raise DesktopDpoError("Choosing a pair needs at least 2 answers per prompt.")
        try:
            check_rules(self.before_run, self.after_run)
        except ValueError as exc:
            raise DesktopDpoError(str(exc)) from None
        if not 1 <= self.evaluation_draws <= MAX_EVALUATION_DRAWS:
            raise DesktopDpoError(
                f"Each held-out prompt is answered 1 to {MAX_EVALUATION_DRAWS} times, not {self.evaluation_draws}."
            )
        if not 0 <= self.sft_weight <= 10:
            raise DesktopDpoError(f"The SFT weight must be between 0 and 10, not {self.sft_weight}.")
        if self.train_from not in PERSON_TRAIN_FROM:
            raise DesktopDpoError(
                f"No way to train {self.train_from!r} for the person workflow: {', '.join(PERSON_TRAIN_FROM)}."
            )
        if self.working not in PERSON_WORKING:
            raise DesktopDpoError(
                f"No working file type {self.working!r} for the person workflow: {', '.join(PERSON_WORKING)}."
            )
        if self.loss_type not in PERSON_LOSSES:
            raise DesktopDpoError(
                f"No loss {self.loss_type!r} for the person workflow: {', '.join(PERSON_LOSSES)}."
            )
        return self

    def training(self, demo: DemoSettings) -> DemoSettings:
        """``demo`` with this workflow's training: the demo's settings, its own SFT weight and its loss (KTO
        without an SFT term, which it does not have)."""
        if self.loss_type == "kto":
            changes: tuple[tuple[str, Any], ...] = (("loss_type", "kto"), ("sft_weight", 0.0))
        else:
            changes = (("sft_weight", self.sft_weight),)
        return dataclasses.replace(demo, train_changes=(*demo.train_changes, *changes))

    def round_training(
        self, base: Any, current: Any, every_pick: Sequence[int], round_picks: Sequence[int]
    ) -> tuple[Any, list[int]]:
        """What a round trains (``train_from``): ``(model, comparison ids)``, the current model on the round's
        picks, or the base on every pick so far (``every_pick``, this round's included)."""
        if self.train_from == "base":
            return base, list(every_pick)
        return current, list(round_picks)

    def round_budgets(self) -> list[int]:
        """Picks per round: ``picks`` spread as evenly as they go, the later rounds taking any extra."""
        return [
            self.picks * (r + 1) // self.rounds - self.picks * r // self.rounds for r in range(self.rounds)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (for a report)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PickMade:
    """One pick: the verdict the rule gave on the pair shown, and how that pair was chosen."""

    round: int
    done: int  # picks so far, all rounds
    total: int
    verdict: str  # "a" (left better), "b", "tie" or "both_bad"
    how: str  # PairChoice.how: "only" (no selection), "as_they_come", "surest", "margin", ...


@dataclass(frozen=True)
class RoundMeasured:
    """A round ended: the current model against the base, after ``picks`` picks in all."""

    round: int
    picks: int
    pairs: int  # training pairs this round gave (picks with a winner)
    run_id: int | None  # None: no pick had a winner, so nothing was trained
    summary: EvaluationSummary
    seconds: dict[
        str, float
    ]  # the round's time per stage: picks, scoring (part of picks), train, export, evaluate


@dataclass(frozen=True)
class PersonResult:
    """A person-workflow run: the curve and where the picks went."""

    curve: tuple[RoundMeasured, ...]
    verdicts: dict[str, int]  # picks per verdict, all rounds
    hows: dict[str, int]  # picks per PairChoice.how
    settings: dict[str, Any]

    @property
    def final(self) -> EvaluationSummary:
        """The last round's evaluation."""
        return self.curve[-1].summary


def _scorer(store: Store, run_id: int | None) -> Any:
    if run_id is None:
        return None
    from desktop_dpo.core.dpo.implicit_reward import ImplicitRewardScorer

    return ImplicitRewardScorer.for_run(store, run_id)


def shows_as_they_come_after(store: Store, person: PersonSettings, picks: Sequence[int] | None) -> bool:
    """Whether the round after the one whose training ``picks`` (comparison ids; None before a run) made the
    current model shows its two answers as they come because those were mostly chosen pairs
    (``PersonSettings.alternate``, ``pair_selection.keeps_choosing``)."""
    if not (person.selection and person.alternate and picks):
        return False
    return not keeps_choosing(store.chosen_share(list(picks)))


def show_pair(
    pool: EnginePool,
    model: ModelRow,
    paths: AppPaths,
    messages: list[dict[str, str]],
    demo: DemoSettings,
    person: PersonSettings,
    rng: random.Random,
    cancel: CancelToken,
    scorer: Any = None,
    run_label: str = "the last run",
    after_chosen: bool = False,
    earlier_scorer: Any = None,
) -> Generator[Any, None, tuple[GenerationResult, GenerationResult, PairChoice, float]]:
    """The two answers Collect would show for ``messages`` (a job): ``(left, right, choice, scoring seconds)``.

    ``scorer``: the last run's, to choose by; ``after_chosen``: that run learnt mostly from chosen pairs, so
    two answers are shown as they come (``scorer`` unused). ``earlier_scorer``: the run before the last one's,
    for ``after_run="changed_mind"``."""
    after_chosen = person.selection and after_chosen
    choosing = person.selection and not after_chosen
    choosing = choosing and (scorer is not None or person.before_run != "as_they_come")
    count = person.candidates if choosing else 2
    results = yield from sample_answers(pool, model, paths, messages, demo.sampling, count, rng, cancel)
    texts = [r.text for r in results]
    scoring = 0.0
    rewards = earlier = None
    if choosing and scorer is not None:
        start = time.perf_counter()
        rewards = scorer.rewards(messages, texts, per_token=person.reward_per_token)
        if earlier_scorer is not None:
            earlier = earlier_scorer.rewards(messages, texts, per_token=person.reward_per_token)
        scoring = time.perf_counter() - start
    if after_chosen:
        choice = as_they_come_again(texts, run_label)
    elif person.selection:
        choice = choose_pair(texts, rewards, run_label, person.before_run, person.after_run, earlier)
    else:
        choice = most_different(texts)
    return results[choice.first], results[choice.second], choice, scoring


def evaluate_draws(
    evaluate: Callable[[DemoSettings], Generator[Any, None, tuple[int, EvaluationSummary, list[Any]]]],
    demo: DemoSettings,
    draws: int,
) -> Generator[Any, None, EvaluationSummary]:
    """``draws`` blind evaluations (a job; ``evaluate``: ``demo_loop.evaluate_round`` given all but its
    settings), each with its own seeds (draw 0 the demo's), their votes pooled by prompt
    (``EvaluationSummary.from_prompt_votes``); one draw: that evaluation's summary."""
    votes: list[tuple[int, str]] = []
    summary = None
    for draw in range(draws):
        _evaluation, summary, voted = yield from evaluate(
            dataclasses.replace(demo, seed=demo.seed + DRAW_SEED_STEP * draw)
        )
        votes += [(vote.prompt_id, vote.vote) for vote in voted]
    assert summary is not None, "validated: at least one draw"
    return summary if draws == 1 else EvaluationSummary.from_prompt_votes(votes)


def _record_pick(
    store: Store,
    model: ModelRow,
    messages: list[dict[str, str]],
    left: Any,
    right: Any,
    verdict: str,
    choice: PairChoice,
) -> int:
    return store.record_pair(
        messages=messages,
        text_a=left.text,
        text_b=right.text,
        verdict=verdict,
        model_a_id=model.id,
        model_b_id=model.id,
        a_shown_left=True,
        generation_meta_a=generation_meta(left),
        generation_meta_b=generation_meta(right),
        note=f"person workflow: pair chosen by {choice.how}",
        source=PERSON_SOURCE,
        chosen_by=choice.chosen_by,
    )


def _prompt_cycle(prompts: Sequence[str], seed: int) -> Generator[str, None, None]:
    order = list(prompts)
    rng = random.Random(f"desktop-dpo-person-prompts:{seed}")
    while True:
        rng.shuffle(order)
        yield from order


def run_person(
    store: Store,
    paths: AppPaths,
    demo: DemoSettings | None = None,
    person: PersonSettings | None = None,
    cancel: CancelToken | None = None,
    base_answers: MutableMapping[Any, Any] | None = None,
) -> Generator[Any, None, PersonResult]:
    """The person's loop on the demo model (a job recording its work with ``store``): see the module doc.

    ``base_answers`` keeps the base model's evaluation answers between rounds (and between runs given the
    same mapping: a bench's arms); by default, between this run's rounds.

    Yields ``Progress``, ``Log``, :class:`PickMade` per pick, the training and export jobs' events and
    :class:`RoundMeasured` per round. Returns a :class:`PersonResult`.

    Raises:
        ModelError, TrainingError, ExportError, DesktopDpoError: as :func:`~desktop_dpo.core.demo_loop.run_demo`.
        JobCancelled: stopped; what was recorded so far stays.
    """
    from desktop_dpo.core.dpo.runs import run_label
    from desktop_dpo.core.llm.engine_pool import EnginePool

    demo = (demo or DemoSettings()).validated()
    person = (person or PersonSettings()).validated()
    if not demo.prompts:
        demo = dataclasses.replace(demo, prompts=read_demo_prompts())
    cancel = cancel or CancelToken()
    train_prompts, held_out = split_demo_prompts(demo.prompts, demo.eval_prompt_count, None, demo.seed)
    paths.ensure()
    pool = EnginePool(max_loaded=2)
    rng = random.Random(f"desktop-dpo-person-samples:{demo.seed}")
    prompts = _prompt_cycle(train_prompts, demo.seed)
    verdicts: Counter[str] = Counter()
    hows: Counter[str] = Counter()
    curve: list[RoundMeasured] = []
    done = 0
    base_answers = {} if base_answers is None else base_answers
    try:
        base = yield from prepare_model(store, paths, cancel)
        base = yield from prepare_copy(store, paths, base, cancel)
        compared = base_at(store, base, person.working)
        eval_rows = store_evaluation_prompts(store, held_out)
        current, last_run = base, None
        earlier_run: int | None = None  # the run that made the model last_run trained from
        every_pick: list[int] = []  # the training picks of every round so far
        last_picks: list[int] | None = None  # those of the round that made the current model
        for round_number, budget in enumerate(person.round_budgets(), start=1):
            seconds: Counter[str] = Counter()
            start = time.perf_counter()
            run = store.get_run(last_run) if last_run is not None else None
            label = run_label(run.id, run.name) if run is not None else ""
            after_chosen = shows_as_they_come_after(store, person, last_picks)
            scorer = _scorer(store, last_run) if person.selection and not after_chosen else None
            reversing = scorer is not None and person.after_run == "changed_mind"
            earlier_scorer = None
            ids: list[int] = []
            try:
                # Loaded inside: if it fails, the finally still closes the last run's scorer.
                earlier_scorer = _scorer(store, earlier_run) if reversing else None
                for _ in range(budget):
                    cancel.raise_if_cancelled()
                    yield Progress(done, person.picks, f"Pick {done + 1} of {person.picks}")
                    messages = [{"role": "user", "content": next(prompts)}]
                    left, right, choice, scoring = yield from quiet_job(
                        show_pair(
                            pool,
                            current,
                            paths,
                            messages,
                            demo,
                            person,
                            rng,
                            cancel,
                            scorer,
                            label,
                            after_chosen,
                            earlier_scorer,
                        ),
                        store,
                    )
                    seconds["scoring"] += scoring
                    verdict = judge_by_rule(left.text, right.text, demo.rule)
                    verdicts[verdict] += 1
                    hows[choice.how] += 1
                    done += 1
                    comparison = _record_pick(store, current, messages, left, right, verdict, choice)
                    if person.trains_on(verdict):
                        ids.append(comparison)
                    yield PickMade(round_number, done, person.picks, verdict, choice.how)
            finally:
                for opened in (scorer, earlier_scorer):
                    if opened is not None:
                        opened.close()
            pool.close_all()  # frees the sampler's context while training needs the memory
            seconds["picks"] = time.perf_counter() - start
            run_id = None
            every_pick += ids
            if ids:
                start = time.perf_counter()
                trained, pairs = person.round_training(base, current, every_pick, ids)
                run_id = yield from train_round(store, paths, trained, pairs, person.training(demo), cancel)
                seconds["train"] = time.perf_counter() - start
                start = time.perf_counter()
                current, _gguf, _folder = yield from export_round(
                    store, paths, run_id, demo, cancel, person.working
                )
                seconds["export"] = time.perf_counter() - start
                earlier_run = last_run if person.train_from == "current" else None
                last_run, last_picks = run_id, ids
            else:
                yield Log(f"Round {round_number}: no pick had a winner; nothing to train on.")
            start = time.perf_counter()
            summary = yield from evaluate_draws(
                functools.partial(
                    evaluate_round,
                    store,
                    pool,
                    paths,
                    compared,
                    current,
                    eval_rows,
                    cancel=cancel,
                    base_answers=base_answers,
                ),
                demo,
                person.evaluation_draws,
            )
            pool.close_all()
            seconds["evaluate"] = time.perf_counter() - start
            measured = RoundMeasured(
                round_number, done, len(ids), run_id, summary, {k: round(v, 1) for k, v in seconds.items()}
            )
            curve.append(measured)
            yield measured
    finally:
        pool.close_all()
    return PersonResult(
        curve=tuple(curve),
        verdicts=dict(verdicts),
        hows=dict(hows),
        settings={"demo": person.training(demo).to_dict(), "person": person.to_dict()},
    )
