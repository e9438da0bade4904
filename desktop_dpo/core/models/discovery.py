"""Models already on this computer: :func:`discover_local_models` lists those the Hugging Face hub, LM Studio
and Ollama downloaded. It only reads their folders, never writes to them."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.models.formats import file_size

if TYPE_CHECKING:
    pass

OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


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
            size_bytes=sum(file_size(p) for p in weights),
            architecture=architecture if isinstance(architecture, str) else None,
        )
    for file in sorted(snapshot.rglob("*.gguf")):
        if _listable_gguf(file):
            rel = file.relative_to(snapshot).as_posix()
            yield DiscoveredModel(f"{label}/{rel}", file, "gguf", "hf_cache", file_size(file))


def _listable_gguf(file: Path) -> bool:
    """A complete GGUF language model: not a vision projector, and only the first part of a split file."""
    if not file.is_file() or file.name.lower().startswith("mmproj"):
        return False
    shard = _SHARD_RE.search(file.name)
    return shard is None or int(shard.group(1)) == 1


def _discover_lmstudio(root: Path) -> Iterator[DiscoveredModel]:
    for file in sorted(root.rglob("*.gguf")):
        if _listable_gguf(file):
            yield DiscoveredModel(
                file.relative_to(root).as_posix(), file, "gguf", "lmstudio", file_size(file)
            )


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
                yield DiscoveredModel(label, blob, "gguf", "ollama", file_size(blob))
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
