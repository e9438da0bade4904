"""A dismissable banner that shows a problem in words, at the top of a view."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QFrame, QWidget

from desktop_dpo.gui.widgets import close_button, hbox, text_label


class MessageBanner(QFrame):
    """Hidden until :meth:`show_message`; the ✕ hides it again. Text is plain and selectable."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("messageBanner")
        self.text = text_label("", "messageBannerText", selectable=True)
        close = close_button("Dismiss", self.clear)
        self._layout = hbox(
            (self.text, 1), (close, 0, Qt.AlignmentFlag.AlignTop), parent=self, margins=(12, 8, 8, 8)
        )
        self.setVisible(False)

    def add_action(self, widget: QWidget) -> None:
        """Put ``widget`` (a button that acts on the message, such as Undo) between the text and the ✕."""
        self._layout.insertWidget(self._layout.count() - 1, widget, 0, Qt.AlignmentFlag.AlignVCenter)

    def show_message(self, message: str, *, tone: str = "error") -> None:
        """Show ``message``; ``tone`` is "error" (red), "warning" (amber), "success" (green) or "info" (blue)."""
        self.setProperty("tone", tone)
        for widget in (self, self.text):  # the text's colour follows the tone too: re-read both styles
            widget.style().unpolish(widget)
            widget.style().polish(widget)
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
