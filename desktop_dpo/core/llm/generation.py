"""What every inference engine shares: events and results, seeds, streamed text, the :class:`Engine` protocol,
and the bookkeeping of one generation job.

Three engines generate text in the app: :class:`~desktop_dpo.core.llm.llamacpp.LlamaCppEngine` (llama.cpp
in this process: tests, benches and the child process),
:class:`~desktop_dpo.core.llm.supervised.SupervisedLlamaEngine` (the same in a supervised child process:
every GGUF in the app) and :class:`~desktop_dpo.core.llm.hf.HfEngine` (transformers, for the Hugging Face
folders llama.cpp's converter refuses). They yield the same events,
return the same results and have the calls of :class:`Engine`, so nothing above them knows which one it
talks to (``tests/core/test_generation.py`` holds all three to the protocol). They subclass :class:`Engine`
and so share ``draw_seed``, ``generate`` and ``generate_pair``: each engine only decodes a
:class:`GenerationRequest` in its ``_run``, where :class:`ResponseStream` and :class:`ResponseRun` keep the
state, events and results every engine records the same way.

Text is assembled from token pieces by :class:`ResponseText`: bytes become characters only when complete
(a token may end in the middle of a UTF-8 character), and text that could be the start of a stop string is
held back until it is known not to be one, so the person never sees a stop marker flash up and vanish.

Only the standard library and this package's light modules are imported: the GUI imports these types at
start-up.
"""

from __future__ import annotations

import codecs
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError, ModelError
from desktop_dpo.core.jobs import CancelToken, Job

FinishReason = Literal["stop", "length", "cancelled"]

Message = Mapping[str, str]  # {"role": ..., "content": ...}
Prompt = str | Sequence[Message]
"""Raw text (for a base model, tokenized as is) or a conversation (rendered with the model's template)."""

# Seeds are drawn below 2**31 so they fit any integer column; llama.cpp reads 0xFFFFFFFF as "random".
MAX_SEED = 2**31 - 1
# The largest seed a caller may give (llama.cpp's sampler seed is 32 bits, and 0xFFFFFFFF means "random").
LARGEST_SEED = 0xFFFFFFFE
# How many recent tokens the repeat penalty looks at (llama.cpp's and llama-cpp-python's default).
PENALTY_LAST_N = 64


# ---------------------------------------------------------------------------------------------------------
# Events and results
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenEvent:
    """New text of one response while it streams. Several tokens may arrive in one event."""

    seq: int  # which response: 0 for a single response, 0 or 1 in a pair
    text: str  # text to append: complete characters only, never part of a stop string (may be "")
    n_tokens: int  # tokens generated so far in this response


@dataclass(frozen=True)
class GenerationResult:
    """One finished response, with what is needed to reproduce it (seed and settings)."""

    text: str  # the response as it follows the prompt (a leading space is kept); stop string removed
    prompt_tokens: int  # tokens in the prompt, as the model saw it (template and BOS included)
    completion_tokens: int  # tokens generated (an end-of-generation token is not counted)
    seconds: float  # from the start of the prompt's evaluation until this response finished
    finish_reason: FinishReason  # "stop": end token or stop string; "length": max_tokens; "cancelled"
    seed: int  # seed of this response's sampler
    settings: dict[str, Any]  # SamplingSettings.to_dict() plus "stop" (and "ignore_eos" when set)
    prompt_seconds: float = 0.0  # part of ``seconds`` spent evaluating the prompt

    @property
    def tokens_per_second(self) -> float:
        """Decoding speed of this response (prompt evaluation excluded); 0 when nothing was generated."""
        decode = self.seconds - self.prompt_seconds
        return self.completion_tokens / decode if decode > 0 and self.completion_tokens else 0.0


@dataclass(frozen=True)
class ResponseFinished:
    """One response of a job is complete; in a pair the other one may still be streaming."""

    seq: int
    result: GenerationResult


# ---------------------------------------------------------------------------------------------------------
# The engine protocol
# ---------------------------------------------------------------------------------------------------------


