"""A dismissable banner that shows a problem in words, at the top of a view."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

STYLE = """
#messageBanner { background: #fef2f2; border: 1px solid #fecaca; border-radius: 8px; }
#messageBanner[tone="info"] { background: #eff6ff; border-color: #bfdbfe; }
#messageBannerText { color: #991b1b; font-size: 13px; }
#messageBanner[tone="info"] #messageBannerText { color: #1e3a8a; }
"""


class MessageBanner(QFrame):
    """Hidden until :meth:`show_message`; the ✕ hides it again. Text is plain and selectable."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("messageBanner")
        self.setStyleSheet(STYLE)
        self.text = QLabel()
        self.text.setObjectName("messageBannerText")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 8, 8)
        layout.addWidget(self.text, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.setVisible(False)

    def show_message(self, message: str, *, tone: str = "error") -> None:
        """Show ``message``; ``tone`` is "error" (red) or "info" (blue)."""
        self.setProperty("tone", tone)
        self.style().unpolish(self)
        self.style().polish(self)
        self.text.setText(message)
        self.setVisible(True)

    @Slot()
    def clear(self) -> None:
        """Hide the banner."""
        self.setVisible(False)
        self.text.clear()

    def message(self) -> str:
        """The text shown ("" when hidden)."""
        return self.text.text() if not self.isHidden() else ""
