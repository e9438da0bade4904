"""The row of choice buttons under two answers: Collect's verdicts and Evaluate's votes.

The main choices (left, right) get twice the room of the others; each button shows its shortcut where the
row has room for every shortcut (otherwise the shortcut is in the tooltip only, so no label is ever cut), and a
note on the last choice follows them (``feedback``), wrapping rather than cut when the row is narrow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

if TYPE_CHECKING:
    from PySide6.QtGui import QResizeEvent

MAIN_CHOICES = ("left", "right")
FEEDBACK_MIN_WIDTH = 90  # the note after the buttons wraps within at least this much room


class ChoiceBar(QFrame):
    """Buttons for ``choices``, named ``<kind>Bar``, ``<kind>Button`` and ``<kind>Feedback`` for the style sheet.

    Args:
        kind: "verdict" (Collect) or "vote" (Evaluate).
        choices: the choices, in order on screen.
        labels, shortcuts, tips: for each choice, its button's text, its key (shown on the button and in
            the tooltip) and its tooltip.

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
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName(f"{kind}Bar")
        self.bar_layout = QHBoxLayout(self)
        self.bar_layout.setContentsMargins(10, 8, 10, 8)
        self.bar_layout.setSpacing(8)
        self.buttons: dict[str, QPushButton] = {}
        # (button, label with its shortcut, label alone), in order: what _fit_labels switches between.
        self._labels: list[tuple[QPushButton, str, str]] = []
        for choice in choices:
            key = shortcuts[choice]
            button = QPushButton(f"{labels[choice]}   {key}")
            # Shrinks to its short label (see _fit_labels) instead of holding the row at its long one.
            button.setSizePolicy(QSizePolicy.Policy.Preferred, button.sizePolicy().verticalPolicy())
            self._labels.append((button, button.text(), labels[choice]))
            button.setObjectName(f"{kind}Button")
            button.setProperty("main", choice in MAIN_CHOICES)
            button.setToolTip(f"{tips[choice]} ({key})")
            self.buttons[choice] = button
            self.bar_layout.addWidget(button, 2 if choice in MAIN_CHOICES else 1)
        self.bar_layout.addSpacing(6)
        self.feedback = QLabel()
        self.feedback.setObjectName(f"{kind}Feedback")
        self.feedback.setWordWrap(True)
        self.feedback.setMinimumWidth(FEEDBACK_MIN_WIDTH)
        self.bar_layout.addWidget(self.feedback, 1)

    def add_button(self, button: QPushButton, short_text: str) -> None:
        """Add ``button`` at the end of the row; ``short_text`` is its label where the row is narrow."""
        button.setSizePolicy(QSizePolicy.Policy.Preferred, button.sizePolicy().verticalPolicy())
        self._labels.append((button, button.text(), short_text))
        self.bar_layout.addWidget(button)

    def resizeEvent(self, event: QResizeEvent) -> None:  # Qt override
        super().resizeEvent(event)
        self._fit_labels()

    def _fit_labels(self) -> None:
        """Long labels (with the shortcut) where every button gets room for its long one, short ones otherwise.
        The row is shared as the layout shares it: a button without a stretch gets its own width, each one with
        a stretch its part of what those leave (the main choices twice the others' part; the note after them
        one part, but at least :data:`FEEDBACK_MIN_WIDTH`). A button never gets less room than its short
        label needs, so the row's minimum is the short labels'."""
        self.ensurePolished()
        layout = self.bar_layout
        margins = layout.contentsMargins()
        room = self.width() - margins.left() - margins.right()
        room -= layout.spacing() * len(self._labels) + 6  # the gaps, and the spacing before the note
        needs: list[tuple[int, int]] = []  # (the long label's width, the button's stretch)
        for button, long_text, short_text in self._labels:
            button.ensurePolished()
            metrics = button.fontMetrics()
            padding = button.sizeHint().width() - metrics.horizontalAdvance(button.text())
            button.setMinimumWidth(metrics.horizontalAdvance(short_text) + padding)
            needs.append(
                (metrics.horizontalAdvance(long_text) + padding, layout.stretch(layout.indexOf(button)))
            )
        shared = room - sum(need for need, stretch in needs if not stretch)  # what the stretching ones share
        parts = sum(stretch for _need, stretch in needs) + layout.stretch(layout.indexOf(self.feedback))
        part = shared / max(parts, 1)
        if part < FEEDBACK_MIN_WIDTH:  # the note keeps its minimum: the buttons share the rest
            part = (shared - FEEDBACK_MIN_WIDTH) / max(parts - 1, 1)
        fits = shared >= FEEDBACK_MIN_WIDTH and all(
            need <= stretch * part for need, stretch in needs if stretch
        )
        for button, long_text, short_text in self._labels:
            button.setText(long_text if fits else short_text)
