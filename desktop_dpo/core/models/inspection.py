"""What a model on disk is: :func:`inspect_model` reads the headers of a Hugging Face folder or a GGUF file
into a :class:`ModelInfo`, or explains in one sentence why the app cannot use it (:class:`ModelError`).

Headers only: describing a model of any size takes milliseconds and never loads weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.errors import ModelError
from desktop_dpo.core.llm.gguf_info import read_gguf_info
from desktop_dpo.core.model_files import (
    FINGERPRINTED_FILES,
)
from desktop_dpo.core.models.formats import (
    GGUF_TRAINABLE_ARCHITECTURES,
    MAX_SAFETENSORS_HEADER,
    PICKLE_SUFFIXES,
    SUPPORTED_ARCHITECTURES,
    file_size,
    supported_list,
)
from desktop_dpo.core.models.model_code import refuse_model_code

if TYPE_CHECKING:
    pass

# Pickle files a training checkpoint keeps beside its weights.
_NOT_WEIGHTS = ("training_args", "optimizer", "scheduler", "rng_state", "scaler")
# ggml tensor types stored as plain floats (by name, or by number when the gguf package is missing).
_FLOAT_TENSOR_TYPES = frozenset({"F32", "F16", "BF16", "F64", "0", "1", "28", "30"})
_GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, read from its headers. Stored as the ``info`` of its :class:`ModelRow`."""

    kind: str  # "hf" (folder with config.json and weights) or "gguf" (a single llama.cpp file)
    path: str  # the folder or file, absolute
    name: str  # what the person sees: HF repo id, GGUF general.name, or the file/folder name
    architecture: str | None  # HF model_type ("gemma3_text") or GGUF general.architecture ("gemma3")
    parameter_count: int | None  # from safetensors shapes / GGUF tensor table; None for pickle weights
    size_bytes: int  # on disk: weights, config and tokenizer files
    context_length: int | None  # the context the model was trained for (None when the model does not say)
    has_chat_template: bool  # the model ships its own chat template
    chat_template: str | None  # that template's Jinja text, or None
    uses_default_template: bool  # True: no template of its own; the app renders templates.DEFAULT_TEMPLATE
    dtype: str | None  # weight storage: "BF16", "F32" ... for HF; GGUF file type ("Q4_K_M", "F16")
    quantized: bool  # weights stored quantized (GGUF Q*/IQ* types); training needs a trainable copy
    weights_format: str  # "safetensors", "pickle" (the person opted in) or "gguf"
    trainable: bool  # training can load it as it is (an HF folder of a supported architecture)
    can_make_trainable_copy: bool  # a GGUF whose architecture transformers can dequantize
    bos_token: str | None  # beginning-of-sequence token text (chat templates print it)
    eos_token: str | None  # end-of-sequence token text

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-friendly dict (the store's ``info`` column)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------------
# Inspect
# --------------------------------------------------------------------------------------------------------


def inspect_model(path: str | Path, *, allow_pickle: bool = False) -> ModelInfo:
    """Describe the model at ``path`` (an HF folder or a GGUF file) from its headers, without loading it.

    Args:
        path: a folder holding ``config.json`` and weights, or a GGUF file (any name: Ollama's blobs have
            no suffix; the file's magic bytes decide).
        allow_pickle: accept a folder whose weights are only pickle files (``.bin``/``.pt``), which can run
            code when loaded. Only when the person said they trust the model's origin.

    Raises:
        ModelError: with a sentence the person can act on, when the path is missing, holds no weights, is of
            an unsupported architecture, names code of its own to run (:class:`ModelCodeRefused`, see
            :func:`find_model_code`), has only pickle weights and
            ``allow_pickle`` is False, is pre-quantized, or has a damaged safetensors header / truncated GGUF.
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        return _inspect_hf_folder(path, allow_pickle=allow_pickle)
    if not path.is_file():
        raise ModelError(f"No model at {path}: nothing is there. Check the path, or choose the model again.")
    if _is_gguf(path):
        return _inspect_gguf(path)
    if path.name == "config.json" or path.suffix.lower() in (".safetensors", *PICKLE_SUFFIXES, ".json"):
        raise ModelError(
            f"{path.name} is one file of a Hugging Face model. Choose the folder that holds it "
            f"({path.parent}), not the file."
        )
    raise ModelError(
        f"{path} is not a model desktop-dpo can open. Choose a .gguf file, or a folder with config.json and "
        ".safetensors weights."
    )


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == _GGUF_MAGIC
    except OSError:
        return False


def _inspect_hf_folder(folder: Path, *, allow_pickle: bool) -> ModelInfo:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(_why_not_a_model_folder(folder))
    config = _read_json(config_file, what="its config.json")
    if not isinstance(config, dict):
        raise ModelError(f"{config_file} is damaged (not a JSON object). Download or copy the model again.")

    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    # First of all the checks: llama.cpp's converter and transformers would import a module the folder names
    # (an auto_map in any of its JSON files), and code shipped with a model must never run.
    refuse_model_code(folder)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
        shown = f"a '{model_type}' model" if model_type else "a model of unknown architecture (no model_type)"
        raise ModelError(
            f"{folder.name} is {shown}, which desktop-dpo cannot train or export. Choose a model of a supported "
            f"architecture: {supported_list()}."
        )
    quantization = config.get("quantization_config") or text_config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "unknown") if isinstance(quantization, dict) else "unknown"
        raise ModelError(
            f"{folder.name} is already quantized ({method}), so it cannot be merged and exported after training. "
            "Choose the full-precision original of this model."
        )

    safetensors = _safetensors_files(folder)
    parameter_count: int | None = None
    dtype: str | None = None
    if safetensors:
        weights_format = "safetensors"
        weight_files = safetensors
        elements_by_dtype: dict[str, int] = {}
        for file in safetensors:
            for tensor_dtype, elements in _safetensors_elements(file).items():
                elements_by_dtype[tensor_dtype] = elements_by_dtype.get(tensor_dtype, 0) + elements
        parameter_count = sum(elements_by_dtype.values())
        dtype = max(elements_by_dtype, key=lambda d: elements_by_dtype[d]) if elements_by_dtype else None
    else:
        pickles = _pickle_files(folder)
        if not pickles:
            raise ModelError(_why_not_a_model_folder(folder))
        if not allow_pickle:
            raise ModelError(
                f"{folder.name} stores its weights only as pickle files ({pickles[0].name}), which can run code "
                "when loaded. Use a safetensors version of this model, or allow pickle weights for it if you "
                "trust where it came from."
            )
        weights_format = "pickle"
        weight_files = pickles
        torch_dtype = config.get("torch_dtype") or config.get("dtype")
        dtype = _short_dtype(torch_dtype) if isinstance(torch_dtype, str) else None

    chat_template = _hf_chat_template(folder)
    bos, eos = _hf_special_tokens(folder)
    metadata_size = sum(file_size(folder / name) for name in FINGERPRINTED_FILES)
    return ModelInfo(
        kind="hf",
        path=str(folder),
        name=_hf_name(folder),
        architecture=model_type,
        parameter_count=parameter_count,
        size_bytes=sum(file_size(f) for f in weight_files) + metadata_size,
        context_length=_context_length(config) or _context_length(text_config),
        has_chat_template=chat_template is not None,
        chat_template=chat_template,
        uses_default_template=chat_template is None,
        dtype=dtype,
        quantized=False,
        weights_format=weights_format,
        trainable=True,
        can_make_trainable_copy=False,
        bos_token=bos,
        eos_token=eos,
    )


def _why_not_a_model_folder(folder: Path) -> str:
    """The message for a folder that is not a complete HF model, naming what it does hold."""
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if ggufs:
        shown = ", ".join(ggufs[:5]) + (" ..." if len(ggufs) > 5 else "")
        return (
            f"{folder} holds GGUF files, not a Hugging Face model folder. Choose one of the files: {shown}."
        )
    if (folder / "adapter_config.json").is_file():
        return (
            f"{folder} holds a LoRA adapter, not a full model. Choose the base model it was trained on (and "
            "merge the adapter in the Export view)."
        )
    has_weights = bool(_safetensors_files(folder) or _pickle_files(folder))
    if has_weights and not (folder / "config.json").is_file():
        return (
            f"{folder} has weights but no config.json, so the model cannot be built. Download or copy the "
            "complete model folder."
        )
    return (
        f"{folder} holds no model weights (no .safetensors files). Choose the folder that holds config.json "
        "and model.safetensors, or a .gguf file."
    )


def _safetensors_files(folder: Path) -> list[Path]:
    """The weight files of an HF folder: those the shard index names, or else every *.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = _read_json(index, what="its model.safetensors.index.json")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelError(f"{index} is damaged (no weight_map). Download or copy the model again.")
        shards = sorted({shard_file_name(folder, index, v) for v in weight_map.values()})
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            raise ModelError(
                f"{folder.name} is incomplete: {len(missing)} of its {len(shards)} weight files are missing "
                f"({missing[0]}). Finish the download or copy the whole folder again."
            )
        return [folder / name for name in shards]
    # A LoRA adapter's weights are not the model's.
    return sorted(
        p for p in folder.glob("*.safetensors") if p.name != "adapter_model.safetensors" and p.is_file()
    )


def shard_file_name(folder: Path, index: Path, name: Any) -> str:
    """A file name from a shard index (``model.safetensors.index.json``), checked to be a file of ``folder``.

    A model's files name only files beside them: a path that leads out of the folder (``../../etc/passwd``,
    an absolute path) would make the app read whatever file a crafted model points at.

    Raises:
        ModelError: the name is not a plain relative path inside ``folder``.
    """
    text = name if isinstance(name, str) else ""
    candidate = Path(text)
    inside = (
        bool(text)
        and "\0" not in text
        and not candidate.is_absolute()
        and not candidate.drive
        and ".." not in candidate.parts
        and ".." not in Path(text.replace("\\", "/")).parts
    )
    # (The name alone decides: a Hugging Face cache snapshot's files are links into its blobs folder.)
    if not inside:
        raise ModelError(
            f"{index.name} in {folder.name} names a weight file outside the model folder ({str(name)[:200]!r}). "
            "A model's files may only name files in its own folder; download the model again from a source "
            "you trust."
        )
    return text


def _pickle_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file() and not p.name.startswith(_NOT_WEIGHTS)
    )


