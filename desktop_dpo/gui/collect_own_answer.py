"""Collect's "Write my own answer": the person teaches by example, with or without a sampled pair on screen.

A written answer is a demonstration (the SFT start, ``core/dpo/sft_phase.py``, trains on it) and, against each
sampled answer on screen, a preference pair with the written answer chosen. It is stored with no new table
and no migration, as what it is to the data: a rewrite of a comparison.

- **After sampling** (a judgeable pair on screen): one comparison of the two sampled answers, verdict
  "both bad" (the person wanted neither, so wrote their own), with the written answer as the rewrite of
  answer A (``edited_text`` / ``edited_side = "a"``). ``pairs_from_comparisons`` then gives exactly the two
  pairs "written over A" (the rewrite over the answer it rewrites) and "written over B" (over the other answer,
  since the verdict did not name B), the counts (``pair_counts.py``) count them, and the rewrite is the
  demonstration. It is saved through Collect's own verdict path, so undo, the queue and the counts behave as
  for any verdict.
- **Without sampling** (a prompt written, no pair on screen): one comparison whose two answers are both the
  written answer, saved as a skip with that answer as its rewrite: a demonstration and no pair (there is no
  other answer to prefer it to). The note says "Written by you".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Slot

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.gui import widgets

if TYPE_CHECKING:
    from desktop_dpo.gui.collect_own_answer_dialog import OwnAnswerDialog
    from desktop_dpo.gui.collect_pair import ShownPair
    from desktop_dpo.gui.collect_view import CollectView

OWN_ANSWER_TIP = (
    "Type the answer you want yourself: the model learns to write it, and to prefer it to the samples"
)
WRITTEN_NOTE = "Written by you"


class OwnAnswer:
    """The "Write my own answer" button of a :class:`CollectView` and what saving its dialog does."""

    def __init__(self, view: CollectView):
        self.view = view
        self.button = widgets.button("Write my own answer…", self.open, tooltip=OWN_ANSWER_TIP)
        self.dialog: OwnAnswerDialog | None = None

    def _reason(self) -> str:
        """Why the button is off, or "" when it is on."""
        view = self.view
        if view._streaming:
            return "Wait for the answers to finish (or stop them) first."
        pair = view._pair
        if pair is not None:
            return "" if pair.complete else "A stopped pair cannot be saved: sample again first."
        if not view.prompt_editor.has_message():
            return "Write a prompt first."
        return ""

    def update_enabled(self) -> None:
        """Follow the view's state (called from ``CollectView._update_actions``)."""
        reason = self._reason()
        self.button.setEnabled(not reason)
        self.button.setToolTip(reason or OWN_ANSWER_TIP)

    @Slot()
    def open(self) -> OwnAnswerDialog | None:
        """Open the dialog for the prompt (and pair) on screen; non-blocking."""
        if self._reason():
            return None
        # The dialog's module only now: Collect's first screen has the button, not the dialog (start-up).
        from desktop_dpo.gui.collect_own_answer_dialog import OwnAnswerDialog

        view = self.view
        pair = view._pair
        messages = pair.messages if pair is not None else view.prompt_messages()
        dialog = OwnAnswerDialog(messages, 2 if pair is not None else 0, view)
        dialog.accepted.connect(lambda: self.save(dialog.text(), pair))
        dialog.finished.connect(lambda _result: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()
        return dialog

    def save(self, text: str, pair: ShownPair | None = None) -> int | None:
        """Store ``text`` as the person's answer (see the module docstring); returns the comparison id."""
        view = self.view
        if not text.strip():
            return None
        if pair is not None:
            if pair is not view._pair:
                return None  # the pair changed while the dialog was open
            pair.edit = (0, text)  # the rewrite of answer A; "both bad" makes it preferred to B too
            comparison_id = view.judge("both_bad")
            if comparison_id is not None:
                view.feedback.setText("Saved your answer: better than both sampled answers.")
            return comparison_id
        try:
            comparison_id = view.store.record_pair(
                messages=view.prompt_messages(),
                text_a=text,
                text_b=text,
                verdict="skip",
                edited_text=text,
                edited_side="a",
                note=WRITTEN_NOTE,
            )
        except DesktopDpoError as exc:
            view.show_error(f"Your answer was not saved: {exc}")
            return None
        view.refresh_counts()
        view.feedback.setText("Saved your answer as an example to learn from.")
        view.notify("Saved your answer as an example to learn from.")
        view.pairs_changed.emit()
        return comparison_id
