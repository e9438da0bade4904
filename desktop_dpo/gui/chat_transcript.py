"""The transcript of a conversation: one read-only document with a block per message.

Every message is a frame of its own in one :class:`QTextDocument` (the person's on the right, tinted; the
model's on the left, white), with a small header line. Text is only ever inserted as plain text through a
cursor, so a reply containing ``<b>`` or markdown is shown exactly as written. A streaming reply grows by
inserting at a cursor kept at its end: one token costs an insertion, never a re-layout of the whole
conversation, however long it is. The view follows the stream only while the person has not scrolled up
to read.
"""

from __future__ import annotations

from bisect import bisect_right

from PySide6.QtCore import QPoint, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextFormat,
    QTextFrameFormat,
)
from PySide6.QtWidgets import QFrame, QTextEdit, QWidget

from desktop_dpo.gui.theme import fill_colour, follow_scheme, text_colour
from desktop_dpo.gui.widgets import FitsText

# Bubble colours (slate and indigo, as in resources/style.qss), in the light scheme: the scheme shown picks the
# painted ones (gui/theme.py), and a transcript repaints its messages when the scheme changes.
USER_BACKGROUND = "#eef2ff"
USER_BORDER = "#c7d2fe"
ASSISTANT_BACKGROUND = "#ffffff"
ASSISTANT_BORDER = "#e2e8f0"
HEADER_COLOUR = "#64748b"
TEXT_COLOUR = "#1e293b"
NOTE_COLOUR = "#b45309"
# Where a format keeps what to repaint it from: a text's light colour, a bubble's role.
LIGHT_COLOUR_PROPERTY = QTextFormat.Property.UserProperty + 1
ROLE_PROPERTY = QTextFormat.Property.UserProperty + 2
# Space on the side a bubble does not lean to (pixels).
INDENT = 72
COMPACT_INDENT = 48


