"""The QLoRA-DPO training loop: one readable job from a run's snapshot of pairs to a LoRA adapter.

Shape of the job (a generator, see ``core/jobs.py``)::

    setup     run row -> pairs (fixed snapshot) -> train / held-out split by prompt (fixed once)
              -> base model (NF4 + LoRA, or full precision + LoRA) -> token ids
    reference log π_ref(y|x) of every pair, computed once (adapter off, or a previous round's model)
              and cached in SQLite; a second epoch, a resume or a second run reads the cache
    loop      per optimizer step: micro-batches (each prompt once, chosen and rejected after it),
              gradient accumulation, clip, AdamW on the LoRA weights only, warm-up + decay
              every N steps: held-out metrics; every M steps: an atomic checkpoint
    cleanup   final adapter written atomically; checkpoints removed

The job never writes run status or metrics itself: it yields events and whoever drives it (CLI, GUI
worker) calls :func:`persist_event` / :func:`persist_outcome` with its own store connection. The job
does read the run and writes the two things that are part of the data, not of the progress: the prompt
split (``Store.set_prompt_splits``) and the reference cache (``Store.put_reference_logps``).

Resume is exact: a checkpoint holds the adapter, AdamW and scheduler state, the RNG state and the
position in the seeded data order, so a stopped-and-resumed run ends with the same weights as an
uninterrupted one (same settings, same machine).

torch, transformers and peft are imported inside functions: the GUI imports this module for
:class:`TrainConfig` and the event classes at start-up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import pickle
import random
import shutil
import struct
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.dpo.run_lock import RunBusyError, RunLock
from desktop_dpo.core.errors import DesktopDpoError, JobCancelled, ModelError
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.core.llm.template_choice import require_usable_template, template_for
from desktop_dpo.core.model_files import atomic_output, training_folder
from desktop_dpo.core.tensor_file import check_tensor_file

if TYPE_CHECKING:
    import torch

    from desktop_dpo.core.dpo.data import TokenizedPair
    from desktop_dpo.core.store import ModelRow, RunRow, Store

log = logging.getLogger(__name__)

GIB = 1024**3
CHECKPOINT_FORMAT = 1
_STATE_FILE = "trainer_state.pt"
_LATEST_FILE = "latest"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Settings a checkpoint cannot be resumed under: they change the adapter's shape or meaning.
_ADAPTER_FIELDS = ("lora_r", "lora_alpha", "target_modules")


class TrainingError(DesktopDpoError):
    """A training run cannot start or go on; the message says what to change."""


class TrainingOutOfMemoryError(TrainingError):
    """The device ran out of memory. ``suggested`` holds smaller settings to resume with."""

    def __init__(self, message: str, suggested: TrainConfig):
        super().__init__(message)
        self.suggested = suggested


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains. Stored as JSON in the run row; every field has a safe default."""

    # DPO
    beta: float = 0.1  # β: how strongly the policy is held near the reference (higher = smaller changes)
    loss_type: str = "sigmoid"  # "sigmoid" (DPO), "ipo" or "hinge"; see core/dpo/loss.py
    label_smoothing: float = 0.0  # assumed share of wrongly judged pairs (conservative DPO); sigmoid only
    sft_weight: float = 0.0  # weight of an SFT term on the chosen answers (RPO; TRL's "sft" loss); 0 = off
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

    def validated(self) -> TrainConfig:
        """Self, or a :class:`TrainingError` naming the first setting that cannot work."""
        problems = []
        # NaN passes every comparison below unnoticed (nan <= 0 is False), and inf is no setting either.
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{item.name.replace('_', ' ')} must be a number, not {value}")
        if self.loss_type not in ("sigmoid", "ipo", "hinge"):
            problems.append(f"loss type must be sigmoid, ipo or hinge, not {self.loss_type!r}")
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
    return DeviceInfo("cpu", f"CPU ({torch.get_num_threads()} threads)", None)


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


def default_preset(device: DeviceInfo | None = None, shape: ModelShape | None = None) -> Preset:
    """The preset for this machine and model (detects the device when not given)."""
    device = device or detect_device()
    if device.kind != "cuda":
        return preset_for(None, None, shape)
    free = device.free_bytes if device.free_bytes is not None else device.memory_bytes
    return preset_for(free, device.memory_bytes, shape)


def default_config(device: DeviceInfo | None = None, shape: ModelShape | None = None) -> TrainConfig:
    """The preset's settings for this machine and model (detects the device when not given)."""
    return default_preset(device, shape).config


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


# --------------------------------------------------------------------------------------------------
# Events the job yields (plain frozen dataclasses: safe to send through a Qt signal)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loading:
    """Setup is under way: ``stage`` says what, ``done`` of ``total`` where countable."""

    stage: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class Started:
    """Setup finished; training starts (or resumes) at ``start_step`` of ``total_steps``."""

    run_dir: str  # the run's folder (checkpoints, adapter)
    start_step: int
    total_steps: int
    train_pairs: int
    heldout_pairs: int
    device: str  # e.g. "cpu", "cuda"
    quantization: str  # "nf4" or "none" (resolved from "auto")


@dataclass(frozen=True)
class ReferenceReady:
    """Reference log-probabilities are known for every pair: ``cached`` read, ``computed`` now."""

    cached: int
    computed: int
    seconds: float  # spent computing (and caching) the missing ones, model loading excluded


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step, with TRL's metric names in :meth:`as_metrics`."""

    step: int  # optimizer steps done, 1-based
    total_steps: int
    epoch: float  # fractional epochs done
    loss: float
    rewards_chosen: float  # mean β·log-ratio of the chosen responses
    rewards_rejected: float
    rewards_accuracies: float  # share of pairs with chosen reward > rejected reward
    rewards_margins: float  # mean chosen − rejected reward
    logps_chosen: float  # mean policy log-probability of the chosen responses
    logps_rejected: float
    lr: float  # learning rate used for this step
    grad_norm: float  # total gradient norm before clipping
    tokens_per_s: float  # non-padding tokens through the model per second of this step
    eta_s: float  # estimated seconds to the end of the run

    def as_metrics(self) -> dict[str, float]:
        """TRL-named dict for the run history and the plots."""
        return {
            "epoch": self.epoch,
            "loss": self.loss,
            "rewards/chosen": self.rewards_chosen,
            "rewards/rejected": self.rewards_rejected,
            "rewards/accuracies": self.rewards_accuracies,
            "rewards/margins": self.rewards_margins,
            "logps/chosen": self.logps_chosen,
            "logps/rejected": self.logps_rejected,
            "learning_rate": self.lr,
            "grad_norm": self.grad_norm,
            "tokens_per_s": self.tokens_per_s,
            "eta_s": self.eta_s,
        }


