"""Making and resuming training runs: which pairs a new run takes, how they will split, what it is called.

The CLI (``desktop-dpo train``) and the Train view both start runs through these functions, so a run
made either way holds the same snapshot of pairs for the same model and settings, and the same kind of name
(:func:`run_name`). No torch here: the GUI calls these on its own thread to show counts before anything
heavy is imported.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from desktop_dpo.core.dpo.config import TrainConfig, TrainingError, parse_reference
from desktop_dpo.core.dpo.data import pairs_from_comparisons, split_by_prompt
from desktop_dpo.core.dpo.labels import (
    count_labels,
    labels_from_comparisons,
    labels_from_replies,
    single_labels_text,
)
from desktop_dpo.core.dpo.pair_counts import PairCounts, pair_counts
from desktop_dpo.core.model_files import find_training_folder
from desktop_dpo.core.store import ModelRow, RunRow, Store
from desktop_dpo.core.wording import plural

# Fewer pairs than this teach a model next to nothing and make the held-out numbers meaningless; the
# Train view says so instead of starting (the CLI, for scripts and experiments, allows any number).
MIN_TRAIN_PAIRS = 8

# A closing note of a model file's quantization in its name: "(Q4_K_M)", "(demo, Q4_K_M)", "(F16)".
_QUANTIZATION_NOTE = re.compile(r"\s*\((?:[^()]*,\s*)?(?:I?Q\d\w*|B?F16|F32)\)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class RunPlan:
    """What a new run of a model would train on, before it is made."""

    comparison_ids: list[int]  # the snapshot a run made now would fix
    pairs: int  # preference pairs from those comparisons (an edit can give more than one)
    prompts: int  # distinct prompts behind the pairs
    heldout_prompts: int  # prompts the split keeps out of training
    heldout_pairs: int  # pairs of those prompts
    train_pairs: int  # pairs left to train on
    counts: PairCounts  # usable comparisons and training pairs, as every screen counts them (pair_counts.py)
    single_labels: str = ""  # a KTO run: what single labels add, in a sentence (labels.single_labels_text)
    reply_label_ids: tuple[int, ...] = ()  # a KTO run: the rated chat replies of the model it would take


def trainable_reason(model: ModelRow) -> str | None:
    """None when ``model`` can be trained as it is registered, else a sentence saying what to do.

    A Hugging Face model can; a GGUF when training has a folder to load for it (its merged folder or a
    finished trainable copy: :func:`~desktop_dpo.core.model_files.find_training_folder`).
    """
    if model.kind == "hf" or find_training_folder(model) is not None:
        return None
    return (
        f"{model.name} is a GGUF file without a trainable copy yet. Make one in the Models view "
        "(it is done once), then train here."
    )


def model_pair_ids(store: Store, model_id: int, loss_type: str = "sigmoid") -> list[int]:
    """Comparisons that give usable pairs for ``model_id``: sampled from it, or imported (model unknown). For a
    ``"kto"`` run, those that give single labels too (a "both bad" pick: ``labels.py``).

    A pair sampled from another model says what that model wrote, not this one; imported pairs name no
    model, so they count for every model.
    """
    views = [
        view
        for view in store.comparison_views()
        if view.model_a_id in (model_id, None) and view.model_b_id in (model_id, None)
    ]
    labelled = {x.comparison_id for x in labels_from_comparisons(views)} if loss_type == "kto" else set()
    return sorted({x.comparison_id for x in pairs_from_comparisons(views)} | labelled)


def model_reply_label_ids(store: Store, model_id: int, loss_type: str = "sigmoid") -> list[int]:
    """Chat replies ``model_id`` wrote that the person rated with a thumb: what a ``"kto"`` run of it also
    learns from (none for the other losses, which learn from pairs). A reply of another model says what
    that model wrote, not this one."""
    if loss_type != "kto":
        return []
    labels = labels_from_replies(store.reply_labels(model_id=model_id))
    return [x.reply_label_id for x in labels if x.reply_label_id is not None]


def plan_run(store: Store, model_id: int, config: TrainConfig) -> RunPlan:
    """How a run of ``model_id`` with ``config`` would split its pairs (prompts keep a split once fixed)."""
    ids = model_pair_ids(store, model_id, config.loss_type)
    pairs = pairs_from_comparisons(store.comparison_views(ids=ids)) if ids else []
    prompt_ids = sorted({pair.prompt_id for pair in pairs})
    existing = {pid: row.split for pid in prompt_ids if (row := store.get_prompt(pid)) and row.split}
    splits = split_by_prompt(prompt_ids, config.heldout_fraction, config.seed, existing)
    heldout = {pid for pid, split in splits.items() if split == "heldout"}
    heldout_pairs = sum(1 for pair in pairs if pair.prompt_id in heldout)
    single_labels = ""
    reply_ids = model_reply_label_ids(store, model_id, config.loss_type)
    if config.loss_type == "kto" and (ids or reply_ids):  # the same labels the run will train on
        labels = labels_from_comparisons(store.comparison_views(ids=ids)) if ids else []
        labels += labels_from_replies(store.reply_labels(ids=reply_ids))
        single_labels = single_labels_text(count_labels(labels))
    return RunPlan(
        comparison_ids=ids,
        pairs=len(pairs),
        prompts=len(prompt_ids),
        heldout_prompts=len(heldout),
        heldout_pairs=heldout_pairs,
        train_pairs=len(pairs) - heldout_pairs,
        counts=pair_counts(pairs),
        single_labels=single_labels,
        reply_label_ids=tuple(reply_ids),
    )


def create_run_for_model(
    store: Store,
    model: ModelRow,
    config: TrainConfig,
    *,
    name: str | None = None,
    reference: str = "adapter_off",
    comparison_ids: Sequence[int] | None = None,
    reply_label_ids: Sequence[int] | None = None,
) -> int:
    """Make a run of ``model`` over its usable pairs as they are now (the snapshot is fixed). Returns its id.

    A KTO run's snapshot also fixes the chat replies of ``model`` rated so far (``reply_label_ids``, by
    default :func:`model_reply_label_ids`).

    Raises:
        TrainingError: the model has no usable pairs yet.
    """
    reference_id = parse_reference(reference)  # TrainingError: neither adapter_off nor model:<id>
    if reference_id is not None and store.get_model(reference_id) is None:
        raise TrainingError(
            f"The reference model:{reference_id} is not a registered model; give the id of one in the Models "
            "view (`desktop-dpo info` counts them), or adapter_off."
        )
    if comparison_ids is None:
        comparison_ids = model_pair_ids(store, model.id, config.loss_type)
    ids = list(comparison_ids)
    if reply_label_ids is None:
        reply_label_ids = model_reply_label_ids(store, model.id, config.loss_type)
    if not ids and not reply_label_ids:
        raise TrainingError(f"{model.name} has no usable pairs yet: pick A or B in some comparisons first.")
    with store.atomic():
        run_id = store.create_run(
            name=name or "",
            base_model_id=model.id,
            config=config.validated().to_dict(),
            comparison_ids=ids,
            reference=reference,
            reply_label_ids=reply_label_ids,
        )
        if not name:  # the number is the run's id, known once it is stored
            store.update_run(
                run_id, name=run_name(run_id, model.name, len(ids), time.time(), len(reply_label_ids))
            )
    return run_id


def without_quantization_note(name: str) -> str:
    """A model's name without a closing note of its file's quantization: ``Gemma 3 270M (demo, Q4_K_M)`` →
    ``Gemma 3 270M``; other names as they are. Runs and aligned models are named without it: it tells of the
    base's file, not of theirs."""
    return _QUANTIZATION_NOTE.sub("", name).strip() or name


