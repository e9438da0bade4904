"""Merge a LoRA adapter into a full-precision copy of its base, one safetensors shard at a time.

peft's ``merge_and_unload`` needs the whole model in memory (in fp32 on a CPU, four bytes a weight) and
then ``save_pretrained`` holds a second copy while it serialises. Merging is simpler than that: LoRA adds
a low-rank update to some weight matrices (Hu et al. 2021, Eq. 3)::

    W' = W + (α / r) · B @ A            (α / √r with rank-stabilised LoRA, Kalajdzievski 2023)

so each base tensor can be read, updated and written on its own. :func:`merge_adapter` streams the base
model shard by shard and tensor by tensor (the output file's header is written first, then each merged
tensor as it is made): peak memory is about the largest single tensor in fp32 plus the adapter, whatever
the model's size. The update is computed in fp32 and the result stored in bf16 or fp16 (never in 4 bits: a QLoRA run
trains against an NF4 copy of the base, but the merged model starts from the full-precision weights).

The folder is written under a hidden temporary name next to the destination and renamed into place only
when complete (after a free-space check), so a stop, a crash or a full disk never leaves a half model under
the final name. The tokenizer, chat template and generation config are copied with the weights.

torch and safetensors are imported inside functions: the GUI imports this module for its event types.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.errors import ExportError, ModelError
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.model_files import CONFIG_AND_TOKENIZER_FILES, atomic_output, remove_partial_outputs

if TYPE_CHECKING:
    import torch

MERGE_DTYPES = ("bfloat16", "float16")
_SPACE_MARGIN = 64 * 1024 * 1024
_PEFT_PREFIX = "base_model.model."


FLOAT16_MAX = 65504.0


class Float16RangeError(ExportError):
    """A merged weight is too large for float16 (merge in bfloat16 instead)."""


@dataclass(frozen=True)
class LoraUpdate:
    """The low-rank update of one base weight: ``W += scale · B @ A``."""

    lora_a: str  # key of A (r × in) in the adapter file
    lora_b: str  # key of B (out × r) in the adapter file
    scale: float  # α / r (or α / √r for rank-stabilised LoRA)
    fan_in_fan_out: bool  # the base stores the weight transposed (GPT-2 style Conv1D)


@dataclass(frozen=True)
class MergePlan:
    """What merging an adapter into a base does, worked out from headers alone (nothing loaded)."""

    updates: dict[str, LoraUpdate]  # base weight key -> its update
    replacements: dict[str, str]  # base key -> adapter key of a fully trained copy (modules_to_save)
    shards: list[Path]  # the base's safetensors files, in order
    output_bytes: int  # size of the merged weights in the target dtype
    tensor_count: int  # tensors in the base (every one is read and written once)


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, checked to be a LoRA the merge understands.

    Raises:
        ExportError: not a peft LoRA adapter folder, or a variant (DoRA, other PEFT types) that cannot be
            merged into plain weights here.
    """
    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ExportError(
            f"{adapter_dir} is not a LoRA adapter folder (it has no adapter_config.json). Choose the adapter "
            "folder of a finished training run."
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExportError(f"The adapter's settings in {config_file} cannot be read ({exc}).") from exc
    if not isinstance(config, dict):
        raise ExportError(f"The adapter's settings in {config_file} are not a JSON object.")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ExportError(f"This adapter is of type {peft_type}; only LoRA adapters can be merged.")
    _check_lora_settings(config, config_file)
    if config.get("use_dora"):
        raise ExportError(
            "This adapter uses DoRA, which desktop-dpo cannot merge yet; train with plain LoRA."
        )
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ExportError(
            f"The adapter in {adapter_dir} has no adapter_model.safetensors (pickle adapters are not loaded)."
        )
    return config


def _check_lora_settings(config: dict[str, Any], config_file: Path) -> None:
    """Check the LoRA fields the merge and the run settings use, naming the first one that is wrong.

    Raises:
        ExportError: ``r`` is not a whole number from 1 up, ``lora_alpha`` not a number, ``lora_dropout``
            not a number from 0 to 1, ``rank_pattern``/``alpha_pattern`` not a mapping of module names to
            such numbers, or ``target_modules`` not a name or a list of names.
    """

    def refuse(field: str, value: Any, wanted: str) -> ExportError:
        shown = json.dumps(value)[:80]
        return ExportError(
            f"The adapter's settings in {config_file} are damaged: {field} is {shown}, but it must be {wanted}. "
            "Copy the adapter folder again from where it was trained."
        )

    def is_rank(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1 << 16

    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if "r" in config and not is_rank(config["r"]):
        raise refuse("r", config["r"], "a whole number from 1 (the LoRA rank)")
    if "lora_alpha" in config and not (is_number(config["lora_alpha"]) and config["lora_alpha"] > 0):
        raise refuse("lora_alpha", config["lora_alpha"], "a number above 0")
    dropout = config.get("lora_dropout", 0.0)
    if not (is_number(dropout) and 0 <= dropout < 1):
        raise refuse("lora_dropout", dropout, "a number from 0 up to (not including) 1")
    for field, check, wanted in (
        ("rank_pattern", is_rank, "whole numbers from 1"),
        ("alpha_pattern", lambda v: is_number(v) and v > 0, "numbers above 0"),
    ):
        patterns = config.get(field)
        if patterns is None:
            continue
        if not isinstance(patterns, dict) or not all(check(v) for v in patterns.values()):
            raise refuse(field, patterns, f"a mapping of module names to {wanted}")
    targets = config.get("target_modules")
    if targets is not None and not (
        isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))
    ):
        raise refuse("target_modules", targets, "a module name or a list of module names")


