"""The Evaluate view: is the aligned model really better than its base? Judge them blind, side by side.

"Next prompt" takes the next evaluation prompt (held out from training, or never trained on:
:func:`desktop_dpo.core.evaluate.evaluation_prompts`) and has both models answer it with the same seed and
settings (:func:`~desktop_dpo.core.evaluate.sample_evaluation_pair`, on the job resource
``generate:<aligned model id>``). Which model appears on the left is random for every prompt, and nothing
on screen says which is which until the vote: not the pane titles, and not the order the answers arrive in
(the base model answers first, so both answers are shown only once both are complete; meanwhile both
status lines count the tokens of the first and the second answer). After the vote the panes say which model
wrote them, and the vote is stored as "aligned", "base", "tie" or "both bad" (``Store.add_evaluation_vote``,
with the side the aligned answer was shown on). The sampling settings are Collect's until the person
changes them here (then Evaluate keeps its own, and says when they differ from Collect's).

The summary under the answers counts the votes of this pair of models at these settings, with the 95%
Wilson interval of the aligned model's win rate; ties and "both bad" are counted apart.

Keyboard (anywhere in the view):

=================  ===================================================================================
Alt+N              next prompt: sample both answers
Esc                stop sampling
Alt+1 / Alt+2      left / right answer is better
Alt+3 / Alt+4      tie / both bad
=================  ===================================================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QShortcut, QShowEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QSizePolicy

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.evaluate import (
    ALIGNED_SEQ,
    BASE_SEQ,
    PERSON,
    EvaluationSummary,
    add_evaluation_prompts,
    check_comparable,
    comparable_base,
    default_models,
    evaluation_prompts,
    evaluation_settings,
    evaluation_summary,
    sample_evaluation_pair,
)
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent, draw_seed
from desktop_dpo.core.sampling import record_model_info
from desktop_dpo.core.store import EvaluationRow, ModelRow, PromptRow, Store
from desktop_dpo.core.wording import plural
from desktop_dpo.gui import widgets
from desktop_dpo.gui.choice_bar import ChoiceBar
from desktop_dpo.gui.collect_view import SETTINGS_KEY as COLLECT_SETTINGS_KEY
from desktop_dpo.gui.model_work_view import STOP_SHORTCUT, ModelWorkView
from desktop_dpo.gui.response_pane import SIDE_NAMES, ResponsePane
from desktop_dpo.gui.sampling_settings_panel import (
    SamplingSettingsPanel,
    save_sampling_settings,
    saved_sampling_settings,
)
from desktop_dpo.gui.widgets import (
    ModelCombo,
    PageHeader,
    card_separator,
    field_label,
    page_pill,
    set_style_property,
    view_shortcut,
)

log = logging.getLogger(__name__)

CHOICES = ("left", "right", "tie", "both_bad")
VOTE_SHORTCUTS = {"left": "Alt+1", "right": "Alt+2", "tie": "Alt+3", "both_bad": "Alt+4"}
CHOICE_LABELS = {"left": "Left better", "right": "Right better", "tie": "Tie", "both_bad": "Both bad"}
CHOICE_TIPS = {
    "left": "The left answer is better",
    "right": "The right answer is better",
    "tie": "Both answers are about as good",
    "both_bad": "Neither answer is acceptable",
}
NEXT_SHORTCUT = "Alt+N"
# Saved once the person changes them here (not "evaluate/sampling": older versions saved defaults there).
SETTINGS_KEY = "evaluate/own_sampling"
SAME_AS_COLLECT = "The same sampling settings as Collect: answers like the ones you judged there."
OTHER_THAN_COLLECT = (
    "Not Collect's sampling settings: these answers may differ from the ones you judged there."
)
COVER_TEXT = (
    "Hidden while both answers are written: they appear together, so the order they are written in gives "
    "nothing away. Which model wrote which is revealed after your vote."
)
CONCLUSIONS = {
    "better": "The aligned model is better: the whole interval is above 50%.",
    "worse": "The aligned model is worse: the whole interval is below 50%.",
    "unclear": "Not clear yet: the interval still includes 50%. More votes narrow it.",
}

NEEDS_ALIGNED = (
    "Evaluate needs an aligned model: export a trained run first (collect pairs, train in Train, then "
    "export in Export). It then compares that model with its base here."
)


def vote_for_choice(choice: str, aligned_shown_left: bool) -> str:
    """The vote stored for a choice made on screen: "left"/"right" become the model shown on that side."""
    if choice == "left":
        return "aligned" if aligned_shown_left else "base"
    if choice == "right":
        return "base" if aligned_shown_left else "aligned"
    if choice in ("tie", "both_bad"):
        return choice
    raise ValueError(f"Unknown choice {choice!r}")


def _set_role(title: QLabel, role: str) -> None:
    """Colour a pane's title by the model it revealed ("" before the vote)."""
    set_style_property(title, "role", role)


