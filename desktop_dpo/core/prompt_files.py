"""Prompt files for Collect's queue: a text file (a prompt per line, or prompts separated by blank lines) or
JSONL (plain prompts, TRL's prompt-only format, or chat messages), read into conversations.

Its own module, apart from ``sampling.py``: the window reads prompt files (the welcome card counts the demo's
prompts) without importing the sampling job and the engine modules behind it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from desktop_dpo.core.errors import DesktopDpoError, ImportFormatError

ROLES = ("system", "user", "assistant")


class PromptFile(NamedTuple):
    """The prompts read from a file, ready for ``Store.queue_prompts``."""

    prompts: list[list[dict[str, str]]]  # each a conversation ending with a user message
    layout: str  # "lines" (a prompt per line), "blocks" (separated by blank lines) or "jsonl"

    def describe(self) -> str:
        """How the file was read, for the person (e.g. "one prompt per line")."""
        return {
            "lines": "one prompt per line",
            "blocks": "prompts separated by blank lines",
            "jsonl": "one JSON object per line",
        }[self.layout]


def read_prompt_file(path: str | Path) -> PromptFile:
    """Read prompts to queue from a text or JSONL file.

    - ``.jsonl`` / ``.json``: one JSON object per line, either ``{"prompt": "text"}`` (optionally with
      ``"system": "text"``), ``{"prompt": [messages]}`` (TRL's prompt-only conversational format) or
      ``{"messages": [{"role": ..., "content": ...}, ...]}``. A conversation must end with a user
      message (the model writes the reply). Empty lines are ignored.
    - any other file is text: prompts are separated by blank lines, so a prompt may span several lines;
      a file with no blank line between its lines holds one prompt per line.

    Raises:
        ImportFormatError: some lines are not prompts (every bad line is listed; nothing is read).
        DesktopDpoError: the file cannot be read, is not UTF-8 text, or holds no prompt.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DesktopDpoError(
            f"Cannot read {path}: {exc.strerror or exc}. Check that the file exists."
        ) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DesktopDpoError(
            f"{path.name} is not UTF-8 text (byte {exc.start} cannot be read). Save it as UTF-8 and load it again."
        ) from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if path.suffix.lower() in (".jsonl", ".json"):
        prompts = _read_jsonl_prompts(str(path), text)
        layout = "jsonl"
    else:
        blocks = [block.strip() for block in re.split(r"\n[ \t]*\n", text.strip())]
        blocks = [block for block in blocks if block]
        if len(blocks) <= 1:  # no blank line between prompts: a prompt per line
            layout = "lines"
            pieces = [line.strip() for line in text.split("\n") if line.strip()]
        else:
            layout = "blocks"
            pieces = blocks
        prompts = [[{"role": "user", "content": piece}] for piece in pieces]
    if not prompts:
        raise DesktopDpoError(f"{path.name} holds no prompt. Write one prompt per line and load it again.")
    return PromptFile(prompts=prompts, layout=layout)


def _read_jsonl_prompts(name: str, text: str) -> list[list[dict[str, str]]]:
    prompts: list[list[dict[str, str]]] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((number, f"not valid JSON ({exc.msg})"))
            continue
        try:
            prompts.append(_prompt_from_json(obj))
        except ValueError as exc:
            problems.append((number, str(exc)))
    if problems:
        raise ImportFormatError(name, problems)
    return prompts


def _prompt_from_json(obj: Any) -> list[dict[str, str]]:
    if not isinstance(obj, dict):
        raise ValueError('expected an object such as {"prompt": "..."} or {"messages": [...]}')
    value = obj.get("messages", obj.get("prompt"))
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("the prompt is empty")
        system = obj.get("system")
        if system is not None and not isinstance(system, str):
            raise ValueError('"system" must be text')
        head = [{"role": "system", "content": system}] if system and system.strip() else []
        return [*head, {"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise ValueError('expected "prompt" (text or a list of messages) or "messages" (a list of messages)')
    messages: list[dict[str, str]] = []
    for index, message in enumerate(value, start=1):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise ValueError(f"message {index} needs a role (system, user or assistant) and a text content")
        messages.append({"role": message["role"], "content": message["content"]})
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise ValueError("the conversation must end with a user message for the model to answer")
    return messages
