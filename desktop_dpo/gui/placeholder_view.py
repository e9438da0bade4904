"""A page that says what a view will do until that view is built.

Each placeholder names its place in the loop (collect → train → export → chat), lists what the
finished view will offer, and may carry buttons for what already works (e.g. importing preferences).
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

# The loop a person goes round; a placeholder highlights where its view sits.
LOOP_STEPS = ("Collect", "Train", "Export", "Chat")


class PlaceholderView(QWidget):
    """A titled page describing a view that is on its way.

    Args:
        title: the view's name, as in the sidebar.
        summary: one sentence: what a person does here.
        planned: what the finished view will offer, one point per entry.
        loop_step: which of :data:`LOOP_STEPS` this view is, or None for views outside the loop.
        actions: actions that already work here; each becomes a button (enabled with its action).
        note: a closing line (Qt rich text), e.g. what the command line offers meanwhile.
    """

    def __init__(
        self,
        title: str,
        summary: str,
        planned: Sequence[str],
        *,
        loop_step: str | None = None,
        actions: Sequence[QAction] = (),
        note: str = "",
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("pageArea")
        self.title = title
        self.planned = list(planned)

        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        body = QWidget()
        body.setObjectName("pageArea")
        scroll.setWidget(body)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(36, 28, 36, 28)
        layout.setSpacing(14)

        heading = QHBoxLayout()
        heading.setSpacing(12)
        title_label = QLabel(title)
        title_label.setObjectName("pageTitle")
        badge = QLabel("Coming soon")
        badge.setObjectName("comingSoonBadge")
        heading.addWidget(title_label)
        heading.addWidget(badge, 0, Qt.AlignmentFlag.AlignVCenter)
        heading.addStretch(1)
        layout.addLayout(heading)

        self.summary_label = QLabel(summary)
        self.summary_label.setObjectName("pageSummary")
        self.summary_label.setWordWrap(True)
        layout.addWidget(self.summary_label)

        if loop_step is not None:
            layout.addLayout(self._loop_strip(loop_step))

        card, card_layout = self._card("What this view will do")
        for point in planned:
            card_layout.addLayout(self._bullet(point))
        layout.addWidget(card)

        self.action_buttons: list[QPushButton] = []
        if actions:
            card, card_layout = self._card("Available now")
            row = QHBoxLayout()
            row.setSpacing(8)
            for index, action in enumerate(actions):
                button = self._button_for(action, primary=index == 0)
                self.action_buttons.append(button)
                row.addWidget(button)
            row.addStretch(1)
            card_layout.addLayout(row)
            layout.addWidget(card)

        if note:
            note_label = QLabel(note)
            note_label.setObjectName("pageNote")
            note_label.setWordWrap(True)
            note_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            layout.addWidget(note_label)
        layout.addStretch(1)

    @staticmethod
    def _loop_strip(current: str) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(6)
        for index, step in enumerate(LOOP_STEPS):
            if index:
                arrow = QLabel("→")
                arrow.setObjectName("loopArrow")
                row.addWidget(arrow)
            label = QLabel(step)
            label.setObjectName("loopStep")
            # A dynamic property the style sheet keys on (#loopStep[current="true"]).
            label.setProperty("current", step == current)
            row.addWidget(label)
        row.addStretch(1)
        return row

    @staticmethod
    def _card(heading: str) -> tuple[QFrame, QVBoxLayout]:
        card = QFrame()
        card.setObjectName("card")
        layout = QVBoxLayout(card)
        layout.setContentsMargins(20, 16, 20, 18)
        layout.setSpacing(8)
        label = QLabel(heading)
        label.setObjectName("cardHeading")
        layout.addWidget(label)
        return card, layout

    @staticmethod
    def _bullet(text: str) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(10)
        dot = QLabel("•")
        dot.setObjectName("cardText")
        dot.setAlignment(Qt.AlignmentFlag.AlignTop)
        label = QLabel(text)
        label.setObjectName("cardText")
        label.setWordWrap(True)
        label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        row.addWidget(dot, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(label, 1)
        return row

    @staticmethod
    def _button_for(action: QAction, *, primary: bool) -> QPushButton:
        button = QPushButton(action.text().replace("&", ""))
        button.setObjectName("primaryButton" if primary else "secondaryButton")
        button.setToolTip(action.toolTip())
        button.setEnabled(action.isEnabled())
        button.clicked.connect(action.trigger)
        # Follow the action: disabled while a job that conflicts with it runs.
        action.enabledChanged.connect(button.setEnabled)
        return button
