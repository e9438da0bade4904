"""The parity check after an export: does the exported file answer like the model that was trained?

Four comparisons, each catching a different way an export goes wrong:

1. **policy vs merged** (transformers): the trained policy — the adapter on the base it was trained on,
   which is NF4 for a QLoRA run — against the merged full-precision model, as summed log-probabilities of
   held-out pairs. The difference is what merging and leaving 4-bit changed; the chosen-minus-rejected
   preference is what training learned, so the report also says whether its sign survived for every pair.
2. **tokenizers**: the merged model's transformers tokenizer and the F16 GGUF's llama.cpp tokenizer on
   fixed texts (plain, leading space, unicode, emoji, the chat template with its special tokens) must give
   the same token ids; otherwise every later number compares different inputs.
3. **merged vs F16 GGUF** (transformers vs llama.cpp): next-token logits on the same ids: top-1 agreement
   and the largest absolute difference. A wrong tensor mapping or a broken conversion shows up here.
4. **quantized vs F16**: perplexity of each quantized file on fixed texts, and its ratio to F16's: what
   quantization cost, in one number per file.

Everything runs in the job's thread (a worker), one model at a time where it can: llama.cpp files are
opened, measured and closed one after the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from desktop_dpo.core.jobs import CancelToken, Job, Progress

# Fixed texts of the tokenizer, logits and perplexity checks: ordinary prose, a leading space, accents, CJK,
# an emoji, whitespace runs. The chat-rendered text is added per model (its template decides the markers).
PARITY_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog. A helpful assistant answers questions clearly and kindly.",
    " Paris is the capital of France, and water boils at one hundred degrees Celsius at sea level.",
    "Café, naïve, résumé, Zürich and São Paulo; 日本語 and an emoji 🙂 too.",
    "Write a short poem about the sea.\nThen explain how a rainbow forms,\tstep by step.",
    "Good answers are short, kind and correct. Bad answers ramble, repeat themselves or say nothing at all.",
)
_CHAT_SAMPLE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is Paris?"},
    {"role": "assistant", "content": "In France."},
    {"role": "user", "content": "And Zürich? 🙂"},
]
# How many held-out pairs the policy-vs-merged comparison scores (a sample is enough to see a problem).
MAX_PARITY_PAIRS = 32


@dataclass(frozen=True)
class ParityReport:
    """What the parity check found; stored with every export (``to_dict``) and shown to the person."""

    tokenizer_texts: int = 0  # texts tokenized by both sides
    tokenizer_identical: int = 0  # of those, how many gave identical ids
    tokenizer_mismatches: list[str] = field(default_factory=list)  # the texts that differed (first 60 chars)
    logits_tokens: int = 0  # positions compared between the merged model and the F16 GGUF
    top1_agreement: float | None = None  # share of positions with the same most likely next token
    max_logit_diff: float | None = None  # largest |logit difference| over all positions and tokens
    policy_pairs: int = 0  # held-out pairs scored by the trained policy and by the merged model
    policy_max_logp_diff: float | None = None  # largest |Δ log π(y|x)| over those responses
    policy_mean_logp_diff: float | None = None  # mean |Δ log π(y|x)|
    policy_preference_kept: float | None = None  # share of pairs whose chosen-vs-rejected order is unchanged
    perplexity: dict[str, float] = field(default_factory=dict)  # file type -> perplexity on the fixed texts
    perplexity_ratio: dict[str, float] = field(default_factory=dict)  # file type -> perplexity ÷ F16's
    tensor_types: dict[str, dict[str, int]] = field(default_factory=dict)  # file type -> {ggml type: tensors}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly, for the exports table."""
        return asdict(self)

    @property
    def passed(self) -> bool:
        """Identical token ids and ≥ 99% top-1 agreement with F16: the export answers like the model."""
        return (
            self.tokenizer_texts > 0
            and self.tokenizer_identical == self.tokenizer_texts
            and self.top1_agreement is not None
            and self.top1_agreement >= 0.99
        )

    def lines(self) -> list[str]:
        """The report in sentences, for the Export view and the CLI."""
        out: list[str] = []
        if self.tokenizer_texts:
            if self.tokenizer_identical == self.tokenizer_texts:
                out.append(f"Tokenizers agree: identical token ids on all {self.tokenizer_texts} test texts.")
            else:
                out.append(
                    f"Tokenizers DIFFER on {self.tokenizer_texts - self.tokenizer_identical} of "
                    f"{self.tokenizer_texts} test texts (e.g. {self.tokenizer_mismatches[0]!r}): the GGUF will "
                    "read some text differently from the trained model."
                )
        if self.top1_agreement is not None and self.max_logit_diff is not None:
            out.append(
                f"Merged model vs F16 GGUF: same next token at {self.top1_agreement:.1%} of {self.logits_tokens} "
                f"positions; largest logit difference {self.max_logit_diff:.3g}."
            )
        if self.policy_pairs and self.policy_max_logp_diff is not None:
            kept = self.policy_preference_kept or 0.0
            out.append(
                f"Trained policy vs merged model on {self.policy_pairs} held-out pairs: log-probabilities differ "
                f"by {self.policy_mean_logp_diff:.3g} on average (at most {self.policy_max_logp_diff:.3g}); "
                f"the preferred answer stays preferred in {kept:.0%} of pairs."
            )
        if self.perplexity:
            parts = []
            for name, value in self.perplexity.items():
                ratio = self.perplexity_ratio.get(name)
                parts.append(f"{name} {value:.3g}" + (f" (×{ratio:.3f})" if ratio and name != "F16" else ""))
            out.append("Perplexity on the test texts: " + ", ".join(parts) + ".")
        for name, types in self.tensor_types.items():
            if types:
                listed = ", ".join(
                    f"{count} {kind}" for kind, count in sorted(types.items(), key=lambda x: -x[1])
                )
                out.append(f"{name} tensors: {listed}.")
        return out


