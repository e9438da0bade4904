"""Outgrowing one machine: the same pairs and settings as a TRL + accelerate job, and its result brought back.

:func:`export_trl` writes a folder that trains elsewhere (a GPU box, a cluster node) exactly what a run
here would train::

    train.jsonl, heldout.jsonl   the usable pairs as TRL conversational preference JSONL, split by prompt
                                 as our runs split them (a held-out prompt never reaches train.jsonl)
    train_dpo.py                 TRL DPOTrainer + peft LoRA with this run's settings; runs with plain
                                 ``python`` (one process) or under ``accelerate launch`` (several GPUs)
    accelerate_config.yaml       multi-GPU DDP on one machine, bf16
    README.md                    the exact commands, and the way back
    desktop_dpo_export.json      what was exported (pairs, settings, base model), read again on import

The script saves a peft LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``).
:func:`import_adapter` registers such an adapter as a completed run of a registered base model (after
checking, from safetensors headers only, that it fits that base: :func:`~desktop_dpo.core.export.merge.plan_merge`),
so export, chat and evaluation treat it like a run trained here. :func:`import_model` registers a merged
Hugging Face model trained elsewhere.

No torch, TRL or accelerate is imported here: the generated script imports them where it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from desktop_dpo import __version__
from desktop_dpo.config import AppPaths
from desktop_dpo.core.dpo.config import TrainConfig, TrainingError
from desktop_dpo.core.dpo.data import pairs_from_comparisons, split_by_prompt
from desktop_dpo.core.dpo.runs import model_pair_ids
from desktop_dpo.core.errors import DesktopDpoError, ExportError
from desktop_dpo.core.export.merge import plan_merge, read_adapter_config
from desktop_dpo.core.export_target import check_export_target
from desktop_dpo.core.llm.template_choice import template_for
from desktop_dpo.core.llm.templates import DEFAULT_TEMPLATE
from desktop_dpo.core.model_files import partial_path, training_folder
from desktop_dpo.core.models import register_model
from desktop_dpo.core.preference_io import export_preferences, write_text_atomically
from desktop_dpo.core.store import ModelRow, RunRow, Store
from desktop_dpo.core.tensor_file import DamagedTensorFileError, check_tensor_file

TRAIN_FILE = "train.jsonl"
HELDOUT_FILE = "heldout.jsonl"
SCRIPT_FILE = "train_dpo.py"
ACCELERATE_FILE = "accelerate_config.yaml"
README_FILE = "README.md"
MANIFEST_FILE = "desktop_dpo_export.json"
DPO_TRAINER_LOSSES = ("sigmoid", "ipo", "hinge")  # the losses the exported DPOTrainer script can train
TEMPLATE_FILE = "chat_template.jinja"  # the template the script trains with (the model's in desktop-dpo)
# Written by train_dpo.py next to the adapter: the settings it trained with and the pairs (from the manifest).
TRAINING_FILE = "desktop_dpo_training.json"
# Files of an adapter folder that are copied into the app's runs folder on import (small; nothing pickled).
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", TRAINING_FILE, "README.md")
# TrainConfig fields the script uses; the others (device, quantization, checkpoints ...) are about this machine.
SCRIPT_SETTINGS = (
    "beta",
    "loss_type",
    "label_smoothing",
    "sft_weight",
    "lr",
    "epochs",
    "batch_size",
    "grad_accum",
    "warmup_ratio",
    "scheduler",
    "max_grad_norm",
    "weight_decay",
    "max_length",
    "max_prompt_length",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "gradient_checkpointing",
    "eval_every",
    "seed",
)


class ClusterError(DesktopDpoError):
    """An export for training elsewhere, or an import of what was trained there, cannot be done."""


@dataclass(frozen=True)
class TrlExport:
    """What :func:`export_trl` wrote."""

    folder: str
    train_pairs: int  # lines of train.jsonl
    heldout_pairs: int  # lines of heldout.jsonl (0: no file)
    train_prompts: int
    heldout_prompts: int
    comparison_ids: tuple[int, ...]  # the snapshot of comparisons the pairs came from
    files: tuple[str, ...]  # every file written


# --------------------------------------------------------------------------------------------------
# Export: pairs, script, accelerate config, README
# --------------------------------------------------------------------------------------------------


def export_trl(
    store: Store,
    folder: str | Path,
    *,
    model: ModelRow | None = None,
    config: TrainConfig | None = None,
    comparison_ids: list[int] | None = None,
    paths: AppPaths | None = None,
) -> TrlExport:
    """Write the usable pairs, a TRL training script and its accelerate config to ``folder``.

    Args:
        store: the calling thread's store.
        folder: created if needed; files of an earlier export there are replaced (atomically, each).
        model: the base model: only pairs sampled from it (and imported ones) are taken, as a run of it
            here would; None takes every usable pair.
        config: the settings to train with (default: :class:`TrainConfig`'s defaults).
        comparison_ids: exactly these comparisons (a run's snapshot) instead of the model's pairs.
        paths: the app's folders, whose files an export never replaces (default :meth:`AppPaths.default`).

    The prompt split is the one our runs use (:func:`split_by_prompt`, same seed and fraction; a prompt
    keeps a split once made) and it is recorded (``Store.set_prompt_splits``), so a held-out prompt stays
    held out of every later run here too.

    Raises:
        ClusterError: there are no usable pairs, or the folder cannot be written.
        ProtectedFileError: a file of the export would replace the database, an SQLite file or a file the
            app keeps in its folders; nothing was written and no split was recorded.
    """
    config = (config or TrainConfig()).validated()
    if config.loss_type not in DPO_TRAINER_LOSSES:
        raise ClusterError(
            f"The cluster export writes a script for TRL's DPOTrainer, which has no {config.loss_type.upper()} "
            "loss: choose DPO, IPO or hinge for a run to train elsewhere."
        )
    folder = Path(folder).expanduser().absolute()
    # Every file first, before the splits are recorded or an old held-out file is removed: a refused
    # export changes nothing.
    for name in (TRAIN_FILE, HELDOUT_FILE, SCRIPT_FILE, ACCELERATE_FILE, README_FILE, MANIFEST_FILE):
        check_export_target(folder / name, database=store.path, paths=paths)
    if comparison_ids is None:
        comparison_ids = model_pair_ids(store, model.id) if model is not None else None
    views = store.comparison_views(ids=comparison_ids)
    pairs = pairs_from_comparisons(views)
    if not pairs:
        raise ClusterError(
            "There are no usable pairs to export: pick A or B (or edit an answer) on some first."
        )
    prompt_ids = sorted({pair.prompt_id for pair in pairs})
    existing = {pid: row.split for pid in prompt_ids if (row := store.get_prompt(pid)) and row.split}
    splits = split_by_prompt(prompt_ids, config.heldout_fraction, config.seed, existing)
    store.set_prompt_splits({pid: split for pid, split in splits.items() if pid not in existing})
    by_split: dict[str, list[int]] = {"train": [], "heldout": []}
    for comparison_id, prompt_id in sorted({(p.comparison_id, p.prompt_id) for p in pairs}):
        by_split[splits[prompt_id]].append(comparison_id)

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClusterError(
            f"Cannot create {folder}: {exc.strerror or exc}. Choose a folder you can write to."
        ) from exc
    written: list[str] = []
    counts = {}
    for split, file_name in (("train", TRAIN_FILE), ("heldout", HELDOUT_FILE)):
        target = folder / file_name
        if not by_split[split]:
            target.unlink(missing_ok=True)  # an earlier export's held-out file would be read as this one's
            counts[split] = 0
            continue
        # The app's own TRL writer (conversational: multi-turn prompts and system prompts are kept).
        result = export_preferences(
            store, target, file_format="conversational", comparison_ids=by_split[split], paths=paths
        )
        counts[split] = result.written
        written.append(str(target))
    if not counts["train"]:
        raise ClusterError("Every usable pair is held out; collect pairs on more prompts first.")

    settings = {name: getattr(config, name) for name in SCRIPT_SETTINGS}
    all_ids = sorted(by_split["train"] + by_split["heldout"])
    manifest = {
        "desktop_dpo_version": __version__,
        "created_at": time.time(),
        "base_model": _model_summary(model),
        "settings": settings,
        "config": config.to_dict(),
        "comparison_ids": all_ids,
        "train_pairs": counts["train"],
        "heldout_pairs": counts["heldout"],
        "heldout_prompt_ids": sorted(pid for pid, split in splits.items() if split == "heldout"),
    }
    texts = {
        SCRIPT_FILE: training_script(settings),
        ACCELERATE_FILE: accelerate_config(),
        README_FILE: readme_text(model, counts["train"], counts["heldout"], config),
        MANIFEST_FILE: json.dumps(manifest, indent=2, sort_keys=True) + "\n",
    }
    if (
        model is not None
    ):  # the template the pairs were sampled with (the person's choice, else the model's own)
        texts[TEMPLATE_FILE] = template_for(model) or DEFAULT_TEMPLATE
    try:
        for name, text in texts.items():
            write_text_atomically(folder / name, text)
            written.append(str(folder / name))
    except OSError as exc:
        raise ClusterError(f"Cannot write to {folder}: {exc.strerror or exc}.") from exc
    return TrlExport(
        folder=str(folder),
        train_pairs=counts["train"],
        heldout_pairs=counts["heldout"],
        train_prompts=sum(1 for split in splits.values() if split == "train"),
        heldout_prompts=sum(1 for split in splits.values() if split == "heldout"),
        comparison_ids=tuple(all_ids),
        files=tuple(written),
    )


def _model_summary(model: ModelRow | None) -> dict[str, Any] | None:
    if model is None:
        return None
    return {
        "id": model.id,
        "name": model.name,
        "fingerprint": model.fingerprint,
        "path": _base_folder_hint(model),
    }


def _base_folder_hint(model: ModelRow) -> str:
    """The Hugging Face folder the cluster needs (a GGUF model trains from its trainable copy)."""
    try:
        return str(training_folder(model))
    except DesktopDpoError:
        return model.path


def training_script(settings: dict[str, Any]) -> str:
    """The text of ``train_dpo.py`` with ``settings`` (TrainConfig field -> value) as its defaults."""
    lines = "".join(f"    {name!r}: {value!r},\n" for name, value in settings.items())
    return _SCRIPT.replace("__SETTINGS__", "{\n" + lines + "}").replace("__VERSION__", __version__)


def accelerate_config(num_processes: int = 8) -> str:
    """An ``accelerate`` config: one machine, ``num_processes`` GPUs in DDP, bf16 mixed precision."""
    return (
        "# accelerate launch --config_file accelerate_config.yaml train_dpo.py --model_name_or_path BASE\n"
        "# One machine, one process per GPU (DistributedDataParallel), bf16. Set num_processes to the\n"
        "# number of GPUs (or pass --num_processes N to accelerate launch).\n"
        "compute_environment: LOCAL_MACHINE\n"
        "distributed_type: MULTI_GPU\n"
        "downcast_bf16: 'no'\n"
        "gpu_ids: all\n"
        "machine_rank: 0\n"
        "main_training_function: main\n"
        "mixed_precision: bf16\n"
        "num_machines: 1\n"
        f"num_processes: {num_processes}\n"
        "rdzv_backend: static\n"
        "same_network: true\n"
        "tpu_env: []\n"
        "tpu_use_cluster: false\n"
        "tpu_use_sudo: false\n"
        "use_cpu: false\n"
    )


def readme_text(model: ModelRow | None, train_pairs: int, heldout_pairs: int, config: TrainConfig) -> str:
    """The README of an export folder: what is in it and the exact commands, there and back."""
    base = _base_folder_hint(model) if model is not None else "/path/to/base-model"
    base_name = model.name if model is not None else "the base model"
    base_id = str(model.id) if model is not None else "MODEL_ID"
    return f"""# DPO training data from desktop-dpo

- `{TRAIN_FILE}`: {train_pairs} preference pairs to train on; `{HELDOUT_FILE}`: {heldout_pairs} held out to
  measure generalisation. Split by prompt as desktop-dpo splits them; TRL's conversational format.
- `{SCRIPT_FILE}`: TRL's `DPOTrainer` with a peft LoRA adapter and the settings desktop-dpo would use.
  Each can be changed on the command line (`python {SCRIPT_FILE} --help`):
  - β {config.beta}, {config.loss_type} loss, label smoothing {config.label_smoothing}, SFT weight {config.sft_weight}
  - learning rate {config.lr}, {config.scheduler} schedule after a warm-up over {config.warmup_ratio:.0%} of the steps, {config.epochs} epoch(s)
  - {config.batch_size} pair(s) per batch × {config.grad_accum} accumulation = {config.pairs_per_step} pairs per step
  - LoRA r {config.lora_r}, alpha {config.lora_alpha}, dropout {config.lora_dropout}, targets {config.target_modules}
  - max length {config.max_length} tokens (newer TRL versions have no separate prompt limit; older ones
    also get max prompt length {config.max_prompt_length})
- `{ACCELERATE_FILE}`: several GPUs on one machine (DDP), bf16.

The base model is {base_name}. On this computer its Hugging Face folder is:

    {base}

Copy that folder and this one to the machine that trains, and give the base folder's path there.

## Set up (once, on the training machine)

    python -m venv .venv && . .venv/bin/activate
    pip install "trl>=1.16" "peft>=0.21" "transformers>=5" accelerate datasets torch

## Train

One GPU (or the CPU), one process:

    python {SCRIPT_FILE} --model_name_or_path {base}

Several GPUs on one machine (DDP, bf16; set `num_processes` in `{ACCELERATE_FILE}` to the number of GPUs):

    accelerate launch --config_file {ACCELERATE_FILE} {SCRIPT_FILE} --model_name_or_path {base}

The script keeps desktop-dpo's {config.pairs_per_step} pairs per optimizer step: with N processes it divides the
gradient accumulation by N. The adapter is written to `adapter/` (`--output_dir` to change):
`adapter_config.json` and `adapter_model.safetensors`.

## Bring the result back

Copy `adapter/` back to the desktop-dpo computer, then:

    desktop-dpo import-adapter adapter --base {base_id}

It becomes a finished run of {base_name}: export it to GGUF, chat with it and evaluate it as any other run.
A model merged elsewhere (a full Hugging Face folder) is added with `desktop-dpo import-model FOLDER`.
"""


# The generated script. Kept free of desktop-dpo imports: it runs where desktop-dpo is not installed.
_SCRIPT = '''#!/usr/bin/env python
"""Train a LoRA-DPO adapter on preference pairs exported by desktop-dpo (__VERSION__), with TRL and peft.

    python train_dpo.py --model_name_or_path BASE_MODEL_FOLDER          # one process: a GPU or the CPU
    accelerate launch --config_file accelerate_config.yaml train_dpo.py --model_name_or_path BASE_MODEL_FOLDER

The defaults below are the settings desktop-dpo would train with; each has a command-line option of the same
name. The result is a peft LoRA adapter (adapter_config.json + adapter_model.safetensors) in --output_dir;
bring it back with `desktop-dpo import-adapter OUTPUT_DIR --base MODEL_ID`.
"""

import argparse
import dataclasses
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = __SETTINGS__


def read_pairs(path):
    """The pairs of a TRL preference JSONL file (a list of dicts; empty when the file is missing)."""
    if not Path(path).is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True, help="the base model (Hugging Face folder or id)")
    parser.add_argument("--train_file", default=str(HERE / "train.jsonl"))
    parser.add_argument("--eval_file", default=str(HERE / "heldout.jsonl"))
    parser.add_argument("--output_dir", default=str(HERE / "adapter"))
    parser.add_argument(
        "--chat_template_file",
        default=str(HERE / "chat_template.jinja"),
        help="the chat template desktop-dpo sampled and trains with (none: the tokenizer's own)",
    )
    parser.add_argument("--max_steps", type=int, default=-1, help="stop after this many steps (-1: all epochs)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is there")
    for name, value in SETTINGS.items():
        if isinstance(value, bool):
            parser.add_argument(f"--{name}", type=lambda text: text.lower() in ("1", "true", "yes"), default=value)
        else:
            parser.add_argument(f"--{name}", type=type(value), default=value)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    settings = {name: getattr(args, name) for name in SETTINGS}
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    # desktop-dpo's pairs per optimizer step = batch x accumulation; with N processes each does 1/N of them.
    grad_accum = max(1, round(args.grad_accum / processes))
    use_cuda = torch.cuda.is_available() and not args.cpu
    bf16 = use_cuda and torch.cuda.is_bf16_supported()

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    if Path(args.chat_template_file).is_file():
        # The template the pairs were sampled with in desktop-dpo (the one chosen for the model there).
        tokenizer.chat_template = Path(args.chat_template_file).read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        args.model_name_or_path, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    targets = args.target_modules
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
        bias="none",
        task_type="CAUSAL_LM",
    )
    train_rows, eval_rows = read_pairs(args.train_file), read_pairs(args.eval_file)
    if not train_rows:
        raise SystemExit(f"No training pairs in {args.train_file}.")

    fields = {field.name: field for field in dataclasses.fields(DPOConfig)}
    loss_is_list = fields.get("loss_type") is not None and fields["loss_type"].default_factory is not dataclasses.MISSING
    options = {
        "output_dir": args.output_dir,
        "beta": args.beta,
        "loss_type": [args.loss_type] if loss_is_list else args.loss_type,
        # desktop-dpo's SFT term on the chosen answers (RPO) is TRL's "sft" loss added with its weight.
        **({"loss_type": [args.loss_type, "sft"], "loss_weights": [1.0, args.sft_weight]} if args.sft_weight else {}),
        "label_smoothing": args.label_smoothing,
        "learning_rate": args.lr,
        "num_train_epochs": args.epochs,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": args.batch_size,
        "gradient_accumulation_steps": grad_accum,
        "lr_scheduler_type": args.scheduler,
        "max_grad_norm": args.max_grad_norm,
        "weight_decay": args.weight_decay,
        "max_length": args.max_length,
        "max_prompt_length": args.max_prompt_length,
        "seed": args.seed,
        "bf16": bf16,
        "use_cpu": not use_cuda,
        "gradient_checkpointing": args.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "eval_strategy": "steps" if eval_rows else "no",
        "eval_steps": args.eval_every,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
    }
    # Older transformers take the warm-up as a ratio of its own; newer ones read a float < 1 as a ratio.
    options["warmup_ratio" if "warmup_ratio" in fields else "warmup_steps"] = args.warmup_ratio
    unknown = sorted(name for name in options if name not in fields)
    if unknown:
        print(f"This TRL version has no setting {', '.join(unknown)}: trained without it.")
    config = DPOConfig(**{name: value for name, value in options.items() if name in fields})
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora,
    )
    trainer.train()
    trainer.save_model(args.output_dir)  # the peft adapter, as safetensors, from the main process only
    if trainer.is_world_process_zero():
        manifest = HERE / "desktop_dpo_export.json"
        exported = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
        note = {
            "settings": settings,
            "base_model": args.model_name_or_path,
            "exported_base_model": exported.get("base_model"),
            "exported_config": exported.get("config", {}),
            "comparison_ids": exported.get("comparison_ids", []),
            "global_step": trainer.state.global_step,
            "processes": processes,
            "metrics": {k: v for k, v in (trainer.state.log_history or [{}])[-1].items() if isinstance(v, (int, float))},
        }
        Path(args.output_dir, "desktop_dpo_training.json").write_text(json.dumps(note, indent=2), encoding="utf-8")
        print(f"Adapter written to {args.output_dir}")


if __name__ == "__main__":
    main()
'''


# --------------------------------------------------------------------------------------------------
# Import: an adapter as a finished run, a merged model as a model
# --------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def adapter_settings(adapter_config: dict[str, Any], training: dict[str, Any]) -> TrainConfig:
    """The run settings of an adapter trained elsewhere: its LoRA shape from ``adapter_config.json``, the
    rest from the note ``train_dpo.py`` wrote (defaults for what neither says)."""
    names = {f.name for f in fields(TrainConfig)}
    # The run's full settings as exported, then what the script trained with (its command line could
    # change them), then the adapter's own shape, which is what the weights are.
    values: dict[str, Any] = {}
    for key in ("exported_config", "settings"):
        noted = training.get(key)
        if isinstance(noted, dict):
            values.update({k: v for k, v in noted.items() if k in names})
    lora: dict[str, Any] = {
        "lora_r": int(adapter_config.get("r", TrainConfig.lora_r)),
        "lora_alpha": int(adapter_config.get("lora_alpha", TrainConfig.lora_alpha)),
        "lora_dropout": float(adapter_config.get("lora_dropout", TrainConfig.lora_dropout)),
        "quantization": "none",  # trained against the full-precision base (bf16 or fp32)
    }
    targets = adapter_config.get("target_modules")
    if "target_modules" not in values and targets:
        # peft lists the layers it adapted; their last names select the same layers again.
        names_list = targets if isinstance(targets, list) else [str(targets)]
        lora["target_modules"] = ",".join(sorted({str(t).rsplit(".", 1)[-1] for t in names_list}))
    try:
        return TrainConfig(**{**values, **lora}).validated()
    except (TypeError, TrainingError):
        return TrainConfig(**lora).validated()  # the note holds settings this version does not know


def import_adapter(
    store: Store, paths: AppPaths, adapter_dir: str | Path, base_model_id: int, *, name: str | None = None
) -> RunRow:
    """Register a LoRA adapter trained elsewhere as a completed run of model ``base_model_id``.

    The adapter is checked against the base from safetensors headers (every weight it updates must exist
    in the base with the shape it expects), then copied into the app's runs folder (a few MB: the run no
    longer depends on the folder it came from) and recorded as a run with status "completed",
    ``adapter_path`` set and the settings read from ``adapter_config.json`` (and from the note
    ``train_dpo.py`` writes, with the pairs it trained on). Returns the run.

    Raises:
        ClusterError: no such model, not an adapter folder, or an adapter that does not fit this base.
    """
    adapter_dir = Path(adapter_dir).expanduser().absolute()
    base = store.get_model(base_model_id)
    if base is None:
        raise ClusterError(
            f"There is no model {base_model_id}. `desktop-dpo info` counts the models; the Models view lists them."
        )
    if not adapter_dir.is_dir():
        raise ClusterError(f"{adapter_dir} is not a folder. Give the adapter folder train_dpo.py wrote.")
    try:
        adapter_config = read_adapter_config(adapter_dir)
    except ExportError as exc:
        raise ClusterError(str(exc)) from exc
    # The headers can be whole while the data behind them is cut short: read every tensor before the run
    # is recorded as finished, so a broken copy is refused here and not by the export later.
    try:
        check_tensor_file(adapter_dir / "adapter_model.safetensors", f"The adapter in {adapter_dir}")
    except DamagedTensorFileError as exc:
        raise ClusterError(f"{exc} Nothing was imported.") from exc

    base_dir = training_folder(base)  # ModelError: a GGUF without a trainable copy (says what to do)
    try:
        plan_merge(base_dir, adapter_dir)
    except ExportError as exc:
        raise ClusterError(
            f"This adapter does not fit {base.name}: {exc} Import it with the model it was trained from (--base)."
        ) from exc

    training = _read_json(adapter_dir / TRAINING_FILE)
    config = adapter_settings(adapter_config, training)
    noted_ids = [int(i) for i in training.get("comparison_ids", []) if isinstance(i, int)]
    known = {view.comparison.id for view in store.comparison_views(ids=noted_ids)} if noted_ids else set()
    comparison_ids = [i for i in noted_ids if i in known]
    step = int(training.get("global_step", 0) or 0)

    paths.runs_dir.mkdir(parents=True, exist_ok=True)
    work = partial_path(paths.runs_dir / "run-import")  # a crash leaves a leftover the clean-up knows
    try:
        work.mkdir()
        for file_name in _ADAPTER_FILES:
            if (adapter_dir / file_name).is_file():
                shutil.copy2(adapter_dir / file_name, work / file_name)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise ClusterError(f"Cannot copy the adapter into {paths.runs_dir}: {exc.strerror or exc}.") from exc

    run_id = store.create_run(
        name=name or f"Imported: {adapter_dir.name} ({base.name})",
        base_model_id=base.id,
        config=config.to_dict(),
        comparison_ids=comparison_ids,
    )
    run_dir = paths.runs_dir / f"run-{run_id:04d}"
    target = run_dir / "adapter"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        os.replace(work, target)
        note = {
            "run_id": run_id,
            "base_model_id": base.id,
            "base_model_fingerprint": base.fingerprint,
            "quantization": "none",
            "config": config.to_dict(),
            "imported_from": str(adapter_dir),
        }
        write_text_atomically(target / "desktop_dpo_run.json", json.dumps(note, indent=2, sort_keys=True))
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        store.update_run(
            run_id, status="failed", error=f"The imported adapter could not be put in place: {exc}"
        )
        raise ClusterError(f"Cannot put the adapter in {run_dir}: {exc.strerror or exc}.") from exc
    now = time.time()
    store.update_run(
        run_id,
        status="completed",
        adapter_path=str(target),
        checkpoint_dir=str(run_dir),
        step=step,
        total_steps=step or None,
        started_at=now,
        finished_at=now,
    )
    run = store.get_run(run_id)
    assert run is not None  # just written in this thread
    return run


def import_model(
    store: Store, folder: str | Path, *, name: str | None = None, base_model_id: int | None = None
) -> ModelRow:
    """Register a model trained (and merged) elsewhere, with source "imported". Returns its row.

    The folder stays where it is (models are large); ``base_model_id`` records what it was made from.

    Raises:
        ModelError: not a model desktop-dpo can use (the message says why).
        ClusterError: ``base_model_id`` names no model.
    """
    if base_model_id is not None and store.get_model(base_model_id) is None:
        raise ClusterError(f"There is no model {base_model_id} to record as the base.")
    return register_model(
        store,
        Path(folder).expanduser().absolute(),
        source="imported",
        name=name,
        parent_model_id=base_model_id,
    )
