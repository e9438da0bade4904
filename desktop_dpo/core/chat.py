"""Chat: one streamed assistant reply to a conversation, and the small rules a chat needs.

:func:`chat_reply` is a job (see :mod:`desktop_dpo.core.jobs`): it gets the model's engine through
:func:`desktop_dpo.core.sampling.model_engine` (an HF model is converted to GGUF once, with progress and
:class:`~desktop_dpo.core.sampling.GgufCopyMade`), fits the conversation into the model's context, and
streams the engine's :class:`TokenEvent` and :class:`ResponseFinished`. It writes no database rows: the
driver (the Chat view, the CLI) saves the person's message when it is sent and the reply when it ends.

A conversation that has grown past the model's context loses its oldest turns first, whole exchanges at a
time, so the kept history still starts with a person's message (many chat templates insist on
alternating turns); the system prompt and the message being answered are always kept
(:func:`trim_history`). What was left out is reported as :class:`HistoryTrimmed`.

Only the standard library and this package's light modules are imported here, so the GUI may import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from desktop_dpo.config import AppPaths, SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import CancelToken
from desktop_dpo.core.llm.generation import GenerationResult, draw_seed
from desktop_dpo.core.sampling import model_engine

if TYPE_CHECKING:
    from desktop_dpo.core.llm.engine_pool import EnginePool
    from desktop_dpo.core.store import ModelRow

Messages = Sequence[Mapping[str, str]]

# Length of a conversation title made from its first message (the list shows about this much).
TITLE_LENGTH = 48
# Title of a conversation whose first message has no words.
UNTITLED = "New chat"


@dataclass(frozen=True)
class HistoryTrimmed:
    """The oldest turns were left out of the prompt so that the conversation fits the model's context."""

    dropped: int  # messages left out (system prompt excluded: it is always kept)
    kept: int  # messages sent to the model, system prompt included
    prompt_tokens: int  # tokens of the prompt that was sent
    n_ctx: int  # the model's context per response


def conversation_title(text: str, limit: int = TITLE_LENGTH) -> str:
    """A title for a conversation from its first message: the first line with words, cut at a word.

    >>> conversation_title("  Tell me\\n about tea, please  ")
    'Tell me'
    """
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line).strip()
    if not line:
        return UNTITLED
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    # Cut at the last space when one is reasonably near the end, so no word is shown in half.
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def trim_history(
    messages: Messages, count_tokens: Callable[[list[dict[str, str]]], int], budget: int
) -> list[dict[str, str]]:
    """The longest recent part of ``messages`` whose prompt is at most ``budget`` tokens.

    Leading system messages are always kept. Of the other messages, the oldest are dropped first, and the
    kept part starts at a user message (never with an orphan answer). The last user message and what
    follows it are always kept, even when they alone exceed the budget (the engine then says the prompt
    is too long). ``count_tokens`` gives the tokens of a candidate prompt; it is called O(log n) times
    (a binary search: fewer messages never make a longer prompt).
    """
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    head = 0
    while head < len(plain) and plain[head]["role"] == "system":
        head += 1
    system, turns = plain[:head], plain[head:]
    starts = [i for i, m in enumerate(turns) if m["role"] == "user"] or [0]
    if starts[0] != 0:
        starts.insert(0, 0)  # the whole history is a candidate too, whatever it starts with

    def candidate(start: int) -> list[dict[str, str]]:
        return system + turns[start:]

    if count_tokens(candidate(starts[0])) <= budget:
        return candidate(starts[0])
    low, high = 1, len(starts) - 1  # starts[high] is the last user message: kept whatever it costs
    while low < high:
        middle = (low + high) // 2
        if count_tokens(candidate(starts[middle])) <= budget:
            high = middle
        else:
            low = middle + 1
    return candidate(starts[high])


def reply_budget(n_ctx: int, max_tokens: int) -> int:
    """Tokens of the context a conversation may fill, leaving room for a reply of up to ``max_tokens``.

    At most half of the context is held back for the reply, so a large ``max_tokens`` does not push all
    the history out (the engine then shortens the reply to the room that is left).
    """
    return max(1, n_ctx - min(max_tokens, n_ctx // 2))


def reply_meta(result: GenerationResult, model: ModelRow | None, *, dropped: int = 0) -> dict[str, Any]:
    """What is kept with an assistant message: the model, seed, settings, tokens, time, how it ended."""
    meta: dict[str, Any] = {
        "model_id": model.id if model is not None else None,
        "model": model.name if model is not None else None,
        "seed": result.seed,
        "settings": result.settings,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "seconds": round(result.seconds, 3),
        "finish_reason": result.finish_reason,
        "stopped": result.finish_reason == "cancelled",
    }
    if dropped:
        meta["dropped_messages"] = dropped
    return meta


def _check_conversation(messages: Messages) -> None:
    if not messages or messages[-1].get("role") != "user":
        raise DesktopDpoError("There is nothing to answer: the conversation must end with your message.")
    if not str(messages[-1].get("content", "")).strip():
        raise DesktopDpoError("Your message is empty: write something first.")


def chat_reply(
    pool: EnginePool,
    model: ModelRow,
    paths: AppPaths,
    messages: Messages,
    settings: SamplingSettings,
    seed: int | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Any, None, GenerationResult]:
    """Stream one assistant reply to ``messages`` (a job); returns its :class:`GenerationResult`.

    Args:
        pool: where engines stay loaded between jobs (shared with Collect: one generation per model).
        model: the registered model that answers.
        paths: the app's folders (GGUF copies of Hugging Face models).
        messages: the conversation, oldest first, ending with the person's message; a system prompt, if
            any, comes first. Turns that do not fit the model's context are left out, oldest first.
        settings: sampling settings (``max_tokens`` caps the reply).
        seed: the sampler's seed (None: a random one; the result records it either way).
        cancel: stops at the next token; the result then says "cancelled" and keeps the text so far.

    Yields the engine's :class:`TokenEvent` (``seq`` 0) and :class:`ResponseFinished`, ``Log`` lines,
    :class:`HistoryTrimmed` when turns were left out, and for a Hugging Face model seen for the first time
    the converter's progress and :class:`GgufCopyMade`.

    Raises:
        DesktopDpoError: the conversation does not end with a message to answer.
        ModelError: the model's file is gone or cannot be loaded, or its last message alone fills the
            context.
        ChatTemplateError: the model's chat template refuses the conversation.
    """
    cancel = cancel or CancelToken()
    _check_conversation(messages)
    seed = draw_seed() if seed is None else seed
    with (yield from model_engine(pool, model, paths, cancel)) as engine:
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
        load_job = getattr(engine, "load_job", None)
        if callable(load_job):  # a model in a child process knows its context once the child has loaded it
            yield from load_job(cancel)
        n_ctx = int(getattr(engine, "n_ctx", 0) or 0)
        count = getattr(engine, "prompt_tokens", None)
        # An engine that cannot count its prompt (none so far) gets the whole conversation.
        if n_ctx > 0 and callable(count):

            def count_tokens(candidate: list[dict[str, str]]) -> int:
                return len(count(candidate)[0])

            budget = reply_budget(n_ctx, settings.max_tokens)
            kept = trim_history(prompt, count_tokens, budget)
            if len(kept) < len(prompt):
                yield HistoryTrimmed(
                    dropped=len(prompt) - len(kept),
                    kept=len(kept),
                    prompt_tokens=count_tokens(kept),
                    n_ctx=n_ctx,
                )
                prompt = kept
        cancel.raise_if_cancelled()
        result = yield from engine.generate(prompt, settings, seed=seed, cancel=cancel)
    return result
