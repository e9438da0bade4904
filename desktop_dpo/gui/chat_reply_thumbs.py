"""Thumbs up and down on the model's replies in Chat: a rated reply teaches KTO (``core/dpo/labels.py``).

Each finished reply of the open conversation gets 👍 and 👎, small buttons in the space beside its bubble, at
its bottom. A transcript is one text document (``chat_transcript.py``), which cannot hold widgets: the
buttons float over its viewport and follow their bubble as it scrolls, grows or is laid out anew. They are
ordinary tool buttons: Tab reaches them, Space presses them, each has a tooltip.

A press saves at once (``Store.set_reply_label``); pressing the chosen thumb again takes it back. A reply
being written has none yet, and a reply being replaced (Regenerate) loses its own as it leaves the screen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QHBoxLayout, QToolButton, QWidget

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.store import MessageRow, Store
from desktop_dpo.gui.chat_transcript import ChatTranscript

UP_TOOLTIP = "Good reply: the model should answer like this (training with KTO learns from it)"
DOWN_TOOLTIP = "Bad reply: the model should not answer like this (training with KTO learns from it)"
TAKE_BACK = " — click again to take it back"
GAP = 6  # pixels between a bubble and its thumbs
# Fonts that draw 👍 and 👎 (Windows, macOS and most Linux desktops have one); without any, a tick and a cross.
EMOJI_FONTS = ("emoji", "symbola", "twemoji")


def thumb_texts() -> tuple[str, str]:
    """The up and down thumbs' texts: 👍 and 👎 where a font can draw them, else ✓ and ✗ (never empty boxes)."""
    families = (family.lower() for family in QFontDatabase.families())
    if any(name in family for family in families for name in EMOJI_FONTS):
        return "👍", "👎"
    return "✓", "✗"


class ReplyRating(QWidget):
    """👍 and 👎 of one reply (``message_id``); ``chosen`` is True, False, or None (no thumb)."""

    def __init__(self, message_id: int, on_rate: Callable[[ReplyRating, bool], None], parent: QWidget):
        super().__init__(parent)
        self.setObjectName("replyRating")
        self.message_id = message_id
        self._chosen: bool | None = None
        up, down = thumb_texts()
        self.up = self._thumb(up, "replyThumbUp", "Good reply", lambda: on_rate(self, True))
        self.down = self._thumb(down, "replyThumbDown", "Bad reply", lambda: on_rate(self, False))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.up)
        layout.addWidget(self.down)
        self.set_chosen(None)

    def _thumb(self, text: str, name: str, accessible: str, slot: Callable[[], None]) -> QToolButton:
        thumb = QToolButton(self)
        thumb.setObjectName(name)
        thumb.setText(text)
        thumb.setAccessibleName(accessible)
        thumb.setCheckable(True)
        thumb.setAutoRaise(True)
        thumb.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        thumb.setCursor(Qt.CursorShape.PointingHandCursor)
        thumb.clicked.connect(slot)
        return thumb

    @property
    def chosen(self) -> bool | None:
        """As saved: True rated good, False rated bad, None not rated."""
        return self._chosen

    def set_chosen(self, chosen: bool | None) -> None:
        """Show ``chosen`` (the buttons' checked states and tooltips)."""
        self._chosen = chosen
        self.up.setChecked(chosen is True)
        self.down.setChecked(chosen is False)
        self.up.setToolTip(UP_TOOLTIP + (TAKE_BACK if chosen is True else ""))
        self.down.setToolTip(DOWN_TOOLTIP + (TAKE_BACK if chosen is False else ""))


class ReplyThumbs(QObject):
    """The thumbs of every finished reply shown in ``transcript``, kept beside their bubbles."""

    failed = Signal(str)  # a thumb could not be saved: the sentence to show
    rated = Signal()  # a thumb was given, changed or taken back (counts elsewhere may change)

    def __init__(self, transcript: ChatTranscript, store: Callable[[], Store]):
        super().__init__(transcript)
        self._transcript = transcript
        self._store = store
        self._ratings: dict[int, ReplyRating] = {}  # transcript index -> the thumbs of that reply
        transcript.messages_changed.connect(self.place)
        transcript.verticalScrollBar().valueChanged.connect(self.place)
        transcript.horizontalScrollBar().valueChanged.connect(self.place)
        transcript.document().documentLayout().documentSizeChanged.connect(lambda _size: self.place())
        transcript.viewport().installEventFilter(self)

    def show_for(self, turns: Sequence[MessageRow]) -> None:
        """Thumbs for the model's replies among ``turns`` (the messages in the order the transcript shows
        them), each as stored."""
        for rating in self._ratings.values():
            rating.hide()  # at once: deleteLater waits for the event loop's next turn
            rating.deleteLater()
        self._ratings = {}
        replies = [(index, m) for index, m in enumerate(turns) if m.role == "assistant"]
        chosen = self._store().conversation_reply_labels(replies[0][1].conversation_id) if replies else {}
        for index, message in replies:
            rating = ReplyRating(message.id, self._rate, self._transcript.viewport())
            rating.set_chosen(chosen.get(message.id))
            self._ratings[index] = rating
        self.place()

    def rating_of(self, message_id: int) -> ReplyRating | None:
        """The thumbs shown for the reply ``message_id`` (None: none)."""
        return next((r for r in self._ratings.values() if r.message_id == message_id), None)

    def _rate(self, rating: ReplyRating, desirable: bool) -> None:
        """A thumb pressed: choose it, or take it back when it was the one chosen; saved at once."""
        new = None if rating.chosen is desirable else desirable
        try:
            self._store().set_reply_label(rating.message_id, new)
        except DesktopDpoError as exc:
            rating.set_chosen(rating.chosen)  # the buttons as saved (a press has toggled one already)
            self.failed.emit(f"The rating was not saved: {exc}")
            return
        rating.set_chosen(new)
        self.rated.emit()

    def place(self) -> None:
        """Put each reply's thumbs beside the bottom of its bubble; hide those of replies not shown (being
        written, or gone)."""
        transcript = self._transcript
        frames = transcript.document().rootFrame().childFrames()
        layout = transcript.document().documentLayout()
        dx = transcript.horizontalScrollBar().value()
        dy = transcript.verticalScrollBar().value()
        shown = transcript.message_count() - (1 if transcript.writing else 0)
        for index, rating in self._ratings.items():
            if index >= min(shown, len(frames)):
                rating.hide()
                continue
            frame = frames[index]
            box = layout.frameBoundingRect(frame)
            margins = frame.frameFormat()
            size = rating.sizeHint()
            x = box.right() - margins.rightMargin() + GAP - dx
            x = min(x, transcript.viewport().width() - size.width())  # never past the transcript's edge
            y = box.bottom() - margins.bottomMargin() - size.height() - dy
            rating.setGeometry(int(x), int(y), size.width(), size.height())
            rating.show()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        if event.type() == QEvent.Type.Resize:
            # After the transcript has laid its text out at the new width (it does so once this event is
            # through): placed now, the thumbs would follow the bubbles' old, wider places.
            QTimer.singleShot(0, self, self.place)  # not after the transcript is gone
        return super().eventFilter(watched, event)
