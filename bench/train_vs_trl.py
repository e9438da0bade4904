"""Training: our DPO job against TRL's ``DPOTrainer`` on the same work, and against a bare loop (the floor).

The work: a Llama built from a config (hidden 256, 4 layers, 4 heads, MLP 688, Llama's 32000-token
vocabulary, random weights) with a SentencePiece tokenizer trained here, 64 preference pairs of varied
lengths (prompt + response from 44 to 253 tokens), LoRA r=8 / alpha=16 on all linear layers,
batch 4, max length 256, fp32 on the CPU, 2 torch threads, denormals flushed to zero (our job does
this on the CPU; every arm here does it too), two epochs (32 optimizer steps), β=0.1, lr 1e-4 cosine
with 10% warm-up, gradient clipping at 1.0, no gradient checkpointing in any arm, no dropout.

Arms, each in its own fresh process (so peak RSS is the arm's own), repeated and alternated:

- ``ours``: the real job, ``desktop_dpo.core.dpo.train.train``, driven through a SQLite store as the
  CLI drives it (pairs, run, prompt split, reference cache, events persisted; no checkpoint falls due).
- ``trl``: ``DPOTrainer`` with ``bf16=False``, ``gradient_checkpointing=False``, ``use_cpu=True``,
  ``report_to=[]`` and ``precompute_ref_log_probs=True`` (chosen: both arms then compute the reference
  log-probs once before training, the fair and the faster setting for TRL); the same LoRA config
  through ``peft_config`` (so its reference is the adapter switched off, like ours); the same seed and
  the same batches (the dataset in our epoch order, sequential sampler). The arm checks, after its
  timings, that TRL trained on exactly our token ids from exactly our initial adapter.
- ``floor``: the same micro-batches through the same model and LoRA with a trivial loss, backward and
  AdamW step, and nothing else (no reference, no metrics, no clipping, no schedule, no database).

The adapter starts random on both DPO arms (``init_lora_weights=False``, same seed), so the step-0
loss is not the uninformative ln 2.

Headline keys (medians over the rounds):

- ``throughput_ratio``: our training pairs/s ÷ TRL's (higher is better); from the first to the last
  optimizer step, reference precompute excluded on both sides.
- ``precompute_ratio``: our reference precompute seconds ÷ TRL's (lower is better).
- ``memory_ratio``: our peak RSS ÷ TRL's peak RSS, whole process (lower is better).
- ``floor_ratio``: our pairs/s ÷ the floor's pairs/s (1.0 = nothing spent beyond forward + backward).
- ``step0_loss_delta``: |our loss − TRL's loss| on the first step (same adapter, same batch).
- ``cpu_throughput_ratio`` (extra): like ``throughput_ratio`` but from the CPU seconds each process
  spent training, which other load on a shared machine disturbs less than wall time.

Run from the repository root:  python bench/train_vs_trl.py [--rounds 2] [--vocab 32000]
(about 10 minutes on 2 quiet cores). ``--vocab`` changes the share of the LM head in the work: with
4000 (the trained tokenizer's own size) the layers dominate and the gap to TRL narrows.
Last line:  train_vs_trl: throughput_ratio=.. precompute_ratio=.. memory_ratio=.. floor_ratio=.. step0_loss_delta=..
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "train_vs_trl"

SEED = 42
PAIRS = 64
BATCH = 4
MAX_LENGTH = 256
MAX_PROMPT_LENGTH = 128
LORA_R = 8
LORA_ALPHA = 16
EPOCHS = 2
THREADS = 2
LR = 1e-4
BETA = 0.1
WARMUP_RATIO = 0.1
GRADIENT_CHECKPOINTING = False  # the same in every arm
ARMS = ("ours", "trl", "floor")
# Llama's own vocabulary size (LlamaConfig's default). The tokenizer trained here uses the first 4000 ids;
# the rest are rows a real model has too (most small models spend a third or more of their weights there).
VOCAB = 32000


# --------------------------------------------------------------------------------------------------
# The shared work: tokenizer, model, pairs (built once by the parent)
# --------------------------------------------------------------------------------------------------


def _words(rng: random.Random, count: int) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = set()
    while len(words) < count:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def build_work(folder: Path, vocab_size: int = VOCAB) -> None:
    """Tokenizer + model folder and ``pairs.json`` (64 pairs that fit in MAX_LENGTH without truncation)."""
    import io

    import sentencepiece as spm
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    from desktop_dpo.core.dpo.data import render_prompt_text

    rng = random.Random(SEED)
    vocab = _words(rng, 3000)
    polite = ["yes", "gladly", "thank", "you", "certainly", "happy", "to", "help", "here", "is"]
    curt = ["no", "whatever", "not", "my", "problem", "go", "away", "maybe", "later", "fine"]

    def sentence(n: int, style: list[str] | None = None) -> str:
        words = [rng.choice(style) if style and rng.random() < 0.3 else rng.choice(vocab) for _ in range(n)]
        return " ".join(words)

    corpus = [sentence(rng.randint(5, 40), rng.choice([polite, curt, None])) for _ in range(4000)]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=proto, vocab_size=4000, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2, hard_vocab_limit=False,
    )  # fmt: skip
    model_dir = folder / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "tokenizer.model").write_bytes(proto.getvalue())
    LlamaTokenizer.from_pretrained(model_dir).save_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(model_dir)

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    pairs = []
    for i in range(PAIRS):
        messages = [{"role": "user", "content": f"Question {i}: " + sentence(rng.randint(1, 45)) + "?"}]
        prompt = render_prompt_text(messages, tokenizer, None)
        while tokens(prompt) > MAX_PROMPT_LENGTH - 8:
            messages[0]["content"] = messages[0]["content"].rsplit(" ", 3)[0] + "?"
            prompt = render_prompt_text(messages, tokenizer, None)
        budget = MAX_LENGTH - tokens(prompt) - 4  # BOS, EOS and a margin for merges at the boundary
        texts = []
        for style in (polite, curt):
            text = " " + sentence(rng.randint(2, 160), style) + "."
            while tokens(text) > budget:
                text = text.rsplit(" ", 4)[0] + "."
            texts.append(text)
        pairs.append({"messages": messages, "chosen": texts[0], "rejected": texts[1]})
    (folder / "pairs.json").write_text(json.dumps(pairs, indent=1))


# --------------------------------------------------------------------------------------------------
# Arms (each runs in its own process and prints one JSON line)
# --------------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def our_config():
    from desktop_dpo.core.dpo.train import TrainConfig

    return TrainConfig(
        beta=BETA, lr=LR, epochs=EPOCHS, batch_size=BATCH, grad_accum=1, warmup_ratio=WARMUP_RATIO,
        scheduler="cosine", max_grad_norm=1.0, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH,
        lora_r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, init_lora_weights=False,
        quantization="none", gradient_checkpointing=GRADIENT_CHECKPOINTING, threads=THREADS, device="cpu",
        checkpoint_every=10_000, eval_every=10_000, heldout_fraction=0.0, seed=SEED,
    )  # fmt: skip


def arm_ours(work: Path, scratch: Path) -> dict:
    import torch

    from desktop_dpo.core.dpo.train import ReferenceReady, Started, StepMetrics, drive_training
    from desktop_dpo.core.jobs import CancelToken
    from desktop_dpo.core.store import Store

    torch.set_num_threads(THREADS)
    baseline = _peak_rss_mb()
    store = Store.open(scratch / "db.sqlite")
    model_id = store.add_model(name="bench", path=str(work / "model"), kind="hf", fingerprint="bench-model")
    for pair in json.loads((work / "pairs.json").read_text()):
        store.record_pair(
            messages=pair["messages"], text_a=pair["chosen"], text_b=pair["rejected"], verdict="a"
        )
    ids = [view.comparison.id for view in store.comparison_views()]
    run_id = store.create_run(
        name="bench", base_model_id=model_id, config=our_config().to_dict(), comparison_ids=ids,
        checkpoint_dir=str(scratch / "run"),
    )  # fmt: skip
    marks: dict[str, float] = {}
    steps: list[StepMetrics] = []

    def on_event(event: object) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if isinstance(event, Started):
            marks["train_start"], marks["cpu_start"] = now, cpu
        elif isinstance(event, ReferenceReady):
            marks["precompute_s"] = event.seconds
        elif isinstance(event, StepMetrics):
            steps.append(event)
            marks["train_end"], marks["cpu_end"] = now, cpu

    started = time.perf_counter()
    drive_training(store, run_id, cancel=CancelToken(), on_event=on_event)
    total = time.perf_counter() - started
    store.close()
    train_s = marks["train_end"] - marks["train_start"]
    return {
        "train_s": train_s,
        "train_cpu_s": marks["cpu_end"] - marks["cpu_start"],
        "pairs_per_s": PAIRS * EPOCHS / train_s,
        "precompute_s": marks["precompute_s"],
        "total_s": total,
        "peak_rss_mb": _peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "step0_loss": steps[0].loss,
        "final_loss": steps[-1].loss,
        "steps": len(steps),
    }


def _ordered_rows(work: Path) -> list[dict]:
    """The pairs as TRL standard rows, in our epoch-0 order (so both arms start on the same batch)."""
    from transformers import AutoTokenizer

    from desktop_dpo.core.dpo.data import render_prompt_text
    from desktop_dpo.core.dpo.train import epoch_order

    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    pairs = json.loads((work / "pairs.json").read_text())
    order = epoch_order(len(pairs), SEED, 0)
    return [
        {
            "prompt": render_prompt_text(pairs[i]["messages"], tokenizer, None),
            "chosen": pairs[i]["chosen"],
            "rejected": pairs[i]["rejected"],
        }
        for i in order
    ]


def arm_trl(work: Path, scratch: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)  # the same numeric setting as our job on the CPU: compare like with like
    baseline = _peak_rss_mb()
    rows = _ordered_rows(work)
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    args = DPOConfig(
        output_dir=str(scratch / "trl"), beta=BETA, learning_rate=LR, num_train_epochs=EPOCHS,
        per_device_train_batch_size=BATCH, gradient_accumulation_steps=1, lr_scheduler_type="cosine",
        warmup_steps=WARMUP_RATIO, max_grad_norm=1.0, weight_decay=0.0, max_length=MAX_LENGTH,
        bf16=False, fp16=False, gradient_checkpointing=GRADIENT_CHECKPOINTING, use_cpu=True, report_to=[],
        precompute_ref_log_probs=True, logging_steps=1, save_strategy="no", seed=SEED,
        dataloader_num_workers=0, disable_tqdm=True, train_sampling_strategy="sequential",
    )  # fmt: skip
    lora = LoraConfig(
        r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear", bias="none",
        task_type="CAUSAL_LM", init_lora_weights=False,
    )  # fmt: skip
    marks: dict[str, float] = {}
    precompute = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *a, **k):
        start = time.perf_counter()
        try:
            return precompute(self, *a, **k)
        finally:
            marks["precompute_s"] = marks.get("precompute_s", 0.0) + time.perf_counter() - start

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            marks.setdefault("train_start", time.perf_counter())
            marks.setdefault("cpu_start", time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            marks["train_end"], marks["cpu_end"] = time.perf_counter(), time.process_time()

    DPOTrainer._precompute_ref_logps = timed_precompute
    started = time.perf_counter()
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=lora, callbacks=[Timer()],
    )  # fmt: skip
    initial_lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    total = time.perf_counter() - started
    peak = _peak_rss_mb()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    train_s = marks["train_end"] - marks["train_start"]
    # Checks, after the peak was read: the same token ids and the same initial adapter as ours.
    from desktop_dpo.core.dpo import data as dpo_data
    from desktop_dpo.core.dpo.train import _attach_lora

    ours_tokens = dpo_data.tokenize_pairs(
        tokenizer,
        [
            dpo_data.PreferencePair(i, i, r["messages"], r["chosen"], r["rejected"])
            for i, r in enumerate(_pairs_in_order(work))
        ],
        chat_template=None,
        max_length=MAX_LENGTH,
        max_prompt_length=MAX_PROMPT_LENGTH,
    ).pairs
    theirs = trainer.train_dataset
    tokens_identical = all(
        list(ours.prompt_ids) == theirs[i]["prompt_ids"]
        and list(ours.chosen_ids) == theirs[i]["chosen_ids"]
        and list(ours.rejected_ids) == theirs[i]["rejected_ids"]
        for i, ours in enumerate(ours_tokens)
    )
    ours_model = _attach_lora(
        AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32), our_config(), "none"
    )
    ours_lora = {n: p for n, p in ours_model.named_parameters() if "lora_" in n}
    adapter_identical = ours_lora.keys() == initial_lora.keys() and all(
        torch.equal(ours_lora[n], initial_lora[n]) for n in ours_lora
    )
    return {
        "train_s": train_s,
        "train_cpu_s": marks["cpu_end"] - marks["cpu_start"],
        "pairs_per_s": PAIRS * EPOCHS / train_s,
        "precompute_s": marks["precompute_s"],
        "total_s": total,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "step0_loss": losses[0],
        "final_loss": losses[-1],
        "steps": len(losses),
        "tokens_identical": tokens_identical,
        "adapter_identical": adapter_identical,
    }


def _pairs_in_order(work: Path) -> list[dict]:
    """Our pairs with the prompt kept as messages, in our epoch-0 order (for the token check)."""
    from desktop_dpo.core.dpo.train import epoch_order

    pairs = json.loads((work / "pairs.json").read_text())
    return [pairs[i] for i in epoch_order(len(pairs), SEED, 0)]


def arm_floor(work: Path, scratch: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from desktop_dpo.core.dpo import data as dpo_data
    from desktop_dpo.core.dpo.train import _attach_lora, _length_batches, _plan

    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)  # as our job does on the CPU: the floor runs under the same settings
    baseline = _peak_rss_mb()
    config = our_config()
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    pairs = [
        dpo_data.PreferencePair(i, i, p["messages"], p["chosen"], p["rejected"])
        for i, p in enumerate(json.loads((work / "pairs.json").read_text()))
    ]
    tokenized = dpo_data.tokenize_pairs(
        tokenizer, pairs, chat_template=None, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH
    ).pairs
    model = _attach_lora(
        AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32), config, "none"
    )
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    started, cpu = time.perf_counter(), time.process_time()
    steps = 0
    for _, _, indices in _plan(len(tokenized), config, 0, 0):
        for batch_indices in _length_batches(indices, tokenized, BATCH):
            batch = dpo_data.collate([tokenized[i] for i in batch_indices], tokenizer.eos_token_id)
            chosen, rejected = dpo_data.sequence_logps(model, batch)
            (rejected - chosen).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
    train_s = time.perf_counter() - started
    return {
        "train_s": train_s,
        "train_cpu_s": time.process_time() - cpu,
        "pairs_per_s": PAIRS * EPOCHS / train_s,
        "peak_rss_mb": _peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "steps": steps,
    }


# --------------------------------------------------------------------------------------------------
# Parent: build once, run the arms alternately, report
# --------------------------------------------------------------------------------------------------


def run_arm(arm: str, work: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{arm}-") as scratch:
        env = {
            **os.environ,
            "HF_DATASETS_CACHE": str(
                Path(scratch) / "hf-datasets"
            ),  # TRL must not reuse an earlier precompute
            "OMP_NUM_THREADS": str(THREADS),
            "TOKENIZERS_PARALLELISM": "false",
        }
        proc = subprocess.run(
            [sys.executable, __file__, "--arm", arm, "--work", str(work), "--scratch", scratch],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"arm {arm} failed with exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of every arm (alternated)")
    parser.add_argument(
        "--vocab",
        type=int,
        default=VOCAB,
        help="model vocabulary (default: Llama's %(default)s; at least 4000)",
    )
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from desktop_dpo.core.offline import lock_down

    lock_down()  # before any ML import, in the parent and in every arm

    if args.arm:
        result = {"ours": arm_ours, "trl": arm_trl, "floor": arm_floor}[args.arm](args.work, args.scratch)
        print(json.dumps(result))
        return

    work = OUT / f"work-vocab{args.vocab}"
    if not (work / "pairs.json").is_file():
        print("building the model, tokenizer and pairs ...", file=sys.stderr)
        build_work(work, max(args.vocab, 4000))
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for round_index in range(args.rounds):
        # Rotate the order each round, so no arm always runs first (or right after another heavy one).
        order = ARMS[round_index % len(ARMS) :] + ARMS[: round_index % len(ARMS)]
        for arm in order:
            result = run_arm(arm, work)
            results[arm].append(result)
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
            print(f"round {round_index + 1} {arm:5s} {shown}", file=sys.stderr)

    def median(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in results[arm])

    trl_checks = all(r["tokens_identical"] and r["adapter_identical"] for r in results["trl"])
    delta = max(
        abs(o["step0_loss"] - t["step0_loss"]) for o, t in zip(results["ours"], results["trl"], strict=True)
    )
    for arm in ARMS:
        line = (
            f"{arm:5s} pairs/s {median(arm, 'pairs_per_s'):.2f}  peak RSS {median(arm, 'peak_rss_mb'):.0f} MB"
        )
        if arm != "floor":
            line += f"  precompute {median(arm, 'precompute_s'):.2f} s  step-0 loss {results[arm][0]['step0_loss']:.6f}"
        print(line)
    print(f"trl arm: same token ids and same initial adapter as ours: {trl_checks}")
    print(
        "train_vs_trl: "
        f"throughput_ratio={median('ours', 'pairs_per_s') / median('trl', 'pairs_per_s'):.2f} "
        f"precompute_ratio={median('ours', 'precompute_s') / median('trl', 'precompute_s'):.2f} "
        f"memory_ratio={median('ours', 'peak_rss_mb') / median('trl', 'peak_rss_mb'):.2f} "
        f"floor_ratio={median('ours', 'pairs_per_s') / median('floor', 'pairs_per_s'):.2f} "
        f"step0_loss_delta={delta:.1e} "
        f"cpu_throughput_ratio={median('trl', 'train_cpu_s') / median('ours', 'train_cpu_s'):.2f}"
    )


if __name__ == "__main__":
    main()
