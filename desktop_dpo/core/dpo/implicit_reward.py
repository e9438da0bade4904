"""The DPO implicit reward of answers under a finished run's adapter: which of k answers the run's model
already prefers, and by how much.

DPO's policy defines a reward without a reward model (Rafailov et al. 2023, eq. 5):

    r(x, y) = β · (log π_θ(y|x) − log π_ref(y|x))

π_θ is the run's base model with its trained LoRA adapter on, π_ref the same model with the adapter off
(peft's ``disable_adapter()``: one model in memory for both), β the run's ``beta``. Two answers whose
rewards are close are a pair the run cannot tell apart yet: the most informative pair to ask a person about
(Collect, issue 17). The scores are the rewards training itself reports (``loss.preference_loss``'s
``chosen_rewards``/``rejected_rewards``) because everything on the way is training's own code:

    text      each answer tokenized as training tokenizes a response (``tokenizing.tokenize_pairs``: the
              template the adapter was trained with, its end-of-turn handling, the run's ``max_length`` and
              ``max_prompt_length`` truncation); an answer is scored on its own, as KTO scores one answer
    batches   two answers per ``TokenizedPair`` (same prompt ids), ``batches.collate_for`` (each prompt once
              where the model allows it): all k answers in one forward pass per adapter state, or a few
    log-probs ``logps.sequence_logps`` (summed over the answer tokens), adapter on, then off

π_ref is always the base with the adapter off, where the run started. For a run trained against a previous
round's model, or after an SFT phase, training's own reference was another model, so these rewards then
measure how far the run moved each answer from its base, not its training rewards; for ORPO and SimPO (no
reference) likewise, scaled by the ``beta`` setting. The ranking of answers is what Collect uses, and it is
sound in every case: a larger reward is an answer the run made more likely than its base did.

:func:`latest_scoring_run` picks the run whose adapter judges answers sampled from a model. torch,
transformers and peft are imported inside functions (the window imports this module's names lazily).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.dpo.config import TrainConfig, TrainingError
from desktop_dpo.core.errors import ModelError

if TYPE_CHECKING:
    from desktop_dpo.core.dpo.tokenizing import TokenizedPair
    from desktop_dpo.core.store import ModelRow, RunRow, Store

log = logging.getLogger(__name__)


def latest_scoring_run(store: Store, model_id: int) -> int | None:
    """The run whose adapter should judge answers sampled from model ``model_id``, or None.

    The latest completed run (by when it finished) that trained from this model, or whose export this model
    is (an aligned model points back to its run: ``ModelRow.run_id``, and its export rows name it). Failed,
    stopped, pending and running runs are never chosen.
    """
    model = store.get_model(model_id)
    if model is None:
        return None
    exported_from = {model.run_id} if model.run_id is not None else set()
    exported_from |= {
        e.run_id for e in store.list_exports() if e.model_id == model_id and e.run_id is not None
    }
    candidates = [
        run
        for run in store.list_runs()
        if run.status == "completed" and (run.base_model_id == model_id or run.id in exported_from)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda run: (run.finished_at or run.created_at, run.id)).id


class ImplicitRewardScorer:
    """A finished run's base model with its adapter, ready to score answers (:meth:`rewards`).

    Made with :meth:`for_run`; holds the model until :meth:`close`. Not thread-safe: one thread scores.
    """

    def __init__(
        self,
        *,
        run_id: int,
        model: Any,
        tokenizer: Any,
        config: TrainConfig,
        chat_template: str | None,
        device: str,
    ) -> None:
        self.run_id = run_id
        self.config = config
        self.beta = config.beta
        self.device = device
        self.chat_template = chat_template
        self._model = model
        self._tokenizer = tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = 0 if pad_id is None else pad_id  # padding is masked out everywhere; any id will do

    @classmethod
    def for_run(cls, store: Store, run_id: int, *, device: str | None = None) -> ImplicitRewardScorer:
        """Load run ``run_id``'s base model (the folder it trained from) with its final adapter.

        ``device``: "cpu", "cuda" or "mps"; default the one the run's settings name (or the best one here
        when that one is not available). The base is loaded as training loaded it (NF4 on a GPU when the run
        used it), so the log-probabilities are training's.

        Raises:
            TrainingError: no such run, it has not finished, or its adapter is gone or damaged.
            ModelError: its base model is no longer registered, its files are gone, or cannot be loaded.
        """
        from transformers import AutoTokenizer

        from desktop_dpo.core.dpo.modeling import resolve_quantization
        from desktop_dpo.core.model_files import training_folder

        run = _finished_run(store, run_id)
        adapter_dir = _adapter_folder(run)
        base = _base_model(store, run)
        try:
            folder = training_folder(base)
        except ModelError as exc:
            raise ModelError(f"Run {run.id} cannot judge answers: {exc}") from exc
        config = TrainConfig.from_dict(run.config)
        device = device or _scoring_device(config)
        quantization = resolve_quantization(config, device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"Cannot load the tokenizer in {folder}: {exc}") from exc
        model = _load_policy(folder, adapter_dir, quantization, device)
        return cls(
            run_id=run.id,
            model=model,
            tokenizer=tokenizer,
            config=config,
            chat_template=_training_template(adapter_dir, base, tokenizer),
            device=device,
        )

    def rewards(
        self, messages: list[dict[str, str]], texts: Sequence[str], per_token: bool = False
    ) -> list[float]:
        """One implicit reward per answer in ``texts`` (in order) to the conversation ``messages``.

        All answers go through the model in one forward pass with the adapter on and one with it off (a few,
        past twice the run's batch size). A zero adapter (B = 0) gives 0 for every answer. ``per_token``:
        the log-probabilities are averaged over each answer's tokens instead of summed, a reward per token
        that does not grow with the answer's length (the bench's ``--per-token``; Collect chooses by the
        summed reward, DPO's own).

        Raises:
            RuntimeError: the scorer was closed.
        """
        import torch

        from desktop_dpo.core.dpo.batches import collate_for, to_device
        from desktop_dpo.core.dpo.logps import sequence_logps

        if self._model is None:
            raise RuntimeError("This scorer was closed; make a new one with ImplicitRewardScorer.for_run.")
        if not texts:
            return []
        pairs, slots = self._pairs(messages, texts)
        per_batch = max(1, self.config.batch_size * 2)  # as training scores its held-out pairs: no gradients
        policy, reference = torch.zeros(len(texts)), torch.zeros(len(texts))
        self._model.eval()
        with torch.inference_mode():
            for start in range(0, len(pairs), per_batch):
                chunk, chunk_slots = pairs[start : start + per_batch], slots[start : start + per_batch]
                batch = to_device(collate_for(self._model, chunk, self._pad_id), self.device)
                on = torch.cat(sequence_logps(self._model, batch, average=per_token)).float().cpu()
                with self._model.disable_adapter():
                    off = torch.cat(sequence_logps(self._model, batch, average=per_token)).float().cpu()
                # Row i of a batch's log-probs is pair i's first answer, row len(chunk) + i its second.
                for i, (first, second) in enumerate(chunk_slots):
                    for row, slot in ((i, first), (len(chunk) + i, second)):
                        policy[slot], reference[slot] = on[row], off[row]
        return (self.beta * (policy - reference)).tolist()  # as preference_loss computes its rewards

    def _pairs(
        self, messages: list[dict[str, str]], texts: Sequence[str]
    ) -> tuple[list[TokenizedPair], list[tuple[int, int]]]:
        """Each answer tokenized as training tokenizes a response, two answers per pair (the second slot of
        an odd one out repeats it); which answer each slot of each pair is."""
        from desktop_dpo.core.dpo.data import PreferencePair
        from desktop_dpo.core.dpo.tokenizing import TokenizedPair, tokenize_pairs

        tokenized = tokenize_pairs(
            self._tokenizer,
            [PreferencePair(0, 0, messages, text, text) for text in texts],
            chat_template=self.chat_template,
            max_length=self.config.max_length,
            max_prompt_length=self.config.max_prompt_length,
        ).pairs
        # Answers share a pair only when their prompt ids agree (they differ only where a token merges
        # across the prompt's end: tokenizing.tokenize_pair).
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for index, single in enumerate(tokenized):
            by_prompt.setdefault(single.prompt_ids, []).append(index)
        pairs: list[TokenizedPair] = []
        slots: list[tuple[int, int]] = []
        for prompt_ids, indices in by_prompt.items():
            for k in range(0, len(indices), 2):
                first, second = indices[k], indices[min(k + 1, len(indices) - 1)]
                pairs.append(
                    TokenizedPair(
                        comparison_id=0,
                        prompt_id=0,
                        prompt_ids=prompt_ids,
                        chosen_ids=tokenized[first].chosen_ids,
                        rejected_ids=tokenized[second].chosen_ids,
                    )
                )
                slots.append((first, second))
        return pairs, slots

    def close(self) -> None:
        """Drop the model and give its memory back to the device now."""
        from desktop_dpo.core.dpo.modeling import free_memory

        if self._model is None:
            return
        self._model = None
        free_memory(self.device)

    def __enter__(self) -> ImplicitRewardScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _finished_run(store: Store, run_id: int) -> RunRow:
    run = store.get_run(run_id)
    if run is None:
        raise TrainingError(f"There is no training run {run_id}.")
    if run.status != "completed":
        raise TrainingError(
            f"Run {run.id} ({run.name}) has not finished (status: {run.status}), so it has no adapter to judge "
            "answers with. Resume it in the Train view and let it finish, or pick a finished run."
        )
    return run


def _adapter_folder(run: RunRow) -> Path:
    """The run's final adapter folder, read whole now: a damaged file is refused before the model loads."""
    from desktop_dpo.core.dpo.checkpoint import ADAPTER_WEIGHTS
    from desktop_dpo.core.tensor_file import DamagedTensorFileError, check_tensor_file

    folder = Path(run.adapter_path) if run.adapter_path else None
    if folder is None or not (folder / ADAPTER_WEIGHTS).is_file():
        where = (
            f" is no longer in {folder} (moved or deleted?)" if folder is not None else " was never recorded"
        )
        raise TrainingError(
            f"The adapter of run {run.id} ({run.name}){where}, so it cannot judge answers. Put the folder "
            "back, or train a new run from the same model in the Train view."
        )
    try:
        check_tensor_file(folder / ADAPTER_WEIGHTS, f"The adapter of run {run.id}")
    except DamagedTensorFileError as exc:
        raise TrainingError(str(exc)) from exc
    return folder


def _base_model(store: Store, run: RunRow) -> ModelRow:
    base = store.get_model(run.base_model_id) if run.base_model_id is not None else None
    if base is None:
        raise ModelError(
            f"The model run {run.id} ({run.name}) trained from is no longer registered, so its adapter cannot "
            "judge answers. Add that model again in the Models view."
        )
    return base


def _scoring_device(config: TrainConfig) -> str:
    """The device the run's settings name, or the best one here when that one is missing (a run trained on
    a GPU still judges answers on a computer without one)."""
    from desktop_dpo.core.dpo.modeling import resolve_device

    try:
        return resolve_device(config)
    except TrainingError:
        return resolve_device(config.replace(device="auto"))


def _training_template(adapter_dir: Path, base: ModelRow, tokenizer: Any) -> str | None:
    """The template the adapter was trained with (recorded next to it), else the one training would pick
    now (the person's choice, else the tokenizer's own): answers are rendered as in training."""
    from desktop_dpo.core.dpo.checkpoint import trained_template
    from desktop_dpo.core.dpo.tokenizing import resolve_chat_template
    from desktop_dpo.core.llm.template_choice import template_for

    return trained_template(adapter_dir) or template_for(base, own=resolve_chat_template(tokenizer))


def _load_policy(folder: Path, adapter_dir: Path, quantization: str, device: str) -> Any:
    """The base as training loads it (``modeling.load_causal_lm``; NF4's k-bit preparation too, which keeps
    norms in fp32) with the run's adapter on, frozen, in eval mode."""
    from peft import PeftModel, prepare_model_for_kbit_training

    from desktop_dpo.core.dpo.modeling import load_causal_lm

    model = load_causal_lm(folder, quantization, device)
    if quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    try:
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise TrainingError(
            f"The adapter in {adapter_dir} does not fit the model in {folder} ({exc}). Was the model's folder "
            "replaced by another model? Put the original back, or train a new run."
        ) from exc
    model.eval()
    return model
