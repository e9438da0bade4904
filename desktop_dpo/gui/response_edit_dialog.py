"""The dialog in which a person rewrites one sampled answer into the answer they wanted.

The rewrite is saved with the verdict (``edited_text`` / ``edited_side``) and trains as chosen against the
original; the original answer is never changed.
"""

from __future__ import annotations

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


class ResponseEditDialog(QDialog):
    """Edit one answer. ``text()`` is the rewrite once accepted.

    Args:
        side_name: "Left" or "Right", as the person saw it.
        original: the answer as the model wrote it ("Restore original" brings it back).
        current: the text to start from (an earlier rewrite, or the original).
    """

    def __init__(self, side_name: str, original: str, current: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("responseEditDialog")
        self.setWindowTitle(f"Rewrite the {side_name.lower()} answer")
        self.resize(640, 440)
        self._original = original

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
        layout.addWidget(self.editor, 1)
        layout.addWidget(buttons)
        self.editor.setFocus()

    def text(self) -> str:
        """The text in the editor."""
        return self.editor.toPlainText()

    def set_text(self, text: str) -> None:
        """Replace the editor's text (tests and scripted use)."""
        self.editor.setPlainText(text)

    @Slot()
    def _on_restore_clicked(self) -> None:
        self.editor.setPlainText(self._original)
