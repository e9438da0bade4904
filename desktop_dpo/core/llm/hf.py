"""Inference with transformers: the fallback for Hugging Face models llama.cpp's converter cannot read.

llama.cpp runs every model it can (:mod:`desktop_dpo.core.llm.llamacpp`): it is many times faster on a CPU.
Some Hugging Face folders cannot become a GGUF, most often because the converter does not know their BPE
tokenizer; :func:`desktop_dpo.core.sampling.model_engine` then runs them here. :class:`HfEngine` has the
interface of :class:`~desktop_dpo.core.llm.llamacpp.LlamaCppEngine` (the
:class:`~desktop_dpo.core.llm.generation.Engine` protocol, and ``render``), yields the same events and
returns the same results, so nothing above the engine knows which one it talks to.

Same behaviour as the llama.cpp engine:

- prompts are rendered by :func:`~desktop_dpo.core.llm.templates.render_prompt` (the model's template, or
  the default ``User:``/``Assistant:`` layout with its stop strings);
- text is assembled by :class:`~desktop_dpo.core.llm.engine_base.ResponseText` (complete characters only,
  cut at the first stop string, a possible stop string held back until it is known not to be one);
- sampling follows llama-cpp-python's order: repeat penalty over the last 64 generated tokens, top-k,
  top-p, min-p, temperature, then a draw from each response's own seeded generator. Temperature 0 is
  greedy. Same seed, settings, prompt and model: same text.

How a pair is decoded: the prompt goes through the model once, and its KV cache is copied for the second
response; then both responses advance one token per step, each sampling with its own seeded generator, and
stream together. On a GPU a step is one forward pass over a batch of two rows (a step's cost there is
reading the weights, so a second row adds little; not measured here, for want of a GPU); when one response
ends, its row is dropped from the cache. On the CPU a step is one
forward pass per response, each over its own copy of the cache: there a matrix product over two rows
costs as much as two over one row (MKL's float32 kernels do not share the weight reads at two rows), and
when other programs keep the cores busy it costs several times more (measured with Gemma 3 270M on 2
busy cores: 2.0 s per step batched, 0.8-1.0 s interleaved, 0.45 s for one response alone).
``batch_pairs`` overrides the choice.

Interleaved, a pair is two single generations token for token, whatever the settings. Batched, greedy
pairs are too; a sampled pair may, rarely, differ from the single generations with the same seeds: a
matrix product over two rows may sum in another order than over one (other kernels), so logits differ in
the last bits, and a draw that falls right at the boundary between two tokens can pick the other one.

Weights load as float32 on the CPU, and bfloat16 (or float16 where bfloat16 is unsupported) on a CUDA GPU;
safetensors only, never code that comes with a model. Loading and generating run on the calling thread
(a worker's); torch's thread count is left as the process has it.

torch and transformers are imported inside the methods that need them, so importing this module is cheap.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError, ModelError
from desktop_dpo.core.llm.engine_base import (
    EngineBase,
    GenerationRequest,
    ResponseRun,
    ResponseStream,
    ResponseText,
    claim_engine,
)
from desktop_dpo.core.llm.generation import FinishReason, GenerationResult, Prompt, seed_source
from desktop_dpo.core.llm.templates import Message, render_prompt, turn_end_token

log = logging.getLogger(__name__)

# Prompt tokens per forward pass: a stop request is seen between chunks of a long prompt.
PROMPT_CHUNK = 512


class _Detokenizer:
    """Token ids in, new text out, for any transformers tokenizer.

    Decoding one token alone loses what depends on its neighbours (SentencePiece's leading space, a
    character whose bytes span tokens), so each step decodes a short window (the tokens since the last
    text, after a few before them for context) and returns what the window added. A window that ends in
    U+FFFD is waiting for the rest of a character and returns nothing yet.
    """

    def __init__(self, tokenizer: Any, context: list[int]):
        self._tokenizer = tokenizer
        self._ids = list(context[-4:])  # a few prompt tokens: the first answer token keeps its space
        self._prefix = 0
        self._read = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        """Add one generated token; return the text it completes ("" while a character is incomplete)."""
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]

    def finish(self) -> str:
        """Text still waiting at the end; an incomplete character at the very end is dropped."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :].rstrip("\ufffd") if len(after) > len(before) else ""


