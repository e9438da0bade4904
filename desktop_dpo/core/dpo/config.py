"""How a run trains: :class:`TrainConfig` (stored as JSON in the run row), its validation, and the presets.

A preset is the settings for a device and a model, with the reason in words a person can check
(:func:`preset_for` is a pure function of the free memory and the model's shape; :func:`default_preset`
detects the device). :func:`smaller_settings` is what to resume with after running out of memory, and
:func:`parse_reference` reads a run's ``reference`` (the base with its adapter off, or a registered model).

Light on purpose: the GUI imports it at start-up. torch is imported inside :func:`detect_device` only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.wording import listed, plural

GIB = 1024**3


class TrainingError(DesktopDpoError):
    """A training run cannot start or go on; the message says what to change."""


class TrainingOutOfMemoryError(TrainingError):
    """The device ran out of memory. ``suggested`` holds smaller settings to resume with."""

    def __init__(self, message: str, suggested: TrainConfig):
        super().__init__(message)
        self.suggested = suggested


# Losses that compare the two answers under the policy alone: no reference pass and no reference cache.
REFERENCE_FREE_LOSS_TYPES = ("orpo", "simpo")
SFT_PHASES = ("off", "rewrites", "rewrites_and_chosen")  # what the supervised phase trains on (sft_phase.py)
LOSS_TYPES = ("sigmoid", "ipo", "hinge", "kto", *REFERENCE_FREE_LOSS_TYPES)  # kto: single labels (kto.py)


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains. Stored as JSON in the run row; every field has a safe default."""

    # DPO
    beta: float = 0.1  # β: how strongly the policy is held near the reference (higher = smaller changes)
    loss_type: str = "sigmoid"  # "sigmoid" (DPO), "ipo", "hinge" (loss.py), or "orpo", "simpo" (no reference)
    label_smoothing: float = 0.0  # assumed share of wrongly judged pairs (conservative DPO); sigmoid only
    sft_weight: float = 0.0  # weight of an SFT term on the chosen answers (RPO; TRL's "sft" loss); 0 = off
    # SFT start (core/dpo/sft_phase.py): a supervised phase on demonstrations before the preference phase,
    # training the same adapter; "off", "rewrites" (the person's edited answers) or "rewrites_and_chosen"
    sft_phase: str = "off"
    sft_epochs: int = 1  # passes over the demonstrations in the supervised phase
    # reference-free losses (core/dpo/reference_free.py): no reference model at all
    orpo_lambda: float = 0.1  # ORPO's λ: odds-ratio term weight next to the NLL (TRL's ORPOConfig.beta)
    simpo_beta: float = 2.0  # SimPO's β, the reward scale (TRL's CPOConfig.beta)
    simpo_gamma: float = 1.0  # SimPO's target reward margin γ (TRL's simpo_gamma; paper: γ/β ≈ 0.5)
    # KTO (core/dpo/kto.py): weights of the desirable and undesirable answers; None = balanced for the data
    desirable_weight: float | None = None  # λ_D
    undesirable_weight: float | None = None  # λ_U
    # optimisation
    lr: float = 1e-4  # peak learning rate of the LoRA weights (AdamW)
    epochs: int = 2  # passes over the training pairs
    batch_size: int = 1  # pairs per forward pass (each pair is two rows: chosen and rejected)
    grad_accum: int = 8  # forward passes per optimizer step (pairs per step = batch_size × grad_accum)
    warmup_ratio: float = 0.1  # share of the steps over which the learning rate climbs from 0 to lr
    scheduler: str = "cosine"  # decay after warm-up: "cosine" or "linear" (both end at 0)
    max_grad_norm: float = 1.0  # gradients are clipped to this total norm (keeps one odd batch from wrecking)
    weight_decay: float = 0.0  # AdamW weight decay on the LoRA weights
    # sequences
    max_length: int = 512  # tokens per sequence (prompt + response); longer responses are cut and reported
    max_prompt_length: int = 256  # prompt tokens kept (older turns dropped first)
    # LoRA
    lora_r: int = 16  # adapter rank: capacity of the change (and its size on disk)
    lora_alpha: int = 32  # adapter scale numerator (the update is scaled by alpha / r)
    lora_dropout: float = 0.05  # dropout on the adapter's input during training
    target_modules: str = "all-linear"  # which layers get an adapter ("all-linear" or comma-separated names)
    init_lora_weights: bool = (
        True  # True: the adapter starts as a no-op (B = 0); False: random (tests, benches)
    )
    # memory and speed
    quantization: str = "auto"  # "nf4" (QLoRA, 4-bit base), "none" (full precision); "auto": nf4 on CUDA only
    gradient_checkpointing: bool = (
        False  # recompute activations in the backward pass: less memory, ~30% slower
    )
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    device: str = "auto"  # "auto", "cuda", "mps" or "cpu"
    # bookkeeping
    checkpoint_every: int = 50  # optimizer steps between checkpoints (a stop always checkpoints too)
    eval_every: int = 25  # optimizer steps between held-out evaluations (also at the start and the end)
    heldout_fraction: float = 0.1  # share of prompts kept out of training to measure generalisation
    seed: int = 42  # adapter initialisation, data order, dropout: same seed, same run

    @property
    def pairs_per_step(self) -> int:
        """Pairs behind one optimizer step."""
        return self.batch_size * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for the run's JSON column."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a run's stored settings; missing keys take the defaults, unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TrainingError(f"Unknown training settings {unknown}; this run was made by another version.")
        return cls(**values).validated()

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes).validated()

    def _reference_free_problems(self) -> list[str]:
        """What cannot work in the ORPO and SimPO settings (each has its own β, and ORPO its own SFT term)."""
        problems = []
        if self.orpo_lambda <= 0:
            problems.append("ORPO's λ must be positive")
        if self.simpo_beta <= 0:
            problems.append("SimPO's β must be positive")
        if self.simpo_gamma < 0:
            problems.append("SimPO's target margin γ must not be negative")
        if self.loss_type in REFERENCE_FREE_LOSS_TYPES:
            if self.label_smoothing:
                problems.append(f"label smoothing applies to the sigmoid loss only, not to {self.loss_type}")
            if self.sft_weight:
                problems.append(
                    f"the SFT weight applies to the DPO losses only, not to {self.loss_type}"
                    + (" (ORPO has its own SFT term)" if self.loss_type == "orpo" else "")
                )
        return problems

    def validated(self) -> TrainConfig:
        """Self, or a :class:`TrainingError` naming the first setting that cannot work."""
        problems = []
        # NaN passes every comparison below unnoticed (nan <= 0 is False), and inf is no setting either.
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{item.name.replace('_', ' ')} must be a number, not {value}")
        if self.loss_type not in LOSS_TYPES:
            problems.append(f"loss type must be one of {', '.join(LOSS_TYPES)}, not {self.loss_type!r}")
        problems += self._reference_free_problems()
        if self.sft_phase not in SFT_PHASES:
            problems.append(f"the SFT phase must be one of {', '.join(SFT_PHASES)}, not {self.sft_phase!r}")
        if self.sft_epochs < 1:
            problems.append("SFT epochs must be at least 1")
        if self.scheduler not in ("cosine", "linear"):
            problems.append(f"scheduler must be cosine or linear, not {self.scheduler!r}")
        if self.quantization not in ("auto", "nf4", "none"):
            problems.append(f"quantization must be auto, nf4 or none, not {self.quantization!r}")
        if self.device not in ("auto", "cuda", "mps", "cpu"):
            problems.append(f"device must be auto, cuda, mps or cpu, not {self.device!r}")
        for name in (
            "epochs",
            "batch_size",
            "grad_accum",
            "lora_r",
            "lora_alpha",
            "checkpoint_every",
            "eval_every",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', ' ')} must be at least 1")
        if self.beta <= 0:
            problems.append("beta must be positive")
        if any(w is not None and w <= 0 for w in (self.desirable_weight, self.undesirable_weight)):
            problems.append("the desirable and undesirable weights must be positive")
        if self.loss_type == "kto" and (self.label_smoothing or self.sft_weight):
            problems.append("label smoothing and the SFT weight apply to the DPO losses only, not to kto")
        if not 0 <= self.sft_weight <= 10:
            problems.append("SFT weight must lie in [0, 10]")
        if self.lr <= 0:
            problems.append("learning rate must be positive")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("warm-up ratio must lie in [0, 1)")
        if not 0 <= self.heldout_fraction < 1:
            problems.append("held-out fraction must lie in [0, 1)")
        if self.max_prompt_length < 1 or self.max_length <= self.max_prompt_length:
            problems.append("maximum length must be larger than the maximum prompt length")
        if problems:
            raise TrainingError("These training settings cannot work: " + "; ".join(problems) + ".")
        return self


@dataclass(frozen=True)
class DeviceInfo:
    """What training can run on here."""

    kind: str  # "cuda", "mps" or "cpu"
    name: str  # e.g. "NVIDIA GeForce RTX 3060" or "CPU (8 threads)"
    memory_bytes: int | None  # the GPU's total memory; None on the CPU
    free_bytes: int | None = None  # GPU memory free when detected (others' use subtracted); None on the CPU


def detect_device() -> DeviceInfo:
    """The best device torch can use: a CUDA GPU, Apple's MPS, else the CPU. Imports torch.

    On CUDA it is the device training will load onto (torch's current device), with its free memory
    as the driver reports it now: other programs, and models this app holds in llama.cpp, are already
    subtracted.
    """
    import torch

    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return DeviceInfo("cuda", torch.cuda.get_device_name(index), int(total), int(free))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return DeviceInfo("mps", "Apple GPU (MPS)", None)
    threads = torch.get_num_threads()
    return DeviceInfo("cpu", f"CPU ({threads} thread{'' if threads == 1 else 's'})", None)


@dataclass(frozen=True)
class ModelShape:
    """The three numbers training memory depends on (beyond the settings)."""

    params: int  # parameters of the base model, embeddings included
    hidden_size: int  # width of the residual stream
    layers: int  # decoder layers
    known: bool = True  # False: the model could not be read and a typical shape stands in for it


# Assumed when the model is not known (e.g. the CLI's defaults): a Llama 3.2 3B-like model, the
# largest this app is sized for, so the preset errs on the side of fitting.
TYPICAL_SHAPE = ModelShape(params=3_200_000_000, hidden_size=3072, layers=28, known=False)


def _safetensors_params(path: Path) -> int:
    """Parameters in a .safetensors file, from its header alone (8-byte length, then JSON)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")


def model_shape(folder: Path) -> ModelShape | None:
    """Parameter count (safetensors headers; else estimated from config.json), width and depth of a
    Hugging Face model folder; None when its config cannot be read. Reads no weights.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text = config.get("text_config") or config  # multimodal folders (Gemma 3) keep the LM's shape there
    hidden, layers = text.get("hidden_size"), text.get("num_hidden_layers")
    if not isinstance(hidden, int) or not isinstance(layers, int) or hidden < 1 or layers < 1:
        return None
    try:
        params = sum(_safetensors_params(path) for path in sorted(folder.glob("*.safetensors")))
    except (OSError, ValueError, KeyError, struct.error):
        params = 0
    if params == 0:
        # Each decoder layer holds ~12·h² weights (attention 4·h², MLP ~8·h²), plus the embeddings.
        vocab = int(text.get("vocab_size") or 32000)
        tied = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
        params = 12 * layers * hidden * hidden + vocab * hidden * (1 if tied else 2)
    return ModelShape(params=params, hidden_size=hidden, layers=layers)


# The memory estimate behind the presets (bytes). Rough by design: the preset picks a starting
# point, and running out of memory anyway ends in "Resume with smaller settings".
HEADROOM_BYTES = 1 * GIB  # cuBLAS and bitsandbytes workspaces, allocator fragmentation
NF4_BYTES_PER_PARAM = 0.55  # 4 bits + double-quantized scales (~0.52), embeddings and norms kept in 16 bits
BF16_BYTES_PER_PARAM = 2.0
LORA_STATE_BYTES = 16  # per LoRA weight: fp32 weight, its gradient and AdamW's two moments
# Activations kept for the backward pass, per token, hidden unit and layer, in 16 bits: 34 bytes
# (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 1,
# without the 5·a·s/h attention-score term: scaled-dot-product attention never stores the scores).
ACTIVATION_BYTES = 34
CHECKPOINT_BYTES = 2  # with gradient checkpointing only each layer's 16-bit input is kept (+ one layer's 34)
PRESET_PAIRS_PER_STEP = 16  # every preset learns from the same number of pairs per optimizer step


def training_memory(
    shape: ModelShape,
    *,
    quantization: str,
    batch_size: int,
    max_length: int,
    max_prompt_length: int,
    gradient_checkpointing: bool,
    lora_r: int,
) -> int:
    """Estimated GPU bytes of a training step (without ``HEADROOM_BYTES``): weights + LoRA state + activations.

    - base weights: ``params × 0.55`` bytes in NF4, ``params × 2`` in bf16;
    - LoRA on all linear layers adds ``r·(d_in + d_out)`` per ``d_in × d_out`` matrix, about
      ``2·r·params / h`` weights, 16 bytes each;
    - activations per pair: each pair is one packed row ``prompt + chosen + rejected``, at most
      ``p + 2·(L - p)`` tokens; each token keeps ``34·h`` bytes per layer, or with checkpointing ``2·h``
      per layer plus ``34·h`` for the one layer being recomputed.
    """
    weights = shape.params * (NF4_BYTES_PER_PARAM if quantization == "nf4" else BF16_BYTES_PER_PARAM)
    lora = 2 * lora_r * shape.params / shape.hidden_size * LORA_STATE_BYTES
    tokens = max_prompt_length + 2 * (max_length - max_prompt_length)
    if gradient_checkpointing:
        per_token = shape.hidden_size * (CHECKPOINT_BYTES * shape.layers + ACTIVATION_BYTES)
    else:
        per_token = shape.hidden_size * ACTIVATION_BYTES * shape.layers
    return int(weights + lora + batch_size * tokens * per_token)


@dataclass(frozen=True)
class Preset:
    """Settings for a device and a model, and why, in words a person can check."""

    config: TrainConfig
    reason: str  # e.g. "4-bit base (QLoRA): a 16-bit copy of the 7.0B-parameter model does not fit ..."
    fits: bool = True  # False: even the smallest settings are estimated not to fit the free memory
    estimated_bytes: int | None = None  # the estimate of the chosen settings (GPU only)


CPU_PRESET = TrainConfig(
    quantization="none",
    batch_size=2,
    grad_accum=8,
    max_length=512,
    max_prompt_length=256,
    lora_r=16,
    lora_alpha=32,
    gradient_checkpointing=False,
    device="cpu",
)


def _size_words(shape: ModelShape) -> str:
    count = f"{shape.params / 1e9:.1f}B" if shape.params >= 1e9 else f"{shape.params / 1e6:.0f}M"
    return f"the {count}-parameter model" if shape.known else f"a typical {count}-parameter model"


def preset_for(free_bytes: int | None, total_bytes: int | None, shape: ModelShape | None) -> Preset:
    """Settings that fit ``free_bytes`` of GPU memory for a model of ``shape``; the CPU preset when
    ``free_bytes`` is None. A pure function: the numbers in, a preset and its reason out.

    The rule, first choice first (each must fit ``free_bytes - HEADROOM_BYTES`` by
    :func:`training_memory`, at 1024 tokens with a 512-token prompt):

    1. a 16-bit (bf16) base with LoRA, no checkpointing: exact weights and no dequantization per matmul;
    2. a 4-bit NF4 base (QLoRA), no checkpointing;
    3. NF4 with gradient checkpointing (~30% slower, most activation memory saved);
    4. NF4 with checkpointing at 512 tokens (prompt 256).

    The batch is the largest of 16, 8, 4, 2, 1 pairs that fits, and gradient accumulation makes up 16
    pairs per update in every preset, so presets differ in speed and memory, not in what they learn.
    A pair is already ~1,500 tokens at this length, enough to keep a GPU busy, so a bf16 base at a small
    batch beats NF4 at a large one. When nothing fits, the smallest settings are returned with
    ``fits=False`` and a reason that says what to free. LoRA rank 16 (alpha 32) everywhere.
    On the CPU: full precision (faster than dequantizing NF4 there), no checkpointing, 512 tokens.
    """
    if free_bytes is None:
        return Preset(
            CPU_PRESET,
            "full precision, which is faster than 4-bit on the CPU; "
            f"{CPU_PRESET.pairs_per_step} pairs per update.",
        )
    shape = shape or TYPICAL_SHAPE
    usable = free_bytes - HEADROOM_BYTES
    rank = 16
    candidates = (("none", False, 1024), ("nf4", False, 1024), ("nf4", True, 1024), ("nf4", True, 512))
    for quantization, checkpointing, length in candidates:
        for batch in (16, 8, 4, 2, 1):
            need = training_memory(
                shape, quantization=quantization, batch_size=batch, max_length=length,
                max_prompt_length=length // 2, gradient_checkpointing=checkpointing, lora_r=rank,
            )  # fmt: skip
            if need <= usable:
                return _gpu_preset(
                    free_bytes,
                    total_bytes,
                    shape,
                    quantization,
                    checkpointing,
                    length,
                    batch,
                    need,
                    fits=True,
                )
    need = training_memory(
        shape, quantization="nf4", batch_size=1, max_length=512, max_prompt_length=256,
        gradient_checkpointing=True, lora_r=rank,
    )  # fmt: skip
    return _gpu_preset(free_bytes, total_bytes, shape, "nf4", True, 512, 1, need, fits=False)


def _gpu_preset(
    free_bytes: int,
    total_bytes: int | None,
    shape: ModelShape,
    quantization: str,
    checkpointing: bool,
    length: int,
    batch: int,
    need: int,
    *,
    fits: bool,
) -> Preset:
    config = TrainConfig(
        quantization=quantization,
        batch_size=batch,
        grad_accum=max(1, PRESET_PAIRS_PER_STEP // batch),
        max_length=length,
        max_prompt_length=length // 2,
        lora_r=16,
        lora_alpha=32,
        gradient_checkpointing=checkpointing,
        device="cuda",
    )
    free = f"{free_bytes / GIB:.1f} GB free"
    if total_bytes and free_bytes < 0.9 * total_bytes:
        free += f" of {total_bytes / GIB:.1f} GB (other programs use the rest)"
    size = _size_words(shape)
    if quantization == "none":
        how = f"a 16-bit base: {size} fits in {free}"
    else:
        how = f"a 4-bit base (QLoRA): a 16-bit copy of {size} would not leave room to train in {free}"
        if checkpointing:
            how += "; gradient checkpointing on (slower, much less memory)"
        if length < 1024:
            how += f"; sequences cut at {length} tokens"
    estimate = (need + HEADROOM_BYTES) / GIB
    if not fits:
        return Preset(
            config,
            f"{how}. Even these smallest settings need about {estimate:.1f} GB: close programs that use "
            "the GPU or choose a smaller model.",
            fits=False,
            estimated_bytes=need + HEADROOM_BYTES,
        )
    per_pass = f"{batch} pair{'s' if batch != 1 else ''} per pass"
    return Preset(
        config,
        f"{how}; {per_pass}, {config.pairs_per_step} pairs per update (about {estimate:.1f} GB in use).",
        estimated_bytes=need + HEADROOM_BYTES,
    )


def default_preset(
    device: DeviceInfo | None = None, shape: ModelShape | None = None, *, base_model: bool = False
) -> Preset:
    """The preset for this machine and model (detects the device when not given).

    ``base_model``: the model has no chat template of its own (``sft_phase.is_base_model``): the preset then
    starts with a supervised phase on the rewrites (``sft_phase = "rewrites"``), the SFT start a base model
    needs before DPO; an instruct model already follows instructions and goes straight to the preference phase.
    """
    device = device or detect_device()
    if device.kind != "cuda":
        preset = preset_for(None, None, shape)
    else:
        free = device.free_bytes if device.free_bytes is not None else device.memory_bytes
        preset = preset_for(free, device.memory_bytes, shape)
    if not base_model:
        return preset
    return dataclasses.replace(
        preset,
        config=preset.config.replace(sft_phase="rewrites"),
        reason=f"{preset.reason} A base model: it first learns from your rewritten answers, then your choices.",
    )


def default_config(device: DeviceInfo | None = None, shape: ModelShape | None = None) -> TrainConfig:
    """The preset's settings for this machine and model (detects the device when not given)."""
    return default_preset(device, shape).config


# Below this many training pairs a run takes the settings measured on a few picks (see sized_for_pairs);
# the demo, about 300 pairs a round, trains with them too (demo_loop.DEMO_TRAIN_CHANGES).
FEW_PAIRS = 400
FEW_PAIRS_CHANGES: Mapping[str, Any] = MappingProxyType({"lr": 2e-4, "sft_weight": 1.0})
FEW_PAIRS_PER_UPDATE = 8


def sized_for_pairs(config: TrainConfig, train_pairs: int | None) -> tuple[TrainConfig, str]:
    """``config`` (a preset) for a run on ``train_pairs`` training pairs, and a sentence saying what changed
    ("" when nothing did: many pairs, none yet, an unknown count, or a loss without an SFT term).

    Fewer than :data:`FEW_PAIRS`: 8 pairs per update instead of 16 (twice the updates; the batch only ever
    shrinks, so it still fits), a learning rate of 2e-4 and an SFT term on the chosen answers (weight 1). These
    are the demo's settings, measured from 40 to 330 pairs a round (``bench/efficacy.py``); the preset alone
    made 6 small updates of 45 pairs and learnt less from the same picks (docs/ARCHITECTURE.md, decisions).
    """
    if not train_pairs or train_pairs >= FEW_PAIRS or config.loss_type not in ("sigmoid", "ipo", "hinge"):
        return config, ""
    batch = min(config.batch_size, FEW_PAIRS_PER_UPDATE)
    sized = config.replace(
        batch_size=batch, grad_accum=max(1, FEW_PAIRS_PER_UPDATE // batch), **FEW_PAIRS_CHANGES
    )
    if sized == config:
        return config, ""
    return sized, sizing_sentence(config, sized, train_pairs)


def sizing_sentence(before: TrainConfig, after: TrainConfig, train_pairs: int) -> str:
    """What sizing a run on ``train_pairs`` pairs changed from ``before`` to ``after`` (:func:`sized_for_pairs`),
    as a sentence naming only the settings that changed; "" when none did (options given on the command
    line can set all three)."""
    changes = []
    if after.pairs_per_step != before.pairs_per_step:
        changes.append(f"{after.pairs_per_step} pairs per update instead of {before.pairs_per_step}")
    if after.lr != before.lr:
        changes.append(f"a learning rate of {after.lr:g} instead of {before.lr:g}")
    if after.sft_weight != before.sft_weight and after.sft_weight > 0:
        changes.append("an SFT term on your chosen answers")
    if not changes:
        return ""
    return (
        f"With {plural(train_pairs, 'training pair')}, {listed(changes)}: they learn more from a few picks."
    )


def smaller_settings(config: TrainConfig) -> TrainConfig:
    """Settings that need less memory and learn the same: what to resume with after running out of memory.

    First turn on gradient checkpointing; then halve the batch (doubling accumulation keeps the
    pairs per step, so the run continues the same optimisation); at batch 1, shorten the sequences.
    """
    if not config.gradient_checkpointing:
        return config.replace(gradient_checkpointing=True)
    if config.batch_size > 1:
        return config.replace(batch_size=config.batch_size // 2, grad_accum=config.grad_accum * 2)
    if config.max_length > 256:
        length = max(256, config.max_length // 2)
        return config.replace(max_length=length, max_prompt_length=min(config.max_prompt_length, length // 2))
    return config


# Which model gives the reference log-probabilities of a run (its ``reference`` column).
REFERENCE_ADAPTER_OFF = "adapter_off"  # the base with the run's adapter switched off
_REFERENCE_MODEL_PREFIX = "model:"  # "model:<id>": a registered model (a previous round's)


def parse_reference(reference: str) -> int | None:
    """The model id of a ``model:<id>`` reference, or None for ``adapter_off``.

    Raises:
        TrainingError: anything else (the message lists what is accepted).
    """
    if reference == REFERENCE_ADAPTER_OFF:
        return None
    if reference.startswith(_REFERENCE_MODEL_PREFIX):
        number = reference[len(_REFERENCE_MODEL_PREFIX) :]
        if number.isascii() and number.isdigit():
            return int(number)
    raise TrainingError(
        f"The reference {reference!r} is not one desktop-dpo knows: give adapter_off (the base model) or "
        "model:<id> with the id of a registered model (a previous round's), e.g. model:3."
    )