def _safetensors_elements(file: Path) -> dict[str, int]:
    """Number of elements per dtype in one safetensors file, from its header (validated against its size)."""
    header, header_length = _read_safetensors_header(file)
    data_size = file.stat().st_size - 8 - header_length
    counts: dict[str, int] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            tensor_dtype = str(entry["dtype"])
            shape = [int(d) for d in entry["shape"]]
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(_damaged_safetensors(file)) from exc
        if end > data_size or start > end:
            raise ModelError(
                f"{file.name} is incomplete: the file is shorter than its header says (an interrupted download "
                "or copy). Download or copy the model again."
            )
        counts[tensor_dtype] = counts.get(tensor_dtype, 0) + math.prod(shape)
    return counts


def read_safetensors_header(file: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, data_offsets; ``__metadata__``).

    Reads the 8-byte little-endian length and the header only.

    Raises:
        ModelError: the header is missing, too long for the file, or not a JSON object.
    """
    return _read_safetensors_header(Path(file))[0]


def _read_safetensors_header(file: Path) -> tuple[dict[str, Any], int]:
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ModelError(_damaged_safetensors(file))
        (length,) = struct.unpack("<Q", prefix)
        if length < 2 or length > MAX_SAFETENSORS_HEADER or 8 + length > size:
            raise ModelError(_damaged_safetensors(file))
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(_damaged_safetensors(file)) from exc
    if not isinstance(header, dict):
        raise ModelError(_damaged_safetensors(file))
    return header, length


def _damaged_safetensors(file: Path) -> str:
    return (
        f"{file.name} is damaged: its safetensors header cannot be read (the download or copy may be "
        "incomplete). Download or copy the model again."
    )


def _read_json(file: Path, *, what: str) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(
            f"{file.parent.name} cannot be read: {what} is not valid JSON. Download or copy the model again."
        ) from exc


def _short_dtype(torch_dtype: str) -> str:
    names = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "float64": "F64"}
    return names.get(torch_dtype.removeprefix("torch."), torch_dtype)


def _context_length(config: dict[str, Any]) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _hf_chat_template(folder: Path) -> str | None:
    """The folder's own chat template, in transformers' order of precedence."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            text = jinja.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ModelError(
                f"{folder.name} cannot be read: its chat_template.jinja is not UTF-8 text (byte {exc.start:,} "
                "is not valid UTF-8). Save the template as UTF-8, or download or copy the model again."
            ) from exc
        return text or None
    for name in ("chat_template.json", "tokenizer_config.json"):
        file = folder / name
        if not file.is_file():
            continue
        data = _read_json(file, what=f"its {name}")
        template = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if isinstance(template, str) and template:
            return template
    return None


