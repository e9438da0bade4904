"""The QLoRA-DPO training loop: one readable job from a run's snapshot of pairs to a LoRA adapter.

Shape of the job (a generator, see ``core/jobs.py``)::

    setup     run row -> pairs (fixed snapshot) -> train / held-out split by prompt (fixed once)
              -> base model (NF4 + LoRA, or full precision + LoRA) -> token ids
    reference log π_ref(y|x) of every pair, computed once (adapter off, or a previous round's model)
              and cached in SQLite; a second epoch, a resume or a second run reads the cache
    loop      per optimizer step: micro-batches (each prompt once, chosen and rejected after it),
              gradient accumulation, clip, AdamW on the LoRA weights only, warm-up + decay
              every N steps: held-out metrics; every M steps: an atomic checkpoint
    cleanup   final adapter written atomically; checkpoints removed

The job never writes run status or metrics itself: it yields events and whoever drives it (CLI, GUI
worker) calls :func:`persist_event` / :func:`persist_outcome` with its own store connection. The job
does read the run and writes the two things that are part of the data, not of the progress: the prompt
split (``Store.set_prompt_splits``) and the reference cache (``Store.put_reference_logps``).

Resume is exact: a checkpoint holds the adapter, AdamW and scheduler state, the RNG state and the
position in the seeded data order, so a stopped-and-resumed run ends with the same weights as an
uninterrupted one (same settings, same machine).

The rest of the package, each file one job: ``config.py`` (:class:`TrainConfig`, presets), ``events.py``
(what the job yields, :class:`TrainingWatch`), ``modeling.py`` (loading the model, LoRA, device memory),
``reference.py`` (the reference log-probs and their cache), ``schedule.py`` (data order, learning rate),
``checkpoint.py`` (the run's folder, checkpoints, the final adapter), ``data.py`` (pairs to batches),
``loss.py`` (the losses). This file is the job: read :func:`train` and :class:`_Session` top to bottom.

torch, transformers and peft are imported inside functions (workers import this module at start-up).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.dpo import kto_batches, sft_phase
from desktop_dpo.core.dpo.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_checkpoints,
    rng_state,
    run_folder,
    save_checkpoint,
    set_rng_state,
    write_adapter,
)
from desktop_dpo.core.dpo.config import (
    REFERENCE_FREE_LOSS_TYPES,
    TrainConfig,
    TrainingError,
    TrainingOutOfMemoryError,
    parse_reference,
    smaller_settings,
)
from desktop_dpo.core.dpo.events import (
    Checkpointed,
    EvalMetrics,
    Finished,
    Loading,
    ReferenceReady,
    Started,
    StepMetrics,
    TrainingWatch,
    TrainWarning,
)
from desktop_dpo.core.dpo.modeling import (
    attach_lora,
    drop_frame_locals,
    free_memory,
    is_out_of_memory,
    load_causal_lm,
    out_of_memory_message,
    resolve_device,
    resolve_quantization,
    torch_settings,
)
from desktop_dpo.core.dpo.recording import failure_message, persist_event, persist_outcome, record_training
from desktop_dpo.core.dpo.reference import fill_reference, reference_keys
from desktop_dpo.core.dpo.run_lock import RunLock
from desktop_dpo.core.dpo.schedule import lr_factor, plan_steps, steps_remaining
from desktop_dpo.core.errors import JobCancelled, ModelError
from desktop_dpo.core.jobs import CancelToken, Job, drive
from desktop_dpo.core.llm.template_choice import require_usable_template, template_for
from desktop_dpo.core.model_files import training_folder

if TYPE_CHECKING:
    import torch

    from desktop_dpo.core.dpo.data import PreferencePair
    from desktop_dpo.core.dpo.tokenizing import TokenizedPair
    from desktop_dpo.core.store import ModelRow, RunRow, Store

log = logging.getLogger(__name__)

# The recording functions live in recording.py; the drivers import them from here as well.
__all__ = [
    "drive_training",
    "failure_message",
    "persist_event",
    "persist_outcome",
    "record_training",
    "recorded_training",
    "train",
]


def recorded_training(
    store: Store, run_id: int, *, cancel: CancelToken, resume: bool = True, runs_dir: Path | None = None
) -> Job:
    """Train run ``run_id`` in this thread and record it on ``store``: :func:`record_training` of :func:`train`.

    The job ``desktop-dpo train`` and the demo drive (``jobs.drive`` with the same ``cancel``).
    """
    return record_training(
        store, run_id, train(store, run_id, cancel=cancel, resume=resume, runs_dir=runs_dir)
    )


def drive_training(
    store: Store,
    run_id: int,
    *,
    cancel: CancelToken,
    resume: bool = True,
    runs_dir: Path | None = None,
    on_event: Callable[[object], None] | None = None,
) -> Finished:
    """Drive :func:`recorded_training` to its end in this thread (``jobs.drive``); the benches' and tests' shortcut.

    ``on_event`` sees each event after it is stored. However the job ends, the run row says so
    (completed, stopped or failed with the reason) before this returns or re-raises.
    """
    job = recorded_training(store, run_id, cancel=cancel, resume=resume, runs_dir=runs_dir)
    return drive(job, on_event or (lambda event: None), cancel)


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


def train(
    store: Store, run_id: int, *, cancel: CancelToken, resume: bool = True, runs_dir: Path | None = None
) -> Job:
    """Train run ``run_id`` (a generator job: yields the events above, returns :class:`Finished`).

    Args:
        store: the driver thread's store (reads the run; writes the prompt split and the reference cache).
        run_id: a run made with ``Store.create_run`` whose ``config`` is a :class:`TrainConfig` dict.
        cancel: checked at every step boundary; a stop writes a checkpoint and raises ``JobCancelled``.
            Closing the generator at a yield (what the GUI worker does on stop) also checkpoints.
        resume: continue from the run's newest checkpoint when it has one (else start at step 0).
        runs_dir: where the run's folder goes when it has none yet (default: the app's runs folder).

    Raises:
        TrainingOutOfMemoryError: with smaller settings to resume with (finished steps are checkpointed).
        TrainingError, ModelError: a message a person can act on.
    """
    run = _get_run(store, run_id)
    if resume and run.status == "completed" and run.adapter_path and Path(run.adapter_path).is_dir():
        finished = Finished(adapter_path=run.adapter_path, metrics=dict(run.final_metrics), step=run.step)
        yield finished
        return finished
    run_dir = run_folder(run, runs_dir)
    lock = RunLock(run_dir, run.id)  # RunBusyError: another process trains this run now
    try:
        session = _Session(store, run, TrainConfig.from_dict(run.config), cancel, run_dir)
    except BaseException:
        lock.release()
        raise
    try:
        with torch_settings(session.config, session.device):
            yield from session.load_pairs()
            yield from session.tokenize()
            yield from sft_phase.SftPhase(session).run(resume)  # the SFT start, when it is on
            yield from session.prepare_reference()
            yield from session.prepare_optimizer(resume)
            yield from session.loop()
            finished = session.finish()
    except BaseException as exc:
        drop_frame_locals(exc)
        raise
    finally:
        session.release()  # however the run ends: the GPU is shared (llama.cpp, other programs)
        lock.release()
    yield finished
    return finished


def _policy_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log π_θ of the chosen and rejected rows of a batch (a seam tests use to inject failures)."""
    from desktop_dpo.core.dpo.logps import sequence_logps

    return sequence_logps(model, batch)


