"""The files of a model: what a registry row's ``info`` says about them, where the app keeps them, how it writes them.

Every rule about a model's files is here once, so the registry, training, the export, sampling, the Models
view and the storage clean-up read the same one:

- the keys of a model's ``info`` (the store's JSON column): those :func:`~desktop_dpo.core.models.register_model`
  writes from :class:`~desktop_dpo.core.models.ModelInfo`, and those jobs add later (a trainable copy, the merged
  folder of an export, a GGUF copy, a converter's refusal, a chat-template choice);
- :func:`training_folder`: which Hugging Face folder training loads for a model;
- :func:`trainable_copy_dir` and :func:`gguf_copy_path`: where the app keeps the copies it makes of a model;
- :data:`CONFIG_AND_TOKENIZER_FILES`: the files besides the weights that decide how a model behaves. The
  fingerprint hashes them and a merge copies them, so what tells two models apart travels with the merged one;
- :func:`atomic_output`: every job writes a file or folder under one hidden temporary name next to its target
  (:func:`partial_path`) and renames it into place when it is complete; :func:`is_partial_output` is how the
  storage clean-up knows a crashed job's leftover (and nothing else).

Headless and light (the standard library and ``core.errors``): the GUI imports it at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from desktop_dpo.core.errors import ModelError

if TYPE_CHECKING:
    from desktop_dpo.config import AppPaths
    from desktop_dpo.core.store import ModelRow

# --------------------------------------------------------------------------------------------------------
# Keys of a model's info
# --------------------------------------------------------------------------------------------------------

# Written at registration (the fields of models.ModelInfo that the app reads back).
ARCHITECTURE_KEY = "architecture"  # HF model_type or GGUF general.architecture
PARAMETER_COUNT_KEY = "parameter_count"
SIZE_BYTES_KEY = "size_bytes"
CONTEXT_LENGTH_KEY = "context_length"
CHAT_TEMPLATE_KEY = "chat_template"  # the model's own template (Jinja text), or None
BOS_TOKEN_KEY = "bos_token"
EOS_TOKEN_KEY = "eos_token"
DTYPE_KEY = "dtype"  # "BF16", "F32" ... for HF; the GGUF file type ("Q4_K_M")
WEIGHTS_FORMAT_KEY = "weights_format"  # "safetensors", "pickle" or "gguf"
CAN_MAKE_TRAINABLE_COPY_KEY = "can_make_trainable_copy"  # a GGUF transformers can dequantize

# Written by the app's jobs after registration.
TRAINABLE_COPY_KEY = "trainable_copy"  # a GGUF's trainable copy (models.make_trainable_copy), a folder
# An exported (aligned) model's merged full-precision folder (export/pipeline.py, persist_export).
MERGED_FOLDER_KEY = "hf_path"
EXPORT_FOLDER_KEY = "export_folder"  # the export folder an aligned model's file is in
# The GGUF copy llama.cpp runs of a Hugging Face model (sampling.GgufCopyMade).
GGUF_COPY_INFO_KEY = "gguf_copy"
GGUF_COPY_OUTTYPE_KEY = "gguf_copy_outtype"  # that copy's tensor type ("q8_0")
# llama.cpp's converter refused the model (sampling.GgufRefused): {"reason": ..., "fingerprint": of the contents}.
GGUF_REFUSED_INFO_KEY = "gguf_refused"
# The person's chat-template choice (llm/template_choice.py): {"kind": "known", "name": ...} or {"kind": "custom", ...}.
TEMPLATE_CHOICE_KEY = "chat_template_choice"


def special_tokens(model: ModelRow) -> tuple[str, str]:
    """The model's BOS and EOS token texts as registered ("" when its files name none)."""
    return str(model.info.get(BOS_TOKEN_KEY) or ""), str(model.info.get(EOS_TOKEN_KEY) or "")


def recorded_chat_template(model: ModelRow) -> str | None:
    """The chat template the model's own files hold, as registered (None when they hold none)."""
    own = model.info.get(CHAT_TEMPLATE_KEY)
    return own if isinstance(own, str) and own.strip() else None


# --------------------------------------------------------------------------------------------------------
# Files of a Hugging Face folder
# --------------------------------------------------------------------------------------------------------

