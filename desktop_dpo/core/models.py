"""The model registry: what a model on disk is, whether the app can use it, and where models already are.

A model is either a Hugging Face folder (``config.json``, tokenizer files and safetensors weights) or a
single GGUF file (llama.cpp's format). Everything here reads headers only, so describing a model of any
size takes milliseconds and never loads weights:

- :func:`fingerprint` identifies a model's contents from its config, tokenizer files and weight headers
  (a bounded number of bytes, whatever the model's size).
- :func:`inspect_model` describes a model (:class:`ModelInfo`) or explains in one sentence why the app
  cannot use it (:class:`~desktop_dpo.core.errors.ModelError`).
- :func:`find_model_code` / :func:`refuse_model_code` find what in a folder names code of its own to run (an
  ``auto_map`` in any JSON file, a ``.py`` file a config points to). Such a folder is refused at registration
  and again before a conversion: desktop-dpo never runs code that comes with a model.
- :func:`register_model` records a model in the :class:`~desktop_dpo.core.store.Store`.
- :func:`discover_local_models` lists models already downloaded by the Hugging Face hub, LM Studio and
  Ollama. It only reads those folders, never writes to them.
- :func:`make_trainable_copy` is the one heavy job here: it dequantizes a GGUF once through transformers
  into a bf16 safetensors folder that training can load.

The GUI imports this module at startup, so torch, transformers and gguf are imported inside functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import mmap
import os
import re
import shutil
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.errors import ModelCodeRefused, ModelError
from desktop_dpo.core.jobs import CancelToken, Job, Log, Progress
from desktop_dpo.core.llm.gguf_info import read_gguf_info
from desktop_dpo.core.model_files import (
    FINGERPRINTED_FILES,
    TRAINABLE_COPY_MARKER,
    atomic_output,
    is_trainable_copy_of,
    remove_partial_outputs,
)

if TYPE_CHECKING:
    from desktop_dpo.core.store import ModelRow, Store

# HF ``model_type`` values the app can train (transformers + peft + bitsandbytes), merge, and convert to GGUF
# with llama.cpp's converter. A folder of another architecture is refused at registration, because every
# later step (training, export, chat) would fail on it.
SUPPORTED_ARCHITECTURES: tuple[str, ...] = (
    "llama",
    "mistral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "phi3",
    "stablelm",
    "starcoder2",
    "olmo",
    "olmo2",
    "granite",
    "smollm3",
)

# GGUF ``general.architecture`` -> the HF ``model_type`` transformers dequantizes it into. Only these GGUF
# files can get a trainable copy (:func:`make_trainable_copy`); any other GGUF llama.cpp runs is still fine for
# chat. transformers has no GGUF loader for Gemma 1 ("gemma"), hence its absence; llama.cpp files Mistral
# models under "llama".
GGUF_TRAINABLE_ARCHITECTURES: dict[str, str] = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen2moe": "qwen2_moe",
    "qwen3": "qwen3",
    "qwen3moe": "qwen3_moe",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
    "phi3": "phi3",
    "stablelm": "stablelm",
    "starcoder2": "starcoder2",
}

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Pickle files a training checkpoint keeps beside its weights.
_NOT_WEIGHTS = ("training_args", "optimizer", "scheduler", "rng_state", "scaler")
# ggml tensor types stored as plain floats (by name, or by number when the gguf package is missing).
_FLOAT_TENSOR_TYPES = frozenset({"F32", "F16", "BF16", "F64", "0", "1", "28", "30"})
_GGUF_MAGIC = b"GGUF"
# A metadata file up to this size is hashed whole (the tokenizer.json of a 262k vocabulary is ~33 MB); a larger
# one, which no real model ships, only by its size, head and samples, to keep fingerprint() bounded.
_WHOLE_FILE_LIMIT = 64 * 1024 * 1024
# Weight files: their header region plus evenly spaced samples of the data. The samples are what tells a
# fine-tuned export from its base when both have the same size and header.
_HEAD_BYTES = 1024 * 1024
_SAMPLE_BYTES = 64 * 1024
_SAMPLES = 8
# safetensors itself refuses headers above 100 MB.
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_FINGERPRINT_VERSION = b"desktop-dpo fingerprint v1\n"

OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
# Memory needed to make a trainable copy: every weight dequantized in fp32 (4 bytes) plus its bf16 copy
# (2 bytes), and room for the tokenizer and the interpreter.
_COPY_BYTES_PER_PARAMETER = 6
_COPY_MEMORY_MARGIN = 512 * 1024 * 1024
_COPY_DISK_MARGIN = 128 * 1024 * 1024


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


@dataclass(frozen=True)
class DiscoveredModel:
    """A model found on disk by :func:`discover_local_models` (not yet registered)."""

    label: str  # e.g. "google/gemma-3-270m" (HF cache), "llama3.2:1b" (Ollama), "lmstudio-community/x/y.gguf"
    path: Path  # HF snapshot folder or GGUF file (an Ollama blob has no .gguf suffix); pass to register_model
    kind: str  # "hf" or "gguf"
    source: str  # "hf_cache", "lmstudio" or "ollama" (the store's ``source`` values)
    size_bytes: int  # weights on disk
    architecture: str | None = None  # HF model_type from config.json; None for GGUF (known once inspected)


@dataclass(frozen=True)
class ModelSearchDirs:
    """Where :func:`discover_local_models` looks. Tests pass their own; the app uses :meth:`default`."""

    hf_hub: tuple[Path, ...]  # hub caches: models--org--name/snapshots/<revision>/
    lmstudio: tuple[Path, ...]  # LM Studio model folders: publisher/repo/*.gguf
    ollama: tuple[Path, ...]  # Ollama model stores: manifests/... and blobs/sha256-...

    @classmethod
    def default(cls, environ: dict[str, str] | None = None, home: Path | None = None) -> ModelSearchDirs:
        """The standard locations, honouring ``HF_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME`` and
        ``OLLAMA_MODELS`` the way those tools do."""
        env = dict(os.environ) if environ is None else environ
        home = Path.home() if home is None else home
        cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else home / ".cache"
        if env.get("HF_HUB_CACHE"):
            hf_hub = Path(env["HF_HUB_CACHE"])
        elif env.get("HF_HOME"):
            hf_hub = Path(env["HF_HOME"]) / "hub"
        else:
            hf_hub = cache / "huggingface" / "hub"
        lmstudio = (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models")
        if env.get("OLLAMA_MODELS"):
            ollama: tuple[Path, ...] = (Path(env["OLLAMA_MODELS"]),)
        else:
            # The second is where Linux's system service (the official install script) keeps models.
            ollama = (home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models"))
        return cls(
            hf_hub=(hf_hub.expanduser(),),
            lmstudio=tuple(p.expanduser() for p in lmstudio),
            ollama=tuple(p.expanduser() for p in ollama),
        )


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
    suffixes = (".safetensors", ".gguf", *_PICKLE_SUFFIXES)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())


def _hash_small_file(digest: Any, file: Path) -> None:
    size = file.stat().st_size
    if size > _WHOLE_FILE_LIMIT:
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
            header_end = min(size, 8 + min(length, _MAX_SAFETENSORS_HEADER))
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
    if path.name == "config.json" or path.suffix.lower() in (".safetensors", *_PICKLE_SUFFIXES, ".json"):
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


def _supported_list() -> str:
    return ", ".join(SUPPORTED_ARCHITECTURES)


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
            f"architecture: {_supported_list()}."
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
    metadata_size = sum(_size(folder / name) for name in FINGERPRINTED_FILES)
    return ModelInfo(
        kind="hf",
        path=str(folder),
        name=_hf_name(folder),
        architecture=model_type,
        parameter_count=parameter_count,
        size_bytes=sum(_size(f) for f in weight_files) + metadata_size,
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
        if p.suffix.lower() in _PICKLE_SUFFIXES and p.is_file() and not p.name.startswith(_NOT_WEIGHTS)
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
        if length < 2 or length > _MAX_SAFETENSORS_HEADER or 8 + length > size:
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


def _size(file: Path) -> int:
    try:
        return file.stat().st_size if file.is_file() else 0
    except OSError:
        return 0


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


# --------------------------------------------------------------------------------------------------------
# Code shipped with a model
# --------------------------------------------------------------------------------------------------------

# JSON keys that make transformers import a module of the model's own: ``auto_map`` ("AutoTokenizer" ->
# "tokenization_x.XTokenizer", in config.json, tokenizer_config.json, processor_config.json ...) and a custom
# pipeline's ``custom_pipelines``. Looked for at any depth of any JSON file (text_config, llm_config ...),
# because the converter and transformers read more files, and more nesting, than this module does.
_CODE_KEYS = frozenset({"auto_map", "custom_pipelines"})
# A whole string that names a Python module ("tokenization_x.py") or a class in one ("tokenization_x.XTok").
_CODE_REFERENCE = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.(py|[A-Za-z_]\w*)$")
# Subfolders of a model folder that are searched too (transformers loads from one when asked for it).
_CODE_SEARCH_DEPTH = 3


def find_model_code(folder: str | Path) -> list[str]:
    """Everything in an HF model folder that names code of its own to run, each as a phrase for a message.

    Searches every JSON file of the folder and its subfolders, whatever its name, at any nesting depth, for an
    ``auto_map`` or ``custom_pipelines`` (what transformers imports a model's module for), and every string
    that names a ``.py`` file of the folder or a class in one (``"tokenization_x.XTokenizer"``). A ``.py``
    file that nothing points to is harmless: no loader imports it. Reads JSON only; nothing is imported.

    Returns:
        e.g. ``["its tokenizer_config.json has an auto_map (AutoTokenizer: tokenization_x.XTokenizer)"]``;
        an empty list when the folder names no code.

    Raises:
        ModelError: a JSON file is too large to check (no model's settings file is).
    """
    folder = Path(folder)
    found: list[str] = []
    modules = _python_modules(folder)
    for file in _json_files(folder):
        shown = file.relative_to(folder).as_posix()
        size = _size(file)
        if size > _WHOLE_FILE_LIMIT:
            raise ModelError(
                f"{folder.name} cannot be checked for code to run: {shown} is {size / 1e6:.0f} MB, larger "
                "than any model's settings file. Remove it if the model does not need it, or choose another "
                "copy of the model."
            )
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            # transformers parses with the same json module, so it cannot read a code reference here either.
            continue
        found.extend(f"its {shown} {what}" for what in _code_in_json(data, modules))
    return found


def refuse_model_code(folder: str | Path) -> None:
    """Refuse an HF model folder that names code of its own to run (see :func:`find_model_code`).

    Called at registration and again just before a conversion, since a folder may have changed since it was
    registered.

    Raises:
        ModelCodeRefused: the message says what was found, in which file, and that the app never runs code
            from model folders.
    """
    folder = Path(folder)
    found = find_model_code(folder)
    if found:
        more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
        raise model_code_refusal(folder, "; ".join(found[:3]) + more)


def model_code_refusal(folder: str | Path, found: str) -> ModelCodeRefused:
    """The error for a model folder that names code to run; ``found`` says what and where, as a phrase."""
    return ModelCodeRefused(
        f"{Path(folder).name} needs custom code from its authors to load: {found}. desktop-dpo never runs "
        "code from model folders, so it does not use this one, and nothing of that code ran. Choose a "
        "version of the model that loads without custom code, or a model of a supported architecture: "
        f"{_supported_list()}."
    )


def _json_files(folder: Path) -> list[Path]:
    """The JSON files of ``folder`` and its subfolders (``_CODE_SEARCH_DEPTH`` deep), symlinked files too
    (a hub-cache snapshot is all symlinks); symlinked folders are not followed, so a loop cannot trap it."""
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        depth = len(Path(root).relative_to(folder).parts)
        if depth >= _CODE_SEARCH_DEPTH:
            dirs.clear()
        files.extend(Path(root) / name for name in names if name.lower().endswith(".json"))
    return sorted(file for file in files if file.is_file())


def _python_modules(folder: Path) -> set[str]:
    """Dotted module names of the folder's ``.py`` files ("tokenization_x", "sub.module")."""
    modules: set[str] = set()
    for root, dirs, names in os.walk(folder):
        relative = Path(root).relative_to(folder).parts
        if len(relative) >= _CODE_SEARCH_DEPTH:
            dirs.clear()
        for name in names:
            if name.endswith(".py"):
                modules.add(".".join((*relative, name[:-3])))
    return modules


def _code_in_json(data: Any, modules: set[str]) -> Iterator[str]:
    """Phrases for each code reference in one parsed JSON document, found without recursion (a document
    nested thousands deep must not crash the check)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                # A vocabulary may hold a token spelled "auto_map" (its value an id): only the shapes transformers
                # reads a module name from count.
                if key in _CODE_KEYS and item and isinstance(item, (dict, list, str)):
                    under = f" under {'.'.join(where)}" if where else ""
                    yield f"has {_article(key)} {key}{under} ({_first_reference(item)})"
                else:
                    stack.append((item, (*where, str(key))))
        elif isinstance(value, list):
            stack.extend((item, where) for item in value)
        elif isinstance(value, str) and modules:
            reference = _CODE_REFERENCE.match(value)
            if reference and reference[1] in modules:
                key = where[-1] if where else "a value"
                yield f"points to {reference[1].replace('.', '/')}.py ({key}: {value})"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _first_reference(value: Any) -> str:
    """The first class a code mapping names, for the message ("AutoTokenizer: tokenization_x.XTokenizer")."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list):  # (slow, fast) tokenizer classes; either may be null
                item = next((i for i in item if isinstance(i, str) and i), None)
            if isinstance(item, str):
                return f"{key}: {item}"
    if isinstance(value, list):  # the old tokenizer form: ["tokenization_x.XTokenizer", null]
        value = next((i for i in value if isinstance(i, str) and i), value)
    return value if isinstance(value, str) else json.dumps(value)[:80]


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


# --------------------------------------------------------------------------------------------------------
# Register
# --------------------------------------------------------------------------------------------------------


def register_model(
    store: Store,
    path: str | Path,
    *,
    source: str = "user",
    allow_pickle: bool = False,
    name: str | None = None,
    parent_model_id: int | None = None,
    run_id: int | None = None,
) -> ModelRow:
    """Inspect, fingerprint and record a model (or update the entry with the same path). Returns its row.

    Args:
        store: the calling thread's store.
        path: an HF folder or a GGUF file.
        source: where it came from: user | hf_cache | lmstudio | ollama | aligned | demo | imported.
        allow_pickle: the person accepted pickle-only weights for this model (see :func:`inspect_model`).
        name: what to call it (e.g. a discovered model's label); default: the name in its metadata.
        parent_model_id: the model it was made from (a trainable copy's GGUF, an aligned model's base).
        run_id: the training run that made it (an aligned model), so its lineage can be shown.

    Raises:
        ModelError: the model cannot be used (the message says why and what to do).
    """
    info = inspect_model(path, allow_pickle=allow_pickle)
    model_id = store.add_model(
        name=name or info.name,
        path=info.path,
        kind=info.kind,
        fingerprint=fingerprint(info.path),
        source=source,
        info=info.to_dict(),
        parent_model_id=parent_model_id,
        run_id=run_id,
    )
    row = store.get_model(model_id)
    assert row is not None  # just written in this thread
    return row


# --------------------------------------------------------------------------------------------------------
# Discover
# --------------------------------------------------------------------------------------------------------


def discover_local_models(search_dirs: ModelSearchDirs | None = None) -> list[DiscoveredModel]:
    """Models already on this disk: Hugging Face hub cache, LM Studio and Ollama. Read-only and offline.

    Only folders and small files (manifests, config.json) are read; nothing is written, created or loaded.
    An unreadable or half-downloaded entry is skipped. The result is in a stable order: by source, then
    label.
    """
    dirs = search_dirs or ModelSearchDirs.default()
    found: list[DiscoveredModel] = []
    for root in _unique(dirs.hf_hub):
        found.extend(_guarded(_discover_hf_cache, root))
    for root in _unique(dirs.lmstudio):
        found.extend(_guarded(_discover_lmstudio, root))
    for root in _unique(dirs.ollama):
        found.extend(_guarded(_discover_ollama, root))
    seen: set[Path] = set()
    unique: list[DiscoveredModel] = []
    for model in found:
        if model.path not in seen:
            seen.add(model.path)
            unique.append(model)
    return unique


def _unique(paths: Iterable[Path]) -> list[Path]:
    result: list[Path] = []
    for path in paths:
        if path not in result:
            result.append(path)
    return result


def _guarded(scan: Any, root: Path) -> list[DiscoveredModel]:
    """Run one scanner; a folder that vanishes or cannot be read yields nothing rather than an error."""
    if not root.is_dir():
        return []
    try:
        return sorted(scan(root), key=lambda m: m.label)
    except OSError:
        return []


def _discover_hf_cache(root: Path) -> Iterator[DiscoveredModel]:
    for repo in sorted(root.glob("models--*")):
        repo_id = "/".join(repo.name.split("--")[1:])
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        main = repo / "refs" / "main"
        main_revision = main.read_text(encoding="utf-8").strip() if main.is_file() else None
        if main_revision and (snapshots / main_revision).is_dir():
            revisions = [snapshots / main_revision]
        else:
            revisions = sorted(p for p in snapshots.iterdir() if p.is_dir())
        for snapshot in revisions:
            suffix = (
                "" if snapshot.name == main_revision or len(revisions) == 1 else f" @ {snapshot.name[:7]}"
            )
            yield from _hf_snapshot_models(snapshot, repo_id + suffix)


def _hf_snapshot_models(snapshot: Path, label: str) -> Iterator[DiscoveredModel]:
    config = snapshot / "config.json"
    weights = [p for p in snapshot.glob("*.safetensors") if p.name != "adapter_model.safetensors"]
    # is_file() follows the cache's symlinks into blobs/: a dangling one means an unfinished download.
    if config.is_file() and weights and all(p.is_file() for p in weights):
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = {}
        architecture = data.get("model_type") if isinstance(data, dict) else None
        yield DiscoveredModel(
            label=label,
            path=snapshot,
            kind="hf",
            source="hf_cache",
            size_bytes=sum(_size(p) for p in weights),
            architecture=architecture if isinstance(architecture, str) else None,
        )
    for file in sorted(snapshot.rglob("*.gguf")):
        if _listable_gguf(file):
            rel = file.relative_to(snapshot).as_posix()
            yield DiscoveredModel(f"{label}/{rel}", file, "gguf", "hf_cache", _size(file))


def _listable_gguf(file: Path) -> bool:
    """A complete GGUF language model: not a vision projector, and only the first part of a split file."""
    if not file.is_file() or file.name.lower().startswith("mmproj"):
        return False
    shard = _SHARD_RE.search(file.name)
    return shard is None or int(shard.group(1)) == 1


def _discover_lmstudio(root: Path) -> Iterator[DiscoveredModel]:
    for file in sorted(root.rglob("*.gguf")):
        if _listable_gguf(file):
            yield DiscoveredModel(file.relative_to(root).as_posix(), file, "gguf", "lmstudio", _size(file))


def _discover_ollama(root: Path) -> Iterator[DiscoveredModel]:
    manifests = root / "manifests"
    if not manifests.is_dir():
        return
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        layers = data.get("layers") if isinstance(data, dict) else None
        if not isinstance(layers, list):
            continue
        for layer in layers:
            if not isinstance(layer, dict) or layer.get("mediaType") != OLLAMA_MODEL_MEDIA_TYPE:
                continue
            digest = str(layer.get("digest", ""))
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                continue
            blob = root / "blobs" / digest.replace(":", "-")
            if blob.is_file():
                label = _ollama_label(manifest.relative_to(manifests).parts)
                yield DiscoveredModel(label, blob, "gguf", "ollama", _size(blob))
            break


def _ollama_label(parts: tuple[str, ...]) -> str:
    """registry.ollama.ai/library/llama3.2/1b -> "llama3.2:1b", as ``ollama list`` shows it."""
    if len(parts) < 2:
        return "/".join(parts)
    *where, model, tag = parts
    if where == ["registry.ollama.ai", "library"]:
        return f"{model}:{tag}"
    if where and where[0] == "registry.ollama.ai":
        where = where[1:]
    return "/".join([*where, model]) + f":{tag}"


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
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise ModelError(f"transformers could not read the tokenizer of {gguf.name}: {exc}") from exc


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
