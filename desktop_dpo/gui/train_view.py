"""The Train view: choose a base model and settings, train QLoRA-DPO in the background, watch it learn.

One training run at a time, on the job resource ``"train"`` (:mod:`desktop_dpo.workers.training_worker`):
the worker thread opens its own database connection and persists every event before the view sees it,
so what the plots show is already saved. Collecting may go on meanwhile (generation has its own resources).

- The settings start from a preset for the detected device and the chosen model (its free GPU memory and
  the model's size, see ``core/dpo/config.py``'s ``preset_for``). Detection imports torch, so it runs as a
  small job when the view is first shown and again when another model is chosen; until it reports, a
  "Detecting your GPU…" note stays up. The note says why the preset is what it is.
- Starting a run first releases the llama.cpp models the app holds (``EnginePool.close_all``, in the
  training job's thread), so their GPU memory goes to training.
- Stop asks the run to stop at the next step boundary, where it checkpoints; Resume continues a stopped,
  failed or interrupted run from its newest checkpoint, to the same total step count.
- Running out of memory is explained, with "Resume with smaller settings" (``smaller_settings``).
- Past runs list every run; selecting one shows its stored curves and settings. A run the database
  says is "running" while no job here trains it (the app was killed) is shown as interrupted.

pyqtgraph is imported by :mod:`desktop_dpo.gui.metrics_plots`, which this module imports: the view is
built the first time it is shown, never at start-up. No torch, transformers or peft here.
"""

from __future__ import annotations

import functools
import html
import logging
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QBrush, QColor, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.config import AppPaths
from desktop_dpo.core.dpo.config import DeviceInfo, TrainConfig, TrainingError, preset_for, smaller_settings
from desktop_dpo.core.dpo.events import (
    Checkpointed,
    EvalMetrics,
    Finished,
    Loading,
    ReferenceReady,
    Started,
    StepMetrics,
    TrainWarning,
)
from desktop_dpo.core.dpo.runs import (
    MIN_TRAIN_PAIRS,
    RunPlan,
    create_run_for_model,
    plan_run,
    resume_settings,
    trainable_reason,
)
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.lineage import model_lineage
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.store import ModelRow, RunRow, Store
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.metrics_plots import MetricsPlots
from desktop_dpo.gui.template_editor import ensure_template_chosen, template_needed_message
from desktop_dpo.gui.train_settings_form import TrainSettingsForm
from desktop_dpo.gui.view_messages import ViewMessages
from desktop_dpo.gui.widgets import (
    ModelCombo,
    card,
    field_label,
    make_page,
    model_kind,
    page_header,
    page_pill,
)
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry
from desktop_dpo.workers.training_worker import (
    DEVICE_RESOURCE,
    TRAIN_RESOURCE,
    DevicePreset,
    OutOfMemory,
    device_preset_job,
    training_job,
)

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"  # shown for a run left "running" in the database with no job training it
RESUMABLE = ("stopped", "failed", "pending", INTERRUPTED)
STATUS_LABELS = {
    "pending": "not started",
    "running": "training",
    "stopped": "stopped",
    "failed": "failed",
    "completed": "completed",
    INTERRUPTED: "interrupted — resume",
}
STATUS_COLOURS = {"failed": "#b91c1c", INTERRUPTED: "#b45309", "completed": "#047857", "running": "#4338ca"}
RUN_COLUMNS = ("Run", "Base model", "Status", "Steps", "Pairs", "Final metrics")
COLUMN_STATUS = 2


def format_duration(seconds: float) -> str:
    """``1h05m``, ``3m07s`` or ``42s``: an ETA a person reads at a glance."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def summarise_metrics(metrics: dict[str, Any]) -> str:
    """A run's final reward accuracy (train, held-out) and margin in one short line ("" when none)."""
    parts = []
    if "train/rewards/accuracies" in metrics:
        parts.append(f"acc {metrics['train/rewards/accuracies']:.2f}")
    if "heldout/rewards/accuracies" in metrics:
        parts.append(f"held-out {metrics['heldout/rewards/accuracies']:.2f}")
    if "train/rewards/margins" in metrics:
        parts.append(f"margin {metrics['train/rewards/margins']:.2f}")
    return " · ".join(parts)