def _describe_model(model: ModelRow) -> str:
    """A model in the pickers: its name, and whether it is an aligned one (unless the name says so)."""
    if model.source == "aligned" and "aligned" not in model.name.lower():
        return f"{model.name}  · aligned"
    return model.name


def _describe(result: GenerationResult) -> str:
    ending = {"stop": "finished", "length": "reached the token limit", "cancelled": "stopped"}.get(
        result.finish_reason, result.finish_reason
    )
    return f"{plural(result.completion_tokens, 'token')} · {ending}"


@dataclass
class ShownEvaluationPair:
    """The prompt on screen and its two answers. Index 0 is the base model's answer, 1 the aligned one's."""

    prompt: PromptRow
    base: ModelRow
    aligned: ModelRow
    seed: int
    aligned_shown_left: bool
    settings: SamplingSettings
    results: tuple[GenerationResult, GenerationResult] | None = None  # (base, aligned) once both are done
    vote: str | None = None  # once voted

    def side_of(self, seq: int) -> int:
        """The screen side (0 left, 1 right) of the base (seq 0) or aligned (seq 1) answer."""
        aligned_side = 0 if self.aligned_shown_left else 1
        return aligned_side if seq == ALIGNED_SEQ else 1 - aligned_side


class EvaluateView(ModelWorkView):
    """Blind A/B votes between an aligned model and its base, with a running win rate.

    Takes the services of :class:`~desktop_dpo.gui.model_work_view.ModelWorkView` (sampling runs on
    ``generate:<aligned model id>``); its ``rng`` decides the side of the aligned answer and the seeds.

    Signals:
        status_message(str): a line for the status bar.
        voted(object): a vote was stored (the :class:`EvaluationSummary` after it).
        models_changed(): a model was registered here (a GGUF base's trainable copy, to compare at Q8_0).
    """

    status_message = Signal(str)
    voted = Signal(object)
    models_changed = Signal()

    PAGE = "evaluate"

    def __init__(self, **services: Any):
        super().__init__(**services)
        self._pair: ShownEvaluationPair | None = None
        self._evaluation: EvaluationRow | None = None
        self._prompts: list[PromptRow] = []
        self._voted_prompt_ids: set[int] = set()
        self._tokens = [0, 0]  # tokens written so far, by seq (first the base answer, then the aligned one)
        self._finished = [False, False]
        self._own_settings = False  # the person chose settings here; otherwise Evaluate follows Collect's
        self._following = False  # showing Collect's settings: not the person's choice
        self._has_aligned = False  # an exported (aligned) model is registered: the usual thing to evaluate

        self._build()
        self._build_shortcuts()
        self._start_settings()
        self.refresh_models()
        self._show_empty_panes()

    # ---------------------------------------------------------------- building

    def _build(self) -> None:
        self.votes_label = page_pill("Votes given for this pair of models at these settings")
        header = PageHeader(
            "Evaluate",
            "Judge the aligned model against its base, blind: the sides are revealed after your vote.",
            self.votes_label,
        )

        card = self._build_card()
        self.prompt_view = QPlainTextEdit()
        self.prompt_view.setObjectName("shownPrompt")
        self.prompt_view.setReadOnly(True)
        self.prompt_view.setMaximumHeight(56)
        self.prompt_view.setPlaceholderText(
            "Next prompt shows an evaluation prompt here, with two answers below."
        )

        self.panes = (ResponsePane(0), ResponsePane(1))
        answers = QHBoxLayout()
        answers.setSpacing(12)
        for pane in self.panes:
            pane.edit_button.setVisible(False)  # an evaluation judges the answers as written
            pane.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
            answers.addWidget(pane, 1)

        layout = self._page_layout(header, card)
        layout.addWidget(self.prompt_view)
        layout.addLayout(answers, 1)
        self.vote_bar = self._build_vote_bar()
        layout.addWidget(self.vote_bar)
        layout.addWidget(self._build_summary())

    def _build_card(self) -> QFrame:
        """The models, the prompts and the sampling settings."""
        card, card_layout = widgets.card((16, 12, 16, 10))
        self.base_combo = ModelCombo("The model the aligned model was trained from", describe=_describe_model)
        self.aligned_combo = ModelCombo(
            "The model to evaluate (by default the newest aligned model)", describe=_describe_model
        )
        for combo in (self.base_combo, self.aligned_combo):
            combo.currentIndexChanged.connect(self._on_model_combo_changed)
        models_row = QHBoxLayout()
        models_row.setSpacing(10)
        models_row.addWidget(field_label("Base"))
        models_row.addWidget(self.base_combo, 1)
        models_row.addSpacing(12)
        models_row.addWidget(field_label("Aligned"))
        models_row.addWidget(self.aligned_combo, 1)
        card_layout.addLayout(models_row)
        # On screen, not only in a tooltip: without an aligned model there is nothing to evaluate yet.
        self.needs_note = QLabel(NEEDS_ALIGNED)
        self.needs_note.setObjectName("needsNote")
        self.needs_note.setWordWrap(True)
        self.needs_note.setVisible(False)
        card_layout.addWidget(self.needs_note)

        self.prompts_note = QLabel()
        self.prompts_note.setObjectName("promptsNote")
        self.prompts_note.setWordWrap(True)
        self.load_prompts_button = widgets.button(
            "Load prompts…",
            self._on_load_prompts_clicked,
            tooltip="Add evaluation prompts from a file (text: one per line or separated by blank lines; "
            'JSONL: {"prompt": "..."} per line). Prompts already used to train are left out.',
        )
        self.stop_button = widgets.button(f"Stop  ({STOP_SHORTCUT})", self.stop, tooltip="Stop sampling")
        self.next_button = widgets.button(
            f"Next prompt  ({NEXT_SHORTCUT})", self.next_prompt, name="primaryButton"
        )
        buttons = (self.load_prompts_button, self.stop_button, self.next_button)
        card_layout.addLayout(self._actions_row(self.prompts_note, *buttons))
        card_layout.addWidget(card_separator())
        self.sampling_panel = SamplingSettingsPanel()
        self.sampling_panel.changed.connect(self._on_sampling_changed)
        card_layout.addWidget(self.sampling_panel)
        self.settings_note = QLabel(SAME_AS_COLLECT)
        self.settings_note.setObjectName("cardNote")
        self.settings_note.setWordWrap(True)
        self.use_collect_button = widgets.button(
            "Use Collect's settings",
            self.use_collect_settings,
            tooltip="Sample with the settings Collect uses, and follow them from now on",
        )
        card_layout.addLayout(self._actions_row(self.settings_note, self.use_collect_button))
        return card

    def _build_vote_bar(self) -> ChoiceBar:
        """The vote buttons under the answers, and what the last vote revealed."""
        bar = ChoiceBar(
            "vote",
            CHOICES,
            labels=CHOICE_LABELS,
            shortcuts=VOTE_SHORTCUTS,
            tips=CHOICE_TIPS,
        )
        for choice, button in bar.buttons.items():
            button.clicked.connect(lambda _checked=False, c=choice: self.vote(c))
        self.vote_buttons, self.feedback = bar.buttons, bar.feedback
        return bar

    def _build_summary(self) -> QFrame:
        """The votes so far, in a sentence, and what they show."""
        summary, summary_layout = widgets.card((14, 10, 14, 10), 2, name="summaryCard")
        self.summary_text = QLabel()
        self.summary_text.setObjectName("summarySentence")
        self.summary_text.setWordWrap(True)
        self.summary_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.conclusion_text = QLabel()
        self.conclusion_text.setObjectName("summaryConclusion")
        self.conclusion_text.setWordWrap(True)
        summary_layout.addWidget(self.summary_text)
        summary_layout.addWidget(self.conclusion_text)
        return summary

    def _build_shortcuts(self) -> None:
        def shortcut(keys: str, slot: Any) -> QShortcut:
            return view_shortcut(self, keys, slot)

        self.shortcuts: dict[str, QShortcut] = {
            "next": shortcut(NEXT_SHORTCUT, self.next_prompt),
            "stop": shortcut(STOP_SHORTCUT, self.stop),
        }
        for choice in CHOICES:
            self.shortcuts[choice] = shortcut(VOTE_SHORTCUTS[choice], lambda c=choice: self.vote(c))

    # ---------------------------------------------------------------- models and the evaluation

    def refresh_models(self) -> None:
        """Re-read the registered models (keeping the choice; by default the newest aligned model and its
        base)."""
        models = self.store.list_models()
        current = (self.base_combo.currentData(), self.aligned_combo.currentData())
        default_base, default_aligned = default_models(models)
        if current[0] is None and default_base is not None and default_aligned is not None:
            known = {m.id for m in models}
            default_base = self._comparable_base(default_base, default_aligned, known)
            if default_base.id not in known:
                models = self.store.list_models()
        # Exported here, or trained elsewhere and imported (desktop-dpo cluster import).
        self._has_aligned = any(m.source in ("aligned", "imported") for m in models)
        wanted = (
            current[0] if current[0] is not None else (default_base.id if default_base else None),
            current[1] if current[1] is not None else (default_aligned.id if default_aligned else None),
        )
        for combo, model_id in zip((self.base_combo, self.aligned_combo), wanted, strict=True):
            combo.fill(models, model_id)
        self._on_models_chosen()

    def _comparable_base(self, base: ModelRow, aligned: ModelRow, known: set[int]) -> ModelRow:
        """``comparable_base``: a GGUF base's trainable copy when ``aligned`` runs at Q8_0 (the other views are
        told when it is not among the ``known`` model ids), else ``base``, whose mismatch the first prompt then
        explains."""
        try:
            chosen = comparable_base(self.store, base, aligned, self.paths)
        except DesktopDpoError:
            return base
        if chosen.id not in known:
            QTimer.singleShot(0, self.models_changed.emit)  # after this view has filled its lists
        return chosen

    def set_models(self, base: ModelRow, aligned: ModelRow) -> None:
        """Evaluate ``aligned`` against ``base`` (e.g. right after an export), or against ``base`` at Q8_0 when
        ``aligned`` runs at Q8_0 and ``base`` is a GGUF of another type (``evaluate.comparable_base``)."""
        base = self._comparable_base(base, aligned, {m.id for m in self.store.list_models()})
        self.refresh_models()
        for combo, model in ((self.base_combo, base), (self.aligned_combo, aligned)):
            combo.blockSignals(True)
            combo.setCurrentIndex(max(combo.findData(model.id), 0))
            combo.blockSignals(False)
        self._on_models_chosen()

    def models(self) -> tuple[ModelRow | None, ModelRow | None]:
        """The chosen ``(base, aligned)`` models."""
        base_id, aligned_id = self.base_combo.currentData(), self.aligned_combo.currentData()
        return (
            self.store.get_model(base_id) if base_id is not None else None,
            self.store.get_model(aligned_id) if aligned_id is not None else None,
        )

    @Slot(int)
    def _on_model_combo_changed(self, _index: int) -> None:
        self._on_models_chosen()

    def _on_models_chosen(self) -> None:
        pair = self._pair
        chosen = (self.base_combo.currentData(), self.aligned_combo.currentData())
        if (
            pair is not None
            and pair.vote is None
            and not self._streaming
            and chosen != (pair.base.id, pair.aligned.id)
        ):
            self._pair = None  # an unjudged pair of other models is no longer what is being evaluated
            self._show_empty_panes()
            self._set_activity("")
        self._find_evaluation()
        self.refresh_prompts()

    def _find_evaluation(self) -> None:
        """The evaluation the next vote joins: the newest one of these models, judged by a person, at these
        sampling settings (a vote at other settings would measure something else). Made at the first vote."""
        base, aligned = self.models()
        self._evaluation = None
        if base is not None and aligned is not None:
            wanted = evaluation_settings(self.sampling_panel.settings())
            for evaluation in self.store.list_evaluations(base_model_id=base.id, aligned_model_id=aligned.id):
                if (
                    evaluation.settings.get("judge") == PERSON
                    and evaluation.settings.get("sampling") == wanted["sampling"]
                ):
                    self._evaluation = evaluation
                    break
        votes = self.store.evaluation_votes(self._evaluation.id) if self._evaluation else []
        self._voted_prompt_ids = {v.prompt_id for v in votes if v.prompt_id is not None}
        self._show_summary()

    def evaluation(self) -> EvaluationRow | None:
        """The evaluation votes are going to (None before the first vote for these models and settings)."""
        return self._evaluation

    def summary(self) -> EvaluationSummary:
        """The votes so far for these models at these settings."""
        if self._evaluation is None:
            return EvaluationSummary.from_counts(wins=0, losses=0)
        return evaluation_summary(self.store, self._evaluation.id)

    def _show_summary(self) -> None:
        summary = self.summary()
        self.summary_text.setText(summary.sentence() + ".")
        if summary.total == 0:
            self.conclusion_text.setText(
                "Vote on a few dozen prompts: the win rate comes with a 95% interval that narrows as you go."
            )
            verdict = "none"
        else:
            verdict = summary.conclusion()
            self.conclusion_text.setText(CONCLUSIONS[verdict])
        set_style_property(self.conclusion_text, "verdict", verdict)
        self.votes_label.setText(f"{summary.total} vote{'s' if summary.total != 1 else ''}")

    # ---------------------------------------------------------------- prompts

    def refresh_prompts(self) -> None:
        """Re-read the evaluation prompts (a training run may have claimed some since)."""
        self._prompts = evaluation_prompts(self.store)
        left = len(self._remaining_prompts())
        total = len(self._prompts)
        if total == 0:
            self.prompts_note.setText("No evaluation prompt yet: load some from a file.")
        else:
            self.prompts_note.setText(
                f"{total} evaluation prompt{'s' if total != 1 else ''} (held out or never trained on) · "
                f"{left} not judged yet"
            )
        self._update_actions()

    def _remaining_prompts(self) -> list[PromptRow]:
        return [p for p in self._prompts if p.id not in self._voted_prompt_ids]

    def remaining_prompts(self) -> list[PromptRow]:
        """Evaluation prompts without a vote for these models and settings, in the order they come."""
        return list(self._remaining_prompts())

    def load_prompt_file(self, path: str | Path) -> int:
        """Add evaluation prompts from a file; returns how many it held (problems are shown in the banner)."""
        path = Path(path)
        try:
            ids = add_evaluation_prompts(self.store, path)
        except DesktopDpoError as exc:
            self.show_error(str(exc))
            return 0
        self.clear_error()
        self.refresh_prompts()
        usable = len({p.id for p in self._prompts} & set(ids))
        skipped = len(set(ids)) - usable
        self.notify(
            f"Added {usable} evaluation prompt{'s' if usable != 1 else ''} from {path.name}"
            + (f"; {skipped} left out: used to train" if skipped else "")
            + "."
        )
        return usable

    @Slot()
    def _on_load_prompts_clicked(self) -> None:
        name = self._ask_prompt_file("Load evaluation prompts")
        if name:
            self.load_prompt_file(name)

    def _choose_prompt(self) -> PromptRow | None:
        remaining = self._remaining_prompts()
        if not remaining:
            return None
        current = self._pair.prompt.id if self._pair is not None else None
        order = [p.id for p in self._prompts]
        if current in order:  # the one after the prompt on screen (a skipped prompt comes round again)
            position = order.index(current)
            later = [p for p in remaining if order.index(p.id) > position]
            return later[0] if later else remaining[0]
        return remaining[0]

    # ---------------------------------------------------------------- sampling

    @property
    def pair(self) -> ShownEvaluationPair | None:
        """The prompt on screen with its answers (None before the first)."""
        return self._pair

    @Slot()
    def next_prompt(self) -> bool:
        """Sample both models' answers to the next evaluation prompt. Returns False when it cannot start
        (why is shown in the view)."""
        if not self.next_button.isEnabled():
            return False
        base, aligned = self.models()
        assert base is not None and aligned is not None
        # A model without a usable chat template is not sampled with a guessed one: the person chooses.
        if any(self._with_template(model) is None for model in (base, aligned)):
            return False
        base, aligned = self.models()  # as stored now, with the template just chosen
        assert base is not None and aligned is not None
        try:
            check_comparable(base, aligned, self.paths)
        except DesktopDpoError as exc:
            self.show_error(str(exc))
            return False
        self.refresh_prompts()
        prompt = self._choose_prompt()
        if prompt is None:
            self.notify("Every evaluation prompt has a vote. Load more prompts to go on.")
            return False
        settings = self.sampling_panel.settings()
        seed = draw_seed(self._rng)
        pair = ShownEvaluationPair(
            prompt=prompt,
            base=base,
            aligned=aligned,
            seed=seed,
            aligned_shown_left=self._rng.random() < 0.5,
            settings=settings,
        )
        pool, paths, messages = self.pool, self.paths, [dict(m) for m in prompt.messages]

        def factory(store: Store, token: Any) -> Any:
            job = sample_evaluation_pair(pool, base, aligned, paths, messages, settings, seed, token)
            return record_model_info(store, job)

        if not self._start_generation(factory, aligned, "sample"):
            return False

        self._pair = pair
        self._tokens = [0, 0]
        self._finished = [False, False]
        self.clear_error()
        self.feedback.clear()
        self.prompt_view.setPlainText(prompt.text)
        self._bring_into_view(self.vote_bar)  # a short window: the answers and the votes come up
        for pane in self.panes:
            pane.title.setText(SIDE_NAMES[pane.side])
            _set_role(pane.title, "")
            pane.set_text("")
            pane.text.setPlaceholderText(COVER_TEXT)
            pane.set_chosen(False)
        self._show_writing_progress()
        self._set_activity("Writing both answers… They appear together, so their order gives nothing away.")
        self._update_actions()
        return True

    def _on_sample_event(self, event: object) -> None:
        if self._pair is None:
            return
        if isinstance(event, TokenEvent):
            # Counted, not shown: which answer streams first would tell which model wrote it.
            self._tokens[event.seq] = event.n_tokens
            self._show_writing_progress()
        elif isinstance(event, ResponseFinished):  # both are shown together when the job succeeds
            self._tokens[event.seq] = event.result.completion_tokens
            self._finished[event.seq] = True
            self._show_writing_progress()
        else:
            self.show_job_progress(event)

    def _show_writing_progress(self) -> None:
        """Both panes' status line while the answers are written: how far the first and the second answer
        are, in tokens (the same line on both sides, so it says nothing about which side is which)."""
        pair = self._pair
        if pair is None:
            return
        limit, (first, second) = pair.settings.max_tokens, (self._tokens[BASE_SEQ], self._tokens[ALIGNED_SEQ])
        text = "Starting the first of the two answers…"
        if self._finished[BASE_SEQ]:
            then = (
                f"writing the second: {second} of at most {limit} tokens"
                if second
                else "starting the second…"
            )
            text = f"First answer written ({plural(first, 'token')}) · {then}"
        elif first:
            text = f"Writing the first answer: {first} of at most {limit} tokens · then the second"
        for pane in self.panes:
            pane.status.setText(text)

    def _on_sample_succeeded(self, results: object) -> None:
        self.activity_row.hide_progress()
        pair = self._pair
        if pair is not None and isinstance(results, tuple) and len(results) == 2:
            pair.results = (results[BASE_SEQ], results[ALIGNED_SEQ])
            for seq, result in enumerate(pair.results):
                pane = self.panes[pair.side_of(seq)]
                pane.set_text(result.text)
                pane.status.setText(_describe(result))
            self._set_activity(
                "Which answer is better? Alt+1 left · Alt+2 right · Alt+3 tie · Alt+4 both bad."
            )
        self._update_actions()

    def _on_sample_failed(self, message: str) -> None:
        self._pair = None
        self.activity_row.hide_progress()
        self._set_activity("")
        for pane in self.panes:
            pane.status.setText("Failed")
            pane.text.setPlaceholderText("")
        self.show_error(message)
        self._update_actions()

    def _on_sample_cancelled(self) -> None:
        """After Stop: a stopped pair cannot be judged; the prompt comes round again."""
        self.activity_row.hide_progress()
        if self._pair is not None:
            self._pair.results = None
        for pane in self.panes:
            pane.status.setText("Stopped")
            pane.text.setPlaceholderText("Stopped before both answers were written: nothing to judge.")
        self._set_activity("Stopped. Next prompt samples again.")
        self.notify("Sampling stopped.")
        self._update_actions()

    # ---------------------------------------------------------------- voting

    @Slot(str)
    def vote(self, choice: str) -> int | None:
        """Store the vote for the pair on screen (``choice``: "left", "right", "tie" or "both_bad"), then
        reveal which model wrote which answer. Returns the vote's id, or None when there is nothing to judge."""
        pair = self._pair
        if pair is None or pair.results is None or pair.vote is not None or self._streaming:
            return None
        vote = vote_for_choice(choice, pair.aligned_shown_left)
        base_result, aligned_result = pair.results
        try:
            with self.store.atomic():
                if self._evaluation is None:
                    quantization = check_comparable(pair.base, pair.aligned, self.paths)
                    evaluation_id = self.store.create_evaluation(
                        name=f"{pair.aligned.name} against {pair.base.name}",
                        base_model_id=pair.base.id,
                        aligned_model_id=pair.aligned.id,
                        quantization=quantization,
                        settings={**evaluation_settings(pair.settings), "judge": PERSON},
                    )
                else:
                    evaluation_id = self._evaluation.id
                vote_id = self.store.add_evaluation_vote(
                    evaluation_id,
                    prompt_id=pair.prompt.id,
                    base_text=base_result.text,
                    aligned_text=aligned_result.text,
                    vote=vote,
                    judge=PERSON,
                    aligned_shown_left=pair.aligned_shown_left,
                    seed=pair.seed,
                )
        except DesktopDpoError as exc:
            self.show_error(f"The vote was not saved: {exc}")
            return None
        self._evaluation = self.store.get_evaluation(evaluation_id)
        self._voted_prompt_ids.add(pair.prompt.id)
        pair.vote = vote
        self._reveal(pair, choice)
        self._show_summary()
        self.refresh_prompts()
        summary = self.summary()
        self.voted.emit(summary)
        self.notify(f"Saved: {CHOICE_LABELS[choice]}.")
        return vote_id

    def _reveal(self, pair: ShownEvaluationPair, choice: str) -> None:
        aligned_side = pair.side_of(ALIGNED_SEQ)
        for pane in self.panes:
            model, role = (pair.aligned, "aligned") if pane.side == aligned_side else (pair.base, "base")
            pane.title.setText(f"{SIDE_NAMES[pane.side]}: {role} · {model.name}")
            _set_role(pane.title, role)
        chosen_side = {"left": 0, "right": 1}.get(choice)
        for pane in self.panes:
            pane.set_chosen(pane.side == chosen_side)
        if chosen_side is not None:
            winner = "aligned" if chosen_side == aligned_side else "base"
            self.feedback.setText(f"Saved: {SIDE_NAMES[chosen_side].lower()}, the {winner} model.")
        else:
            self.feedback.setText(f"Saved: {CHOICE_LABELS[choice].lower()}.")
        self._set_activity(
            f"The aligned model was on the {SIDE_NAMES[aligned_side].lower()}. {NEXT_SHORTCUT} for the next prompt."
        )

    def _show_empty_panes(self) -> None:
        for pane in self.panes:
            pane.title.setText(SIDE_NAMES[pane.side])
            _set_role(pane.title, "")
            pane.set_text("")
            pane.status.clear()
            pane.set_chosen(False)
        self.prompt_view.clear()
        self.panes[0].text.setPlaceholderText("One model's answer appears here…")
        self.panes[1].text.setPlaceholderText(
            "…and the other's here. Which is which is revealed after your vote."
        )

    # ---------------------------------------------------------------- state of the buttons

    def _update_actions(self) -> None:
        if not hasattr(self, "vote_buttons"):
            return  # still building
        base, aligned = self.base_combo.currentData(), self.aligned_combo.currentData()
        streaming = self._streaming
        busy = any(m is not None and self.registry.is_busy(f"generate:{m}") for m in (base, aligned))
        reason = ""
        self.needs_note.setVisible(not self._has_aligned)
        if base is None or aligned is None:
            reason = "Add a model in Models first."
        elif base == aligned and not self._has_aligned:
            reason = NEEDS_ALIGNED  # one model so far (the demo, say): nothing to compare it with yet
        elif base == aligned:
            reason = "Choose two different models: the aligned one and its base."
        elif streaming:
            reason = "Sampling…"
        elif busy:
            reason = "A model is busy with another job; wait for it to finish."
        elif not self._remaining_prompts():
            reason = (
                "Every evaluation prompt has a vote; load more prompts."
                if self._prompts
                else "No evaluation prompt yet: load some from a file."
            )
        self.next_button.setEnabled(not reason)
        self.next_button.setToolTip(
            reason or f"Both models answer the next evaluation prompt ({NEXT_SHORTCUT})"
        )
        self.stop_button.setEnabled(streaming)
        judgeable = (
            self._pair is not None
            and self._pair.results is not None
            and self._pair.vote is None
            and not streaming
        )
        for button in self.vote_buttons.values():
            button.setEnabled(judgeable)
        self.base_combo.setEnabled(not streaming)
        self.aligned_combo.setEnabled(not streaming)
        self.sampling_panel.setEnabled(not streaming)
        self.use_collect_button.setEnabled(not streaming)

    # ---------------------------------------------------------------- settings

    def _collect_settings(self) -> SamplingSettings:
        """The settings Collect samples with (its remembered ones; the defaults before it saved any)."""
        return saved_sampling_settings(self._settings, COLLECT_SETTINGS_KEY) or SamplingSettings()

    def _start_settings(self) -> None:
        """Show the person's own Evaluate settings, or else Collect's."""
        own = saved_sampling_settings(self._settings, SETTINGS_KEY)
        self._own_settings = own is not None
        self._show_settings(own if own is not None else self._collect_settings())

    def _show_settings(self, settings: SamplingSettings) -> None:
        """Put ``settings`` in the panel without taking them for the person's own choice."""
        self._following = True
        try:
            self.sampling_panel.set_settings(settings)
        finally:
            self._following = False
        self._show_settings_note()

    def _show_settings_note(self) -> None:
        differs = self.sampling_panel.settings() != self._collect_settings()
        self.settings_note.setText(OTHER_THAN_COLLECT if differs else SAME_AS_COLLECT)
        self.use_collect_button.setVisible(differs)

    @Slot(object)
    def _on_sampling_changed(self, settings: SamplingSettings) -> None:
        if not self._following:  # the person's choice: kept for the next start
            self._own_settings = True
            save_sampling_settings(self._settings, SETTINGS_KEY, settings)
            self._show_settings_note()
        self._find_evaluation()
        self.refresh_prompts()

    def set_sampling_settings(self, settings: SamplingSettings) -> None:
        """Sample the next pairs with ``settings`` (also shown in the sampling panel, and remembered)."""
        self.sampling_panel.set_settings(settings)

    @Slot()
    def use_collect_settings(self) -> None:
        """Sample with Collect's settings, and follow them from now on (the own ones are forgotten)."""
        self._own_settings = False
        self._settings.remove(SETTINGS_KEY)
        self._show_settings(self._collect_settings())

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        # Models, prompts and splits may have changed in other views while this one was hidden, and so may
        # Collect's sampling settings, which this view follows until the person chooses its own.
        if not self._streaming:
            if not self._own_settings and self.sampling_panel.settings() != self._collect_settings():
                self._show_settings(self._collect_settings())
            else:
                self._show_settings_note()
            self.refresh_models()
        super().showEvent(event)
