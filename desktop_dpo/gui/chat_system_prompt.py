"""The Chat view's system prompt: a "System prompt" line with a summary of it, opening into its editor.

Collapsed, it takes one line and still shows the start of the prompt; the text belongs to the open
conversation (the view saves it with the next message sent, and shows a saved one with
:meth:`SystemPromptEditor.set_text`).
"""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.gui.widgets import FoldToggle

SUMMARY_LENGTH = 80  # characters of the prompt shown on its collapsed line


class SystemPromptEditor(QWidget):
    """The optional instructions the model reads before the conversation.

    Args:
        spacing: the space between the line and the editor below it (the card's own spacing).
    """

    def __init__(self, *, spacing: int = 6, parent: QWidget | None = None):
        super().__init__(parent)
        self.summary = QLabel()
        self.summary.setObjectName("activityText")
        # One-line summaries give way when the window is narrow (clipped, never widening the view).
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.editor = QPlainTextEdit()
        self.editor.setObjectName("systemEditor")
        self.editor.setPlaceholderText(
            "Optional: e.g. “You are a concise assistant.” Saved with the conversation when you send."
        )
        self.editor.setFixedHeight(58)
        self.editor.setTabChangesFocus(True)
        self.editor.textChanged.connect(self._on_text_changed)
        self.toggle = FoldToggle(
            "System prompt",
            self.editor,
            name="systemToggle",
            tooltip="Optional instructions the model reads before the conversation",
        )

        head = QHBoxLayout()
        head.setSpacing(8)
        head.addWidget(self.toggle)
        head.addWidget(self.summary, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(spacing)
        layout.addLayout(head)
        layout.addWidget(self.editor)

    def text(self) -> str:
        """The prompt as written, without leading or trailing white space ("" for none)."""
        return self.editor.toPlainText().strip()

    def set_text(self, text: str) -> None:
        """Show ``text`` (a saved conversation's prompt) in the editor and its summary."""
        self.editor.blockSignals(True)
        self.editor.setPlainText(text)
        self.editor.blockSignals(False)
        self._on_text_changed()

    @Slot()
    def _on_text_changed(self) -> None:
        text = " ".join(self.editor.toPlainText().split())
        if len(text) > SUMMARY_LENGTH:
            text = text[:SUMMARY_LENGTH] + "…"
        self.summary.setText(text or "none (optional)")