class ChatTranscript(QTextEdit):
    """Messages as blocks; the last one may be a reply that is still being written.

    ``compact``: tighter bubbles with the header on the text's first line, for a transcript that shares the
    screen with other work (the earlier turns of a conversation in Collect).
    """

    messages_changed = Signal()  # a message was added, removed or finished, or the transcript emptied

    def __init__(self, parent: QWidget | None = None, *, compact: bool = False):
        super().__init__(parent)
        self.setObjectName("chatTranscript")
        self.setReadOnly(True)
        self.setAcceptRichText(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setUndoRedoEnabled(False)  # a transcript is written, never undone; the stack would only grow
        self._compact = compact
        self._padding = 5 if compact else 10
        self._indent = COMPACT_INDENT if compact else INDENT
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() + (0.5 if compact else 1.5))
        self.document().setDefaultFont(font)
        self.document().setDocumentMargin(6 if compact else 14)
        self._starts: list[int] = []  # document position where each message's block begins
        self._reply: QTextCursor | None = None  # end of the reply being written
        self._reply_text: list[str] = []
        self._reply_header = ""
        follow_scheme(self, self._repaint_messages)

    # ---------------------------------------------------------------- formats

    @staticmethod
    def _coloured(fmt: QTextCharFormat, light: str) -> QTextCharFormat:
        fmt.setForeground(QColor(text_colour(light)))
        fmt.setProperty(LIGHT_COLOUR_PROPERTY, light)
        return fmt

    def _header_format(self) -> QTextCharFormat:
        fmt = self._coloured(QTextCharFormat(), HEADER_COLOUR)
        fmt.setFontWeight(QFont.Weight.DemiBold)
        fmt.setFontPointSize(max(7.0, self.document().defaultFont().pointSizeF() - 2.5))
        return fmt

    def _body_format(self) -> QTextCharFormat:
        return self._coloured(QTextCharFormat(), TEXT_COLOUR)

    def _note_format(self) -> QTextCharFormat:
        fmt = self._coloured(self._header_format(), NOTE_COLOUR)
        fmt.setFontItalic(True)
        return fmt

    def _frame_format(self, role: str) -> QTextFrameFormat:
        fmt = QTextFrameFormat()
        user = role == "user"
        fmt.setProperty(ROLE_PROPERTY, role)
        fmt.setBackground(QColor(fill_colour(USER_BACKGROUND if user else ASSISTANT_BACKGROUND)))
        fmt.setBorder(1)
        fmt.setBorderBrush(QColor(fill_colour(USER_BORDER if user else ASSISTANT_BORDER)))
        fmt.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
        fmt.setPadding(self._padding)
        fmt.setTopMargin(2 if self._compact else 4)
        fmt.setBottomMargin(2 if self._compact else 4)
        fmt.setLeftMargin(self._indent if user else 0)
        fmt.setRightMargin(0 if user else self._indent)
        return fmt

    def _repaint_messages(self) -> None:
        """Every bubble and text in the colours of the scheme now shown (the words stay as they are)."""
        document = self.document()
        for frame in document.rootFrame().childFrames():
            role = frame.frameFormat().property(ROLE_PROPERTY)
            if role:
                frame.setFrameFormat(self._frame_format(role))
        runs = []  # (start, end, light colour): collected first, as repainting splits the fragments
        block = document.begin()
        while block.isValid():
            for fragment in block:
                light = fragment.fragment().charFormat().property(LIGHT_COLOUR_PROPERTY)
                if light:
                    start = fragment.fragment().position()
                    runs.append((start, start + fragment.fragment().length(), light))
            block = block.next()
        for start, end, light in runs:
            cursor = QTextCursor(document)
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            cursor.mergeCharFormat(self._coloured(QTextCharFormat(), light))

    # ---------------------------------------------------------------- writing

    def _following(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 4

    def _follow(self, following: bool) -> None:
        if following:
            bar = self.verticalScrollBar()
            bar.setValue(bar.maximum())

    def _open_block(self, role: str, header: str) -> QTextCursor:
        """A new message block at the end; returns a cursor where its text goes."""
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if self._compact:
            # Qt keeps an empty line between frames; here it would cost a line per message.
            spacer = QTextBlockFormat()
            spacer.setLineHeight(1, QTextBlockFormat.LineHeightTypes.FixedHeight.value)
            cursor.setBlockFormat(spacer)
        self._starts.append(cursor.position())
        frame = cursor.insertFrame(self._frame_format(role))
        inner = frame.firstCursorPosition()
        if self._compact:
            inner.insertText(header + "   ", self._header_format())  # the text follows on the same line
            return inner
        inner.insertText(header, self._header_format())
        body = QTextBlockFormat()
        body.setTopMargin(3)
        inner.insertBlock(body, self._body_format())
        return inner

    def add_message(self, role: str, text: str, header: str, note: str = "") -> None:
        """Append a finished message (``note``: a short remark under it, e.g. that it was stopped)."""
        following = self._following()
        cursor = self._open_block(role, header)
        cursor.insertText(text, self._body_format())
        if note:
            cursor.insertBlock(QTextBlockFormat(), self._note_format())
            cursor.insertText(note, self._note_format())
        self._follow(following)
        self.messages_changed.emit()

    def begin_reply(self, header: str) -> None:
        """Open the block of a reply that will stream in."""
        following = self._following()
        self._reply = self._open_block("assistant", header)
        self._reply_text = []
        self._reply_header = header
        self._follow(following)
        self.messages_changed.emit()

    def append_to_reply(self, text: str) -> None:
        """Add streamed text to the reply being written (one insertion; the rest of the document stays)."""
        if self._reply is None or not text:
            return
        following = self._following()
        self._reply.insertText(text, self._body_format())
        self._reply_text.append(text)
        self._follow(following)

    def finish_reply(self, text: str | None = None, note: str = "") -> None:
        """Close the reply. ``text``: the reply as saved, when it differs from what streamed in."""
        if self._reply is None:
            return
        if text is not None and text.strip() != self.reply_text().strip():
            # The saved text is the record: show exactly that (e.g. held-back text released at the end).
            start = self._starts[-1]
            self._remove_from(start)
            self._starts.pop()
            self._reply = None
            self.add_message("assistant", text, self._reply_header, note)
            return
        if note:
            self._reply.insertBlock(QTextBlockFormat(), self._note_format())
            self._reply.insertText(note, self._note_format())
        self._reply = None
        self.messages_changed.emit()

    def reply_text(self) -> str:
        """What has streamed into the reply being written ("" when none)."""
        return "".join(self._reply_text)

    @property
    def writing(self) -> bool:
        """True while a reply is open."""
        return self._reply is not None

    def remove_last(self) -> None:
        """Remove the last message's block (a reply being replaced, or one that failed)."""
        if not self._starts:
            return
        self._remove_from(self._starts.pop())
        self._reply = None
        self._reply_text = []
        self.messages_changed.emit()

    def _remove_from(self, start: int) -> None:
        cursor = QTextCursor(self.document())
        cursor.setPosition(start)
        cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        cursor.removeSelectedText()

    def clear_messages(self) -> None:
        """Empty the transcript."""
        self.document().clear()
        self._starts = []
        self._reply = None
        self._reply_text = []
        self.messages_changed.emit()

    def message_count(self) -> int:
        """Blocks shown (a reply being written included)."""
        return len(self._starts)

    def message_at(self, point: QPoint) -> int | None:
        """The index (in the order added) of the message shown at ``point`` (viewport coordinates), or
        None when there is none."""
        if not self._starts:
            return None
        position = self.cursorForPosition(point).position()
        index = bisect_right(self._starts, position) - 1
        return index if index >= 0 else None

    def scroll_to_end(self) -> None:
        """Show the last message."""
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())


class FittedTranscript(FitsText, ChatTranscript):
    """A compact transcript as tall as its messages, between ``min_height`` and ``max_height`` pixels, then
    scrolling (the earlier turns of a conversation above Collect's prompt editor)."""

    def __init__(self, *, min_height: int, max_height: int, parent: QWidget | None = None):
        super().__init__(parent, compact=True)
        self.fit_height(min_height, max_height)
        self.document().documentLayout().documentSizeChanged.connect(lambda _size: self.fit_to_contents())
