"""Loading the model to train: device, dtype, 4-bit NF4 (QLoRA) or full precision, the LoRA adapter, and
the device's memory (freeing it, and what to say when it runs out).

torch, transformers, peft and bitsandbytes are imported inside functions.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.dpo.config import TrainConfig, TrainingError, detect_device, smaller_settings
from desktop_dpo.core.errors import ModelError

if TYPE_CHECKING:
    import torch


def resolve_device(config: TrainConfig) -> str:
    """The device a run trains on: the one its settings name, or the best one here for "auto"."""
    import torch

    if config.device != "auto":
        if config.device == "cuda" and not torch.cuda.is_available():
            raise TrainingError(
                "These settings ask for a CUDA GPU, but torch sees none here. Choose the CPU."
            )
        return config.device
    return detect_device().kind


def resolve_quantization(config: TrainConfig, device: str) -> str:
    """The base's precision, "nf4" or "none"; "auto" is QLoRA on a GPU only.

    On the CPU a full-precision base is faster than dequantising NF4.
    """
    if config.quantization != "auto":
        return config.quantization
    return "nf4" if device == "cuda" else "none"


def compute_dtype(device: str) -> torch.dtype:
    """The dtype of the base's (and NF4's compute) weights: bf16 on a GPU that has it, else fp32."""
    import torch

    # fp32 on the CPU: bf16 matmuls there are several times slower, not faster.
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_causal_lm(folder: Path, quantization: str, device: str) -> Any:
    """A causal LM from a local folder, frozen, 4-bit NF4 when asked; never remote code, never a download.

    ``quantization`` is "nf4" (bitsandbytes, QLoRA's base) or "none"; ``device`` "cpu", "cuda" or "mps".
    Raises ModelError when the folder cannot be loaded.
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = compute_dtype(device)
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "trust_remote_code": False}
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,  # quantize the scales too: ~0.4 bit per weight saved
        )
        # On CUDA, torch's current device: the one detect_device measured the free memory of.
        kwargs["device_map"] = {"": torch.cuda.current_device()} if device == "cuda" else {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot load the model in {folder} for training: {exc}") from exc
    if quantization != "nf4":
        model.to(device)
    model.config.use_cache = False  # the cache only helps generation and costs memory here
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def attach_lora(model: Any, config: TrainConfig, quantization: str) -> Any:
    """Wrap the frozen base in a LoRA adapter (after the k-bit preparation QLoRA needs)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantization == "nf4":
        # Casts norms to fp32 and freezes the base; checkpointing is switched on below, non-reentrant.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (the frozen embeddings are fine).
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    targets: str | list[str] = config.target_modules
    if targets != "all-linear":
        targets = [name.strip() for name in targets.split(",") if name.strip()]
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=config.init_lora_weights,
    )
    torch.manual_seed(config.seed)  # the adapter's random A matrices depend on the seed only
    return get_peft_model(model, lora)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an error means the device (or the computer) ran out of memory."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_message(config: TrainConfig, device: str, where: str, saved_step: int | None) -> str:
    """What to say when a run ran out of memory ``where``: what was in use, and what to lower (smaller_settings)."""
    smaller = smaller_settings(config)
    changes = []
    if smaller.gradient_checkpointing and not config.gradient_checkpointing:
        changes.append("turn on gradient checkpointing (slower, much less memory)")
    if smaller.batch_size != config.batch_size:
        changes.append(
            f"lower the batch size to {smaller.batch_size} (gradient accumulation {smaller.grad_accum} keeps "
            "the same pairs per step)"
        )
    if smaller.max_length != config.max_length:
        changes.append(f"lower the maximum length to {smaller.max_length} tokens")
    if config.quantization != "nf4" and device == "cuda":
        changes.append("use 4-bit (NF4) quantization")
    if not changes:
        changes.append("choose a smaller model, or close other programs that use the GPU")
    saved = f" Progress up to step {saved_step} is saved." if saved_step else ""
    return (
        f"{'The GPU' if device == 'cuda' else 'The computer'} ran out of memory {where} (batch size "
        f"{config.batch_size}, maximum length {config.max_length}, LoRA rank {config.lora_r}, gradient "
        f"checkpointing {'on' if config.gradient_checkpointing else 'off'}).{saved} "
        f"Resume with smaller settings: {'; or '.join(changes)}."
    )


def free_memory(device: str) -> None:
    """Collect what is no longer referenced and hand torch's cached GPU blocks back to the driver."""
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()  # else the caching allocator keeps them, invisible to llama.cpp


@contextlib.contextmanager
def torch_settings(config: TrainConfig, device: str) -> Iterator[None]:
    """Thread count and denormal flushing for the session, put back afterwards."""
    import torch

    threads = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    # Arithmetic on denormal floats (tiny values, e.g. far down a softmax's backward) is slow on CPUs;
    # flushing them to zero, as GPUs do, took about a fifth off the CPU time of a training step in
    # bench/train_vs_trl.py and changes no result that matters.
    flush = device == "cpu" and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flush:
            torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def drop_frame_locals(exc: BaseException) -> None:
    """Clear the local variables of the finished frames an error passed through (and of its causes).

    A traceback keeps every frame it passed through alive, locals included: after a failed step that is
    the step's activations and autograd graph, which hold the model's weights, for as long as anyone
    keeps the error (the driver shows it, logs it, records it). Line numbers stay for the log.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # frames still running are skipped
        pending.extend((current.__cause__, current.__context__))
