"""One answer of a pair on screen: a header (side, status, rewrite badge, Edit button) over the text.

The text is read-only and proportional (answers are prose, not code) and selectable for copying. A streamed
answer grows below what is on screen: the pane keeps showing its beginning (or wherever the person scrolled),
so an answer is read from the start, never tail first.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QFrame, QPlainTextEdit, QSizePolicy, QWidget

from desktop_dpo.gui.widgets import button, hbox, set_style_property, styled_label, vbox

SIDE_NAMES = ("Left", "Right")  # screen side 0 and 1
MIN_LINES = 5  # of an answer, however short the window (the page scrolls below that)


class ResponsePane(QFrame):
    """One answer: a header (side name, status, rewrite badge, Edit button) over the streaming text."""

    def __init__(self, side: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("responsePane")
        self.setProperty("chosen", False)  # before the first polish: set_chosen(False) then re-styles nothing
        self.side = side
        self.title = styled_label(SIDE_NAMES[side], "paneTitle")
        # In the header, beside the side's name, so that the text gets the pane's height; it wraps when narrow.
        self.status = styled_label("", "paneStatus", wrap=True)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.badge = styled_label(
            "✎ Your rewrite",
            "paneBadge",
            tooltip="You rewrote this answer; the rewrite is saved with your verdict, the original is kept",
        )
        self.badge.setVisible(False)
        # Connected by the view that owns the pane.
        self.edit_button = button(
            "Edit…", tooltip=f"Rewrite the {SIDE_NAMES[side].lower()} answer into the one you wanted"
        )
        self.text = QPlainTextEdit()
        self.text.setObjectName("responseText")
        self.text.setReadOnly(True)
        self.text.setFrameShape(QFrame.Shape.NoFrame)
        self.text.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        font = QFont(self.text.font())
        font.setPointSizeF(font.pointSizeF() + 1.5)
        self.text.setFont(font)
        self.text.document().setDocumentMargin(12)
        self.text.setPlaceholderText("The answer appears here.")
        # Room for a few lines of an answer however small the window; the page scrolls below that.
        self.text.setMinimumHeight(MIN_LINES * self.text.fontMetrics().lineSpacing())

        head = hbox(
            self.title, 4, (self.status, 1), self.badge, self.edit_button, margins=(14, 6, 8, 6), spacing=8
        )
        vbox(head, (self.text, 1), parent=self, margins=(0, 0, 0, 4), spacing=0)

    def shown_text(self) -> str:
        """The text on screen."""
        return self.text.toPlainText()

    def set_text(self, text: str) -> None:
        """Replace the text."""
        self.text.setPlainText(text)

    def append(self, text: str) -> None:
        """Add streamed text at the end, below what is on screen: the view stays where it was."""
        bar = self.text.verticalScrollBar()
        position = bar.value()
        cursor = self.text.textCursor()  # a copy: the widget's own cursor, and so the view, stay put
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        bar.setValue(position)

    def set_chosen(self, chosen: bool) -> None:
        """Outline the pane of the answer the person preferred."""
        set_style_property(self, "chosen", chosen)
