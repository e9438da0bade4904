"""The model registry: fingerprints, inspection with clear refusals, registration, discovery of models already
on disk, and the trainable copy of a GGUF.

Model folders and GGUF files are written by hand here (a safetensors header is 8 bytes and some JSON; the
gguf package's writer makes tiny GGUFs), so most tests need neither torch nor a real model. The trainable
copy uses the tiny model fixtures (``tiny_model_dir``, ``tiny_gguf``: tests/plugins/tiny_model.py, made with
the project's own HF -> GGUF converter).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from desktop_dpo.core.errors import JobCancelled, ModelError
from desktop_dpo.core.jobs import CancelToken, Progress, run_job
from desktop_dpo.core.model_files import (
    TRAINABLE_COPY_KEY,
    TRAINABLE_COPY_MARKER,
    find_training_folder,
    is_partial_output,
)
from desktop_dpo.core.models import (
    SUPPORTED_ARCHITECTURES,
    DiscoveredModel,
    ModelSearchDirs,
    discover_local_models,
    fingerprint,
    fingerprints,
    inspect_model,
    make_trainable_copy,
    recorded_trainable_copy,
    register_model,
    trainable_copy,
)

# ---------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------

_DTYPE_SIZES = {"F32": 4, "BF16": 2, "F16": 2}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], *, sparse: bool = False) -> None:
    """A valid safetensors file: ``tensors`` maps name -> (dtype, shape); data is a repeating byte pattern
    (or a hole, for ``sparse``, so a file of gigabytes takes no disk space)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = int(np.prod(shape)) * _DTYPE_SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        if sparse:
            handle.truncate(8 + len(raw) + offset)
        else:
            handle.write((bytes(range(251)) * (offset // 251 + 1))[:offset])


def write_hf_folder(folder: Path, *, config: dict | None = None, tensors: dict | None = None) -> Path:
    """A small llama-like HF folder: config, tokenizer config, one safetensors file."""
    folder.mkdir(parents=True, exist_ok=True)
    base = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "max_position_embeddings": 2048}
    (folder / "config.json").write_text(json.dumps({**base, **(config or {})}))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": False}})
    )
    (folder / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    if tensors is None:
        tensors = {"embed.weight": ("BF16", [16, 8]), "norm.weight": ("F32", [8])}
    if tensors:
        write_safetensors(folder / "model.safetensors", tensors)
    return folder


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    name: str = "Tiny test",
    chat_template: str | None = None,
    quantized: bool = False,
    context_length: int = 128,
) -> Path:
    """A tiny GGUF written with the gguf package: one F32 tensor, and a Q8_0 one if ``quantized``."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantized else gguf.LlamaFileType.ALL_F32)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.arange(8 * 32, dtype=np.float32).reshape(8, 32))
    if quantized:
        blocks = gguf.quants.quantize(np.ones((4, 64), np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(
            "blk.0.ffn_up.weight", blocks, raw_shape=blocks.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(ModelError) as caught:
        inspect_model(path, **kwargs)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------------------------


def test_fingerprint_ignores_what_does_not_change_the_model(tmp_path):
    folder = write_hf_folder(tmp_path / "m")
    before = fingerprint(folder)
    assert fingerprint(folder) == before
    (folder / "README.md").write_text("A new model card")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs")
    os.utime(folder / "model.safetensors", (1, 1))
    assert fingerprint(folder) == before
    # The same contents elsewhere are the same model.
    copy = write_hf_folder(tmp_path / "elsewhere")
    assert fingerprint(copy) == before


@pytest.mark.parametrize(
    "change",
    [
        "config",
        "tokenizer",
        "chat_template",
        "tensor_shape",
        "tensor_dtype",
        "weights_appended",
        "weight_bytes",
    ],
)
def test_fingerprint_changes_with_what_changes_the_model(tmp_path, change):
    folder = write_hf_folder(tmp_path / "m")
    before = fingerprint(folder)
    weights = folder / "model.safetensors"
    if change == "config":
        (folder / "config.json").write_text(
            json.dumps({"model_type": "llama", "max_position_embeddings": 4096})
        )
    elif change == "tokenizer":
        (folder / "tokenizer.json").write_text('{"model": {"type": "Unigram"}}')
    elif change == "chat_template":
        (folder / "chat_template.jinja").write_text("{{ messages }}")
    elif change == "tensor_shape":
        write_safetensors(weights, {"embed.weight": ("BF16", [8, 16]), "norm.weight": ("F32", [8])})
    elif change == "tensor_dtype":
        write_safetensors(weights, {"embed.weight": ("F16", [16, 8]), "norm.weight": ("F32", [8])})
    elif change == "weights_appended":
        with weights.open("ab") as handle:
            handle.write(b"\0" * 8)
    elif change == "weight_bytes":  # same size, same header: a fine-tune of the same model
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    assert fingerprint(folder) != before


def test_fingerprint_of_a_gguf_follows_its_contents_not_its_name(tmp_path):
    first = write_gguf(tmp_path / "a.gguf")
    renamed = tmp_path / "sha256-0123"
    renamed.write_bytes(first.read_bytes())
    assert fingerprint(first) == fingerprint(renamed)
    assert fingerprint(write_gguf(tmp_path / "b.gguf", name="Another name")) != fingerprint(first)
    assert fingerprint(write_gguf(tmp_path / "c.gguf", context_length=256)) != fingerprint(first)


def _count_reads(monkeypatch) -> dict[str, int]:
    """Make the fingerprint module count every byte it reads through open()."""
    counter = {"bytes": 0}
    real_open = open

    class Counting:
        def __init__(self, handle):
            self._handle = handle

        def read(self, *args):
            data = self._handle.read(*args)
            counter["bytes"] += len(data)
            return data

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

    monkeypatch.setattr(fingerprints, "open", lambda *a, **k: Counting(real_open(*a, **k)), raising=False)
    return counter


def test_fingerprint_reads_a_few_megabytes_of_a_multi_gigabyte_model(tmp_path, monkeypatch):
    folder = write_hf_folder(tmp_path / "big", tensors={})
    # 3 GiB of weights as a sparse file: no disk space used, but reading it all would take seconds.
    write_safetensors(folder / "model.safetensors", {"embed.weight": ("F32", [49152, 16384])}, sparse=True)
    gguf_file = write_gguf(tmp_path / "big.gguf")
    with gguf_file.open("r+b") as handle:
        handle.truncate(3 * 1024**3)
    counter = _count_reads(monkeypatch)
    fingerprint(folder)
    assert (folder / "model.safetensors").stat().st_size > 3 * 1024**3
    assert counter["bytes"] < 2 * 1024**2
    counter["bytes"] = 0
    fingerprint(gguf_file)
    assert counter["bytes"] < 2 * 1024**2


def test_fingerprint_of_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="nothing is there"):
        fingerprint(tmp_path / "gone")


# ---------------------------------------------------------------------------------------------------------
# Inspect: what a person sees about a model
# ---------------------------------------------------------------------------------------------------------


def test_inspect_hf_folder(tmp_path):
    folder = write_hf_folder(
        tmp_path / "hub" / "models--acme--tiny-chat" / "snapshots" / "abc123",
        tensors={
            "embed.weight": ("BF16", [16, 8]),
            "norm.weight": ("F32", [8]),
            "head.weight": ("BF16", [4, 8]),
        },
    )
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    info = inspect_model(folder)
    assert info.kind == "hf"
    assert info.name == "acme/tiny-chat"  # the repo id, not the revision hash
    assert info.architecture == "llama"
    assert info.parameter_count == 16 * 8 + 8 + 4 * 8
    assert info.dtype == "BF16"  # most parameters
    assert info.context_length == 2048
    assert info.has_chat_template and not info.uses_default_template
    assert info.chat_template.startswith("{% for m in messages %}")
    assert (info.bos_token, info.eos_token) == ("<s>", "</s>")
    assert info.weights_format == "safetensors" and info.trainable and not info.quantized
    assert info.size_bytes >= (folder / "model.safetensors").stat().st_size
    assert json.loads(json.dumps(info.to_dict())) == info.to_dict()  # storable as the row's info


def test_inspect_reads_templates_and_context_where_transformers_puts_them(tmp_path):
    folder = write_hf_folder(
        tmp_path / "gemma",
        config={
            "model_type": "gemma3",
            "max_position_embeddings": None,
            "text_config": {"max_position_embeddings": 32768},
        },
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}
        )
    )
    info = inspect_model(folder)
    assert info.context_length == 32768
    assert info.chat_template == "D"
    base = write_hf_folder(tmp_path / "base")
    info = inspect_model(base)
    assert not info.has_chat_template and info.chat_template is None
    assert info.uses_default_template  # the app will render with its User:/Assistant: layout


def test_inspect_sharded_folder_counts_every_shard(tmp_path):
    folder = write_hf_folder(tmp_path / "sharded", tensors={})
    write_safetensors(folder / "model-00001-of-00002.safetensors", {"a": ("BF16", [10, 10])})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {"b": ("BF16", [5])})
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert inspect_model(folder).parameter_count == 105
    (folder / "model-00002-of-00002.safetensors").unlink()
    message = _error(folder)
    assert "incomplete" in message and "1 of its 2" in message and "model-00002-of-00002" in message


def test_inspect_gguf(tmp_path):
    info = inspect_model(write_gguf(tmp_path / "chat.gguf", chat_template="{{ messages }}", quantized=True))
    assert info.kind == "gguf" and info.weights_format == "gguf"
    assert info.name == "Tiny test" and info.architecture == "llama"
    assert info.parameter_count == 8 * 32 + 4 * 64
    assert info.context_length == 128
    assert info.dtype == "Q8_0" and info.quantized
    assert info.has_chat_template and info.chat_template == "{{ messages }}"
    assert not info.trainable and info.can_make_trainable_copy
    plain = inspect_model(write_gguf(tmp_path / "plain.gguf"))
    assert plain.dtype == "F32" and not plain.quantized and plain.uses_default_template
    # Any GGUF llama.cpp runs is fine for chat; only some can be turned back into a trainable model.
    assert not inspect_model(write_gguf(tmp_path / "m.gguf", arch="mamba")).can_make_trainable_copy


def test_a_gguf_is_recognised_by_its_contents_whatever_its_name(tmp_path):
    blob = tmp_path / "sha256-4fe1"
    blob.write_bytes(write_gguf(tmp_path / "x.gguf", name="").read_bytes())
    info = inspect_model(blob)
    assert info.kind == "gguf" and info.name == "sha256-4fe1"


# ---------------------------------------------------------------------------------------------------------
# Inspect: every refusal says what is wrong and what to do
# ---------------------------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    assert "nothing is there" in _error(tmp_path / "nope")


def test_folder_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "holds no model weights" in _error(tmp_path / "empty")
    config_only = write_hf_folder(tmp_path / "config-only", tensors={})
    assert "holds no model weights" in _error(config_only)


def test_weights_without_config(tmp_path):
    folder = write_hf_folder(tmp_path / "m")
    (folder / "config.json").unlink()
    assert "no config.json" in _error(folder)


def test_folder_of_ggufs_names_the_files(tmp_path):
    folder = tmp_path / "lmstudio-repo"
    folder.mkdir()
    write_gguf(folder / "model-Q4_K_M.gguf")
    message = _error(folder)
    assert "GGUF files" in message and "model-Q4_K_M.gguf" in message


def test_lora_adapter_folder(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    write_safetensors(folder / "adapter_model.safetensors", {"lora_A": ("F32", [4, 4])})
    assert "LoRA adapter" in _error(folder)


def test_one_file_of_a_folder(tmp_path):
    folder = write_hf_folder(tmp_path / "m")
    message = _error(folder / "model.safetensors")
    assert "Choose the folder" in message and str(folder) in message


def test_not_a_model_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a model" in _error(tmp_path / "notes.txt")


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    folder = write_hf_folder(tmp_path / "bert", config={"model_type": "bert"})
    message = _error(folder)
    assert "'bert'" in message and "cannot train or export" in message
    assert all(arch in message for arch in ("llama", "qwen3", "gemma3_text", "phi3"))
    assert "unknown architecture" in _error(write_hf_folder(tmp_path / "none", config={"model_type": None}))


def test_custom_code_is_refused_with_the_reason(tmp_path):
    folder = write_hf_folder(
        tmp_path / "custom", config={"auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}
    )
    message = _error(folder)
    assert "custom code" in message and "never runs code" in message
    assert "config.json has an auto_map (AutoModelForCausalLM: modeling_x.X)" in message


def test_prequantized_folder_is_refused(tmp_path):
    folder = write_hf_folder(tmp_path / "gptq", config={"quantization_config": {"quant_method": "gptq"}})
    message = _error(folder)
    assert "already quantized (gptq)" in message and "full-precision original" in message


def test_pickle_only_weights_need_the_persons_consent(tmp_path):
    folder = write_hf_folder(tmp_path / "old", config={"torch_dtype": "float16"}, tensors={})
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "training_args.bin").write_bytes(b"x")
    message = _error(folder)
    assert "pickle" in message and "pytorch_model.bin" in message and "trust" in message
    info = inspect_model(folder, allow_pickle=True)
    assert info.weights_format == "pickle" and info.parameter_count is None and info.dtype == "F16"


@pytest.mark.parametrize("damage", ["length_past_end", "not_json", "not_an_object", "too_short"])
def test_damaged_safetensors_header(tmp_path, damage):
    folder = write_hf_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    if damage == "length_past_end":
        weights.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    elif damage == "not_json":
        weights.write_bytes(struct.pack("<Q", 8) + b"\xff\xfe{oops")
    elif damage == "not_an_object":
        weights.write_bytes(struct.pack("<Q", 2) + b"[]")
    else:
        weights.write_bytes(b"\x01\x02")
    message = _error(folder)
    assert "model.safetensors is damaged" in message and "Download or copy the model again" in message


def test_truncated_safetensors_data(tmp_path):
    folder = write_hf_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    message = _error(folder)
    assert "incomplete" in message and "shorter than its header says" in message


def test_truncated_gguf(tmp_path):
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:-1])  # the last tensor's data is one byte short
    message = _error(cut)
    assert "incomplete" in message and f"{len(whole) - 1:,} bytes" in message
    cut.write_bytes(whole[:200])  # the header itself ends early
    assert "damaged" in _error(cut)


# ---------------------------------------------------------------------------------------------------------
# Register
# ---------------------------------------------------------------------------------------------------------


def test_register_model_records_and_updates_one_row(memory_store, tmp_path):
    folder = write_hf_folder(tmp_path / "m")
    row = register_model(memory_store, folder)
    assert row.kind == "hf" and row.source == "user" and row.name == "m"
    assert row.path == str(folder.absolute())
    assert row.fingerprint == fingerprint(folder)
    assert row.info["parameter_count"] == 16 * 8 + 8 and row.info["architecture"] == "llama"
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 4096}))
    again = register_model(memory_store, folder, source="hf_cache", name="Tiny llama")
    assert again.id == row.id and again.name == "Tiny llama" and again.source == "hf_cache"
    assert again.info["context_length"] == 4096 and again.fingerprint != row.fingerprint
    assert len(memory_store.list_models()) == 1


def test_register_refuses_without_storing(memory_store, tmp_path):
    folder = write_hf_folder(tmp_path / "bert", config={"model_type": "bert"})
    with pytest.raises(ModelError, match="'bert'"):
        register_model(memory_store, folder)
    assert memory_store.list_models() == []


def test_register_gguf_and_opt_in_pickle(memory_store, tmp_path):
    row = register_model(memory_store, write_gguf(tmp_path / "a.gguf"), source="lmstudio")
    assert row.kind == "gguf" and row.name == "Tiny test" and row.info["dtype"] == "F32"
    folder = write_hf_folder(tmp_path / "old", tensors={})
    (folder / "pytorch_model.bin").write_bytes(b"weights")
    with pytest.raises(ModelError, match="pickle"):
        register_model(memory_store, folder)
    assert register_model(memory_store, folder, allow_pickle=True).info["weights_format"] == "pickle"


# ---------------------------------------------------------------------------------------------------------
# Discover models already on disk
# ---------------------------------------------------------------------------------------------------------


def _hf_snapshot(hub: Path, repo: str, revision: str, *, main: bool = True) -> Path:
    """A hub-cache repo as huggingface_hub lays it out: files in blobs/, symlinked from snapshots/<rev>/."""
    root = hub / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir(exist_ok=True)
    if main:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(revision)
    return snapshot


def _link_blob(snapshot: Path, name: str, data: bytes) -> None:
    blob = snapshot.parent.parent / "blobs" / f"{abs(hash((name, data))):x}"
    blob.write_bytes(data)
    (snapshot / name).symlink_to(blob)


@pytest.fixture
def fake_caches(tmp_path) -> ModelSearchDirs:
    hub = tmp_path / "hf" / "hub"
    # A complete model on its main revision (an older snapshot beside it is not listed).
    old = _hf_snapshot(hub, "acme/tiny", "0" * 40)
    write_hf_folder(old)
    good = _hf_snapshot(hub, "acme/tiny", "1" * 40)
    write_hf_folder(tmp_path / "src")
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        _link_blob(good, name, (tmp_path / "src" / name).read_bytes())
    (hub / "models--acme--tiny" / "refs" / "main").write_text("1" * 40)
    # An unfinished download: a dangling weight link.
    partial = _hf_snapshot(hub, "acme/partial", "2" * 40)
    _link_blob(partial, "config.json", b'{"model_type": "llama"}')
    (partial / "model.safetensors").symlink_to(partial.parent.parent / "blobs" / "missing")
    # A GGUF repo: a model, its vision projector and a split model.
    ggufs = _hf_snapshot(hub, "acme/tiny-GGUF", "3" * 40)
    write_gguf(ggufs / "tiny-Q8_0.gguf")
    write_gguf(ggufs / "mmproj-tiny-f16.gguf")
    write_gguf(ggufs / "big-00001-of-00002.gguf")
    write_gguf(ggufs / "big-00002-of-00002.gguf")
    (hub / "datasets--acme--data").mkdir()

    lmstudio = tmp_path / "lmstudio" / "models"
    (lmstudio / "lmstudio-community" / "Qwen3-0.6B-GGUF").mkdir(parents=True)
    write_gguf(lmstudio / "lmstudio-community" / "Qwen3-0.6B-GGUF" / "Qwen3-0.6B-Q4_K_M.gguf", arch="qwen3")

    ollama = tmp_path / "ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    model_digest = "a" * 64
    write_gguf(ollama / "blobs" / f"sha256-{model_digest}")
    (ollama / "blobs" / f"sha256-{'b' * 64}").write_text("{{ .Prompt }}")

    def manifest(rel: str, digest: str) -> None:
        path = ollama / "manifests" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        layers = [
            {
                "mediaType": "application/vnd.ollama.image.template",
                "digest": f"sha256:{'b' * 64}",
                "size": 13,
            },
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 1},
        ]
        path.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))

    manifest("registry.ollama.ai/library/llama3.2/1b", model_digest)
    manifest("registry.ollama.ai/someone/tuned/latest", model_digest)  # a second tag of the same blob
    manifest("registry.ollama.ai/library/gone/latest", "c" * 64)  # blob deleted
    (ollama / "manifests" / "registry.ollama.ai" / "library" / "broken").mkdir()
    (ollama / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest").write_text("{not json")
    return ModelSearchDirs(hf_hub=(hub,), lmstudio=(lmstudio, tmp_path / "absent"), ollama=(ollama,))


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))} | {
        str(root): (0, root.stat().st_mtime_ns)
    }


def test_discovers_models_in_hf_cache_lmstudio_and_ollama_without_writing(fake_caches, tmp_path):
    before = _tree(tmp_path)
    found = discover_local_models(fake_caches)
    assert _tree(tmp_path) == before  # read-only: nothing created, changed or touched

    by_label = {m.label: m for m in found}
    hub = fake_caches.hf_hub[0]
    tiny = by_label["acme/tiny"]
    assert tiny == DiscoveredModel(
        "acme/tiny",
        hub / "models--acme--tiny" / "snapshots" / ("1" * 40),
        "hf",
        "hf_cache",
        tiny.size_bytes,
        "llama",
    )
    assert tiny.size_bytes == (tiny.path / "model.safetensors").stat().st_size
    gguf_repo = hub / "models--acme--tiny-GGUF" / "snapshots" / ("3" * 40)
    assert by_label["acme/tiny-GGUF/tiny-Q8_0.gguf"].path == gguf_repo / "tiny-Q8_0.gguf"
    assert by_label["acme/tiny-GGUF/big-00001-of-00002.gguf"].kind == "gguf"

    lm = by_label["lmstudio-community/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q4_K_M.gguf"]
    assert lm.source == "lmstudio" and lm.kind == "gguf"

    ollama_root = fake_caches.ollama[0]
    llama = by_label["llama3.2:1b"]
    assert llama.source == "ollama" and llama.path == ollama_root / "blobs" / ("sha256-" + "a" * 64)
    # Not listed: an older revision, an unfinished download, a vision projector, a second split part, a second
    # tag of a blob already listed (a path is registered once), a manifest whose blob is gone, a broken
    # manifest, a dataset.
    assert sorted(by_label) == [
        "acme/tiny",
        "acme/tiny-GGUF/big-00001-of-00002.gguf",
        "acme/tiny-GGUF/tiny-Q8_0.gguf",
        "llama3.2:1b",
        "lmstudio-community/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q4_K_M.gguf",
    ]
    # Every listed model can be inspected as found.
    for model in found:
        assert inspect_model(model.path).kind == model.kind


def test_discovery_of_nothing(tmp_path):
    empty = ModelSearchDirs(hf_hub=(tmp_path / "a",), lmstudio=(tmp_path / "b",), ollama=(tmp_path / "c",))
    assert discover_local_models(empty) == []


def test_default_search_dirs_follow_the_tools_environment_variables(tmp_path):
    home = tmp_path / "home"
    dirs = ModelSearchDirs.default(environ={}, home=home)
    assert dirs.hf_hub == (home / ".cache" / "huggingface" / "hub",)
    assert dirs.lmstudio == (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models")
    assert dirs.ollama[0] == home / ".ollama" / "models"
    assert ModelSearchDirs.default({"HF_HOME": "/x/hf"}, home).hf_hub == (Path("/x/hf/hub"),)
    env = {"HF_HOME": "/x/hf", "HF_HUB_CACHE": "/y/hub", "OLLAMA_MODELS": "/z/ollama"}
    dirs = ModelSearchDirs.default(env, home)
    assert dirs.hf_hub == (Path("/y/hub"),) and dirs.ollama == (Path("/z/ollama"),)
    assert ModelSearchDirs.default({"XDG_CACHE_HOME": "/c"}, home).hf_hub == (Path("/c/huggingface/hub"),)


def test_supported_architectures_cover_the_common_small_models():
    for arch in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi3"):
        assert arch in SUPPORTED_ARCHITECTURES


# ---------------------------------------------------------------------------------------------------------
# Trainable copy: refusals (no transformers needed)
# ---------------------------------------------------------------------------------------------------------


def test_trainable_copy_refuses_a_gguf_transformers_cannot_read(tmp_path):
    with pytest.raises(ModelError, match=r"'mamba' GGUF.*still chat"):
        run_job(make_trainable_copy(write_gguf(tmp_path / "m.gguf", arch="mamba"), tmp_path / "copy"))
    assert not (tmp_path / "copy").exists()


def test_a_gguf_whose_tokenizer_transformers_cannot_build_is_refused_in_words(tmp_path, monkeypatch):
    """The tokenizers library raises a bare Exception (not ValueError) for a vocabulary it cannot build, as
    for a Gemma GGUF converted from a folder without tokenizer.model: the person reads what to do instead,
    and nothing is left half-written."""
    import transformers

    def unbuildable(*_args, **_kwargs):
        raise Exception("Error while initializing BPE: Token `\n` out of vocabulary")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", unbuildable)
    with pytest.raises(ModelError) as caught:
        run_job(make_trainable_copy(write_gguf(tmp_path / "m.gguf"), tmp_path / "copies" / "m"))
    assert str(caught.value).startswith(
        "transformers could not read the tokenizer of m.gguf, so it cannot be made trainable: Error while "
        "initializing BPE"
    )
    assert str(caught.value).endswith(
        "You can still chat with it; to train, add the Hugging Face folder it was made from in Models "
        "(Add a Hugging Face folder…) and train that."
    )
    assert list((tmp_path / "copies").iterdir()) == []


def test_trainable_copy_checks_memory_and_disk_first(tmp_path, monkeypatch):
    gguf_file = write_gguf(tmp_path / "m.gguf")
    monkeypatch.setattr(trainable_copy, "available_memory_bytes", lambda: 1024)
    with pytest.raises(ModelError, match=r"needs about .* GiB of free memory .* Close other programs"):
        run_job(make_trainable_copy(gguf_file, tmp_path / "copies" / "m"))
    monkeypatch.setattr(trainable_copy, "available_memory_bytes", lambda: 64 * 1024**3)
    monkeypatch.setattr(trainable_copy.shutil, "disk_usage", lambda _path: _Usage(free=0))
    with pytest.raises(ModelError, match=r"free disk space in .* Free some space"):
        run_job(make_trainable_copy(gguf_file, tmp_path / "copies" / "m"))
    assert list((tmp_path / "copies").iterdir()) == []


class _Usage:
    def __init__(self, free: int):
        self.total = self.used = 0
        self.free = free


def test_trainable_copy_does_not_overwrite_another_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="already exists and is not a trainable copy"):
        run_job(make_trainable_copy(write_gguf(tmp_path / "m.gguf"), out))
    assert (out / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------------------
# Trainable copy of a real (tiny) GGUF, made by llama.cpp's converter
# ---------------------------------------------------------------------------------------------------------

_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Café, naïve, Zürich: 12 + 30 = 42!",
    "A story about a dragon 🐉 and a knight.",
]


def test_trainable_copy_is_the_original_model_in_bf16(tiny_model_dir, tiny_gguf, tmp_path, memory_store):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "models" / "tiny-trainable"
    result, events = run_job(make_trainable_copy(tiny_gguf, out))
    assert result == out
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].fraction == 1.0
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    assert [p.name for p in out.parent.iterdir()] == ["tiny-trainable"]  # no temporary folder left

    info = inspect_model(out)
    assert info.kind == "hf" and info.trainable and info.dtype == "BF16" and info.architecture == "llama"
    assert info.parameter_count == inspect_model(tiny_gguf).parameter_count
    assert info.chat_template == inspect_model(tiny_model_dir).chat_template

    # Every weight is the original's, rounded to bf16: the GGUF round trip loses nothing else.
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    copy = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    original_weights = original.state_dict()
    copy_weights = copy.state_dict()
    assert copy_weights.keys() == original_weights.keys()
    for name, tensor in copy_weights.items():
        torch.testing.assert_close(tensor, original_weights[name].to(torch.bfloat16).float(), rtol=0, atol=0)

    # The tokenizer splits text exactly as the original does, and gives the text back.
    original_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    copy_tokenizer = AutoTokenizer.from_pretrained(out)
    assert (copy_tokenizer.bos_token, copy_tokenizer.eos_token) == ("<s>", "</s>")
    for text in _TEXTS:
        ids = copy_tokenizer(text).input_ids
        assert ids == original_tokenizer(text).input_ids
        assert copy_tokenizer.decode(ids, skip_special_tokens=True) == text

    # Same predictions: the copy's logits are those of the original with its weights rounded to bf16, and
    # within that rounding of the fp32 original's.
    ids = torch.tensor([original_tokenizer(_TEXTS[0]).input_ids])
    with torch.no_grad():
        expected = original(ids).logits
        got = copy(ids).logits
        for parameter in original.parameters():
            parameter.copy_(parameter.to(torch.bfloat16).float())
        rounded = original(ids).logits
    torch.testing.assert_close(got, rounded, rtol=1e-5, atol=1e-5)
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()

    # Registered as a model of its own, with the GGUF as its parent.
    gguf_row = register_model(memory_store, tiny_gguf)
    row = register_model(memory_store, out, name="tiny (trainable)", parent_model_id=gguf_row.id)
    assert row.kind == "hf" and row.parent_model_id == gguf_row.id

    # Asked again for the same GGUF: the finished copy is reused, not rebuilt.
    marker = out / TRAINABLE_COPY_MARKER
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again, _ = run_job(make_trainable_copy(tiny_gguf, out))
    assert again == out and (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads(marker.read_text())["source_fingerprint"] == fingerprint(tiny_gguf)


@pytest.mark.parametrize("stop_after", [0, 1, 2, 3])
def test_stopping_a_trainable_copy_leaves_no_partial_folder(tiny_gguf, tmp_path, stop_after):
    token = CancelToken()
    out = tmp_path / "models" / "tiny-trainable"
    job = make_trainable_copy(tiny_gguf, out, cancel=token)
    for event in job:
        if isinstance(event, Progress) and event.done == stop_after:
            token.cancel()
            break
    with pytest.raises(JobCancelled):
        run_job(job)
    assert list(out.parent.iterdir()) == []


def test_an_abandoned_trainable_copy_cleans_up(tiny_gguf, tmp_path):
    out = tmp_path / "models" / "tiny-trainable"
    job = make_trainable_copy(tiny_gguf, out)
    for event in job:
        if isinstance(event, Progress) and event.done == 3:  # weights loaded, temporary folder in use
            break
    assert [p for p in out.parent.iterdir() if is_partial_output(p)], "the copy was under way"
    job.close()  # the driver went away (e.g. the app closed)
    assert list(out.parent.iterdir()) == []


def test_the_recorded_trainable_copy_is_where_training_looks_and_a_removed_model_is_said(
    tiny_gguf, tmp_path, memory_store
):
    model = register_model(memory_store, tiny_gguf, name="tiny")
    row, _events = run_job(recorded_trainable_copy(memory_store, model, tmp_path / "copies" / "tiny"))
    assert row.info[TRAINABLE_COPY_KEY] == str(tmp_path / "copies" / "tiny")
    assert find_training_folder(row) == tmp_path / "copies" / "tiny"  # training loads it, nobody else records

    second = tmp_path / "second.gguf"
    second.write_bytes(tiny_gguf.read_bytes())
    other = register_model(memory_store, second, name="again")
    memory_store.remove_model(other.id)
    with pytest.raises(ModelError, match="removed meanwhile"):
        run_job(recorded_trainable_copy(memory_store, other, tmp_path / "copies" / "again"))
