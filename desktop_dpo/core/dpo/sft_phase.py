"""The SFT start: a supervised phase on the person's demonstrations before the preference phase, one run.

"DPO still requires supervised fine-tuning as a starting point": a base model that has never seen the kind of
answer the person wants gets little from comparing two of its own poor answers. So when ``TrainConfig.sft_phase``
is on, a run first trains the same LoRA adapter on demonstrations, then goes on to the preference phase (DPO,
IPO, KTO, ORPO, SimPO) from there:

- **Demonstrations** (:func:`demonstrations`): the answers the person wrote themselves (rewrites of a sampled
  answer, and "write my own answer" in Collect, stored as a rewrite) always; with ``"rewrites_and_chosen"``
  also the chosen answer of each verdict. Only the training prompts' (never the held-out ones').
- **The loss** (:func:`sft_nll`): the mean token negative log-likelihood of the answer given the prompt, over
  every answer token of an optimizer step (prompt tokens never count), with the same chat template and token
  ids as the preference phase (``tokenize_pair``). It equals TRL 1.16's ``SFTTrainer`` loss on prompt-completion
  data (``completion_only_loss``: sum of the answer tokens' NLL ÷ their number); ``tests/core/test_sft_oracle.py``.
- **The reference after an SFT phase** is the SFT model, π_ref = π_SFT, as the DPO paper prescribes (Rafailov et
  al. 2023, §4: "we initialize π_ref = π_SFT whenever available"): the reference log-probs are computed after
  this phase with the adapter on, under a cache key of their own (the base's fingerprint plus this phase's id,
  :func:`reference_fingerprint`), never mixed up with the adapter-off values. A run whose reference is a
  previous round's model keeps that reference.
- **Steps and metrics**: the phase has its own optimizer (AdamW, fresh, as a separate SFT run then DPO run
  would have), learning-rate schedule and step numbers; each step yields :class:`SftStepMetrics`, stored under
  the metrics split ``"sft"``. The run row's step counts the preference phase only.
- **Held-out NLL** (:meth:`SftPhase._evaluate`): the same mean answer-token NLL on the demonstrations of the
  prompts the preference phase holds out (never trained on), without dropout, before the first step, every
  ``eval_every`` steps and at the end, as the preference phase checks its held-out pairs;
  :class:`SftEvalMetrics`, stored under the split ``"sft_heldout"``. No held-out prompt with a demonstration:
  a line says so and nothing is measured.
- **Resume is exact** in either phase: a checkpoint written during this phase says ``phase = "sft"`` and holds
  this phase's optimizer, schedule, RNG and position; when the phase ends its adapter is kept in the run's
  folder (``sft-adapter``, with the phase's id and the RNG state it ended with) until the run finishes, so a
  resume in the preference phase skips this phase, can still compute a missing reference value from π_SFT, and
  (with no preference checkpoint yet) starts the preference steps with the same dropout masks.
- **Crash-safe end**: ``sft-adapter`` is written whole with its id or not at all (``atomic_output``), then the
  phase's checkpoints are deleted. A crash between the two leaves π_SFT beside a stale mid-phase checkpoint;
  the resume trusts ``sft-adapter`` and drops that checkpoint (:func:`drop_stale_checkpoints`), so the
  preference phase starts from π_SFT, as in an uninterrupted run, never from the stale checkpoint.

torch is imported inside functions: ``train.py`` imports this module at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.dpo.checkpoint import (
    ADAPTER_WEIGHTS,
    STATE_FILE,
    latest_checkpoint,
    load_checkpoint,
    remove_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from desktop_dpo.core.dpo.config import TrainConfig, TrainingOutOfMemoryError, smaller_settings
from desktop_dpo.core.dpo.data import PreferencePair
from desktop_dpo.core.dpo.events import Loading, SftEvalMetrics, SftStepMetrics, TrainWarning
from desktop_dpo.core.dpo.modeling import (
    attach_lora,
    free_memory,
    is_out_of_memory,
    load_causal_lm,
    out_of_memory_message,
)
from desktop_dpo.core.dpo.schedule import lr_factor, plan_steps, steps_remaining
from desktop_dpo.core.model_files import atomic_output
from desktop_dpo.core.store import ComparisonView

if TYPE_CHECKING:
    import torch

    from desktop_dpo.core.dpo.tokenizing import TokenizedPair
    from desktop_dpo.core.store import ModelRow

log = logging.getLogger(__name__)

SFT_ADAPTER = "sft-adapter"  # the run folder's copy of the adapter at the end of the phase
SFT_ID_FILE = "sft_id.txt"  # inside it: the phase's id, part of the reference cache key
SFT_RNG_FILE = "rng_state.pt"  # inside it: the RNG state at the phase's end (the preference phase's start)
NO_HELDOUT_DEMONSTRATIONS = (
    "No held-out prompt has a written answer, so the supervised start is measured on "
    "its training answers only"
)


def demonstrations(
    views: Iterable[ComparisonView], phase: str, prompt_ids: Iterable[int] | None = None
) -> list[PreferencePair]:
    """The answers the supervised phase trains on, as pairs whose chosen and rejected are the same answer.

    Args:
        views: the run's comparisons (deleted ones give nothing).
        phase: ``"rewrites"`` (each edited answer) or ``"rewrites_and_chosen"`` (also the chosen answer of each
            verdict whose side was not rewritten: the rewrite already says what the person wanted there);
            ``"off"`` gives none.
        prompt_ids: only these prompts (the training split); None: every prompt.

    The same answer to the same conversation is kept once, in input order.
    """
    if phase == "off":
        return []
    allowed = None if prompt_ids is None else set(prompt_ids)
    seen: set[str] = set()
    found: list[PreferencePair] = []
    for view in views:
        comparison = view.comparison
        if comparison.deleted or (allowed is not None and comparison.prompt_id not in allowed):
            continue
        answers = []
        if comparison.edited_text is not None and comparison.edited_side in ("a", "b"):
            answers.append((comparison.edited_text, "rewrite"))
        verdict = comparison.verdict
        if phase == "rewrites_and_chosen" and verdict in ("a", "b") and comparison.edited_side != verdict:
            answers.append((view.text_a if comparison.verdict == "a" else view.text_b, "chosen"))
        messages = [{"role": m["role"], "content": m["content"]} for m in view.messages]
        for answer, origin in answers:
            key = json.dumps([messages, answer.strip()])
            if not answer.strip() or key in seen:
                continue
            seen.add(key)
            found.append(
                PreferencePair(comparison.id, comparison.prompt_id, messages, answer, answer, origin)
            )
    return found


def tokenize_demonstrations(
    tokenizer: Any,
    demos: Sequence[PreferencePair],
    *,
    chat_template: str | None,
    max_length: int,
    max_prompt_length: int,
) -> list[TokenizedPair]:
    """Token ids of each demonstration exactly as the preference phase tokenizes a chosen answer
    (``tokenize_pair``: same template, same truncation), with no rejected answer (``rejected_ids`` empty)."""
    from desktop_dpo.core.dpo.tokenizing import tokenize_pair

    return [
        dataclasses.replace(
            tokenize_pair(
                tokenizer,
                demo,
                chat_template=chat_template,
                max_length=max_length,
                max_prompt_length=max_prompt_length,
            ),
            rejected_ids=(),
        )
        for demo in demos
    ]


def sft_nll(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token NLL of each demonstration of a batch, and its number of answer tokens.

    ``batch`` is :func:`~desktop_dpo.core.dpo.batches.collate_for` (or ``collate``) of demonstrations
    (:func:`tokenize_demonstrations`); only answer tokens are scored. The mean token NLL of the batch,
    TRL's ``SFTTrainer`` loss, is ``nll.sum() / tokens.sum()``:

        L_SFT = −(1/N) Σ_i Σ_{t ∈ answer_i} log π_θ(y_{i,t} | x_i, y_{i,<t}),   N = Σ_i |answer_i|

    Returns:
        ``(nll, tokens)``: [B] fp32 (with gradient when the model has one) and [B] token counts.
    """
    from desktop_dpo.core.dpo.batches import response_lengths
    from desktop_dpo.core.dpo.logps import sequence_logps

    chosen, _ = sequence_logps(model, batch)
    tokens, _ = response_lengths(batch)
    return -chosen, tokens


