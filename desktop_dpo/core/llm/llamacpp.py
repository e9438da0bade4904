"""Inference with llama.cpp: streaming responses, pairs decoded together, cancel at any token.

``llama_cpp`` is imported the first time an engine loads its model, in the thread that loads it.

How a pair is decoded: the prompt is evaluated once, for sequence 0; its KV cache is copied to sequence 1;
then each step is one ``llama_decode`` of a batch holding the next token of every response still running
(two rows of logits), and each response samples from its own row with its own sampler chain and seed. The
context keeps one KV stream per sequence (``kv_unified = False``): with a shared stream the two responses'
cells interleave, attention sums in another order and the logits drift from those of a single response
(by up to 0.8 on the demo model); with a stream each, a pair is bit-for-bit two single generations with the
same seeds, so a pick can be reproduced from its seed alone. (Measured on the CPU with quantized weights,
whose matrix products do not depend on the number of rows in a batch. With F16/F32 weights, and on GPUs,
llama.cpp may sum a 2-row batch in another order: logits then differ by ~1e-6, which can flip
a sampled token; greedy decoding is unaffected.)

Text is assembled from token pieces by :class:`~desktop_dpo.core.llm.engine_base.ResponseText` (complete
characters only, a possible stop string held back until it is known not to be one); the events, results and
seeds are those of every engine (``generation.py``).

Every job evaluates its whole prompt again (no reuse of a cached prefix): evaluating a prompt in other
chunks can change the logits in the last bits, and a response must be reproducible from its seed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
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
from desktop_dpo.core.llm.generation import GenerationResult, Prompt, seed_source
from desktop_dpo.core.llm.templates import Message, render_prompt, turn_end_token

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------


def default_thread_count() -> int:
    """CPU threads for llama.cpp: every CPU this process may use, up to 4; beyond that, half of them.

    llama.cpp decodes fastest on physical cores; past 4 logical CPUs they usually come in hyper-threaded
    pairs, where a second thread per core only adds contention.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return available if available <= 4 else available // 2


@contextlib.contextmanager
def high_level_safe_mode() -> Iterator[None]:
    """While active, llama-cpp-python's own ``llama_cpp.Llama`` loads in the engine's safe mode (without
    llama.cpp's extra buffer types: AMX / CPU repacking). The app never uses ``Llama``; a bench's peer and a
    test's oracle do, and must not crash the process on CPUs where the normal mode does."""
    import llama_cpp.llama as high_level

    low_level = high_level.llama_cpp
    original = low_level.llama_model_default_params

    def safe() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = safe
    try:
        yield
    finally:
        low_level.llama_model_default_params = original


class _LlamaLogRouter:
    """Sends llama.cpp's log lines to Python logging (the app's log file) instead of stderr.

    llama-cpp-python prints them to stderr, and its level table predates ggml's current one (it shows
    warnings as errors and hides errors), so one callback for the process replaces it.
    """

    _callback: Any = None  # the ctypes callback; must stay referenced while llama.cpp may call it
    _lock = threading.Lock()
    _line: list[str] = []  # noqa: RUF012 - one pending line for the whole process, like llama.cpp's log
    _level = logging.DEBUG
    # ggml_log_level: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continue the previous line
    _LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}  # noqa: RUF012
    _logger = logging.getLogger("desktop_dpo.llama_cpp")

    @classmethod
    def install(cls, lib: Any) -> None:
        with cls._lock:
            if cls._callback is not None:
                return

            def on_log(level: int, text: bytes | None, _user_data: Any) -> None:
                message = (text or b"").decode("utf-8", errors="replace")
                with cls._lock:
                    if level != 5:
                        cls._level = cls._LEVELS.get(level, logging.DEBUG)
                    cls._line.append(message)
                    if not message.endswith("\n"):
                        return
                    line = "".join(cls._line).rstrip()
                    cls._line.clear()
                if line:
                    cls._logger.log(cls._level, "%s", line)

            cls._callback = lib.llama_log_callback(on_log)
            lib.llama_log_set(cls._callback, ctypes.c_void_p(0))


