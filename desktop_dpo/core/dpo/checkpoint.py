"""A run's files: its folder, checkpoints (exact resume), and the adapter it ends with.

Layout of a run folder (:func:`run_folder`)::

    checkpoints/latest            name of the newest complete checkpoint (switched last, atomically)
    checkpoints/step-0000050/     adapter + trainer_state.pt (AdamW, schedule, RNG, data position, watch)
    adapter/                      the final adapter, desktop_dpo_run.json (its origin), chat_template.jinja

Checkpoints, the ``latest`` pointer and the adapter folder are written through ``model_files.atomic_output``:
a crash at any moment leaves the previous checkpoint usable and never a half-written adapter. torch, peft and
safetensors are imported inside functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.dpo.config import TrainConfig, TrainingError
from desktop_dpo.core.model_files import atomic_output
from desktop_dpo.core.tensor_file import check_tensor_file

if TYPE_CHECKING:
    from desktop_dpo.core.store import ModelRow, RunRow

log = logging.getLogger(__name__)


CHECKPOINT_FORMAT = 1
STATE_FILE = "trainer_state.pt"
LATEST_FILE = "latest"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Settings a checkpoint cannot be resumed under: they change the adapter's shape or meaning.
ADAPTER_FIELDS = ("lora_r", "lora_alpha", "target_modules")


def run_folder(run: RunRow, runs_dir: Path | None) -> Path:
    """The folder of run ``run`` (its checkpoints, adapter and training lock)."""
    if run.checkpoint_dir:
        return Path(run.checkpoint_dir)
    if runs_dir is None:
        from desktop_dpo.config import AppPaths

        runs_dir = AppPaths.default().runs_dir
    return runs_dir / f"run-{run.id:04d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    pointer = run_dir / "checkpoints" / LATEST_FILE
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text(encoding="utf-8").strip()
    return path if (path / STATE_FILE).is_file() and (path / ADAPTER_WEIGHTS).is_file() else None


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# The chat template a run trained with, saved with its adapter: the export writes it into the merged model
# and the GGUF header, whatever template the base model is given later.
TRAINED_TEMPLATE_FILE = "chat_template.jinja"


def write_trained_template(adapter_dir: Path, chat_template: str | None) -> None:
    """Save the template the adapter was trained with (the plain layout's own text when it had none)."""
    from desktop_dpo.core.llm.templates import DEFAULT_TEMPLATE

    (adapter_dir / TRAINED_TEMPLATE_FILE).write_text(chat_template or DEFAULT_TEMPLATE, encoding="utf-8")


def trained_template(adapter_dir: Path) -> str | None:
    """The template an adapter was trained with, or None for an adapter saved before it was recorded."""
    try:
        text = (adapter_dir / TRAINED_TEMPLATE_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.strip() else None


def rng_state() -> dict[str, Any]:
    """torch's random state (and CUDA's, once initialised): a checkpoint replays its step exactly."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back a state :func:`rng_state` returned."""
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> Path:
    """Adapter + optimizer + scheduler + RNG + data position, written to a temporary folder and renamed.

    The ``latest`` pointer is switched only after the folder is complete and flushed, so a crash at
    any moment leaves the previous checkpoint usable. Older checkpoints are then removed.
    """
    import torch

    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{state['step']:07d}"
    final = folder / name
    # An existing folder of the same step (stopped right after a resume) is replaced.
    with atomic_output(final) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                **state,
            },
            tmp / STATE_FILE,
        )
    _write_text_atomic(folder / LATEST_FILE, name)
    for old in folder.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: Path, model: Any, optimizer: Any, config: TrainConfig, n_train: int
) -> dict[str, Any]:
    """Put a checkpoint's adapter and optimizer state in place; return the rest of its state."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    damaged = TrainingError(
        f"The checkpoint at {path} is damaged or was not written by desktop-dpo; start the run again "
        f"(desktop-dpo train --resume RUN_ID --restart) or delete {path}."
    )
    try:
        # weights_only refuses any pickle that would run code; a refusal is a damaged file to the person.
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as exc:
        raise damaged from exc
    if not isinstance(state, dict):
        raise damaged
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"The checkpoint {path} was written by another version; start a new run.")
    saved = state.get("config", {})
    changed = [name for name in ADAPTER_FIELDS if name in saved and saved[name] != getattr(config, name)]
    if changed:
        raise TrainingError(
            f"This run's checkpoint was trained with other {', '.join(n.replace('_', ' ') for n in changed)}; "
            "those cannot change mid-run. Put them back, or start a new run."
        )
    if state.get("n_train") != n_train:
        log.warning("The run's pairs changed since its checkpoint (%s -> %s)", state.get("n_train"), n_train)
    check_tensor_file(path / ADAPTER_WEIGHTS, f"the checkpoint at {path}")
    set_peft_model_state_dict(model, load_file(str(path / ADAPTER_WEIGHTS)))
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, TypeError) as exc:
        raise damaged from exc
    return state


def _write_adapter_info(
    adapter_dir: Path, run: RunRow, config: TrainConfig, base: ModelRow, quantization: str
) -> None:
    """A small JSON next to the adapter: what it was trained from and how (read by export)."""
    info = {
        "run_id": run.id,
        "run_name": run.name,
        "base_model_id": base.id,
        "base_model_fingerprint": base.fingerprint,
        "reference": run.reference,
        "quantization": quantization,
        "config": config.to_dict(),
        "pairs_sha256": hashlib.sha256(json.dumps(run.comparison_ids).encode()).hexdigest(),
    }
    _write_text_atomic(adapter_dir / "desktop_dpo_run.json", json.dumps(info, indent=2, sort_keys=True))


def _save_adapter(model: Any, target: Path) -> None:
    """``save_pretrained`` into a temporary folder, then swap it in: never a half-written adapter."""
    with atomic_output(target) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)


def remove_checkpoints(run_dir: Path) -> None:
    """Delete a run's checkpoints (a restart, or the run finished and its adapter is written)."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def write_adapter(
    model: Any,
    adapter_dir: Path,
    *,
    run: RunRow,
    config: TrainConfig,
    base: ModelRow,
    quantization: str,
    chat_template: str | None,
) -> None:
    """The run's final adapter (written atomically, then read back in full), a note of its origin for the
    export, and the chat template it was trained with.
    """
    _save_adapter(model, adapter_dir)
    check_tensor_file(adapter_dir / ADAPTER_WEIGHTS, "the adapter this run wrote")
    _write_adapter_info(adapter_dir, run, config, base, quantization)
    write_trained_template(adapter_dir, chat_template)
