"""Re-asking in Collect: now and then the next pair is an earlier judged one, its sides swapped, shown as any
new pair is (nothing says it is a repeat; its stored answers are written out at the pace of a sampled pair,
:mod:`desktop_dpo.gui.collect_reveal`). When and which: :mod:`desktop_dpo.core.reask`, the pair picked in SQL.

The repeat answers its own prompt, so the prompt editor shows that conversation while it is on screen; the
person's own prompt (what they were about to sample) is kept and put back once the repeat is judged.
"""

from __future__ import annotations

import random
from typing import Protocol

from desktop_dpo.core.llm.generation import GenerationResult
from desktop_dpo.core.reask import due, pick_repeat_in
from desktop_dpo.core.store import ComparisonView, GenerationRow, PromptRow, Store
from desktop_dpo.gui.collect_pair import ShownPair


class PromptEditor(Protocol):
    """What re-asking needs of Collect's prompt editor (``collect_prompt_editor.CollectPromptEditor``)."""

    loaded: PromptRow | None

    def messages(self) -> list[dict[str, str]]: ...

    def show_conversation(
        self, messages: list[dict[str, str]], *, source: str | None, stored: PromptRow | None = None
    ) -> None: ...


def _result(row: GenerationRow | None, text: str) -> GenerationResult:
    """A stored answer as the result it was (its line under the answer reads as it did)."""
    return GenerationResult(
        text=text,
        prompt_tokens=(row.prompt_tokens or 0) if row else 0,
        completion_tokens=(row.completion_tokens or 0) if row else 0,
        seconds=(row.seconds or 0.0) if row else 0.0,
        finish_reason=(row.finish_reason if row and row.finish_reason != "cancelled" else None) or "stop",
        seed=(row.seed or 0) if row else 0,
        settings=dict(row.sampling) if row else {},
    )


def repeat_pair(store: Store, view: ComparisonView, model_id: int) -> ShownPair:
    """The stored pair of ``view`` ready to be judged again, sides swapped (``model_id``: the model on screen,
    for answers whose model is unknown)."""
    comparison = view.comparison
    rows = [
        store.get_generation(comparison.generation_a_id),
        store.get_generation(comparison.generation_b_id),
    ]
    texts = [view.text_a, view.text_b]
    return ShownPair(
        messages=[dict(m) for m in view.messages],
        model_ids=(view.model_a_id or model_id, view.model_b_id or model_id),
        a_shown_left=not comparison.a_shown_left,
        texts=list(texts),
        results=[_result(row, text) for row, text in zip(rows, texts, strict=True)],
        generation_ids=(comparison.generation_a_id, comparison.generation_b_id),
        repeat_of=comparison.id,
    )


class Reasker:
    """Decides, pair by pair, whether Collect re-asks; keeps the person's prompt while a repeat is shown.

    ``rng``: its own generator (not the view's, which picks sides), so tests can seed it alone.
    """

    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self.last_was_repeat = False  # the last pair shown was a repeat: the next one never is
        self._stash: tuple[list[dict[str, str]], PromptRow | None] | None = None

    def repeat_now(self, store: Store, model_id: int, editor: PromptEditor) -> ShownPair | None:
        """The pair to show instead of sampling a new one, or None (sample as asked). A repeat's conversation
        goes into ``editor``; the person's is kept for :meth:`restore`."""
        repeat = None
        if due(self.rng, last_was_repeat=self.last_was_repeat):  # cheap; the store is asked only when due
            chosen = pick_repeat_in(store, self.rng)  # in SQL: one row read, on the GUI thread
            repeat = repeat_pair(store, chosen, model_id) if chosen is not None else None
        self.last_was_repeat = repeat is not None
        if repeat is not None:
            if self._stash is None:
                self._stash = (editor.messages(), editor.loaded)
            editor.show_conversation(repeat.messages, source=None)
        else:
            self._stash = None
        return repeat

    def restore(self, editor: PromptEditor) -> None:
        """A repeat was judged: the person's own prompt back in ``editor`` (kept should the verdict be undone
        and given again)."""
        if self._stash is not None:
            messages, loaded = self._stash
            editor.show_conversation(messages, source=None, stored=loaded)