def _open_llama(gguf_path: Path) -> Any:
    """The GGUF in a supervised llama.cpp child (a native crash there is an error here, not the end of
    the app); not loaded yet: the caller runs its ``load_job()``."""
    from desktop_dpo.core.llm.supervised import SupervisedLlamaEngine

    return SupervisedLlamaEngine(gguf_path, n_ctx=1024, n_batch=1024)


def _gguf_logits(llm: Any, ids: Sequence[int]) -> Any:
    """Next-token logits [len(ids), vocab] of a llama.cpp model over ``ids`` (a fresh sequence each time)."""
    import numpy as np

    return np.asarray(llm.logits(list(ids)), dtype=np.float64)


def _perplexity(logits: Any, ids: Sequence[int]) -> tuple[float, int]:
    """Summed negative log-likelihood of ids[1:] under ``logits`` (position t predicts t + 1), and the count."""
    import numpy as np

    rows = logits[:-1]
    top = rows.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(rows - top).sum(axis=1)) + top[:, 0]
    targets = np.asarray(ids[1:])
    nll = log_z - rows[np.arange(len(targets)), targets]
    return float(nll.sum()), len(targets)


def _chat_text(tokenizer: Any) -> str | None:
    from desktop_dpo.core.dpo.tokenizing import resolve_chat_template
    from desktop_dpo.core.llm.templates import render_prompt

    text, _stops = render_prompt(
        _CHAT_SAMPLE,
        resolve_chat_template(tokenizer),
        bos=tokenizer.bos_token or "",
        eos=tokenizer.eos_token or "",
    )
    return text


def _hf_ids(tokenizer: Any, text: str, *, special_in_text: bool) -> list[int]:
    """Token ids as training sees them: BOS added for plain text, none for a rendered template (it has its own)."""
    if special_in_text:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


def _llama_ids(llm: Any, text: str, *, special_in_text: bool) -> list[int]:
    return list(llm.tokenize(text, add_bos=not special_in_text, parse_special=True))


