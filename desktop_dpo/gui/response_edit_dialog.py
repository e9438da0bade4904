"""The dialog in which a person rewrites one sampled answer into the answer they wanted.

The rewrite is saved with the verdict (``edited_text`` / ``edited_side``) and trains as chosen against the
original; the original answer is never changed. The prompt being answered (with the system prompt and the
turns before it, in a conversation) stays in sight, read-only, above the editor.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Slot
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.gui.comparison_detail import PromptBrowser, user_turns
from desktop_dpo.gui.widgets import field_label

PROMPT_MAX_HEIGHT = 200  # pixels; a longer conversation scrolls in its box


class ResponseEditDialog(QDialog):
    """Edit one answer. ``text()`` is the rewrite once accepted.

    Args:
        side_name: "Left" or "Right", as the person saw it.
        original: the answer as the model wrote it ("Restore original" brings it back).
        current: the text to start from (an earlier rewrite, or the original).
        messages: the prompt the answer replies to: system prompt, earlier turns and the last user message.
    """

    def __init__(
        self,
        side_name: str,
        original: str,
        current: str,
        messages: Sequence[dict[str, str]],
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("responseEditDialog")
        self.setWindowTitle(f"Rewrite the {side_name.lower()} answer")
        self.resize(680, 560)
        self._original = original

        in_conversation = user_turns(messages) > 1
        self.prompt_label = field_label(
            "The conversation so far" if in_conversation else "The prompt you are answering"
        )
        self.prompt_view = PromptBrowser(max_height=PROMPT_MAX_HEIGHT)
        self.prompt_view.setObjectName("promptText")
        self.prompt_view.setToolTip("What the answer replies to (read-only)")
        self.prompt_view.show_messages(messages)
        self.editor_label = field_label(f"Your rewrite of the {side_name.lower()} answer")

        intro = QLabel(
            f"Rewrite the {side_name.lower()} answer into the one you wanted. Your rewrite is saved with your "
            "verdict and trains as preferred over the original; the original stays as it was."
        )
        intro.setWordWrap(True)
        intro.setObjectName("pageSummary")

        self.editor = QPlainTextEdit()
        self.editor.setObjectName("rewriteEditor")
        self.editor.setPlainText(current)
        font = QFont(self.editor.font())
        font.setPointSizeF(font.pointSizeF() + 1)
        self.editor.setFont(font)
        self.editor.document().setDocumentMargin(8)

        self.restore_button = QPushButton("Restore original")
        self.restore_button.setToolTip("Start again from the answer the model wrote")
        self.restore_button.clicked.connect(self._on_restore_clicked)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Save).setText("Use rewrite")
        buttons.addButton(self.restore_button, QDialogButtonBox.ButtonRole.ResetRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        layout.addWidget(intro)
        layout.addWidget(self.prompt_label)
        layout.addWidget(self.prompt_view)
        layout.addWidget(self.editor_label)
        layout.addWidget(self.editor, 1)
        layout.addWidget(buttons)
        self.editor.setFocus()

    def prompt_text(self) -> str:
        """The conversation shown above the editor, as plain text."""
        return self.prompt_view.toPlainText()

    def text(self) -> str:
        """The text in the editor."""
        return self.editor.toPlainText()

    def set_text(self, text: str) -> None:
        """Replace the editor's text (tests and scripted use)."""
        self.editor.setPlainText(text)

    @Slot()
    def _on_restore_clicked(self) -> None:
        self.editor.setPlainText(self._original)
