"""The row of choice buttons under two answers: Collect's verdicts and Evaluate's votes.

The main choices (left, right) get twice the room of the others; each button shows its shortcut, and a note
on the last choice follows them (``feedback``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

MAIN_CHOICES = ("left", "right")


class ChoiceBar(QFrame):
    """Buttons for ``choices``, named ``<kind>Bar``, ``<kind>Button`` and ``<kind>Feedback`` for the style sheet.

    Args:
        kind: "verdict" (Collect) or "vote" (Evaluate).
        choices: the choices, in order on screen.
        labels, shortcuts, tips: for each choice, its button's text, its key (shown on the button and in
            the tooltip) and its tooltip.
        wrap_feedback: the note wraps (Evaluate's reveal); otherwise it is clipped by the room it gets, never
            a reason to widen the window.

    The owner connects ``buttons`` (by choice).
    """

    def __init__(
        self,
        kind: str,
        choices: Sequence[str],
        *,
        labels: Mapping[str, str],
        shortcuts: Mapping[str, str],
        tips: Mapping[str, str],
        wrap_feedback: bool = False,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName(f"{kind}Bar")
        self.bar_layout = QHBoxLayout(self)
        self.bar_layout.setContentsMargins(10, 8, 10, 8)
        self.bar_layout.setSpacing(8)
        self.buttons: dict[str, QPushButton] = {}
        for choice in choices:
            key = shortcuts[choice]
            button = QPushButton(f"{labels[choice]}   {key}")
            button.setObjectName(f"{kind}Button")
            button.setProperty("main", choice in MAIN_CHOICES)
            button.setToolTip(f"{tips[choice]} ({key})")
            self.buttons[choice] = button
            self.bar_layout.addWidget(button, 2 if choice in MAIN_CHOICES else 1)
        self.bar_layout.addSpacing(6)
        self.feedback = QLabel()
        self.feedback.setObjectName(f"{kind}Feedback")
        if wrap_feedback:
            self.feedback.setWordWrap(True)
        else:
            self.feedback.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.bar_layout.addWidget(self.feedback, 1)
