"""Collect's verdicts in the database: saving the verdict on a judged pair, and taking it back.

A verdict is committed the moment it is given (:func:`save_verdict`, one transaction: the prompt, both
generations and the comparison, and a queued prompt leaves the queue), and it can be undone at once
(:func:`undo_verdict`: the comparison goes, the prompt goes back in the queue if it came from there). No
widgets: the Collect view says what happened.
"""

from __future__ import annotations

from dataclasses import replace

from desktop_dpo.core.store import PromptRow, Store
from desktop_dpo.gui.collect_pair import SavedVerdict, ShownPair, verdict_for

GENERATION_SIDES = ("a", "b")  # generation index -> the name the database uses


def save_verdict(store: Store, pair: ShownPair, choice: str) -> SavedVerdict:
    """Save the verdict ``choice`` (a screen side, or tie/both_bad/skip) on the complete ``pair``, with the
    person's rewrite if any. A pair brought back by undo reuses its stored generations.

    Raises:
        DesktopDpoError: nothing was saved (the message is for the person).
    """
    verdict = verdict_for(choice, pair.a_shown_left)
    edited_text = pair.edit[1] if pair.edit else None
    edited_side = GENERATION_SIDES[pair.edit[0]] if pair.edit else None
    from desktop_dpo.core.sampling import generation_meta  # not at start-up (see CollectView.sample)

    results = [r for r in pair.results if r is not None]
    with store.atomic():
        if pair.generation_ids is not None:  # brought back by undo, or re-asked: its generations are stored
            prompt_id = store.add_prompt(pair.messages, source="collect")
            comparison_id = store.add_comparison(
                prompt_id=prompt_id,
                generation_a_id=pair.generation_ids[0],
                generation_b_id=pair.generation_ids[1],
                verdict=verdict,
                a_shown_left=pair.a_shown_left,
                edited_text=edited_text,
                edited_side=edited_side,
                repeat_of=pair.repeat_of,
                chosen_by=pair.chosen_by,
            )
        else:
            comparison_id = store.record_pair(
                messages=pair.messages,
                text_a=results[0].text,
                text_b=results[1].text,
                verdict=verdict,
                model_a_id=pair.model_ids[0],
                model_b_id=pair.model_ids[1],
                a_shown_left=pair.a_shown_left,
                generation_meta_a=generation_meta(results[0]),
                generation_meta_b=generation_meta(results[1]),
                edited_text=edited_text,
                edited_side=edited_side,
                chosen_by=pair.chosen_by,
            )
        comparison = store.get_comparison(comparison_id)
        assert comparison is not None
        prompt_id = comparison.prompt_id
        was_queued = any(p.id == prompt_id for p in store.queued_prompts())
        if was_queued:  # a judged (or skipped) prompt leaves the queue
            store.dequeue_prompt(prompt_id)
    saved_pair = replace(pair, generation_ids=(comparison.generation_a_id, comparison.generation_b_id))
    return SavedVerdict(comparison_id, prompt_id, saved_pair, choice, was_queued)


def undo_verdict(store: Store, saved: SavedVerdict) -> PromptRow | None:
    """Take back the verdict ``saved``: its comparison is removed, and a prompt that was queued is queued
    again. Returns the prompt as stored (the conversation as it was when the pair was judged).

    Raises:
        DesktopDpoError: nothing was undone (the message is for the person).
    """
    with store.atomic():
        store.delete_comparison_for_undo(saved.comparison_id)
        if saved.was_queued:
            store.add_prompt(saved.pair.messages, queued=True)
    return store.get_prompt(saved.prompt_id)