def _base_key(adapter_key: str, marker: str) -> str:
    """``base_model.model.model.layers.0.q_proj.lora_A.weight`` -> ``model.layers.0.q_proj.weight``."""
    module = adapter_key[: adapter_key.index(marker)]
    if module.startswith(_PEFT_PREFIX):
        module = module[len(_PEFT_PREFIX) :]
    return f"{module}.weight"


def _pattern_value(module: str, patterns: dict[str, Any], default: float) -> float:
    """peft's ``rank_pattern`` / ``alpha_pattern``: a key matches a module whose name ends with it."""
    for key, value in patterns.items():
        if module == key or re.fullmatch(rf"(.*\.)?{key}", module):
            return float(value)
    return default


def _shard_files(base_dir: Path) -> list[Path]:
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"The shard index {index} cannot be read ({exc}).") from exc
        if not isinstance(weight_map, dict):
            raise ExportError(
                f"The shard index {index} cannot be read (its weight_map is not a JSON object)."
            )
        from desktop_dpo.core.models import shard_file_name

        try:
            names = [shard_file_name(base_dir, index, name) for name in dict.fromkeys(weight_map.values())]
        except ModelError as exc:
            raise ExportError(str(exc)) from exc
        return [base_dir / name for name in names]
    single = base_dir / "model.safetensors"
    if single.is_file():
        return [single]
    shards = sorted(base_dir.glob("*.safetensors"))
    if not shards:
        raise ExportError(f"{base_dir} has no safetensors weights to merge into.")
    return shards