def describe_settings(config: dict[str, Any]) -> str:
    """A run's settings as ``name = value`` lines, for a tooltip or the details panel."""
    return "\n".join(f"{name} = {value}" for name, value in sorted(config.items()))


def _describe_model(model: ModelRow) -> str:
    """A model in the base-model picker: its name and kind, and whether it still needs a trainable copy."""
    kind = "GGUF, needs a trainable copy" if trainable_reason(model) is not None else model_kind(model)
    return f"{model.name}  ·  {kind}"


class TrainView(ViewMessages, QWidget):
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

    status_message = Signal(str)
    runs_changed = Signal()

    def __init__(
        self,
        *,
        store: Store,
        registry: JobRegistry,
        paths: AppPaths,
        pool: EnginePool | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        make_page(self, "train")
        self.store = store
        self.registry = registry
        self.paths = paths
        self.pool = pool

        self._training: JobOp | None = None
        self._live_run_id: int | None = None  # the run our job trains
        self._shown_run_id: int | None = None  # the run whose curves the plots show
        self._phase = "idle"  # idle | loading | training | stopping
        self._detecting: JobOp | None = None
        self.preset: DevicePreset | None = None
        self._detecting_for: int | None = None  # the model id the running detection sizes the preset for
        self._plan: RunPlan | None = None
        self._plan_key: tuple[object, ...] = ()
        self._suggested: dict[int, TrainConfig] = {}  # run id -> smaller settings after running out of memory
        self._warnings: list[str] = []
        self._step_text = ""

        self._build()
        registry.changed.connect(self._on_registry_changed)
        self.refresh_models()
        self.refresh_runs()
        self._set_idle()
        self._update_actions()

    # ---------------------------------------------------------------- building

    def _build(self) -> None:
        self.pairs_pill = page_pill("Pairs the chosen model can train on: sampled from it, or imported")
        header = page_header(
            "Train",
            "Turn your picks into a better model with QLoRA-DPO. Training runs in the background.",
            self.pairs_pill,
        )

        # -- banners: a failure (red, with an action) and training warnings (amber)
        self.banner = MessageBanner()
        self.banner_action = QPushButton("Resume with smaller settings")
        self.banner_action.setObjectName("secondaryButton")
        self.banner_action.clicked.connect(self._on_banner_action_clicked)
        self.banner.add_action(self.banner_action)
        self.warning_banner = MessageBanner()

        right = QSplitter(Qt.Orientation.Vertical)
        right.setChildrenCollapsible(False)
        new_card = self._build_new_run_card()
        right.addWidget(self._build_run_card())
        right.addWidget(self._build_runs_card())
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)

        body = QHBoxLayout()
        body.setSpacing(12)
        body.addWidget(new_card)
        body.addWidget(right, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 16)
        layout.setSpacing(10)
        layout.addLayout(header)
        layout.addWidget(self.banner)
        layout.addWidget(self.warning_banner)
        layout.addLayout(body, 1)

    def _build_new_run_card(self) -> QFrame:
        """Left: a new run (model, pairs, settings, Start)."""
        new_card, new_layout = card()
        heading = QLabel("New run")
        heading.setObjectName("cardHeading")
        new_layout.addWidget(heading)
        self.model_combo = ModelCombo(
            "The model to align: the run trains a LoRA adapter on top of it",
            min_length=16,
            describe=_describe_model,
        )
        self.model_combo.currentIndexChanged.connect(self._on_model_combo_changed)
        model_row = QHBoxLayout()
        model_row.addWidget(field_label("Base model"))
        model_row.addWidget(self.model_combo, 1)
        new_layout.addLayout(model_row)
        self.model_note = QLabel()
        self.model_note.setObjectName("modelNote")
        self.model_note.setWordWrap(True)
        self.model_note.setVisible(False)
        new_layout.addWidget(self.model_note)
        # Rounds: a model made by an earlier run can be held near itself or near an earlier model.
        self.reference_label = QLabel("Reference")
        self.reference_label.setObjectName("fieldLabel")
        self.reference_combo = QComboBox()
        self.reference_combo.setObjectName("referenceCombo")
        self.reference_combo.setToolTip(
            "What DPO holds the model near while it learns your picks: the model itself as it is now "
            "(the usual choice for a next round), or an earlier model of its lineage (e.g. the original base)"
        )
        reference_row = QHBoxLayout()
        reference_row.addWidget(self.reference_label)
        reference_row.addWidget(self.reference_combo, 1)
        new_layout.addLayout(reference_row)
        self.reference_label.setVisible(False)
        self.reference_combo.setVisible(False)
        self.pairs_note = QLabel()
        self.pairs_note.setObjectName("pairsNote")
        self.pairs_note.setWordWrap(True)
        new_layout.addWidget(self.pairs_note)
        self.preset_note = QLabel("Detecting your GPU…")
        self.preset_note.setObjectName("presetNote")
        self.preset_note.setWordWrap(True)
        new_layout.addWidget(self.preset_note)

        self.settings_form = TrainSettingsForm()
        self.settings_form.changed.connect(self._on_settings_changed)
        scroll = QScrollArea()
        scroll.setObjectName("settingsScroll")
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.settings_form)
        new_layout.addWidget(scroll, 1)

        self.start_reason = QLabel()
        self.start_reason.setObjectName("startReason")
        self.start_reason.setWordWrap(True)
        new_layout.addWidget(self.start_reason)
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("primaryButton")
        self.start_button.clicked.connect(self.start)
        new_layout.addWidget(self.start_button)
        new_card.setMinimumWidth(300)
        new_card.setMaximumWidth(370)
        return new_card

    def _build_run_card(self) -> QFrame:
        """Right, top: the run on screen (status, progress, plots)."""
        run_card, run_layout = card(spacing=6)
        self.run_headline = QLabel()
        self.run_headline.setObjectName("runHeadline")
        self.run_headline.setWordWrap(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("secondaryButton")
        self.stop_button.setToolTip("Stop at the end of the current step; it is saved and can be resumed")
        self.stop_button.clicked.connect(self.stop)
        top = QHBoxLayout()
        top.addWidget(self.run_headline, 1)
        top.addWidget(self.stop_button, 0, Qt.AlignmentFlag.AlignTop)
        run_layout.addLayout(top)
        self.run_detail = QLabel()
        self.run_detail.setObjectName("runDetail")
        self.run_detail.setWordWrap(True)
        run_layout.addWidget(self.run_detail)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainProgress")
        self.progress.setTextVisible(True)
        self.progress.setFormat("step %v of %m")
        self.progress.setMaximumHeight(16)
        run_layout.addWidget(self.progress)
        self.plots = MetricsPlots()
        run_layout.addWidget(self.plots, 1)
        return run_card

    def _build_runs_card(self) -> QFrame:
        """Right, bottom: past runs."""
        runs_card, runs_layout = card((16, 12, 16, 12), 6)
        runs_heading = QLabel("Runs")
        runs_heading.setObjectName("cardHeading")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setObjectName("secondaryButton")
        self.resume_button.clicked.connect(self._on_resume_clicked)
        self.smaller_button = QPushButton("Resume with smaller settings")
        self.smaller_button.setObjectName("secondaryButton")
        self.smaller_button.clicked.connect(self._on_smaller_clicked)
        runs_head = QHBoxLayout()
        runs_head.addWidget(runs_heading, 1)
        runs_head.addWidget(self.smaller_button)
        runs_head.addWidget(self.resume_button)
        runs_layout.addLayout(runs_head)
        self.runs_tree = QTreeWidget()
        self.runs_tree.setObjectName("runsTree")
        self.runs_tree.setColumnCount(len(RUN_COLUMNS))
        self.runs_tree.setHeaderLabels(list(RUN_COLUMNS))
        self.runs_tree.setRootIsDecorated(False)
        self.runs_tree.setUniformRowHeights(True)
        self.runs_tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.runs_tree.setAlternatingRowColors(False)
        header_view = self.runs_tree.header()
        header_view.setStretchLastSection(True)
        for column in range(len(RUN_COLUMNS) - 1):
            header_view.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.runs_tree.currentItemChanged.connect(self._on_run_selected)
        runs_layout.addWidget(self.runs_tree, 1)
        self.run_details = QLabel()
        self.run_details.setObjectName("runDetails")
        self.run_details.setWordWrap(True)
        self.run_details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.run_details.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        details_scroll = QScrollArea()
        details_scroll.setObjectName("settingsScroll")
        details_scroll.setWidgetResizable(True)
        details_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        details_scroll.setFrameShape(QFrame.Shape.NoFrame)
        details_scroll.setMaximumHeight(
            76
        )  # a long error or several warnings scroll; the list keeps its room
        details_scroll.setWidget(self.run_details)
        runs_layout.addWidget(details_scroll)
        return runs_card

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
        reason = trainable_reason(model) if model is not None else None
        self.model_note.setText(reason or "")
        self.model_note.setVisible(bool(reason))
        self._fill_references(model)
        self.refresh_plan()
        if self.preset is not None:  # detected before: size the preset for this model (once shown)
            self.detect_device()

    def _fill_references(self, model: ModelRow | None) -> None:
        """The reference choices of a model: itself (adapter off), or an earlier model of its lineage."""
        self.reference_combo.clear()
        steps = model_lineage(self.store, model.id) if model is not None else []
        if model is not None:
            self.reference_combo.addItem(f"{model.name} as it is now (adapter off)", "adapter_off")
        for step in reversed(steps[:-1]):  # nearest ancestor first
            made_by = "the original model" if step.run_id is None else f"made by run {step.run_id}"
            self.reference_combo.addItem(f"{step.name} ({made_by})", f"model:{step.model_id}")
        earlier = len(steps) > 1
        self.reference_label.setVisible(earlier)
        self.reference_combo.setVisible(earlier)

    def reference(self) -> str:
        """The reference of a new run: "adapter_off" or "model:<id>" (see core/dpo/config.py)."""
        return self.reference_combo.currentData() or "adapter_off"

    def set_reference(self, reference: str) -> bool:
        """Choose the reference of the next run; False when the chosen model offers no such choice."""
        index = self.reference_combo.findData(reference)
        if index >= 0:
            self.reference_combo.setCurrentIndex(index)
        return index >= 0

    def refresh_plan(self) -> None:
        """Re-count the chosen model's usable pairs and how the split would keep some prompts held out."""
        model = self.current_model()
        self._plan = None
        if model is not None:
            try:
                self._plan = plan_run(self.store, model.id, self._split_config())
            except DesktopDpoError as exc:
                log.warning("Could not count the pairs of model %s: %s", model.id, exc)
        self._plan_key = self._current_plan_key()
        plan = self._plan
        pairs = plan.pairs if plan is not None else 0
        self.pairs_pill.setText(f"{pairs} usable pair{'s' if pairs != 1 else ''}")
        if model is None:
            self.pairs_note.setText("Add a model in Models, then collect pairs of its answers in Collect.")
        elif plan is None or plan.pairs == 0:
            self.pairs_note.setText(
                f"No usable pairs for {model.name} yet: pick the better answer in Collect "
                f"(train needs at least {MIN_TRAIN_PAIRS})."
            )
        else:
            self.pairs_note.setText(
                f"{plan.pairs} usable pair{'s' if plan.pairs != 1 else ''} from {plan.prompts} "
                f"prompt{'s' if plan.prompts != 1 else ''}. {plan.heldout_prompts} "
                f"prompt{'s' if plan.heldout_prompts != 1 else ''} ({plan.heldout_pairs} "
                f"pair{'s' if plan.heldout_pairs != 1 else ''}) held out to check that the model "
                f"generalises; {plan.train_pairs} to train on."
            )
        self._update_actions()

    # ---------------------------------------------------------------- settings and the device preset

    def set_settings(self, config: TrainConfig) -> None:
        """Put ``config`` on the form as the person's choice (a device preset arriving later keeps it)."""
        self.settings_form.set_settings(config)
        self.settings_form.touched = True

    def settings(self) -> TrainConfig:
        """The settings on the form (raises ``TrainingError`` when they cannot work)."""
        return self.settings_form.settings()

    def _split_config(self) -> TrainConfig:
        try:
            return self.settings_form.settings()
        except TrainingError:
            return TrainConfig()

    def _current_plan_key(self) -> tuple[object, ...]:
        # Only the model, the held-out share and the seed change the counts: other edits skip the query.
        config = self._split_config()
        return (self.model_combo.currentData(), config.heldout_fraction, config.seed)

    @Slot()
    def _on_settings_changed(self) -> None:
        if not hasattr(self, "runs_tree"):
            return  # still building
        if self._current_plan_key() != self._plan_key:
            self.refresh_plan()
        else:
            self._update_actions()

    def detect_device(self) -> None:
        """Detect the device and size its preset for the chosen model (once per model): the preset fills the
        form unless the person already edited it."""
        model = self.current_model()
        model_id = model.id if model is not None else None
        detecting = self._detecting is not None and self._detecting.active
        if detecting or (self.preset is not None and self.preset.model_id == model_id):
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
        except DesktopDpoError as exc:
            log.warning("Device detection did not start: %s", exc)

    def _on_device_detected(self, preset: object) -> None:
        if not isinstance(preset, DevicePreset):
            return
        self.preset = preset
        device = preset.device
        where = device.name
        if device.kind == "cuda" and device.memory_bytes:
            where = f"{device.name} ({device.memory_bytes / 1024**3:.0f} GB)"
        note = f"Settings for {where}: {preset.reason}"
        if self.settings_form.touched:
            note += " Your changes were kept."
        else:
            self.settings_form.set_settings(preset.config)
        self.preset_note.setText(note)
        current = self.current_model()
        if (current.id if current is not None else None) != preset.model_id:
            self.detect_device()  # the model changed while detecting

    def _on_device_cancelled(self) -> None:
        self._on_device_failed("")

    def _on_device_failed(self, message: str) -> None:
        # torch could not say: the CPU preset is safe anywhere.
        cpu = preset_for(None, None, None)
        self.preset = DevicePreset(
            DeviceInfo("cpu", "the CPU", None), cpu.config, reason=cpu.reason, model_id=self._detecting_for
        )
        if not self.settings_form.touched:
            self.settings_form.set_settings(self.preset.config)
        self.preset_note.setText(
            "Could not detect a GPU"
            + (f" ({message})" if message else "")
            + "; settings for the CPU are shown."
        )

    # ---------------------------------------------------------------- starting, stopping, resuming

    def start_blocker(self) -> str:
        """Why Start is disabled ("" when it is not)."""
        model = self.current_model()
        if model is None:
            return "Add a model in Models first."
        reason = trainable_reason(model)
        if reason:
            return reason
        if self.registry.is_busy(TRAIN_RESOURCE):
            return "A run is training: one training run at a time. Stop it or wait for it to finish."
        try:
            self.settings_form.settings()
        except TrainingError as exc:
            return str(exc)
        plan = self._plan
        have = plan.pairs if plan is not None else 0
        if have < MIN_TRAIN_PAIRS:
            return (
                f"Train needs at least {MIN_TRAIN_PAIRS} usable pairs; {model.name} has {have}. "
                "Pick the better answer of more pairs in Collect."
            )
        if plan is not None and plan.train_pairs < 1:
            return "Every pair is held out: lower the held-out share or collect pairs for more prompts."
        return ""

    @Slot()
    def start(self) -> int | None:
        """Make a run of the chosen model over its pairs as they are now, and train it. Returns its id."""
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
        try:
            run_id = create_run_for_model(
                self.store, model, self.settings_form.settings(), reference=self.reference()
            )
        except DesktopDpoError as exc:
            self.show_error(str(exc))
            return None
        return run_id if self._start_job(run_id) else None

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
        self.run_headline.setText("Loading torch and the model…")
        self.run_detail.setText(f"{run.name if run else f'Run {run_id}'}: getting ready to train.")
        self.progress.setRange(0, 0)  # busy until the run knows its step count
        self.refresh_runs(select=run_id)
        self._show_run_curves(run_id)
        self.notify("Training started.")
        self.runs_changed.emit()
        self._update_actions()
        return True

    @Slot()
    def stop(self) -> None:
        """Ask the run to stop at the next step boundary (it checkpoints there and can be resumed)."""
        training = self._training
        if training is None or not training.active:
            return
        training.cancel()
        self._phase = "stopping"
        self.run_headline.setText("Stopping at the end of this step…")
        self._update_actions()

    def phase(self) -> str:
        """What the live run is doing: idle, loading, training or stopping."""
        return self._phase

    def training(self) -> bool:
        """True while a run started here trains (until how it ended is shown)."""
        return self._training is not None and self._training.active

    # ---------------------------------------------------------------- the live run's events

    def _on_training_event(self, event: object) -> None:
        run_id = self._live_run_id
        shown = run_id is not None and run_id == self._shown_run_id
        if isinstance(event, Loading):
            if self._phase != "stopping":
                self._phase = "loading"
                self.run_headline.setText("Loading torch and the model…")
            count = f" ({event.done} of {event.total})" if event.total else ""
            self.run_detail.setText(f"{event.stage}{count}…")
            if event.total:
                self.progress.setRange(0, event.total)
                self.progress.setFormat("%v of %m")
                self.progress.setValue(event.done)
        elif isinstance(event, ReferenceReady):
            self.run_detail.setText(
                f"Reference scores ready: {event.cached} from the cache, {event.computed} computed."
            )
        elif isinstance(event, Started):
            if self._phase != "stopping":
                self._phase = "training"
                run = self.store.get_run(run_id) if run_id is not None else None
                self.run_headline.setText(f"Training {run.name if run else ''}".strip())
            self.progress.setRange(0, event.total_steps)
            self.progress.setFormat("step %v of %m")
            self.progress.setValue(event.start_step)
            resumed = f", resumed at step {event.start_step}" if event.start_step else ""
            self._step_text = (
                f"On {event.device} ({'4-bit NF4' if event.quantization == 'nf4' else 'full precision'}): "
                f"{event.train_pairs} pairs to train on, {event.heldout_pairs} held out{resumed}."
            )
            self.run_detail.setText(self._step_text)
            if shown and run_id is not None:
                self._show_run_curves(run_id)  # a resumed run: its earlier steps first
            self.refresh_runs(select=None)
        elif isinstance(event, StepMetrics):
            self.progress.setRange(0, event.total_steps)
            self.progress.setFormat("step %v of %m")
            self.progress.setValue(event.step)
            self.run_detail.setText(
                f"Step {event.step} of {event.total_steps} · ETA {format_duration(event.eta_s)} · "
                f"{event.tokens_per_s:,.0f} tokens/s · loss {event.loss:.3f} · "
                f"accuracy {event.rewards_accuracies:.2f}"
            )
            if shown:
                self.plots.add_train_point(event.step, event.as_metrics())
            self._update_run_row(run_id, steps=event.step, total=event.total_steps)
        elif isinstance(event, EvalMetrics):
            if shown:
                self.plots.add_heldout_point(event.step, event.as_metrics())
        elif isinstance(event, TrainWarning):
            self._add_warning(event.message)
        elif isinstance(event, Checkpointed):
            self.notify(f"Checkpoint saved at step {event.step}.")
        elif isinstance(event, OutOfMemory):
            self._suggested[event.run_id] = event.suggested
        elif isinstance(event, Finished):
            self.progress.setValue(self.progress.maximum())

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
        self.run_headline.setText(f"Finished {run.name if run else ''}".strip())
        final = summarise_metrics(run.final_metrics) if run else ""
        adapter = result.adapter_path if isinstance(result, Finished) else ""
        self.run_detail.setText(
            (f"{final}. " if final else "") + "The adapter is saved: export it in Export."
        )
        self.run_detail.setToolTip(f"Adapter: {adapter}" if adapter else "")
        self.progress.setValue(self.progress.maximum())
        self.notify("Training finished.")
        self._after_job(run_id)

    def _on_training_failed(self, message: str) -> None:
        run_id = self._end_job()
        self.run_headline.setText("Training stopped on a problem")
        self.run_detail.setText("Finished steps are saved: fix the cause, then resume the run from the list.")
        self.progress.setRange(0, max(1, self.progress.maximum()))
        self.show_error(message, run_id=run_id)
        self._after_job(run_id)

    def _on_training_cancelled(self) -> None:
        run_id = self._end_job()
        run = self.store.get_run(run_id) if run_id is not None else None
        step = run.step if run is not None else 0
        self.run_headline.setText(f"Stopped at step {step}")
        self.run_detail.setText("Saved. Select the run below and press Resume to continue from there.")
        self.progress.setRange(0, max(1, self.progress.maximum()))
        self.notify(f"Training stopped at step {step}; it can be resumed.")
        self._after_job(run_id)

    def _after_job(self, run_id: int | None) -> None:
        self.refresh_runs(select=run_id)
        self.refresh_plan()
        self.runs_changed.emit()
        self._update_actions()

    def _set_idle(self) -> None:
        self.run_headline.setText("No run training")
        self.run_detail.setText("Choose a base model and settings, then press Start training.")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

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
        self.runs_tree.blockSignals(True)
        self.runs_tree.clear()
        chosen: QTreeWidgetItem | None = None
        for run in self.store.list_runs():
            status = self.display_status(run)
            steps = f"{run.step} / {run.total_steps}" if run.total_steps else str(run.step)
            item = QTreeWidgetItem(
                [
                    run.name,
                    models.get(run.base_model_id, "(removed)") if run.base_model_id is not None else "—",
                    STATUS_LABELS.get(status, status),
                    steps,
                    str(len(run.comparison_ids)),
                    summarise_metrics(run.final_metrics) or "—",
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, run.id)
            item.setData(COLUMN_STATUS, Qt.ItemDataRole.UserRole, status)
            if status in STATUS_COLOURS:
                item.setForeground(COLUMN_STATUS, QBrush(QColor(STATUS_COLOURS[status])))
            tip = describe_settings(run.config)
            for column in range(len(RUN_COLUMNS)):
                item.setToolTip(column, tip)
            if run.error:
                item.setToolTip(COLUMN_STATUS, run.error)
            self.runs_tree.addTopLevelItem(item)
            if run.id == keep:
                chosen = item
        self.runs_tree.blockSignals(False)
        if chosen is not None:
            self.runs_tree.setCurrentItem(chosen)
        self._show_run_details(self.selected_run_id())
        self._update_actions()

    def _update_run_row(self, run_id: int | None, *, steps: int, total: int) -> None:
        item = self._run_item(run_id)
        if item is not None:
            item.setText(3, f"{steps} / {total}")

    def _run_item(self, run_id: int | None) -> QTreeWidgetItem | None:
        for index in range(self.runs_tree.topLevelItemCount()):
            item = self.runs_tree.topLevelItem(index)
            if item.data(0, Qt.ItemDataRole.UserRole) == run_id:
                return item
        return None

    def run_status_text(self, run_id: int) -> str:
        """The status column of a run, as shown ("" when it is not listed)."""
        item = self._run_item(run_id)
        return item.text(COLUMN_STATUS) if item is not None else ""

    def selected_run_id(self) -> int | None:
        """The run selected in the list."""
        item = self.runs_tree.currentItem()
        return item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None

    def select_run(self, run_id: int) -> None:
        """Select a run in the list (its curves and settings are shown)."""
        item = self._run_item(run_id)
        if item is not None:
            self.runs_tree.setCurrentItem(item)

    @Slot(object, object)
    def _on_run_selected(self, current: QTreeWidgetItem | None, _previous: object) -> None:
        run_id = current.data(0, Qt.ItemDataRole.UserRole) if current is not None else None
        if run_id is not None:
            self._show_run_curves(run_id)
        self._show_run_details(run_id)
        self._update_actions()

    def _show_run_curves(self, run_id: int) -> None:
        self._shown_run_id = run_id
        self.plots.show_history(
            self.store.run_metrics(run_id, split="train"), self.store.run_metrics(run_id, split="heldout")
        )

    def _show_run_details(self, run_id: int | None) -> None:
        run = self.store.get_run(run_id) if run_id is not None else None
        if run is None:
            self.run_details.setText("Select a run to see its curves and settings.")
            return
        config = run.config
        keys = ("beta", "lr", "epochs", "batch_size", "grad_accum", "lora_r", "max_length", "quantization")
        settings = ", ".join(f"{k} {config[k]}" for k in keys if k in config)
        lines = [f"<b>{html.escape(run.name)}</b> · {html.escape(settings)} (hover a row for every setting)"]
        final = summarise_metrics(run.final_metrics)
        if final:
            lines.append(f"Final: {html.escape(final)}")
        if run.error:
            lines.append(f"<span style='color:#991b1b'>{html.escape(run.error)}</span>")
        warnings = [m["message"] for _, row in self.store.run_metrics(run.id, split="warning")
                    for m in row.get("messages", [])]  # fmt: skip
        lines.extend(f"<span style='color:#92400e'>⚠ {html.escape(w)}</span>" for w in warnings)
        self.run_details.setText("<br>".join(lines))

    @Slot()
    def _on_resume_clicked(self) -> None:
        run_id = self.selected_run_id()
        if run_id is not None:
            self.resume(run_id)

    @Slot()
    def _on_smaller_clicked(self) -> None:
        run_id = self.selected_run_id()
        if run_id is not None:
            self.resume_with_smaller_settings(run_id)

    @Slot()
    def _on_banner_action_clicked(self) -> None:
        run_id = self.banner_action.property("run_id")
        if isinstance(run_id, int):
            self.resume_with_smaller_settings(run_id)

    # ---------------------------------------------------------------- state of the buttons

    def _update_actions(self) -> None:
        if not hasattr(self, "runs_tree"):
            return  # still building
        blocker = self.start_blocker()
        self.start_button.setEnabled(not blocker)
        self.start_button.setToolTip(blocker or "Make a run of these pairs and settings, and train it")
        self.start_reason.setText(blocker)
        self.start_reason.setVisible(bool(blocker))
        self.start_reason.setProperty("blocking", bool(blocker))
        self.stop_button.setEnabled(self.training() and self._phase != "stopping")
        busy = self.registry.is_busy(TRAIN_RESOURCE)
        item = self.runs_tree.currentItem()
        status = item.data(COLUMN_STATUS, Qt.ItemDataRole.UserRole) if item is not None else None
        run_id = self.selected_run_id()
        self.resume_button.setEnabled(not busy and status in RESUMABLE)
        self.resume_button.setToolTip(
            "Continue the selected run from its last checkpoint"
            if status in RESUMABLE
            else "Select a stopped, failed or interrupted run to resume it"
        )
        smaller = run_id is not None and not busy and self.suggested_settings(run_id) is not None
        self.smaller_button.setVisible(smaller)
        self.banner_action.setEnabled(not busy)

    @Slot()
    def _on_registry_changed(self) -> None:
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
