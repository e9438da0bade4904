"""The Collect view: write a prompt, read two sampled answers side by side, say which is better.

Two answers stream from llama.cpp in a background job (:func:`desktop_dpo.core.sampling.sample_pair`, on
the job resource ``generate:<model id>``); the GUI never waits on a model. Which generation appears on the
left is random for every pair (a person tends to favour one side), and the verdict is translated from the
screen side to generation A or B before it is saved; ``a_shown_left`` keeps the side for later study.

Every verdict is committed to the database the moment it is given (``Store.record_pair``) and can be
undone at once: the comparison row goes and the pair comes back on screen, ready to be judged again.

Conversations: after a verdict, Continue makes the chosen answer (or the person's rewrite) the assistant's
turn. The earlier turns are shown above the prompt editor, the person writes the next user message, and
the next pair answers the whole conversation, which is the prompt saved with its verdict (training reads
it as it is). A conversation also comes from a queued prompt file or from Chat (``open_conversation``);
New conversation goes back to a single prompt. The system prompt stays with the conversation.

Keyboard (all of them work while typing in the prompt):

=================  ===================================================================================
Ctrl+Enter         sample a pair
Esc                stop sampling (at the next token)
Alt+1 / Alt+2      left / right answer is better
Alt+3 / Alt+4      tie / both bad
Alt+0              skip (saved as a skip; the prompt leaves the queue)
Ctrl+Z             undo the last verdict (while typing, Ctrl+Z first undoes the typing)
Alt+N              next prompt from the queue
Alt+C              continue the conversation with the chosen answer (after a verdict)
=================  ===================================================================================

The verdict keys use Alt because the main window's View menu owns Ctrl+1 … Ctrl+7 (two shortcuts on one
key would both be refused by Qt as ambiguous).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QBoxLayout,
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
)

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import Log, Progress
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent
from desktop_dpo.core.prompt_files import read_prompt_file
from desktop_dpo.core.store import ModelRow, PromptRow, Store
from desktop_dpo.gui import widgets
from desktop_dpo.gui.collect_pair import (
    CHOICES,
    SavedVerdict,
    ShownPair,
    Turn,
    continuation_for,
    describe_result,
    split_conversation,
    verdict_for,
)
from desktop_dpo.gui.collect_verdict_bar import CHOICE_LABELS, VERDICT_SHORTCUTS, UndoKeyFilter, VerdictBar
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.model_work_view import SingleModelView
from desktop_dpo.gui.response_pane import SIDE_NAMES, ResponsePane
from desktop_dpo.gui.sampling_settings_panel import SamplingSettingsPanel
from desktop_dpo.gui.view_messages import ActivityLine
from desktop_dpo.gui.widgets import ModelCombo, field_label, page_header, page_pill, view_shortcut
from desktop_dpo.workers.job_op import JobOp

if TYPE_CHECKING:
    # Imported when used: the rewrite dialog, the template editor and the conversation's transcript are not
    # on screen at start-up.
    from desktop_dpo.gui.chat_transcript import FittedTranscript
    from desktop_dpo.gui.response_edit_dialog import ResponseEditDialog

log = logging.getLogger(__name__)

# Choices on screen -> their key. "left"/"right" name screen sides; verdict_for() turns them into a/b.
SAMPLE_SHORTCUTS = ("Ctrl+Return", "Ctrl+Enter")
STOP_SHORTCUT = "Esc"
NEXT_PROMPT_SHORTCUT = "Alt+N"
CONTINUE_SHORTCUT = "Alt+C"
HISTORY_MAX_HEIGHT = 180  # pixels; a longer conversation scrolls in its box (the answers keep their room)
HISTORY_MIN_HEIGHT = 64
PROMPT_MAX_HEIGHT = 104  # the prompt editor's height when it holds the whole prompt
NEXT_MESSAGE_MAX_HEIGHT = 64  # under earlier turns: about three lines, the turns and answers need the room
SYSTEM_PREVIEW_CHARS = 30  # of a folded system prompt, after the toggle's name
SETTINGS_KEY = "collect/sampling"
GENERATION_SIDES = ("a", "b")  # generation index -> the name the database uses


class CollectView(SingleModelView):
    """Sample pairs, judge them, save the verdicts.

    Args:
        store: the GUI thread's database connection.
        registry: the job registry (generation runs on resource ``generate:<model id>``).
        pool: the engine pool shared with the other views (models stay loaded between pairs).
        paths: the app's folders (GGUF copies of Hugging Face models, settings).
        rng: decides which generation is shown on the left (tests pass a seeded one).

    Signals:
        status_message(str): a line for the status bar (the view also shows it in its window's status
            bar when that window is a QMainWindow).
        pairs_changed(): a verdict was saved or undone (counts should be re-read).
    """

    status_message = Signal(str)
    pairs_changed = Signal()

    PAGE = "collect"

    def __init__(self, **services: Any):
        super().__init__(**services)

        self._model: ModelRow | None = None
        self._pair: ShownPair | None = None
        self._last_saved: SavedVerdict | None = None
        self._sampling: JobOp | None = None
        self._loaded_prompt: PromptRow | None = None  # the stored prompt in the editors, if any
        self._history: list[Turn] = []  # the conversation before the prompt editor's message
        self._history_source = ""  # where that conversation came from, in words ("" when written here)
        self._continuable = False  # the last verdict can still continue the conversation
        self._continued = False  # ... and it no longer can because it did
        self._queue_count = 0
        self._sampling_text = ""
        self.edit_dialog: ResponseEditDialog | None = None

        self._build()
        self._build_shortcuts()
        self.registry.changed.connect(self._on_registry_changed)
        self.refresh_models()
        self.refresh_counts()
        self.sampling_panel.remember(self._settings, SETTINGS_KEY)
        self._show_empty_panes()
        self._update_actions()

    # ---------------------------------------------------------------- building

    def _build(self) -> None:
        self.pairs_label = page_pill("Pairs that can train: one answer chosen, or an answer you rewrote")
        self.queue_label = page_pill("Prompts waiting in the queue (Load prompts…, then Next prompt)")
        self.queue_label.setProperty("muted", True)
        # The summary wraps beside the queue's buttons in a narrow window.
        header = page_header(
            "Collect", "Write a prompt, read two answers side by side, and pick the better one.", spacing=8
        )

        card = self._build_prompt_card(header)

        # -- error banner and activity line
        self.banner = MessageBanner()
        self.activity_row = ActivityLine()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 16)
        layout.setSpacing(10)
        layout.addLayout(header)
        layout.addWidget(card)
        layout.addWidget(self.banner)
        layout.addWidget(self.activity_row)
        layout.addLayout(self._build_answers(), 1)
        layout.addWidget(self._build_verdict_bar())

    def _build_prompt_card(self, header: QHBoxLayout) -> QFrame:
        """The prompt card: model, prompt, actions, sampling settings (the queue's buttons go in ``header``)."""
        card, card_layout = widgets.card()
        self._build_model_row(card_layout)
        self._build_prompt_editors(card_layout)
        self._build_actions(card_layout, header)
        return card

    def _build_model_row(self, card_layout: QBoxLayout) -> None:

        self.model_combo = ModelCombo("The model both answers are sampled from", min_length=24)
        self.model_combo.currentIndexChanged.connect(self._on_model_combo_changed)
        self.other_model_check = QCheckBox("B from another model")
        self.other_model_check.setToolTip(
            "Sample the second answer from a different model (e.g. base against aligned)"
        )
        self.other_model_check.toggled.connect(self._on_other_model_toggled)
        self.model_b_combo = ModelCombo("The model of the second answer")
        self.model_b_combo.setVisible(False)
        self.model_b_combo.currentIndexChanged.connect(lambda _index: self._update_actions())
        model_row = QHBoxLayout()
        model_row.setSpacing(10)
        model_row.addWidget(field_label("Model"))
        model_row.addWidget(self.model_combo, 2)
        model_row.addSpacing(8)
        model_row.addWidget(self.other_model_check)
        model_row.addWidget(self.model_b_combo, 1)
        model_row.addStretch(0)
        card_layout.addLayout(model_row)

    def _build_prompt_editors(self, card_layout: QBoxLayout) -> None:

        self.system_toggle = QToolButton()
        self.system_toggle.setObjectName("systemToggle")
        self.system_toggle.setText("System prompt")
        self.system_toggle.setCheckable(True)
        self.system_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.system_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.system_toggle.setToolTip("Optional instructions given to the model before your prompt")
        self.system_toggle.toggled.connect(self._on_system_toggled)
        self.system_edit = QPlainTextEdit()
        self.system_edit.setObjectName("systemEditor")
        self.system_edit.setPlaceholderText("Optional: e.g. “You are a concise assistant.”")
        self.system_edit.setFixedHeight(58)
        self.system_edit.setTabChangesFocus(True)
        self.system_edit.setVisible(False)
        self.system_edit.textChanged.connect(self._on_prompt_text_changed)

        self.prompt_label = QLabel("Prompt")
        self.prompt_label.setObjectName("fieldLabel")
        # In a conversation it says where the conversation stands; in a narrow window it wraps.
        self.prompt_label.setWordWrap(True)
        self.prompt_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.new_conversation_button = QPushButton("New conversation")
        self.new_conversation_button.setObjectName("secondaryButton")
        self.new_conversation_button.setVisible(False)
        self.new_conversation_button.clicked.connect(self.new_conversation)
        prompt_head = QHBoxLayout()
        prompt_head.setSpacing(10)
        prompt_head.addWidget(self.prompt_label, 1)
        prompt_head.addWidget(self.new_conversation_button)
        prompt_head.addWidget(self.system_toggle)
        card_layout.addLayout(prompt_head)
        card_layout.addWidget(self.system_edit)
        # The earlier turns of a conversation go between the system prompt and the prompt editor; that
        # transcript is built with the first conversation (see history_view), not at start-up.
        self._card_layout = card_layout
        self._history_view: FittedTranscript | None = None
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setObjectName("promptEditor")
        self.prompt_edit.setPlaceholderText("Ask the model something. Ctrl+Enter samples two answers.")
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setMinimumHeight(64)
        self.prompt_edit.setMaximumHeight(PROMPT_MAX_HEIGHT)
        self.prompt_edit.textChanged.connect(self._on_prompt_text_changed)
        card_layout.addWidget(self.prompt_edit)
        undo_filter = UndoKeyFilter(self)
        self.prompt_edit.installEventFilter(undo_filter)
        self.system_edit.installEventFilter(undo_filter)

    def _build_actions(self, card_layout: QBoxLayout, header: QHBoxLayout) -> None:

        self.load_prompts_button = QPushButton("Load prompts…")
        self.load_prompts_button.setObjectName("secondaryButton")
        self.load_prompts_button.setToolTip(
            "Queue prompts from a file. Text: prompts separated by blank lines (a file without blank lines: "
            'one prompt per line). JSONL: {"prompt": "..."} or {"messages": [...]} per line.'
        )
        self.load_prompts_button.clicked.connect(self._on_load_prompts_clicked)
        self.next_prompt_button = QPushButton("Next prompt")
        self.next_prompt_button.setObjectName("secondaryButton")
        self.next_prompt_button.setToolTip(
            f"Put the next queued prompt in the editor ({NEXT_PROMPT_SHORTCUT})"
        )
        self.next_prompt_button.clicked.connect(self.next_prompt)
        self.stop_button = QPushButton(f"Stop  ({STOP_SHORTCUT})")
        self.stop_button.setObjectName("secondaryButton")
        self.stop_button.setToolTip("Stop sampling at the next token")
        self.stop_button.clicked.connect(self.stop)
        self.sample_button = QPushButton("Sample  (Ctrl+Enter)")
        self.sample_button.setObjectName("primaryButton")
        self.sample_button.setToolTip("Sample two answers to the prompt (Ctrl+Enter)")
        self.sample_button.clicked.connect(self.sample)
        # The queue's buttons sit with its count in the page header, so the card keeps its height for the
        # conversation and the answers get theirs.
        for widget in (self.queue_label, self.load_prompts_button, self.next_prompt_button, self.pairs_label):
            header.addWidget(widget, 0, Qt.AlignmentFlag.AlignTop)

        self.sampling_panel = SamplingSettingsPanel()
        # The settings' summary wraps beside the buttons rather than widening the view.
        self.sampling_panel.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.sampling_panel.summary.setWordWrap(True)
        actions = QHBoxLayout()
        actions.setSpacing(8)
        # After a verdict the next step is either a new pair (Sample) or the next turn (Continue): side by side.
        self.continue_button = QPushButton(f"Continue  ({CONTINUE_SHORTCUT})")
        self.continue_button.setObjectName("secondaryButton")
        self.continue_button.clicked.connect(self.continue_conversation)
        actions.addWidget(self.sampling_panel, 1)
        actions.addWidget(self.continue_button, 0, Qt.AlignmentFlag.AlignTop)
        actions.addWidget(self.stop_button, 0, Qt.AlignmentFlag.AlignTop)
        actions.addWidget(self.sample_button, 0, Qt.AlignmentFlag.AlignTop)
        card_layout.addLayout(actions)

    def _build_answers(self) -> QHBoxLayout:
        """The two answers, in equal panes."""
        self.panes = (ResponsePane(0), ResponsePane(1))
        answers = QHBoxLayout()
        answers.setSpacing(12)
        for pane in self.panes:
            pane.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
            pane.edit_button.clicked.connect(lambda _checked=False, side=pane.side: self.open_edit(side))
            answers.addWidget(pane, 1)
        return answers

    def _build_verdict_bar(self) -> VerdictBar:
        bar = VerdictBar()
        for choice, button in bar.buttons.items():
            button.clicked.connect(lambda _checked=False, c=choice: self.judge(c))
        bar.undo_button.clicked.connect(self.undo_last_verdict)
        self.verdict_buttons, self.feedback, self.undo_button = bar.buttons, bar.feedback, bar.undo_button
        return bar

    def _build_shortcuts(self) -> None:
        def shortcut(keys: str | QKeySequence, slot: Any) -> QShortcut:
            return view_shortcut(self, keys, slot)

        self.shortcuts: dict[str, QShortcut] = {}
        for keys in SAMPLE_SHORTCUTS:
            self.shortcuts[keys] = shortcut(keys, self.sample)
        self.shortcuts["stop"] = shortcut(STOP_SHORTCUT, self.stop)
        self.shortcuts["next"] = shortcut(NEXT_PROMPT_SHORTCUT, self.next_prompt)
        self.shortcuts["continue"] = shortcut(CONTINUE_SHORTCUT, self.continue_conversation)
        self.shortcuts["undo"] = shortcut(QKeySequence(QKeySequence.StandardKey.Undo), self.undo_last_verdict)
        for choice in CHOICES:
            self.shortcuts[choice] = shortcut(VERDICT_SHORTCUTS[choice], lambda c=choice: self.judge(c))

    # ---------------------------------------------------------------- models

    def refresh_models(self) -> None:
        """Re-read the registered models into the combo boxes (keeping the selection when it still exists)."""
        models = self.store.list_models()
        current = self._preferred_model_id()
        current_b = self.model_b_combo.model_id()
        self.model_combo.fill(models, current)
        self._model = self.model_combo.chosen(models)
        if current_b not in {m.id for m in models}:  # by default, B comes from the first other model
            current_b = next((m.id for m in models if self._model is None or m.id != self._model.id), None)
        self.model_b_combo.fill(models, current_b, placeholder=False)
        self.other_model_check.setEnabled(len(models) > 1)
        self._update_actions()

    def _model_b(self) -> ModelRow | None:
        """The model of generation B when it differs from A's, else None (one model, one context)."""
        if not self.other_model_check.isChecked():
            return None
        model_id = self.model_b_combo.currentData()
        if model_id is None or (self._model is not None and model_id == self._model.id):
            return None
        return self.store.get_model(model_id)

    @Slot(int)
    def _on_model_combo_changed(self, _index: int) -> None:
        model_id = self.model_combo.currentData()
        self._model = self.store.get_model(model_id) if model_id is not None else None
        self._update_actions()

    @Slot(bool)
    def _on_other_model_toggled(self, checked: bool) -> None:
        self.model_b_combo.setVisible(checked)
        self._update_actions()

    def _resource(self) -> str | None:
        return f"generate:{self._model.id}" if self._model is not None else None

    # ---------------------------------------------------------------- prompt

    def prompt_messages(self) -> list[dict[str, str]]:
        """The conversation the next pair answers: the system prompt, the earlier turns and the message in
        the editor (a stored prompt shown unchanged is given back exactly as stored)."""
        loaded = self._loaded_prompt
        if loaded is not None and self._editors_match(loaded):
            return [dict(m) for m in loaded.messages]
        system = self.system_edit.toPlainText().strip()
        user = self.prompt_edit.toPlainText().strip()
        head = [{"role": "system", "content": system}] if system else []
        return [*head, *(turn.message() for turn in self._history), {"role": "user", "content": user}]

    def history(self) -> list[dict[str, str]]:
        """The earlier turns of the conversation on screen (without the system prompt), oldest first."""
        return [turn.message() for turn in self._history]

    def _editors_match(self, prompt: PromptRow) -> bool:
        system, earlier, last = split_conversation(prompt.messages)
        return (
            self.prompt_edit.toPlainText().strip() == last.strip()
            and self.system_edit.toPlainText().strip() == system.strip()
            and self.history() == earlier
        )

    def set_prompt(self, prompt: str, system: str = "") -> None:
        """Put a prompt (and optional system prompt) in the editors: a single turn, no earlier ones."""
        self._loaded_prompt = None
        self._set_history([], source="")
        self._fill_editors(prompt, system)

    def _fill_editors(self, prompt: str, system: str) -> None:
        self.system_edit.setPlainText(system)
        if system and not self._history and not self.system_toggle.isChecked():
            self.system_toggle.setChecked(True)  # in a conversation it stays folded: the turns need the room
        self.prompt_edit.setPlainText(prompt)
        cursor = self.prompt_edit.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.prompt_edit.setTextCursor(cursor)

    def _show_prompt_row(self, prompt: PromptRow, *, source: str | None = None) -> None:
        system, earlier, last = split_conversation(prompt.messages)
        self._set_history(earlier, source=source)
        self._loaded_prompt = prompt
        self._fill_editors(last, system)

    def _set_history(self, messages: list[dict[str, str]], *, source: str | None) -> None:
        """Show ``messages`` as the earlier turns. Turns already shown keep their labels; ``source`` says
        where the conversation came from (None: where the shown one came from)."""
        kept = []
        for turn, message in zip(self._history, messages, strict=False):
            if turn.message() != message:
                break
            kept.append(turn)
        self._history = kept + [Turn(m["role"], m["content"]) for m in messages[len(kept) :]]
        if source is not None:
            self._history_source = source
        if not self._history:
            self._history_source = ""
        self._render_history()

    @property
    def history_view(self) -> FittedTranscript:
        """The earlier turns above the prompt editor (hidden without any; built the first time it is needed)."""
        if self._history_view is None:
            from desktop_dpo.gui.chat_transcript import FittedTranscript

            view = FittedTranscript(min_height=HISTORY_MIN_HEIGHT, max_height=HISTORY_MAX_HEIGHT)
            view.setToolTip("The conversation so far: both answers below continue it")
            view.setVisible(False)
            self._card_layout.insertWidget(self._card_layout.indexOf(self.prompt_edit), view)
            self._history_view = view
        return self._history_view

    def _render_history(self) -> None:
        if self._history or self._history_view is not None:  # no conversation yet: nothing to build
            self._fill_history_view()
        self.prompt_edit.setMaximumHeight(NEXT_MESSAGE_MAX_HEIGHT if self._history else PROMPT_MAX_HEIGHT)
        self._update_prompt_label()
        self._update_actions()

    def _fill_history_view(self) -> None:
        view = self.history_view
        view.clear_messages()
        number = 0
        for turn in self._history:
            if turn.role == "user":
                number += 1
                header = f"You · turn {number}"
            elif turn.role == "assistant":
                header = f"Assistant · turn {max(number, 1)}" + (f" · {turn.label}" if turn.label else "")
            else:
                header = turn.role.capitalize()
            view.add_message(turn.role, turn.content, header)
        view.setVisible(bool(self._history))
        view.fit_to_contents()
        view.scroll_to_end()

    def _next_turn(self) -> int:
        """The number of the turn the prompt editor's message opens."""
        return sum(1 for turn in self._history if turn.role == "user") + 1

    def _update_prompt_label(self) -> None:
        if not self._history:
            self.prompt_label.setText("Prompt")
            self.prompt_edit.setPlaceholderText("Ask the model something. Ctrl+Enter samples two answers.")
            return
        source = f" {self._history_source}" if self._history_source else ""
        self.prompt_label.setText(f"Turn {self._next_turn()} of a conversation{source}")
        self.prompt_edit.setPlaceholderText(
            "Write your next message. Ctrl+Enter samples two answers that continue the conversation."
        )

    @Slot(bool)
    def _on_system_toggled(self, shown: bool) -> None:
        self.system_edit.setVisible(shown)
        self.system_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self._update_system_toggle()

    def _update_system_toggle(self) -> None:
        """A folded system prompt still shows that it is there: its beginning follows the toggle's name."""
        text = " ".join(self.system_edit.toPlainText().split())
        if text and not self.system_toggle.isChecked():
            preview = text if len(text) <= SYSTEM_PREVIEW_CHARS else text[: SYSTEM_PREVIEW_CHARS - 1] + "…"
            self.system_toggle.setText(f"System prompt: {preview}")
            self.system_toggle.setToolTip(f"The system prompt, read before the conversation:\n{text}")
        else:
            self.system_toggle.setText("System prompt")
            self.system_toggle.setToolTip("Optional instructions given to the model before your prompt")

    @Slot()
    def _on_prompt_text_changed(self) -> None:
        if self.sender() is self.system_edit:
            self._update_system_toggle()
        self._update_actions()

    # ---------------------------------------------------------------- conversations

    def _continue_state(self) -> tuple[bool, str]:
        """Whether Continue can run now, and its tooltip (what it does, or why not)."""
        saved = self._last_saved
        if self._streaming:
            return False, "Sampling…"
        if saved is None or self._pair is not None or not self._continuable:
            if saved is not None and self._pair is None and self._continued:
                return False, "Already continued: write your next message, then Ctrl+Enter."
            if saved is not None and self._pair is None:
                return (
                    False,
                    "The conversation changed since that verdict: judge a pair in this one to continue it.",
                )
            return False, (
                "Give a verdict first: Continue then makes the answer you chose the assistant's turn, "
                "and you write the next message."
            )
        answer = continuation_for(saved.pair, saved.choice)
        if answer is None:
            if saved.choice == "skip":
                return False, "A skipped pair has no chosen answer to continue with (Ctrl+Z undoes the skip)."
            return False, (
                "Both answers were bad, so there is no answer to continue with: undo (Ctrl+Z), rewrite "
                "one with Edit…, and judge again to continue with your own."
            )
        which = {
            "your rewrite": "your rewrite",
            "a tie: the left answer": "the left answer (a tie)",
        }.get(answer[1], "the answer you chose")
        return True, (
            f"Continue the conversation ({CONTINUE_SHORTCUT}): {which} becomes the assistant's turn, and "
            "you write the next message. A tie continues with the left answer; both bad needs a rewrite."
        )

    @Slot()
    def continue_conversation(self) -> bool:
        """After a verdict: the judged prompt and the chosen answer (or the rewrite) become earlier turns,
        and the editor waits for the next user message. Returns False when there is nothing to continue
        with (the Continue button's tooltip says why)."""
        if not self._continue_state()[0]:
            return False
        saved = self._last_saved
        assert saved is not None
        answer = continuation_for(saved.pair, saved.choice)
        assert answer is not None
        text, label = answer
        _system, earlier, question = split_conversation(saved.pair.messages)
        self._set_history(earlier, source=None)  # the turns before the judged one, labels kept
        self._history += [Turn("user", question), Turn("assistant", text, label)]
        self._loaded_prompt = None
        self._continuable = False
        self._continued = True
        self.system_toggle.setChecked(False)  # it stays with the conversation, folded to one line
        if self.prompt_edit.toPlainText().strip() == question.strip():
            self.prompt_edit.clear()  # otherwise the person already started the next message: keep it
        self._render_history()
        self._show_empty_panes()
        self.feedback.setText("Continued.")
        self._set_activity(
            f"Write your message for turn {self._next_turn()}, then Ctrl+Enter samples two answers to it."
        )
        self.notify(f"The conversation goes on: write your message for turn {self._next_turn()}.")
        self.prompt_edit.setFocus()
        self._update_actions()
        return True

    def _conversation_locked(self) -> str:
        """Why the conversation cannot be replaced now ("" when it can)."""
        if self._streaming:
            return "Collect is sampling a pair: stop it (Esc) or wait, then try again."
        if self._pair is not None and self._pair.complete:
            return "Judge (or skip) the pair on screen first, then try again."
        return ""

    @Slot()
    def new_conversation(self) -> bool:
        """Forget the earlier turns: the next pair answers the editor's message alone."""
        reason = self._conversation_locked()
        if reason:
            self.notify(reason)
            return False
        self._loaded_prompt = None
        self._continuable = False
        if self._pair is not None:  # a stopped pair, which cannot be judged
            self._pair = None
            self._show_empty_panes()
        self._set_history([], source="")
        self.prompt_edit.setFocus()
        self.notify("New conversation: the next pair answers your prompt alone.")
        return True

    def open_conversation(self, messages: list[dict[str, str]], *, model: ModelRow | None = None) -> bool:
        """Put a conversation that ends with a user message in the view (e.g. from Chat): its earlier turns
        above, its last message in the editor, ready to sample. ``model``: sample from it. Returns False
        (and says why) when a pair is being sampled or waits for a verdict."""
        system, earlier, question = split_conversation(messages)
        if not question.strip():
            raise ValueError("A conversation to compare answers on must end with a user message.")
        reason = self._conversation_locked()
        if reason:
            self.show_error(f"The conversation from Chat was not opened. {reason}")
            return False
        if model is not None:
            self.set_model(model)
        self._loaded_prompt = None
        self._continuable = False
        self._pair = None
        self._set_history(earlier, source="from Chat")
        if earlier:
            self.system_toggle.setChecked(False)  # folded to one line: the turns need the room
        self._fill_editors(question, system)
        self._show_empty_panes()
        self.clear_error()
        self.feedback.clear()
        self._set_activity(
            f"From Chat: Ctrl+Enter samples two answers to your message (turn {self._next_turn()})."
        )
        self.prompt_edit.setFocus()
        self._update_actions()
        return True

    # ---------------------------------------------------------------- the prompt queue

    def load_prompt_file(self, path: str | Path) -> int:
        """Add the prompts of a .txt or .jsonl file to the queue (see ``read_prompt_file``). Returns how
        many were queued; a file with problems queues nothing and is explained in the banner."""
        path = Path(path)
        try:
            prompt_file = read_prompt_file(path)
            self.store.queue_prompts(prompt_file.prompts)
        except DesktopDpoError as exc:
            self.show_error(str(exc))
            return 0
        count = len(prompt_file.prompts)
        self.clear_error()
        self.refresh_counts()
        self.notify(
            f"Queued {count} prompt{'s' if count != 1 else ''} from {path.name} ({prompt_file.describe()})."
        )
        if not self.prompt_edit.toPlainText().strip() and self._pair is None and not self._history:
            self.next_prompt()
        return count

    @Slot()
    def _on_load_prompts_clicked(self) -> None:
        name = self._ask_prompt_file("Load prompts")
        if name:
            self.load_prompt_file(name)

    @Slot()
    def next_prompt(self) -> None:
        """Put the next queued prompt in the editors (after the one shown, if it came from the queue)."""
        if self._streaming:
            return
        queued = self.store.queued_prompts()
        self._queue_count = len(queued)
        if not queued:
            self.notify("The queue is empty. Load prompts from a file first.")
            self._update_actions()
            return
        chosen = queued[0]
        if self._loaded_prompt is not None:
            later = [p for p in queued if p.id > self._loaded_prompt.id]
            chosen = later[0] if later else queued[0]
        self._show_prompt_row(chosen, source="from the queue")
        self.prompt_edit.setFocus()
        self._update_actions()

    def refresh_counts(self) -> None:
        """Re-read the usable-pair and queue counts."""
        usable = self.store.count_usable_pairs()
        self._queue_count = len(self.store.queued_prompts())
        self.pairs_label.setText(f"{usable} usable pair{'s' if usable != 1 else ''}")
        self.queue_label.setText(f"{self._queue_count} queued")
        self.queue_label.setVisible(self._queue_count > 0)
        self._update_actions()

    # ---------------------------------------------------------------- sampling

    @property
    def _streaming(self) -> bool:
        return self._sampling is not None and self._sampling.active

    @property
    def pair(self) -> ShownPair | None:
        """The pair on screen (None after a verdict)."""
        return self._pair

    @Slot()
    def sample(self) -> bool:
        """Start sampling a pair for the prompt in the editor. Returns False when it cannot start (why is
        shown in the view)."""
        if not self.sample_button.isEnabled():
            return False
        assert self._model is not None
        from desktop_dpo.gui.template_editor import ensure_template_chosen, template_needed_message

        # The rows as stored now (a template chosen in Models since), each with a usable chat template: a
        # model that needs one chosen first opens the template editor; cancelled, nothing starts.
        model_a = ensure_template_chosen(self, self.store, self._model)
        if model_a is None:
            self.show_error(template_needed_message(self._model))
            return False
        self._model = model_a
        model_b = self._model_b()
        if model_b is not None:
            checked = ensure_template_chosen(self, self.store, model_b)
            if checked is None:
                self.show_error(template_needed_message(model_b))
                return False
            model_b = checked
        messages = self.prompt_messages()
        settings = self.sampling_panel.settings()
        pool, paths = self.pool, self.paths

        def factory(store: Store, token: Any) -> Any:
            # Here, not at the top: start-up does not import the sampling job (docs/ARCHITECTURE.md "Start-up").
            from desktop_dpo.core.sampling import record_model_info, sample_pair

            job = sample_pair(pool, model_a, model_b, paths, messages, settings, None, token)
            return record_model_info(store, job)

        self._sampling = self.start_job(
            JobOp(self.registry, factory, store=paths.db_path, owner=self)
            .resource(f"generate:{model_a.id}")
            .slots("sample")
        )
        if self._sampling is None:
            return False

        self._last_saved = None  # a new pair on screen: the previous verdict stays (fix it in Data)
        self._continuable = False
        self._pair = ShownPair(
            messages=messages,
            model_ids=(model_a.id, (model_b or model_a).id),
            a_shown_left=self._rng.random() < 0.5,
        )
        self.clear_error()
        self.feedback.clear()
        for pane in self.panes:
            pane.set_text("")
            pane.text.setPlaceholderText("")
            pane.status.setText("Waiting…")
            pane.badge.setVisible(False)
            pane.set_chosen(False)
        self._sampling_text = (
            f"Writing two answers with {model_a.name}"
            + (f" and {model_b.name}" if model_b else "")
            + "… Esc stops."
        )
        self._set_activity(self._sampling_text)
        self._update_actions()
        return True

    @Slot()
    def stop(self) -> None:
        """Stop sampling at the next token (the partial answers stay on screen, but cannot be judged)."""
        if self._sampling is not None and self._sampling.active:
            self._sampling.cancel()
            self._set_activity("Stopping…")

    def _pane_for(self, generation: int) -> ResponsePane:
        assert self._pair is not None
        return self.panes[self._pair.side_of(generation)]

    def _on_sample_event(self, event: object) -> None:
        if self._pair is None:
            return
        pair = self._pair
        if isinstance(event, TokenEvent):
            if not any(pair.texts) and self._sampling_text:
                self._set_activity(self._sampling_text)  # past "Loading …": the answers are coming
            pair.texts[event.seq] += event.text
            pane = self._pane_for(event.seq)
            if event.text:
                pane.append(event.text)
            pane.status.setText(f"Writing… {event.n_tokens} tokens")
        elif isinstance(event, ResponseFinished):
            self._finish_generation(event.seq, event.result)
        elif isinstance(event, Progress):
            self.activity_row.show_progress(event.fraction)
            if event.message:
                self._set_activity(event.message)
        elif isinstance(event, Log):
            self.show_log(event.message, event.level)

    def _finish_generation(self, generation: int, result: GenerationResult) -> None:
        assert self._pair is not None
        self._pair.results[generation] = result
        self._pair.texts[generation] = result.text
        pane = self._pane_for(generation)
        if pane.shown_text() != result.text:  # the result is the record: show exactly what is saved
            pane.set_text(result.text)
        pane.status.setText(describe_result(result))
        self.activity_row.hide_progress()

    def _on_sample_succeeded(self, results: object) -> None:
        if self._pair is not None and isinstance(results, tuple):
            for generation, result in enumerate(results):
                if self._pair.results[generation] is None:
                    self._finish_generation(generation, result)
        self.activity_row.hide_progress()
        if self._pair is not None and self._pair.complete:
            self._set_activity(
                "Which answer is better? Alt+1 left · Alt+2 right · Alt+3 tie · Alt+4 both bad."
            )
        self._update_actions()

    def _on_sample_failed(self, message: str) -> None:
        self._set_activity("")
        self.activity_row.hide_progress()
        for pane in self.panes:
            if not pane.status.text() or pane.status.text().startswith(("Waiting", "Writing")):
                pane.status.setText("Failed")
        self.show_error(message)
        self._update_actions()

    def _on_sample_cancelled(self) -> None:
        self.activity_row.hide_progress()
        self._set_activity("Stopped. Sample again for a pair you can judge.")
        for pane in self.panes:
            pane.status.setText("Stopped")
        self.notify("Sampling stopped.")
        self._update_actions()

    @Slot()
    def _on_registry_changed(self) -> None:
        self._update_actions()

    # ---------------------------------------------------------------- judging

    @Slot(str)
    def judge(self, choice: str) -> int | None:
        """Save the verdict for the pair on screen (``choice`` names a screen side or tie/both_bad/skip).
        Returns the comparison id, or None when there is no complete pair to judge."""
        pair = self._pair
        if pair is None or self._streaming or not pair.complete:
            return None
        verdict = verdict_for(choice, pair.a_shown_left)
        edited_text = pair.edit[1] if pair.edit else None
        edited_side = GENERATION_SIDES[pair.edit[0]] if pair.edit else None
        from desktop_dpo.core.sampling import generation_meta  # not at start-up (see sample)

        results = [r for r in pair.results if r is not None]
        try:
            with self.store.atomic():
                if pair.generation_ids is not None:  # brought back by undo: its generations are stored
                    prompt_id = self.store.add_prompt(pair.messages, source="collect")
                    comparison_id = self.store.add_comparison(
                        prompt_id=prompt_id,
                        generation_a_id=pair.generation_ids[0],
                        generation_b_id=pair.generation_ids[1],
                        verdict=verdict,
                        a_shown_left=pair.a_shown_left,
                        edited_text=edited_text,
                        edited_side=edited_side,
                    )
                else:
                    comparison_id = self.store.record_pair(
                        messages=pair.messages,
                        text_a=results[0].text,
                        text_b=results[1].text,
                        verdict=verdict,
                        model_a_id=pair.model_ids[0],
                        model_b_id=pair.model_ids[1],
                        a_shown_left=pair.a_shown_left,
                        generation_meta_a=generation_meta(results[0]),
                        generation_meta_b=generation_meta(results[1]),
                        edited_text=edited_text,
                        edited_side=edited_side,
                    )
                comparison = self.store.get_comparison(comparison_id)
                assert comparison is not None
                prompt_id = comparison.prompt_id
                was_queued = any(p.id == prompt_id for p in self.store.queued_prompts())
                if was_queued:  # a judged (or skipped) prompt leaves the queue
                    self.store.dequeue_prompt(prompt_id)
        except DesktopDpoError as exc:
            self.show_error(f"The verdict was not saved: {exc}")
            return None

        saved_pair = replace(pair, generation_ids=(comparison.generation_a_id, comparison.generation_b_id))
        self._last_saved = SavedVerdict(comparison_id, prompt_id, saved_pair, choice, was_queued)
        self._continuable, self._continued = True, False
        self._pair = None
        # Ctrl+Z now undoes this verdict rather than the typing that led to it.
        self.prompt_edit.document().clearUndoRedoStacks()
        self.system_edit.document().clearUndoRedoStacks()
        chosen_side = {"left": 0, "right": 1}.get(choice)
        for pane in self.panes:
            pane.set_chosen(pane.side == chosen_side)
            if chosen_side is not None:
                pane.status.setText("✓ Preferred" if pane.side == chosen_side else "")
        label = CHOICE_LABELS[choice]
        self.refresh_counts()
        self.feedback.setText(f"Saved: {label}.")
        self._set_activity(
            "Saved. Ctrl+Enter samples another pair"
            + (f", {NEXT_PROMPT_SHORTCUT} takes the next prompt" if self._queue_count else "")
            + (f", {CONTINUE_SHORTCUT} continues the conversation" if self._continue_state()[0] else "")
            + "; Ctrl+Z undoes the verdict."
        )
        self.notify(f"Saved: {label}.")
        self.pairs_changed.emit()
        return comparison_id

    @Slot()
    def undo_last_verdict(self) -> bool:
        """Take back the last verdict: its comparison is removed and the pair is back on screen."""
        saved = self._last_saved
        if saved is None or self._pair is not None or self._streaming:
            return False
        try:
            with self.store.atomic():
                self.store.delete_comparison_for_undo(saved.comparison_id)
                if saved.was_queued:
                    self.store.add_prompt(saved.pair.messages, queued=True)
            prompt = self.store.get_prompt(saved.prompt_id)
        except DesktopDpoError as exc:
            self.show_error(f"The verdict could not be undone: {exc}")
            return False
        self._last_saved = None
        self._continuable = False
        self._pair = saved.pair
        if prompt is not None:
            self._show_prompt_row(prompt)  # the conversation as it was when the pair was judged
        self._show_pair(saved.pair)
        self.feedback.setText("Verdict undone.")
        self._set_activity("Judge the pair again.")
        self.notify(f"Undid the verdict “{CHOICE_LABELS[saved.choice]}”.")
        self.refresh_counts()
        self.pairs_changed.emit()
        return True

    def _show_pair(self, pair: ShownPair) -> None:
        for side, pane in enumerate(self.panes):
            generation = pair.generation_on(side)
            result = pair.results[generation]
            rewritten = pair.edit is not None and pair.edit[0] == generation
            pane.set_text(pair.edit[1] if rewritten and pair.edit else pair.texts[generation])
            pane.badge.setVisible(rewritten)
            pane.status.setText(describe_result(result) if result is not None else "")
            pane.set_chosen(False)

    def _show_empty_panes(self) -> None:
        for pane in self.panes:
            pane.set_text("")
            pane.status.clear()
            pane.badge.setVisible(False)
            pane.set_chosen(False)
        what = "your next message" if self._history else "your prompt"
        self.panes[0].text.setPlaceholderText(f"Two answers to {what} appear here, side by side.")
        self.panes[1].text.setPlaceholderText("Which side shows which sample is random for every pair.")

    # ---------------------------------------------------------------- rewriting an answer

    def open_edit(self, side: int) -> ResponseEditDialog | None:
        """Open the rewrite dialog for screen side ``side`` (0 left, 1 right); non-blocking."""
        from desktop_dpo.gui.response_edit_dialog import ResponseEditDialog

        pair = self._pair
        if pair is None or self._streaming or not pair.complete:
            return None
        generation = pair.generation_on(side)
        original = pair.texts[generation]
        current = pair.edit[1] if pair.edit and pair.edit[0] == generation else original
        dialog = ResponseEditDialog(SIDE_NAMES[side], original, current, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._on_edit_accepted(pair, generation, dialog.text()))
        dialog.finished.connect(lambda _result: setattr(self, "edit_dialog", None))
        self.edit_dialog = dialog
        dialog.open()
        return dialog

    def _on_edit_accepted(self, pair: ShownPair, generation: int, text: str) -> None:
        if pair is not self._pair:
            return  # the pair changed while the dialog was open
        if text.strip() == pair.texts[generation].strip() or not text.strip():
            if pair.edit is not None and pair.edit[0] == generation:
                pair.edit = None
        else:
            # One rewrite per pair: rewriting the other side replaces an earlier rewrite.
            pair.edit = (generation, text)
        self._show_pair(pair)
        if pair.edit is not None:
            self._set_activity("Rewrite kept: now give your verdict; it is saved with the rewrite.")

    # ---------------------------------------------------------------- state of the buttons

    def _update_actions(self) -> None:
        if not hasattr(self, "verdict_buttons"):
            return  # still building
        streaming = self._streaming
        resource = self._resource()
        model_b = self._model_b() if self.other_model_check.isChecked() else None
        busy = resource is not None and self.registry.is_busy(resource)
        busy_b = model_b is not None and self.registry.is_busy(f"generate:{model_b.id}")
        has_prompt = bool(self.prompt_edit.toPlainText().strip())
        reason = ""
        if self._model is None:
            reason = "Add a model in Models first."
        elif streaming:
            reason = "Sampling…"
        elif busy or busy_b:
            reason = "The model is busy with another job; wait for it to finish."
        elif not has_prompt:
            reason = "Write your next message first." if self._history else "Write a prompt first."
        self.sample_button.setEnabled(not reason)
        self.sample_button.setToolTip(reason or "Sample two answers to the prompt (Ctrl+Enter)")
        self.stop_button.setEnabled(streaming)
        judgeable = self._pair is not None and not streaming and self._pair.complete
        for button in self.verdict_buttons.values():
            button.setEnabled(judgeable)
        for pane in self.panes:
            pane.edit_button.setEnabled(judgeable)
        self.undo_button.setEnabled(self._last_saved is not None and self._pair is None and not streaming)
        can_continue, continue_tip = self._continue_state()
        self.continue_button.setEnabled(can_continue)
        self.continue_button.setToolTip(continue_tip)
        self.new_conversation_button.setVisible(bool(self._history))
        locked = self._conversation_locked()
        self.new_conversation_button.setEnabled(not locked)
        if locked:
            self.new_conversation_button.setToolTip(locked)
        else:
            self.new_conversation_button.setToolTip(
                "Forget the earlier turns: the next pair answers your message alone (the text you are "
                "writing and the system prompt stay)"
            )
        self.next_prompt_button.setEnabled(self._queue_count > 0 and not streaming)
        self.next_prompt_button.setText(
            f"Next prompt ({self._queue_count})" if self._queue_count else "Next prompt"
        )
        self.model_combo.setEnabled(not streaming)
        self.model_b_combo.setEnabled(not streaming)
        self.other_model_check.setEnabled(not streaming and self.model_b_combo.count() > 1)

    # ---------------------------------------------------------------- settings

    def set_sampling_settings(self, settings: SamplingSettings) -> None:
        """Use ``settings`` for the next pairs (also shown in the sampling panel)."""
        self.sampling_panel.set_settings(settings)

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        # Models and pairs may have changed in other views while this one was hidden.
        self.refresh_models()
        self.refresh_counts()
        super().showEvent(event)
