"""The shared implementation the three engines subclass: :class:`EngineBase`, streamed text and the
bookkeeping of one generation job.

:class:`~desktop_dpo.core.llm.llamacpp.LlamaCppEngine`,
:class:`~desktop_dpo.core.llm.supervised.SupervisedLlamaEngine` and :class:`~desktop_dpo.core.llm.hf.HfEngine`
subclass :class:`EngineBase` and so share ``draw_seed``, ``generate`` and ``generate_pair``: each engine only
decodes a :class:`GenerationRequest` in its ``_run``, where :class:`ResponseStream` and :class:`ResponseRun`
keep the state, events and results every engine records the same way.

Text is assembled from token pieces by :class:`ResponseText`: bytes become characters only when complete
(a token may end in the middle of a UTF-8 character), and text that could be the start of a stop string is
held back until it is known not to be one, so the person never sees a stop marker flash up and vanish.

It is kept out of :mod:`desktop_dpo.core.llm.generation` (the events, results, seeds and the
:class:`~desktop_dpo.core.llm.generation.Engine` protocol) so that the window's start, which imports those,
does not pay for it. Like ``generation.py`` it imports no engine and no ML library.
"""

from __future__ import annotations

import codecs
import random
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError, ModelError
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.core.llm.generation import (
    Engine,
    FinishReason,
    GenerationResult,
    Prompt,
    ResponseFinished,
    TokenEvent,
    check_seed,
    draw_seed,
    pair_seeds,
)

# How many recent tokens the repeat penalty looks at (llama.cpp's and llama-cpp-python's default).
PENALTY_LAST_N = 64


# ---------------------------------------------------------------------------------------------------------
# The base class of the engines
# ---------------------------------------------------------------------------------------------------------


class EngineBase(Engine):
    """What the three engines share in code: ``draw_seed``, ``generate`` and ``generate_pair``, written once
    on top of the engine's ``_run`` and ``_seed_source``
    (:func:`~desktop_dpo.core.llm.generation.seed_source`)."""

    _seed_source: random.Random  # where draw_seed takes seeds from; set by the engine's __init__

    def draw_seed(self) -> int:
        """A seed for one response (random, or the next of the engine's reproducible series)."""
        return draw_seed(self._seed_source)  # the module's draw_seed (a method body does not see the class)

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
        """Stream one response (a job), by way of the engine's ``_run``: arguments, events and result as in
        :meth:`desktop_dpo.core.llm.generation.Engine.generate`."""
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
        """Stream two responses to one prompt (a job), by way of the engine's ``_run``: as in
        :meth:`desktop_dpo.core.llm.generation.Engine.generate_pair`; seeds default to two different ones
        from :meth:`draw_seed`."""
        chosen = pair_seeds(seeds, self.draw_seed)
        request = GenerationRequest.of(self, prompt, settings, chosen, stop, cancel, ignore_eos)
        results = yield from self._run(request)
        return results[0], results[1]

    def _run(self, request: GenerationRequest) -> Generator[Any, None, list[GenerationResult]]:
        """The engine's own part of :meth:`generate` and :meth:`generate_pair` (abstract: every engine
        writes it): decode one response per seed of ``request`` (a job) and return their results in that
        order."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------
# The room for an answer
# ---------------------------------------------------------------------------------------------------------


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
    """What :meth:`EngineBase.generate` and :meth:`EngineBase.generate_pair` hand to an engine's ``_run``."""

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
