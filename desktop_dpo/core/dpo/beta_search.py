"""Finding β by measurement: short trainings at a few β values, each scored on the held-out pairs.

β (``TrainConfig.beta``) is the weight of the KL term DPO optimises implicitly (Rafailov et al. 2023,
eq. 3: max E[r(x, y)] − β·KL[π_θ(y|x) ‖ π_ref(y|x)]): how far the model may move from where it started;
higher keeps it closer. Its best value depends on the data, so :func:`beta_search` measures it:

    setup      as a run does (``train._Session``): the pairs, the held-out split, the token ids, the model
               with a fresh LoRA adapter, the run's SFT start when the settings have it (:func:`_sft_start`,
               once: it does not depend on β), and the reference log-probs, computed once (or read from the
               reference cache, which the key shares across β: β is not part of it) and shared by every β
    per β      the same start (the fresh adapter, or π_SFT after an SFT start), the same seed and data order,
               ``steps`` optimizer steps, then on the held-out pairs: reward accuracy, and the KL from that
               start (:func:`kl_from_start`)
    result     one :class:`BetaResult` per β and a recommendation (:func:`recommend`)

Nothing is recorded as a run: no run row, no checkpoint, no adapter. What the search writes is data a run
would write anyway: the prompt split (fixed once) and the reference cache (a later run reads it).

In the GUI it runs in a child process, as training does (:func:`search_in_child`, ``python -m
desktop_dpo.core.dpo.beta_search``): a native fault in a step ends that process, not the window.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.child_process import (
    PIPE_CLOSED,
    ChildProcess,
    describe_exit,
    read_frame,
    take_over_pipes,
    write_frame,
)
from desktop_dpo.core.dpo.config import TrainConfig, TrainingError
from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.jobs import CancelToken, Job, Progress, drive

if TYPE_CHECKING:
    import torch

    from desktop_dpo.core.store import Store

log = logging.getLogger(__name__)

# Four values a factor of about 3 apart, spanning what DPO is used with: the papers and TRL use 0.1 by
# default, 0.01-0.5 in sweeps (Rafailov et al. 2023 §6; Tunstall et al. 2023, Zephyr, found 0.01-0.1 best).
# Log-spaced because β acts through β·log-ratio: 0.1 vs 0.3 is as large a change as 0.3 vs 1.0. 1.0 is
# the "stay close" end, where a short run barely moves; 0.03 the "move freely" end.
SEARCH_BETAS: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
SEARCH_STEPS = 16  # optimizer steps per β: enough for the large β to saturate, short enough for four runs
ACCURACY_TOLERANCE = 0.05  # "as good as the best": within 5 points of held-out accuracy
CHILD_MODULE = "desktop_dpo.core.dpo.beta_search"
_POLL_S = 0.1
_STOP_TIMEOUT_S = 120.0  # a search stops between steps; no checkpoint to write


@dataclass(frozen=True)
class BetaResult:
    """What a short training at one β did, measured on the held-out pairs."""

    beta: float
    accuracy: float  # share of held-out pairs whose chosen answer gets the higher implicit reward
    kl: float  # nats per answer token: mean KL(π_θ ‖ π_start) of the next-token distributions
    loss: float  # held-out loss at this β (not comparable across β: the loss itself depends on β)
    steps: int


@dataclass(frozen=True)
class BetaMeasured:
    """Yielded when one β is done (the dialog adds it to its plot and table)."""

    result: BetaResult
    done: int
    total: int


@dataclass(frozen=True)
class BetaSearchResult:
    """The search's outcome: one result per β (in search order) and the recommended one."""

    results: tuple[BetaResult, ...]
    recommended: BetaResult
    train_pairs: int
    heldout_pairs: int

    def recommendation(self) -> str:
        """The recommendation in words, with why, for a person choosing β."""
        return recommendation_text(self.results, self.recommended, self.heldout_pairs)


def recommend(results: Sequence[BetaResult], tolerance: float = ACCURACY_TOLERANCE) -> BetaResult:
    """The β that moved the model least among those within ``tolerance`` of the best held-out accuracy."""
    if not results:
        raise ValueError("No results to recommend from.")
    best = max(r.accuracy for r in results)
    good = [r for r in results if r.accuracy >= best - tolerance - 1e-9]
    return min(good, key=lambda r: (r.kl, -r.beta))