def policy_vs_merged(
    base_dir: Path,
    adapter_dir: Path,
    merged_dir: Path,
    pairs: Sequence[Any],
    *,
    quantization: str,
    max_length: int,
    max_prompt_length: int,
) -> dict[str, float]:
    """Held-out pairs scored by the trained policy (adapter on its base, as trained) and by the merged model.

    ``pairs`` are :class:`~desktop_dpo.core.dpo.data.PreferencePair`. Returns the keys of
    :class:`ParityReport` that start with ``policy_``. Models are loaded one after the other.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from desktop_dpo.core.dpo import batches, logps, tokenizing
    from desktop_dpo.core.dpo.modeling import load_causal_lm

    pairs = list(pairs)[:MAX_PARITY_PAIRS]
    if not pairs:
        return {"policy_pairs": 0}
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir), local_files_only=True, trust_remote_code=False)
    tokenized = tokenizing.tokenize_pairs(
        tokenizer,
        pairs,
        chat_template=tokenizing.resolve_chat_template(tokenizer),
        max_length=max_length,
        max_prompt_length=max_prompt_length,
    ).pairs
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def score(model: Any) -> tuple[Any, Any]:
        chosen, rejected = [], []
        with torch.no_grad():
            for start in range(0, len(tokenized), 4):
                batch = batches.collate(tokenized[start : start + 4], pad_id)
                c, r = logps.sequence_logps(model, batch)
                chosen.append(c.float())
                rejected.append(r.float())
        return torch.cat(chosen), torch.cat(rejected)

    device = "cuda" if quantization == "nf4" and torch.cuda.is_available() else "cpu"
    policy = PeftModel.from_pretrained(load_causal_lm(base_dir, quantization, device), str(adapter_dir))
    policy.eval()
    policy_chosen, policy_rejected = score(policy)
    del policy
    merged = load_causal_lm(merged_dir, "none", "cpu")
    merged.eval()
    merged_chosen, merged_rejected = score(merged)
    del merged
    diffs = torch.cat([(policy_chosen - merged_chosen).abs(), (policy_rejected - merged_rejected).abs()])
    kept = ((policy_chosen - policy_rejected).sign() == (merged_chosen - merged_rejected).sign()).float()
    return {
        "policy_pairs": len(tokenized),
        "policy_max_logp_diff": float(diffs.max()),
        "policy_mean_logp_diff": float(diffs.mean()),
        "policy_preference_kept": float(kept.mean()),
    }


def parity_check(
    merged_dir: str | Path,
    f16_gguf: str | Path,
    quantized: dict[str, Path] | None = None,
    *,
    policy: dict[str, Any] | None = None,
    cancel: CancelToken | None = None,
) -> Job:
    """Run the parity check of an export (a job; returns a :class:`ParityReport`).

    Args:
        merged_dir: the merged Hugging Face folder.
        f16_gguf: its F16 GGUF (the reference for the quantized files).
        quantized: other exported files by type name ("Q4_K_M" -> path); F16 may be among them.
        policy: keyword arguments of :func:`policy_vs_merged` without ``merged_dir`` (base_dir, adapter_dir,
            pairs, quantization, max_length, max_prompt_length), or None to skip that comparison (a model
            imported without its adapter).
        cancel: checked between stages.
    """
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from desktop_dpo.core.llm.gguf_info import read_gguf_info

    cancel = cancel or CancelToken()
    merged_dir, f16_gguf = Path(merged_dir), Path(f16_gguf)
    files = {"F16": f16_gguf, **(quantized or {})}
    stages = 3 + len(files) + (1 if policy else 0)
    stage = 0
    results: dict[str, Any] = {}

    yield Progress(stage, stages, "Parity: comparing the tokenizers")
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir), local_files_only=True, trust_remote_code=False)
    texts: list[tuple[str, bool]] = [(t, False) for t in PARITY_TEXTS]
    chat = _chat_text(tokenizer)
    if chat:
        texts.append((chat, True))
    llm = _open_llama(f16_gguf)
    try:
        yield from llm.load_job(cancel)
        hf_ids = [_hf_ids(tokenizer, text, special_in_text=special) for text, special in texts]
        mismatches = [
            text[:60]
            for (text, special), ids in zip(texts, hf_ids, strict=True)
            if _llama_ids(llm, text, special_in_text=special) != ids
        ]
        results.update(
            tokenizer_texts=len(texts),
            tokenizer_identical=len(texts) - len(mismatches),
            tokenizer_mismatches=mismatches,
        )
        cancel.raise_if_cancelled()
        stage += 1
        yield Progress(stage, stages, "Parity: merged model against the F16 GGUF")
        f16_logits = [_gguf_logits(llm, ids) for ids in hf_ids]
    finally:
        llm.close()
    model = AutoModelForCausalLM.from_pretrained(
        str(merged_dir), dtype=torch.float32, local_files_only=True, trust_remote_code=False
    )
    model.eval()
    agree = total = 0
    max_diff = 0.0
    with torch.no_grad():
        for ids, cpp in zip(hf_ids, f16_logits, strict=True):
            hf = model(torch.tensor([ids])).logits[0].double().numpy()
            width = min(hf.shape[1], cpp.shape[1])  # a padded vocabulary has extra, never-used rows
            agree += int((hf[:, :width].argmax(-1) == cpp[:, :width].argmax(-1)).sum())
            total += len(ids)
            max_diff = max(max_diff, float(np.abs(hf[:, :width] - cpp[:, :width]).max()))
    del model
    results.update(
        logits_tokens=total, top1_agreement=agree / total if total else None, max_logit_diff=max_diff
    )
    cancel.raise_if_cancelled()
    stage += 1

    perplexity: dict[str, float] = {}
    tensor_types: dict[str, dict[str, int]] = {}
    plain_ids = [ids for ids, (_text, special) in zip(hf_ids, texts, strict=True) if not special]
    for name, path in files.items():
        yield Progress(stage, stages, f"Parity: perplexity of {name}")
        llm = _open_llama(Path(path))
        try:
            yield from llm.load_job(cancel)
            nll = count = 0.0
            for ids in plain_ids:
                total_nll, n = _perplexity(_gguf_logits(llm, ids), ids)
                nll += total_nll
                count += n
        finally:
            llm.close()
        perplexity[name] = math.exp(nll / count) if count else float("nan")
        tensor_types[name] = dict(read_gguf_info(path).get("tensor_types") or {})
        cancel.raise_if_cancelled()
        stage += 1
    results.update(
        perplexity=perplexity,
        perplexity_ratio={name: value / perplexity["F16"] for name, value in perplexity.items()},
        tensor_types=tensor_types,
    )

    if policy:
        yield Progress(stage, stages, "Parity: trained policy against the merged model")
        results.update(policy_vs_merged(merged_dir=merged_dir, **policy))
        stage += 1
    yield Progress(stages, stages, "Parity check done")
    return ParityReport(**results)