def plan_merge(base_dir: str | Path, adapter_dir: str | Path, dtype: str = "bfloat16") -> MergePlan:
    """Match every LoRA pair of the adapter to the base weight it updates (headers only).

    Raises:
        ExportError: the adapter does not fit this base (a weight it updates is missing or of another
            shape), or either folder is unreadable.
    """
    base_dir, adapter_dir = Path(base_dir), Path(adapter_dir)
    if dtype not in MERGE_DTYPES:
        raise ExportError(f"Merged weights are stored as {' or '.join(MERGE_DTYPES)}, not {dtype!r}.")
    config = read_adapter_config(adapter_dir)
    r = float(config.get("r", 8))
    alpha = float(config.get("lora_alpha", r))
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    shards = _shard_files(base_dir)

    base_shapes: dict[str, tuple[int, ...]] = {}
    for shard in shards:
        with _SafetensorsFile(shard) as handle:
            for key in handle.keys():  # noqa: SIM118 (keys() is in file order)
                base_shapes[key] = handle.shape(key)

    with _SafetensorsFile(adapter_dir / "adapter_model.safetensors") as handle:
        adapter_shapes = {key: handle.shape(key) for key in handle.keys()}  # noqa: SIM118

    updates: dict[str, LoraUpdate] = {}
    replacements: dict[str, str] = {}
    for key in adapter_shapes:
        if ".lora_A." in key:
            base_key = _base_key(key, ".lora_A.")
            b_key = key.replace(".lora_A.", ".lora_B.")
            if b_key not in adapter_shapes:
                raise ExportError(f"The adapter is incomplete: {key} has no matching lora_B weight.")
            if base_key not in base_shapes:
                raise ExportError(
                    f"The adapter updates {base_key}, which this base model does not have: it was trained on "
                    "another model. Export it with the base it was trained on."
                )
            module = base_key[: -len(".weight")]
            rank = _pattern_value(module, rank_pattern, r)
            module_alpha = _pattern_value(module, alpha_pattern, alpha)
            scale = module_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
            out_features, in_features = adapter_shapes[b_key][0], adapter_shapes[key][1]
            expected = (in_features, out_features) if fan_in_fan_out else (out_features, in_features)
            if base_shapes[base_key] != expected:
                raise ExportError(
                    f"The adapter's update of {base_key} has shape {expected} but the base weight is "
                    f"{base_shapes[base_key]}: the adapter was trained on another model."
                )
            updates[base_key] = LoraUpdate(key, b_key, scale, fan_in_fan_out)
        elif ".modules_to_save." in key:
            module = key[: key.index(".modules_to_save.")]
            if module.startswith(_PEFT_PREFIX):
                module = module[len(_PEFT_PREFIX) :]
            base_key = f"{module}.{key.rsplit('.', 1)[-1]}"
            if base_key in base_shapes:
                replacements[base_key] = key
        elif ".lora_B." not in key and not key.endswith(".lora_magnitude_vector"):
            # A trained copy saved under the plain module name (peft's modules_to_save on save).
            plain = key[len(_PEFT_PREFIX) :] if key.startswith(_PEFT_PREFIX) else key
            if plain in base_shapes and adapter_shapes[key] == base_shapes[plain]:
                replacements[plain] = key
    if not updates and not replacements:
        raise ExportError(f"The adapter in {adapter_dir} changes no weight of the base model.")
    item = 2  # bf16 and fp16 both take two bytes
    output_bytes = sum(math.prod(shape) * item for shape in base_shapes.values())
    return MergePlan(
        updates=updates,
        replacements=replacements,
        shards=shards,
        output_bytes=output_bytes,
        tensor_count=len(base_shapes),
    )


def _merged_tensor(
    weight: torch.Tensor, update: LoraUpdate | None, adapter: dict[str, torch.Tensor], dtype: torch.dtype
) -> torch.Tensor:
    """One base tensor with its LoRA update added in fp32, stored as ``dtype`` (contiguous, for saving)."""
    import torch

    if not weight.is_floating_point():
        return weight.contiguous()
    merged = weight.to(torch.float32)
    if update is not None:
        delta = adapter[update.lora_b].to(torch.float32) @ adapter[update.lora_a].to(torch.float32)
        merged = merged.add_(delta.T if update.fan_in_fan_out else delta, alpha=update.scale)
    if dtype == torch.float16 and merged.numel() and float(merged.abs().max()) > FLOAT16_MAX:
        raise Float16RangeError("A weight of the merged model is too large for float16.")
    return merged.to(dtype).contiguous()