def is_base_model(model: ModelRow) -> bool:
    """Whether ``model`` is a base model (no chat training): no chat template of its own, used with the plain
    User:/Assistant: layout (by default or chosen). The presets start such a model with the SFT phase."""
    from desktop_dpo.core.llm.template_choice import template_choice, template_status

    status = template_status(model)
    if status.kind == "chosen":
        choice = template_choice(model)
        return choice is not None and choice.kind == "known" and choice.name == "plain"
    return status.kind == "plain"


def sft_id(run_dir: Path) -> str | None:
    """The id of the run's finished supervised phase (None: none finished)."""
    path = run_dir / SFT_ADAPTER / SFT_ID_FILE
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def reference_fingerprint(fingerprint: str, phase_id: str | None) -> str:
    """What names the reference in its cache keys: the base model's ``fingerprint``, plus the supervised
    phase's id when the reference is π_SFT (so adapter-off values and π_SFT values never meet)."""
    return fingerprint if phase_id is None else f"{fingerprint}+sft:{phase_id}"


def remove_sft_adapter(run_dir: Path) -> None:
    """Drop the run folder's copy of the SFT adapter (the run finished, or restarts)."""
    shutil.rmtree(run_dir / SFT_ADAPTER, ignore_errors=True)


def drop_stale_checkpoints(run_dir: Path) -> None:
    """Delete what is left of the supervised phase's checkpoints once its end is kept (``sft-adapter``).

    A crash after ``sft-adapter`` was written and before the phase's checkpoints were deleted leaves a stale
    mid-phase checkpoint (or, mid-delete, a half-deleted one): the preference phase would load it as its own.
    A preference-phase checkpoint (written only after they were deleted) is kept.
    """
    if not (run_dir / "checkpoints").exists():
        return
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None or _checkpoint_phase(checkpoint) == "sft":
        log.info("Dropping the supervised phase's stale checkpoints in %s", run_dir)
        remove_checkpoints(run_dir)


