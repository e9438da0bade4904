"""The model registry: what a model on disk is, whether the app can use it, and where models already are.

A model is either a Hugging Face folder (``config.json``, tokenizer files and safetensors weights) or a
single GGUF file (llama.cpp's format). One module per job:

- ``formats.py``: what the app accepts (``SUPPORTED_ARCHITECTURES``, the GGUF architectures transformers can
  dequantize, pickle suffixes, size limits).
- ``fingerprints.py``: :func:`fingerprint` identifies a model's contents from its config, tokenizer files and
  weight headers (a bounded number of bytes, whatever the model's size).
- ``inspection.py``: :func:`inspect_model` describes a model (:class:`ModelInfo`) or explains in one sentence
  why the app cannot use it (:class:`~desktop_dpo.core.errors.ModelError`). Headers only: milliseconds, no
  weights loaded.
- ``model_code.py``: :func:`find_model_code` / :func:`refuse_model_code`: desktop-dpo never runs code that
  comes with a model.
- ``registration.py``: :func:`register_model` records a model in the :class:`~desktop_dpo.core.store.Store`.
- ``discovery.py``: :func:`discover_local_models` lists models already downloaded by the Hugging Face hub,
  LM Studio and Ollama (read only).
- ``trainable_copy.py``: :func:`make_trainable_copy`, the one heavy job here: it dequantizes a GGUF once
  through transformers into a bf16 safetensors folder that training can load.

The rules about a model's files (its ``info`` keys, the training folder, where copies live) are in
``core/model_files.py``. The GUI imports this package when it builds the Models view, so torch,
transformers and gguf are imported inside functions. The names below are the registry's public API.
"""

from __future__ import annotations

from desktop_dpo.core.models.discovery import DiscoveredModel, ModelSearchDirs, discover_local_models
from desktop_dpo.core.models.fingerprints import fingerprint
from desktop_dpo.core.models.formats import GGUF_TRAINABLE_ARCHITECTURES, SUPPORTED_ARCHITECTURES
from desktop_dpo.core.models.inspection import (
    ModelInfo,
    inspect_model,
    read_safetensors_header,
    shard_file_name,
)
from desktop_dpo.core.models.model_code import find_model_code, model_code_refusal, refuse_model_code
from desktop_dpo.core.models.registration import register_model
from desktop_dpo.core.models.trainable_copy import (
    available_memory_bytes,
    make_trainable_copy,
    recorded_trainable_copy,
)

__all__ = [
    "GGUF_TRAINABLE_ARCHITECTURES",
    "SUPPORTED_ARCHITECTURES",
    "DiscoveredModel",
    "ModelInfo",
    "ModelSearchDirs",
    "available_memory_bytes",
    "discover_local_models",
    "find_model_code",
    "fingerprint",
    "inspect_model",
    "make_trainable_copy",
    "model_code_refusal",
    "read_safetensors_header",
    "recorded_trainable_copy",
    "refuse_model_code",
    "register_model",
    "shard_file_name",
]