# safetensors' names of the torch dtypes a model folder holds.
_SAFETENSORS_DTYPES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
_TORCH_DTYPES = {code: name for name, code in _SAFETENSORS_DTYPES.items()}
_DTYPE_BYTES = {
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F64": 8,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


# safetensors itself refuses headers above 100 MB.
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def _checked_offsets(item: tuple[str, Any], data_size: int) -> tuple[int, int]:
    """A header entry's ``data_offsets``, checked to lie within the file's data (else ValueError)."""
    name, entry = item
    try:
        begin, end = (int(o) for o in entry["data_offsets"])
        dtype, shape = str(entry["dtype"]), [int(n) for n in entry["shape"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the entry of {name[:100]} is not a tensor description") from exc
    if not 0 <= begin <= end <= data_size:
        raise ValueError(f"{name[:100]} lies beyond the end of the file (it may be incomplete)")
    if dtype in _DTYPE_BYTES and math.prod(shape) * _DTYPE_BYTES[dtype] != end - begin:
        raise ValueError(f"{name[:100]} takes {end - begin:,} bytes, not what its shape {shape} needs")
    return begin, end


class _SafetensorsFile:
    """One safetensors file read a tensor at a time with plain reads.

    ``safetensors.safe_open`` memory-maps the file, and every page a merge touches then counts as this
    process's memory until the map closes: the whole shard by the end. Reading each tensor into its own
    buffer keeps only the tensor being merged.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self.handle = path.open("rb")
            size = os.fstat(self.handle.fileno()).st_size
            (length,) = struct.unpack("<Q", self.handle.read(8))
            if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise ValueError(
                    f"its header claims {length:,} bytes, but the file holds {max(size - 8, 0):,} after the length"
                )
            header = json.loads(self.handle.read(length).decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            self.entries: dict[str, dict[str, Any]] = dict(
                sorted(header.items(), key=lambda item: _checked_offsets(item, size - 8 - length)[0])
            )
        except (OSError, struct.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
            self.close()
            raise ExportError(
                f"The weights in {path.name} cannot be read ({exc}); the file may be damaged. Copy it again."
            ) from exc
        self.data_start = 8 + length

    def __enter__(self) -> _SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "handle", None) is not None:
            self.handle.close()

    def keys(self) -> list[str]:
        """Tensor names in the order their bytes appear in the file."""
        return list(self.entries)

    def dtype(self, key: str) -> str:
        """The stored dtype, as safetensors names it ("BF16", "F32" ...)."""
        return str(self.entries[key]["dtype"])

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(n) for n in self.entries[key]["shape"])

    def tensor(self, key: str) -> torch.Tensor:
        """One tensor, read from disk into memory of its own."""
        import torch

        begin, end = self.entries[key]["data_offsets"]
        self.handle.seek(self.data_start + begin)
        buffer = bytearray(end - begin)
        if self.handle.readinto(buffer) != len(buffer):
            raise ExportError(f"{self.path.name} ends early: the file is incomplete. Copy it again.")
        dtype = getattr(torch, _TORCH_DTYPES[self.dtype(key)])
        if not buffer:
            return torch.empty(self.shape(key), dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(self.shape(key))


class _SafetensorsStream:
    """Write a safetensors file one tensor at a time (``safetensors.save_file`` needs them all in memory).

    The format: an 8-byte little-endian header length, the JSON header (each tensor's dtype, shape and
    byte offsets into the data that follows), padded with spaces to a multiple of 8, then the raw
    little-endian bytes of each tensor in header order. The header is written first from ``layout``
    (key, safetensors dtype, shape), so the tensors can then be produced and written one by one.
    """

    def __init__(self, path: Path, layout: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]):
        self.layout = layout
        self.index = 0
        header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
        offset = 0
        for key, dtype, shape in layout:
            size = math.prod(shape) * _DTYPE_BYTES[dtype]
            header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)
        self.out = path.open("wb")
        self.out.write(len(encoded).to_bytes(8, "little"))
        self.out.write(encoded)

    def write(self, tensor: torch.Tensor) -> None:
        """Write the next tensor of the layout (it must have the layout's dtype and shape)."""
        import torch

        key, dtype, shape = self.layout[self.index]
        if (
            _SAFETENSORS_DTYPES.get(str(tensor.dtype).removeprefix("torch.")) != dtype
            or tuple(tensor.shape) != shape
        ):
            raise ExportError(f"Internal error: {key} came out as {tensor.dtype} {tuple(tensor.shape)}.")
        flat = tensor.contiguous().reshape(-1)
        if flat.numel():
            self.out.write(flat.view(torch.uint8).numpy().data)
        self.index += 1

    def finish(self) -> None:
        """Check every tensor was written, flush to disk and close."""
        if self.index != len(self.layout):
            raise ExportError(f"Internal error: {self.index} of {len(self.layout)} tensors were written.")
        self.out.flush()
        os.fsync(self.out.fileno())
        self.out.close()

    def close(self) -> None:
        """Close without finishing (after an error or a stop; the caller removes the file)."""
        self.out.close()


def _copy_side_files(base_dir: Path, out_dir: Path, dtype: str) -> None:
    for name in CONFIG_AND_TOKENIZER_FILES:
        source = base_dir / name
        if source.is_file():
            shutil.copy2(source, out_dir / name)
    config_file = out_dir / "config.json"
    if config_file.is_file():
        # The weights now are bf16/fp16 and no longer quantized: say so, or loaders would try to.
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.pop("quantization_config", None)
        config["torch_dtype"] = dtype
        if "dtype" in config:
            config["dtype"] = dtype
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def merge_adapter(
    base_dir: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "bfloat16",
    cancel: CancelToken | None = None,
) -> Job:
    """Merge a LoRA adapter into its full-precision base and save the result as a model folder (a job).

    Args:
        base_dir: the Hugging Face folder the adapter was trained on (a GGUF model's trainable copy).
        adapter_dir: a peft LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).
        out_dir: the merged model's folder; must not exist yet (or be empty).
        dtype: "bfloat16" (default; the dtype of trainable copies) or "float16".
        cancel: checked between tensors; a stop leaves nothing behind.

    Yields :class:`Progress` in tensors merged. Returns ``out_dir``. Peak memory is about the largest tensor
    of the base in fp32 plus the adapter.

    Raises:
        ExportError: the adapter does not belong to this base, the disk is too full, or a folder cannot be
            written (the message says which and what to do).
        JobCancelled: stopped as asked.
    """
    from safetensors.torch import load_file

    cancel = cancel or CancelToken()
    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir).absolute()
    yield Progress(0, 0, "Reading the adapter and the base model")
    plan = plan_merge(base_dir, adapter_dir, dtype)
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if out_dir.exists():
        raise ExportError(f"{out_dir} already exists. Choose another folder, or remove that one first.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir.parent).free
    if free < plan.output_bytes + _SPACE_MARGIN:
        raise ExportError(
            f"Not enough free disk space in {out_dir.parent}: the merged model needs about "
            f"{plan.output_bytes / 1e6:.0f} MB and {free / 1e6:.0f} MB are free. Free some space or choose "
            "another folder."
        )
    adapter = load_file(str(adapter_dir / "adapter_model.safetensors"))
    remove_partial_outputs(out_dir)  # a crashed merge's leftovers
    try:
        with atomic_output(out_dir) as work:
            work.mkdir()
            merged_count = yield from _write_merged_shards(plan, adapter, work, dtype, cancel)
            _copy_side_files(base_dir, work, dtype)
            (work / "desktop_dpo_merge.json").write_text(
                json.dumps(
                    {
                        "base": str(base_dir),
                        "adapter": str(adapter_dir),
                        "dtype": dtype,
                        "lora_weights_merged": merged_count,
                        "replaced_weights": len(plan.replacements),
                    },
                    indent=2,
                ),
                encoding="utf-8",
            )
            cancel.raise_if_cancelled()
    except OSError as exc:
        if exc.errno == 28:
            raise ExportError(
                f"The disk filled up while writing the merged model in {out_dir.parent}; nothing was kept. "
                "Free some space and export again."
            ) from exc
        raise
    yield Progress(plan.tensor_count, plan.tensor_count, f"Merged {merged_count} weights into {out_dir.name}")
    return out_dir


def _write_merged_shards(
    plan: MergePlan, adapter: dict[str, Any], work: Path, dtype: str, cancel: CancelToken
) -> Job:
    """Write each base shard, merged, into ``work`` (and the index of a sharded model); returns how many
    weights got a LoRA update. Yields :class:`Progress` in tensors."""
    import torch

    target_dtype = getattr(torch, dtype)
    out_code = _SAFETENSORS_DTYPES[dtype]
    total = plan.tensor_count
    done = 0
    merged_count = 0
    weight_map: dict[str, str] = {}
    for shard in plan.shards:
        with _SafetensorsFile(shard) as handle:
            keys = handle.keys()
            layout = []
            for key in keys:
                stored = handle.dtype(key)
                floating = stored in ("F32", "F16", "BF16", "F64")
                layout.append((key, out_code if floating else stored, handle.shape(key)))
            stream = _SafetensorsStream(work / shard.name, layout, {**handle.metadata, "format": "pt"})
            try:
                for key in keys:
                    cancel.raise_if_cancelled()
                    if key in plan.replacements:
                        stream.write(adapter[plan.replacements[key]].to(target_dtype))
                    else:
                        update = plan.updates.get(key)
                        stream.write(_merged_tensor(handle.tensor(key), update, adapter, target_dtype))
                        merged_count += update is not None
                    weight_map[key] = shard.name
                    done += 1
                    if done % 16 == 0 or done == total:
                        yield Progress(done, total, f"Merging {shard.name}")
                stream.finish()
            finally:
                stream.close()
    if len(plan.shards) > 1:
        index = {"metadata": {"total_size": plan.output_bytes}, "weight_map": weight_map}
        (work / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return merged_count
