"""A model's identity from its contents: :func:`fingerprint` hashes its config, tokenizer files and weight
headers plus evenly spaced samples of the weights (a bounded number of bytes, whatever the model's size)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.errors import ModelError
from desktop_dpo.core.model_files import (
    FINGERPRINTED_FILES,
)
from desktop_dpo.core.models.formats import MAX_SAFETENSORS_HEADER, PICKLE_SUFFIXES, WHOLE_FILE_LIMIT

if TYPE_CHECKING:
    pass

# Weight files: their header region plus evenly spaced samples of the data. The samples are what tells a
# fine-tuned export from its base when both have the same size and header.
_HEAD_BYTES = 1024 * 1024
_SAMPLE_BYTES = 64 * 1024
_SAMPLES = 8
_FINGERPRINT_VERSION = b"desktop-dpo fingerprint v1\n"


# --------------------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------------------


def fingerprint(path: str | Path) -> str:
    """A hash of what makes a model behave as it does, read cheaply (a few MB at most per weight file).

    Covers the config and tokenizer files (hashed whole), and for every weight file its name, size, header
    (safetensors: the 8-byte length and the JSON header; GGUF and others: the first 1 MiB, which holds the
    metadata and tensor table of small models) and eight 64 KiB samples spread over the rest. So it changes
    when the config, tokenizer, chat template, a tensor's shape or type, or the weights of a fine-tune
    change, and not when a README, a timestamp or an unrelated file does. A single file is identified by
    its contents, not its name (an Ollama blob and a copy of it match).

    Raises:
        ModelError: nothing exists at ``path``.
    """
    path = Path(path).expanduser()
    digest = hashlib.sha256(_FINGERPRINT_VERSION)
    if path.is_file():
        _hash_weight_file(digest, path)
        return digest.hexdigest()
    if not path.is_dir():
        raise ModelError(f"No model at {path}: nothing is there. Check the path, or choose the model again.")
    for name in FINGERPRINTED_FILES:
        file = path / name
        if file.is_file():
            digest.update(f"file {name}\n".encode())
            _hash_small_file(digest, file)
    for file in _weight_files_for_fingerprint(path):
        digest.update(f"weights {file.relative_to(path).as_posix()}\n".encode())
        _hash_weight_file(digest, file)
    return digest.hexdigest()


def _weight_files_for_fingerprint(folder: Path) -> list[Path]:
    suffixes = (".safetensors", ".gguf", *PICKLE_SUFFIXES)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())


def _hash_small_file(digest: Any, file: Path) -> None:
    size = file.stat().st_size
    if size > WHOLE_FILE_LIMIT:
        _hash_weight_file(digest, file)
        return
    with open(file, "rb") as handle:
        digest.update(size.to_bytes(8, "little"))
        digest.update(handle.read(size))


def _hash_weight_file(digest: Any, file: Path) -> None:
    """Size, header region and evenly spaced samples of one weight file."""
    size = file.stat().st_size
    digest.update(size.to_bytes(8, "little"))
    with open(file, "rb") as handle:
        head = handle.read(8)
        header_end = min(size, _HEAD_BYTES)
        if file.suffix.lower() == ".safetensors" and len(head) == 8:
            # The JSON header names every tensor with its dtype, shape and offsets: hash all of it.
            (length,) = struct.unpack("<Q", head)
            header_end = min(size, 8 + min(length, MAX_SAFETENSORS_HEADER))
        digest.update(head)
        digest.update(handle.read(max(0, header_end - len(head))))
        remaining = size - header_end
        if remaining <= 0:
            return
        if remaining <= _SAMPLES * _SAMPLE_BYTES:
            digest.update(handle.read(remaining))
            return
        step = (remaining - _SAMPLE_BYTES) // (_SAMPLES - 1)
        for index in range(_SAMPLES):
            handle.seek(header_end + index * step)
            digest.update(handle.read(_SAMPLE_BYTES))