# Files besides the weights that decide how a model behaves (config, tokenizer, chat template). The fingerprint
# hashes them (models.fingerprint) and a merge copies them next to the merged weights (export/merge.py): one
# list, so whatever tells two models apart travels with the merged one. The order is part of the fingerprint.
CONFIG_AND_TOKENIZER_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)
# Which shard holds which weight: fingerprinted, never copied (a merge writes its own index for its own shards).
WEIGHT_INDEX_FILES: tuple[str, ...] = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# What the fingerprint hashes whole, in this order (besides the weight files' headers and samples).
FINGERPRINTED_FILES: tuple[str, ...] = CONFIG_AND_TOKENIZER_FILES + WEIGHT_INDEX_FILES

# Written into a finished trainable copy, last: which GGUF (by fingerprint) it was made from.
TRAINABLE_COPY_MARKER = "desktop_dpo_source.json"
# The file beside where a GGUF copy would be that says llama.cpp's converter refused these contents.
GGUF_REFUSED_FILE = "gguf-refused.json"
# Type of the GGUF copy made of a Hugging Face model for llama.cpp (8 bits: close to the original, half of F16).
GGUF_COPY_OUTTYPE = "q8_0"

# --------------------------------------------------------------------------------------------------------
# Where the app keeps its copies of a model
# --------------------------------------------------------------------------------------------------------


def _file_name_part(text: str) -> str:
    # Fingerprints and names become folder and file names: keep them portable (Windows forbids ":" etc.).
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def trainable_copy_dir(paths: AppPaths, model: ModelRow) -> Path:
    """Where the trainable copy of a GGUF model goes: one folder per GGUF content, in the app's models folder.

    The Models view and the demo loop make it there, so either reuses the other's copy.
    """
    return paths.models_dir / f"{model.fingerprint[:16]}-trainable"


def gguf_copy_path(model: ModelRow, paths: AppPaths, outtype: str = GGUF_COPY_OUTTYPE) -> Path:
    """Where the GGUF copy of the Hugging Face model ``model`` lives (whether or not it exists yet)."""
    folder = paths.models_dir / _file_name_part(model.fingerprint)
    return folder / f"{_file_name_part(Path(model.path).name)}.{outtype.lower()}.gguf"


def is_trainable_copy_of(copy_dir: Path, gguf_fingerprint: str) -> bool:
    """Whether ``copy_dir`` is a finished trainable copy of the GGUF with that fingerprint."""
    marker = copy_dir / TRAINABLE_COPY_MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("source_fingerprint") == gguf_fingerprint


# --------------------------------------------------------------------------------------------------------
# Which folder training loads
# --------------------------------------------------------------------------------------------------------


def _recorded_training_folders(model: ModelRow) -> list[tuple[str | None, Path]]:
    """``(info key, folder)`` that training may load for ``model``, best first (nothing read from disk)."""
    if model.kind == "hf":
        return [(None, Path(model.path))]
    # An exported model's merged folder holds its full-precision weights: the next round trains from them
    # rather than from a copy dequantized from its GGUF.
    keys = (MERGED_FOLDER_KEY, TRAINABLE_COPY_KEY)
    return [(key, Path(model.info[key])) for key in keys if model.info.get(key)]


def _is_ready(model: ModelRow, key: str | None, folder: Path) -> bool:
    if not (folder / "config.json").is_file():
        return False
    # A trainable copy counts only when finished and made from what the GGUF holds now.
    return key != TRAINABLE_COPY_KEY or is_trainable_copy_of(folder, model.fingerprint)


def recorded_dtype(model: ModelRow) -> str | None:
    """The weight type the registry recorded for ``model`` (:data:`DTYPE_KEY`), upper-case: a GGUF's file type
    ("Q4_K_M"), a folder's dtype ("BF16"); None when none was recorded."""
    dtype = model.info.get(DTYPE_KEY)
    return str(dtype).upper() if dtype else None


def find_training_folder(model: ModelRow) -> Path | None:
    """The Hugging Face folder training loads for ``model``, or None when it has none ready.

    The one rule: a Hugging Face model is loaded from its own folder; a GGUF the app exported from the merged
    folder the export kept (:data:`MERGED_FOLDER_KEY`); any other GGUF from its trainable copy
    (:data:`TRAINABLE_COPY_KEY`) when that is a finished copy of the GGUF's present contents. Reads at most
    two small files (cheap enough for the GUI thread).
    """
    for key, folder in _recorded_training_folders(model):
        if _is_ready(model, key, folder):
            return folder
    return None