@dataclass(frozen=True)
class EvalMetrics:
    """The policy on the held-out pairs (prompts never trained on) after ``step`` steps."""

    step: int
    loss: float
    accuracy: float  # share of held-out pairs whose chosen response now gets the higher reward
    margins: float  # mean chosen − rejected reward
    rewards_chosen: float
    rewards_rejected: float
    pairs: int

    def as_metrics(self) -> dict[str, float]:
        """TRL-named dict (``eval_`` names without the prefix; the split says held-out)."""
        return {
            "loss": self.loss,
            "rewards/accuracies": self.accuracy,
            "rewards/margins": self.margins,
            "rewards/chosen": self.rewards_chosen,
            "rewards/rejected": self.rewards_rejected,
            "pairs": float(self.pairs),
        }


@dataclass(frozen=True)
class TrainWarning:
    """A known failure shape, in words a person can act on. ``kind`` names it for the GUI."""

    message: str
    kind: str = "general"  # accuracy_stuck | chosen_falling | margins_exploding | not_finite | truncated
    step: int = 0


# The name the design uses; shadows the builtin only inside this module, which never raises warnings.
Warning = TrainWarning


@dataclass(frozen=True)
class Checkpointed:
    """A checkpoint of ``step`` was written (atomically) to ``path``."""

    step: int
    path: str


@dataclass(frozen=True)
class Finished:
    """The run is complete: the adapter to export and the final metrics."""

    adapter_path: str
    metrics: dict[str, float] = field(default_factory=dict)
    step: int = 0


# --------------------------------------------------------------------------------------------------
# Known failure shapes
# --------------------------------------------------------------------------------------------------


class TrainingWatch:
    """Turns the stream of step metrics into warnings about known failure shapes, each once per run.

    - accuracy stuck at chance: the model does not tell chosen from rejected;
    - chosen rewards falling together with rejected ones: "likelihood displacement", the policy
      makes everything less likely, which tends to degrade its writing;
    - margins exploding: the policy has run far from the reference (memorising the pairs);
    - a non-finite loss or gradient (the step is skipped).
    """

    def __init__(self, total_steps: int, window: int = 10, state: dict[str, Any] | None = None):
        self.total_steps = total_steps
        self.window = window
        state = state or {}
        self.history: list[tuple[float, float, float, float]] = [tuple(x) for x in state.get("history", [])]
        self.fired: set[str] = set(state.get("fired", []))

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run does not repeat a warning."""
        return {"history": [list(x) for x in self.history[-self.window :]], "fired": sorted(self.fired)}

    def _fire(self, kind: str, message: str, step: int) -> list[TrainWarning]:
        if kind in self.fired:
            return []
        self.fired.add(kind)
        return [TrainWarning(message=message, kind=kind, step=step)]

    def observe(self, metrics: StepMetrics, config: TrainConfig) -> list[TrainWarning]:
        """Warnings raised by this step (usually none)."""
        if not (math.isfinite(metrics.loss) and math.isfinite(metrics.grad_norm)):
            return self._fire(
                "not_finite",
                f"Step {metrics.step} produced a loss or gradient that is not a number, so it was skipped. "
                f"If this repeats, lower the learning rate (now {config.lr:g}).",
                metrics.step,
            )
        self.history.append(
            (
                metrics.rewards_accuracies,
                metrics.rewards_chosen,
                metrics.rewards_rejected,
                metrics.rewards_margins,
            )
        )
        del self.history[: -self.window * 2]
        if len(self.history) < self.window:
            return []
        recent = self.history[-self.window :]
        accuracy = sum(r[0] for r in recent) / len(recent)
        chosen = sum(r[1] for r in recent) / len(recent)
        rejected = sum(r[2] for r in recent) / len(recent)
        margin = sum(r[3] for r in recent) / len(recent)
        warnings: list[TrainWarning] = []
        stuck_after = max(self.window * 2, self.total_steps // 4)
        if metrics.step >= stuck_after and 0.4 <= accuracy <= 0.6:
            warnings += self._fire(
                "accuracy_stuck",
                f"After {metrics.step} steps the model still prefers the chosen response only {accuracy:.0%} of "
                "the time — no better than a coin toss. Try a higher learning rate "
                f"(now {config.lr:g}) or more epochs, and check that your pairs differ clearly: near-identical "
                "responses teach nothing.",
                metrics.step,
            )
        if chosen < -0.5 and rejected < chosen:
            warnings += self._fire(
                "chosen_falling",
                f"Your chosen responses are becoming less likely too (reward {chosen:.2f}), not only the rejected "
                f"ones ({rejected:.2f}): the model is learning to make everything less likely, which often makes "
                f"its writing worse. Lower the learning rate (now {config.lr:g}), raise beta (now {config.beta:g}) "
                "or train fewer epochs.",
                metrics.step,
            )
        if margin > 10.0:
            warnings += self._fire(
                "margins_exploding",
                f"The reward margin has grown very large ({margin:.1f}): the model has moved far from where it "
                "started and is probably memorising these pairs rather than learning your taste. Lower the "
                f"learning rate (now {config.lr:g}), raise beta (now {config.beta:g}) or train fewer epochs.",
                metrics.step,
            )
        return warnings


# --------------------------------------------------------------------------------------------------
# Persisting what the job yields (called by the driver, with the driver's own store connection)
# --------------------------------------------------------------------------------------------------


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


def persist_event(store: Store, run_id: int, event: object) -> None:
    """Write what an event means to the run's row and metrics. Events that change nothing are ignored."""
    if isinstance(event, Started):
        run = store.get_run(run_id)
        store.update_run(
            run_id,
            status="running",
            step=event.start_step,
            total_steps=event.total_steps,
            checkpoint_dir=event.run_dir,
            error=None,
            finished_at=None,
            **({"started_at": time.time()} if run is not None and run.started_at is None else {}),
        )
    elif isinstance(event, StepMetrics):
        with store.atomic():
            store.add_run_metrics(run_id, event.step, event.as_metrics(), split="train")
            store.update_run(run_id, step=event.step, total_steps=event.total_steps)
    elif isinstance(event, EvalMetrics):
        store.add_run_metrics(run_id, event.step, event.as_metrics(), split="heldout")
    elif isinstance(event, TrainWarning):
        # Several warnings can land on one step: keep them all under that step.
        earlier = dict(store.run_metrics(run_id, split="warning")).get(event.step, {})
        messages = [*earlier.get("messages", []), {"kind": event.kind, "message": event.message}]
        store.add_run_metrics(run_id, event.step, {"messages": messages}, split="warning")
    elif isinstance(event, Checkpointed):
        store.update_run(run_id, step=event.step)
    elif isinstance(event, Finished):
        store.update_run(
            run_id,
            status="completed",
            step=event.step,
            adapter_path=event.adapter_path,
            final_metrics=event.metrics,
            finished_at=time.time(),
            error=None,
        )


