"""The Train view: choose a base model and settings, train QLoRA-DPO in the background, watch it learn.

One training run at a time, on the job resource ``"train"`` (:mod:`desktop_dpo.workers.training_worker`):
the worker thread opens its own database connection and persists every event before the view sees it,
so what the plots show is already saved. Collecting may go on meanwhile (generation has its own resources).

- The settings start from a preset for the detected device and the chosen model (its free GPU memory and
  the model's size, see ``core/dpo/config.py``'s ``preset_for``). Detection imports torch, so it runs as a
  small job when the view is first shown and again when another model is chosen; until it reports, a
  "Detecting your GPU…" note stays up and the form and Start are disabled (with the reason above Start), so
  what the form shows is what runs. The note says why the preset is what it is.
- Starting a run first releases the llama.cpp models the app holds (``EnginePool.close_all``, in the
  training job's thread), so their GPU memory goes to training.
- Stop asks the run to stop at the next step boundary, where it checkpoints; Resume continues a stopped,
  failed or interrupted run from its newest checkpoint, to the same total step count.
- Running out of memory is explained, with "Resume with smaller settings" (``smaller_settings``).
- Past runs list every run; selecting one shows its stored curves and settings. A run the database
  says is "running" while no job here trains it (the app was killed) is shown as interrupted.

The run on screen and its curves are :mod:`desktop_dpo.gui.train_live_panel`'s, the list of past runs is
:mod:`desktop_dpo.gui.train_runs_panel`'s; this module decides what they show. pyqtgraph is imported by
:mod:`desktop_dpo.gui.metrics_plots`, which the live panel imports: the view is built the first time it is
shown, never at start-up. No torch, transformers or peft here.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QSplitter

from desktop_dpo.core.dpo import events
from desktop_dpo.core.dpo.config import (
    DeviceInfo,
    TrainConfig,
    TrainingError,
    preset_for,
    sized_for_pairs,
    smaller_settings,
)
from desktop_dpo.core.dpo.pair_counts import (
    PAIRS_EXPLAINED,
    SPLIT_EXPLAINED,
    PairCounts,
    plan_text,
    training_text,
)
from desktop_dpo.core.dpo.run_progress import progress_text
from desktop_dpo.core.dpo.runs import (
    MIN_TRAIN_PAIRS,
    RunPlan,
    create_run_for_model,
    plan_run,
    resume_settings,
)
from desktop_dpo.core.dpo.train_readiness import LabelPlan, data_blocker, label_plan_text, plan_labels
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.store import ModelRow, RunRow
from desktop_dpo.gui.beta_search_dialog import BetaSearchDialog, find_beta_blocker, open_find_beta
from desktop_dpo.gui.data_check_panel import DataCheckLine
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.page_view import PageView
from desktop_dpo.gui.template_editor import ensure_template_chosen, template_needed_message
from desktop_dpo.gui.train_copy import TrainableCopy, model_training_note, needs_copy, start_button_words
from desktop_dpo.gui.train_live_panel import LOADING_HEADLINE, LiveRunPanel
from desktop_dpo.gui.train_reference_row import ReferenceChoice
from desktop_dpo.gui.train_runs_panel import (
    INTERRUPTED,
    RunsPanel,
    frameless_scroll,
    stored_warnings,
    summarise_metrics,
)
from desktop_dpo.gui.train_settings_form import TrainSettingsForm
from desktop_dpo.gui.widgets import (
    ModelCombo,
    PageHeader,
    button,
    card,
    field_label,
    model_kind,
    page_pill,
    styled_label,
)
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.training_worker import (
    DEVICE_RESOURCE,
    TRAIN_RESOURCE,
    DevicePreset,
    OutOfMemory,
    device_preset_job,
    training_job,
)

log = logging.getLogger(__name__)

# Why Start waits while the device is detected: the form is about to change to the settings that fit it.
WAITING_FOR_PRESET = "Checking your GPU to choose settings that fit it: Start is ready in a moment."


def _describe_model(model: ModelRow) -> str:
    """A model in the base-model picker: its name and kind, and whether it still needs a trainable copy."""
    kind = "GGUF, needs a trainable copy" if needs_copy(model) else model_kind(model)
    return f"{model.name}  ·  {kind}"


class TrainView(PageView):
    """Start, watch, stop and resume training runs; browse past ones.

    Args:
        store: the GUI thread's database connection (the training job opens its own).
        registry: the job registry (training runs on ``"train"``; device detection on its own resource).
        paths: the app's folders (the database file, the runs folder).
        pool: the app's loaded inference engines; released before a run starts (None: nothing to release).

    Signals:
        status_message(str): a line for the status bar.
        runs_changed(): a run was made, or changed status.
    """

    PAGE = "train"

    status_message = Signal(str)
    runs_changed = Signal()

    def __init__(self, **services: Any):
        """``services``: see :class:`~desktop_dpo.gui.page_view.PageView`."""
        super().__init__(**services)

        self._training: JobOp | None = None
        self._live_run_id: int | None = None  # the run our job trains
        self._shown_run_id: int | None = None  # the run whose curves the plots show
        self._phase = "idle"  # idle | loading | training | stopping
        self._detecting: JobOp | None = None
        self.preset: DevicePreset | None = None
        self._preset_note = ""  # why the preset's settings, before any change for the pairs
        self._detecting_for: int | None = None  # the model id the running detection sizes the preset for
        self._plan: RunPlan | None = None
        self._labels: LabelPlan | None = None  # a KTO run: its labelled answers (train_readiness.py)
        self._plan_key: tuple[object, ...] = ()
        self._suggested: dict[int, TrainConfig] = {}  # run id -> smaller settings after running out of memory
        self._warnings: list[str] = []
        self._right_sized = False

        self._build()
        # A GGUF base model gets its trainable copy here, on Start; the run starts once it is made.
        self.copy = TrainableCopy(
            self.store, self.registry, self.paths, self.start_job, self.live_panel, self
        )
        self.copy.succeeded.connect(self._on_copy_made)
        self.copy.failed.connect(self._on_copy_ended)
        self.copy.cancelled.connect(functools.partial(self._on_copy_ended, stopped=True))
        self._after_copy: tuple[TrainConfig, str] | None = None  # the settings and reference Start was given
        self.registry.changed.connect(self._on_registry_changed)
        self.refresh_models()
        self.refresh_runs()
        self.live_panel.show_idle()
        self._update_actions()

    # ---------------------------------------------------------------- building

    def _build(self) -> None:
        self.pairs_pill = page_pill("Pairs the chosen model can train on: sampled from it, or imported")
        header = PageHeader(
            "Train",
            "Turn your picks into a better model with QLoRA-DPO. Training runs in the background.",
            self.pairs_pill,
        )

        # -- banners: a failure (red, with an action) and training warnings (amber)
        self.banner = MessageBanner()
        self.banner_action = button("Resume with smaller settings", self._on_banner_action_clicked)
        self.banner.add_action(self.banner_action)
        self.warning_banner = MessageBanner()
        self.data_check_line = DataCheckLine(self.store, self.registry, self.paths.db_path)

        new_card = self._build_new_run_card()
        body = QHBoxLayout()
        body.setSpacing(12)
        body.addWidget(new_card)
        body.addWidget(self._build_right_side(), 1)

        self._page_column(header, self.banner, self.warning_banner, self.data_check_line).addLayout(body, 1)

    def _build_right_side(self) -> QSplitter:
        """Right: the run on screen above the past runs. The view reaches their widgets by its own names."""
        self.live_panel = LiveRunPanel(self.stop)
        self.run_headline = self.live_panel.headline
        self.stop_button = self.live_panel.stop_button
        self.run_detail = self.live_panel.detail
        self.progress = self.live_panel.progress
        self.plots = self.live_panel.plots
        self.runs_panel = RunsPanel()
        self.runs_panel.run_selected.connect(self._on_run_selected)
        self.runs_panel.resume_requested.connect(self.resume)
        self.runs_panel.smaller_requested.connect(self.resume_with_smaller_settings)
        self.runs_tree = self.runs_panel.tree
        self.run_details = self.runs_panel.details
        self.resume_button = self.runs_panel.resume_button
        self.smaller_button = self.runs_panel.smaller_button
        right = self._right = QSplitter(Qt.Orientation.Vertical)
        right.setChildrenCollapsible(False)
        right.addWidget(self.live_panel)
        right.addWidget(self.runs_panel)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)
        return right

    def _build_new_run_card(self) -> QFrame:
        """Left: a new run (model, pairs, settings, Start)."""
        new_card, new_layout = card()
        new_layout.addWidget(styled_label("New run", "cardHeading"))
        self.model_combo = ModelCombo(
            "The model to align: the run trains a LoRA adapter on top of it",
            min_length=16,  # the new-run card stays narrow: the curves beside it need the room
            describe=_describe_model,
        )
        self.model_combo.currentIndexChanged.connect(self._on_model_combo_changed)
        # The label above the box, not beside it: the box gets the card's width, so a model's name (or "No
        # model yet: add one in Models") shows whole at every window size.
        new_layout.addWidget(field_label("Base model"))
        new_layout.addWidget(self.model_combo)
        self.model_note = styled_label("", "modelNote", wrap=True)
        self.model_note.setVisible(False)
        new_layout.addWidget(self.model_note)
        self.reference_row = ReferenceChoice()  # a next round's reference (train_reference_row.py)
        self.reference_combo, self.reference_label = self.reference_row.combo, self.reference_row.label
        new_layout.addWidget(self.reference_row)
        self.pairs_note = styled_label("", "pairsNote", wrap=True)
        new_layout.addWidget(self.pairs_note)
        self.preset_note = styled_label("Detecting your GPU…", "presetNote", wrap=True)
        new_layout.addWidget(self.preset_note)

        self.settings_form = TrainSettingsForm()
        self.settings_form.changed.connect(self._on_settings_changed)
        self.settings_form.find_beta_requested.connect(self.find_beta)
        new_layout.addWidget(frameless_scroll(self.settings_form), 1)

        self.start_reason = styled_label("", "startReason", wrap=True)
        new_layout.addWidget(self.start_reason)
        self.start_button = button("Start training", self.start, name="primaryButton")
        new_layout.addWidget(self.start_button)
        new_card.setMinimumWidth(300)
        new_card.setMaximumWidth(370)
        return new_card

    # ---------------------------------------------------------------- models and pairs

    def refresh_models(self) -> None:
        """Re-read the registered models (keeping the selection when it still exists)."""
        current = self.model_combo.currentData()
        if current is None:
            default = self.store.default_model()
            current = default.id if default is not None else None
        self.model_combo.fill(self.store.list_models(), current)
        self._on_model_combo_changed(self.model_combo.currentIndex())

    def current_model(self) -> ModelRow | None:
        """The base model a new run would train."""
        model_id = self.model_combo.currentData()
        return self.store.get_model(model_id) if model_id is not None else None

    def set_model(self, model_id: int) -> None:
        """Choose the base model for the next run."""
        index = self.model_combo.findData(model_id)
        if index < 0:
            self.refresh_models()
            index = self.model_combo.findData(model_id)
        self.model_combo.setCurrentIndex(max(index, 0))

    @Slot(int)
    def _on_model_combo_changed(self, _index: int) -> None:
        model = self.current_model()
        note = model_training_note(model)
        self.model_note.setText(note)
        self.model_note.setVisible(bool(note))
        self.reference_row.fill(self.store, model)
        self.refresh_plan()
        if self.preset is not None:  # detected before: size the preset for this model (once shown)
            self.detect_device()

    def reference(self) -> str:
        """The reference of a new run: "adapter_off" or "model:<id>" (see core/dpo/config.py)."""
        return self.reference_row.reference()

    def set_reference(self, reference: str) -> bool:
        """Choose the reference of the next run; False when the chosen model offers no such choice."""
        return self.reference_row.set_reference(reference)

    def refresh_plan(self) -> None:
        """Re-count the chosen model's usable pairs and how the split would keep some prompts held out."""
        model, config = self.current_model(), self._split_config()
        self._plan = self._labels = None
        if model is not None:
            try:
                self._plan = plan_run(self.store, model.id, config)
                if config.loss_type == "kto":  # KTO learns from labelled answers, pairs or not
                    self._labels = plan_labels(self.store, self._plan, config)
            except DesktopDpoError as exc:
                log.warning("Could not count the pairs of model %s: %s", model.id, exc)
        self._plan_key = self._current_plan_key()
        self.settings_form.set_single_labels(getattr(plan := self._plan, "single_labels", ""))  # KTO's line
        counts = plan.counts if plan is not None else PairCounts(usable=0, pairs=0)
        self.pairs_pill.setText(training_text(counts, why=False))
        self.pairs_pill.setToolTip(
            f"Usable pairs of the chosen model (sampled from it, or imported): {training_text(counts)}.\n\n"
            f"{PAIRS_EXPLAINED}\n\n{SPLIT_EXPLAINED}"
        )
        self.pairs_note.setToolTip(f"{PAIRS_EXPLAINED}\n\n{SPLIT_EXPLAINED}")
        if model is None:
            self.pairs_note.setText("Add a model in Models, then collect pairs of its answers in Collect.")
        elif self._labels is not None:
            self.pairs_note.setText(label_plan_text(self._labels, model.name))
        elif plan is None or plan.pairs == 0:
            self.pairs_note.setText(
                f"No usable pairs for {model.name} yet: pick the better answer in Collect "
                f"(train needs at least {MIN_TRAIN_PAIRS})."
            )
        else:
            self.pairs_note.setText(
                plan_text(counts, plan.prompts, plan.train_pairs, plan.heldout_pairs, plan.heldout_prompts)
            )
        if not self.detecting():  # more pairs since the preset came may mean other settings
            self._fill_from_preset()
        self._update_actions()

    # ---------------------------------------------------------------- settings and the device preset

    def set_settings(self, config: TrainConfig) -> None:
        """Put ``config`` on the form as the person's choice (a device preset arriving later keeps it)."""
        self.settings_form.touched = True  # first: what the form's change re-counts must not refill it
        self.settings_form.set_settings(config)

    def settings(self) -> TrainConfig:
        """The settings on the form (raises ``TrainingError`` when they cannot work)."""
        return self.settings_form.settings()

    def _split_config(self) -> TrainConfig:
        return self._form_settings() or TrainConfig()

    def _form_settings(self) -> TrainConfig | None:
        """The settings on the form; None when they cannot work."""
        try:
            return self.settings_form.settings()
        except TrainingError:
            return None

    def _current_plan_key(self) -> tuple[object, ...]:
        # Only the model, the held-out share, the seed and the loss (KTO's labels) change the counts.
        config = self._split_config()
        return (self.model_combo.currentData(), config.heldout_fraction, config.seed, config.loss_type)

    @Slot()
    def _on_settings_changed(self) -> None:
        if not hasattr(self, "runs_panel"):
            return  # still building
        self.reference_row.set_loss(self.settings_form.editors["loss_type"].currentData())
        if self._current_plan_key() != self._plan_key:
            self.refresh_plan()
        else:
            self._update_actions()

    def detect_device(self) -> None:
        """Detect the device and size its preset for the chosen model (once per model): the preset fills the
        form unless the person already edited it."""
        model = self.current_model()
        model_id = model.id if model is not None else None
        if self.detecting() or (self.preset is not None and self.preset.model_id == model_id):
            return  # a detection under way re-checks the model when it reports
        try:
            self._detecting = (
                JobOp(self.registry, functools.partial(device_preset_job, model=model), owner=self)
                .resource(DEVICE_RESOURCE)
                .on_success(self._on_device_detected)
                .on_failure(self._on_device_failed)
                .on_cancelled(self._on_device_cancelled)
                .start()
            )
            self._detecting_for = model_id
        except DesktopDpoError as exc:  # another detection holds the resource: tried again once it ends
            log.warning("Device detection did not start: %s", exc)
            return
        if self.preset is not None and not self.settings_form.touched and model is not None:
            self.preset_note.setText(f"Sizing the settings for {model.name}…")
        self._update_actions()

    def detecting(self) -> bool:
        """True while the device detection (or the sizing of its preset for another model) runs."""
        return self._detecting is not None and self._detecting.active

    def _waiting_for_preset(self) -> bool:
        """True while the form may still change to a preset: the first one has not arrived yet, or one for
        another model is on its way to an untouched form."""
        return self.preset is None or (self.detecting() and not self.settings_form.touched)

    def _on_device_detected(self, preset: object) -> None:
        if not isinstance(preset, DevicePreset):
            return
        self.preset = preset
        device = preset.device
        where = device.name
        if device.kind == "cuda" and device.memory_bytes:
            where = f"{device.name} ({device.memory_bytes / 1024**3:.0f} GB)"
        self._preset_note = f"Settings for {where}: {preset.reason}"
        self._fill_from_preset()
        current = self.current_model()
        if (current.id if current is not None else None) != preset.model_id:
            self.detect_device()  # the model changed while detecting
        self._update_actions()

    def _on_device_cancelled(self) -> None:
        self._on_device_failed("")

    def _on_device_failed(self, message: str) -> None:
        # torch could not say: the CPU preset is safe anywhere.
        cpu = preset_for(None, None, None)
        self.preset = DevicePreset(
            DeviceInfo("cpu", "the CPU", None), cpu.config, reason=cpu.reason, model_id=self._detecting_for
        )
        self._preset_note = (
            "Could not detect a GPU"
            + (f" ({message})" if message else "")
            + "; settings for the CPU are shown."
        )
        self._fill_from_preset()
        self._update_actions()

    def _fill_from_preset(self) -> None:
        """The preset, sized for the chosen model's training pairs, on the form unless the person edited it;
        the note says why (``sized_for_pairs``: a run on a few picks gets the settings that learn most)."""
        if self.preset is None:
            return
        pairs = self._plan.train_pairs if self._plan is not None else None
        config, sized = sized_for_pairs(self.preset.config, pairs)
        note = f"{self._preset_note} {sized}" if sized else self._preset_note
        if self.settings_form.touched:
            note += " Your changes were kept."
        elif config != self._form_settings():
            self.settings_form.set_settings(config)
        self.preset_note.setText(note)

    # ---------------------------------------------------------------- starting, stopping, resuming

    def start_blocker(self) -> str:
        """Why Start is disabled ("" when it is not)."""
        model = self.current_model()
        if model is None:
            return "Add a model in Models first."
        if reason := self.copy.blocker(model):  # a GGUF that cannot be trained, or its copy under way
            return reason
        if self.registry.is_busy(TRAIN_RESOURCE):
            return "A run is training: one training run at a time. Stop it or wait for it to finish."
        if self._waiting_for_preset():
            return WAITING_FOR_PRESET
        try:
            self.settings_form.settings()
        except TrainingError as exc:
            return str(exc)
        # Enough to learn from: training pairs, or for KTO labelled answers (train_readiness.py).
        return data_blocker(model.name, self._plan, self._labels)

    @Slot()
    def start(self) -> int | None:
        """Make a run of the chosen model over its pairs as they are now, and train it. Returns its id; None
        when it did not start, or while the trainable copy a GGUF needs first is made (the run follows it)."""
        if self.start_blocker():
            self._update_actions()
            return None
        chosen = self.current_model()
        assert chosen is not None
        # Training renders every pair with the model's chat template: a missing or broken one is chosen now.
        model = ensure_template_chosen(self, self.store, chosen)
        if model is None:
            self.show_error(template_needed_message(chosen))
            return None
        if needs_copy(model):
            self._after_copy = (self.settings_form.settings(), self.reference())
            if self.copy.start(model):
                self.clear_error()
                self._phase = "copying"
            self._update_actions()
            return None
        return self._create_and_start(model, self.settings_form.settings(), self.reference())

    def _create_and_start(self, model: ModelRow, config: TrainConfig, reference: str) -> int | None:
        try:
            run_id = create_run_for_model(self.store, model, config, reference=reference)
        except DesktopDpoError as exc:
            self.show_error(str(exc))
            return None
        return run_id if self._start_job(run_id) else None

    def _on_copy_made(self, model_id: int) -> None:
        self._phase = "idle"
        settings, self._after_copy = self._after_copy, None
        self.refresh_models()  # the picker no longer says the model needs a copy
        model = self.store.get_model(model_id)
        if model is not None and settings is not None:
            self.notify(f"Trainable copy of {model.name} ready: starting the run.")
            self._create_and_start(model, *settings)
        self._update_actions()

    def _on_copy_ended(self, message: str, stopped: bool = False) -> None:
        self._phase, self._after_copy = "idle", None
        (self.notify if stopped else self.show_error)(message)
        self._update_actions()

    def resume(self, run_id: int, changes: TrainConfig | None = None) -> bool:
        """Continue run ``run_id`` from its newest checkpoint (with other settings, when given)."""
        if self.registry.is_busy(TRAIN_RESOURCE):
            self.show_error("A run is training: one training run at a time. Stop it first.")
            return False
        run = self.store.get_run(run_id)
        base = self.store.get_model(run.base_model_id) if run and run.base_model_id is not None else None
        if base is not None and ensure_template_chosen(self, self.store, base) is None:
            self.show_error(template_needed_message(base))
            return False
        try:
            resume_settings(self.store, run_id, changes.to_dict() if changes is not None else None)
        except DesktopDpoError as exc:
            self.show_error(str(exc))
            return False
        self._suggested.pop(run_id, None)
        return self._start_job(run_id)

    def resume_with_smaller_settings(self, run_id: int) -> bool:
        """Resume a run that ran out of memory with the settings the failure suggested."""
        suggested = self.suggested_settings(run_id)
        if suggested is None:
            return False
        return self.resume(run_id, suggested)

    def suggested_settings(self, run_id: int) -> TrainConfig | None:
        """Smaller settings for a run that ran out of memory (None for any other run)."""
        if run_id in self._suggested:
            return self._suggested[run_id]
        run = self.store.get_run(run_id)
        if run is None or run.status != "failed" or "out of memory" not in (run.error or ""):
            return None
        try:
            config = TrainConfig.from_dict(run.config)
        except TrainingError:
            return None
        smaller = smaller_settings(config)
        return smaller if smaller != config else None

    def _start_job(self, run_id: int) -> bool:
        # Every loaded llama.cpp model is released before the run loads its base model, so its (GPU) memory
        # goes to training: what a person pressing Start expects. close_all runs in the training job's
        # thread, never here, and waits for a generation under way (a pair streaming in Collect ends and is
        # kept); Collect, Chat and Evaluate load their model again on their next use. Releasing only idle
        # engines would leave exactly the one in use holding the memory the run needs.
        release = self.pool.close_all if self.pool is not None else None
        factory = training_job(run_id, runs_dir=self.paths.runs_dir, release_engines=release)
        self._training = self.start_job(
            JobOp(self.registry, factory, store=self.paths.db_path, owner=self)
            .resource(TRAIN_RESOURCE)
            .slots("training")
        )
        if self._training is None:
            return False
        self._live_run_id = run_id
        self._warnings = []
        self.warning_banner.setVisible(False)
        self.clear_error()
        run = self.store.get_run(run_id)
        self._phase = "loading"
        self.live_panel.show_loading(run.name if run else f"Run {run_id}")
        self.refresh_runs(select=run_id)
        self._show_run_curves(run_id)
        self.notify("Training started.")
        self.runs_changed.emit()
        self._update_actions()
        return True

    @Slot()
    def find_beta(self) -> BetaSearchDialog | None:
        """Open Find β for the chosen model, its pairs and the form's settings; "Use β" sets the form's β."""
        if find_beta_blocker(self.current_model(), self._plan, self.start_blocker()):
            return None
        release = self.pool.close_all if self.pool is not None else None
        return open_find_beta(self, self.current_model(), self._plan, self.reference(), release)

    @Slot()
    def stop(self) -> None:
        """Ask the run to stop at the next step boundary (it checkpoints there and can be resumed)."""
        if self.copy.active:
            self.copy.stop()
            self._update_actions()
            return
        training = self._training
        if training is None or not training.active:
            return
        training.cancel()
        self._phase = "stopping"
        self.live_panel.show_stopping()
        self._update_actions()

    def phase(self) -> str:
        """What the live run is doing: idle, copying (a GGUF's trainable copy), loading, training or stopping."""
        return self._phase

    def training(self) -> bool:
        """True while a run started here trains (until how it ended is shown)."""
        return self._training is not None and self._training.active

    # ---------------------------------------------------------------- the live run's events

    def _on_training_event(self, event: object) -> None:
        run_id = self._live_run_id
        shown = run_id is not None and run_id == self._shown_run_id
        self.live_panel.show_event(event, plot=shown)
        if isinstance(event, events.Loading):
            if self._phase != "stopping":
                self._phase = "loading"
                self.run_headline.setText(LOADING_HEADLINE)
        elif isinstance(event, events.Started):
            if self._phase != "stopping":
                self._phase = "training"
                run = self.store.get_run(run_id) if run_id is not None else None
                self.run_headline.setText(f"Training {run.name if run else ''}".strip())
            if shown and run_id is not None:
                self._show_run_curves(run_id)  # a resumed run: its earlier steps first
            self.refresh_runs(select=None)
        elif isinstance(event, events.StepMetrics):
            self.runs_panel.set_steps(run_id, steps=event.step, total=event.total_steps)
        elif isinstance(event, events.TrainWarning):
            self._add_warning(event.message)
        elif isinstance(event, events.Checkpointed):
            self.notify(f"Checkpoint saved at step {event.step}.")
        elif isinstance(event, OutOfMemory):
            self._suggested[event.run_id] = event.suggested

    def _add_warning(self, message: str) -> None:
        if message in self._warnings:
            return
        self._warnings.append(message)
        self.warning_banner.show_message("\n\n".join(f"⚠ {m}" for m in self._warnings), tone="warning")
        self.notify(message)

    def warnings(self) -> list[str]:
        """Training warnings shown for the live (or last) run."""
        return list(self._warnings)

    def _end_job(self) -> int | None:
        run_id = self._live_run_id
        self._live_run_id = None
        self._phase = "idle"
        return run_id

    def _on_training_succeeded(self, result: object) -> None:
        run_id = self._end_job()
        run = self.store.get_run(run_id) if run_id is not None else None
        final = summarise_metrics(run.final_metrics) if run else ""
        adapter = result.adapter_path if isinstance(result, events.Finished) else ""
        self.live_panel.show_finished(run.name if run else "", final, adapter)
        self.notify("Training finished.")
        self._after_job(run_id)

    def _on_training_failed(self, message: str) -> None:
        run_id = self._end_job()
        self.live_panel.show_failed()
        self.show_error(message, run_id=run_id)
        self._after_job(run_id)

    def _on_training_cancelled(self) -> None:
        run_id = self._end_job()
        run = self.store.get_run(run_id) if run_id is not None else None
        step = run.step if run is not None else 0
        self.live_panel.show_stopped(step)
        self.notify(f"Training stopped at step {step}; it can be resumed.")
        self._after_job(run_id)

    def _after_job(self, run_id: int | None) -> None:
        self.refresh_runs(select=run_id)
        self.refresh_plan()
        self.runs_changed.emit()
        self._update_actions()

    # ---------------------------------------------------------------- past runs

    def display_status(self, run: RunRow) -> str:
        """A run's status as this view shows it: "running" without a live job here is "interrupted"."""
        if run.status == "running" and not (run.id == self._live_run_id and self.training()):
            return INTERRUPTED
        return run.status

    def refresh_runs(self, select: int | None = None) -> None:
        """Re-read the runs list (keeping the selection, or selecting ``select``)."""
        keep = select if select is not None else self.selected_run_id()
        models = {m.id: m.name for m in self.store.list_models()}
        self.runs_panel.fill(self.store.list_runs(), models, self.display_status, keep)
        self._show_run_details(self.selected_run_id())
        self._update_actions()

    def run_status_text(self, run_id: int) -> str:
        """The status column of a run, as shown ("" when it is not listed)."""
        return self.runs_panel.status_text(run_id)

    def selected_run_id(self) -> int | None:
        """The run selected in the list."""
        return self.runs_panel.selected_run_id()

    def select_run(self, run_id: int) -> None:
        """Select a run in the list (its curves and settings are shown)."""
        self.runs_panel.select(run_id)

    @Slot(object)
    def _on_run_selected(self, run_id: int | None) -> None:
        if run_id is not None:
            self._show_run_curves(run_id)
        self._show_run_details(run_id)
        self._update_actions()

    def _show_run_curves(self, run_id: int) -> None:
        self._shown_run_id = run_id
        self.plots.show_history(
            *(self.store.run_metrics(run_id, split=s) for s in ("train", "heldout", "sft", "sft_heldout"))
        )

    def _show_run_details(self, run_id: int | None) -> None:
        run = self.store.get_run(run_id) if run_id is not None else None
        if run is None:
            self.runs_panel.show_details(None)
            return
        self.runs_panel.show_details(run, stored_warnings(self.store, run.id), progress_text(self.store, run))

    @Slot()
    def _on_banner_action_clicked(self) -> None:
        run_id = self.banner_action.property("run_id")
        if isinstance(run_id, int):
            self.resume_with_smaller_settings(run_id)

    # ---------------------------------------------------------------- state of the buttons

    def _update_actions(self) -> None:
        if not hasattr(self, "copy"):
            return  # still building
        blocker = self.start_blocker()
        copying = self.copy.active
        self.settings_form.setEnabled(not self._waiting_for_preset() and not copying)
        self.model_combo.setEnabled(not copying)
        self.reference_combo.setEnabled(not copying)
        start_text, start_tip = start_button_words(self.current_model())
        self.start_button.setText(start_text)
        self.start_button.setEnabled(not blocker)
        self.start_button.setToolTip(blocker or start_tip)
        self.start_reason.setText(blocker)
        self.start_reason.setVisible(bool(blocker))
        self.start_reason.setProperty("blocking", bool(blocker))
        self.stop_button.setEnabled((self.training() and self._phase != "stopping") or self.copy.stoppable())
        busy = self.registry.is_busy(TRAIN_RESOURCE)
        run_id = self.selected_run_id()
        smaller = run_id is not None and not busy and self.suggested_settings(run_id) is not None
        self.runs_panel.update_actions(busy=busy, smaller=smaller)
        self.banner_action.setEnabled(not busy)
        beta_blocker = find_beta_blocker(self.current_model(), self._plan, blocker)
        self.settings_form.find_beta_button.setEnabled(not beta_blocker)
        self.settings_form.find_beta_button.setToolTip(
            beta_blocker or "Short trainings at a few β, measured on your held-out pairs"
        )

    @Slot()
    def _on_registry_changed(self) -> None:
        if self.preset is None and self.isVisible() and not self.registry.is_busy(DEVICE_RESOURCE):
            self.detect_device()  # it could not start while another detection held the resource
        self._update_actions()

    # ---------------------------------------------------------------- messages

    def show_error(self, message: str, run_id: int | None = None) -> None:
        """Show a problem in words in the banner (with "Resume with smaller settings" after running out
        of memory)."""
        smaller = run_id is not None and self.suggested_settings(run_id) is not None
        self.banner_action.setVisible(smaller)
        self.banner_action.setProperty("run_id", run_id if smaller else None)
        super().show_error(message)

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        # Models, pairs and runs may have changed in other views (or the CLI) while this one was hidden.
        self.refresh_models()
        self.refresh_runs()
        self.detect_device()
        super().showEvent(event)
        if not self._right_sized:  # once: the curves get the larger share, not what the size hints would give
            self._right_sized = True
            total = sum(self._right.sizes())
            self._right.setSizes([total * 3 // 5, total - total * 3 // 5])