def training_folder(model: ModelRow) -> Path:
    """:func:`find_training_folder`, or why there is none in words that say what to do.

    Raises:
        ModelError: the folder is gone, a trainable copy is not of the GGUF's present contents, or a GGUF has
            no trainable copy yet.
    """
    folder = find_training_folder(model)
    if folder is not None:
        return folder
    recorded = _recorded_training_folders(model)
    if not recorded:
        raise ModelError(
            f"{model.name} is a GGUF file without a trainable copy yet. Make a trainable copy in the Models view "
            "(it is done once), then start training again."
        )
    key, first = recorded[0]
    if key == TRAINABLE_COPY_KEY and (first / "config.json").is_file():
        raise ModelError(
            f"The trainable copy of {model.name} in {first} was not made from what its GGUF file holds now. "
            "Make a trainable copy again in the Models view (it is done once), then start training again."
        )
    raise ModelError(
        f"The files of {model.name} are no longer in {first} (moved or deleted?). Put them back, or "
        "register the model again in the Models view."
    )


# --------------------------------------------------------------------------------------------------------
# Writing a file or folder whole, or not at all
# --------------------------------------------------------------------------------------------------------

# ``.<target name>.<process id>-<8 hex digits>.partial``: hidden, next to its target, unique per write.
_PARTIAL_NAME = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.partial")


def partial_path(target: str | Path) -> Path:
    """A new temporary name next to ``target`` to write it under (the one naming rule of partial outputs).

    Unique per call (process id and a random part), so two writers of one target never share a file.
    """
    import uuid  # here: it imports platform, and the window imports this module at start-up

    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")


def is_partial_output(path: str | Path) -> bool:
    """Whether ``path`` is named as :func:`partial_path` names what a job is writing (or a crashed job left)."""
    return _PARTIAL_NAME.fullmatch(Path(path).name) is not None


def partial_outputs_of(target: str | Path) -> list[Path]:
    """The partial outputs of ``target`` lying next to it, written by any process (none when the folder is gone)."""
    target = Path(target)
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    return sorted(
        entry
        for entry in entries
        if (match := _PARTIAL_NAME.fullmatch(entry.name)) is not None and match["target"] == target.name
    )


def _remove(path: Path) -> None:
    """Delete a file, a link or a folder tree; what cannot be deleted is left (a clean-up never fails)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def remove_partial_outputs(target: str | Path) -> None:
    """Delete the partial outputs of ``target`` that crashed jobs left (call before writing it again)."""
    for stale in partial_outputs_of(target):
        _remove(stale)


def _fsync(path: Path) -> None:
    """Flush a file, or every file and folder of a tree, to disk (what the OS allows: Windows cannot sync a
    folder nor a read-only handle; the rename still makes the output whole)."""
    if path.is_dir():
        for folder, _, files in os.walk(path):
            for name in files:
                _fsync(Path(folder, name))
            _fsync_folder(Path(folder))
        return
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """Write ``target`` (a file or a folder) whole or not at all.

    Yields a new path next to ``target`` (:func:`partial_path`) that does not exist yet: the caller writes the
    file there, or makes the folder there and fills it. When the block ends normally, everything written is
    flushed to disk and renamed onto ``target`` (a folder already at ``target`` is replaced: moved aside under a
    partial name, then deleted). When it raises (an error, a cancel, ``GeneratorExit`` from an abandoned job),
    what was written is deleted and ``target`` is left as it was. A crash leaves only a partial name, which
    the storage clean-up offers to remove (:func:`is_partial_output`).

    Raises whatever the block raises; ``FileNotFoundError`` when it wrote nothing.
    """
    target = Path(target)
    temp = partial_path(target)
    try:
        yield temp
        _fsync(temp)
        if temp.is_dir() and target.is_dir() and not target.is_symlink():
            aside = partial_path(target)
            os.replace(target, aside)
            try:
                os.replace(temp, target)
            except BaseException:
                os.replace(aside, target)
                raise
            _remove(aside)
        else:
            os.replace(temp, target)
    except BaseException:
        _remove(temp)
        raise
    _fsync_folder(target.parent)  # the rename itself survives a power cut