@dataclass(kw_only=True)
class _Stream(ResponseStream):
    """One response while it is decoded, with its llama.cpp state (internal); ``index`` is also its sequence
    id in the context."""

    sampler: Any  # llama_sampler chain pointer
    pos: int  # position of the next token in the sequence
    row: int = -1  # logits row of the last decode that holds this response's next-token distribution


class _RepeatPenalty:
    """llama.cpp's repeat penalty, applied to the logits row in place before the sampler chain runs.

    Same arithmetic as llama.cpp's ``penalties`` sampler (positive logits of recent tokens divided by the
    penalty, negative ones multiplied), but it touches only the <= 64 recent tokens, where the sampler
    looks up every entry of the vocabulary in a hash map: 1.6 ms per token on Gemma's 262,144 entries,
    6-9% of a decoding step on 2 CPU cores. Results are bit-identical: the penalty is the same float32,
    and a float32 product or quotient computed in double precision and rounded once to float32 is the
    correctly rounded float32 result (53 >= 2 * 24 + 2 bits).
    """

    def __init__(self, penalty: float):
        self.penalty = ctypes.c_float(penalty).value  # the float32 llama.cpp would use

    def apply(self, logits: Any, recent: deque[int]) -> None:
        """Penalise each distinct token of ``recent`` in ``logits`` (a ctypes float pointer to one row)."""
        for token in set(recent):
            value = logits[token]
            logits[token] = value * self.penalty if value <= 0 else value / self.penalty