def _hf_special_tokens(folder: Path) -> tuple[str | None, str | None]:
    found: dict[str, str | None] = {"bos_token": None, "eos_token": None}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = folder / name
        if not file.is_file():
            continue
        data = _read_json(file, what=f"its {name}")
        if not isinstance(data, dict):
            continue
        for key in found:
            value = data.get(key)
            if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...}
                value = value.get("content")
            if found[key] is None and isinstance(value, str):
                found[key] = value
    return found["bos_token"], found["eos_token"]


def _hf_name(folder: Path) -> str:
    """The repo id for a hub-cache snapshot (models--org--name/snapshots/<rev>), else the folder's name."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return "/".join(folder.parent.parent.name.split("--")[1:])
    return folder.name


def _inspect_gguf(file: Path) -> ModelInfo:
    info = read_gguf_info(file)
    data_end = _gguf_data_end(file)
    if data_end > info["file_size_bytes"]:
        raise ModelError(
            f"{file.name} is incomplete: it is {info['file_size_bytes']:,} bytes but its header describes "
            f"{data_end:,} (an interrupted download or copy). Download or copy the model again."
        )
    architecture = info["architecture"]
    file_type = info["file_type"].removeprefix("ALL_") if info["file_type"] else None  # "ALL_F32" -> "F32"
    # Q*/IQ*/TQ* types are block-quantized; F32/F16/BF16 are plain floats.
    quantized = any(t not in _FLOAT_TENSOR_TYPES for t in info["tensor_types"])
    name = info["name"] or (file.stem if not file.name.startswith("sha256") else None) or file.name
    chat_template = info["chat_template"]
    return ModelInfo(
        kind="gguf",
        path=str(file),
        name=str(name),
        architecture=architecture,
        parameter_count=info["parameter_count"],
        size_bytes=info["file_size_bytes"],
        context_length=info["context_length"],
        has_chat_template=chat_template is not None,
        chat_template=chat_template,
        uses_default_template=chat_template is None,
        dtype=file_type,
        quantized=quantized,
        weights_format="gguf",
        trainable=False,
        can_make_trainable_copy=architecture in GGUF_TRAINABLE_ARCHITECTURES,
        bos_token=info["bos_token"],
        eos_token=info["eos_token"],
    )


# GGUF value types with a fixed size (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_data_end(file: Path) -> int:
    """Where the last tensor's data ends, per the header: past the file's end means the file is truncated.

    read_gguf_info() has already checked the key/value section and tensor table; this walks them again for
    the alignment and the tensor offsets, which it does not report.
    """
    with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        (version,) = struct.unpack_from("<I", buffer, 4)
        order = "<" if version < 0x10000 else ">"

        def unpack(fmt: str, offset: int) -> tuple[Any, int]:
            return struct.unpack_from(order + fmt, buffer, offset)[0], offset + struct.calcsize(fmt)

        def skip(value_type: int, offset: int) -> int:
            if value_type in _GGUF_SCALAR_SIZES:
                return offset + _GGUF_SCALAR_SIZES[value_type]
            if value_type == _GGUF_STRING:
                length, offset = unpack("Q", offset)
                return offset + length
            item_type, offset = unpack("I", offset)
            count, offset = unpack("Q", offset)
            if item_type in _GGUF_SCALAR_SIZES:
                return offset + count * _GGUF_SCALAR_SIZES[item_type]
            for _ in range(count):
                offset = skip(item_type, offset)
            return offset

        try:
            tensor_count, offset = unpack("Q", 8)
            kv_count, offset = unpack("Q", offset)
            alignment = 32
            for _ in range(kv_count):
                key_length, offset = unpack("Q", offset)
                key = bytes(buffer[offset : offset + key_length])
                offset += key_length
                value_type, offset = unpack("I", offset)
                if key == b"general.alignment" and value_type in (4, 10):
                    alignment = int(unpack("I" if value_type == 4 else "Q", offset)[0]) or 32
                offset = skip(value_type, offset)
            sizes = _ggml_type_sizes()
            data_end = 0
            for _ in range(tensor_count):
                name_length, offset = unpack("Q", offset)
                offset += name_length
                n_dims, offset = unpack("I", offset)
                elements = 1
                for _ in range(n_dims):
                    dim, offset = unpack("Q", offset)
                    elements *= dim
                tensor_type, offset = unpack("I", offset)
                tensor_offset, offset = unpack("Q", offset)
                block, type_size = sizes.get(tensor_type, (1, 0))
                data_end = max(data_end, tensor_offset + elements // block * type_size)
        except (struct.error, OverflowError) as exc:
            raise ModelError(
                f"{file.name} is damaged: its header ends early (the file may be incomplete). Download or copy "
                "it again."
            ) from exc
        data_start = -(-offset // alignment) * alignment
        return data_start + data_end


def _ggml_type_sizes() -> dict[int, tuple[int, int]]:
    """ggml tensor type -> (elements per block, bytes per block), from the gguf package when available."""
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError:  # without it only the offsets are checked, which still catches most truncations
        return {}
    return {int(t): (int(block), int(size)) for t, (block, size) in GGML_QUANT_SIZES.items()}
