"""The one heavy job of the registry: :func:`make_trainable_copy` dequantizes a GGUF once through transformers
into a bf16 safetensors folder that training can load (torch, transformers and gguf are imported inside
functions: the GUI imports this package at start-up of its Models view)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.errors import ModelError
from desktop_dpo.core.jobs import CancelToken, Job, Log, Progress
from desktop_dpo.core.model_files import (
    TRAINABLE_COPY_KEY,
    TRAINABLE_COPY_MARKER,
    atomic_output,
    is_trainable_copy_of,
    remove_partial_outputs,
)
from desktop_dpo.core.models.fingerprints import fingerprint
from desktop_dpo.core.models.formats import GGUF_TRAINABLE_ARCHITECTURES
from desktop_dpo.core.models.inspection import inspect_model

if TYPE_CHECKING:
    from collections.abc import Generator

    from desktop_dpo.core.store import ModelRow, Store

# Memory needed to make a trainable copy: every weight dequantized in fp32 (4 bytes) plus its bf16 copy
# (2 bytes), and room for the tokenizer and the interpreter.
_COPY_BYTES_PER_PARAMETER = 6
_COPY_MEMORY_MARGIN = 512 * 1024 * 1024
_COPY_DISK_MARGIN = 128 * 1024 * 1024


# --------------------------------------------------------------------------------------------------------
# Trainable copy of a GGUF
# --------------------------------------------------------------------------------------------------------


def available_memory_bytes() -> int | None:
    """Memory the system can give a new allocation without swapping, or None when it cannot tell."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # other Unixes; Windows has neither and the check is skipped with a warning
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def recorded_trainable_copy(
    store: Store, model: ModelRow, out_dir: str | Path, *, cancel: CancelToken | None = None
) -> Generator[Any, None, ModelRow]:
    """:func:`make_trainable_copy` of ``model``'s GGUF, then the copy recorded under the model's
    ``trainable_copy`` info key, where training looks for it (a recorded job: the Models and Train views and
    the demo run this one). Returns the model's row as stored now.

    Raises:
        ModelError: as :func:`make_trainable_copy`, or the model was removed while its copy was made (the
            copy stays, and a model registered again from the same file finds it).
    """
    folder = yield from make_trainable_copy(model.path, out_dir, cancel=cancel)
    if store.get_model(model.id) is None:
        raise ModelError(f"The trainable copy is in {folder}, but its model was removed meanwhile.")
    store.update_model_info(model.id, **{TRAINABLE_COPY_KEY: str(folder)})
    row = store.get_model(model.id)
    assert row is not None
    return row