def persist_outcome(store: Store, run_id: int, error: BaseException | None) -> None:
    """Record how the job ended when it did not finish: stopped (resumable) or failed (with the reason)."""
    if error is None or isinstance(error, RunBusyError):
        return  # busy: the run belongs to the process training it, which records how it ends
    if isinstance(error, JobCancelled):
        store.update_run(run_id, status="stopped", error=None)
        return
    if isinstance(error, DesktopDpoError):
        message = str(error)
    elif isinstance(error, MemoryError):
        message = (
            "The computer ran out of memory. Close other programs or choose smaller settings, then resume."
        )
    else:
        log.error("Training run %s failed", run_id, exc_info=error)
        message = (
            f"Training stopped on an unexpected error ({type(error).__name__}: {error}). Details are in the "
            "log. Resuming continues from the last finished step that was saved."
        )
    store.update_run(run_id, status="failed", error=message)


def drive_training(
    store: Store,
    run_id: int,
    *,
    cancel: CancelToken,
    resume: bool = True,
    runs_dir: Path | None = None,
    on_event: Callable[[object], None] | None = None,
) -> Finished:
    """Run :func:`train` to its end in this thread, persisting every event (the CLI's and the tests' driver).

    ``on_event`` sees each event after it is stored. However the job ends, the run row says so
    (completed, stopped or failed with the reason) before this returns or re-raises.
    """
    finished: Finished | None = None
    try:
        for event in train(store, run_id, cancel=cancel, resume=resume, runs_dir=runs_dir):
            persist_event(store, run_id, event)
            if isinstance(event, Finished):
                finished = event
            if on_event is not None:
                on_event(event)
    except BaseException as exc:
        persist_outcome(store, run_id, exc)
        raise
    if finished is None:  # cannot happen: the job either finishes or raises
        raise TrainingError("Training ended without an adapter.")
    return finished


# --------------------------------------------------------------------------------------------------
# Data order, learning-rate schedule, checkpoints
# --------------------------------------------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded order of the training pairs in one epoch (the same on every machine and resume)."""
    order = list(range(n))
    random.Random(f"desktop-dpo-order:{seed}:{epoch}").shuffle(order)
    return order


def steps_remaining(n_train: int, config: TrainConfig, epoch: int, offset: int) -> int:
    """Optimizer steps left from ``offset`` pairs into ``epoch`` to the end of the run."""
    per_step = config.pairs_per_step
    if epoch >= config.epochs or n_train == 0:
        return 0
    this_epoch = math.ceil(max(0, n_train - offset) / per_step)
    return this_epoch + (config.epochs - epoch - 1) * math.ceil(n_train / per_step)


def _plan(n_train: int, config: TrainConfig, epoch: int, offset: int) -> Iterator[tuple[int, int, list[int]]]:
    """``(epoch, offset after the step, pair indices)`` for every remaining optimizer step."""
    for e in range(epoch, config.epochs):
        order = epoch_order(n_train, config.seed, e)
        position = offset if e == epoch else 0
        while position < n_train:
            chunk = order[position : position + config.pairs_per_step]
            position += len(chunk)
            yield e, position, chunk


def lr_factor(step: int, total_steps: int, warmup_ratio: float, scheduler: str) -> float:
    """Multiplier of the peak learning rate for the step about to run (0-based): linear warm-up, then decay."""
    warmup = math.ceil(warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup)
    if scheduler == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    pointer = run_dir / "checkpoints" / _LATEST_FILE
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text(encoding="utf-8").strip()
    return path if (path / _STATE_FILE).is_file() and (path / _ADAPTER_WEIGHTS).is_file() else None


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# The chat template a run trained with, saved with its adapter: the export writes it into the merged model
# and the GGUF header, whatever template the base model is given later.
TRAINED_TEMPLATE_FILE = "chat_template.jinja"


def write_trained_template(adapter_dir: Path, chat_template: str | None) -> None:
    """Save the template the adapter was trained with (the plain layout's own text when it had none)."""
    from desktop_dpo.core.llm.templates import DEFAULT_TEMPLATE

    (adapter_dir / TRAINED_TEMPLATE_FILE).write_text(chat_template or DEFAULT_TEMPLATE, encoding="utf-8")


