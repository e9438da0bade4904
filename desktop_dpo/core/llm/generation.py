"""What the GUI and every engine's callers share: events and results, prompts, seeds and the :class:`Engine`
protocol.

Three engines generate text in the app: :class:`~desktop_dpo.core.llm.llamacpp.LlamaCppEngine` (llama.cpp
in this process: tests, benches and the child process),
:class:`~desktop_dpo.core.llm.supervised.SupervisedLlamaEngine` (the same in a supervised child process:
every GGUF in the app) and :class:`~desktop_dpo.core.llm.hf.HfEngine` (transformers, for the Hugging Face
folders llama.cpp's converter refuses). They yield the same events,
return the same results and have the calls of :class:`Engine`, so nothing above them knows which one it
talks to (``tests/core/test_generation.py`` holds all three to the protocol). :class:`Engine` is an
interface only: what the engines share in code (``draw_seed``, ``generate``, ``generate_pair``, streamed
text, the bookkeeping of one generation job) is :class:`~desktop_dpo.core.llm.engine_base.EngineBase` and its
helpers in ``engine_base.py``.

Only the standard library and this package's light modules are imported: the GUI imports these types at
start-up.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.jobs import CancelToken, Job

FinishReason = Literal["stop", "length", "cancelled"]

Message = Mapping[str, str]  # {"role": ..., "content": ...}
Prompt = str | Sequence[Message]
"""Raw text (for a base model, tokenized as is) or a conversation (rendered with the model's template)."""

# Seeds are drawn below 2**31 so they fit any integer column; llama.cpp reads 0xFFFFFFFF as "random".
MAX_SEED = 2**31 - 1
# The largest seed a caller may give (llama.cpp's sampler seed is 32 bits, and 0xFFFFFFFF means "random").
LARGEST_SEED = 0xFFFFFFFE


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

    An interface only. The three engines subclass
    :class:`~desktop_dpo.core.llm.engine_base.EngineBase`, which writes ``draw_seed``, ``generate`` and
    ``generate_pair`` once on top of the engine's ``_run``; anything else with these calls is an engine too.
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
        """A seed for one response (random, or the next of the engine's reproducible series)."""
        ...

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
        ...

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
        ...


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