def make_trainable_copy(
    gguf_path: str | Path, out_dir: str | Path, *, cancel: CancelToken | None = None
) -> Job:
    """Dequantize a GGUF once into a bf16 safetensors folder that training can load (a job).

    Checks that there is enough memory (parameters x 6 bytes: fp32 dequantization plus the bf16 copy) and
    disk (parameters x 2 bytes), loads tokenizer and weights through transformers, and saves them. The work
    happens in a hidden folder next to ``out_dir`` that is renamed into place at the end, so a failure or a
    cancel (checked between stages) never leaves a half copy under ``out_dir``. A finished copy carries
    :data:`TRAINABLE_COPY_MARKER`; asking again for the same GGUF returns at once.

    Yields :class:`~desktop_dpo.core.jobs.Progress` (5 stages) and :class:`~desktop_dpo.core.jobs.Log`.
    Returns ``out_dir`` as a Path. Slow for real models (Gemma 270M: ~50 s tokenizer, ~60 s weights on
    two cores): never call it on the GUI thread.

    Raises:
        ModelError: not a GGUF of an architecture transformers can dequantize, not enough memory or disk,
            ``out_dir`` holds something else, or loading failed.
        JobCancelled: the person stopped it.
    """
    cancel = cancel or CancelToken()
    gguf = Path(gguf_path).expanduser().absolute()
    out_dir = Path(out_dir).expanduser().absolute()
    stages = 5

    yield Progress(0, stages, "Checking the model")
    info = inspect_model(gguf)
    if info.kind != "gguf":
        raise ModelError(f"{gguf} is not a GGUF file; only a GGUF needs a trainable copy.")
    if not info.can_make_trainable_copy:
        raise ModelError(
            f"{info.name} is a '{info.architecture}' GGUF, which transformers cannot turn back into a trainable "
            "model. You can still chat with it; to train, choose a model of one of these architectures: "
            f"{', '.join(GGUF_TRAINABLE_ARCHITECTURES)}."
        )
    source_fingerprint = fingerprint(gguf)
    if is_trainable_copy_of(out_dir, source_fingerprint):
        yield Progress(stages, stages, "The trainable copy is already there")
        return out_dir
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # an empty folder made beforehand is fine to take the copy's place
    if out_dir.exists():
        raise ModelError(
            f"{out_dir} already exists and is not a trainable copy of {info.name}. Choose another folder or "
            "remove that one."
        )
    parameters = info.parameter_count or 0
    yield from _check_resources(info.name, parameters, out_dir)
    cancel.raise_if_cancelled()

    # Leftovers of a crash (a stop or failure cleans up after itself) are ours to remove.
    remove_partial_outputs(out_dir)
    # Any failure, cancel or abandoned job (GeneratorExit) leaves nothing half-written.
    with atomic_output(out_dir) as partial:
        partial.mkdir()
        yield Progress(1, stages, "Reading the tokenizer")
        tokenizer = _load_gguf_tokenizer(gguf)
        cancel.raise_if_cancelled()
        yield Progress(2, stages, "Dequantizing the weights")
        model = _load_gguf_model(gguf)
        cancel.raise_if_cancelled()
        yield Progress(3, stages, "Saving bf16 safetensors")
        _save_plain_copy(model, tokenizer, partial)
        del model
        (partial / TRAINABLE_COPY_MARKER).write_text(
            json.dumps(
                {
                    "source_path": str(gguf),
                    "source_fingerprint": source_fingerprint,
                    "source_file_type": info.dtype,
                    "dtype": "bfloat16",
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        cancel.raise_if_cancelled()
        yield Progress(4, stages, "Moving the copy into place")
    yield Progress(stages, stages, "Trainable copy ready")
    return out_dir


def _check_resources(name: str, parameters: int, out_dir: Path) -> Iterator[Log]:
    gib = 1024**3
    needed_memory = parameters * _COPY_BYTES_PER_PARAMETER + _COPY_MEMORY_MARGIN
    available = available_memory_bytes()
    if available is None:
        yield Log(
            f"Could not tell how much memory is free; making the copy of {name} needs about "
            f"{needed_memory / gib:.1f} GiB.",
            level="warning",
        )
    elif available < needed_memory:
        raise ModelError(
            f"Making a trainable copy of {name} needs about {needed_memory / gib:.1f} GiB of free memory and "
            f"{available / gib:.1f} GiB is free. Close other programs, or choose a smaller model."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    needed_disk = parameters * 2 + _COPY_DISK_MARGIN
    free = shutil.disk_usage(out_dir.parent).free
    if free < needed_disk:
        raise ModelError(
            f"Making a trainable copy of {name} needs about {needed_disk / gib:.1f} GiB of free disk space in "
            f"{out_dir.parent} and {free / gib:.1f} GiB is free. Free some space and try again."
        )


def _load_gguf_tokenizer(gguf: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        # An absolute gguf_file is read as a local file (an Ollama blob has no .gguf suffix).
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=str(gguf), local_files_only=True)
    # The tokenizers library raises a bare Exception for a vocabulary it cannot build: e.g. a Gemma GGUF
    # written by llama.cpp's converter from a folder without SentencePiece's tokenizer.model, whose vocabulary
    # transformers rebuilds as byte-level BPE ("Error while initializing BPE: Token ... out of vocabulary").
    except Exception as exc:
        raise ModelError(
            f"transformers could not read the tokenizer of {gguf.name}, so it cannot be made trainable: {exc}. "
            "You can still chat with it; to train, add the Hugging Face folder it was made from in Models "
            "(Add a Hugging Face folder…) and train that."
        ) from exc


def _load_gguf_model(gguf: Path) -> Any:
    import torch
    import transformers

    options: dict[str, Any] = {}
    if hasattr(transformers, "GgufConfig"):
        # dequantize=True: every weight becomes a plain bf16 tensor (transformers may otherwise keep packed
        # GGUF blocks when a matmul kernel for them is installed, and those cannot be trained or saved).
        options["quantization_config"] = transformers.GgufConfig(dequantize=True)
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=str(gguf), dtype=torch.bfloat16, local_files_only=True, **options
        )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise ModelError(f"transformers could not dequantize {gguf.name}: {exc}") from exc


def _save_plain_copy(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save a GGUF-loaded model as an ordinary HF folder.

    transformers refuses ``save_pretrained`` on a model loaded from GGUF (it counts as quantized), so an
    identical model is built from its config without the GGUF quantization entry, on the meta device (no
    memory), and given the loaded tensors themselves (``assign=True``: no copy).
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
