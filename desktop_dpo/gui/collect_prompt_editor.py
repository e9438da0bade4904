"""The Collect view's prompt: the system prompt, the earlier turns of a conversation and the next message.

A pair answers a whole conversation, and :class:`CollectPromptEditor` holds it: the system prompt (folded
behind a toggle that shows its beginning), the earlier turns (``turns``, oldest first, shown in a compact
transcript that is built with the first conversation, not at start-up), where that conversation came from
(the queue, Chat), and the user message being written. A stored prompt put in the editors (``loaded``) is
given back exactly as stored while the editors still show it unchanged.

The Collect view decides when the conversation may change (New conversation, Continue, a prompt from the
queue or from Chat); this widget shows it and says how the prompt reads now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPlainTextEdit,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.core.store import PromptRow
from desktop_dpo.gui import widgets
from desktop_dpo.gui.collect_pair import Turn, split_conversation
from desktop_dpo.gui.collect_verdict_bar import UndoKeyFilter

if TYPE_CHECKING:
    # Imported when used: the conversation's transcript is not on screen at start-up.
    from desktop_dpo.gui.chat_transcript import FittedTranscript

HISTORY_MAX_HEIGHT = 180  # pixels; a longer conversation scrolls in its box (the answers keep their room)
HISTORY_MIN_HEIGHT = 64
PROMPT_MIN_HEIGHT = 64
PROMPT_MAX_HEIGHT = 104  # the prompt editor's height when it holds the whole prompt
COMPACT_LINES = 2  # of the message editor while a pair is on screen (set_compact): the answers need the room
COMPACT_PADDING = 20  # the editor's frame, padding and document margins around those lines
NEXT_MESSAGE_MAX_HEIGHT = 64  # under earlier turns: about three lines, the turns and answers need the room
SYSTEM_PREVIEW_CHARS = 30  # of a folded system prompt, after the toggle's name
SYSTEM_TIP = "Optional instructions given to the model before your prompt"
PROMPT_PLACEHOLDER = "Ask the model something. Ctrl+Enter samples two answers."
NEW_CONVERSATION_TIP = (
    "Forget the earlier turns: the next pair answers your message alone (the text you are writing and the "
    "system prompt stay)"
)


class CollectPromptEditor(QWidget):
    """The prompt part of Collect's card: its head (what the prompt is, New conversation, the system prompt's
    toggle), the system prompt, the earlier turns and the message editor.

    Signals:
        changed(): the prompt changed (typing, or another conversation): the view's actions follow it.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.turns: list[Turn] = []  # the conversation before the message editor's message
        self.source = ""  # where that conversation came from, in words ("" when written here)
        self.loaded: PromptRow | None = None  # the stored prompt in the editors, if any
        self._history_view: FittedTranscript | None = None
        self._compact = False  # see set_compact
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(8)  # a card's spacing: the editor reads as part of it
        self._build()

    def _build(self) -> None:
        self.system_edit = QPlainTextEdit()
        self.system_edit.setObjectName("systemEditor")
        self.system_edit.setPlaceholderText("Optional: e.g. “You are a concise assistant.”")
        self.system_edit.setFixedHeight(58)
        self.system_edit.setTabChangesFocus(True)
        self.system_edit.textChanged.connect(self._on_system_text_changed)
        self.system_toggle = widgets.FoldToggle(
            "System prompt", self.system_edit, name="systemToggle", tooltip=SYSTEM_TIP
        )
        self.system_toggle.toggled.connect(self._on_system_toggled)

        # In a conversation it says where the conversation stands; in a narrow window it wraps.
        self.prompt_label = widgets.styled_label("Prompt", "fieldLabel", wrap=True)
        self.prompt_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.new_conversation_button = widgets.button("New conversation")  # the view connects it
        self.new_conversation_button.setVisible(False)
        prompt_head = QHBoxLayout()
        prompt_head.setSpacing(10)
        prompt_head.addWidget(self.prompt_label, 1)
        prompt_head.addWidget(self.new_conversation_button)
        prompt_head.addWidget(self.system_toggle)
        self._layout.addLayout(prompt_head)
        self._layout.addWidget(self.system_edit)
        # The earlier turns of a conversation go here, between the system prompt and the message editor.
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setObjectName("promptEditor")
        self.prompt_edit.setPlaceholderText(PROMPT_PLACEHOLDER)
        self.prompt_edit.setTabChangesFocus(True)
        self._fit_prompt_height()
        self.prompt_edit.textChanged.connect(self.changed)
        self._layout.addWidget(self.prompt_edit)
        undo_filter = UndoKeyFilter(self)
        for editor in (self.prompt_edit, self.system_edit):
            editor.installEventFilter(undo_filter)

    # ---------------------------------------------------------------- the prompt

    def messages(self) -> list[dict[str, str]]:
        """The conversation the next pair answers: the system prompt, the earlier turns and the message in
        the editor (a stored prompt shown unchanged is given back exactly as stored)."""
        loaded = self.loaded
        if loaded is not None and self._editors_match(loaded):
            return [dict(m) for m in loaded.messages]
        system = self.system_edit.toPlainText().strip()
        user = self.prompt_edit.toPlainText().strip()
        head = [{"role": "system", "content": system}] if system else []
        return [*head, *(turn.message() for turn in self.turns), {"role": "user", "content": user}]

    def history(self) -> list[dict[str, str]]:
        """The earlier turns of the conversation (without the system prompt), oldest first."""
        return [turn.message() for turn in self.turns]

    def has_message(self) -> bool:
        """The message editor holds something to send."""
        return bool(self.prompt_edit.toPlainText().strip())

    def _editors_match(self, prompt: PromptRow) -> bool:
        system, earlier, last = split_conversation(prompt.messages)
        return (
            self.prompt_edit.toPlainText().strip() == last.strip()
            and self.system_edit.toPlainText().strip() == system.strip()
            and self.history() == earlier
        )

    def set_prompt(self, prompt: str, system: str = "") -> None:
        """Put a prompt (and optional system prompt) in the editors: a single turn, no earlier ones."""
        self.forget_history()
        self.fill(prompt, system)

    def fill(self, prompt: str, system: str) -> None:
        """Put ``prompt`` in the message editor (the cursor at its end) and ``system`` in the system prompt."""
        self.system_edit.setPlainText(system)
        if system and not self.turns and not self.system_toggle.isChecked():
            self.system_toggle.setChecked(True)  # in a conversation it stays folded: the turns need the room
        self.prompt_edit.setPlainText(prompt)
        cursor = self.prompt_edit.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.prompt_edit.setTextCursor(cursor)

    def show_conversation(
        self, messages: list[dict[str, str]], *, source: str | None, stored: PromptRow | None = None
    ) -> None:
        """Show a conversation that ends with a user message: its earlier turns above, its last message in
        the editor. ``stored``: the stored prompt it is (given back as stored while unchanged)."""
        system, earlier, last = split_conversation(messages)
        self.set_history(earlier, source=source)
        self.loaded = stored
        self.fill(last, system)

    def forget_history(self) -> None:
        """A new conversation: no earlier turns (the message and the system prompt being written stay)."""
        self.loaded = None
        self.set_history([], source="")

    def clear_undo(self) -> None:
        """Forget the editors' typing history (Ctrl+Z then undoes the verdict just given)."""
        self.prompt_edit.document().clearUndoRedoStacks()
        self.system_edit.document().clearUndoRedoStacks()

    # ---------------------------------------------------------------- the earlier turns

    def set_history(self, messages: list[dict[str, str]], *, source: str | None) -> None:
        """Show ``messages`` as the earlier turns. Turns already shown keep their labels; ``source`` says
        where the conversation came from (None: where the shown one came from)."""
        kept = []
        for turn, message in zip(self.turns, messages, strict=False):
            if turn.message() != message:
                break
            kept.append(turn)
        self.turns = kept + [Turn(m["role"], m["content"]) for m in messages[len(kept) :]]
        if source is not None:
            self.source = source
        if not self.turns:
            self.source = ""
        self.render()

    def continue_with(self, earlier: list[dict[str, str]], question: str, answer: str, label: str) -> None:
        """The judged ``question`` and its chosen ``answer`` (labelled ``label``) follow the turns
        ``earlier``; the editor waits for the next message (unless the person already started it)."""
        self.set_history(earlier, source=None)  # the turns before the judged one, labels kept
        self.turns += [Turn("user", question), Turn("assistant", answer, label)]
        self.loaded = None
        self.system_toggle.setChecked(False)  # it stays with the conversation, folded to one line
        if self.prompt_edit.toPlainText().strip() == question.strip():
            self.prompt_edit.clear()
        self.render()

    def next_turn(self) -> int:
        """The number of the turn the message editor's message opens."""
        return sum(1 for turn in self.turns if turn.role == "user") + 1

    @property
    def history_view(self) -> FittedTranscript:
        """The earlier turns above the message editor (hidden without any; built the first time it is needed)."""
        if self._history_view is None:
            from desktop_dpo.gui.chat_transcript import FittedTranscript

            view = FittedTranscript(min_height=HISTORY_MIN_HEIGHT, max_height=HISTORY_MAX_HEIGHT)
            view.setToolTip("The conversation so far: both answers below continue it")
            view.setVisible(False)
            self._layout.insertWidget(self._layout.indexOf(self.prompt_edit), view)
            self._history_view = view
        return self._history_view

    def render(self) -> None:
        """Show the turns as they are now, and what the message editor's message is."""
        if self.turns or self._history_view is not None:  # no conversation yet: nothing to build
            self._fill_history_view()
        self._fit_prompt_height()
        self._update_prompt_label()
        self.changed.emit()

    def set_compact(self, compact: bool) -> None:
        """While a pair is on screen the message editor shrinks to a couple of lines (it scrolls), so that the
        answers get the room; it takes its height back once the pair has gone."""
        if compact != self._compact:
            self._compact = compact
            self._fit_prompt_height()

    def is_compact(self) -> bool:
        """True while the message editor is shrunk to a couple of lines (see :meth:`set_compact`)."""
        return self._compact

    def _fit_prompt_height(self) -> None:
        editor = self.prompt_edit
        if self._compact:
            height = COMPACT_LINES * editor.fontMetrics().lineSpacing() + COMPACT_PADDING
            editor.setMinimumHeight(height)
            editor.setMaximumHeight(height)
        else:
            editor.setMinimumHeight(PROMPT_MIN_HEIGHT)
            editor.setMaximumHeight(NEXT_MESSAGE_MAX_HEIGHT if self.turns else PROMPT_MAX_HEIGHT)

    def _fill_history_view(self) -> None:
        view = self.history_view
        view.clear_messages()
        number = 0
        for turn in self.turns:
            if turn.role == "user":
                number += 1
                header = f"You · turn {number}"
            elif turn.role == "assistant":
                header = f"Assistant · turn {max(number, 1)}" + (f" · {turn.label}" if turn.label else "")
            else:
                header = turn.role.capitalize()
            view.add_message(turn.role, turn.content, header)
        view.setVisible(bool(self.turns))
        view.fit_to_contents()
        view.scroll_to_end()

    def _update_prompt_label(self) -> None:
        if not self.turns:
            self.prompt_label.setText("Prompt")
            self.prompt_edit.setPlaceholderText(PROMPT_PLACEHOLDER)
            return
        source = f" {self.source}" if self.source else ""
        self.prompt_label.setText(f"Turn {self.next_turn()} of a conversation{source}")
        self.prompt_edit.setPlaceholderText(
            "Write your next message. Ctrl+Enter samples two answers that continue the conversation."
        )

    def show_locked(self, reason: str) -> None:
        """New conversation is there in a conversation, and refused (``reason`` says why) while it is locked."""
        self.new_conversation_button.setVisible(bool(self.turns))
        self.new_conversation_button.setEnabled(not reason)
        self.new_conversation_button.setToolTip(reason or NEW_CONVERSATION_TIP)

    # ---------------------------------------------------------------- the system prompt

    @Slot(bool)
    def _on_system_toggled(self, _shown: bool) -> None:
        self._update_system_toggle()  # the fold itself is FoldToggle's

    def _update_system_toggle(self) -> None:
        """A folded system prompt still shows that it is there: its beginning follows the toggle's name."""
        text = " ".join(self.system_edit.toPlainText().split())
        if text and not self.system_toggle.isChecked():
            preview = text if len(text) <= SYSTEM_PREVIEW_CHARS else text[: SYSTEM_PREVIEW_CHARS - 1] + "…"
            self.system_toggle.setText(f"System prompt: {preview}")
            self.system_toggle.setToolTip(f"The system prompt, read before the conversation:\n{text}")
        else:
            self.system_toggle.setText("System prompt")
            self.system_toggle.setToolTip(SYSTEM_TIP)

    @Slot()
    def _on_system_text_changed(self) -> None:
        self._update_system_toggle()
        self.changed.emit()