def recommendation_text(results: Sequence[BetaResult], chosen: BetaResult, heldout_pairs: int) -> str:
    """Why ``chosen`` is recommended, in plain words (and a caution when the measurement says little)."""
    best = max(r.accuracy for r in results)
    text = (
        f"Use β = {chosen.beta:g}: it ranked {chosen.accuracy:.0%} of the held-out pairs right"
        + (
            " (the best of all)"
            if chosen.accuracy >= best - 1e-9
            else f", within a few points of the best ({best:.0%})"
        )
        + ", while moving the model least from where it started."
    )
    if best < 0.6:
        text += (
            " No β ranked the held-out pairs well in a short run, so collecting more pairs will help more "
            "than another β."
        )
    if heldout_pairs == 1:
        text += " With one held-out pair, the accuracy is all or nothing: collect more prompts to trust it."
    elif heldout_pairs < 20:
        text += (
            f" With {heldout_pairs} held-out pairs, one pair is {1 / heldout_pairs:.0%} of the "
            "accuracy: treat small differences as noise."
        )
    return text


# --------------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------------


def kl_from_start(
    model: Any,
    batch: dict[str, torch.Tensor],
    start: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> tuple[float, int]:
    """Summed KL(π_θ ‖ π_start) over the answer tokens of a :func:`~desktop_dpo.core.dpo.batches.collate`
    batch, and how many tokens that is.

    At every position t that predicts an answer token, the full next-token distributions of the policy
    (adapter on) and of the start (adapter off: a fresh LoRA adapter changes nothing, so that is where
    training started) are compared: KL_t = Σ_v π_θ(v|x,y<t) (log π_θ(v|x,y<t) − log π_start(v|x,y<t)).
    Exact at each position, never negative, and zero before training; only the prefixes y<t are the
    data's answers rather than samples of π_θ (the sequence KL of Rafailov et al. 2023, eq. 3, would need
    sampling). Shapes: ``input_ids``, ``attention_mask``, ``loss_mask`` [R, T]; logits [R, T, V].

    ``start``: a context in which ``model`` is the start, when that is not the adapter off (after an SFT
    start, π_SFT: :func:`_start_weights`).
    """
    import torch

    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    mask = batch["loss_mask"][:, 1:].bool()  # position t-1 predicts token t
    policy = torch.log_softmax(model(**inputs).logits[:, :-1][mask].float(), dim=-1)  # [N, V]
    with model.disable_adapter() if start is None else start():
        begun = torch.log_softmax(model(**inputs).logits[:, :-1][mask].float(), dim=-1)
    kl = (policy.exp() * (policy - begun)).sum(dim=-1)  # [N]
    return kl.sum().item(), int(mask.sum().item())


def _start_weights(
    params: Sequence[Any], start: Sequence[Any]
) -> Callable[[], contextlib.AbstractContextManager]:
    """A context in which the LoRA weights ``params`` hold ``start`` (where each β began), put back after."""
    import torch

    @contextlib.contextmanager
    def swapped() -> Iterator[None]:
        now = [p.detach().clone() for p in params]
        with torch.no_grad():
            for param, value in zip(params, start, strict=True):
                param.copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(params, now, strict=True):
                    param.copy_(value)

    return swapped


def _heldout_kl(session: Any, start: Sequence[Any] | None = None) -> float:
    """Mean :func:`kl_from_start` per answer token over the held-out pairs, chosen and rejected answers.

    ``start``: the LoRA weights each β began from, when that is not the adapter off (after an SFT start)."""
    import torch

    from desktop_dpo.core.dpo.batches import collate, length_batches, to_device

    session.model.eval()
    total, tokens = 0.0, 0
    swap = None if start is None else _start_weights(session.params, start)
    with torch.inference_mode():
        for indices in length_batches(session.heldout, session.pairs, session.config.batch_size):
            batch = to_device(collate([session.pairs[i] for i in indices], session.pad_id), session.device)
            kl, n = kl_from_start(session.model, batch, swap)
            total, tokens = total + kl, tokens + n
    return total / max(tokens, 1)


def _search_run(
    store: Store, model_id: int, comparison_ids: Sequence[int], config: TrainConfig, reference: str
):
    """A run row that is never stored: what ``train._Session`` reads (the pairs, the model, the reference)."""
    from desktop_dpo.core.store import RunRow

    return RunRow(
        id=0, name="β search", base_model_id=model_id, reference=reference, config=config.to_dict(),
        comparison_ids=list(comparison_ids), status="search", step=0, total_steps=None, adapter_path=None,
        checkpoint_dir=None, error=None, final_metrics={}, created_at=time.time(), started_at=None,
        finished_at=None,
    )  # fmt: skip


def beta_search(
    store: Store,
    model_id: int,
    comparison_ids: Sequence[int],
    config: TrainConfig,
    *,
    cancel: CancelToken,
    reference: str = "adapter_off",
    betas: Sequence[float] = SEARCH_BETAS,
    steps: int = SEARCH_STEPS,
) -> Job:
    """Short trainings of ``model_id`` on ``comparison_ids`` at each of ``betas`` (a job; returns
    :class:`BetaSearchResult`).

    Yields ``Loading`` and ``Progress`` events as a run does, and :class:`BetaMeasured` after each β.
    ``config`` gives everything but β (its ``epochs`` are ignored: each β trains ``steps`` optimizer steps,
    going round the data as needed). Checks ``cancel`` between steps (``JobCancelled``).

    Raises:
        TrainingError: no held-out pairs to measure on, or what a run would raise.
    """
    from desktop_dpo.core.dpo.modeling import drop_frame_locals, torch_settings
    from desktop_dpo.core.dpo.train import _Session

    run = _search_run(store, model_id, comparison_ids, config, reference)
    # A search writes no run folder: nothing below checkpoints or writes an adapter.
    session = _Session(store, run, config, cancel, Path(tempfile.gettempdir()))
    try:
        with torch_settings(session.config, session.device):
            yield from session.load_pairs()
            if not session.heldout_text:
                raise TrainingError(
                    "Finding β needs held-out pairs to measure on: raise the held-out share in the advanced "
                    "settings, or collect pairs for more prompts."
                )
            yield from session.tokenize()
            if config.sft_phase != "off":
                yield from _sft_start(session)  # π_SFT, and the reference is π_SFT, as in the run
            yield from session.prepare_reference()
            results = yield from _measure_all(session, config, list(betas), steps)
    except BaseException as exc:
        drop_frame_locals(exc)
        raise
    finally:
        session.release()
    return BetaSearchResult(
        results=tuple(results),
        recommended=recommend(results),
        train_pairs=session.n_train,
        heldout_pairs=len(session.heldout),
    )


def _sft_start(session: Any) -> Iterator[object]:
    """The run's SFT start (``sft_phase.py``), once for every β: the session's model is then π_SFT and its
    ``sft_id`` set, so each β's short run starts where the real run's preference phase would, against π_SFT.

    In a folder of its own (its checkpoints and ``sft-adapter``), deleted after: a search records nothing.
    Its steps are reported as ``Progress``; no demonstrations: the run's warning, as a ``Loading`` line.
    """
    from desktop_dpo.core.dpo.events import Loading, SftStepMetrics, TrainWarning
    from desktop_dpo.core.dpo.sft_phase import SftPhase

    run_dir = session.run_dir
    with tempfile.TemporaryDirectory(prefix="desktop-dpo-beta-sft-") as folder:
        session.run_dir = Path(folder)
        phase = SftPhase(session)
        phase.config = phase.config.replace(checkpoint_every=10**9)  # nothing to resume: no checkpoints
        try:
            # Closed before its folder goes: a stop's checkpoint is written (and deleted) there, not elsewhere.
            with contextlib.closing(phase.run(resume=False)) as job:
                for event in job:
                    if isinstance(event, SftStepMetrics):
                        yield Progress(
                            event.step,
                            event.total_steps,
                            f"Learning your written answers first: step {event.step} of {event.total_steps}",
                        )
                    elif isinstance(event, Loading):
                        yield event
                    elif isinstance(event, TrainWarning):  # no demonstrations: the search goes on without
                        yield Loading(event.message)
        finally:
            session.run_dir = run_dir


def _measure_all(
    session: Any, config: TrainConfig, betas: list[float], steps: int
) -> Generator[object, None, list[BetaResult]]:
    """Each β from the same start (the fresh adapter, or π_SFT), seed and data order; a result per β."""
    import torch

    session.params = [p for p in session.model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in session.params]
    kl_start = start if session.sft_id is not None else None  # after an SFT start: KL from π_SFT
    results: list[BetaResult] = []
    total = len(betas) * steps
    for n, beta in enumerate(betas):
        with torch.no_grad():
            for param, value in zip(session.params, start, strict=True):
                param.copy_(value)
        session.config = config.replace(beta=beta)
        torch.manual_seed(config.seed)  # the same dropout masks for every β
        for step in _train_steps(session, steps):
            yield Progress(n * steps + step, total, f"Training at β = {beta:g}: step {step} of {steps}")
        yield Progress((n + 1) * steps, total, f"Measuring β = {beta:g} on the held-out pairs")
        evaluated = session.evaluate()
        result = BetaResult(
            beta=beta,
            accuracy=evaluated.accuracy,
            kl=_heldout_kl(session, kl_start),
            loss=evaluated.loss,
            steps=steps,
        )
        results.append(result)
        yield BetaMeasured(result=result, done=n + 1, total=len(betas))
        session.cancel.raise_if_cancelled()
    return results


def _train_steps(session: Any, steps: int) -> Iterator[int]:
    """``steps`` optimizer steps on the training pairs (AdamW, warm-up + decay over ``steps``); yields each."""
    import torch

    from desktop_dpo.core.dpo.schedule import lr_factor, plan_steps

    config = session.config
    session.optimizer = torch.optim.AdamW(session.params, lr=config.lr, weight_decay=config.weight_decay)
    session.scheduler = torch.optim.lr_scheduler.LambdaLR(
        session.optimizer, lambda s: lr_factor(s, steps, config.warmup_ratio, config.scheduler)
    )
    epochs = math.ceil(steps / max(1, math.ceil(session.n_train / (config.batch_size * config.grad_accum))))
    plan = plan_steps(session.n_train, config.replace(epochs=max(1, epochs) + 1), 0, 0)
    for step, (_epoch, _offset, indices) in enumerate(plan, start=1):
        session.cancel.raise_if_cancelled()
        session.update(session.forward_backward(indices))
        yield step
        if step == steps:
            return


# --------------------------------------------------------------------------------------------------
# In a child process (the GUI)
# --------------------------------------------------------------------------------------------------


def search_in_child(
    db_path: str | Path, request: dict[str, Any], *, cancel: CancelToken, env: dict[str, str] | None = None
) -> Job:
    """:func:`beta_search` in a child process (a job with the same events and result).

    ``request``: :func:`beta_search`'s keyword arguments but ``store`` and ``cancel`` (``config`` as a
    dict). A stop reaches the child at once; it ends at the next step boundary.

    Raises:
        TrainingError: the child died, or did not stop in time; the search's own errors, rebuilt.
    """
    from desktop_dpo.core.dpo.train_child import _rebuild_error, child_log

    try:
        child = ChildProcess(CHILD_MODULE, env, logger=child_log)
    except OSError as exc:
        raise TrainingError(f"The process that finds β could not start ({exc}). Try again.") from exc
    deadline: float | None = None
    try:
        child.send(("search", {"db_path": str(db_path), **request}))
        while True:
            if cancel.cancelled and deadline is None:
                child.send(("cancel",))
                deadline = time.monotonic() + _STOP_TIMEOUT_S
            if deadline is not None and time.monotonic() > deadline:
                raise TrainingError("Finding β did not stop in time; it was ended.")
            try:
                frame = child.frames.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if frame is PIPE_CLOSED:
                how = describe_exit(child.wait_exit(5.0))
                raise TrainingError(
                    f"The process that finds β ended unexpectedly ({how}). Nothing was changed."
                )
            if frame[0] == "event":
                try:
                    yield frame[1]
                except JobCancelled:
                    cancel.cancel()  # the child stops at its next step boundary; its JobCancelled follows
            elif frame[0] == "done":
                return frame[1]
            elif frame[0] == "error":
                raise _rebuild_error(frame[1], frame[2], frame[3])
    finally:
        child.kill()


def _serve_child() -> None:
    """The child: take one search request, drive it, stream its events; exit when the parent is gone."""
    from desktop_dpo.core.dpo.train_child import _error_words
    from desktop_dpo.core.store import Store

    inbox, outbox = take_over_pipes()  # before torch and transformers are imported
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    lock, cancel, requests = threading.Lock(), CancelToken(), queue.Queue[dict[str, Any]]()

    def listen() -> None:
        while True:
            try:
                frame = read_frame(inbox)
            except (EOFError, OSError):
                import os

                os._exit(0)  # never outlive the app
            if frame[0] == "cancel":
                cancel.cancel()
            elif frame[0] == "search":
                requests.put(frame[1])

    threading.Thread(target=listen, name="beta-search-listen", daemon=True).start()
    request = requests.get()
    try:
        with Store.open(Path(request.pop("db_path"))) as store:
            request["config"] = TrainConfig.from_dict(request["config"])
            job = beta_search(store, cancel=cancel, **request)
            result = drive(job, lambda event: write_frame(outbox, ("event", event), lock), cancel)
    except BaseException as exc:
        write_frame(outbox, ("error", *_error_words(exc)), lock)
        return
    write_frame(outbox, ("done", result), lock)


if __name__ == "__main__":
    # Through the imported module, so what the child pickles names desktop_dpo.core.dpo.beta_search, not
    # __main__ (the parent could not unpickle that).
    from desktop_dpo.core.dpo import beta_search as _module

    _module._serve_child()
