"""What a GGUF file holds, read from its header without loading any weights.

The model list shows architecture, size, context length and whether a model has a chat template before
anyone loads it, so this must be fast on a file of any size. ``gguf.GGUFReader`` builds a numpy view of every
entry of every array (about 16 s for the Gemma 270M demo's 262,144-token vocabulary on this machine), so the
header is parsed here directly: the key/value section and the tensor table of the GGUF format
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), skipping large arrays without decoding them.
Only the standard library is needed; the ``gguf`` package, when importable, supplies type names.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from desktop_dpo.core.errors import ModelError

_MAGIC = b"GGUF"
# GGUF value types -> struct format of one element (strings and arrays are handled apart).
_SCALARS: dict[int, str] = {
    0: "B",  # uint8
    1: "b",  # int8
    2: "H",  # uint16
    3: "h",  # int16
    4: "I",  # uint32
    5: "i",  # int32
    6: "f",  # float32
    7: "?",  # bool
    10: "Q",  # uint64
    11: "q",  # int64
    12: "d",  # float64
}
_STRING = 8
_ARRAY = 9
# Arrays up to this length are decoded into the metadata; longer ones (vocabularies, merges, scores) are
# only counted.
_SMALL_ARRAY = 64
# Arrays of arrays are allowed by the format but unused; deeper nesting than this only comes from a damaged
# (or crafted) file.
_MAX_ARRAY_DEPTH = 8
# ggml tensors have at most 4 dimensions.
_MAX_TENSOR_DIMS = 8


def damaged_header(path: Path, detail: str) -> ModelError:
    """The error for a GGUF whose header cannot be right, saying what is wrong with it."""
    return ModelError(f"{path.name}: the file's header is damaged: {detail}. Download or copy it again.")


class _Cursor:
    """Reads GGUF values from a memory-mapped file, in the file's byte order."""

    def __init__(self, buffer: mmap.mmap, order: str, path: Path):
        self.buffer = buffer
        self.order = order
        self.offset = 0
        self.path = path

    def remaining(self) -> int:
        return len(self.buffer) - self.offset

    def unpack(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(self.order + fmt, self.buffer, self.offset)
        except (struct.error, OverflowError) as exc:
            raise ModelError(
                f"{self.path} is damaged: its header ends early (the file may be incomplete). Copy or export "
                "it again."
            ) from exc
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self._string_length()
        raw = self.buffer[self.offset : self.offset + length]
        self.offset += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self._string_length()  # (not `offset += ...`: reading the length moves the offset itself)
        self.offset += length

    def _string_length(self) -> int:
        length = self.unpack("Q")
        if length > self.remaining():
            raise damaged_header(
                self.path, f"it gives a text {length:,} bytes long, more than the {self.remaining():,} left"
            )
        return int(length)

    def value(self, value_type: int, depth: int = 0) -> Any:
        """Read one value; an array comes back as a list when short, else as ``_LongArray``."""
        if value_type == _STRING:
            return self.string()
        if value_type in _SCALARS:
            return self.unpack(_SCALARS[value_type])
        if value_type == _ARRAY:
            if depth >= _MAX_ARRAY_DEPTH:
                raise damaged_header(self.path, f"it nests arrays more than {_MAX_ARRAY_DEPTH} deep")
            item_type = self.unpack("I")
            count = self.unpack("Q")
            # Every element takes at least one byte (a string or an array at least 8).
            smallest = struct.calcsize(_SCALARS[item_type]) if item_type in _SCALARS else 8
            if count * smallest > self.remaining():
                raise damaged_header(
                    self.path, f"it gives an array of {count:,} items, more than the rest of the file holds"
                )
            if count <= _SMALL_ARRAY:
                return [self.value(item_type, depth + 1) for _ in range(count)]
            start = self.offset
            self.skip_array(item_type, count, depth + 1)
            return _LongArray(item_type, count, start)
        raise ModelError(
            f"{self.path} has a metadata value of unknown type {value_type}; it may need a newer app."
        )

    def skip_array(self, item_type: int, count: int, depth: int) -> None:
        if item_type in _SCALARS:
            self.offset += count * struct.calcsize(_SCALARS[item_type])
        elif item_type == _STRING:
            for _ in range(count):
                self.skip_string()
        else:  # arrays of arrays do not occur in practice, but the format allows them
            for _ in range(count):
                self.value(item_type, depth)


class _LongArray:
    """A large array left undecoded: its element type, length and where its elements start."""

    def __init__(self, item_type: int, count: int, start: int):
        self.item_type = item_type
        self.count = count
        self.start = start


def read_gguf_info(path: str | Path) -> dict[str, Any]:
    """Describe a GGUF model from its header, without loading weights (milliseconds for any file size).

    Returns a JSON-friendly dict with these keys (None where the file does not say):
        ``path``, ``file_size_bytes``, ``gguf_version``, ``architecture`` (e.g. "gemma3", "llama"),
        ``name``, ``size_label`` (e.g. "270M"), ``parameter_count`` (sum of the tensors' elements),
        ``tensor_count``, ``file_type`` (e.g. "Q4_K_M", "F16"), ``tensor_types`` (type name -> number of
        tensors; a "Q4_K_M" file mixes several), ``context_length`` (trained), ``embedding_length``,
        ``block_count``, ``vocab_size``, ``tokenizer_model``, ``has_chat_template``, ``chat_template``,
        ``bos_token_id``, ``eos_token_id``, ``bos_token``, ``eos_token``, and ``metadata``: every
        key/value of the header except long arrays (vocabulary, scores, merges), which appear as
        ``"<array of N>"``.

    Raises:
        ModelError: the file is missing, is not GGUF, or its header is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"The model file {path} was not found. Choose the file again or re-register the model."
        )
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size < 24 or handle.read(4) != _MAGIC:
            raise ModelError(f"{path} is not a GGUF model file. Choose a .gguf file (llama.cpp's format).")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            try:
                return _parse(buffer, path, size)
            except (struct.error, OverflowError, ValueError, IndexError, MemoryError, RecursionError) as exc:
                # The checks in _Cursor name what is wrong; this is the net under them.
                raise damaged_header(path, f"it cannot be parsed ({type(exc).__name__})") from exc


def _parse(buffer: mmap.mmap, path: Path, size: int) -> dict[str, Any]:
    # The version is small; read the wrong way round it is huge, which tells a big-endian file.
    (version,) = struct.unpack_from("<I", buffer, 4)
    order = "<" if version < 0x10000 else ">"
    cursor = _Cursor(buffer, order, path)
    cursor.offset = 4
    version = cursor.unpack("I")
    if version < 2:
        raise ModelError(f"{path} uses GGUF version {version}, which is too old. Convert the model again.")
    tensor_count = cursor.unpack("Q")
    kv_count = cursor.unpack("Q")

    fields: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string()
        fields[key] = cursor.value(cursor.unpack("I"))

    parameter_count = 0
    type_counts: dict[int, int] = {}
    for _ in range(tensor_count):
        cursor.skip_string()  # tensor name
        n_dims = cursor.unpack("I")
        if n_dims > _MAX_TENSOR_DIMS:
            raise damaged_header(path, f"a tensor has {n_dims:,} dimensions")
        elements = 1
        for _ in range(n_dims):
            elements *= cursor.unpack("Q")
        tensor_type = cursor.unpack("I")
        cursor.unpack("Q")  # offset of the data
        parameter_count += elements
        type_counts[tensor_type] = type_counts.get(tensor_type, 0) + 1

    architecture = _plain(fields.get("general.architecture"))
    tokens = fields.get("tokenizer.ggml.tokens")
    bos_id = _plain(fields.get("tokenizer.ggml.bos_token_id"))
    eos_id = _plain(fields.get("tokenizer.ggml.eos_token_id"))
    token_text = _token_texts(cursor, tokens, [i for i in (bos_id, eos_id) if isinstance(i, int)])
    chat_template = _plain(fields.get("tokenizer.chat_template"))
    type_names = _tensor_type_names()

    def arch_field(name: str) -> Any:
        return _plain(fields.get(f"{architecture}.{name}")) if architecture else None

    return {
        "path": str(path),
        "file_size_bytes": size,
        "gguf_version": version,
        "architecture": architecture,
        "name": _plain(fields.get("general.name")),
        "size_label": _plain(fields.get("general.size_label")),
        "parameter_count": parameter_count,
        "tensor_count": tensor_count,
        "file_type": _file_type_name(_plain(fields.get("general.file_type"))),
        "tensor_types": {type_names.get(t, str(t)): n for t, n in sorted(type_counts.items())},
        "context_length": arch_field("context_length"),
        "embedding_length": arch_field("embedding_length"),
        "block_count": arch_field("block_count"),
        "vocab_size": _length(tokens) or arch_field("vocab_size"),
        "tokenizer_model": _plain(fields.get("tokenizer.ggml.model")),
        "has_chat_template": bool(chat_template),
        "chat_template": chat_template or None,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "bos_token": token_text.get(bos_id) if isinstance(bos_id, int) else None,
        "eos_token": token_text.get(eos_id) if isinstance(eos_id, int) else None,
        "metadata": {key: _plain(value) for key, value in fields.items()},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, _LongArray):
        return f"<array of {value.count}>"
    return value


def _length(value: Any) -> int | None:
    if isinstance(value, _LongArray):
        return value.count
    if isinstance(value, list):
        return len(value)
    return None


def _token_texts(cursor: _Cursor, tokens: Any, wanted: list[int]) -> dict[int, str]:
    """Texts of a few token ids, walking the vocabulary only as far as the largest id asked for."""
    if isinstance(tokens, list):
        return {i: tokens[i] for i in wanted if 0 <= i < len(tokens)}
    if not isinstance(tokens, _LongArray) or tokens.item_type != _STRING or not wanted:
        return {}
    found: dict[int, str] = {}
    cursor.offset = tokens.start
    last = min(max(wanted), tokens.count - 1)
    for index in range(last + 1):
        if index in wanted:
            found[index] = cursor.string()
        else:
            cursor.skip_string()
    return found


def _tensor_type_names() -> dict[int, str]:
    try:
        from gguf import GGMLQuantizationType
    except ImportError:  # names are a nicety; numbers still say which types are there
        return {}
    return {member.value: member.name for member in GGMLQuantizationType}


def _file_type_name(file_type: Any) -> str | None:
    if not isinstance(file_type, int):
        return None
    try:
        from gguf import LlamaFileType
    except ImportError:
        return str(file_type)
    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return str(file_type)
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")
