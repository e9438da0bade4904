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

The verdict keys use Alt because the main window's View menu owns Ctrl+1 … Ctrl+8 (two shortcuts on one
key would both be refused by Qt as ambiguous).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import QBoxLayout, QCheckBox, QFrame, QHBoxLayout, QSizePolicy, QVBoxLayout

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.dpo.pair_counts import PAIRS_EXPLAINED, store_pair_counts, training_text, usable_text
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent
from desktop_dpo.core.prompt_files import read_prompt_file
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.core.wording import plural
from desktop_dpo.gui import widgets
from desktop_dpo.gui.collect_own_answer import OwnAnswer
from desktop_dpo.gui.collect_pair import (
    CHOICES,
    CONTINUE_SHORTCUT,
    SavedVerdict,
    ShownPair,
    continuation_for,
    continue_state,
    describe_result,
    split_conversation,
    verdict_for,  # noqa: F401 (imported from here too)
)
from desktop_dpo.gui.collect_prompt_editor import CollectPromptEditor
from desktop_dpo.gui.collect_reask import Reasker
from desktop_dpo.gui.collect_reveal import Reveal
from desktop_dpo.gui.collect_selection import PairSelection
from desktop_dpo.gui.collect_verdict_bar import CHOICE_LABELS, VERDICT_SHORTCUTS, VerdictBar, undo_keys
from desktop_dpo.gui.collect_verdicts import save_verdict, undo_verdict
from desktop_dpo.gui.model_work_view import STOP_SHORTCUT, SingleModelView
from desktop_dpo.gui.response_pane import SIDE_NAMES, ResponsePane
from desktop_dpo.gui.sampling_settings_panel import SamplingSettingsPanel
from desktop_dpo.gui.widgets import ModelCombo, PageHeader, field_label, page_pill, view_shortcut

if TYPE_CHECKING:
    # Imported when used: the rewrite dialog, the template editor and the conversation's transcript are not
    # on screen at start-up.
    from desktop_dpo.gui.chat_transcript import FittedTranscript
    from desktop_dpo.gui.response_edit_dialog import ResponseEditDialog

log = logging.getLogger(__name__)

# Choices on screen -> their key. "left"/"right" name screen sides; verdict_for() turns them into a/b.
SAMPLE_SHORTCUTS = ("Ctrl+Return", "Ctrl+Enter")
NEXT_PROMPT_SHORTCUT = "Alt+N"
SETTINGS_KEY = "collect/sampling"
SAMPLE_TIP = "Sample two answers to the prompt (Ctrl+Enter)"
LOAD_PROMPTS_TIP = (
    "Queue prompts from a file. Text: prompts separated by blank lines (a file without blank lines: one "
    'prompt per line). JSONL: {"prompt": "..."} or {"messages": [...]} per line.'
)