class Engine(Protocol):
    """What the app calls on an inference engine (``sampling.model_engine`` hands one out).

    One generation at a time per engine: a second concurrent job raises
    :class:`~desktop_dpo.core.errors.DesktopDpoError`. The attributes are known once the model is loaded.

    The three engines subclass it: ``draw_seed``, ``generate`` and ``generate_pair`` are written here once,
    on top of the engine's ``_run`` and ``_seed_source``. Anything else with these calls is an engine too.
    """

    n_ctx: int  # tokens of context per response (prompt plus answer); 0 until loaded
    chat_template: str | None  # the template conversations are rendered with; None: the default layout
    bos_text: str  # the BOS token's text ("" when the model has none), as templates write it
    eos_text: str  # the EOS token's text, as templates write it

    @property
    def loaded(self) -> bool:
        """True while the model is in memory."""
        ...

    def load(self) -> Engine:
        """Load the model (idempotent; slow: off the GUI thread) and return the engine.

        Raises:
            ModelError: the model cannot be loaded (missing, damaged, not enough memory).
        """
        ...

    def close(self) -> None:
        """Free the model; a generation still running is stopped or waited for first."""
        ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def draw_seed(self) -> int:
        """A seed for one response (random, or the next of the engine's reproducible series).

        An engine that subclasses :class:`Engine` keeps its series in ``_seed_source`` (:func:`seed_source`).
        """
        return draw_seed(self._seed_source)  # the module's draw_seed (a method body does not see the class)

    def tokenize(self, text: str, *, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_bos`` None = as the model asks; ``parse_special`` turns written
        control tokens into their ids, which rendered chat templates need."""
        ...

    def prompt_tokens(self, prompt: Prompt) -> tuple[list[int], list[str]]:
        """Tokens of a prompt (raw text or conversation) and the stop strings its layout needs."""
        ...

    def generate(
        self,
        prompt: Prompt,
        settings: SamplingSettings | None = None,
        *,
        seed: int | None = None,
        stop: Sequence[str] = (),
        cancel: CancelToken | None = None,
        ignore_eos: bool = False,
    ) -> Job:
        """Stream one response (a job). Yields :class:`TokenEvent` and a final :class:`ResponseFinished`;
        returns the :class:`GenerationResult`.

        Args:
            prompt: raw text (a base model continues it) or a conversation (rendered with the model's
                template, whose stop strings are added to ``stop``).
            settings: sampling settings (defaults: ``SamplingSettings()``); ``max_tokens`` caps the answer.
            seed: the sampler's seed (None: drawn by :meth:`draw_seed`); same seed, same settings, same
                prompt and model give the same text.
            stop: strings that end the response; the first one found is removed with what follows it.
            cancel: stops at the next token boundary; the result then says "cancelled" and keeps the text
                generated so far (the job returns normally).
            ignore_eos: go on past end-of-generation tokens (benchmarks: exactly ``max_tokens`` tokens
                unless a stop string matches).
        """
        request = GenerationRequest.of(self, prompt, settings, [seed], stop, cancel, ignore_eos)
        (result,) = yield from self._run(request)
        return result

    def generate_pair(
        self,
        prompt: Prompt,
        settings: SamplingSettings | None = None,
        *,
        seeds: tuple[int, int] | None = None,
        stop: Sequence[str] = (),
        cancel: CancelToken | None = None,
        ignore_eos: bool = False,
    ) -> Job:
        """Stream two responses to one prompt (a job): events carry ``seq`` 0 or 1, and each response
        yields :class:`ResponseFinished` when done (one may end long before the other). Returns
        ``(result_0, result_1)``. Other arguments as in :meth:`generate`; seeds default to two different
        drawn seeds. How close each response is to ``generate`` with its seed: the engine's docstring."""
        chosen = pair_seeds(seeds, self.draw_seed)
        request = GenerationRequest.of(self, prompt, settings, chosen, stop, cancel, ignore_eos)
        results = yield from self._run(request)
        return results[0], results[1]

    def _run(self, request: GenerationRequest) -> Generator[Any, None, list[GenerationResult]]:
        """The engine's own part of :meth:`generate` and :meth:`generate_pair`: decode one response per seed
        of ``request`` (a job) and return their results in that order."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------------------


def seed_source(seed: int | None) -> random.Random:
    """Where an engine's seeds come from: ``seed`` None = the operating system's randomness; an int = a
    reproducible series (each result still records its own seed)."""
    return random.SystemRandom() if seed is None else random.Random(seed)


def draw_seed(rng: random.Random | None = None) -> int:
    """A sampler seed below :data:`MAX_SEED` (kept with the answer, so that it can be reproduced).

    ``rng`` None: the operating system's randomness; a seeded ``random.Random``: a reproducible series.
    """
    return (rng or random.SystemRandom()).randrange(0, MAX_SEED)


def different_seeds(draw: Callable[[], int]) -> tuple[int, int]:
    """Two different seeds from ``draw`` (two equal seeds would give the same answer twice)."""
    first = draw()
    second = draw()
    while second == first:
        second = draw()
    return first, second


def draw_seed_pair(rng: random.Random | None = None) -> tuple[int, int]:
    """Two different sampler seeds from ``rng`` (None: the operating system's randomness)."""
    rng = rng or random.SystemRandom()
    return different_seeds(lambda: draw_seed(rng))


def check_seed(seed: int) -> int:
    """``seed`` as an int, once it is known to be a seed llama.cpp's sampler takes as given.

    Raises:
        ValueError: it is negative or above :data:`LARGEST_SEED`.
    """
    if not 0 <= int(seed) <= LARGEST_SEED:
        raise ValueError(f"seed must be between 0 and {LARGEST_SEED}, got {seed}")
    return int(seed)


def pair_seeds(seeds: Sequence[int] | None, draw: Callable[[], int]) -> list[int | None]:
    """The seeds of a pair's two responses: ``seeds`` as given, or two different ones from ``draw``.

    Raises:
        ValueError: ``seeds`` is not two seeds.
    """
    if seeds is None:
        return list(different_seeds(draw))
    chosen: list[int | None] = list(seeds)
    if len(chosen) != 2:
        raise ValueError("generate_pair needs exactly two seeds")
    return chosen


def response_room(n_prompt: int, n_ctx: int, max_tokens: int) -> int:
    """How many tokens a response may have after a prompt of ``n_prompt`` tokens in a context of ``n_ctx``.

    Raises:
        DesktopDpoError: the prompt is empty.
        ModelError: the prompt fills the context (nothing is left for a response).
        ValueError: ``max_tokens`` is below 1.
    """
    room = n_ctx - n_prompt
    if n_prompt == 0:
        raise DesktopDpoError("The prompt is empty: write something first.")
    if room < 1:
        raise ModelError(
            f"The prompt is {n_prompt} tokens long and fills the model's context of {n_ctx} "
            "tokens. Shorten the conversation, or load the model with a larger context."
        )
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    return min(max_tokens, room)


# ---------------------------------------------------------------------------------------------------------
# Streaming text: token bytes -> characters the person may see
# ---------------------------------------------------------------------------------------------------------


class Utf8Stream:
    """Bytes in, complete characters out. Invalid bytes become U+FFFD; a character split across tokens
    comes out whole once its last byte arrives."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        """Decode ``data``; bytes of a character not yet complete are kept for the next call."""
        return self._decoder.decode(data)

    @property
    def has_partial(self) -> bool:
        """True while the start of a multi-byte character waits for its remaining bytes."""
        return bool(self._decoder.getstate()[0])


class StopStringFilter:
    """Cuts a stream of text at the first stop string, even when a stop string spans several tokens.

    Text that might be the beginning of a stop string is held back until the next text shows whether it
    is; everything returned is final.
    """

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(dict.fromkeys(s for s in stops if s))  # drop empties and duplicates
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; return the part that is now certain to belong to the response."""
        if self.stopped:
            return ""
        buffer = self._held + text
        cut = min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = self._longest_stop_prefix_suffix(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The response ended without a stop string: release the text held back."""
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, buffer: str) -> int:
        # Length of the longest end of `buffer` that is the beginning of some stop string (and not all of it:
        # whole stop strings were looked for before).
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best


class ResponseText:
    """Assembles one response from token pieces: complete characters only, cut at the first stop string."""

    def __init__(self, stops: Sequence[str] = ()):
        self._utf8 = Utf8Stream()
        self._filter = StopStringFilter(stops)
        self._parts: list[str] = []

    def add(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that became final (often all of it, sometimes "")."""
        text = self._filter.feed(self._utf8.feed(piece))
        if text:
            self._parts.append(text)
        return text

    @property
    def stopped(self) -> bool:
        """True once a stop string appeared; nothing more is added after it."""
        return self._filter.stopped

    def finish(self) -> str:
        """The response ended for another reason (end token, length, cancel): release held-back text.

        An incomplete character at the very end is dropped rather than shown as a replacement mark.
        """
        tail = self._filter.flush()
        if tail:
            self._parts.append(tail)
        return tail

    @property
    def text(self) -> str:
        """The response so far."""
        return "".join(self._parts)


# ---------------------------------------------------------------------------------------------------------
# One generation job: what the engines record the same way
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationRequest:
    """What :meth:`Engine.generate` and :meth:`Engine.generate_pair` hand to an engine's ``_run``."""

    prompt: Prompt
    settings: SamplingSettings
    seeds: list[int]  # one per response: the caller's (checked) or drawn
    stop: Sequence[str]
    cancel: CancelToken
    ignore_eos: bool

    @classmethod
    def of(
        cls,
        engine: Engine,
        prompt: Prompt,
        settings: SamplingSettings | None,
        seeds: Sequence[int | None],
        stop: Sequence[str],
        cancel: CancelToken | None,
        ignore_eos: bool,
    ) -> GenerationRequest:
        """The request with defaults filled in: default settings, a fresh cancel token, and a seed drawn by
        ``engine`` where ``seeds`` has None.

        Raises:
            ValueError: a seed is out of range (:func:`check_seed`).
        """
        picked = [engine.draw_seed() if s is None else check_seed(s) for s in seeds]
        return cls(prompt, settings or SamplingSettings(), picked, stop, cancel or CancelToken(), ignore_eos)


def claim_engine(busy: threading.Lock) -> None:
    """Take an engine's lock for one job (the caller releases it).

    Raises:
        DesktopDpoError: the engine is already running a job.
    """
    if not busy.acquire(blocking=False):
        raise DesktopDpoError("This model is already writing a response; wait for it to finish or stop it.")


@dataclass
class ResponseStream:
    """One response while an engine decodes it: its text, what the next event carries, how it ended.

    Engines subclass it with their own decoding state (sampler, position, detokenizer...).
    """

    index: int  # TokenEvent.seq
    seed: int
    text: ResponseText
    n_tokens: int = 0
    reported_tokens: int = 0  # n_tokens when the last TokenEvent was yielded
    unsent: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    finished_at: float = 0.0
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=PENALTY_LAST_N))  # for the repeat penalty

    def add(self, piece: bytes) -> None:
        """Add one token's bytes; the text that became final waits for the next event."""
        shown = self.text.add(piece)
        if shown:
            self.unsent.append(shown)

    def end(self, reason: FinishReason) -> None:
        """Finish the response; text held back is released unless a stop string cut it."""
        self.finish_reason = reason
        self.finished_at = time.perf_counter()
        if not self.text.stopped:  # an end token, the length limit or a cancel: nothing is held back now
            tail = self.text.finish()
            if tail:
                self.unsent.append(tail)


def pending_events(streams: Sequence[ResponseStream]) -> Iterator[TokenEvent]:
    """A :class:`TokenEvent` for each response with text or tokens not yet reported (and mark them sent)."""
    for stream in streams:
        if stream.unsent or stream.n_tokens != stream.reported_tokens:
            yield TokenEvent(stream.index, "".join(stream.unsent), stream.n_tokens)
            stream.unsent.clear()
            stream.reported_tokens = stream.n_tokens


@dataclass
class ResponseRun:
    """One generation job under way: its prompt's tokens, the stop strings, the room for an answer, and the
    results and events of its responses."""

    start: float  # when the job began (perf_counter): a result's seconds count from here
    tokens: list[int]  # the prompt's
    stops: list[str]  # the template's stop strings, then the caller's
    max_new: int  # tokens a response may have (:func:`response_room`)
    recorded: dict[str, Any]  # GenerationResult.settings
    prompt_seconds: float | None = None  # set once the prompt is evaluated
    last_events: float = float("-inf")  # when :meth:`events` last yielded text

    @classmethod
    def begin(cls, engine: Engine, request: GenerationRequest) -> ResponseRun:
        """Start the clock and read the prompt (with its layout's stop strings).

        Raises:
            DesktopDpoError, ModelError, ValueError: as :func:`response_room`.
        """
        start = time.perf_counter()
        tokens, template_stops = engine.prompt_tokens(request.prompt)
        stops = list(dict.fromkeys([*template_stops, *request.stop]))
        max_new = response_room(len(tokens), engine.n_ctx, request.settings.max_tokens)
        recorded = {**request.settings.to_dict(), "stop": stops}
        if request.ignore_eos:
            recorded["ignore_eos"] = True
        return cls(start, tokens, stops, max_new, recorded)

    @property
    def n_prompt(self) -> int:
        """Tokens in the prompt."""
        return len(self.tokens)

    def result(self, stream: ResponseStream) -> GenerationResult:
        """The result of a finished response (one cancelled before the prompt was done: all prompt time)."""
        prompt_seconds = self.prompt_seconds
        if prompt_seconds is None:
            prompt_seconds = stream.finished_at - self.start
        return GenerationResult(
            text=stream.text.text,
            prompt_tokens=self.n_prompt,
            completion_tokens=stream.n_tokens,
            seconds=stream.finished_at - self.start,
            finish_reason=stream.finish_reason or "cancelled",
            seed=stream.seed,
            settings=dict(self.recorded),
            prompt_seconds=prompt_seconds,
        )

    def events(
        self, live: Sequence[ResponseStream], interval_s: float
    ) -> Iterator[TokenEvent | ResponseFinished]:
        """After a decoding step: the new text of the ``live`` responses (at most once per ``interval_s``,
        and whenever one ended), then a :class:`ResponseFinished` for each that ended."""
        ended = [stream for stream in live if stream.finish_reason]
        now = time.perf_counter()
        if ended or now - self.last_events >= interval_s:
            self.last_events = now
            yield from pending_events(live)
            for stream in ended:
                yield ResponseFinished(stream.index, self.result(stream))

    def cancel(self, live: Sequence[ResponseStream]) -> Iterator[TokenEvent | ResponseFinished]:
        """End the ``live`` responses as cancelled: their last text, then a :class:`ResponseFinished` each."""
        for stream in live:
            stream.end("cancelled")
        yield from pending_events(live)
        for stream in live:
            yield ResponseFinished(stream.index, self.result(stream))