class LlamaCppEngine(EngineBase):
    """One GGUF model in llama.cpp with a context for up to two sequences, loaded on first use.

    One generation at a time per engine (the engine pool holds a lock around each job; a second concurrent
    job here raises instead of corrupting the context). Close it when done, or use it as a context manager.

    Args:
        model_path: the .gguf file.
        n_ctx: tokens of context per response (prompt plus answer); capped at the model's trained length.
        n_threads: CPU threads (None: :func:`default_thread_count`).
        n_gpu_layers: layers offloaded to a GPU (None: all when llama.cpp was built with GPU support, else 0).
        seed: where seeds come from when a call gives none: None = fresh random seeds; an int = a
            reproducible series of seeds (each result still records its own seed).
        flash_attn: None lets llama.cpp decide; True/False forces flash attention on/off.
        n_batch: prompt tokens evaluated per ``llama_decode`` call (cancel is checked between calls).
        event_interval_s: at most one TokenEvent per response per this many seconds (tokens arriving in
            between are merged into one event), to keep GUI overhead low; 0 = an event per token.
        safe_mode: load without llama.cpp's extra buffer types (the AMX and CPU weight-repack buffers, whose
            loading crashes on some CPUs) and, on a GPU, offload half as many layers. Slower; the app turns
            it on for a model only after the normal mode crashed (``load_modes.py``).
        on_decode: called after every ``llama_decode`` that returned (the supervising parent's sign of
            progress while a long prompt is evaluated); None = nothing.
        chat_template: the template conversations are rendered with, in place of the file's own (the
            person's choice for the model, ``template_choice.chosen_template``); None = the file's.

    In the app this class runs only inside a child process (``llama_child.py``): a native crash there
    cannot take the window down. Tests and benches may use it directly.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        seed: int | None = None,
        flash_attn: bool | None = None,
        n_batch: int = 512,
        event_interval_s: float = 0.03,
        safe_mode: bool = False,
        on_decode: Callable[[], None] | None = None,
        chat_template: str | None = None,
    ):
        self.model_path = Path(model_path)
        self.template_override = chat_template
        self.safe_mode = safe_mode
        self.on_decode = on_decode
        self.requested_n_ctx = n_ctx
        self.n_threads = n_threads or default_thread_count()
        self.n_gpu_layers = n_gpu_layers
        self.flash_attn = flash_attn
        self.n_batch = n_batch
        self.event_interval_s = event_interval_s
        self._seed_source = seed_source(seed)
        self._busy = threading.Lock()
        self._load_lock = threading.Lock()
        self._lib: Any = None  # the llama_cpp module, once loaded
        self._model: Any = None  # llama_cpp._internals.LlamaModel
        self._ctx: Any = None  # llama_cpp._internals.LlamaContext
        self._batch: Any = None  # llama_cpp._internals.LlamaBatch
        self._piece_buffer = ctypes.create_string_buffer(256)
        self.n_ctx = 0  # tokens per response, known once loaded
        self.n_vocab = 0
        self.chat_template: str | None = None
        self.bos_text = ""
        self.eos_text = ""
        self._bos_id = -1
        self._turn_end_id = -1  # the template's end-of-turn token, when llama.cpp does not end on it itself
        self._add_bos = False
        self.loaded_gpu_layers = 0  # layers llama.cpp was asked to offload, once loaded

    # -- life cycle ------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """True while the model is in memory."""
        return self._ctx is not None

    def load(self) -> LlamaCppEngine:
        """Load the model and create its context (idempotent; slow: call it off the GUI thread).

        Raises:
            ModelError: the file is missing or llama.cpp cannot load it, or there is not enough memory.
        """
        with self._load_lock:
            if self._ctx is None:
                self._load()
        return self

    def _load(self) -> None:
        if not self.model_path.is_file():
            raise ModelError(f"The model file {self.model_path} was not found. Choose the file again.")
        import llama_cpp
        from llama_cpp import _internals

        _LlamaLogRouter.install(llama_cpp)
        llama_cpp.llama_backend_init()

        model_params = llama_cpp.llama_model_default_params()
        offloads = bool(llama_cpp.llama_supports_gpu_offload())
        if self.n_gpu_layers is None:
            model_params.n_gpu_layers = -1 if offloads else 0
        else:
            model_params.n_gpu_layers = self.n_gpu_layers
        if self.safe_mode:
            model_params.use_extra_bufts = False
            if offloads and model_params.n_gpu_layers != 0:
                model_params.n_gpu_layers = self._safe_gpu_layers(model_params.n_gpu_layers)
        try:
            # verbose=True: otherwise llama-cpp-python silences loading by redirecting the process's stdout and
            # stderr (not thread-safe); llama.cpp's messages go to our log router either way.
            model = _internals.LlamaModel(path_model=str(self.model_path), params=model_params, verbose=True)
        except ValueError as exc:
            raise ModelError(
                f"llama.cpp could not load {self.model_path.name}: the file is damaged, or its architecture "
                "is newer than this app's llama.cpp. Check the file, or export the model again."
            ) from exc
        try:
            if llama_cpp.llama_model_has_encoder(model.model):
                raise ModelError(
                    f"{self.model_path.name} is an encoder-decoder model; the app generates with decoder-only "
                    "models (Llama, Gemma, Qwen, Mistral, ...)."
                )
            n_ctx_train = model.n_ctx_train()
            n_ctx = min(self.requested_n_ctx, n_ctx_train) if n_ctx_train > 0 else self.requested_n_ctx
            ctx_params = llama_cpp.llama_context_default_params()
            # Two sequences (a pair), each with its own KV stream of n_ctx cells: see the module docstring.
            ctx_params.n_seq_max = 2
            ctx_params.kv_unified = False
            ctx_params.n_ctx = 2 * n_ctx
            ctx_params.n_batch = self.n_batch
            ctx_params.n_ubatch = self.n_batch
            ctx_params.n_threads = self.n_threads
            ctx_params.n_threads_batch = self.n_threads
            ctx_params.no_perf = True
            # SWA models (Gemma) need full-size SWA caches to copy a sequence; llama.cpp switches to them
            # anyway with two KV streams, and says so as a warning unless asked for them.
            ctx_params.swa_full = True
            if self.flash_attn is not None:
                ctx_params.flash_attn_type = (
                    llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
                    if self.flash_attn
                    else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
                )
            try:
                ctx = _internals.LlamaContext(model=model, params=ctx_params, verbose=False)
            except ValueError as exc:
                raise ModelError(
                    f"Not enough memory for {self.model_path.name} with a context of {n_ctx} tokens. Close other "
                    "programs or choose a smaller context."
                ) from exc
            batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=2, verbose=False)
        except BaseException:
            model.close()
            raise
        self._lib, self._model, self._ctx, self._batch = llama_cpp, model, ctx, batch
        self.n_ctx = llama_cpp.llama_n_ctx_seq(ctx.ctx)
        self.n_vocab = model.n_vocab()
        template = llama_cpp.llama_model_chat_template(model.model, None)
        own = template.decode("utf-8") if template else None
        self.chat_template = self.template_override if self.template_override is not None else own
        self._bos_id = model.token_bos()
        self._add_bos = bool(model.add_bos_token())
        self.bos_text = self._token_text(self._bos_id)
        self.eos_text = self._token_text(model.token_eos())
        self.loaded_gpu_layers = model_params.n_gpu_layers
        # The template's end-of-turn marker, when it is one token llama.cpp does not already end on (a known
        # template the person picked): control tokens have no text.
        turn_end = turn_end_token(
            self.chat_template,
            self.bos_text,
            self.eos_text,
            lambda marker: self._tokenize(marker, add_bos=False, parse_special=True),
        )
        self._turn_end_id = -1 if turn_end is None else turn_end
        log.info(
            "Loaded %s (%d tokens of context per response, %d threads, %d GPU layers%s)",
            self.model_path.name,
            self.n_ctx,
            self.n_threads,
            model_params.n_gpu_layers,
            ", safe mode" if self.safe_mode else "",
        )

    def _safe_gpu_layers(self, requested: int) -> int:
        """Half the layers asked for (all = the file's block count + the output layer), at least 0."""
        if requested >= 0:
            return requested // 2
        from desktop_dpo.core.llm.gguf_info import read_gguf_info

        blocks = read_gguf_info(self.model_path).get("block_count")
        return (int(blocks) + 1) // 2 if isinstance(blocks, int) and blocks > 0 else 0

    def close(self, timeout_s: float = 30.0) -> None:
        """Free the context and the model. A generation still running (or a job left suspended) must end
        first: waits up to ``timeout_s`` for it, then raises rather than free memory it still uses."""
        if not self._busy.acquire(timeout=timeout_s):
            raise DesktopDpoError(
                f"{self.model_path.name} is still generating; stop the generation before closing the model."
            )
        try:
            with self._load_lock:
                for part in (self._batch, self._ctx, self._model):  # the context before its model
                    if part is not None:
                        part.close()
                self._batch = self._ctx = self._model = None
        finally:
            self._busy.release()

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- text <-> tokens -------------------------------------------------------------------------------

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = self._lib.llama_vocab_get_text(self._model.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def tokenize(self, text: str, *, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_bos`` None = as the model asks; ``parse_special`` turns written
        control tokens (``<start_of_turn>``) into their ids, which rendered chat templates need."""
        self.load()
        return self._tokenize(text, add_bos=add_bos, parse_special=parse_special)

    def _tokenize(self, text: str, *, add_bos: bool | None, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        add = self._add_bos if add_bos is None else add_bos
        capacity = len(data) + 8
        while True:
            buffer = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(
                self._model.vocab, data, len(data), buffer, capacity, add, parse_special
            )
            if n >= 0:
                return list(buffer[:n])
            capacity = -n

    def token_piece(self, token: int) -> bytes:
        """The bytes a token stands for (control tokens: none). May be part of a UTF-8 character."""
        buffer = self._piece_buffer
        n = self._lib.llama_token_to_piece(self._model.vocab, token, buffer, len(buffer), 0, False)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._model.vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:n]

    def render(self, messages: Sequence[Message]) -> tuple[str, list[str]]:
        """The prompt text for a conversation and its stop strings (the model's template, else the default)."""
        self.load()
        return render_prompt(messages, self.chat_template, self.bos_text, self.eos_text)

    def prompt_tokens(self, prompt: Prompt) -> tuple[list[int], list[str]]:
        """Tokens of a prompt (raw text or conversation) and the stop strings its layout needs."""
        if isinstance(prompt, str):
            # Raw text is the person's own: never read "<bos>" written in it as a control token.
            return self.tokenize(prompt, parse_special=False), []
        text, stops = self.render(prompt)
        # Most templates write the BOS token themselves: then the tokenizer must not add one as well. Asked
        # to add one anyway, llama.cpp warns "the final prompt starts with 2 BOS tokens" while tokenizing,
        # so dropping the duplicate afterwards is too late for the warning.
        writes_bos = bool(self.bos_text) and text.startswith(self.bos_text)
        tokens = self.tokenize(text, add_bos=False if writes_bos else None, parse_special=True)
        if len(tokens) >= 2 and tokens[0] == tokens[1] == self._bos_id:
            tokens = tokens[1:]
        return tokens, stops

    # -- generation ------------------------------------------------------------------------------------
    # generate and generate_pair (EngineBase's) run _run. How a pair is decoded: the module docstring;
    # response k of a pair equals generate(prompt, settings, seed=seeds[k]) token for token.

    def _run(self, request: GenerationRequest) -> Generator[Any, None, list[GenerationResult]]:
        settings, cancel, ignore_eos = request.settings, request.cancel, request.ignore_eos
        claim_engine(self._busy)
        streams: list[_Stream] = []
        try:
            self.load()
            lib, ctx, memory = self._lib, self._ctx.ctx, self._ctx.memory
            run = ResponseRun.begin(self, request)
            tokens, n_prompt = run.tokens, run.n_prompt
            streams = [
                _Stream(index=k, seed=seed, sampler=None, text=ResponseText(run.stops), pos=n_prompt)
                for k, seed in enumerate(request.seeds)
            ]

            # 1. The prompt, once, for sequence 0, in chunks (cancel is checked between chunks).
            lib.llama_memory_clear(memory, True)
            for offset in range(0, n_prompt, self.n_batch):
                if cancel.cancelled:
                    yield from run.cancel(streams)
                    return [run.result(stream) for stream in streams]
                chunk = tokens[offset : offset + self.n_batch]
                self._fill_batch([(token, offset + i, 0) for i, token in enumerate(chunk)], last_only=True)
                self._decode()
            run.prompt_seconds = time.perf_counter() - run.start
            # 2. The other response starts from a copy of the prompt's KV cache.
            for stream in streams[1:]:
                lib.llama_memory_seq_cp(memory, 0, stream.index, -1, -1)
            for stream in streams:
                stream.sampler = self._make_sampler(settings, stream.seed)

            # 3. One token per running response per step.
            vocab = self._model.vocab
            penalty = _RepeatPenalty(settings.repeat_penalty) if settings.repeat_penalty != 1.0 else None
            live = list(streams)
            while live:
                step: list[tuple[int, int, int]] = []
                for stream in live:
                    if penalty is not None and stream.recent:
                        penalty.apply(lib.llama_get_logits_ith(ctx, stream.row), stream.recent)
                    token = lib.llama_sampler_sample(stream.sampler, ctx, stream.row)
                    stream.recent.append(token)
                    if not ignore_eos and (
                        lib.llama_vocab_is_eog(vocab, token) or token == self._turn_end_id
                    ):
                        stream.end("stop")
                        continue
                    stream.n_tokens += 1
                    stream.add(self.token_piece(token))
                    if stream.text.stopped:
                        stream.end("stop")
                    elif stream.n_tokens >= run.max_new:
                        stream.end("length")
                    else:
                        step.append((token, stream.pos, stream.index))
                        stream.row = len(step) - 1
                        stream.pos += 1
                yield from run.events(live, self.event_interval_s)
                live = [stream for stream in live if not stream.finish_reason]
                if not live:
                    break
                # The token boundary: after the events were taken, before the next decode.
                if cancel.cancelled:
                    yield from run.cancel(live)
                    break
                self._fill_batch(step, last_only=False)
                self._decode()
            return [run.result(stream) for stream in streams]
        finally:
            for stream in streams:
                if stream.sampler is not None:
                    self._lib.llama_sampler_free(stream.sampler)
                    stream.sampler = None
            self._busy.release()

    def _fill_batch(self, entries: list[tuple[int, int, int]], *, last_only: bool) -> None:
        """Put ``(token, position, sequence)`` entries in the batch; logits for every entry or the last."""
        batch = self._batch.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = not last_only
        batch.logits[len(entries) - 1] = True

    def _decode(self) -> None:
        code = self._lib.llama_decode(self._ctx.ctx, self._batch.batch)
        if code != 0:
            raise ModelError(
                f"llama.cpp stopped while generating (llama_decode returned {code}): the context may be full "
                "or memory short. Try a shorter prompt or fewer tokens."
            )
        if self.on_decode is not None:
            self.on_decode()

    def logits(self, tokens: Sequence[int]) -> Any:
        """Next-token logits of every position of ``tokens``: a float32 numpy array [len(tokens), n_vocab].

        A fresh sequence each call (row t predicts token t + 1); the parity check compares these with
        transformers' logits of the same ids.

        Raises:
            ModelError: the tokens do not fit the context.
        """
        import numpy as np

        if not self._busy.acquire(blocking=False):
            raise DesktopDpoError("This model is already writing a response; wait for it to finish.")
        try:
            self.load()
            ids = list(tokens)
            if not ids:
                return np.zeros((0, self.n_vocab), dtype=np.float32)
            if len(ids) > self.n_ctx:
                raise ModelError(
                    f"{len(ids)} tokens do not fit the context of {self.n_ctx}; load the model with a larger one."
                )
            lib, ctx = self._lib, self._ctx.ctx
            lib.llama_memory_clear(self._ctx.memory, True)
            out = np.empty((len(ids), self.n_vocab), dtype=np.float32)
            for offset in range(0, len(ids), self.n_batch):
                chunk = ids[offset : offset + self.n_batch]
                self._fill_batch([(token, offset + i, 0) for i, token in enumerate(chunk)], last_only=False)
                self._decode()
                for i in range(len(chunk)):
                    row = lib.llama_get_logits_ith(ctx, i)
                    out[offset + i] = np.ctypeslib.as_array(row, shape=(self.n_vocab,))
            return out
        finally:
            self._busy.release()

    def _make_sampler(self, settings: SamplingSettings, seed: int) -> Any:
        """A sampler chain in llama-cpp-python's order: (penalties,) top-k, top-p, min-p, temperature, draw.

        The repeat penalty, first in that order, is applied to the logits just before the chain runs
        (:class:`_RepeatPenalty`), with the same result. Steps that would change nothing (top_k 0, top_p 1,
        min_p 0) are left out: each costs a pass over the whole vocabulary per token. Temperature 0 is
        greedy decoding (after the penalty, as in llama-cpp-python).
        """
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            lib.llama_sampler_chain_add(chain, sampler)

        if settings.temperature <= 0:
            add(lib.llama_sampler_init_greedy())
            return chain
        if settings.top_k > 0:
            add(lib.llama_sampler_init_top_k(settings.top_k))
        if settings.top_p < 1.0:
            add(lib.llama_sampler_init_top_p(settings.top_p, 1))
        if settings.min_p > 0.0:
            add(lib.llama_sampler_init_min_p(settings.min_p, 1))
        add(lib.llama_sampler_init_temp(settings.temperature))
        add(lib.llama_sampler_init_dist(seed))
        return chain