class CollectView(SingleModelView):
    """Sample pairs, judge them, save the verdicts.

    Takes the services of :class:`~desktop_dpo.gui.model_work_view.ModelWorkView` (models stay loaded between
    pairs); its ``rng`` decides which generation is shown on the left.

    Signals:
        status_message(str): a line for the status bar (the view also shows it in its window's status
            bar when that window is a QMainWindow).
        pairs_changed(): a verdict was saved or undone (counts should be re-read).
        pair_started(): a pair is being sampled (what sits above the view may fold to give the answers room).
    """

    status_message = Signal(str)
    pairs_changed = Signal()
    pair_started = Signal()

    PAGE = "collect"

    def __init__(self, **services: Any):
        super().__init__(**services)

        self._model: ModelRow | None = None
        self._pair: ShownPair | None = None
        self.reasker = Reasker()  # now and then an earlier pair again, sides swapped (collect_reask.py)
        self.reveal = Reveal(self)  # ... its stored answers written out as new ones are (collect_reveal.py)
        self.reveal.event.connect(self._on_sample_event)
        # A selected repeat is then compared as a chosen pair is (collect_selection.py); any other is done.
        self.reveal.finished.connect(
            lambda: self.selection.repeat_written() or self._on_sample_succeeded(None)
        )
        self.reveal.stopped.connect(self._on_repeat_stopped)
        self.selection = PairSelection(self)  # 4 answers, the 2 that teach the most shown, and why
        self._last_saved: SavedVerdict | None = None
        self._continuable = False  # the last verdict can still continue the conversation
        self._continued = False  # ... and it no longer can because it did
        self._queue_count = 0
        self._sampling_text = ""
        self.edit_dialog: ResponseEditDialog | None = None

        self._build()
        self._build_shortcuts()
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
        header = PageHeader(
            "Collect", "Write a prompt, read two answers side by side, and pick the better one.", spacing=8
        )

        layout = self._page_layout(header, self._build_prompt_card(header))
        layout.addLayout(self._build_answers(), 1)
        self.verdict_bar = self._build_verdict_bar()
        layout.addWidget(self.verdict_bar)

    def _build_prompt_card(self, header: PageHeader) -> QFrame:
        """The prompt card: model, prompt, actions, sampling settings (the queue's buttons go in ``header``)."""
        card, card_layout = widgets.card()
        self._build_model_row(card_layout)
        editor = self.prompt_editor = CollectPromptEditor()
        editor.changed.connect(self._update_actions)
        editor.new_conversation_button.clicked.connect(self.new_conversation)
        # The editor's widgets, under the names the view has always given them.
        self.prompt_edit, self.system_edit = editor.prompt_edit, editor.system_edit
        self.system_toggle, self.prompt_label = editor.system_toggle, editor.prompt_label
        self.new_conversation_button = editor.new_conversation_button
        card_layout.addWidget(editor)
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

    def _build_actions(self, card_layout: QBoxLayout, header: PageHeader) -> None:

        self.load_prompts_button = widgets.button(
            "Load prompts…", self._on_load_prompts_clicked, tooltip=LOAD_PROMPTS_TIP
        )
        next_tip = f"Put the next queued prompt in the editor ({NEXT_PROMPT_SHORTCUT})"
        self.next_prompt_button = widgets.button("Next prompt", self.next_prompt, tooltip=next_tip)
        stop_tip = "Stop sampling at the next token"
        self.stop_button = widgets.button(f"Stop  ({STOP_SHORTCUT})", self.stop, tooltip=stop_tip)
        self.sample_button = widgets.button(
            "Sample  (Ctrl+Enter)", self.sample, tooltip=SAMPLE_TIP, name="primaryButton"
        )
        # The queue's buttons sit with its count in the page header, so the card keeps its height for the
        # conversation and the answers get theirs.
        self.own_answer = OwnAnswer(self)  # "Write my own answer…" (collect_own_answer.py)
        queue = (self.queue_label, self.load_prompts_button, self.next_prompt_button)
        for widget in (*queue, self.own_answer.button, self.pairs_label):
            header.add_action(widget)

        self.sampling_panel = SamplingSettingsPanel()
        # The settings' summary wraps beside the buttons rather than widening the view.
        self.sampling_panel.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.sampling_panel.summary.setWordWrap(True)
        self.sampling_panel.add_option(self.selection.option)
        # After a verdict the next step is either a new pair (Sample) or the next turn (Continue): side by side.
        self.continue_button = widgets.button(f"Continue  ({CONTINUE_SHORTCUT})", self.continue_conversation)
        buttons = (self.continue_button, self.stop_button, self.sample_button)
        card_layout.addLayout(self._actions_row(self.sampling_panel, *buttons, top=True))

    def _build_answers(self) -> QVBoxLayout:
        """The two answers, in equal panes, and close under them why this pair (hidden unless it was chosen
        from several: collect_selection.py), which takes little of the answers' room."""
        self.panes = (ResponsePane(0), ResponsePane(1))
        answers = QHBoxLayout()
        answers.setSpacing(12)
        for pane in self.panes:
            pane.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
            pane.edit_button.clicked.connect(lambda _checked=False, side=pane.side: self.open_edit(side))
            answers.addWidget(pane, 1)
        return widgets.vbox((answers, 1), self.selection.line, margins=(0, 0, 0, 0), spacing=2)

    def _build_verdict_bar(self) -> VerdictBar:
        bar = VerdictBar()
        for choice, button in bar.buttons.items():
            button.clicked.connect(lambda _checked=False, c=choice: self.judge(c))
        bar.undo_button.clicked.connect(self.undo_last_verdict)
        self.verdict_buttons, self.feedback, self.undo_button = bar.buttons, bar.feedback, bar.undo_button
        return bar

    def _build_shortcuts(self) -> None:
        def shortcut(keys: str | list[QKeySequence], slot: Any) -> QShortcut:
            return view_shortcut(self, keys, slot)

        self.shortcuts: dict[str, QShortcut] = {}
        for keys in SAMPLE_SHORTCUTS:  # Return and the keypad's Enter
            self.shortcuts[keys] = shortcut(keys, self.sample)
        self.shortcuts["stop"] = shortcut(STOP_SHORTCUT, self.stop)
        self.shortcuts["next"] = shortcut(NEXT_PROMPT_SHORTCUT, self.next_prompt)
        self.shortcuts["continue"] = shortcut(CONTINUE_SHORTCUT, self.continue_conversation)
        # Every Undo key of the platform (Ctrl+Z where it has none), as UndoKeyFilter lets through.
        self.shortcuts["undo"] = shortcut(undo_keys(), self.undo_last_verdict)
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
        self.selection.release()  # the last run's model judged the previous model's answers
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
        return self.prompt_editor.messages()

    def history(self) -> list[dict[str, str]]:
        """The earlier turns of the conversation on screen (without the system prompt), oldest first."""
        return self.prompt_editor.history()

    def set_prompt(self, prompt: str, system: str = "") -> None:
        """Put a prompt (and optional system prompt) in the editors: a single turn, no earlier ones."""
        self.prompt_editor.set_prompt(prompt, system)

    @property
    def history_view(self) -> FittedTranscript:
        """The earlier turns above the prompt editor (hidden without any; built the first time it is needed)."""
        return self.prompt_editor.history_view

    # ---------------------------------------------------------------- conversations

    def _continue_state(self) -> tuple[bool, str]:
        """Whether Continue can run now, and its tooltip (what it does, or why not)."""
        on_screen = self._pair is not None
        return continue_state(
            self._last_saved, self._streaming, on_screen, self._continuable, self._continued
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
        self._continuable = False
        self._continued = True
        self.prompt_editor.continue_with(earlier, question, text, label)
        self._show_empty_panes()
        self.feedback.setText("Continued.")
        turn = self.prompt_editor.next_turn()
        self._set_activity(f"Write your message for turn {turn}, then Ctrl+Enter samples two answers to it.")
        self.notify(f"The conversation goes on: write your message for turn {turn}.")
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
        self._continuable = False
        if self._pair is not None:  # a stopped pair, which cannot be judged
            self._pair = None
            self._show_empty_panes()
        self.prompt_editor.forget_history()
        self.prompt_edit.setFocus()
        self.notify("New conversation: the next pair answers your prompt alone.")
        return True

    def open_conversation(self, messages: list[dict[str, str]], *, model: ModelRow | None = None) -> bool:
        """Put a conversation that ends with a user message in the view (e.g. from Chat): its earlier turns
        above, its last message in the editor, ready to sample. ``model``: sample from it. Returns False
        (and says why) when a pair is being sampled or waits for a verdict."""
        _system, earlier, question = split_conversation(messages)
        if not question.strip():
            raise ValueError("A conversation to compare answers on must end with a user message.")
        reason = self._conversation_locked()
        if reason:
            self.show_error(f"The conversation from Chat was not opened. {reason}")
            return False
        if model is not None:
            self.set_model(model)
        self._continuable = False
        self._pair = None
        self.prompt_editor.show_conversation(messages, source="from Chat")
        if earlier:
            self.system_toggle.setChecked(False)  # folded to one line: the turns need the room
        self._show_empty_panes()
        self.clear_error()
        self.feedback.clear()
        turn = self.prompt_editor.next_turn()
        self._set_activity(f"From Chat: Ctrl+Enter samples two answers to your message (turn {turn}).")
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
        if not self.prompt_editor.has_message() and self._pair is None and not self.prompt_editor.turns:
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
        chosen, shown = queued[0], self.prompt_editor.loaded
        if shown is not None:
            later = [p for p in queued if p.id > shown.id]
            chosen = later[0] if later else queued[0]
        self.prompt_editor.show_conversation(chosen.messages, source="from the queue", stored=chosen)
        self.prompt_edit.setFocus()
        self._update_actions()

    def refresh_counts(self) -> None:
        """Re-read the usable-pair and queue counts."""
        counts = store_pair_counts(self.store)
        self._queue_count = len(self.store.queued_prompts())
        self.pairs_label.setText(usable_text(counts.usable))
        self.pairs_label.setToolTip(f"{training_text(counts)}\n\n{PAIRS_EXPLAINED}")
        self.queue_label.setText(f"{self._queue_count} queued")
        self.queue_label.setVisible(self._queue_count > 0)
        self._update_actions()

    # ---------------------------------------------------------------- sampling

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
        # The rows as stored now (a template chosen in Models since), each with a usable chat template.
        model_a = self._with_template(self._model)
        if model_a is None:
            return False
        self._model = model_a
        model_b = self._model_b()
        if model_b is not None:
            model_b = self._with_template(model_b)
            if model_b is None:
                return False
        also = f" and {model_b.name}" if model_b else ""
        # 4 answers, 2 shown (collect_selection.py); if not, a line that may say why the 2 come as they are
        select, plain_line = self.selection.applies(model_a, model_b)
        writing = f"Writing two answers with {model_a.name}{also}… Esc stops."
        writing = self.selection.writing_line(model_a) if select else writing
        if (repeat := self.reasker.repeat_now(self.store, model_a.id, self.prompt_editor)) is not None:
            repeat.why = plain_line
            return self._show_repeat(repeat, writing, select)
        messages = self.prompt_messages()
        settings = self.sampling_panel.settings()
        pool, paths = self.pool, self.paths

        def factory(store: Store, token: Any) -> Any:
            # Here, not at the top: start-up does not import the sampling job (docs/ARCHITECTURE.md "Start-up").
            from desktop_dpo.core.sampling import record_model_info, sample_pair

            job = sample_pair(pool, model_a, model_b, paths, messages, settings, None, token)
            return record_model_info(store, job)

        if select:
            started = self.selection.sample(model_a, messages, settings)
        else:
            started = self._start_generation(factory, model_a, "sample")
        if not started:
            return False
        sides = self._rng.random() < 0.5
        pair = ShownPair(messages, (model_a.id, (model_b or model_a).id), sides, why=plain_line)
        return self._begin_pair(pair, writing, select)

    def _begin_pair(self, pair: ShownPair, writing: str, selected: bool) -> bool:
        """``pair`` on screen, its answers on their way: empty panes, "Waiting…", and ``writing`` below."""
        # A new pair on screen: the previous verdict stays (fix it in Data), and can no longer be undone.
        self._last_saved, self._continuable, self._pair = None, False, pair
        self.clear_error()
        self.feedback.clear()
        for pane in self.panes:
            pane.set_text("")
            pane.text.setPlaceholderText("")
            pane.status.setText("Waiting…")
            pane.badge.setVisible(False)
            pane.set_chosen(False)
        self.selection.begin(pair, selected)
        self._sampling_text = writing
        self._set_activity(writing)
        self._update_actions()
        self.pair_started.emit()
        self._bring_into_view(self.verdict_bar)  # a short window: the answers and the verdicts come up
        return True

    def _show_repeat(self, pair: ShownPair, writing: str, selected: bool) -> bool:
        """An earlier pair again, sides swapped, written out as a new pair is, at the pace of the last one
        (collect_reveal.py; ``selected``: as a pair chosen from several is): its panes and buttons go as
        they do while sampling, and nothing says so."""
        stored = [result for result in pair.results if result is not None]
        pair.texts, pair.results = ["", ""], [None, None]  # filled as the answers come, as when sampled
        if selected:
            self.selection.show_repeat(stored)
        else:
            self.reveal.start(stored)
        return self._begin_pair(pair, writing, selected)

    def _on_repeat_stopped(self) -> None:
        """Stop while a repeat is written: as a stopped pair, and the person's own prompt is back."""
        self.reasker.restore(self.prompt_editor)
        self._on_sample_cancelled()

    @property
    def _streaming(self) -> bool:
        """A pair is being written: by a sampling job, or a repeat played back (``reveal``)."""
        return super()._streaming or self.reveal.active

    @Slot()
    def stop(self) -> None:
        """Stop writing the pair at the next token (a repeat's at once)."""
        if self.reveal.active:
            self.reveal.stop()
        else:
            super().stop()

    def _pane_for(self, generation: int) -> ResponsePane:
        assert self._pair is not None
        return self.panes[self._pair.side_of(generation)]

    def _on_sample_event(self, event: object) -> None:
        if self._pair is None:
            return
        if self.selection.active:  # several answers written: progress only, then the two chosen
            self.selection.on_event(event)
            return
        pair = self._pair
        if isinstance(event, TokenEvent):
            if not any(pair.texts) and self._sampling_text:
                self._set_activity(self._sampling_text)  # past "Loading …": the answers are coming
            pair.texts[event.seq] += event.text
            pane = self._pane_for(event.seq)
            if event.text:
                pane.append(event.text)
            pane.status.setText(f"Writing… {plural(event.n_tokens, 'token')}")
        elif isinstance(event, ResponseFinished):
            self._finish_generation(event.seq, event.result)
        else:
            self.show_job_progress(event)

    def _finish_generation(self, generation: int, result: GenerationResult) -> None:
        assert self._pair is not None
        if self._pair.repeat_of is None:
            self.reveal.pace.observe(result)  # the pace a repeat is written at
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
        """After Stop: the partial answers stay on screen, but cannot be judged."""
        self.activity_row.hide_progress()
        self._set_activity("Stopped. Sample again for a pair you can judge.")
        for pane in self.panes:
            pane.status.setText("Stopped")
        self.notify("Sampling stopped.")
        self._update_actions()

    # ---------------------------------------------------------------- judging

    @Slot(str)
    def judge(self, choice: str) -> int | None:
        """Save the verdict for the pair on screen (``choice`` names a screen side or tie/both_bad/skip).
        Returns the comparison id, or None when there is no complete pair to judge."""
        pair = self._pair
        if pair is None or self._streaming or not pair.complete:
            return None
        try:
            self._last_saved = save_verdict(self.store, pair, choice)
        except DesktopDpoError as exc:
            self.show_error(f"The verdict was not saved: {exc}")
            return None
        self._continuable, self._continued = pair.repeat_of is None, False
        self._pair = None
        if pair.repeat_of is not None:
            self.reasker.restore(self.prompt_editor)  # the person's own prompt back in the editor
        self.prompt_editor.clear_undo()  # Ctrl+Z now undoes this verdict rather than the typing before it
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
        return self._last_saved.comparison_id

    @Slot()
    def undo_last_verdict(self) -> bool:
        """Take back the last verdict: its comparison is removed and the pair is back on screen."""
        saved = self._last_saved
        if saved is None or self._pair is not None or self._streaming:
            return False
        try:
            prompt = undo_verdict(self.store, saved)
        except DesktopDpoError as exc:
            self.show_error(f"The verdict could not be undone: {exc}")
            return False
        self._last_saved = None
        self._continuable = False
        self._pair = saved.pair
        if prompt is not None:
            # The conversation as it was when the pair was judged.
            self.prompt_editor.show_conversation(prompt.messages, source=None, stored=prompt)
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
        self.selection.show(pair)

    def _show_empty_panes(self) -> None:
        for pane in self.panes:
            pane.set_text("")
            pane.status.clear()
            pane.badge.setVisible(False)
            pane.set_chosen(False)
        self.selection.show(None)
        what = "your next message" if self.prompt_editor.turns else "your prompt"
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
        dialog = ResponseEditDialog(SIDE_NAMES[side], original, current, pair.messages, self)
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
        has_prompt = self.prompt_editor.has_message()
        reason = ""
        if self._model is None:
            reason = "Add a model in Models first."
        elif streaming:
            reason = "Sampling…"
        elif busy or busy_b:
            reason = "The model is busy with another job; wait for it to finish."
        elif not has_prompt:
            reason = "Write your next message first." if self.prompt_editor.turns else "Write a prompt first."
        self.sample_button.setEnabled(not reason)
        self.sample_button.setToolTip(reason or SAMPLE_TIP)
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
        self.prompt_editor.show_locked(self._conversation_locked())
        # While a pair is on screen the prompt shrinks to a couple of lines: the answers get the room.
        self.prompt_editor.set_compact(self._pair is not None)
        self.next_prompt_button.setEnabled(self._queue_count > 0 and not streaming)
        self.next_prompt_button.setText(
            f"Next prompt ({self._queue_count})" if self._queue_count else "Next prompt"
        )
        self.model_combo.setEnabled(not streaming)
        self.model_b_combo.setEnabled(not streaming)
        self.other_model_check.setEnabled(not streaming and self.model_b_combo.count() > 1)
        self.own_answer.update_enabled()

    # ---------------------------------------------------------------- settings

    def set_sampling_settings(self, settings: SamplingSettings) -> None:
        """Use ``settings`` for the next pairs (also shown in the sampling panel)."""
        self.sampling_panel.set_settings(settings)

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        # Models and pairs may have changed in other views while this one was hidden.
        self.refresh_models()
        self.refresh_counts()
        super().showEvent(event)
