"""The Models view: the models the app knows, the ones already on this computer, and what each can do.

A person adds a Hugging Face folder or a GGUF file, or one that the Hugging Face hub, LM Studio or Ollama
already downloaded (listed under "On this computer"), and then picks the model Collect and Chat use, the
default the app opens with, or removes one from the list (its files stay where they are).

Everything that reads a disk runs as a job (a :class:`~desktop_dpo.workers.job_op.JobOp`), so a slow or
network disk never freezes the window:

- registering reads headers and fingerprints the weights (:func:`inspect_for_registration`, resource
  ``register-model``); the view, on the GUI thread's store, writes the row from what the job returns.
- the scan for models on this computer (:func:`~desktop_dpo.core.models.discover_local_models`, resource
  ``scan-models``) runs when the view is first shown and on "Rescan". It is a quiet job: it lists folders in
  milliseconds and holds no model, so it is not shown as running nor asked about at quit (quitting waits
  for it instead).
- a GGUF that training cannot load gets a trainable copy (:func:`~desktop_dpo.core.models.make_trainable_copy`,
  resource ``trainable-copy``) with a progress bar and a Stop button; the view records the copy's folder
  under the model's info key ``trainable_copy``, where training looks for it.

A folder whose weights are only pickle files (which can run code when loaded) is registered only after
the person says yes to a warning.

Each model's details say which chat template it is used with; "Chat template…" opens the editor
(:mod:`desktop_dpo.gui.template_editor`), where a known template can be picked or the template edited. A
model that cannot be used until a template is chosen (a GGUF without one, a broken one) is marked in the
list and gets an amber notice with "Choose a template…".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, Signal, Slot
from PySide6.QtGui import QBrush, QColor, QFont, QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.config import AppPaths
from desktop_dpo.core.errors import DesktopDpoError, ModelError
from desktop_dpo.core.jobs import CancelToken, Job, Log, Progress
from desktop_dpo.core.llm.template_choice import template_status
from desktop_dpo.core.model_files import (
    TRAINABLE_COPY_KEY,
    trainable_copy_dir,
)
from desktop_dpo.core.models import (
    DiscoveredModel,
    ModelInfo,
    ModelSearchDirs,
    discover_local_models,
    fingerprint,
    inspect_model,
    make_trainable_copy,
)
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.core.wording import human_size
from desktop_dpo.gui import widgets
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.model_details_panel import (
    CHAT_ONLY,
    COPY_READY,
    KIND_LABELS,
    SOURCE_LABELS,
    TRAINABLE_AS_IS,
    ModelDetails,
    format_label,
    size_label,
    template_label,
    training_status,
)
from desktop_dpo.gui.template_editor import (
    NEEDS_CHOICE_COLOUR,
    open_template_editor,
)
from desktop_dpo.gui.view_messages import ActivityLine, ViewMessages
from desktop_dpo.gui.widgets import make_page, page_header
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

log = logging.getLogger(__name__)

REGISTER_RESOURCE = "register-model"
SCAN_RESOURCE = "scan-models"
COPY_RESOURCE = "trainable-copy"
# Quitting waits this long for a scan of folders to end instead of asking about it (a scan takes
# milliseconds; only a hanging network disk would reach this).
SCAN_WAIT_ON_CLOSE_MS = 3000

EMPTY_STATE_TEXT = (
    "Add a Hugging Face folder or a GGUF file to start. A Hugging Face folder holds config.json and "
    ".safetensors weights; a GGUF file is what llama.cpp, LM Studio and Ollama use. Models already on this "
    "computer are listed below: add one with a click."
)
GGUF_FILE_FILTER = "GGUF models (*.gguf);;All files (*)"
PICKLE_QUESTION = (
    "{name} stores its weights only as pickle files. Loading a pickle file can run any code that was put "
    "into it, with your permissions: only allow this for a model from a source you trust.\n\n"
    "Add it with its pickle weights?"
)

COLUMNS = ("Name", "Format", "Architecture", "Size", "Context", "Chat template", "Training", "Source")
# Columns whose text wraps onto a second line, and the text each must fit without breaking a word: the
# table then fits the window's default width without a horizontal scroll bar.
WRAPPED_COLUMNS = {
    "Format": "Hugging Face ·",
    "Size": "1.5B parameters",
    "Chat template": "default User:/Assistant:",
    "Training": "needs a trainable",
}
DISCOVERED_COLUMNS = ("Model", "Found in", "Size", "")


# --------------------------------------------------------------------------------------------------------
# Jobs (run in worker threads; they read files and return plain objects, the view writes the rows)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InspectedModel:
    """A model read and fingerprinted, ready to be recorded by the view."""

    info: ModelInfo
    fingerprint: str
    source: str  # the store's source value: user | hf_cache | lmstudio | ollama ...
    name: str | None  # the name to record (a discovered model's label), None for the model's own


@dataclass(frozen=True)
class PickleConsentNeeded:
    """The folder is usable only with its pickle weights: the person must say yes first."""

    path: str
    name: str  # what the question calls the model
    reason: str  # core's refusal, shown when the person says no
    source: str
    label: str | None  # the name to record if they say yes


def inspect_for_registration(
    path: str | Path, *, source: str, name: str | None, allow_pickle: bool, cancel: CancelToken
) -> Job:
    """Read a model's headers and fingerprint it (a job). Returns :class:`InspectedModel`, or
    :class:`PickleConsentNeeded` when only allowing its pickle weights would make it usable.

    Raises:
        ModelError: the model cannot be used, in words the person can act on.
    """
    path = Path(path)
    yield Progress(0, 2, f"Reading {path.name}")
    try:
        info = inspect_model(path, allow_pickle=allow_pickle)
    except ModelError as refusal:
        if allow_pickle:
            raise
        try:
            # Header reads only: asking again tells "pickle weights" from every other refusal.
            with_pickle = inspect_model(path, allow_pickle=True)
        except ModelError:
            raise refusal from None
        return PickleConsentNeeded(str(path), name or with_pickle.name, str(refusal), source, name)
    cancel.raise_if_cancelled()
    yield Progress(1, 2, f"Fingerprinting {info.name}")
    return InspectedModel(info, fingerprint(info.path), source, name)


def scan_for_models(search_dirs: ModelSearchDirs | None) -> Job:
    """List the models already on this computer (a job returning ``list[DiscoveredModel]``)."""
    yield Progress(0, 0, "Looking for models on this computer")
    return discover_local_models(search_dirs)


# --------------------------------------------------------------------------------------------------------
# The view
# --------------------------------------------------------------------------------------------------------


def _item(text: str, tooltip: str = "") -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    if tooltip:
        item.setToolTip(tooltip)
    return item


class ModelsView(ViewMessages, QWidget):
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
        super().__init__(parent)
        make_page(self, "models")
        self.store = store
        self.registry = registry
        self.paths = paths
        self.search_dirs = search_dirs

        self._models: list[ModelRow] = []
        self._discovered: list[DiscoveredModel] = []
        self._scanned = False  # the first show starts a scan
        self._scan: JobOp | None = None
        self._register: JobOp | None = None
        self._copy: JobOp | None = None
        self._copy_model_id: int | None = None
        self._watched_window: QWidget | None = None

        self._build()
        registry.changed.connect(self._on_registry_changed)
        self.refresh()

    # ---------------------------------------------------------------- building

    def _build(self) -> None:
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.setObjectName("secondaryButton")
        self.add_folder_button.setToolTip(
            "Add a Hugging Face model folder (config.json and .safetensors weights)"
        )
        self.add_folder_button.clicked.connect(self._on_add_folder_clicked)
        self.add_gguf_button = QPushButton("Add GGUF file…")
        self.add_gguf_button.setObjectName("secondaryButton")
        self.add_gguf_button.setToolTip("Add a single .gguf file (llama.cpp, LM Studio, Ollama)")
        self.add_gguf_button.clicked.connect(self._on_add_gguf_clicked)
        header = page_header(
            "Models",
            "Models you align, chat with and sample from. Everything stays on this computer.",
            self.add_folder_button,
            self.add_gguf_button,
            spacing=8,
        )

        # -- error banner and the activity line (registration, trainable copy)
        self.banner = MessageBanner()
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("secondaryButton")
        self.stop_button.setToolTip("Stop making the trainable copy (nothing half-made is kept)")
        self.stop_button.setVisible(False)
        self.stop_button.clicked.connect(self.stop_trainable_copy)
        self.activity_row = ActivityLine()
        self.activity_row.add_widget(self.stop_button)

        # -- registered models: a table, or an empty state that says what to do
        self.table = self._build_table()
        self.empty_state = self._build_empty_state()
        self.models_stack = QStackedWidget()
        self.models_stack.addWidget(self.empty_state)
        self.models_stack.addWidget(self.table)

        # -- details of the selected model, with what can be done with it
        self.details = ModelDetails()
        self.details.terms_requested.connect(self._on_terms_requested)
        self.terms_dialog: QWidget | None = None
        # The panel's parts, as the view's own (its buttons act on the selected model).
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
        # -- models found on this computer
        self.discovered_card = self._build_discovered()

        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.setChildrenCollapsible(False)
        lower.addWidget(self.details)
        lower.addWidget(self.discovered_card)
        lower.setStretchFactor(0, 1)
        lower.setStretchFactor(1, 1)
        lower.setSizes([10_000, 10_000])  # half each, whatever the panels' preferred sizes
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.models_stack)
        self.splitter.addWidget(lower)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 16)
        layout.setSpacing(10)
        layout.addLayout(header)
        layout.addWidget(self.banner)
        layout.addWidget(self.activity_row)
        layout.addWidget(self.splitter, 1)

    def _build_table(self) -> QTableWidget:
        """The registered models, one row each."""
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("modelTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(False)
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
        empty_title = QLabel("No models yet")
        empty_title.setObjectName("emptyTitle")
        self.empty_text = QLabel(EMPTY_STATE_TEXT)
        self.empty_text.setObjectName("emptyText")
        self.empty_text.setWordWrap(True)
        self.empty_folder_button = QPushButton("Add a Hugging Face folder…")
        self.empty_folder_button.setObjectName("primaryButton")
        self.empty_folder_button.setToolTip(self.add_folder_button.toolTip())
        self.empty_folder_button.clicked.connect(self._on_add_folder_clicked)
        self.empty_gguf_button = QPushButton("Add a GGUF file…")
        self.empty_gguf_button.setObjectName("secondaryButton")
        self.empty_gguf_button.setToolTip(self.add_gguf_button.toolTip())
        self.empty_gguf_button.clicked.connect(self._on_add_gguf_clicked)
        empty_buttons = QHBoxLayout()
        empty_buttons.addWidget(self.empty_folder_button)
        empty_buttons.addWidget(self.empty_gguf_button)
        empty_buttons.addStretch(1)
        empty_layout = QVBoxLayout(self.empty_state)
        empty_layout.setContentsMargins(24, 20, 24, 20)
        empty_layout.setSpacing(10)
        empty_layout.addStretch(1)
        empty_layout.addWidget(empty_title)
        empty_layout.addWidget(self.empty_text)
        empty_layout.addLayout(empty_buttons)
        empty_layout.addStretch(1)
        return self.empty_state

    def _build_discovered(self) -> QFrame:
        card, layout = widgets.card((16, 12, 16, 12), 6)
        heading = QLabel("On this computer")
        heading.setObjectName("cardHeading")
        self.rescan_button = QPushButton("Rescan")
        self.rescan_button.setObjectName("secondaryButton")
        self.rescan_button.setToolTip("Look again in the Hugging Face cache, LM Studio and Ollama folders")
        self.rescan_button.clicked.connect(self.rescan)
        top = QHBoxLayout()
        top.addWidget(heading, 1)
        top.addWidget(self.rescan_button)
        layout.addLayout(top)
        self.discovered_note = QLabel("Models in the Hugging Face cache, LM Studio and Ollama.")
        self.discovered_note.setObjectName("cardNote")
        self.discovered_note.setWordWrap(True)
        # Room for two lines: a wrapped label inside a splitter otherwise gets the height of one.
        self.discovered_note.setMinimumHeight(2 * self.discovered_note.fontMetrics().lineSpacing() + 4)
        layout.addWidget(self.discovered_note)
        self.discovered_table = QTableWidget(0, len(DISCOVERED_COLUMNS))
        self.discovered_table.setObjectName("discoveredTable")
        self.discovered_table.setHorizontalHeaderLabels(DISCOVERED_COLUMNS)
        self.discovered_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.discovered_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.discovered_table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.discovered_table.verticalHeader().setVisible(False)
        self.discovered_table.setShowGrid(False)
        self.discovered_table.setWordWrap(False)
        self.discovered_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        head = self.discovered_table.horizontalHeader()
        head.setHighlightSections(False)
        head.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.discovered_table, 1)
        layout.addStretch(0)  # takes the room while the table is hidden (nothing found)
        return card

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
                _item(name, model.path),
                _item(format_label(model)),
                _item(str(info.get("architecture") or "—")),
                _item(size_label(model)),
                _item(f"{info['context_length']:,}" if info.get("context_length") else "—"),
                self._template_item(model),
                _item(training_status(model)),
                _item(SOURCE_LABELS.get(model.source, model.source)),
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
        self._fill_discovered()
        self._update_actions()

    @staticmethod
    def _template_item(model: ModelRow) -> QTableWidgetItem:
        status = template_status(model)  # renders the model's own template once (bounded by a budget)
        item = _item(template_label(model, status), status.message)
        if status.needs_choice:  # amber, as the notice in its details: the model waits for the person
            item.setForeground(QBrush(QColor(NEEDS_CHOICE_COLOUR)))
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

    @Slot()
    def _on_add_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a Hugging Face model folder", str(Path.home()))
        if folder:
            self.add_model_path(folder)

    @Slot()
    def _on_add_gguf_clicked(self) -> None:
        name, _filter = QFileDialog.getOpenFileName(
            self, "Add a GGUF file", str(Path.home()), GGUF_FILE_FILTER
        )
        if name:
            self.add_model_path(name)

    def add_model_path(
        self, path: str | Path, *, source: str = "user", name: str | None = None, allow_pickle: bool = False
    ) -> bool:
        """Register the model at ``path`` in a job (an HF folder or a GGUF file). Returns False when it could
        not start; the outcome (the model in the list, or why not in the banner) follows when the job ends."""

        def factory(token: CancelToken) -> Job:
            return inspect_for_registration(
                path, source=source, name=name, allow_pickle=allow_pickle, cancel=token
            )

        self._register = self.start_job(
            JobOp(self.registry, factory, owner=self).resource(REGISTER_RESOURCE).slots("register")
        )
        if self._register is None:
            return False
        self.clear_error()
        self._set_activity(f"Reading {Path(path).name}…", busy=True)
        self._update_actions()
        return True

    def _on_register_succeeded(self, result: object) -> None:
        self._set_activity("")
        if isinstance(result, PickleConsentNeeded):
            answer = QMessageBox.question(
                self,
                "Allow pickle weights?",
                PICKLE_QUESTION.format(name=result.name),
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer == QMessageBox.StandardButton.Yes:
                self.add_model_path(result.path, source=result.source, name=result.label, allow_pickle=True)
            else:
                self.show_error(f"Not added. {result.reason}")
            return
        assert isinstance(result, InspectedModel)
        info = result.info
        try:
            model_id = self.store.add_model(
                name=result.name or info.name,
                path=info.path,
                kind=info.kind,
                fingerprint=result.fingerprint,
                source=result.source,
                info=info.to_dict(),
            )
        except DesktopDpoError as exc:
            self.show_error(f"{info.name} was not added: {exc}")
            return
        self.refresh()
        self.select_model(model_id)
        self.notify(f"Added {result.name or info.name}.")
        self.models_changed.emit()

    def _on_register_failed(self, message: str) -> None:
        self._set_activity("")
        self.show_error(message)
        self._update_actions()

    def _on_register_cancelled(self) -> None:
        self._set_activity("")
        self._update_actions()

    # ---------------------------------------------------------------- on this computer

    @Slot()
    def rescan(self) -> bool:
        """Look for models on this computer again (in a worker thread). False when a scan is running."""
        self._scanned = True
        if self.is_scanning():
            return False
        search_dirs = self.search_dirs
        # Quiet: a scan lists folders in milliseconds and holds no model, so it is neither shown as a running
        # job nor asked about at quit (the window waits for it instead, see eventFilter).
        try:
            self._scan = (
                JobOp(self.registry, lambda _token: scan_for_models(search_dirs), owner=self)
                .resource(SCAN_RESOURCE)
                .quiet()
                .slots("scan")
                .on_cancelled(self._update_actions)
                .start()
            )
        except DesktopDpoError as exc:  # a scan of another Models view (a second window) still runs
            self.discovered_note.setText(str(exc))
            return False
        self.discovered_note.setText("Looking in the Hugging Face cache, LM Studio and Ollama folders…")
        self._update_actions()
        return True

    def is_scanning(self) -> bool:
        """True while the scan for models on this computer runs."""
        return self._scan is not None and self._scan.active

    def _on_scan_succeeded(self, found: object) -> None:
        self._discovered = list(found) if isinstance(found, list) else []
        count = len(self._discovered)
        if count:
            self.discovered_note.setText(
                f"{count} model{'s' if count != 1 else ''} in the Hugging Face cache, LM Studio and Ollama."
            )
        else:
            self.discovered_note.setText(
                "No models in the Hugging Face cache, LM Studio or Ollama folders. Add a folder or a GGUF file "
                "above."
            )
        self._fill_discovered()
        self._update_actions()

    def _on_scan_failed(self, message: str) -> None:
        self.discovered_note.setText(f"Could not look for models: {message}")
        self._update_actions()

    def discovered(self) -> list[DiscoveredModel]:
        """The models found on this computer by the last scan."""
        return list(self._discovered)

    def _fill_discovered(self) -> None:
        registered = {Path(m.path) for m in self._models}
        table = self.discovered_table
        table.setRowCount(len(self._discovered))
        table.setVisible(bool(self._discovered))
        busy = self.registry.is_busy(REGISTER_RESOURCE)
        for row, found in enumerate(self._discovered):
            kind = KIND_LABELS.get(found.kind, found.kind)
            table.setItem(row, 0, _item(found.label, f"{kind}: {found.path}"))
            table.setItem(row, 1, _item(SOURCE_LABELS.get(found.source, found.source)))
            table.setItem(row, 2, _item(human_size(found.size_bytes)))
            added = found.path.absolute() in registered or found.path in registered
            button = QPushButton("Added" if added else "Add")
            button.setObjectName("addButton")
            button.setEnabled(not added and not busy)
            button.setToolTip(f"Add {found.label} to your models" if not added else "Already in your models")
            button.clicked.connect(lambda _checked=False, index=row: self.add_discovered(index))
            table.setCellWidget(row, 3, button)

    def add_button_for(self, label: str) -> QPushButton:
        """The Add button of a model found on this computer (by its label)."""
        for row, found in enumerate(self._discovered):
            if found.label == label:
                widget = self.discovered_table.cellWidget(row, 3)
                assert isinstance(widget, QPushButton)
                return widget
        raise KeyError(label)

    def add_discovered(self, index: int) -> bool:
        """Register a model found on this computer, under its label and where it was found."""
        found = self._discovered[index]
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
        answer = QMessageBox.question(
            self,
            "Remove from list",
            f"Remove {model.name} from your models?\n\nIts files stay where they are ({model.path}), and the "
            "answers and comparisons made with it are kept. You can add it again later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
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
        gguf_path = model.path

        def factory(token: CancelToken) -> Job:
            return make_trainable_copy(gguf_path, out_dir, cancel=token)

        self._copy = self.start_job(
            JobOp(self.registry, factory, owner=self).resource(COPY_RESOURCE).slots("copy")
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

    def _on_copy_succeeded(self, out_dir: object) -> None:
        model_id = self._copy_model_id
        model = self._end_copy()
        if model is None or model_id is None:
            self.show_error(f"The trainable copy is in {out_dir}, but its model was removed meanwhile.")
            self._update_actions()
            return
        try:
            # The job writes no rows; its driver records the copy where training looks for it.
            self.store.update_model_info(model_id, **{TRAINABLE_COPY_KEY: str(out_dir)})
        except DesktopDpoError as exc:
            self.show_error(f"The trainable copy was made in {out_dir} but could not be recorded: {exc}")
            self._update_actions()
            return
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
        if not hasattr(self, "remove_button"):
            return  # still building
        registering = self.registry.is_busy(REGISTER_RESOURCE)
        for button in (
            self.add_folder_button,
            self.add_gguf_button,
            self.empty_folder_button,
            self.empty_gguf_button,
        ):
            button.setEnabled(not registering)
        for row in range(self.discovered_table.rowCount()):
            widget = self.discovered_table.cellWidget(row, 3)
            if isinstance(widget, QPushButton):
                widget.setEnabled(widget.text() == "Add" and not registering)
        self.rescan_button.setEnabled(not self.is_scanning())

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
        if not self._scanned:
            self.rescan()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        # The window is closing: a scan still running is given a moment to end, so that its thread never
        # outlives the application.
        scan = self._scan
        if event.type() == QEvent.Type.Close and watched is self._watched_window and scan is not None:
            scan.cancel()
            scan.wait(SCAN_WAIT_ON_CLOSE_MS)
        return False

    def details_texts(self) -> dict[str, str]:
        """What the details panel shows: its heading, each field, and the template box."""
        return self.details.texts()
