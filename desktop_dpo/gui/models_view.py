"""The Models view: the models the app knows, the ones already on this computer, and what each can do.

A person adds a Hugging Face folder or a GGUF file, or one that the Hugging Face hub, LM Studio or Ollama
already downloaded (listed under "On this computer"), and then picks the model Collect and Chat use, the
default the app opens with, or removes one from the list (its files stay where they are).

Everything that reads a disk runs as a job (a :class:`~desktop_dpo.workers.job_op.JobOp`), so a slow or
network disk never freezes the window:

- adding a model reads its headers and fingerprints its weights, then records it in the GUI thread's store
  (:class:`~desktop_dpo.gui.model_registration.ModelRegistration`, resource ``register-model``; a folder
  whose weights are only pickle files is added only after the person says yes to a warning).
- the scan for models on this computer runs when the view is first shown and on "Rescan"
  (:class:`~desktop_dpo.gui.discovered_models.DiscoveredModels`, resource ``scan-models``). It is a quiet
  job, so quitting waits for it instead of asking about it.
- a GGUF that training cannot load gets a trainable copy (:func:`~desktop_dpo.core.models.recorded_trainable_copy`,
  resource ``trainable-copy``, which also records the copy's folder under the model's info key
  ``trainable_copy``, where training looks for it) with a progress bar and a Stop button.

Each model's details say which chat template it is used with; "Chat template…" opens the editor
(:mod:`desktop_dpo.gui.template_editor`), where a known template can be picked or the template edited. A
model that cannot be used until a template is chosen (a GGUF without one, a broken one) is marked in the
list and gets an amber notice with "Choose a template…".
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, Signal, Slot
from PySide6.QtGui import QFont, QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.config import AppPaths
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import CancelToken, Job, Log, Progress
from desktop_dpo.core.llm.template_choice import template_status
from desktop_dpo.core.model_files import trainable_copy_dir
from desktop_dpo.core.models import DiscoveredModel, ModelSearchDirs, recorded_trainable_copy
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.gui.discovered_models import DiscoveredModels, read_only_item
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.model_details_panel import (
    CHAT_ONLY,
    COPY_READY,
    SOURCE_LABELS,
    TRAINABLE_AS_IS,
    ModelDetails,
    format_label,
    size_label,
    template_label,
    training_status,
)
from desktop_dpo.gui.model_registration import ModelRegistration
from desktop_dpo.gui.page_view import PageView
from desktop_dpo.gui.storage_view import ask_yes_no
from desktop_dpo.gui.template_editor import NEEDS_CHOICE_COLOUR, open_template_editor
from desktop_dpo.gui.theme import colour_item_text, follow_scheme, recolour_items
from desktop_dpo.gui.view_messages import ActivityLine
from desktop_dpo.gui.widgets import PageHeader, button, styled_label
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

log = logging.getLogger(__name__)

COPY_RESOURCE = "trainable-copy"
# Quitting waits this long for a scan of folders to end instead of asking about it (a scan takes
# milliseconds; only a hanging network disk would reach this).
SCAN_WAIT_ON_CLOSE_MS = 3000

EMPTY_STATE_TEXT = (
    "Add a Hugging Face folder or a GGUF file to start. A Hugging Face folder holds config.json and "
    ".safetensors weights; a GGUF file is what llama.cpp, LM Studio and Ollama use. Models already on this "
    "computer are listed below: add one with a click."
)

COLUMNS = ("Name", "Format", "Architecture", "Size", "Context", "Chat template", "Training", "Source")
# In a narrow window these columns make way for the names, first to last (the details panel has them all).
DROPPED_FIRST = ("Context", "Architecture", "Source", "Format", "Size")
NAME_MIN_PX = 200
# Columns whose text wraps onto a second line, and the text each must fit without breaking a word: the
# table then fits the window's default width without a horizontal scroll bar.
WRAPPED_COLUMNS = {
    "Format": "Hugging Face ·",
    "Size": "1.5B parameters",
    "Chat template": "default User:/Assistant:",
    "Training": "needs a trainable",
}


def _split(orientation: Qt.Orientation, first: QWidget, second: QWidget) -> QSplitter:
    """Two panels side by side (or one above the other) that share the room equally and never collapse."""
    splitter = QSplitter(orientation)
    splitter.setChildrenCollapsible(False)
    for index, panel in enumerate((first, second)):
        splitter.addWidget(panel)
        splitter.setStretchFactor(index, 1)
    return splitter


class ModelsView(PageView):
    """Register, inspect, choose and remove models; find the ones on this computer; make trainable copies.

    Args:
        store: the GUI thread's database connection.
        registry: the job registry (resources ``register-model`` and ``trainable-copy``).
        paths: the app's folders (trainable copies go under ``paths.models_dir``).
        search_dirs: where to look for models on this computer (default: the standard folders).

    Signals:
        models_changed(): a model was added, removed or given a trainable copy, the default changed, or its
            chat template.
        model_chosen(object): the person chose a model (a :class:`ModelRow`) with "Use this model".
        status_message(str): a line for the status bar.
    """

    PAGE = "models"

    models_changed = Signal()
    model_chosen = Signal(object)
    status_message = Signal(str)

    def __init__(
        self,
        *,
        store: Store,
        registry: JobRegistry,
        paths: AppPaths,
        search_dirs: ModelSearchDirs | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(store=store, registry=registry, paths=paths, parent=parent)
        self.search_dirs = search_dirs

        self._models: list[ModelRow] = []
        self._copy: JobOp | None = None
        self._copy_model_id: int | None = None
        self._watched_window: QWidget | None = None
        self.registration = ModelRegistration(store=store, registry=registry, parent=self)
        self.registration.reading.connect(self._on_registration_reading)
        self.registration.ended.connect(self._on_registration_ended)
        self.registration.added.connect(self._on_model_added)
        self.registration.refused.connect(self.show_error)

        self._build()
        registry.changed.connect(self._on_registry_changed)
        self.refresh()

    # ---------------------------------------------------------------- building

    def _build(self) -> None:
        self.add_folder_button = button(
            "Add folder…",
            self.registration.choose_folder,
            tooltip="Add a Hugging Face model folder (config.json and .safetensors weights)",
        )
        self.add_gguf_button = button(
            "Add GGUF file…",
            self.registration.choose_gguf,
            tooltip="Add a single .gguf file (llama.cpp, LM Studio, Ollama)",
        )
        header = PageHeader(
            "Models",
            "Models you align, chat with and sample from. Everything stays on this computer.",
            self.add_folder_button,
            self.add_gguf_button,
            spacing=8,
        )

        # -- error banner and the activity line (registration, trainable copy)
        self.banner = MessageBanner()
        self.stop_button = button(
            "Stop",
            self.stop_trainable_copy,
            tooltip="Stop making the trainable copy (nothing half-made is kept)",
        )
        self.stop_button.setVisible(False)
        self.activity_row = ActivityLine()
        self.activity_row.add_widget(self.stop_button)

        # -- registered models: a table, or an empty state that says what to do
        self.table = self._build_table()
        self.empty_state = self._build_empty_state()
        self.models_stack = QStackedWidget()
        self.models_stack.addWidget(self.empty_state)
        self.models_stack.addWidget(self.table)

        # -- details of the selected model, with what can be done with it
        self._build_details()
        # -- models found on this computer (the panel's parts, as the view's own)
        self.discovered_card = DiscoveredModels(self.registry, self.search_dirs)
        self.discovered_card.add_requested.connect(self._on_discovered_add_requested)
        self.rescan_button = self.discovered_card.rescan_button
        self.discovered_note = self.discovered_card.note
        self.discovered_table = self.discovered_card.table

        lower = _split(Qt.Orientation.Horizontal, self.details, self.discovered_card)
        lower.setSizes([10_000, 10_000])  # half each, whatever the panels' preferred sizes
        self.splitter = _split(Qt.Orientation.Vertical, self.models_stack, lower)

        self._page_column(header, self.banner, self.activity_row).addWidget(self.splitter, 1)

    def _build_details(self) -> None:
        """The selected model's panel; its buttons act on the selected model."""
        self.details = ModelDetails()
        self.details.terms_requested.connect(self._on_terms_requested)
        self.terms_dialog: QWidget | None = None
        # The panel's parts, as the view's own.
        self.details_name = self.details.name
        self.detail_values = self.details.values
        self.template_notice = self.details.template_notice
        self.template_text = self.details.template_text
        self.terms_note = self.details.terms_note
        self.template_button = self.details.template_button
        self.use_button = self.details.use_button
        self.default_button = self.details.default_button
        self.copy_button = self.details.copy_button
        self.remove_button = self.details.remove_button
        self.template_notice.choose_requested.connect(self.edit_template_of_selected)
        self.template_button.clicked.connect(self.edit_template_of_selected)
        self.use_button.clicked.connect(self.use_selected)
        self.default_button.clicked.connect(self.set_selected_default)
        self.copy_button.clicked.connect(self.make_trainable_copy_of_selected)
        self.remove_button.clicked.connect(self.remove_selected)

    def _build_table(self) -> QTableWidget:
        """The registered models, one row each."""
        self.table = QTableWidget(0, len(COLUMNS))
        follow_scheme(self.table, lambda: recolour_items(self.table))
        self.table.setObjectName("modelTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setShowGrid(False)
        self.table.setWordWrap(True)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        head = self.table.horizontalHeader()
        head.setHighlightSections(False)
        head.setMinimumSectionSize(48)
        metrics = self.table.fontMetrics()
        for column, title in enumerate(COLUMNS):
            if title == "Name":
                head.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
            elif title in WRAPPED_COLUMNS:
                head.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
                head.resizeSection(column, metrics.horizontalAdvance(WRAPPED_COLUMNS[title]) + 20)
            else:
                head.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        # Wrapped cells need their rows re-measured when a column gets narrower or wider.
        head.sectionResized.connect(lambda *_args: self.table.resizeRowsToContents())
        self.table.viewport().installEventFilter(self)  # see _fit_columns
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        self.table.itemDoubleClicked.connect(lambda _item: self.use_selected())
        # Keys on the list: Enter uses the selected model, Delete removes it from the list (after asking).
        for keys, slot in ((("Return", "Enter"), self.use_selected), (("Delete",), self.remove_selected)):
            for key in keys:
                shortcut = QShortcut(QKeySequence(key), self.table)
                shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
                shortcut.activated.connect(slot)
        return self.table

    def _build_empty_state(self) -> QFrame:
        """What to do when no model is registered yet."""
        self.empty_state = QFrame()
        self.empty_state.setObjectName("emptyState")
        self.empty_text = styled_label(EMPTY_STATE_TEXT, "emptyText", wrap=True)
        self.empty_folder_button = button(
            "Add a Hugging Face folder…",
            self.registration.choose_folder,
            tooltip=self.add_folder_button.toolTip(),
            name="primaryButton",
        )
        self.empty_gguf_button = button(
            "Add a GGUF file…", self.registration.choose_gguf, tooltip=self.add_gguf_button.toolTip()
        )
        empty_buttons = QHBoxLayout()
        empty_buttons.addWidget(self.empty_folder_button)
        empty_buttons.addWidget(self.empty_gguf_button)
        empty_buttons.addStretch(1)
        empty_layout = QVBoxLayout(self.empty_state)
        empty_layout.setContentsMargins(24, 20, 24, 20)
        empty_layout.setSpacing(10)
        empty_layout.addStretch(1)
        empty_layout.addWidget(styled_label("No models yet", "emptyTitle"))
        empty_layout.addWidget(self.empty_text)
        empty_layout.addLayout(empty_buttons)
        empty_layout.addStretch(1)
        return self.empty_state

    # ---------------------------------------------------------------- registered models

    def refresh(self) -> None:
        """Re-read the registered models (keeping the selection when the model is still there)."""
        selected = self.selected_model()
        self._models = self.store.list_models()
        self.table.blockSignals(True)
        self.table.setRowCount(len(self._models))
        bold = QFont(self.table.font())
        bold.setBold(True)
        for row, model in enumerate(self._models):
            info = model.info
            name = f"{model.name}  ★ default" if model.is_default else model.name
            cells = [
                read_only_item(name, model.path),
                read_only_item(format_label(model)),
                read_only_item(str(info.get("architecture") or "—")),
                read_only_item(size_label(model)),
                read_only_item(f"{info['context_length']:,}" if info.get("context_length") else "—"),
                self._template_item(model),
                read_only_item(training_status(model)),
                read_only_item(SOURCE_LABELS.get(model.source, model.source)),
            ]
            cells[0].setData(Qt.ItemDataRole.UserRole, model.id)
            if model.is_default:
                cells[0].setFont(bold)
            for column, cell in enumerate(cells):
                self.table.setItem(row, column, cell)
        self.table.blockSignals(False)
        self.table.resizeRowsToContents()
        self.models_stack.setCurrentWidget(self.table if self._models else self.empty_state)
        # Nothing to detail before the first model: the models on this computer take the room.
        self.details.setVisible(bool(self._models))
        keep = selected.id if selected is not None else None
        if keep is None or not self.select_model(keep):
            if self._models:
                self.table.selectRow(0)
            else:
                self.table.clearSelection()
        self._show_details()
        self.discovered_card.show_registered(Path(m.path) for m in self._models)
        self._update_actions()

    @staticmethod
    def _template_item(model: ModelRow) -> QTableWidgetItem:
        status = template_status(model)  # renders the model's own template once (bounded by a budget)
        item = read_only_item(template_label(model, status), status.message)
        if status.needs_choice:  # amber, as the notice in its details: the model waits for the person
            colour_item_text(item, NEEDS_CHOICE_COLOUR)
            font = QFont(item.font())
            font.setBold(True)
            item.setFont(font)
        return item

    def models(self) -> list[ModelRow]:
        """The registered models, as listed."""
        return list(self._models)

    def row_texts(self, model_id: int) -> dict[str, str]:
        """What the table shows for one model, by column title (tests and accessibility read it)."""
        for row, model in enumerate(self._models):
            if model.id == model_id:
                return {title: self.table.item(row, c).text() for c, title in enumerate(COLUMNS)}
        raise KeyError(model_id)

    def select_model(self, model_id: int) -> bool:
        """Select a model in the table. False when it is not listed."""
        for row, model in enumerate(self._models):
            if model.id == model_id:
                self.table.selectRow(row)
                return True
        return False

    def selected_model(self) -> ModelRow | None:
        """The model selected in the table, or None."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or rows[0].row() >= len(self._models):
            return None
        return self._models[rows[0].row()]

    @Slot()
    def _on_table_selection_changed(self) -> None:
        self._show_details()
        self._update_actions()

    def _show_details(self) -> None:
        self.details.show_model(self.selected_model(), self.store, any_models=bool(self._models))

    @Slot()
    def _on_terms_requested(self) -> None:
        from desktop_dpo.core import demo_model
        from desktop_dpo.gui.terms_dialog import open_terms_dialog

        self.terms_dialog = open_terms_dialog(demo_model.demo_package(), self)
        if self.terms_dialog is None:
            self.show_error(
                "The Gemma terms come with the demo model package, which is not installed. They are "
                "published at https://ai.google.dev/gemma/terms."
            )

    # ---------------------------------------------------------------- chat template

    @Slot()
    def edit_template_of_selected(self) -> bool:
        """Open the chat-template editor for the selected model. True when the person stored a choice."""
        model = self.selected_model()
        if model is None:
            return False
        status = template_status(model)
        saved = open_template_editor(
            self, self.store, model, reason=status.message if status.needs_choice else ""
        )
        if saved is None:
            return False
        self.refresh()
        now = template_status(saved)
        self.notify(
            f"{saved.name}: {now.message} Collect, Chat, training and the export use it from the next answer."
        )
        self.models_changed.emit()  # Collect and Chat re-read the model, so their next sample uses it
        return True

    # ---------------------------------------------------------------- adding

    def add_model_path(
        self, path: str | Path, *, source: str = "user", name: str | None = None, allow_pickle: bool = False
    ) -> bool:
        """Register the model at ``path`` in a job (an HF folder or a GGUF file). Returns False when it could
        not start; the outcome (the model in the list, or why not in the banner) follows when the job ends."""
        return self.registration.add(path, source=source, name=name, allow_pickle=allow_pickle)

    @Slot(str)
    def _on_registration_reading(self, text: str) -> None:
        self.clear_error()
        self._set_activity(text, busy=True)
        self._update_actions()

    @Slot()
    def _on_registration_ended(self) -> None:
        self._set_activity("")
        self._update_actions()

    @Slot(int, str)
    def _on_model_added(self, model_id: int, name: str) -> None:
        self.refresh()
        self.select_model(model_id)
        self.notify(f"Added {name}.")
        self.models_changed.emit()

    # ---------------------------------------------------------------- on this computer

    @Slot()
    def rescan(self) -> bool:
        """Look for models on this computer again (in a worker thread). False when a scan is running."""
        return self.discovered_card.rescan()

    def is_scanning(self) -> bool:
        """True while the scan for models on this computer runs."""
        return self.discovered_card.is_scanning()

    def discovered(self) -> list[DiscoveredModel]:
        """The models found on this computer by the last scan."""
        return self.discovered_card.discovered()

    def add_button_for(self, label: str) -> QPushButton:
        """The Add button of a model found on this computer (by its label)."""
        return self.discovered_card.add_button_for(label)

    def add_discovered(self, index: int) -> bool:
        """Register a model found on this computer, under its label and where it was found."""
        return self._on_discovered_add_requested(self.discovered()[index])

    @Slot(object)
    def _on_discovered_add_requested(self, found: DiscoveredModel) -> bool:
        return self.add_model_path(found.path, source=found.source, name=found.label)

    # ---------------------------------------------------------------- choosing, default, removing

    @Slot()
    def use_selected(self) -> None:
        """Tell the other views to use the selected model."""
        model = self.selected_model()
        if model is None:
            return
        self.model_chosen.emit(model)
        self.notify(f"Collect and Chat now use {model.name}.")

    @Slot()
    def set_selected_default(self) -> None:
        """Make the selected model the one the app opens with."""
        model = self.selected_model()
        if model is None:
            return
        try:
            self.store.set_default_model(model.id)
        except DesktopDpoError as exc:
            self.show_error(f"The default was not changed: {exc}")
            return
        self.refresh()
        self.notify(f"{model.name} is now the default model.")
        self.models_changed.emit()

    @Slot()
    def remove_selected(self) -> bool:
        """Forget the selected model after asking (its files and the comparisons made with it stay)."""
        model = self.selected_model()
        if model is None or not self.remove_button.isEnabled():
            return False
        question = (
            f"Remove {model.name} from your models?\n\nIts files stay where they are ({model.path}), and the "
            "answers and comparisons made with it are kept. You can add it again later."
        )
        if not ask_yes_no(self, "Remove from list", question):
            return False
        try:
            self.store.remove_model(model.id)
        except DesktopDpoError as exc:
            self.show_error(f"{model.name} was not removed: {exc}")
            return False
        self.refresh()
        self.notify(f"Removed {model.name} from the list; its files were not touched.")
        self.models_changed.emit()
        return True

    # ---------------------------------------------------------------- trainable copy

    @Slot()
    def make_trainable_copy_of_selected(self) -> bool:
        """Start making a trainable copy of the selected GGUF (a job with progress and Stop)."""
        model = self.selected_model()
        if model is None or not self.copy_button.isEnabled():
            return False
        out_dir = trainable_copy_dir(self.paths, model)

        def factory(store: Store, token: CancelToken) -> Job:
            return recorded_trainable_copy(store, model, out_dir, cancel=token)

        self._copy = self.start_job(
            JobOp(self.registry, factory, store=self.paths.db_path, owner=self)
            .resource(COPY_RESOURCE)
            .slots("copy")
        )
        if self._copy is None:
            return False
        self._copy_model_id = model.id
        self.clear_error()
        self._set_activity(f"Making a trainable copy of {model.name}…", busy=True)
        self.activity_row.show_progress(0.0)
        self.stop_button.setVisible(True)
        self.stop_button.setEnabled(True)
        self._update_actions()
        return True

    @Slot()
    def stop_trainable_copy(self) -> None:
        """Stop the trainable copy at its next step; nothing half-made is kept."""
        if self._copy is not None and self._copy.active:
            self._copy.cancel()
            self.stop_button.setEnabled(False)
            self._set_activity("Stopping…", busy=True)

    def _on_copy_event(self, event: object) -> None:
        if isinstance(event, Progress):
            self.activity_row.show_progress(event.fraction)
            if event.message and self.stop_button.isEnabled():
                model = self.store.get_model(self._copy_model_id) if self._copy_model_id else None
                name = model.name if model is not None else "the model"
                step = event.message[:1].lower() + event.message[1:]
                self.activity_row.set_text(f"Making a trainable copy of {name}: {step}…")
        elif isinstance(event, Log):
            self.notify(event.message)

    def _end_copy(self) -> ModelRow | None:
        model = self.store.get_model(self._copy_model_id) if self._copy_model_id is not None else None
        self._copy_model_id = None
        self.stop_button.setVisible(False)
        self._set_activity("")
        return model

    def _on_copy_succeeded(self, model: object) -> None:
        self._end_copy()
        assert isinstance(model, ModelRow)  # the job recorded the copy where training looks for it
        self.refresh()
        self.notify(f"Trainable copy of {model.name} ready: training can use it now.")
        self.models_changed.emit()

    def _on_copy_failed(self, message: str) -> None:
        model = self._end_copy()
        name = model.name if model is not None else "the model"
        self.show_error(f"No trainable copy of {name} was made. {message}")
        self._update_actions()

    def _on_copy_cancelled(self) -> None:
        model = self._end_copy()
        self.notify(f"Stopped: no trainable copy of {model.name if model else 'the model'} was kept.")
        self._update_actions()

    # ---------------------------------------------------------------- state of the buttons

    def _update_actions(self) -> None:
        if not hasattr(self, "discovered_card"):
            return  # still building
        registering = self.registration.is_busy()
        for add in (
            self.add_folder_button,
            self.add_gguf_button,
            self.empty_folder_button,
            self.empty_gguf_button,
        ):
            add.setEnabled(not registering)
        self.discovered_card.update_buttons()

        model = self.selected_model()
        has = model is not None
        self.use_button.setEnabled(has)
        self.template_button.setEnabled(has)
        self.default_button.setEnabled(has and model is not None and not model.is_default)
        copying = self.registry.is_busy(COPY_RESOURCE) or (self._copy is not None and self._copy.active)
        status = training_status(model) if model is not None else ""
        copy_reason = ""
        if model is None:
            copy_reason = "Select a model first."
        elif status == TRAINABLE_AS_IS:
            copy_reason = "This model is a Hugging Face folder: training loads it as it is."
        elif status == COPY_READY:
            copy_reason = "The trainable copy is ready."
        elif status == CHAT_ONLY:
            copy_reason = (
                f"transformers cannot turn a '{model.info.get('architecture')}' GGUF back into a trainable "
                "model. You can still chat with it."
            )
        elif copying:
            copy_reason = "A trainable copy is being made; wait for it or stop it."
        self.copy_button.setEnabled(not copy_reason)
        self.copy_button.setToolTip(
            copy_reason
            or "Dequantize this GGUF once into a folder training can load (bf16 safetensors, in the app's data folder)"
        )
        busy_reason = ""
        if model is not None and (
            self.registry.is_busy(f"generate:{model.id}") or (copying and self._copy_model_id == model.id)
        ):
            busy_reason = "A job is using this model; wait for it to finish."
        self.remove_button.setEnabled(has and not busy_reason)
        self.remove_button.setToolTip(
            busy_reason or "Forget this model; its files and your comparisons stay (Delete)"
        )

    @Slot()
    def _on_registry_changed(self) -> None:
        self._update_actions()

    # ---------------------------------------------------------------- messages

    def _set_activity(self, text: str, *, busy: bool = False) -> None:
        super()._set_activity(text)
        self.activity_row.bar.setVisible(busy)
        if busy and not self.stop_button.isVisible():
            self.activity_row.show_progress(None)  # no progress to show: a busy indicator

    # ---------------------------------------------------------------- showing and closing

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        super().showEvent(event)
        window = self.window()
        if window is not self and window is not self._watched_window:
            # See eventFilter: quitting waits for a scan in progress.
            window.installEventFilter(self)
            self._watched_window = window
        # Models may have been added elsewhere (an aligned model after an export) while this view was hidden.
        self.refresh()
        self.discovered_card.scan_once()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        # The window is closing: a scan still running is given a moment to end, so that its thread never
        # outlives the application.
        if event.type() == QEvent.Type.Close and watched is self._watched_window:
            self.discovered_card.wait_for_scan(SCAN_WAIT_ON_CLOSE_MS)
        elif event.type() == QEvent.Type.Resize and watched is self.table.viewport():
            self._fit_columns()
        return False

    def _fit_columns(self) -> None:
        """Keep the names readable in a narrow window: the columns the details panel also shows go first (in
        :data:`DROPPED_FIRST` order) while the name would get less than :data:`NAME_MIN_PX`."""
        table, head = self.table, self.table.horizontalHeader()
        for title in DROPPED_FIRST:
            table.setColumnHidden(COLUMNS.index(title), False)
        others = [c for c in range(len(COLUMNS)) if COLUMNS[c] != "Name"]
        for title in DROPPED_FIRST:
            shown = sum(head.sectionSize(c) for c in others if not table.isColumnHidden(c))
            if table.viewport().width() - shown >= NAME_MIN_PX:
                break
            table.setColumnHidden(COLUMNS.index(title), True)

    def details_texts(self) -> dict[str, str]:
        """What the details panel shows: its heading, each field, and the template box."""
        return self.details.texts()