def _checkpoint_phase(path: Path) -> str | None:
    """The phase a checkpoint was written in ("sft", or None for the preference phase)."""
    import torch

    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception:  # a damaged checkpoint is reported when it is loaded for real
        return None
    return state.get("phase") if isinstance(state, dict) else None


def _restore_rng(folder: Path) -> None:
    """Put back the RNG state the phase ended with (an ``sft-adapter`` written before it was kept has none)."""
    import torch

    try:
        state = torch.load(folder / SFT_RNG_FILE, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return
    set_rng_state(state)


class SftPhase:
    """The supervised phase of one training session (``train._Session``): setup, steps, checkpoints.

    :meth:`run` is a part of ``train.train``'s generator. It leaves ``session.model`` (the base with the
    adapter, trained on the demonstrations) and ``session.sft_id`` in place for the reference and the
    preference phase.
    """

    def __init__(self, session: Any):
        self.session = session
        config: TrainConfig = session.config
        self.config = config.replace(epochs=config.sft_epochs)  # plan_steps and the schedule read .epochs
        self.pairs: list[TokenizedPair] = []
        self.heldout_pairs: list[TokenizedPair] = []  # the held-out prompts' demonstrations, never trained on
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.step, self.epoch, self.offset, self.total_steps = 0, 0, 0, 0
        self.saved_step: int | None = None
        self.rng_at_boundary: dict[str, Any] | None = None

    # ---------------------------------------------------------------- setup

    def run(self, resume: bool) -> Iterator[object]:
        """The whole phase: skipped when off, when already done (a resume) or when there is nothing to learn."""
        session = self.session
        if session.config.sft_phase == "off":
            return
        run_dir: Path = session.run_dir
        checkpoint = latest_checkpoint(run_dir) if resume else None
        if not resume:
            remove_sft_adapter(run_dir)
            remove_checkpoints(run_dir)
        elif sft_id(run_dir) is not None:  # done before the stop: π_SFT comes back from the run's folder
            drop_stale_checkpoints(run_dir)  # a crash right after the phase's end was kept
            yield from self._attach()
            self._load_adapter(run_dir / SFT_ADAPTER)
            _restore_rng(run_dir / SFT_ADAPTER)  # a preference checkpoint, if any, sets its own later
            session.sft_id = sft_id(run_dir)
            return
        elif checkpoint is not None and _checkpoint_phase(checkpoint) != "sft":
            return  # a preference-phase checkpoint written without an SFT phase (the setting came later)
        yield Loading("Reading the demonstrations")
        views = session.store.comparison_views(ids=session.run.comparison_ids, include_deleted=True)
        demos = demonstrations(views, session.config.sft_phase, {p.prompt_id for p in session.train_text})
        if not demos:
            yield TrainWarning(
                message="There are no rewritten or written answers among the training pairs yet, so the supervised "
                "start was skipped: rewrite an answer in Collect, or write your own, to teach by example.",
                kind="no_demonstrations",
                step=session.run.step,
            )
            return
        heldout = demonstrations(views, session.config.sft_phase, {p.prompt_id for p in session.heldout_text})
        yield from self._tokenize(demos, heldout)
        if not self.heldout_pairs:
            yield Loading(NO_HELDOUT_DEMONSTRATIONS)
        yield from self._attach()
        self._prepare(checkpoint if resume else None)
        yield from self._loop()
        yield from self._finish()

    def _tokenize(
        self, demos: Sequence[PreferencePair], heldout: Sequence[PreferencePair]
    ) -> Iterator[object]:
        from transformers import AutoTokenizer

        session = self.session
        yield Loading("Preparing the demonstrations")
        tokenizer = AutoTokenizer.from_pretrained(
            str(session.folder), local_files_only=True, trust_remote_code=False
        )
        self.pairs, self.heldout_pairs = (
            tokenize_demonstrations(
                tokenizer,
                found,
                chat_template=session.chat_template,
                max_length=session.config.max_length,
                max_prompt_length=session.config.max_prompt_length,
            )
            for found in (demos, heldout)
        )

    def _attach(self) -> Iterator[object]:
        session = self.session
        if session.model is None:
            yield Loading("Preparing the adapter")
            session.model = attach_lora(
                load_causal_lm(session.folder, session.quantization, session.device),
                session.config,
                session.quantization,
            )

    def _load_adapter(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.session.model, load_file(str(folder / ADAPTER_WEIGHTS)))

    def _prepare(self, checkpoint: Path | None) -> None:
        """AdamW on the LoRA weights, the phase's schedule, and its checkpoint's state when resuming."""
        import torch

        session = self.session
        params = [p for p in session.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        saved: dict[str, Any] = {}
        if checkpoint is not None:
            saved = load_checkpoint(
                checkpoint, session.model, self.optimizer, session.config, len(self.pairs)
            )
            self.step, self.epoch, self.offset = saved["sft_step"], saved["sft_epoch"], saved["sft_offset"]
            self.saved_step = self.step
        self.total_steps = self.step + steps_remaining(len(self.pairs), self.config, self.epoch, self.offset)
        total, config = self.total_steps, self.config
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, config.warmup_ratio, config.scheduler)
        )
        if saved.get("scheduler") is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
                group["lr"] = lr
        if saved.get("rng") is not None:
            set_rng_state(saved["rng"])

    # ---------------------------------------------------------------- the steps

    def _forward_backward(self, indices: Sequence[int]) -> tuple[float, int]:
        """Gradients of one step: Σ NLL of the step's answer tokens ÷ their number (one batch's mean)."""
        from desktop_dpo.core.dpo.batches import batch_tokens, collate_for, length_batches, to_device

        session = self.session
        session.model.train()
        step_tokens = sum(len(self.pairs[i].chosen_ids) for i in indices)
        total, seen = 0.0, 0
        for batch_indices in length_batches(indices, self.pairs, self.config.batch_size):
            batch = to_device(
                collate_for(session.model, [self.pairs[i] for i in batch_indices], session.pad_id),
                session.device,
            )
            seen += batch_tokens(batch)
            nll, _ = sft_nll(session.model, batch)
            loss = nll.sum() / max(step_tokens, 1)
            loss.backward()
            total += loss.item()
        return total, seen

    def _evaluate(self) -> Iterator[SftEvalMetrics]:
        """The held-out demonstrations' mean answer-token NLL now (:func:`sft_nll`'s measure: Σ NLL ÷ answer
        tokens), without dropout or gradients; nothing when there are none."""
        import torch

        from desktop_dpo.core.dpo.batches import collate_for, length_batches, to_device

        session = self.session
        if not self.heldout_pairs:
            return
        session.model.eval()
        total, tokens = 0.0, 0
        indices = range(len(self.heldout_pairs))
        with torch.inference_mode():
            for batch_indices in length_batches(indices, self.heldout_pairs, self.config.batch_size * 2):
                pairs = [self.heldout_pairs[i] for i in batch_indices]
                batch = to_device(collate_for(session.model, pairs, session.pad_id), session.device)
                nll, counts = sft_nll(session.model, batch)
                total += nll.double().sum().item()
                tokens += int(counts.sum().item())
        if tokens:
            yield SftEvalMetrics(
                step=self.step, loss=total / tokens, demonstrations=len(self.heldout_pairs), tokens=tokens
            )

    def _loop(self) -> Iterator[object]:
        import torch

        session = self.session
        params = [p for p in session.model.parameters() if p.requires_grad]
        started_at, steps_here, updating = time.perf_counter(), 0, False
        if self.step == 0:  # where the phase starts from (a resume measured it before its stop)
            yield from self._evaluate()
        try:
            for epoch, offset_after, indices in plan_steps(
                len(self.pairs), self.config, self.epoch, self.offset
            ):
                if session.cancel.cancelled:
                    break
                self.rng_at_boundary = rng_state()
                started = time.perf_counter()
                loss, tokens = self._forward_backward(indices)
                updating = True
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm).item()
                lr = self.optimizer.param_groups[0]["lr"]
                if math.isfinite(grad_norm) and math.isfinite(loss):
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.step, self.epoch, self.offset = self.step + 1, epoch, offset_after
                self.rng_at_boundary, updating = None, False
                steps_here += 1
                now = time.perf_counter()
                yield SftStepMetrics(
                    step=self.step,
                    total_steps=self.total_steps,
                    epoch=epoch + offset_after / len(self.pairs),
                    loss=loss,
                    lr=lr,
                    grad_norm=grad_norm,
                    tokens_per_s=tokens / max(now - started, 1e-9),
                    eta_s=(now - started_at) / steps_here * (self.total_steps - self.step),
                )
                if self.step % self.config.eval_every == 0 or self.step == self.total_steps:
                    yield from self._evaluate()
                if self.step % self.config.checkpoint_every == 0 and self.step < self.total_steps:
                    self._save()
            if self.step < self.total_steps:  # left on a stop request
                if self.saved_step != self.step:
                    self._save()
                session.cancel.raise_if_cancelled()
        except BaseException as exc:
            # Stopped or failed at a step boundary: keep what was learned (the preference loop does the same).
            if not updating and self.step > (self.saved_step or 0) and self.step < self.total_steps:
                try:
                    self.optimizer.zero_grad(set_to_none=True)
                    self._save()
                except Exception:
                    log.exception("Could not write a checkpoint of the supervised phase after an error")
            if is_out_of_memory(exc):
                free_memory(session.device)
                raise TrainingOutOfMemoryError(
                    out_of_memory_message(
                        session.config, session.device, f"at supervised step {self.step + 1}", None
                    ),
                    smaller_settings(session.config),
                ) from exc
            raise

    def _save(self) -> None:
        """Checkpoint the phase at the current step boundary (the preference phase's step stays 0)."""
        session = self.session
        save_checkpoint(
            session.run_dir,
            session.model,
            self.optimizer,
            self.scheduler,
            {
                "phase": "sft",
                "step": 0,
                "epoch": 0,
                "offset": 0,
                "total_steps": 0,
                "n_train": len(self.pairs),
                "sft_step": self.step,
                "sft_epoch": self.epoch,
                "sft_offset": self.offset,
                "rng": self.rng_at_boundary if self.rng_at_boundary is not None else rng_state(),
                "config": session.config.to_dict(),
            },
        )
        self.saved_step = self.step

    def _finish(self) -> Iterator[object]:
        """Keep π_SFT in the run's folder (with a new id), drop the phase's checkpoints and optimizer.

        In this order, each step crash-safe: ``sft-adapter`` appears whole with its id (``atomic_output``: a
        crash before the rename leaves the checkpoints, and the resume finishes the phase from them), then
        the checkpoints go (a crash before that: :func:`drop_stale_checkpoints` on the resume).
        """
        import torch

        session = self.session
        yield Loading("Supervised start done; keeping its adapter")
        phase_id = uuid.uuid4().hex
        with atomic_output(session.run_dir / SFT_ADAPTER) as tmp:
            session.model.save_pretrained(str(tmp), safe_serialization=True)
            torch.save(rng_state(), tmp / SFT_RNG_FILE)
            (tmp / SFT_ID_FILE).write_text(phase_id, encoding="utf-8")
        remove_checkpoints(session.run_dir)
        session.sft_id = phase_id
        self.optimizer = self.scheduler = None
        free_memory(session.device)
