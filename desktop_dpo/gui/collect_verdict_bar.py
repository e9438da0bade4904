"""The Collect view's verdict bar (left / right / tie / both bad / skip, the last verdict's note, Undo), and
the event filter that lets Ctrl+Z undo a verdict from the prompt editors."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from desktop_dpo.gui.choice_bar import ChoiceBar
from desktop_dpo.gui.collect_pair import CHOICES
from desktop_dpo.gui.widgets import button

VERDICT_SHORTCUTS = {"left": "Alt+1", "right": "Alt+2", "tie": "Alt+3", "both_bad": "Alt+4", "skip": "Alt+0"}
CHOICE_LABELS = {
    "left": "Left better",
    "right": "Right better",
    "tie": "Tie",
    "both_bad": "Both bad",
    "skip": "Skip",
}
CHOICE_TIPS = {
    "left": "The left answer is better",
    "right": "The right answer is better",
    "tie": "Both answers are about as good",
    "both_bad": "Neither answer is acceptable",
    "skip": "Do not judge this pair (saved as a skip; a queued prompt leaves the queue)",
}


class VerdictBar(ChoiceBar):
    """The row of verdict buttons under the answers. The view connects ``buttons`` (by choice) and
    ``undo_button``, and writes in ``feedback``."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(
            "verdict",
            CHOICES,
            labels=CHOICE_LABELS,
            shortcuts=VERDICT_SHORTCUTS,
            tips=CHOICE_TIPS,
            parent=parent,
        )
        self.undo_button = button(
            "Undo   Ctrl+Z", tooltip="Take back the last verdict and judge the pair again (Ctrl+Z)"
        )
        self.add_button(self.undo_button, "Undo")


class UndoKeyFilter(QObject):
    """Lets Ctrl+Z reach the view's "undo verdict" shortcut from a text editor with nothing left to undo.

    A text editor claims Ctrl+Z for itself; while it has typing to undo it keeps doing so, afterwards the
    key undoes the last verdict (the view clears the editors' undo history when a verdict is saved).
    """

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and event.matches(QKeySequence.StandardKey.Undo)
            and isinstance(watched, QPlainTextEdit)
            and not watched.document().isUndoAvailable()
        ):
            event.ignore()  # not claimed by the editor: the shortcut map gets the key
            return True
        return False
