"""The Chat view: talk to a registered model, with every conversation saved.

A reply streams from llama.cpp in a background job (:func:`desktop_dpo.core.chat.chat_reply`, on the job
resource ``generate:<model id>``, shared with Collect: while one view generates with a model, the other
cannot start on it and says why). The GUI never waits on a model.

What is saved, and when: the person's message the moment it is sent; the reply when it ends, with the
model, seed, sampling settings, tokens and seconds in its meta. A reply stopped with Esc keeps the text
written so far and is marked ``stopped``. Regenerate replaces the last reply: the old one is deleted in the
same transaction that saves the new one, so a regeneration that fails loses nothing. While a reply is
being written, the conversation cannot be switched, renamed or deleted (stop it first: Esc).

Any of the person's messages can go to Collect (right-click it, or "Compare in Collect" for the last one):
Collect opens on the conversation up to and including that message, to sample and judge two answers to it.

Keyboard: Ctrl+Enter sends, Esc stops the reply, F2 renames the selected conversation.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QPoint, Qt, Signal, Slot
from PySide6.QtGui import QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
)

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.chat import (
    HistoryTrimmed,
    chat_reply,
    conversation_title,
    reply_meta,
)
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent, draw_seed
from desktop_dpo.core.sampling import record_model_info
from desktop_dpo.core.store import MessageRow, ModelRow, Store
from desktop_dpo.core.wording import plural
from desktop_dpo.gui import widgets
from desktop_dpo.gui.chat_conversation_list import RENAME_SHORTCUT, ConversationList
from desktop_dpo.gui.chat_reply_thumbs import ReplyThumbs
from desktop_dpo.gui.chat_system_prompt import SystemPromptEditor
from desktop_dpo.gui.chat_transcript import ChatTranscript
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.model_work_view import STOP_SHORTCUT, SingleModelView
from desktop_dpo.gui.sampling_settings_panel import SamplingSettingsPanel
from desktop_dpo.gui.template_editor import ensure_template_chosen, template_needed_message
from desktop_dpo.gui.view_messages import ActivityLine
from desktop_dpo.gui.widgets import (
    ModelCombo,
    field_label,
    set_style_property,
    title_block,
    view_shortcut,
)

log = logging.getLogger(__name__)

SEND_SHORTCUTS = ("Ctrl+Return", "Ctrl+Enter")
SETTINGS_KEY = "chat/sampling"
EMPTY_TITLE = "Pick a model and say hello…"
NO_MODEL_TITLE = "No models yet"


def describe_reply(result: GenerationResult) -> str:
    """One line about a finished reply: length, time and how it ended."""
    ending = {"stop": "finished", "length": "reached the token limit", "cancelled": "stopped"}.get(
        result.finish_reason, result.finish_reason
    )
    return f"{plural(result.completion_tokens, 'token')} · {result.seconds:.1f} s · {ending}"


def _header(message: MessageRow) -> str:
    if message.role == "user":
        return "You"
    model = message.meta.get("model")
    return f"Assistant · {model}" if model else "Assistant"


def _note(message: MessageRow) -> str:
    if message.role == "assistant" and message.meta.get("stopped"):
        tokens = message.meta.get("completion_tokens")
        return f"Stopped after {plural(tokens, 'token')}" if tokens else "Stopped"
    return ""


@dataclass
class PendingReply:
    """The reply being written (the GUI thread's record of what the job streamed so far)."""

    conversation_id: int
    model: ModelRow
    seed: int
    settings: SamplingSettings
    replacing: MessageRow | None  # the answer Regenerate replaces once this one is saved
    started: float  # time.monotonic() when it was asked for
    text: str = ""
    n_tokens: int = 0
    result: GenerationResult | None = None  # from ResponseFinished, when it arrived
    dropped: int = 0  # earlier messages left out to fit the context


class ChatView(SingleModelView):
    """Conversations with a model, streamed and saved.

    Takes :class:`~desktop_dpo.gui.model_work_view.ModelWorkView`'s arguments: replies run on resource
    ``generate:<model id>`` and ``rng`` draws the sampler seed of each reply (tests pass a seeded one).

    Signals:
        status_message(str): a line for the status bar.
        models_requested(): the person asked to add a model (the window shows the Models view).
        conversations_changed(): a conversation was created, renamed, deleted or written to.
        compare_requested(object, object): the person wants two answers to one of their messages judged in
            Collect: the messages up to and including it (system prompt first; role/content dicts), and the
            model of the conversation (a ModelRow, or None).
    """

    status_message = Signal(str)
    models_requested = Signal()
    conversations_changed = Signal()
    compare_requested = Signal(object, object)

    PAGE = "chat"
    DEFAULT_RNG = random.SystemRandom

    def __init__(self, **services: Any):
        super().__init__(**services)

        self._model: ModelRow | None = None
        self._conversation_id: int | None = None
        self._messages: list[MessageRow] = []
        self._reply: PendingReply | None = None
        self._model_count = 0
        self.transcript_menu: QMenu | None = None  # the transcript's context menu while it is open

        self._build()
        self._build_shortcuts()
        self.sampling_panel.remember(self._settings, SETTINGS_KEY)
        self.refresh_models()
        self.refresh_conversations()
        conversations = self.store.list_conversations()
        if conversations:  # carry on where the person left off
            self.open_conversation(conversations[0].id)
        self._show_page()
        self._update_actions()

    # ---------------------------------------------------------------- building

    def _build(self) -> None:
        # -- error banner
        self.banner = MessageBanner()
        self.conversation_panel = self._build_conversation_list()
        header = self._build_header()
        card = self._build_settings_card()
        self.pages = self._build_pages()
        # -- activity line
        self.activity_row = ActivityLine()
        composer = self._build_composer()

        content = QVBoxLayout()
        content.setContentsMargins(18, 18, 18, 14)
        content.setSpacing(10)
        content.addLayout(header)
        content.addWidget(card)
        content.addWidget(self.banner)
        content.addWidget(self.pages, 1)
        content.addWidget(self.activity_row)
        content.addWidget(composer)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.conversation_panel)
        layout.addLayout(content, 1)

    def _build_conversation_list(self) -> ConversationList:
        """The list of conversations, on the left (its widgets are the view's too, under their old names)."""
        panel = ConversationList(self.store)
        for signal, slot in (
            (panel.new_requested, self.new_conversation),
            (panel.open_requested, self._on_open_requested),
            (panel.delete_requested, self.delete_conversation),
            (panel.deleted, self._on_conversation_deleted),
            (panel.changed, self.conversations_changed),
            (panel.failed, self.show_error),
            (panel.notice, self.notify),
        ):
            signal.connect(slot)
        self.conversation_list = panel.list_widget
        self.list_empty = panel.empty_label
        self.new_button, self.rename_button = panel.new_button, panel.rename_button
        self.delete_button = panel.delete_button
        return panel

    def _build_header(self) -> QVBoxLayout:
        """Title and model."""
        title, summary = title_block("Chat", "Talk to a model on this computer. Every conversation is saved.")
        self.model_combo = ModelCombo("The model that answers")
        self.model_combo.currentIndexChanged.connect(self._on_model_combo_changed)
        top = QHBoxLayout()
        top.setSpacing(10)
        top.addWidget(title, 1)
        top.addWidget(field_label("Model"), 0, Qt.AlignmentFlag.AlignVCenter)
        top.addWidget(self.model_combo, 0, Qt.AlignmentFlag.AlignVCenter)
        header = QVBoxLayout()
        header.setSpacing(2)
        header.addLayout(top)
        header.addWidget(summary)
        return header

    def _build_settings_card(self) -> QFrame:
        """The settings card: system prompt and sampling."""
        card, card_layout = widgets.card((16, 8, 16, 8), 6)
        self.system_prompt = SystemPromptEditor(spacing=card_layout.spacing())
        self.system_toggle = self.system_prompt.toggle
        self.system_summary = self.system_prompt.summary
        self.system_edit = self.system_prompt.editor
        card_layout.addWidget(self.system_prompt)
        # The settings' summary wraps when the window is narrow (never widening the view, never cut).
        self.sampling_panel = SamplingSettingsPanel()
        self.sampling_panel.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.sampling_panel.summary.setWordWrap(True)
        card_layout.addWidget(self.sampling_panel)
        return card

    def _build_pages(self) -> QStackedWidget:
        """The transcript, or what to do when there is none yet."""
        self.transcript = ChatTranscript()
        self.transcript.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.transcript.customContextMenuRequested.connect(self._on_transcript_menu_requested)
        self.reply_thumbs = ReplyThumbs(self.transcript, lambda: self.store)  # 👍/👎 on each reply
        self.reply_thumbs.failed.connect(self.show_error)
        self.empty_state = QFrame()
        self.empty_state.setObjectName("chatEmpty")
        self.empty_title = QLabel(EMPTY_TITLE)
        self.empty_title.setObjectName("chatEmptyTitle")
        self.empty_title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_text = QLabel()
        self.empty_text.setObjectName("chatEmptyText")
        self.empty_text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_text.setWordWrap(True)
        self.models_button = widgets.button(
            "Go to Models",
            self.models_requested,
            tooltip="Add a model (a GGUF file or a Hugging Face folder) or the demo model",
            name="primaryButton",
        )
        empty_layout = QVBoxLayout(self.empty_state)
        empty_layout.setContentsMargins(24, 24, 24, 24)
        empty_layout.setSpacing(8)
        empty_layout.addStretch(1)
        empty_layout.addWidget(self.empty_title)
        empty_layout.addWidget(self.empty_text)
        empty_layout.addSpacing(6)
        empty_layout.addWidget(self.models_button, 0, Qt.AlignmentFlag.AlignHCenter)
        empty_layout.addStretch(2)
        pages = QStackedWidget()
        pages.addWidget(self.empty_state)
        pages.addWidget(self.transcript)
        return pages

    def _build_composer(self) -> QFrame:
        """The composer: the message editor and what can be done with it."""
        composer, composer_layout = widgets.card((10, 8, 10, 8))
        self.input_edit = QPlainTextEdit()
        self.input_edit.setObjectName("messageEditor")
        self.input_edit.setPlaceholderText("Write a message. Ctrl+Enter sends.")
        self.input_edit.setTabChangesFocus(True)
        self.input_edit.setMinimumHeight(52)
        self.input_edit.setMaximumHeight(84)
        self.input_edit.textChanged.connect(self._on_input_text_changed)
        composer_layout.addWidget(self.input_edit)
        self.note = QLabel()
        self.note.setObjectName("composerNote")
        self.note.setWordWrap(True)
        self.regenerate_button = widgets.button(
            "Regenerate", self.regenerate, tooltip="Write the last reply again (it replaces the one shown)"
        )
        self.compare_button = widgets.button(
            "Compare in Collect",
            self._on_compare_clicked,
            tooltip="Judge two answers to your last message in Collect, with the conversation before it as "
            "the prompt (right-click any of your messages to compare answers to an earlier one)",
        )
        self.stop_button = widgets.button(
            f"Stop ({STOP_SHORTCUT})",
            self.stop,
            tooltip="Stop the reply at the next token (the text so far is kept)",
        )
        # Ctrl+Enter: said by the editor and the tooltip
        self.send_button = widgets.button("Send", self.send, name="primaryButton")
        buttons = (self.compare_button, self.regenerate_button, self.stop_button, self.send_button)
        composer_layout.addLayout(self._actions_row(self.note, *buttons))
        return composer

    def _build_shortcuts(self) -> None:
        def shortcut(keys: str, slot: Any) -> QShortcut:
            return view_shortcut(self, keys, slot)

        self.shortcuts: dict[str, QShortcut] = {}
        for keys in SEND_SHORTCUTS:
            self.shortcuts[keys] = shortcut(keys, self.send)
        # Esc only while a reply is written: otherwise it stays with the editors (e.g. to cancel a rename).
        self.shortcuts["stop"] = shortcut(STOP_SHORTCUT, self.stop)
        self.shortcuts["rename"] = shortcut(RENAME_SHORTCUT, self.conversation_panel.edit_selected)

    # ---------------------------------------------------------------- models

    def refresh_models(self) -> None:
        """Re-read the registered models into the picker (keeping the selection when it still exists)."""
        models = self.store.list_models()
        self._model_count = len(models)
        current = self._preferred_model_id()
        self.model_combo.fill(models, current)
        self._model = self.model_combo.chosen(models)
        self._show_page()
        self._update_actions()

    @Slot(int)
    def _on_model_combo_changed(self, _index: int) -> None:
        model_id = self.model_combo.currentData()
        self._model = self.store.get_model(model_id) if model_id is not None else None
        self._update_actions()

    def _resource(self, model: ModelRow | None = None) -> str | None:
        model = model or self._model
        return f"generate:{model.id}" if model is not None else None

    # ---------------------------------------------------------------- conversations

    def refresh_conversations(self) -> None:
        """Re-read the list of conversations (newest first), keeping the open one selected."""
        self.conversation_panel.refresh(self._conversation_id)
        self._update_actions()

    def conversation_id(self) -> int | None:
        """The conversation on screen (None for a new chat not yet sent)."""
        return self._conversation_id

    def messages(self) -> list[MessageRow]:
        """The open conversation's saved messages, system prompt first."""
        return list(self._messages)

    def open_conversation(self, conversation_id: int) -> bool:
        """Show a saved conversation. Refused (False) while a reply is being written."""
        if self._streaming:
            self.notify("Stop the reply first (Esc), then switch conversations.")
            # The selection stays on the conversation being written.
            self.conversation_panel.select(self._conversation_id)
            return False
        conversation = self.store.get_conversation(conversation_id)
        if conversation is None:
            self.refresh_conversations()
            return False
        self._conversation_id = conversation_id
        self._messages = self.store.conversation_messages(conversation_id)
        self.system_prompt.set_text(next((m.content for m in self._messages if m.role == "system"), ""))
        if conversation.model_id is not None and self.model_combo.findData(conversation.model_id) >= 0:
            self.model_combo.setCurrentIndex(self.model_combo.findData(conversation.model_id))
        self._render_transcript()
        # Not a rebuild of the list: this may run inside the list's own currentItemChanged signal.
        self.conversation_panel.select(conversation_id)
        self.clear_error()
        self._set_activity("")
        self._update_actions()
        return True

    @Slot()
    def new_conversation(self) -> bool:
        """Start a new conversation (saved when the first message is sent). Refused while writing."""
        if self._streaming:
            self.notify("Stop the reply first (Esc), then start a new chat.")
            return False
        self._conversation_id = None
        self._messages = []
        self.transcript.clear_messages()
        self.reply_thumbs.show_for([])
        self.conversation_panel.select(None)
        self.clear_error()
        self._set_activity("")
        self._show_page()
        self._update_actions()
        self.input_edit.setFocus()
        return True

    def rename_conversation(self, conversation_id: int, title: str) -> bool:
        """Give a conversation a new title (an empty one is refused)."""
        return self.conversation_panel.rename(conversation_id, title)

    def delete_conversation(self, conversation_id: int, *, confirm: bool = True) -> bool:
        """Delete a conversation and its messages, after asking (unless ``confirm`` is False). Refused for
        the one being written to."""
        if self._streaming and conversation_id == self._conversation_id:
            self.notify("Stop the reply first (Esc), then delete the conversation.")
            return False
        return self.conversation_panel.delete(conversation_id, confirm=confirm)

    @Slot(object)
    def _on_open_requested(self, conversation_id: int) -> None:
        if conversation_id != self._conversation_id:
            self.open_conversation(conversation_id)

    @Slot(object)
    def _on_conversation_deleted(self, conversation_id: int) -> None:
        if conversation_id == self._conversation_id:
            self.new_conversation()
        self.refresh_conversations()

    # ---------------------------------------------------------------- the transcript

    def _render_transcript(self) -> None:
        """Show the open conversation's messages (once per opening: streaming only appends)."""
        self.transcript.clear_messages()
        for message in self._messages:
            if message.role != "system":  # the system prompt is shown in its editor
                self.transcript.add_message(message.role, message.content, _header(message), _note(message))
        self.reply_thumbs.show_for(self._turn_messages())
        self._show_page()
        bar = self.transcript.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _turn_messages(self) -> list[MessageRow]:
        """The saved messages in the order the transcript shows them (the system prompt is not shown)."""
        return [m for m in self._messages if m.role != "system"]

    def conversation_up_to(self, message_id: int) -> list[dict[str, str]]:
        """The open conversation's saved messages up to and including ``message_id``, system prompt first."""
        messages: list[dict[str, str]] = []
        for message in self._messages:
            messages.append({"role": message.role, "content": message.content})
            if message.id == message_id:
                return messages
        raise ValueError(f"Message {message_id} is not in the open conversation.")

    def compare_in_collect(self, message_id: int) -> bool:
        """Ask for Collect on the conversation up to the person's message ``message_id`` (False when it is
        not one of their messages)."""
        message = next((m for m in self._messages if m.id == message_id), None)
        if message is None or message.role != "user":
            return False
        self.compare_requested.emit(self.conversation_up_to(message_id), self._model)
        return True

    def _last_user_message(self) -> MessageRow | None:
        return next((m for m in reversed(self._messages) if m.role == "user"), None)

    @Slot()
    def _on_compare_clicked(self) -> None:
        message = self._last_user_message()
        if message is not None:
            self.compare_in_collect(message.id)

    def message_at(self, point: QPoint) -> MessageRow | None:
        """The saved message shown at ``point`` in the transcript's viewport (None: none, or the reply
        being written)."""
        index = self.transcript.message_at(point)
        turns = self._turn_messages()
        if index is None or index >= len(turns):
            return None
        if self._reply is not None and index == self.transcript.message_count() - 1:
            return None  # the reply being written (Regenerate's old answer is still in the list)
        return turns[index]

    def build_transcript_menu(self, point: QPoint) -> QMenu:
        """The transcript's context menu at ``point``: copying, and for one of the person's messages,
        comparing two answers to it in Collect."""
        menu = self.transcript.createStandardContextMenu(point)
        message = self.message_at(point)
        if message is not None and message.role == "user":
            menu.addSeparator()
            action = menu.addAction("Compare two answers to this message in Collect")
            action.setObjectName("compareInCollect")
            action.setToolTip("Collect opens with the conversation up to this message as the prompt")
            message_id = message.id
            action.triggered.connect(lambda _checked=False: self.compare_in_collect(message_id))
        return menu

    @Slot(QPoint)
    def _on_transcript_menu_requested(self, point: QPoint) -> None:
        menu = self.build_transcript_menu(point)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        menu.destroyed.connect(lambda _obj=None: setattr(self, "transcript_menu", None))
        self.transcript_menu = menu
        menu.popup(self.transcript.viewport().mapToGlobal(point))

    def _show_page(self) -> None:
        if not hasattr(self, "pages"):
            return
        has_models = self._model_count > 0
        self.empty_title.setText(EMPTY_TITLE if has_models else NO_MODEL_TITLE)
        self.empty_text.setText(
            "Write a message below and press Ctrl+Enter. Conversations are saved on this computer."
            if has_models
            else "Add a model in Models (a GGUF file, a Hugging Face folder or the demo model), then come "
            "back here to chat with it."
        )
        self.models_button.setVisible(not has_models)
        showing = self.transcript.message_count() > 0 or self._streaming
        self.pages.setCurrentWidget(self.transcript if showing else self.empty_state)

    def transcript_text(self) -> str:
        """Everything the transcript shows, as plain text."""
        return self.transcript.toPlainText()

    # ---------------------------------------------------------------- sending and replies

    @property
    def reply(self) -> PendingReply | None:
        """The reply being written, if any."""
        return self._reply

    def set_message(self, text: str) -> None:
        """Put ``text`` in the message editor."""
        self.input_edit.setPlainText(text)
        cursor = self.input_edit.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.input_edit.setTextCursor(cursor)

    @Slot()
    def send(self) -> bool:
        """Save the message in the editor and ask the model for a reply. False when it cannot (the view
        says why)."""
        if not self.send_button.isEnabled():
            return False
        assert self._model is not None
        # The row as stored now, with a usable chat template (a model that needs one chosen first opens the
        # template editor; cancelled, the message stays in the editor and nothing is sent).
        model = ensure_template_chosen(self, self.store, self._model)
        if model is None:
            self.show_error(template_needed_message(self._model))
            return False
        self._model = model
        text = self.input_edit.toPlainText().strip()
        system = self.system_prompt.text()
        try:
            with self.store.atomic():
                conversation_id = self._conversation_id
                if conversation_id is None:
                    conversation_id = self.store.create_conversation(model.id, conversation_title(text))
                else:
                    conversation = self.store.get_conversation(conversation_id)
                    if conversation is not None and conversation.model_id != model.id:
                        self.store.set_conversation_model(conversation_id, model.id)
                saved_system = next((m.content for m in self._messages if m.role == "system"), "")
                if system != saved_system:
                    self.store.set_system_prompt(conversation_id, system)
                self.store.add_message(conversation_id, "user", text)
        except DesktopDpoError as exc:
            self.show_error(f"Your message was not sent: {exc}")
            return False
        self._conversation_id = conversation_id
        self._messages = self.store.conversation_messages(conversation_id)
        self.input_edit.clear()
        self.transcript.add_message("user", text, "You")
        self.refresh_conversations()
        self.conversations_changed.emit()
        return self._start_reply(replacing=None)

    def _answerable(self) -> MessageRow | bool:
        """What Regenerate acts on: the last answer (to replace), True (the last message is the person's,
        unanswered), or False (nothing to do)."""
        turns = [m for m in self._messages if m.role != "system"]
        if not turns:
            return False
        if turns[-1].role == "user":
            return True
        if turns[-1].role == "assistant" and len(turns) >= 2 and turns[-2].role == "user":
            return turns[-1]
        return False

    @Slot()
    def regenerate(self) -> bool:
        """Write the last reply again; the new reply replaces the old one when it is saved."""
        if not self.regenerate_button.isEnabled():
            return False
        target = self._answerable()
        if target is False:
            return False
        replacing = target if isinstance(target, MessageRow) else None
        return self._start_reply(replacing=replacing)

    def _start_reply(self, *, replacing: MessageRow | None) -> bool:
        model = self._model
        conversation_id = self._conversation_id
        assert model is not None and conversation_id is not None
        history = [m for m in self._messages if replacing is None or m.id != replacing.id]
        messages = [{"role": m.role, "content": m.content} for m in history]
        settings = self.sampling_panel.settings()
        seed = draw_seed(self._rng)
        pool, paths = self.pool, self.paths

        def factory(store: Store, token: Any) -> Any:
            return record_model_info(store, chat_reply(pool, model, paths, messages, settings, seed, token))

        if not self._start_generation(factory, model, "reply"):
            return False
        self._reply = PendingReply(
            conversation_id=conversation_id,
            model=model,
            seed=seed,
            settings=settings,
            replacing=replacing,
            started=time.monotonic(),
        )
        if replacing is not None:
            self.transcript.remove_last()  # the old answer makes way; it stays saved until the new one is
        self.transcript.begin_reply(f"Assistant · {model.name}")
        self.clear_error()
        self._show_page()
        self._set_activity(f"{model.name} is writing… Esc stops.")
        self._update_actions()
        return True

    def _on_reply_event(self, event: object) -> None:
        reply = self._reply
        if reply is None:
            return
        if isinstance(event, TokenEvent):
            text = event.text
            if not reply.text:
                text = text.lstrip()  # the reply's first characters: no leading blank line or space
            if text:
                reply.text += text
                self.transcript.append_to_reply(text)
            reply.n_tokens = event.n_tokens
            self._set_activity(
                f"{reply.model.name} is writing… {plural(event.n_tokens, 'token')} · Esc stops."
            )
        elif isinstance(event, ResponseFinished):
            reply.result = event.result
        elif isinstance(event, HistoryTrimmed):
            reply.dropped = event.dropped
            self.notify(
                f"The {event.dropped} oldest messages were left out so the conversation fits "
                f"{reply.model.name}'s context of {event.n_ctx} tokens."
            )
        else:
            self.show_job_progress(event)

    def _on_reply_succeeded(self, result: object) -> None:
        if self._reply is None:
            return
        if not isinstance(result, GenerationResult):
            result = self._reply.result
        self._finish_reply(result if isinstance(result, GenerationResult) else self._stopped_result())

    def _on_reply_cancelled(self) -> None:
        """After Stop: the text written so far is saved, marked stopped."""
        if self._reply is None:
            return
        # The job was stopped at a token boundary: what streamed is the reply (its own result, if it got as
        # far as reporting one, is exact).
        result = self._reply.result
        self._finish_reply(result if result is not None else self._stopped_result())

    def _stopped_result(self) -> GenerationResult:
        reply = self._reply
        assert reply is not None
        return GenerationResult(
            text=reply.text,
            prompt_tokens=0,
            completion_tokens=reply.n_tokens,
            seconds=time.monotonic() - reply.started,
            finish_reason="cancelled",
            seed=reply.seed,
            settings=reply.settings.to_dict(),
        )

    def _finish_reply(self, result: GenerationResult) -> None:
        reply = self._reply
        assert reply is not None
        self._reply = None
        self.activity_row.hide_progress()
        text = result.text.strip()
        stopped = result.finish_reason == "cancelled"
        if not text:
            self.transcript.remove_last()
            if reply.replacing is not None:
                self._render_transcript()  # nothing replaces the old answer: it is back
            self._set_activity(
                "Stopped before the reply began; nothing was saved."
                if stopped
                else "The model wrote nothing."
            )
            self._show_page()
            self._update_actions()
            return
        meta = reply_meta(result, reply.model, dropped=reply.dropped)
        if stopped and not meta["prompt_tokens"]:
            meta["prompt_tokens"] = None  # not reported by a job stopped mid-reply
        try:
            with self.store.atomic():
                if reply.replacing is not None:
                    self.store.delete_message(reply.replacing.id)
                self.store.add_message(reply.conversation_id, "assistant", text, meta)
        except DesktopDpoError as exc:
            self.show_error(f"The reply could not be saved: {exc}")
        tokens = result.completion_tokens
        self.transcript.finish_reply(text, note=f"Stopped after {plural(tokens, 'token')}" if stopped else "")
        self._messages = self.store.conversation_messages(reply.conversation_id)
        self.reply_thumbs.show_for(self._turn_messages())
        self._set_activity(describe_reply(result))
        self.notify("Reply stopped; the text so far was saved." if stopped else "Reply saved.")
        self.refresh_conversations()
        self.conversations_changed.emit()
        self._update_actions()

    def _on_reply_failed(self, message: str) -> None:
        reply = self._reply
        if reply is None:
            return
        self._reply = None
        self.activity_row.hide_progress()
        self.transcript.remove_last()
        if reply.replacing is not None:
            self._render_transcript()  # the old answer is still saved: show it again
        self._set_activity("No reply. Your message is saved; press Regenerate to try again.")
        self.show_error(message)
        self._show_page()
        self._update_actions()

    # ---------------------------------------------------------------- state of the buttons

    def _update_actions(self) -> None:
        if not hasattr(self, "shortcuts"):
            return  # still building
        streaming = self._streaming
        model = self._model
        resource = self._resource()
        busy = not streaming and resource is not None and self.registry.is_busy(resource)
        has_text = bool(self.input_edit.toPlainText().strip())
        note = ""
        if model is None:
            note = "Add a model in Models first."
        elif busy:
            note = (
                f"{model.name} is busy with another job (Collect may be sampling from it); "
                "Send comes back when it finishes."
            )
        ready = model is not None and not streaming and not busy
        self.send_button.setEnabled(ready and has_text)
        self.send_button.setToolTip(
            note or ("Write a message first." if not has_text else "Send the message (Ctrl+Enter)")
        )
        self.regenerate_button.setEnabled(ready and self._answerable() is not False)
        self.compare_button.setEnabled(self._last_user_message() is not None)
        self.stop_button.setEnabled(streaming)
        self.shortcuts["stop"].setEnabled(streaming)
        self.note.setText(note)
        set_style_property(self.note, "busy", busy)
        # Switching conversations (or models) while a reply is written is not allowed: stop it first.
        self.conversation_panel.set_writing(streaming)
        self.model_combo.setEnabled(not streaming and self._model_count > 0)

    # ---------------------------------------------------------------- input

    @Slot()
    def _on_input_text_changed(self) -> None:
        self._update_actions()

    # ---------------------------------------------------------------- settings

    def set_sampling_settings(self, settings: SamplingSettings) -> None:
        """Use ``settings`` for the next replies (also shown in the sampling panel)."""
        self.sampling_panel.set_settings(settings)

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        # Models may have been added or removed in other views while this one was hidden.
        self.refresh_models()
        super().showEvent(event)