@dataclass(kw_only=True)
class _Stream(ResponseStream):
    """One response while it is decoded, with its sampling generator and detokenizer (internal); ``index`` is
    also its row until another row is dropped."""

    generator: Any  # torch.Generator seeded with ``seed``
    detokenizer: _Detokenizer

    def add_text(self, text: str) -> None:
        """Pass decoded text through the stop-string filter; keep what became final for the next event."""
        if text:
            self.add(text.encode("utf-8"))

    def end(self, reason: FinishReason) -> None:
        """Finish the response; the detokenizer's and the filter's held-back text is released unless a stop
        string cut it."""
        if not self.text.stopped:
            self.add_text(self.detokenizer.finish())
        super().end(reason)


def pick_device_and_dtype(device: str | None = None) -> tuple[str, Any]:
    """Where a model runs and in which precision: ``(device, torch dtype)``.

    A CUDA GPU when there is one (bfloat16, or float16 on GPUs without bfloat16), else the CPU in
    float32 (half precision on a CPU is slower and less accurate).
    """
    import torch

    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if chosen.startswith("cuda"):
        return chosen, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return chosen, torch.float32


class HfEngine(EngineBase):
    """One Hugging Face model folder in transformers, loaded on first use.

    The same interface as :class:`~desktop_dpo.core.llm.llamacpp.LlamaCppEngine`: one generation at a
    time (a second concurrent job raises), close it when done or use it as a context manager.

    Args:
        model_dir: the folder (config.json, tokenizer files, safetensors weights).
        n_ctx: tokens of context per response (prompt plus answer); capped at the model's trained length.
        device: "cpu", "cuda", "cuda:1" ...; None: a CUDA GPU when there is one, else the CPU.
        seed: where seeds come from when a call gives none: None = fresh random seeds; an int = a
            reproducible series of seeds (each result still records its own seed).
        event_interval_s: at most one TokenEvent per response per this many seconds; 0 = one per token.
        batch_pairs: decode a pair as one batch of two rows (True) or as two interleaved single rows that
            share the prompt's pass (False); None: batched on a GPU, interleaved on the CPU (see the
            module docstring for why).
        chat_template: the template conversations are rendered with, in place of the tokenizer's (the
            person's choice for the model); None = the tokenizer's.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        n_ctx: int = 4096,
        device: str | None = None,
        seed: int | None = None,
        event_interval_s: float = 0.03,
        batch_pairs: bool | None = None,
        chat_template: str | None = None,
    ):
        self.model_dir = Path(model_dir)
        self.template_override = chat_template
        self.batch_pairs = batch_pairs
        self.requested_n_ctx = n_ctx
        self.requested_device = device
        self.event_interval_s = event_interval_s
        self._seed_source = seed_source(seed)
        self._busy = threading.Lock()
        self._load_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self.device = ""  # known once loaded
        self.n_ctx = 0
        self.chat_template: str | None = None
        self.bos_text = ""
        self.eos_text = ""
        self._bos_id: int | None = None
        self._add_bos = False
        self._eog_ids: frozenset[int] = frozenset()

    # -- life cycle ------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """True while the model is in memory."""
        return self._model is not None

    def load(self) -> HfEngine:
        """Load tokenizer and weights (idempotent; slow: call it off the GUI thread).

        Raises:
            ModelError: the folder is missing or incomplete, transformers cannot read it, or memory is short.
        """
        with self._load_lock:
            if self._model is None:
                self._load()
        return self

    def _load(self) -> None:
        name = self.model_dir.name
        if not (self.model_dir / "config.json").is_file():
            raise ModelError(
                f"The model folder {self.model_dir} was not found (or has no config.json). Add the model again."
            )
        if not any(self.model_dir.glob("*.safetensors")):
            raise ModelError(
                f"{name} has no safetensors weights; the app loads no other format. Use a safetensors version."
            )
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device, dtype = pick_device_and_dtype(self.requested_device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(self.model_dir), trust_remote_code=False, local_files_only=True
            )
            model = AutoModelForCausalLM.from_pretrained(
                str(self.model_dir),
                dtype=dtype,
                use_safetensors=True,
                trust_remote_code=False,
                local_files_only=True,
            )
        except torch.OutOfMemoryError as exc:
            raise ModelError(
                f"Not enough memory to load {name}. Close other programs and try again."
            ) from exc
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(
                f"transformers could not load {name} ({exc}). Check that the folder is complete, or add it again."
            ) from exc
        try:
            model.to(device)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            raise ModelError(
                f"{name} does not fit on {device}. Close other programs, or run it on the CPU."
            ) from exc
        model.eval()

        config = model.config.get_text_config()
        trained = getattr(config, "max_position_embeddings", None)
        self.n_ctx = (
            min(self.requested_n_ctx, trained)
            if isinstance(trained, int) and trained > 0
            else self.requested_n_ctx
        )
        own = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
        self.chat_template = self.template_override if self.template_override is not None else own
        self.bos_text = tokenizer.bos_token or ""
        self.eos_text = tokenizer.eos_token or ""
        self._bos_id = tokenizer.bos_token_id
        probe = tokenizer.encode("a", add_special_tokens=True)
        self._add_bos = self._bos_id is not None and bool(probe) and probe[0] == self._bos_id
        eog: set[int] = set()
        generation_config = getattr(model, "generation_config", None)
        for source in (
            tokenizer.eos_token_id,
            getattr(model.config, "eos_token_id", None),
            getattr(config, "eos_token_id", None),
            getattr(generation_config, "eos_token_id", None),
        ):
            if isinstance(source, int):
                eog.add(source)
            elif isinstance(source, (list, tuple)):
                eog.update(int(x) for x in source)
        # The template's end-of-turn marker, when it is one token: decoded text skips special tokens.
        turn_end = turn_end_token(
            self.chat_template,
            self.bos_text,
            self.eos_text,
            lambda marker: tokenizer.encode(marker, add_special_tokens=False),
        )
        if turn_end is not None:
            eog.add(turn_end)
        self._eog_ids = frozenset(eog)
        self._model, self._tokenizer, self.device = model, tokenizer, device
        log.info("Loaded %s in transformers (%s, %s, %d tokens of context)", name, device, dtype, self.n_ctx)

    def close(self, timeout_s: float = 30.0) -> None:
        """Free the model. A generation still running must end first: waits up to ``timeout_s`` for it,
        then raises."""
        if not self._busy.acquire(timeout=timeout_s):
            raise DesktopDpoError(
                f"{self.model_dir.name} is still generating; stop the generation before closing the model."
            )
        try:
            with self._load_lock:
                on_gpu = self.device.startswith("cuda")
                self._model = self._tokenizer = None
                if on_gpu:
                    import torch

                    torch.cuda.empty_cache()  # give the GPU memory back to other programs now
        finally:
            self._busy.release()

    def __enter__(self) -> HfEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- text <-> tokens -------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_bos`` None = as the model asks; ``parse_special`` turns written
        control tokens (``<|user|>``) into their ids, which rendered chat templates need."""
        self.load()
        ids = list(
            self._tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not parse_special)
        )
        add = self._add_bos if add_bos is None else add_bos
        if add and self._bos_id is not None and (not ids or ids[0] != self._bos_id):
            ids.insert(0, self._bos_id)
        return ids

    def render(self, messages: Sequence[Message]) -> tuple[str, list[str]]:
        """The prompt text for a conversation and its stop strings (the model's template, else the default)."""
        self.load()
        return render_prompt(messages, self.chat_template, self.bos_text, self.eos_text)

    def prompt_tokens(self, prompt: Prompt) -> tuple[list[int], list[str]]:
        """Tokens of a prompt (raw text or conversation) and the stop strings its layout needs."""
        if isinstance(prompt, str):
            # Raw text is the person's own: never read "<s>" written in it as a control token.
            return self.tokenize(prompt, parse_special=False), []
        text, stops = self.render(prompt)
        # Templates that print the BOS token themselves keep a single one (tokenize adds it only if missing).
        return self.tokenize(text, parse_special=True), stops

    # -- generation ------------------------------------------------------------------------------------
    # generate and generate_pair (EngineBase's) run _run. A pair is decoded as a batch of two sharing one
    # prompt pass, or interleaved (module docstring): greedy responses equal generate with the same seed;
    # sampled ones do too except in rare draws.

    def _batch_pairs(self) -> bool:
        return self.device.startswith("cuda") if self.batch_pairs is None else self.batch_pairs

    def _forward(self, ids: Any, cache: Any) -> Any:
        """One forward pass (no autograd); returns the last position's logits, shape [batch, vocab]."""
        import torch

        with torch.no_grad():  # only around the pass, never across a yield: grad mode is per thread
            out = self._model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    def _run(self, request: GenerationRequest) -> Generator[Any, None, list[GenerationResult]]:
        settings, cancel, ignore_eos = request.settings, request.cancel, request.ignore_eos
        claim_engine(self._busy)
        try:
            self.load()
            import torch
            from transformers import DynamicCache

            run = ResponseRun.begin(self, request)
            streams = self._new_streams(run.tokens, run.stops, request.seeds)

            # 1. The prompt, once, in chunks (a stop request is seen between chunks).
            cache = DynamicCache(config=self._model.config)
            prompt_ids = torch.tensor([run.tokens], dtype=torch.long, device=self.device)
            logits = None
            for offset in range(0, run.n_prompt, PROMPT_CHUNK):
                if cancel.cancelled:
                    yield from run.cancel(streams)
                    return [run.result(stream) for stream in streams]
                logits = self._forward(prompt_ids[:, offset : offset + PROMPT_CHUNK], cache)
            assert logits is not None
            run.prompt_seconds = time.perf_counter() - run.start
            # 2. The other response starts from a copy of the prompt's KV cache: a second row of the batch,
            # or (interleaved) a cache of its own.
            batched = len(streams) > 1 and self._batch_pairs()
            with torch.no_grad():
                if batched:
                    cache.batch_repeat_interleave(len(streams))
                    caches = [cache]
                else:
                    caches = [cache, *(copy.deepcopy(cache) for _ in streams[1:])]
            rows = list(logits.float().cpu().expand(len(streams), -1))

            # 3. One token per running response per step; rows[k] holds live[k]'s next-token logits.
            penalty = settings.repeat_penalty if settings.repeat_penalty != 1.0 else None
            live = list(streams)
            while live:
                step = self._sample_step(rows, live, settings, penalty, ignore_eos, run.max_new)
                yield from run.events(live, self.event_interval_s)
                keep = [k for k, stream in enumerate(live) if not stream.finish_reason]
                if len(keep) < len(live):
                    if not keep:
                        break
                    if batched:
                        # A finished response's row leaves the cache: the other decodes alone from here.
                        with torch.no_grad():
                            cache.batch_select_indices(torch.tensor(keep, device=self.device))
                    else:
                        caches = [caches[k] for k in keep]
                    step = [step[k] for k in keep]
                    live = [live[k] for k in keep]
                # The token boundary: after the events were taken, before the next forward pass.
                if cancel.cancelled:
                    yield from run.cancel(live)
                    break
                rows = self._next_rows(step, cache if batched else None, caches)
            return [run.result(stream) for stream in streams]
        finally:
            self._busy.release()

    def _new_streams(self, tokens: list[int], stops: list[str], seeds: list[int]) -> list[_Stream]:
        """One response in the making per seed, each with its own RNG and its own view of the text."""
        import torch

        return [
            _Stream(
                index=k,
                seed=seed,
                generator=torch.Generator(device="cpu").manual_seed(seed),
                detokenizer=_Detokenizer(self._tokenizer, tokens),
                text=ResponseText(stops),
            )
            for k, seed in enumerate(seeds)
        ]

    def _sample_step(
        self,
        rows: list[Any],
        live: list[_Stream],
        settings: SamplingSettings,
        penalty: float | None,
        ignore_eos: bool,
        max_new: int,
    ) -> list[int]:
        """Draw one token for each running response from its logits row (``rows[k]`` is ``live[k]``'s); a
        response that stops, hits a stop string or its length is ended. Returns the tokens to feed back."""
        step: list[int] = []  # the token each response feeds back (one per response in `live`)
        for row, stream in zip(rows, live, strict=True):
            token = _sample(row.clone(), settings, penalty, stream.recent, stream.generator)
            step.append(token)
            stream.recent.append(token)
            if not ignore_eos and token in self._eog_ids:
                stream.end("stop")
                continue
            stream.n_tokens += 1
            stream.add_text(stream.detokenizer.add(token))
            if stream.text.stopped:
                stream.end("stop")
            elif stream.n_tokens >= max_new:
                stream.end("length")
        return step

    def _next_rows(self, step: list[int], batched_cache: Any | None, caches: list[Any]) -> list[Any]:
        """The next-token logits (fp32, CPU) of each running response after feeding ``step``: one batched pass
        over ``batched_cache`` when the responses share it, else one pass per response over its own cache."""
        import torch

        if batched_cache is not None:
            ids = torch.tensor([[token] for token in step], dtype=torch.long, device=self.device)
            return list(self._forward(ids, batched_cache).float().cpu())
        return [
            self._forward(torch.tensor([[token]], dtype=torch.long, device=self.device), own)[0].float().cpu()
            for token, own in zip(step, caches, strict=True)
        ]


