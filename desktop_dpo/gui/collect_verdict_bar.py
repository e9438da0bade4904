"""The Collect view's verdict bar (left / right / tie / both bad / skip, the last verdict's note, Undo), and
the event filter that lets Ctrl+Z (the platform's Undo keys, :func:`undo_keys`) undo a verdict from the prompt
editors."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QKeyCombination, QObject, Qt
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from desktop_dpo.gui.choice_bar import ChoiceBar
from desktop_dpo.gui.collect_pair import CHOICES
from desktop_dpo.gui.widgets import button, standard_keys

UNDO_FALLBACK = "Ctrl+Z"  # where the platform binds no Undo key
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
        keys = undo_keys()[0].toString(QKeySequence.SequenceFormat.NativeText)  # e.g. "Ctrl+Z", "⌘Z"
        self.undo_button = button(
            f"Undo   {keys}", tooltip=f"Take back the last verdict and judge the pair again ({keys})"
        )
        self.add_button(self.undo_button, "Undo")
        # Every button at its own width (the note beside them takes the rest): shared out by stretch, a wide
        # main button left "Both bad   Alt+4" too little room for its label in a 1280-wide window.
        for index in range(self.bar_layout.count()):
            if self.bar_layout.itemAt(index).widget() is not self.feedback:
                self.bar_layout.setStretch(index, 0)


def undo_keys() -> list[QKeySequence]:
    """The keys that undo a verdict: the platform's Undo keys (Ctrl+Z, ⌘Z on macOS; Alt+Backspace too on
    Windows), or Ctrl+Z where it has none. The view's shortcut and :class:`UndoKeyFilter` both use these."""
    return standard_keys(QKeySequence.StandardKey.Undo, UNDO_FALLBACK)


def pressed_keys(event: QKeyEvent) -> QKeySequence:
    """The key sequence ``event`` presses, as a shortcut would match it (a keypad key like the main one)."""
    modifiers = event.modifiers() & ~(
        Qt.KeyboardModifier.KeypadModifier | Qt.KeyboardModifier.GroupSwitchModifier
    )
    return QKeySequence(QKeyCombination(modifiers, Qt.Key(event.key())))


class UndoKeyFilter(QObject):
    """Lets Ctrl+Z reach the view's "undo verdict" shortcut from a text editor with nothing left to undo.

    A text editor claims Ctrl+Z for itself; while it has typing to undo it keeps doing so, afterwards the
    key undoes the last verdict (the view clears the editors' undo history when a verdict is saved). It
    matches the same keys as that shortcut (:func:`undo_keys`).
    """

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.keys = undo_keys()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and pressed_keys(event) in self.keys
            and isinstance(watched, QPlainTextEdit)
            and not watched.document().isUndoAvailable()
        ):
            event.ignore()  # not claimed by the editor: the shortcut map gets the key
            return True
        return False