def run_name(run_id: int, model_name: str, pairs: int, created: float, rated_replies: int = 0) -> str:
    """The name a run is given when the person gives none, the same from the GUI, the CLI and the demo:
    its number, model, what it learns from and local start time (``Run 3 · Gemma 3 270M · 12 pairs · 5 Dec
    14:02``). A KTO run that also learns from rated chat replies counts them (``12 pairs + 5 rated replies``;
    ``20 rated replies`` alone). The number is the one its exported model and folder carry ("run 3")."""
    when = datetime.fromtimestamp(created)
    model = without_quantization_note(model_name)
    parts = [plural(pairs, "pair")] if pairs or not rated_replies else []
    if rated_replies:
        parts.append(plural(rated_replies, "rated reply", "rated replies"))
    return f"Run {run_id} · {model} · {' + '.join(parts)} · {when.day} {when:%b %H:%M}"


def run_label(run_id: int, name: str) -> str:
    """A run named with its number in front, once: ``Run 3 · round one``; a name made by :func:`run_name`
    (which starts so) as it is."""
    prefix = f"Run {run_id}"
    return name if name == prefix or name.startswith(f"{prefix} ") else f"{prefix} · {name}"


def resume_settings(store: Store, run_id: int, changes: dict[str, Any] | None = None) -> RunRow:
    """Prepare ``run_id`` to be resumed, with some settings changed (stored in the run). Returns the run.

    Raises:
        TrainingError: there is no such run, or the changed settings cannot work.
    """
    run = store.get_run(run_id)
    if run is None:
        raise TrainingError(f"There is no training run {run_id}.")
    if changes:
        config = TrainConfig.from_dict(run.config).replace(**changes)
        store.update_run(run.id, config=config.to_dict())
        run = store.get_run(run_id)
        assert run is not None
    return run