def trained_template(adapter_dir: Path) -> str | None:
    """The template an adapter was trained with, or None for an adapter saved before it was recorded."""
    try:
        text = (adapter_dir / TRAINED_TEMPLATE_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.strip() else None


def _save_adapter_atomic(model: Any, target: Path) -> None:
    """``save_pretrained`` into a temporary folder, then swap it in: never a half-written adapter."""
    with atomic_output(target) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)


# --------------------------------------------------------------------------------------------------
# Model loading
# --------------------------------------------------------------------------------------------------


def _resolve_device(config: TrainConfig) -> str:
    import torch

    if config.device != "auto":
        if config.device == "cuda" and not torch.cuda.is_available():
            raise TrainingError(
                "These settings ask for a CUDA GPU, but torch sees none here. Choose the CPU."
            )
        return config.device
    return detect_device().kind


def _compute_dtype(device: str) -> torch.dtype:
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

    dtype = _compute_dtype(device)
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


def _attach_lora(model: Any, config: TrainConfig, quantization: str) -> Any:
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


# --------------------------------------------------------------------------------------------------
# Small pieces of the loop
# --------------------------------------------------------------------------------------------------


def _policy_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log π_θ of the chosen and rejected rows of a batch (a seam tests use to inject failures)."""
    from desktop_dpo.core.dpo.data import sequence_logps

    return sequence_logps(model, batch)


def _length_batches(indices: Sequence[int], pairs: Sequence[TokenizedPair], size: int) -> list[list[int]]:
    """Split ``indices`` into batches of ``size``, grouping similar lengths (less padding, same sums)."""

    def length(i: int) -> int:
        return len(pairs[i].prompt_ids) + max(len(pairs[i].chosen_ids), len(pairs[i].rejected_ids))

    ordered = sorted(indices, key=length)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def _compute_reference(
    model: Any,
    pairs: Sequence[TokenizedPair],
    indices: Sequence[int],
    *,
    batch_size: int,
    pad_id: int,
    device: str,
    adapter_off: bool,
    cancel: CancelToken,
) -> Iterator[tuple[list[int], list[tuple[float, float]]]]:
    """Reference log-probs of ``pairs[indices]``, one batch at a time (so each batch is cached at once)."""
    import torch

    from desktop_dpo.core.dpo.data import collate_for, sequence_logps

    model.eval()
    for batch_indices in _length_batches(indices, pairs, batch_size):
        cancel.raise_if_cancelled()
        batch = _to_device(collate_for(model, [pairs[i] for i in batch_indices], pad_id), device)
        disabled = model.disable_adapter() if adapter_off else contextlib.nullcontext()
        with torch.inference_mode(), disabled:
            chosen, rejected = sequence_logps(model, batch)
        yield batch_indices, list(zip(chosen.float().tolist(), rejected.float().tolist(), strict=True))


def _to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _out_of_memory_message(config: TrainConfig, device: str, where: str, saved_step: int | None) -> str:
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


def _free_memory(device: str) -> None:
    """Collect what is no longer referenced and hand torch's cached GPU blocks back to the driver."""
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()  # else the caching allocator keeps them, invisible to llama.cpp


@contextlib.contextmanager
def _torch_settings(config: TrainConfig, device: str) -> Iterator[None]:
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


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


def train(
    store: Store, run_id: int, *, cancel: CancelToken, resume: bool = True, runs_dir: Path | None = None
) -> Job:
    """Train run ``run_id`` (a generator job: yields the events above, returns :class:`Finished`).

    Args:
        store: the driver thread's store (reads the run; writes the prompt split and the reference cache).
        run_id: a run made with ``Store.create_run`` whose ``config`` is a :class:`TrainConfig` dict.
        cancel: checked at every step boundary; a stop writes a checkpoint and raises ``JobCancelled``.
            Closing the generator at a yield (what the GUI worker does on stop) also checkpoints.
        resume: continue from the run's newest checkpoint when it has one (else start at step 0).
        runs_dir: where the run's folder goes when it has none yet (default: the app's runs folder).

    Raises:
        TrainingOutOfMemoryError: with smaller settings to resume with (finished steps are checkpointed).
        TrainingError, ModelError: a message a person can act on.
    """
    run = _get_run(store, run_id)
    if resume and run.status == "completed" and run.adapter_path and Path(run.adapter_path).is_dir():
        finished = Finished(adapter_path=run.adapter_path, metrics=dict(run.final_metrics), step=run.step)
        yield finished
        return finished
    run_dir = run_folder(run, runs_dir)
    lock = RunLock(run_dir, run.id)  # RunBusyError: another process trains this run now
    try:
        session = _Session(store, run, TrainConfig.from_dict(run.config), cancel, run_dir)
    except BaseException:
        lock.release()
        raise
    try:
        with _torch_settings(session.config, session.device):
            yield from session.load_pairs()
            yield from session.tokenize()
            yield from session.prepare_reference()
            yield from session.prepare_optimizer(resume)
            yield from session.loop()
            finished = session.finish()
    except BaseException as exc:
        _drop_frame_locals(exc)
        raise
    finally:
        session.release()  # however the run ends: the GPU is shared (llama.cpp, other programs)
        lock.release()
    yield finished
    return finished


def _drop_frame_locals(exc: BaseException) -> None:
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