def _sample(
    logits: Any,
    settings: SamplingSettings,
    penalty: float | None,
    recent: deque[int],
    generator: Any,
) -> int:
    """Draw the next token from one row of float32 logits (on the CPU; modified in place).

    The order and arithmetic of llama-cpp-python's sampler chain: repeat penalty (positive logits of
    recent tokens divided by it, negative ones multiplied), top-k, top-p (smallest set of tokens whose
    probabilities at temperature 1 sum to at least top_p), min-p (tokens at least min_p times as likely as
    the best), temperature, draw. Temperature 0 is the most likely token after the penalty.
    """
    import torch

    if penalty is not None and recent:
        ids = torch.tensor(sorted(set(recent)), dtype=torch.long)
        values = logits[ids]
        logits[ids] = torch.where(values <= 0, values * penalty, values / penalty)
    if settings.temperature <= 0:
        return int(torch.argmax(logits))
    # Candidates, most likely first. top-k by a partial sort: a full sort of a 262k vocabulary per token
    # costs milliseconds.
    if 0 < settings.top_k < logits.numel():
        values, ids = torch.topk(logits, settings.top_k, sorted=True)
    else:
        values, ids = torch.sort(logits, descending=True)
    if settings.top_p < 1.0:
        cumulative = torch.cumsum(torch.softmax(values, dim=0), dim=0)
        # Keep up to and including the first token where the running sum reaches top_p (at least one).
        keep = int(torch.searchsorted(cumulative, torch.tensor([settings.top_p])).item()) + 1
        values, ids = values[:keep], ids[:keep]
    if settings.min_p > 0.0:
        # p >= min_p * p_max  <=>  logit >= max_logit + ln(min_p); the best token always stays.
        threshold = values[0] + torch.log(torch.tensor(settings.min_p))
        keep = max(1, int((values >= threshold).sum()))
        values, ids = values[:keep], ids[:keep]
    probabilities = torch.softmax(values / settings.temperature, dim=0)
    choice = torch.multinomial(probabilities, 1, generator=generator)
    return int(ids[choice])
