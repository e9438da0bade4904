"""The rows the store hands to callers, and the values and keys they are made of.

Plain frozen dataclasses, safe to pass between threads in signals. The JSON helpers are how the store
writes and reads its JSON columns (``info``, ``messages``, ``config`` ...).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

VERDICTS = ("a", "b", "tie", "both_bad", "skip")
RUN_STATUSES = ("pending", "running", "stopped", "failed", "completed")
EVALUATION_VOTES = ("aligned", "base", "tie", "both_bad")


def timestamp() -> float:
    """The time a row is written (``created_at``, ``updated_at``): seconds since the epoch."""
    return time.time()


def to_json(value: Any) -> str:
    """A JSON column's text: keys sorted, so that equal values are stored as equal text."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def from_json(value: str | None, default: Any = None) -> Any:
    """A JSON column's value, or ``default`` when it is NULL."""
    return default if value is None else json.loads(value)


def messages_key(messages: Sequence[dict[str, str]]) -> str:
    """Stable hash of a conversation, used to find a prompt that already exists."""
    import hashlib  # here: loading OpenSSL costs start-up ~2 ms, and the window opens without hashing

    canonical = to_json([{"role": m["role"], "content": m["content"]} for m in messages])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


PairKey = tuple[str, str, str]
"""``(messages_key(prompt), chosen, rejected)``: what makes two preference pairs the same pair."""


def pair_key(messages: Sequence[dict[str, str]], chosen: str, rejected: str) -> PairKey:
    """The identity of a preference pair: the same prompt, the same chosen and rejected texts, exactly."""
    return messages_key(messages), chosen, rejected


class ModelRow(NamedTuple):
    id: int
    name: str
    path: str
    kind: str  # "hf" (folder of safetensors) or "gguf" (single file)
    fingerprint: str
    source: str  # user | hf_cache | lmstudio | ollama | aligned | demo | imported
    info: dict[str, Any]  # architecture, parameters, context length, chat template ...
    parent_model_id: int | None
    run_id: int | None
    created_at: float
    is_default: bool


class PromptRow(NamedTuple):
    id: int
    messages: list[dict[str, str]]
    source: str
    split: str | None  # None until a training run fixes it: "train" or "heldout"
    created_at: float

    @property
    def text(self) -> str:
        """The last user message (what a person recognises the prompt by)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return self.messages[-1]["content"] if self.messages else ""


class GenerationRow(NamedTuple):
    id: int
    prompt_id: int
    model_id: int | None  # unknown for imported data
    text: str
    sampling: dict[str, Any]
    seed: int | None  # unknown for imported data
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float | None
    finish_reason: str | None
    created_at: float


class ComparisonRow(NamedTuple):
    """A judgement of two generations of one prompt.

    ``verdict`` names a generation, not a screen side: "a" means generation A was better.
    ``a_shown_left`` records which side A appeared on, so position bias can be studied.
    """

    id: int
    prompt_id: int
    generation_a_id: int
    generation_b_id: int
    a_shown_left: bool | None  # None for imported pairs (never shown)
    verdict: str
    edited_text: str | None  # the person's rewrite of one response (the one they wanted)
    edited_side: str | None  # "a" or "b": which response was rewritten
    note: str | None
    source: str  # collect | import
    created_at: float
    deleted: bool
    repeat_of: int | None = None  # a re-asked pair: the comparison it repeats, shown with its sides swapped
    chosen_by: str | None = None  # how the pair was chosen from more answers ("surest"); None: as they came


class ComparisonView(NamedTuple):
    """A comparison joined with its prompt and both texts (for the Data view and exports)."""

    comparison: ComparisonRow
    messages: list[dict[str, str]]
    text_a: str
    text_b: str
    model_a_id: int | None
    model_b_id: int | None

    @property
    def prompt_text(self) -> str:
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return ""


class ComparisonSummary(NamedTuple):
    """One row of the Data view's table: a comparison with short previews instead of full texts.

    Made in SQL (``Store.comparison_summaries``) so that tens of thousands of rows stay small in memory.
    """

    id: int
    created_at: float
    prompt: str  # the last user message, cut to the preview length
    turns: int  # messages in the prompt: system prompt and earlier turns included
    user_turns: int  # the person's messages in the prompt: the turn of a conversation the responses answer
    verdict: str
    edited_side: str | None  # "a" or "b" when the person rewrote that response
    chosen: str  # preview of the response DPO would prefer ("" for tie, both bad, skip)
    rejected: str  # preview of the response it would push away from ("" when none)
    source: str  # collect | import
    a_shown_left: bool | None  # None for imported pairs (never shown)
    deleted: bool
    has_note: bool
    repeat_of: int | None = None  # an earlier comparison shown again, sides swapped (core/reask.py)
    original_verdict: str | None = None  # a repeat's first verdict (None when that one is deleted)

    @property
    def edited(self) -> bool:
        return self.edited_side is not None


class RunRow(NamedTuple):
    id: int
    name: str
    base_model_id: int | None
    reference: str  # "adapter_off" or "model:<id>"
    config: dict[str, Any]
    comparison_ids: list[int]  # the snapshot of data this run used, fixed at creation
    status: str
    step: int
    total_steps: int | None
    adapter_path: str | None
    checkpoint_dir: str | None
    error: str | None
    final_metrics: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    reply_label_ids: tuple[int, ...] = ()  # the rated chat replies this run uses (KTO), fixed at creation


class ReplyLabelRow(NamedTuple):
    """A thumb up (desirable) or down on one chat reply, with the conversation up to it as its prompt."""

    id: int
    message_id: int | None  # None once the message itself is gone (the label stays)
    conversation_id: int | None
    prompt_id: int  # the prompt row with the same messages: its train/held-out split is the label's
    messages: list[dict[str, str]]  # the conversation up to the reply: [{role, content}, ...]
    reply: str
    model_id: int | None  # the model that wrote the reply
    desirable: bool
    created_at: float
    deleted: bool


class ExportRow(NamedTuple):
    id: int
    run_id: int | None
    model_id: int | None
    path: str
    quantization: str
    sha256: str
    size_bytes: int
    parity: dict[str, Any]
    meta: dict[str, Any]
    created_at: float


class ConversationRow(NamedTuple):
    id: int
    model_id: int | None
    title: str
    created_at: float
    updated_at: float


class MessageRow(NamedTuple):
    id: int
    conversation_id: int
    role: str
    content: str
    meta: dict[str, Any]
    created_at: float


class EvaluationRow(NamedTuple):
    """One blind comparison of an aligned model against its base (many votes)."""

    id: int
    name: str
    base_model_id: int | None
    aligned_model_id: int | None
    quantization: str | None  # both models ran at this quantization ("Q4_K_M"); None when unknown
    settings: dict[str, Any]  # sampling settings shared by both models (and the rule, for a rule judge)
    created_at: float


class EvaluationVoteRow(NamedTuple):
    """One judged prompt of an evaluation. ``vote`` names a model, never a screen side."""

    id: int
    evaluation_id: int
    prompt_id: int | None
    base_text: str
    aligned_text: str
    aligned_shown_left: bool | None  # None when nothing was shown (a rule judged)
    vote: str  # "aligned" | "base" | "tie" | "both_bad"
    judge: str  # "person" or the name of the rule that judged
    seed: int | None  # the sampler seed both answers used
    created_at: float