class _Session:
    """One training session of a run: setup, the loop, checkpoints, cleanup (see the module docstring).

    Its methods that yield are parts of :func:`train`'s generator; the state lives here so a
    checkpoint can be written from any step boundary, including when the driver closes the job.
    """

    def __init__(self, store: Store, run: RunRow, config: TrainConfig, cancel: CancelToken, run_dir: Path):
        self.store, self.run, self.config, self.cancel, self.run_dir = store, run, config, cancel, run_dir
        self.device = _resolve_device(config)
        # "auto": QLoRA on a GPU; on the CPU a full-precision base is faster than dequantising NF4.
        self.quantization = config.quantization if config.quantization != "auto" else (
            "nf4" if self.device == "cuda" else "none"
        )  # fmt: skip
        self.step = 0  # optimizer steps done
        self.epoch = 0  # epoch of the next step
        self.offset = 0  # pairs of that epoch already consumed
        self.saved_step: int | None = None  # step of the newest checkpoint on disk
        self.rng_at_boundary: dict[str, Any] | None = None  # RNG state when the current step began

    # ---------------------------------------------------------------- setup

    def load_pairs(self) -> Iterator[object]:
        """The run's snapshot as pairs, split by prompt (a split once fixed in the store never changes)."""
        from desktop_dpo.core.dpo import data as dpo_data

        yield Loading("Reading the run's pairs")
        views = self.store.comparison_views(ids=self.run.comparison_ids, include_deleted=True)
        pairs = dpo_data.pairs_from_comparisons(views)
        if not pairs:
            raise TrainingError(
                "This run has no usable pairs: pick A or B (or rewrite a response) in some comparisons, "
                "then start a new run."
            )
        prompt_ids = sorted({pair.prompt_id for pair in pairs})
        existing = {pid: row.split for pid in prompt_ids if (row := self.store.get_prompt(pid)) and row.split}
        splits = dpo_data.split_by_prompt(
            prompt_ids, self.config.heldout_fraction, self.config.seed, existing
        )
        self.store.set_prompt_splits({pid: split for pid, split in splits.items() if pid not in existing})
        self.train_text = [pair for pair in pairs if splits[pair.prompt_id] == "train"]
        self.heldout_text = [pair for pair in pairs if splits[pair.prompt_id] == "heldout"]
        if not self.train_text:
            raise TrainingError(
                "Every pair of this run has a held-out prompt; collect pairs for more prompts."
            )
        self.cancel.raise_if_cancelled()

    def tokenize(self) -> Iterator[object]:
        """The base model's tokenizer and the token ids of every pair (training pairs first)."""
        from transformers import AutoTokenizer

        from desktop_dpo.core.dpo import data as dpo_data

        self.base = _get_model(self.store, self.run.base_model_id)
        self.folder = training_folder(self.base)
        yield Loading(f"Loading {self.base.name}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(self.folder), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"Cannot load the tokenizer in {self.folder}: {exc}") from exc
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad_id is None else pad_id  # padding is masked out everywhere; any id will do
        # The template the model is used with everywhere (the person's choice, else the tokenizer's own):
        # training renders each pair exactly as the engines rendered it when it was sampled.
        require_usable_template(self.base)
        self.chat_template = template_for(self.base, own=dpo_data.resolve_chat_template(tokenizer))
        tokenized = dpo_data.tokenize_pairs(
            tokenizer,
            [*self.train_text, *self.heldout_text],
            chat_template=self.chat_template,
            max_length=self.config.max_length,
            max_prompt_length=self.config.max_prompt_length,
        )
        self.pairs = tokenized.pairs  # training pairs first, then held-out ones
        self.n_train = len(self.train_text)
        self.heldout = list(range(self.n_train, len(self.pairs)))
        message = tokenized.truncation_message()
        if message:
            yield TrainWarning(message=message, kind="truncated", step=self.run.step)
        self.cancel.raise_if_cancelled()

    def prepare_reference(self) -> Iterator[object]:
        """Reference log-probs of every pair from the cache, computing (and caching) the missing ones.

        Adapter off: the policy model with its adapter disabled, loaded once for both roles. A previous
        round's model: loaded alone, used, freed before the policy is loaded (never two models at once).
        """
        from desktop_dpo.core.dpo import data as dpo_data

        reference_id = parse_reference(self.run.reference)
        adapter_off = reference_id is None
        reference_row = self.base if reference_id is None else _get_model(self.store, reference_id)
        # How the reference weights were loaded changes its numbers, so it is part of the cache key.
        dtype = str(_compute_dtype(self.device)).removeprefix("torch.")
        loaded_as = f"nf4-{dtype}" if self.quantization == "nf4" else dtype
        template = dpo_data.template_hash(self.chat_template)
        self.keys = [
            dpo_data.reference_cache_key(
                pair, reference_row.fingerprint, loaded_as, template, self.config.max_length
            )
            for pair in self.pairs
        ]
        self.reference = self.store.get_reference_logps(self.keys)
        missing = [i for i, key in enumerate(self.keys) if key not in self.reference]
        self.reference_seconds = 0.0
        if missing and not adapter_off:
            yield Loading(f"Loading the reference model {reference_row.name}")
            reference_model = load_causal_lm(training_folder(reference_row), self.quantization, self.device)
            yield from self._fill_reference(reference_model, missing, adapter_off=False)
            del reference_model
            _free_memory(self.device)
        yield Loading("Preparing the adapter")
        self.model = _attach_lora(
            load_causal_lm(self.folder, self.quantization, self.device), self.config, self.quantization
        )
        if missing and adapter_off:
            yield from self._fill_reference(self.model, missing, adapter_off=True)
        yield ReferenceReady(
            cached=len(self.pairs) - len(missing),
            computed=len(missing),
            seconds=self.reference_seconds,
        )

    def _fill_reference(self, model: Any, missing: Sequence[int], *, adapter_off: bool) -> Iterator[Loading]:
        done = 0
        yield Loading("Computing reference log-probabilities", 0, len(missing))
        started = time.perf_counter()
        try:
            for batch_indices, values in _compute_reference(
                model,
                self.pairs,
                missing,
                batch_size=self.config.batch_size * 2,  # no activations are kept without gradients
                pad_id=self.pad_id,
                device=self.device,
                adapter_off=adapter_off,
                cancel=self.cancel,
            ):
                new = {self.keys[i]: value for i, value in zip(batch_indices, values, strict=True)}
                self.store.put_reference_logps(new)  # cached batch by batch: a stop loses nothing
                self.reference.update(new)
                done += len(batch_indices)
                self.reference_seconds += time.perf_counter() - started
                yield Loading("Computing reference log-probabilities", done, len(missing))
                started = time.perf_counter()
        except Exception as exc:
            if _is_out_of_memory(exc):
                _free_memory(self.device)
                raise TrainingOutOfMemoryError(
                    _out_of_memory_message(
                        self.config, self.device, "computing reference log-probabilities", None
                    ),
                    smaller_settings(self.config),
                ) from exc
            raise

    def prepare_optimizer(self, resume: bool) -> Iterator[object]:
        """AdamW on the LoRA weights, the schedule, and the newest checkpoint's state when resuming."""
        import torch

        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if not resume:
            shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
        saved: dict[str, Any] = {}
        if checkpoint is not None:
            yield Loading(f"Resuming from {checkpoint.name}")
            saved = _load_checkpoint(checkpoint, self.model, self.optimizer, self.config, self.n_train)
            self.step, self.epoch, self.offset = saved["step"], saved["epoch"], saved["offset"]
            self.saved_step = self.step
            if self.offset >= self.n_train:
                self.epoch, self.offset = self.epoch + 1, 0
            # The schedule peaks at this run's lr, even if the settings changed since the checkpoint.
            for group in self.optimizer.param_groups:
                group["initial_lr"] = self.config.lr
        self.total_steps = self.step + steps_remaining(self.n_train, self.config, self.epoch, self.offset)
        total, config = self.total_steps, self.config
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, config.warmup_ratio, config.scheduler)
        )
        same_schedule = saved.get("total_steps") == total and all(
            saved.get("config", {}).get(name) == getattr(config, name)
            for name in ("lr", "warmup_ratio", "scheduler")
        )
        if saved.get("scheduler") is not None and same_schedule:
            self.scheduler.load_state_dict(saved["scheduler"])
        elif self.step > 0:  # resumed with other settings: the schedule follows the new step count
            self.scheduler.last_epoch = self.step - 1
            self.scheduler.step()
        # Loading a scheduler's state leaves the optimizer alone, whose lr the constructor reset.
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
        if saved.get("rng") is not None:
            _set_rng_state(saved["rng"])
        self.watch = TrainingWatch(self.total_steps, state=saved.get("watch"))
        yield Started(
            run_dir=str(self.run_dir),
            start_step=self.step,
            total_steps=self.total_steps,
            train_pairs=self.n_train,
            heldout_pairs=len(self.heldout),
            device=self.device,
            quantization=self.quantization,
        )

    # ---------------------------------------------------------------- the loop

    def loop(self) -> Iterator[object]:
        """Optimizer steps to the end of the run; evaluations and checkpoints on their schedule.

        A stop request ends the loop at the next step boundary with a checkpoint, then raises
        ``JobCancelled``. An error inside a step, before the weights changed, leaves the state of the
        last boundary intact: it is checkpointed (with that boundary's RNG state) before the error
        goes on, so no finished step is lost; running out of memory becomes a message saying what to lower.
        """
        self.last_train: StepMetrics | None = None
        self.last_eval: EvalMetrics | None = None
        if self.step == 0:
            self.last_eval = self.evaluate()
            if self.last_eval is not None:
                yield self.last_eval
        session_start, session_steps = time.perf_counter(), 0
        updating = False
        try:
            for epoch, offset_after, indices in _plan(self.n_train, self.config, self.epoch, self.offset):
                if self.cancel.cancelled:
                    break
                self.rng_at_boundary = _rng_state()
                started = time.perf_counter()
                result = self.forward_backward(indices)
                updating = True  # from here on the weights may change: no rescue checkpoint
                self.update(result)
                self.step, self.epoch, self.offset = self.step + 1, epoch, offset_after
                self.rng_at_boundary, updating = None, False
                session_steps += 1
                now = time.perf_counter()
                self.last_train = self.step_metrics(
                    result, epoch + offset_after / self.n_train, now - started,
                    eta=(now - session_start) / session_steps * (self.total_steps - self.step),
                )  # fmt: skip
                yield self.last_train
                yield from self.watch.observe(self.last_train, self.config)
                final = self.step == self.total_steps
                if self.step % self.config.eval_every == 0 or final:
                    self.last_eval = self.evaluate()
                    if self.last_eval is not None:
                        yield self.last_eval
                if self.step % self.config.checkpoint_every == 0 and not final:
                    yield Checkpointed(step=self.step, path=str(self.save()))
            if self.step < self.total_steps:  # left the loop on a stop request
                if self.saved_step != self.step:
                    yield Checkpointed(step=self.step, path=str(self.save()))
                self.cancel.raise_if_cancelled()
        except JobCancelled:
            # Stopped at a step boundary: noticed above (checkpointed there already), or thrown in by the
            # driver at one of the yields (jobs.drive). Either way, keep what was learned.
            if self.step > (self.saved_step or 0) and self.step < self.total_steps:
                yield Checkpointed(step=self.step, path=str(self.save()))
            raise
        except BaseException as exc:
            if not updating and self.step > (self.saved_step or 0):
                try:
                    self.optimizer.zero_grad(set_to_none=True)
                    _free_memory(self.device)
                    self.save()
                except Exception:  # the original error matters more; the last periodic checkpoint remains
                    log.exception("Could not write a rescue checkpoint after an error")
            if _is_out_of_memory(exc):
                self.optimizer.zero_grad(set_to_none=True)
                _free_memory(self.device)
                where = f"at step {self.step + 1}"
                raise TrainingOutOfMemoryError(
                    _out_of_memory_message(self.config, self.device, where, self.saved_step),
                    smaller_settings(self.config),
                ) from exc
            raise

    def _loss(
        self, batch: dict[str, torch.Tensor], indices: Sequence[int], chosen: Any, rejected: Any
    ) -> Any:
        """DPO loss of a batch against the cached reference log-probs (plus the SFT term when it is on)."""
        import torch

        from desktop_dpo.core.dpo.data import response_lengths
        from desktop_dpo.core.dpo.loss import preference_loss, with_sft_term

        values = [self.reference[self.keys[i]] for i in indices]
        ref_chosen = torch.tensor([v[0] for v in values], dtype=torch.float32, device=self.device)
        ref_rejected = torch.tensor([v[1] for v in values], dtype=torch.float32, device=self.device)
        lengths: dict[str, Any] = {}
        if self.config.loss_type == "ipo":  # TRL's length-normalised IPO (see loss.py)
            lengths = dict(zip(("chosen_lengths", "rejected_lengths"), response_lengths(batch), strict=True))
        output = preference_loss(
            chosen,
            rejected,
            ref_chosen,
            ref_rejected,
            beta=self.config.beta,
            loss_type=self.config.loss_type,
            label_smoothing=self.config.label_smoothing,
            **lengths,
        )
        if not self.config.sft_weight:
            return output
        chosen_lengths, _ = response_lengths(batch)
        return with_sft_term(output, chosen, chosen_lengths, self.config.sft_weight)

    def forward_backward(self, indices: Sequence[int]) -> dict[str, Any]:
        """Gradients of one optimizer step, accumulated over its micro-batches (chosen + rejected fused).

        Each micro-batch is laid out by :func:`~desktop_dpo.core.dpo.data.collate_for`: where the model
        allows it (checked once per model), each pair is one segment ``prompt + chosen + rejected`` (the
        rejected tokens masked from the chosen ones, positions restarting after the prompt), segments
        packed into rows, so the prompt goes through the model once and almost no padding does; the LM
        head runs only at positions that predict a response token, through the fused head
        (:func:`~desktop_dpo.core.dpo.data.head_token_logps`), which never keeps [tokens, vocab]
        logits for the backward pass. The sums equal those of one padded batch of the same pairs.

        Where the time goes (``bench/train_vs_trl.py``'s work: 32k vocabulary, hidden 256, 4 layers, batch 4,
        2 CPU threads; CPU seconds of the run's 32 steps and its reference pass): decoder layers forward
        33% and backward 46%, the fused LM head 9% (over half of the arithmetic, but as two large matrix
        products it runs near the CPU's peak, while the layers are many small products and elementwise
        ops), the reference pass 7%, clipping + AdamW 3%, collation 0.7%, the DPO loss 0.3%. The fused
        head took the step from 0.78× to 0.63× of a plain forward + backward over padded rows (autograd
        spent ~45% of its time in [tokens, vocab] fills and passes), the shared prompt and packing to 0.60×.
        """
        import torch

        from desktop_dpo.core.dpo.data import batch_tokens, collate_for

        self.model.train()
        outputs, chosen_logps, rejected_logps, tokens = [], [], [], 0
        for batch_indices in _length_batches(indices, self.pairs, self.config.batch_size):
            pairs = [self.pairs[i] for i in batch_indices]
            batch = _to_device(collate_for(self.model, pairs, self.pad_id), self.device)
            tokens += batch_tokens(batch)
            chosen, rejected = _policy_logps(self.model, batch)
            output = self._loss(batch, batch_indices, chosen, rejected)
            # Sum over pairs ÷ pairs in the step: the gradient of one batch holding all of them.
            (output.losses.sum() / len(indices)).backward()
            outputs.append(output)
            chosen_logps.append(chosen.detach())
            rejected_logps.append(rejected.detach())
        merged = type(outputs[0])(*(torch.cat(parts) for parts in zip(*outputs, strict=True)))
        return {
            "output": merged,
            "chosen_logps": torch.cat(chosen_logps),
            "rejected_logps": torch.cat(rejected_logps),
            "tokens": tokens,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def update(self, result: dict[str, Any]) -> None:
        """Clip, step (skipped when the loss or gradient is not finite), advance the schedule."""
        import torch

        result["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm).item()
        result["loss"] = result["output"].losses.float().mean().item()
        if math.isfinite(result["grad_norm"]) and math.isfinite(result["loss"]):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def step_metrics(self, result: dict[str, Any], epoch: float, seconds: float, eta: float) -> StepMetrics:
        from desktop_dpo.core.dpo.loss import dpo_metrics

        metrics = dpo_metrics(
            result["output"],
            policy_chosen_logps=result["chosen_logps"],
            policy_rejected_logps=result["rejected_logps"],
        )
        return StepMetrics(
            step=self.step,
            total_steps=self.total_steps,
            epoch=epoch,
            loss=result["loss"],
            rewards_chosen=metrics["rewards/chosen"],
            rewards_rejected=metrics["rewards/rejected"],
            rewards_accuracies=metrics["rewards/accuracies"],
            rewards_margins=metrics["rewards/margins"],
            logps_chosen=metrics["logps/chosen"],
            logps_rejected=metrics["logps/rejected"],
            lr=result["lr"],
            grad_norm=result["grad_norm"],
            tokens_per_s=result["tokens"] / max(seconds, 1e-9),
            eta_s=eta,
        )

    def evaluate(self) -> EvalMetrics | None:
        """The policy on the held-out pairs, without dropout or gradients (None when there are none)."""
        import torch

        from desktop_dpo.core.dpo.data import collate_for, sequence_logps

        if not self.heldout:
            return None
        self.model.eval()
        outputs = []
        with torch.inference_mode():
            for batch_indices in _length_batches(self.heldout, self.pairs, self.config.batch_size * 2):
                pairs = [self.pairs[i] for i in batch_indices]
                batch = _to_device(collate_for(self.model, pairs, self.pad_id), self.device)
                outputs.append(self._loss(batch, batch_indices, *sequence_logps(self.model, batch)))
        losses = torch.cat([o.losses for o in outputs]).float()
        chosen = torch.cat([o.chosen_rewards for o in outputs]).float()
        rejected = torch.cat([o.rejected_rewards for o in outputs]).float()
        return EvalMetrics(
            step=self.step,
            loss=losses.mean().item(),
            accuracy=(chosen > rejected).float().mean().item(),
            margins=(chosen - rejected).mean().item(),
            rewards_chosen=chosen.mean().item(),
            rewards_rejected=rejected.mean().item(),
            pairs=len(self.heldout),
        )

    # ---------------------------------------------------------------- checkpoints and cleanup

    def save(self) -> Path:
        """Checkpoint the state at the current step boundary."""
        path = _save_checkpoint(
            self.run_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            {
                "step": self.step,
                "epoch": self.epoch,
                "offset": self.offset,
                "total_steps": self.total_steps,
                "n_train": self.n_train,
                # Mid-step (a rescue after an error), the boundary's RNG state, so the step replays exactly.
                "rng": self.rng_at_boundary if self.rng_at_boundary is not None else _rng_state(),
                "watch": self.watch.state(),
                "config": self.config.to_dict(),
            },
        )
        self.saved_step = self.step
        return path

    def release(self) -> None:
        """Drop the model, the optimizer and the schedule, and give their memory back to the device now.

        Runs at the end of every run (finished, stopped, failed): on a GPU shared with llama.cpp and other
        programs the memory must be free when the run ends, not when Python's collector gets round to it.
        """
        for name in ("model", "optimizer", "scheduler", "params"):
            self.__dict__.pop(name, None)
        _free_memory(self.device)

    def finish(self) -> Finished:
        """Write the adapter (atomically) with a note of its origin; drop the checkpoints."""
        adapter_dir = self.run_dir / "adapter"
        _save_adapter_atomic(self.model, adapter_dir)
        check_tensor_file(adapter_dir / _ADAPTER_WEIGHTS, "the adapter this run wrote")
        _write_adapter_info(adapter_dir, self.run, self.config, self.base, self.quantization)
        write_trained_template(adapter_dir, self.chat_template)
        shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
        metrics: dict[str, float] = {}
        if self.last_train is not None:
            metrics.update({f"train/{k}": v for k, v in self.last_train.as_metrics().items()})
        if self.last_eval is not None:
            metrics.update({f"heldout/{k}": v for k, v in self.last_eval.as_metrics().items()})
        return Finished(adapter_path=str(adapter_dir), metrics=metrics, step=self.step)


def _get_run(store: Store, run_id: int) -> RunRow:
    run = store.get_run(run_id)
    if run is None:
        raise TrainingError(f"There is no training run {run_id}.")
    return run


def _get_model(store: Store, model_id: int | None) -> ModelRow:
    model = store.get_model(model_id) if model_id is not None else None
    if model is None:
        raise ModelError(
            "The model this run trains is no longer registered. Add it again in the Models view."
        )
    return model


def run_folder(run: RunRow, runs_dir: Path | None) -> Path:
    """The folder of run ``run`` (its checkpoints, adapter and training lock)."""
    if run.checkpoint_dir:
        return Path(run.checkpoint_dir)
    if runs_dir is None:
        from desktop_dpo.config import AppPaths

        runs_dir = AppPaths.default().runs_dir
    return runs_dir / f"run-{run.id:04d}"


def _save_checkpoint(
    run_dir: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> Path:
    """Adapter + optimizer + scheduler + RNG + data position, written to a temporary folder and renamed.

    The ``latest`` pointer is switched only after the folder is complete and flushed, so a crash at
    any moment leaves the previous checkpoint usable. Older checkpoints are then removed.
    """
    import torch

    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{state['step']:07d}"
    final = folder / name
    # An existing folder of the same step (stopped right after a resume) is replaced.
    with atomic_output(final) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                **state,
            },
            tmp / _STATE_FILE,
        )
    _write_text_atomic(folder / _LATEST_FILE, name)
    for old in folder.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _load_checkpoint(
    path: Path, model: Any, optimizer: Any, config: TrainConfig, n_train: int
) -> dict[str, Any]:
    """Put a checkpoint's adapter and optimizer state in place; return the rest of its state."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    damaged = TrainingError(
        f"The checkpoint at {path} is damaged or was not written by desktop-dpo; start the run again "
        f"(desktop-dpo train --resume RUN_ID --restart) or delete {path}."
    )
    try:
        # weights_only refuses any pickle that would run code; a refusal is a damaged file to the person.
        state = torch.load(path / _STATE_FILE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as exc:
        raise damaged from exc
    if not isinstance(state, dict):
        raise damaged
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"The checkpoint {path} was written by another version; start a new run.")
    saved = state.get("config", {})
    changed = [name for name in _ADAPTER_FIELDS if name in saved and saved[name] != getattr(config, name)]
    if changed:
        raise TrainingError(
            f"This run's checkpoint was trained with other {', '.join(n.replace('_', ' ') for n in changed)}; "
            "those cannot change mid-run. Put them back, or start a new run."
        )
    if state.get("n_train") != n_train:
        log.warning("The run's pairs changed since its checkpoint (%s -> %s)", state.get("n_train"), n_train)
    check_tensor_file(path / _ADAPTER_WEIGHTS, f"the checkpoint at {path}")
    set_peft_model_state_dict(model, load_file(str(path / _ADAPTER_WEIGHTS)))
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, TypeError) as exc:
        raise damaged from exc
    return state


def _write_adapter_info(
    adapter_dir: Path, run: RunRow, config: TrainConfig, base: ModelRow, quantization: str
) -> None:
    """A small JSON next to the adapter: what it was trained from and how (read by export)."""
    info = {
        "run_id": run.id,
        "run_name": run.name,
        "base_model_id": base.id,
        "base_model_fingerprint": base.fingerprint,
        "reference": run.reference,
        "quantization": quantization,
        "config": config.to_dict(),
        "pairs_sha256": hashlib.sha256(json.dumps(run.comparison_ids).encode()).hexdigest(),
    }
    _write_text_atomic(adapter_dir / "desktop_dpo_run.json", json.dumps(info, indent=2, sort_keys=True))
