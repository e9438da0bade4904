"""The dialog of Collect's "Write my own answer" (``collect_own_answer.py``): the prompt, and an editor for the
person's answer."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Slot
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from desktop_dpo.gui.comparison_detail import PromptBrowser, user_turns
from desktop_dpo.gui.widgets import field_label


class OwnAnswerDialog(QDialog):
    """Type the answer to the prompt on screen. ``text()`` is the answer once accepted.

    Args:
        messages: the prompt the answer replies to (system prompt, earlier turns, the last user message).
        against: how many sampled answers the written one is preferred to (0: none on screen).
    """

    def __init__(self, messages: Sequence[dict[str, str]], against: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("ownAnswerDialog")
        self.setWindowTitle("Write your own answer")
        self.resize(680, 560)
        what = (
            "It is saved as better than both sampled answers (as if you judged them both bad), and the model "
            "also learns to write it."
            if against
            else "It is saved as an example the model learns to write; sample a pair first to also have it "
            "preferred to the model's own answers."
        )
        intro = QLabel(f"Write the answer you want to this prompt. {what}")
        intro.setWordWrap(True)
        intro.setObjectName("pageSummary")
        in_conversation = user_turns(messages) > 1
        self.prompt_view = PromptBrowser(max_height=200)
        self.prompt_view.setObjectName("promptText")
        self.prompt_view.show_messages(messages)
        self.editor = QPlainTextEdit()
        self.editor.setObjectName("rewriteEditor")
        font = QFont(self.editor.font())
        font.setPointSizeF(font.pointSizeF() + 1)
        self.editor.setFont(font)
        self.editor.setPlaceholderText("Your answer…")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setText("Save my answer")
        self.save_button.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.editor.textChanged.connect(self._on_text_changed)
        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        layout.addWidget(intro)
        layout.addWidget(field_label("The conversation so far" if in_conversation else "The prompt"))
        layout.addWidget(self.prompt_view)
        layout.addWidget(field_label("Your answer"))
        layout.addWidget(self.editor, 1)
        layout.addWidget(self.buttons)
        self.editor.setFocus()

    def text(self) -> str:
        """The answer in the editor."""
        return self.editor.toPlainText()

    def set_text(self, text: str) -> None:
        """Replace the editor's text (tests and scripted use)."""
        self.editor.setPlainText(text)

    @Slot()
    def _on_text_changed(self) -> None:
        self.save_button.setEnabled(bool(self.text().strip()))