class _Session:
    """One training session of a run: setup, the loop, checkpoints, cleanup (see the module docstring).

    Its methods that yield are parts of :func:`train`'s generator; the state lives here so a
    checkpoint can be written from any step boundary, including when the driver closes the job.
    """

    def __init__(self, store: Store, run: RunRow, config: TrainConfig, cancel: CancelToken, run_dir: Path):
        self.store, self.run, self.config, self.cancel, self.run_dir = store, run, config, cancel, run_dir
        self.device = resolve_device(config)  # "cpu", "cuda" or "mps"
        self.quantization = resolve_quantization(config, self.device)  # "nf4" or "none"
        # load_pairs: the run's pairs as text, split by prompt
        self.train_text: list[PreferencePair] = []
        self.heldout_text: list[PreferencePair] = []
        # tokenize: the model the run trains, the folder it loads from, the template, the token ids
        self.base: ModelRow | None = None
        self.folder: Path | None = None
        self.chat_template: str | None = None
        self.pad_id = 0  # padding is masked out everywhere; any id will do
        self.pairs: list[TokenizedPair] = []  # training pairs first, then held-out ones
        self.n_train = 0  # pairs[:n_train] train
        self.heldout: list[int] = []  # indices of the held-out pairs in pairs
        # prepare_reference: (chosen, rejected) reference log-probs by cache key, and the policy
        self.keys: list[str] = []  # reference cache key of each pair
        self.reference: dict[str, tuple[float, float]] = {}
        self.reference_seconds = 0.0  # spent computing the missing ones
        self.model: Any = None  # the base with its LoRA adapter (peft); sft_phase.py may have trained it
        self.sft_id: str | None = None  # id of the finished SFT phase: the reference is then π_SFT
        # prepare_optimizer: AdamW on the LoRA weights, the schedule, the watch for failure shapes
        self.params: list[Any] = []
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.total_steps = 0
        self.watch: TrainingWatch | None = None
        # the position in the run (a checkpoint's content)
        self.step = 0  # optimizer steps done
        self.epoch = 0  # epoch of the next step
        self.offset = 0  # pairs of that epoch already consumed
        self.saved_step: int | None = None  # step of the newest checkpoint on disk
        self.rng_at_boundary: dict[str, Any] | None = None  # RNG state when the current step began
        # loop: the latest metrics, for the final ones
        self.last_train: StepMetrics | None = None
        self.last_eval: EvalMetrics | None = None

    # ---------------------------------------------------------------- setup

    def load_pairs(self) -> Iterator[object]:
        """The run's snapshot as pairs, split by prompt (a split once fixed in the store never changes)."""
        from desktop_dpo.core.dpo import data as dpo_data

        yield Loading("Reading the run's pairs")
        views = self.store.comparison_views(ids=self.run.comparison_ids, include_deleted=True)
        pairs = kto_batches.training_texts(self.config, views, self.store, self.run)  # KTO: labels.py
        if not pairs:
            raise TrainingError(
                "This run has no usable pairs: pick A or B (or rewrite a response) in some comparisons, "
                "then start a new run."
            )
        prompt_ids = sorted({pair.prompt_id for pair in pairs})
        existing = {pid: row.split for pid in prompt_ids if (row := self.store.get_prompt(pid)) and row.split}
        splits = dpo_data.split_by_prompt(
            prompt_ids, self.config.heldout_fraction, self.config.seed, existing
        )
        self.store.set_prompt_splits({pid: split for pid, split in splits.items() if pid not in existing})
        self.train_text = [pair for pair in pairs if splits[pair.prompt_id] == "train"]
        self.heldout_text = [pair for pair in pairs if splits[pair.prompt_id] == "heldout"]
        if not self.train_text:
            raise TrainingError(
                "Every pair of this run has a held-out prompt; collect pairs for more prompts."
            )
        self.cancel.raise_if_cancelled()

    def tokenize(self) -> Iterator[object]:
        """The base model's tokenizer and the token ids of every pair (training pairs first)."""
        from transformers import AutoTokenizer

        from desktop_dpo.core.dpo import tokenizing

        self.base = _get_model(self.store, self.run.base_model_id)
        self.folder = training_folder(self.base)
        yield Loading(f"Loading {self.base.name}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(self.folder), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"Cannot load the tokenizer in {self.folder}: {exc}") from exc
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad_id is None else pad_id  # padding is masked out everywhere; any id will do
        # The template the model is used with everywhere (the person's choice, else the tokenizer's own):
        # training renders each pair exactly as the engines rendered it when it was sampled.
        require_usable_template(self.base)
        self.chat_template = template_for(self.base, own=tokenizing.resolve_chat_template(tokenizer))
        tokenized, self.config = kto_batches.tokenize_run(tokenizer, self)  # KTO's weights filled in
        self.pairs = tokenized.pairs  # training pairs first, then held-out ones
        self.n_train = len(self.train_text)
        self.heldout = list(range(self.n_train, len(self.pairs)))
        message = tokenized.truncation_message()
        if message:
            yield TrainWarning(message=message, kind="truncated", step=self.run.step)
        self.cancel.raise_if_cancelled()

    def prepare_reference(self) -> Iterator[object]:
        """Reference log-probs of every pair from the cache, computing (and caching) the missing ones.

        Adapter off: the policy model with its adapter disabled, loaded once for both roles. A previous
        round's model: loaded alone, used, freed before the policy is loaded (never two models at once).
        After an SFT phase (``sft_phase.py``) with no previous round's model: π_SFT, the policy as that phase
        left it (adapter on), cached under keys of its own. ORPO and SimPO need no reference: only the policy is prepared (no pass, no cache rows).
        """
        if self.config.loss_type in REFERENCE_FREE_LOSS_TYPES:
            yield from self._attach_adapter()
            return
        reference_id = parse_reference(self.run.reference)
        # After an SFT phase the reference is π_SFT (the adapter on, now), as the DPO paper prescribes.
        sft_id = self.sft_id if reference_id is None else None
        adapter_off = reference_id is None and sft_id is None
        reference_row = self.base if reference_id is None else _get_model(self.store, reference_id)
        self.keys = reference_keys(
            self.pairs,
            sft_phase.reference_fingerprint(reference_row.fingerprint, sft_id),
            device=self.device,
            quantization=self.quantization,
            chat_template=self.chat_template,
            max_length=self.config.max_length,
        )
        self.reference = self.store.get_reference_logps(self.keys)
        missing = [i for i, key in enumerate(self.keys) if key not in self.reference]
        if missing and reference_id is not None:
            yield Loading(f"Loading the reference model {reference_row.name}")
            reference_model = load_causal_lm(training_folder(reference_row), self.quantization, self.device)
            yield from self._fill_reference(reference_model, missing, adapter_off=False)
            del reference_model
            free_memory(self.device)
        yield from self._attach_adapter()
        if missing and reference_id is None:
            yield from self._fill_reference(self.model, missing, adapter_off=adapter_off)
        yield ReferenceReady(
            cached=len(self.pairs) - len(missing),
            computed=len(missing),
            seconds=self.reference_seconds,
        )

    def _attach_adapter(self) -> Iterator[Loading]:
        if self.model is None:  # else the SFT phase loaded it
            yield Loading("Preparing the adapter")
            self.model = attach_lora(
                load_causal_lm(self.folder, self.quantization, self.device), self.config, self.quantization
            )

    def _fill_reference(self, model: Any, missing: Sequence[int], *, adapter_off: bool) -> Iterator[Loading]:
        self.reference_seconds += yield from fill_reference(
            self.store,
            model,
            self.pairs,
            self.keys,
            missing,
            self.reference,
            config=self.config,
            pad_id=self.pad_id,
            device=self.device,
            adapter_off=adapter_off,
            cancel=self.cancel,
        )

    def prepare_optimizer(self, resume: bool) -> Iterator[object]:
        """AdamW on the LoRA weights, the schedule, and the newest checkpoint's state when resuming."""
        import torch

        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if not resume:
            remove_checkpoints(self.run_dir)
        saved: dict[str, Any] = {}
        if checkpoint is not None:
            yield Loading(f"Resuming from {checkpoint.name}")
            saved = load_checkpoint(checkpoint, self.model, self.optimizer, self.config, self.n_train)
            self.step, self.epoch, self.offset = saved["step"], saved["epoch"], saved["offset"]
            self.saved_step = self.step
            if self.offset >= self.n_train:
                self.epoch, self.offset = self.epoch + 1, 0
            # The schedule peaks at this run's lr, even if the settings changed since the checkpoint.
            for group in self.optimizer.param_groups:
                group["initial_lr"] = self.config.lr
        self.total_steps = self.step + steps_remaining(self.n_train, self.config, self.epoch, self.offset)
        total, config = self.total_steps, self.config
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, config.warmup_ratio, config.scheduler)
        )
        same_schedule = saved.get("total_steps") == total and all(
            saved.get("config", {}).get(name) == getattr(config, name)
            for name in ("lr", "warmup_ratio", "scheduler")
        )
        if saved.get("scheduler") is not None and same_schedule:
            self.scheduler.load_state_dict(saved["scheduler"])
        elif self.step > 0:  # resumed with other settings: the schedule follows the new step count
            self.scheduler.last_epoch = self.step - 1
            self.scheduler.step()
        # Loading a scheduler's state leaves the optimizer alone, whose lr the constructor reset.
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
        if saved.get("rng") is not None:
            set_rng_state(saved["rng"])
        self.watch = TrainingWatch(self.total_steps, state=saved.get("watch"))
        yield Started(
            run_dir=str(self.run_dir),
            start_step=self.step,
            total_steps=self.total_steps,
            train_pairs=self.n_train,
            heldout_pairs=len(self.heldout),
            device=self.device,
            quantization=self.quantization,
        )

    # ---------------------------------------------------------------- the loop

    def loop(self) -> Iterator[object]:
        """Optimizer steps to the end of the run; evaluations and checkpoints on their schedule.

        A stop request ends the loop at the next step boundary with a checkpoint, then raises
        ``JobCancelled``. An error inside a step, before the weights changed, leaves the state of the
        last boundary intact: it is checkpointed (with that boundary's RNG state) before the error
        goes on, so no finished step is lost; running out of memory becomes a message saying what to lower.
        """
        if self.step == 0:
            self.last_eval = self.evaluate()
            if self.last_eval is not None:
                yield self.last_eval
        session_start, session_steps = time.perf_counter(), 0
        updating = False
        try:
            for epoch, offset_after, indices in plan_steps(
                self.n_train, self.config, self.epoch, self.offset
            ):
                if self.cancel.cancelled:
                    break
                self.rng_at_boundary = rng_state()
                started = time.perf_counter()
                result = self.forward_backward(indices)
                updating = True  # from here on the weights may change: no rescue checkpoint
                self.update(result)
                self.step, self.epoch, self.offset = self.step + 1, epoch, offset_after
                self.rng_at_boundary, updating = None, False
                session_steps += 1
                now = time.perf_counter()
                self.last_train = self.step_metrics(
                    result, epoch + offset_after / self.n_train, now - started,
                    eta=(now - session_start) / session_steps * (self.total_steps - self.step),
                )  # fmt: skip
                yield self.last_train
                yield from self.watch.observe(self.last_train, self.config)
                final = self.step == self.total_steps
                if self.step % self.config.eval_every == 0 or final:
                    self.last_eval = self.evaluate()
                    if self.last_eval is not None:
                        yield self.last_eval
                if self.step % self.config.checkpoint_every == 0 and not final:
                    yield Checkpointed(step=self.step, path=str(self.save()))
            if self.step < self.total_steps:  # left the loop on a stop request
                if self.saved_step != self.step:
                    yield Checkpointed(step=self.step, path=str(self.save()))
                self.cancel.raise_if_cancelled()
        except JobCancelled:
            # Stopped at a step boundary: noticed above (checkpointed there already), or thrown in by the
            # driver at one of the yields (jobs.drive). Either way, keep what was learned.
            if self.step > (self.saved_step or 0) and self.step < self.total_steps:
                yield Checkpointed(step=self.step, path=str(self.save()))
            raise
        except BaseException as exc:
            if not updating and self.step > (self.saved_step or 0):
                try:
                    self.optimizer.zero_grad(set_to_none=True)
                    free_memory(self.device)
                    self.save()
                except Exception:  # the original error matters more; the last periodic checkpoint remains
                    log.exception("Could not write a rescue checkpoint after an error")
            if is_out_of_memory(exc):
                self.optimizer.zero_grad(set_to_none=True)
                free_memory(self.device)
                where = f"at step {self.step + 1}"
                raise TrainingOutOfMemoryError(
                    out_of_memory_message(self.config, self.device, where, self.saved_step),
                    smaller_settings(self.config),
                ) from exc
            raise

    def _loss(
        self, batch: dict[str, torch.Tensor], indices: Sequence[int], chosen: Any, rejected: Any
    ) -> Any:
        """DPO loss of a batch against the cached reference log-probs (plus the SFT term when it is on); ORPO
        and SimPO from the policy alone (``reference_free.py``; ORPO's batch from :meth:`_scored`)."""
        import torch

        if self.config.loss_type == "kto":  # "rejected" holds the mismatched answers (kto_batches.py)
            return kto_batches.session_kto_loss(self, indices, chosen, rejected)
        if self.config.loss_type in REFERENCE_FREE_LOSS_TYPES:
            from desktop_dpo.core.dpo.reference_free import reference_free_outputs

            beta = self.config.orpo_lambda if self.config.loss_type == "orpo" else self.config.simpo_beta
            return reference_free_outputs(
                self.config.loss_type, (chosen, rejected), batch, beta=beta, gamma=self.config.simpo_gamma
            )

        from desktop_dpo.core.dpo.batches import response_lengths
        from desktop_dpo.core.dpo.loss import preference_loss, with_sft_term

        values = [self.reference[self.keys[i]] for i in indices]
        ref_chosen = torch.tensor([v[0] for v in values], dtype=torch.float32, device=self.device)
        ref_rejected = torch.tensor([v[1] for v in values], dtype=torch.float32, device=self.device)
        lengths: dict[str, Any] = {}
        if self.config.loss_type == "ipo":  # TRL's length-normalised IPO (see loss.py)
            lengths = dict(zip(("chosen_lengths", "rejected_lengths"), response_lengths(batch), strict=True))
        output = preference_loss(
            chosen,
            rejected,
            ref_chosen,
            ref_rejected,
            beta=self.config.beta,
            loss_type=self.config.loss_type,
            label_smoothing=self.config.label_smoothing,
            **lengths,
        )
        if not self.config.sft_weight:
            return output
        chosen_lengths, _ = response_lengths(batch)
        return with_sft_term(output, chosen, chosen_lengths, self.config.sft_weight)

    def forward_backward(self, indices: Sequence[int]) -> dict[str, Any]:
        """Gradients of one optimizer step, accumulated over its micro-batches (chosen + rejected fused).

        Each micro-batch is laid out by :func:`~desktop_dpo.core.dpo.batches.collate_for`: where the model
        allows it (checked once per model), each pair is one segment ``prompt + chosen + rejected`` (the
        rejected tokens masked from the chosen ones, positions restarting after the prompt), segments
        packed into rows, so the prompt goes through the model once and almost no padding does; the LM
        head runs only at positions that predict a response token, through the fused head
        (:func:`~desktop_dpo.core.dpo.logps.head_token_logps`), which never keeps [tokens, vocab]
        logits for the backward pass. The sums equal those of one padded batch of the same pairs.

        Where the time goes (``bench/train_vs_trl.py``'s work: 32k vocabulary, hidden 256, 4 layers, batch 4,
        2 CPU threads; CPU seconds of the run's 32 steps and its reference pass): decoder layers forward
        33% and backward 46%, the fused LM head 9% (over half of the arithmetic, but as two large matrix
        products it runs near the CPU's peak, while the layers are many small products and elementwise
        ops), the reference pass 7%, clipping + AdamW 3%, collation 0.7%, the DPO loss 0.3%. The fused
        head took the step from 0.78× to 0.63× of a plain forward + backward over padded rows (autograd
        spent ~45% of its time in [tokens, vocab] fills and passes), the shared prompt and packing to 0.60×.
        """
        import torch

        from desktop_dpo.core.dpo.batches import batch_tokens, collate_for, length_batches, to_device
        from desktop_dpo.core.dpo.reference_free import scored_batch

        self.model.train()
        outputs, chosen_logps, rejected_logps, tokens = [], [], [], 0
        for batch_indices in length_batches(indices, self.pairs, self.config.batch_size):
            pairs = [self.pairs[i] for i in batch_indices]
            batch = to_device(collate_for(self.model, pairs, self.pad_id), self.device)
            tokens += batch_tokens(batch)
            batch = scored_batch(batch, self.config.loss_type)  # ORPO scores the prompt tokens too
            chosen, rejected = _policy_logps(self.model, batch)
            output = self._loss(batch, batch_indices, chosen, rejected)
            # Sum over pairs ÷ pairs in the step: the gradient of one batch holding all of them.
            (output.losses.sum() / len(indices)).backward()
            outputs.append(output)
            chosen_logps.append(chosen[: len(pairs)].detach())  # ORPO's scored batch adds prompt sums after
            rejected_logps.append(rejected[: len(pairs)].detach())
        merged = type(outputs[0])(*(torch.cat(parts) for parts in zip(*outputs, strict=True)))
        return {
            "output": merged,
            "chosen_logps": torch.cat(chosen_logps),
            "rejected_logps": torch.cat(rejected_logps),
            "tokens": tokens,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def update(self, result: dict[str, Any]) -> None:
        """Clip, step (skipped when the loss or gradient is not finite), advance the schedule."""
        import torch

        result["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm).item()
        result["loss"] = result["output"].losses.float().mean().item()
        if math.isfinite(result["grad_norm"]) and math.isfinite(result["loss"]):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def step_metrics(self, result: dict[str, Any], epoch: float, seconds: float, eta: float) -> StepMetrics:
        from desktop_dpo.core.dpo.kto import kto_metrics
        from desktop_dpo.core.dpo.loss import dpo_metrics

        metrics = (kto_metrics if self.config.loss_type == "kto" else dpo_metrics)(
            result["output"],
            policy_chosen_logps=result["chosen_logps"],
            policy_rejected_logps=result["rejected_logps"],
        )
        return StepMetrics(
            step=self.step,
            total_steps=self.total_steps,
            epoch=epoch,
            loss=result["loss"],
            rewards_chosen=metrics["rewards/chosen"],
            rewards_rejected=metrics["rewards/rejected"],
            rewards_accuracies=metrics["rewards/accuracies"],
            rewards_margins=metrics["rewards/margins"],
            logps_chosen=metrics["logps/chosen"],
            logps_rejected=metrics["logps/rejected"],
            lr=result["lr"],
            grad_norm=result["grad_norm"],
            tokens_per_s=result["tokens"] / max(seconds, 1e-9),
            eta_s=eta,
            kl=metrics.get("kl"),  # KTO's z0 (kto_metrics), stored and plotted; the other losses have none
        )

    def evaluate(self) -> EvalMetrics | None:
        """The policy on the held-out pairs, without dropout or gradients (None when there are none)."""
        import torch

        from desktop_dpo.core.dpo.batches import collate_for, length_batches, to_device
        from desktop_dpo.core.dpo.logps import sequence_logps
        from desktop_dpo.core.dpo.loss import heldout_accuracy
        from desktop_dpo.core.dpo.reference_free import scored_batch

        if not self.heldout:
            return None
        self.model.eval()
        outputs = []
        with torch.inference_mode():
            for batch_indices in length_batches(self.heldout, self.pairs, self.config.batch_size * 2):
                pairs = [self.pairs[i] for i in batch_indices]
                batch = to_device(collate_for(self.model, pairs, self.pad_id), self.device)
                batch = scored_batch(batch, self.config.loss_type)
                outputs.append(self._loss(batch, batch_indices, *sequence_logps(self.model, batch)))
        if self.config.loss_type == "kto":
            return kto_batches.heldout_metrics(outputs, step=self.step, examples=len(self.heldout))
        losses = torch.cat([o.losses for o in outputs]).float()
        chosen = torch.cat([o.chosen_rewards for o in outputs]).float()
        rejected = torch.cat([o.rejected_rewards for o in outputs]).float()
        return EvalMetrics(
            step=self.step,
            loss=losses.mean().item(),
            accuracy=heldout_accuracy(chosen, rejected),
            margins=(chosen - rejected).mean().item(),
            rewards_chosen=chosen.mean().item(),
            rewards_rejected=rejected.mean().item(),
            pairs=len(self.heldout),
        )

    # ---------------------------------------------------------------- checkpoints and cleanup

    def save(self) -> Path:
        """Checkpoint the state at the current step boundary."""
        path = save_checkpoint(
            self.run_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            {
                "step": self.step,
                "epoch": self.epoch,
                "offset": self.offset,
                "total_steps": self.total_steps,
                "n_train": self.n_train,
                # Mid-step (a rescue after an error), the boundary's RNG state, so the step replays exactly.
                "rng": self.rng_at_boundary if self.rng_at_boundary is not None else rng_state(),
                "watch": self.watch.state(),
                "config": self.config.to_dict(),
            },
        )
        self.saved_step = self.step
        return path

    def release(self) -> None:
        """Drop the model, the optimizer and the schedule, and give their memory back to the device now.

        Runs at the end of every run (finished, stopped, failed): on a GPU shared with llama.cpp and other
        programs the memory must be free when the run ends, not when Python's collector gets round to it.
        """
        self.model = self.optimizer = self.scheduler = None
        self.params = []
        free_memory(self.device)

    def finish(self) -> Finished:
        """Write the adapter (atomically) with a note of its origin; drop the checkpoints."""
        adapter_dir = self.run_dir / "adapter"
        write_adapter(
            self.model,
            adapter_dir,
            run=self.run,
            config=self.config,
            base=self.base,
            quantization=self.quantization,
            chat_template=self.chat_template,
        )
        remove_checkpoints(self.run_dir)
        sft_phase.remove_sft_adapter(self.run_dir)
        metrics: dict[str, float] = {}
        if self.last_train is not None:
            metrics.update({f"train/{k}": v for k, v in self.last_train.as_metrics().items()})
        if self.last_eval is not None:
            metrics.update({f"heldout/{k}": v for k, v in self.last_eval.as_metrics().items()})
        return Finished(adapter_path=str(adapter_dir), metrics=metrics, step=self.step)


def _get_run(store: Store, run_id: int) -> RunRow:
    run = store.get_run(run_id)
    if run is None:
        raise TrainingError(f"There is no training run {run_id}.")
    return run


def _get_model(store: Store, model_id: int | None) -> ModelRow:
    model = store.get_model(model_id) if model_id is not None else None
    if model is None:
        raise ModelError(
            "The model this run trains is no longer registered. Add it again in the Models view."
        )
    return model
