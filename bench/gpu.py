"""GPU: QLoRA-DPO against TRL's ``DPOTrainer``, llama.cpp sampling with full offload, and an export, on one
NVIDIA GPU (issue 11, item 6).

The work, built here (nothing is downloaded): the tokenizer and the 64 preference pairs of
``bench/train_vs_trl.py`` (its ``build_work``), with the model replaced by a Llama of the export bench's
shape (hidden 1024, 16 layers, MLP 2816, 16 heads / 4 KV heads, 32000-token vocabulary, untied: ~270M
parameters, the demo model's size), random bf16 weights.

Arms, each in its own fresh process (peak GPU memory is the arm's own); the two training arms repeated
and alternated:

- ``ours``: the real job (``train_vs_trl.arm_ours``: SQLite store, reference log-probs computed once,
  events persisted) with QLoRA: NF4 base with double quantization, bf16 compute, LoRA r=8 / alpha=16 on
  all linear layers, batch 4, max length 256, two epochs, no gradient checkpointing.
- ``trl``: ``DPOTrainer`` with the same QLoRA settings: the base loaded in NF4 (the same
  ``BitsAndBytesConfig``), the same ``LoraConfig`` through ``peft_config``, ``bf16=True``, the same
  batches in the same order (``train_vs_trl._ordered_rows``), TRL's default reference (inside each step).
- ``export``: the export bench's ``arm_ours`` (merge the adapter into the base, llama.cpp's converter to
  F16 GGUF, quantize to Q4_K_M) on the export bench's model and adapter (same shape as above).
- ``sample``: the Q4_K_M file from ``export`` in our ``LlamaCppEngine`` with every layer offloaded
  (``n_gpu_layers=-1``): one response, then a pair (two sequences decoded together), 128 tokens each,
  end-of-generation ignored; tokens/s = completion tokens ÷ wall time (the pair: both responses' tokens
  ÷ the time until both are complete), median over the repeats.

Time of a training arm: reference + training steps, as ``train_vs_trl.py`` counts it (model loading,
imports and tokenisation excluded). Peak memory of a training arm: ``torch.cuda.max_memory_allocated``
above the after-load baseline (the NF4 base on the GPU), reset there; the same points as ``train_vs_trl``.

Headline keys (medians over the rounds):

- ``qlora_throughput_ratio``: our pairs/s ÷ TRL's pairs/s (> 1: ours is faster).
- ``vram_ratio``: our peak GPU memory above the after-load baseline ÷ TRL's (< 1: ours needs less).
- ``sample_tok_s``, ``pair_tok_s``: llama.cpp tokens/s, one response and a pair, full offload.
- ``export_s``: merge + F16 GGUF + Q4_K_M, seconds.
- extras: pairs/s and peak MiB of both arms, ``step0_loss_delta`` (bf16 compute: agreement to ~1e-2 is
  expected, not 1e-4), ``tokens_identical``, the export's stages, ``offload`` (llama.cpp built with GPU
  support), ``device``, ``rounds``.

Without CUDA (``torch.cuda.is_available()`` false) it says so and exits 0. ``--cpu-smoke`` runs every arm
tiny on the CPU instead (a 2-layer, 64-wide model, 8 pairs, NF4 through bitsandbytes' CPU kernels, fp32
compute, resident memory in place of GPU memory, llama.cpp in safe mode without extra buffer types): it
checks the mechanics, its numbers mean nothing.

Run from the repository root:  python bench/gpu.py [--rounds 3]      (a few minutes on one GPU)
                               python bench/gpu.py --cpu-smoke       (a few minutes on 2 CPU cores)
Last line:  gpu: qlora_throughput_ratio=.. vram_ratio=.. sample_tok_s=.. pair_tok_s=.. export_s=..
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import export as export_bench  # noqa: E402
from bench import train_vs_trl  # noqa: E402

ARMS = ("ours", "trl", "export", "sample")
SAMPLE_TOKENS = 128
SAMPLE_REPEATS = 5
# The model of every arm: the export bench's shape on a GPU; on the CPU smoke, tiny.
GPU_SHAPE = {
    "hidden": export_bench.HIDDEN, "layers": export_bench.LAYERS, "intermediate": export_bench.INTERMEDIATE,
    "heads": export_bench.HEADS, "kv_heads": export_bench.KV_HEADS, "vocab": export_bench.VOCAB,
}  # fmt: skip
SMOKE_SHAPE = {"hidden": 64, "layers": 2, "intermediate": 128, "heads": 4, "kv_heads": 2, "vocab": 4000}
SMOKE_PAIRS = 8


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --------------------------------------------------------------------------------------------------
# The work
# --------------------------------------------------------------------------------------------------


def build_work(folder: Path, shape: dict[str, int], pairs: int | None) -> None:
    """``train_vs_trl``'s tokenizer and pairs, with its model replaced by one of ``shape`` (bf16 weights)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    train_vs_trl.build_work(folder, vocab_size=max(shape["vocab"], 4000))
    model_dir = folder / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for old in model_dir.glob("*.safetensors"):
        old.unlink()
    torch.manual_seed(train_vs_trl.SEED)
    config = LlamaConfig(
        vocab_size=max(shape["vocab"], 4000), hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(model_dir)
    if pairs is not None:
        path = folder / "pairs.json"
        path.write_text(json.dumps(json.loads(path.read_text())[:pairs], indent=1))


def _pair_count(work: Path) -> int:
    return len(json.loads((work / "pairs.json").read_text()))


# --------------------------------------------------------------------------------------------------
# Peak memory: GPU memory on CUDA, resident memory on the CPU smoke
# --------------------------------------------------------------------------------------------------


# train_vs_trl's resident-memory probes, kept: arm_ours points the module's names at the two below.
_RSS_WINDOW, _RSS_STATUS = train_vs_trl._start_peak_window, train_vs_trl._status_mb


def _start_peak_window() -> float:
    """The after-load baseline in MiB; the peak counter is reset to it."""
    import torch

    if not torch.cuda.is_available():
        return _RSS_WINDOW()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated() / 2**20


def _peak_mb(_key: str = "VmHWM") -> float:
    """The peak since the window opened, in MiB (``_key`` as ``train_vs_trl._status_mb`` takes it)."""
    import torch

    if not torch.cuda.is_available():
        return _RSS_STATUS("VmHWM")
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


# --------------------------------------------------------------------------------------------------
# Arms (each in its own process; prints one JSON line)
# --------------------------------------------------------------------------------------------------


_CPU_CONFIG = train_vs_trl.our_config  # kept: arm_ours points the module's name at qlora_config


def qlora_config():
    """``train_vs_trl``'s settings, with the base in NF4 on this device (bf16 compute on a GPU)."""
    cuda = _cuda()
    return _CPU_CONFIG().replace(
        quantization="nf4", device="cuda" if cuda else "cpu", threads=0 if cuda else train_vs_trl.THREADS
    )


def arm_ours(work: Path, scratch: Path) -> dict:
    """``train_vs_trl.arm_ours`` itself, with QLoRA settings and GPU memory as its memory measure."""
    # Its settings and memory probes are module globals it looks up when it runs: point them here.
    train_vs_trl.our_config = qlora_config
    train_vs_trl._start_peak_window = _start_peak_window
    train_vs_trl._status_mb = _peak_mb
    return train_vs_trl.arm_ours(work, scratch)


def arm_trl(work: Path, scratch: Path) -> dict:
    """TRL's ``DPOTrainer`` with the same QLoRA settings, batches and order as ours."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from desktop_dpo.core.dpo import data as dpo_data
    from desktop_dpo.core.dpo import tokenizing

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(train_vs_trl.THREADS)
        torch.set_flush_denormal(True)  # as our job does on the CPU
    config = qlora_config()
    compute = torch.bfloat16 if cuda else torch.float32  # our job's _compute_dtype
    rows = train_vs_trl._ordered_rows(work)
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    model = AutoModelForCausalLM.from_pretrained(
        work / "model",
        dtype=compute,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        ),
        device_map={"": torch.cuda.current_device() if cuda else "cpu"},
    )
    baseline = _start_peak_window()
    args = DPOConfig(
        output_dir=str(scratch / "trl"), beta=config.beta, learning_rate=config.lr,
        num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=1, lr_scheduler_type="cosine", warmup_steps=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm, weight_decay=0.0, max_length=config.max_length,
        bf16=cuda, fp16=False, gradient_checkpointing=config.gradient_checkpointing, use_cpu=not cuda,
        report_to=[], logging_steps=1, save_strategy="no", seed=config.seed, dataloader_num_workers=0,
        disable_tqdm=True, train_sampling_strategy="sequential",
    )  # fmt: skip
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules="all-linear", bias="none", task_type="CAUSAL_LM", init_lora_weights=False,
    )  # fmt: skip
    marks: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks["train_start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            marks["train_end"] = time.perf_counter()

    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=lora, callbacks=[Timer()],
    )  # fmt: skip
    trainer.train()
    peak = _peak_mb()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    ours_tokens = tokenizing.tokenize_pairs(
        tokenizer,
        [
            dpo_data.PreferencePair(i, i, r["messages"], r["chosen"], r["rejected"])
            for i, r in enumerate(train_vs_trl._pairs_in_order(work))
        ],
        chat_template=None,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
    ).pairs
    theirs = trainer.train_dataset
    tokens_identical = all(
        list(ours.prompt_ids) == theirs[i]["prompt_ids"]
        and list(ours.chosen_ids) == theirs[i]["chosen_ids"]
        and list(ours.rejected_ids) == theirs[i]["rejected_ids"]
        for i, ours in enumerate(ours_tokens)
    )
    return {
        "time_s": marks["train_end"] - marks["train_start"],  # TRL's reference runs inside the steps
        "baseline_mb": baseline,
        "peak_mb": peak,
        "above_mb": peak - baseline,
        "step0_loss": losses[0],
        "final_loss": losses[-1],
        "steps": len(losses),
        "tokens_identical": tokens_identical,
    }


def arm_export(work: Path, scratch: Path) -> dict:
    """The export bench's ``arm_ours`` on its model and adapter (built here, outside the timing)."""
    folder = scratch / "export-work"
    base, adapter = export_bench.build_work(folder)
    out = work / "export"
    out.mkdir(parents=True, exist_ok=True)
    return export_bench.arm_ours(base, adapter, out)


def arm_sample(work: Path, scratch: Path) -> dict:
    """Our llama.cpp engine on the exported Q4_K_M, every layer offloaded: one response, then a pair."""
    import llama_cpp

    from bench.sampling import time_ours, time_ours_pair
    from desktop_dpo.config import SamplingSettings
    from desktop_dpo.core.llm.llamacpp import LlamaCppEngine

    cuda = _cuda()
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    # On the CPU smoke: safe mode (no extra buffer types), since loading a quantized GGUF segfaults in
    # llama.cpp's AMX repacking on some CPUs (see ARCHITECTURE.md).
    engine = LlamaCppEngine(
        work / "export" / "model.Q4_K_M.gguf", n_ctx=1024, n_gpu_layers=-1 if cuda else 0, seed=0,
        safe_mode=not cuda,
    ).load()  # fmt: skip
    settings = SamplingSettings(max_tokens=SAMPLE_TOKENS)
    try:
        time_ours(engine, settings, 1)  # warm-up
        time_ours_pair(engine, settings, (1, 2))
        single, pair = [], []
        for repeat in range(SAMPLE_REPEATS):
            seconds, tokens, _ = time_ours(engine, settings, 10 + repeat)
            single.append(tokens / seconds)
            seconds, fewest = time_ours_pair(engine, settings, (20 + repeat, 40 + repeat))
            pair.append(2 * fewest / seconds)
    finally:
        engine.close()
    return {
        "sample_tok_s": statistics.median(single),
        "pair_tok_s": statistics.median(pair),
        "offload": offload,
        "gpu_layers": engine.loaded_gpu_layers,
    }


ARM_FUNCTIONS = {"ours": arm_ours, "trl": arm_trl, "export": arm_export, "sample": arm_sample}


def run_arm(arm: str, work: Path, smoke: bool) -> dict:
    """One arm in a fresh process; its JSON result."""
    with tempfile.TemporaryDirectory(prefix=f"bench-gpu-{arm}-") as scratch:
        env = {
            **os.environ,
            "HF_DATASETS_CACHE": str(Path(scratch) / "hf-datasets"),  # no earlier TRL precompute reused
            "TOKENIZERS_PARALLELISM": "false",
            **({"OMP_NUM_THREADS": str(train_vs_trl.THREADS)} if smoke else {}),
        }
        command = [sys.executable, __file__, "--arm", arm, "--work", str(work), "--scratch", scratch]
        proc = subprocess.run(
            command + (["--cpu-smoke"] if smoke else []), capture_output=True, text=True, env=env, cwd=REPO
        )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"arm {arm} failed with exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of the training arms (alternated)")
    parser.add_argument("--cpu-smoke", action="store_true", help="every arm tiny on the CPU: mechanics only")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from desktop_dpo.core.offline import lock_down

    lock_down()  # before any ML import, in the parent and in every arm
    if args.cpu_smoke:  # the export arm builds the export bench's model: tiny here too
        export_bench.HIDDEN, export_bench.LAYERS, export_bench.INTERMEDIATE = 64, 2, 128
        export_bench.HEADS, export_bench.KV_HEADS, export_bench.VOCAB = 4, 2, 4000
    if args.arm:
        print(json.dumps(ARM_FUNCTIONS[args.arm](args.work, args.scratch)))
        return
    if args.build:
        build_work(
            args.build, SMOKE_SHAPE if args.cpu_smoke else GPU_SHAPE, SMOKE_PAIRS if args.cpu_smoke else None
        )
        return

    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(
            "gpu: no CUDA device (torch.cuda.is_available() is False): nothing measured. Run this on a machine "
            "with an NVIDIA GPU and a CUDA build of torch, or pass --cpu-smoke to check the mechanics."
        )
        return
    device = torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    rounds = 1 if args.cpu_smoke else max(1, args.rounds)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp) / "work"
        print(f"device: {device}; building the model, tokenizer and pairs …", file=sys.stderr, flush=True)
        # In a child, like every arm: this process never holds a model.
        build = [sys.executable, __file__, "--build", str(work)] + (["--cpu-smoke"] if args.cpu_smoke else [])
        subprocess.run(build, check=True, capture_output=True, cwd=REPO)
        pairs = _pair_count(work)
        results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
        for round_index in range(rounds):
            for arm in ("ours", "trl") if round_index % 2 == 0 else ("trl", "ours"):
                result = run_arm(arm, work, args.cpu_smoke)
                results[arm].append(result)
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
                print(f"round {round_index + 1} {arm:5s} {shown}", file=sys.stderr, flush=True)
        for arm in ("export", "sample"):  # the sample arm loads the export arm's Q4_K_M
            result = run_arm(arm, work, args.cpu_smoke)
            results[arm].append(result)
            shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
            print(f"{arm:6s} {shown}", file=sys.stderr, flush=True)

    def median(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in results[arm])

    epochs = qlora_config().epochs
    ours_pairs_s = pairs * epochs / median("ours", "time_s")
    trl_pairs_s = pairs * epochs / median("trl", "time_s")
    delta = max(abs(o["step0_loss"] - t["step0_loss"]) for o in results["ours"] for t in results["trl"])
    tokens_identical = all(r["tokens_identical"] for r in results["trl"])
    export = results["export"][0]
    sample = results["sample"][0]
    memory = "vram" if torch.cuda.is_available() else "rss"
    print(
        f"ours {ours_pairs_s:.2f} pairs/s, peak {median('ours', 'above_mb'):.0f} MiB above after-load "
        f"({memory}); TRL {trl_pairs_s:.2f} pairs/s, {median('trl', 'above_mb'):.0f} MiB; step-0 losses "
        f"{results['ours'][0]['step0_loss']:.5f} / {results['trl'][0]['step0_loss']:.5f}; same tokens: "
        f"{tokens_identical}"
    )
    if torch.cuda.is_available() and not sample["offload"]:
        print(
            "llama.cpp here was built without GPU support, so sampling ran on the CPU: reinstall with "
            'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
        )
    print(
        f"gpu: qlora_throughput_ratio={ours_pairs_s / trl_pairs_s:.2f} "
        f"vram_ratio={median('ours', 'above_mb') / median('trl', 'above_mb'):.2f} "
        f"sample_tok_s={sample['sample_tok_s']:.1f} pair_tok_s={sample['pair_tok_s']:.1f} "
        f"export_s={export['seconds']:.1f} "
        f"ours_pairs_s={ours_pairs_s:.2f} trl_pairs_s={trl_pairs_s:.2f} "
        f"ours_peak_mib={median('ours', 'above_mb'):.0f} trl_peak_mib={median('trl', 'above_mb'):.0f} "
        f"step0_loss_delta={delta:.1e} tokens_identical={tokens_identical} "
        f"merge_s={export['merge_s']:.1f} convert_s={export['convert_s']:.1f} "
        f"quantize_s={export['quantize_s']:.1f} offload={sample['offload']} memory={memory} "
        f"device={device.replace(' ', '_')} rounds={len(results['ours'])}"
        + (" smoke=cpu" if args.cpu_smoke else "")
    )


if __name__ == "__main__":
    main()
