"""What the Collect view judges: the pair on screen, the conversation before it, and the verdict kept for undo.

Plain data and rules, no widgets: which generation a screen side shows (:class:`ShownPair`), the verdict
stored for a choice made on screen (:func:`verdict_for`), and which answer continues a judged conversation
(:func:`continuation_for`) and whether Continue can now (:func:`continue_state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from desktop_dpo.core.llm.generation import GenerationResult
from desktop_dpo.core.wording import plural
from desktop_dpo.gui.response_pane import SIDE_NAMES

CHOICES = ("left", "right", "tie", "both_bad", "skip")
CONTINUE_SHORTCUT = "Alt+C"


def verdict_for(choice: str, a_shown_left: bool) -> str:
    """The verdict to store for a choice made on screen: "left"/"right" become the generation shown there."""
    if choice == "left":
        return "a" if a_shown_left else "b"
    if choice == "right":
        return "b" if a_shown_left else "a"
    if choice in CHOICES:
        return choice
    raise ValueError(f"Unknown choice {choice!r}")


def describe_result(result: GenerationResult) -> str:
    """One line under an answer: length, time and why it ended."""
    ending = {
        "stop": "finished",
        "length": "reached the token limit",
        "cancelled": "stopped",
    }.get(result.finish_reason, result.finish_reason)
    return f"{plural(result.completion_tokens, 'token')} · {result.seconds:.1f} s · {ending}"


@dataclass
class ShownPair:
    """The pair on screen. Indexes 0 and 1 are generations A and B, never screen sides."""

    messages: list[dict[str, str]]
    model_ids: tuple[int, int]
    a_shown_left: bool
    texts: list[str] = field(default_factory=lambda: ["", ""])  # streamed so far
    results: list[GenerationResult | None] = field(default_factory=lambda: [None, None])
    edit: tuple[int, str] | None = None  # (generation, the person's rewrite of it)
    generation_ids: tuple[int, int] | None = None  # rows already stored (a pair brought back by undo)
    repeat_of: int | None = None  # an earlier pair shown again, sides swapped (core/reask.py): its comparison
    why: str = ""  # why these two answers were shown (collect_selection.py); "" when there is nothing to say
    chosen_by: str | None = None  # how they were chosen from more answers ("surest"); None: as they came

    def generation_on(self, side: int) -> int:
        """The generation shown on screen side ``side`` (0 left, 1 right)."""
        return side if self.a_shown_left else 1 - side

    def side_of(self, generation: int) -> int:
        """The screen side (0 left, 1 right) showing ``generation``."""
        return generation if self.a_shown_left else 1 - generation

    @property
    def complete(self) -> bool:
        """Both answers finished on their own (a stopped answer cannot be judged)."""
        return all(r is not None and r.finish_reason != "cancelled" for r in self.results)


class Turn(NamedTuple):
    """An earlier message of the conversation on screen."""

    role: str  # "user", "assistant" (or "system", for a system message inside a loaded conversation)
    content: str
    label: str = ""  # how it came to be, in a few words ("your rewrite", "chosen: left")

    def message(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def split_conversation(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]], str]:
    """A prompt's messages as the editors hold them: (leading system message, earlier messages, last user
    message). ``system + earlier + [last]`` gives the messages back."""
    rest = [dict(m) for m in messages]
    system = rest.pop(0)["content"] if rest and rest[0]["role"] == "system" else ""
    last = rest.pop()["content"] if rest and rest[-1]["role"] == "user" else ""
    return system, rest, last


def continuation_for(pair: ShownPair, choice: str) -> tuple[str, str] | None:
    """The answer that continues a judged conversation, and a few words on which one it is.

    The answer chosen on screen (your rewrite, if you rewrote that one); without a choice of side, your
    rewrite; for a tie without a rewrite, the left answer (both were as good). None when the verdict left
    no acceptable answer: both bad or skipped, without a rewrite.
    """
    rewrite = pair.edit[1].strip() if pair.edit is not None else ""
    if choice in ("left", "right"):
        side = 0 if choice == "left" else 1
        generation = pair.generation_on(side)
        if rewrite and pair.edit is not None and pair.edit[0] == generation:
            return rewrite, "your rewrite"
        text = pair.texts[generation].strip()
        return (text, f"chosen: {SIDE_NAMES[side].lower()}") if text else None
    if rewrite:
        return rewrite, "your rewrite"
    if choice == "tie":
        text = pair.texts[pair.generation_on(0)].strip()
        return (text, "a tie: the left answer") if text else None
    return None


class SavedVerdict(NamedTuple):
    """The last verdict, kept so that it can be undone."""

    comparison_id: int
    prompt_id: int
    pair: ShownPair
    choice: str
    was_queued: bool  # the prompt was in the queue; undo puts it back


def continue_state(
    saved: SavedVerdict | None, streaming: bool, pair_on_screen: bool, continuable: bool, continued: bool
) -> tuple[bool, str]:
    """Whether Collect's Continue can run now, and its tooltip (what it does, or why not): ``saved`` is the
    last verdict, ``pair_on_screen`` a pair waits (or is being written), ``continuable`` the last verdict
    can still continue the conversation, ``continued`` it no longer can because it did."""
    if streaming:
        return False, "Sampling…"
    if saved is None or pair_on_screen or not continuable:
        if saved is not None and not pair_on_screen and continued:
            return False, "Already continued: write your next message, then Ctrl+Enter."
        if saved is not None and not pair_on_screen:
            return (
                False,
                "The conversation changed since that verdict: judge a pair in this one to continue it.",
            )
        return False, (
            "Give a verdict first: Continue then makes the answer you chose the assistant's turn, "
            "and you write the next message."
        )
    answer = continuation_for(saved.pair, saved.choice)
    if answer is None:
        if saved.choice == "skip":
            return False, "A skipped pair has no chosen answer to continue with (Ctrl+Z undoes the skip)."
        return False, (
            "Both answers were bad, so there is no answer to continue with: undo (Ctrl+Z), rewrite "
            "one with Edit…, and judge again to continue with your own."
        )
    which = {
        "your rewrite": "your rewrite",
        "a tie: the left answer": "the left answer (a tie)",
    }.get(answer[1], "the answer you chose")
    return True, (
        f"Continue the conversation ({CONTINUE_SHORTCUT}): {which} becomes the assistant's turn, and "
        "you write the next message. A tie continues with the left answer; both bad needs a rewrite."
    )
