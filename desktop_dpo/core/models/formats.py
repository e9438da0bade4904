"""What the app accepts as a model: the architectures it trains, the weight formats, the size limits.

Shared by inspection, fingerprinting, the model-code check and discovery.
"""

from __future__ import annotations

from pathlib import Path

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

# Weight files in Python's pickle format (loading one can run code: refused unless the person opts in).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# safetensors itself refuses headers above 100 MB.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# A metadata file up to this size is read whole (the tokenizer.json of a 262k vocabulary is ~33 MB); a larger
# one, which no real model ships, is only fingerprinted by its size, head and samples, and never parsed.
WHOLE_FILE_LIMIT = 64 * 1024 * 1024


def supported_list() -> str:
    """The architectures the app can train, for a sentence: "llama, mistral, …"."""
    return ", ".join(SUPPORTED_ARCHITECTURES)


def file_size(file: Path) -> int:
    """The size of ``file`` in bytes; 0 when it is not a file or cannot be read."""
    try:
        return file.stat().st_size if file.is_file() else 0
    except OSError:
        return 0
