"""The main window: a sidebar of views, a menu bar and a status bar.

Views get what they need injected (store, job registry, paths); nothing here is global. Closing the
window while a job runs asks first; stopping means cancelling each job and letting it reach a step boundary,
never killing a thread. Meanwhile the event loop runs on: the window stays painted and says it is stopping,
and closes once the last job has ended.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

from PySide6.QtCore import QSettings, QSize, Qt, Signal, Slot
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo import __version__
from desktop_dpo.config import AppPaths
from desktop_dpo.core import demo_model
from desktop_dpo.core.dpo.pair_counts import PAIRS_EXPLAINED, store_pair_counts, training_text
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.offline import RefusedAttempt
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.core.wording import plural
from desktop_dpo.gui.preference_file_actions import PreferenceFileActions
from desktop_dpo.gui.resource_files import resource_icon
from desktop_dpo.gui.theme import APPEARANCE_KEY, CHOICE_LABELS, CHOICES, SYSTEM, current_theme, install_theme
from desktop_dpo.gui.widgets import standard_keys
from desktop_dpo.workers.job_worker import JobRegistry

if TYPE_CHECKING:
    from PySide6.QtGui import QCloseEvent, QResizeEvent

    from desktop_dpo.gui.first_run import FirstRun

# Message boxes and the desktop services are imported where they are used: PySide builds a Qt class's
# enums the first time Python touches it, and the window touches none of these before its first paint.

log = logging.getLogger(__name__)

STATUS_MESSAGE_MS = 8000
WINDOW_TITLE = "desktop-dpo"
STATUS_JOBS_MAX_PX = 340  # room for the running jobs' words in the status bar (or more in a wide window)
STATUS_GAPS_PX = 100  # the status bar's margins, the separators between its labels and their spacing
STATUS_DATABASE_MIN_PX = 160  # the database's path in the status bar, at least (shortened in its middle)


class ViewSpec(NamedTuple):
    """One entry of the sidebar."""

    key: str  # stable name used by tests, settings and show_view()
    label: str  # what the sidebar shows
    icon: str  # file in resources/icons/
    tooltip: str  # one line: what a person does there


VIEWS = (
    ViewSpec("models", "Models", "icons/models.svg", "Choose the model to align and chat with"),
    ViewSpec("collect", "Collect", "icons/collect.svg", "Judge two answers side by side"),
    ViewSpec("train", "Train", "icons/train.svg", "Train QLoRA-DPO on your picks"),
    ViewSpec("export", "Export", "icons/export.svg", "Export the aligned model as GGUF"),
    ViewSpec("chat", "Chat", "icons/chat.svg", "Talk to a model; every conversation is kept"),
    ViewSpec("evaluate", "Evaluate", "icons/evaluate.svg", "Compare the aligned model with its base, blind"),
    ViewSpec("data", "Data", "icons/data.svg", "Browse, import and export your preferences"),
    ViewSpec("storage", "Storage", "icons/storage.svg", "What the app keeps on disk; free space safely"),
)


class MainWindow(QMainWindow):
    """Sidebar + stacked views, menu bar and status bar (database, pairs collected, running jobs).

    Its public API, which other parts of the GUI use (``FirstRun`` uses nothing else, see
    ``first_run.FirstRunHost``): ``store``, ``registry``, ``paths``, ``view_keys()``, ``current_view()``,
    ``view(key)``, ``show_view(key)``, ``add_above_view(key, widget)`` and the signals below.

    Signals:
        network_refused(object): a :class:`RefusedAttempt`; may be emitted from any thread.
        view_changed(str): the key of the view now on screen.
        pairs_changed(): pairs were saved, undone, deleted or imported in this window.
        closing(): the window is closing, before it asks about running jobs (work that needs no question,
            such as unpacking the demo model, stops here).
    """

    network_refused = Signal(object)
    view_changed = Signal(str)
    pairs_changed = Signal()
    closing = Signal()

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
        self.store = store
        self.registry = registry
        self.paths = paths
        # Loaded llama.cpp engines, shared by Collect and Chat; the composition root closes them at exit.
        self.pool = pool if pool is not None else EnginePool()
        # Kept in the data folder, not ~/.config: nothing is written outside the app's folders.
        self._settings = QSettings(str(paths.window_settings), QSettings.Format.IniFormat)

        self.setWindowTitle(WINDOW_TITLE)
        self.setMinimumSize(QSize(820, 520))
        self.resize(QSize(1120, 720))

        self.preference_actions = PreferenceFileActions(
            registry=registry, db_path=paths.db_path, backups_dir=paths.backups_dir, parent_widget=self
        )
        self.preference_actions.message.connect(self._show_message)
        self.preference_actions.data_changed.connect(self._on_pairs_changed)

        # The model picked with "Use this model", handed to Collect and Chat when they are built.
        self._chosen_model: ModelRow | None = None
        self.nav: QListWidget  # the sidebar, built by _build_central
        self.pages: QStackedWidget  # one slot per sidebar entry, in the same order
        self._view_keys: list[str] = []
        self._views: dict[str, QWidget] = {}
        # The person chose to quit while jobs ran: they are stopping, and the window closes once they have.
        self._quitting = False
        self.first_run: FirstRun | None = None  # see start_first_run()
        self._build_central()
        self._build_menus()
        self._build_status_bar()

        registry.changed.connect(self._on_registry_changed)
        self.network_refused.connect(self._on_network_refused)
        self.nav.currentRowChanged.connect(self._on_nav_row_changed)

        self._restore_settings()
        self.refresh_status()

    # ---------------------------------------------------------------- building

    def _build_central(self) -> None:
        # Every widget is created inside its parent: a widget reparented later is styled a second time, and
        # the window is built at every start.
        central = QWidget(self)
        self.setCentralWidget(central)
        sidebar = QFrame(central)
        sidebar.setObjectName("sidebar")
        sidebar.setFixedWidth(212)
        side = QVBoxLayout(sidebar)
        side.setContentsMargins(0, 18, 0, 12)
        side.setSpacing(0)

        brand = QHBoxLayout()
        brand.setContentsMargins(18, 0, 18, 0)
        brand.setSpacing(10)
        logo = QLabel(sidebar)
        logo.setPixmap(resource_icon("desktop-dpo.svg").pixmap(QSize(34, 34)))
        names = QVBoxLayout()
        names.setSpacing(0)
        title = QLabel("desktop-dpo", sidebar)
        title.setObjectName("sidebarTitle")
        subtitle = QLabel("Align a model, offline", sidebar)
        subtitle.setObjectName("sidebarSubtitle")
        names.addWidget(title)
        names.addWidget(subtitle)
        brand.addWidget(logo)
        brand.addLayout(names, 1)
        side.addLayout(brand)
        side.addSpacing(18)

        self.nav = QListWidget(sidebar)
        self.nav.setObjectName("navList")
        self.nav.setIconSize(QSize(20, 20))
        self.nav.setFrameShape(QFrame.Shape.NoFrame)
        self.nav.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.nav.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.pages = QStackedWidget(central)
        for spec in VIEWS:
            item = QListWidgetItem(resource_icon(spec.icon), spec.label)
            item.setToolTip(spec.tooltip)
            item.setData(Qt.ItemDataRole.UserRole, spec.key)
            self.nav.addItem(item)
            # An empty slot per view: a view is built the first time it is shown, so the window opens
            # without paying for views nobody has looked at yet.
            slot = QWidget(self.pages)
            slot_layout = QVBoxLayout(slot)
            slot_layout.setContentsMargins(0, 0, 0, 0)
            self.pages.addWidget(slot)
            self._view_keys.append(spec.key)
        side.addWidget(self.nav, 1)

        footer = QLabel(f"Version {__version__} · offline", sidebar)
        footer.setObjectName("sidebarFooter")
        footer.setContentsMargins(20, 0, 20, 0)
        side.addWidget(footer)

        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(sidebar)
        row.addWidget(self.pages, 1)

    def _make_view(self, key: str, slot: QWidget) -> QWidget:
        """The widget for one sidebar entry, built inside its (so far empty) slot of the stack."""
        if key == "models":
            from desktop_dpo.gui.models_view import ModelsView

            models_view = ModelsView(store=self.store, registry=self.registry, paths=self.paths, parent=slot)
            models_view.models_changed.connect(self._on_models_changed)
            models_view.model_chosen.connect(self._on_model_chosen)
            return models_view
        if key == "collect":
            from desktop_dpo.gui.collect_view import CollectView

            view = CollectView(
                store=self.store, registry=self.registry, pool=self.pool, paths=self.paths, parent=slot
            )
            view.pairs_changed.connect(self._on_pairs_changed)
            if self._chosen_model is not None:
                view.set_model(self._chosen_model)
            return view
        if key == "train":
            from desktop_dpo.gui.train_view import TrainView

            view = TrainView(
                store=self.store, registry=self.registry, paths=self.paths, pool=self.pool, parent=slot
            )
            view.runs_changed.connect(self.refresh_status)
            view.data_check_line.open_requested.connect(self.open_data_check)
            return view
        if key == "export":
            from desktop_dpo.gui.export_view import ExportView

            export_view = ExportView(store=self.store, registry=self.registry, paths=self.paths, parent=slot)
            export_view.models_changed.connect(self._on_models_changed)
            export_view.model_chosen.connect(self._on_chat_requested)
            export_view.evaluate_requested.connect(self._on_evaluate_requested)
            return export_view
        if key == "chat":
            from desktop_dpo.gui.chat_view import ChatView

            chat = ChatView(
                store=self.store, registry=self.registry, pool=self.pool, paths=self.paths, parent=slot
            )
            chat.models_requested.connect(lambda: self.show_view("models"))
            chat.compare_requested.connect(self._on_compare_requested)
            if self._chosen_model is not None:
                chat.set_model(self._chosen_model)
            return chat
        if key == "evaluate":
            from desktop_dpo.gui.evaluate_view import EvaluateView

            evaluate = EvaluateView(
                store=self.store, registry=self.registry, pool=self.pool, paths=self.paths, parent=slot
            )
            evaluate.models_changed.connect(self._on_models_changed)
            return evaluate
        if key == "data":
            from desktop_dpo.gui.data_view import DataView

            data_view = DataView(
                store=self.store,
                import_action=self.preference_actions.import_action,
                export_action=self.preference_actions.export_action,
                registry=self.registry,
                db_path=self.paths.db_path,
                parent=slot,
            )
            data_view.data_changed.connect(self._on_pairs_changed)
            data_view.collect_requested.connect(lambda: self.show_view("collect"))
            data_view.label_smoothing_chosen.connect(self._use_label_smoothing)
            # An import finished on its worker's connection: read the table again.
            self.preference_actions.data_changed.connect(data_view.refresh)
            return data_view
        if key == "storage":
            from desktop_dpo.gui.storage_view import StorageView

            storage = StorageView(store=self.store, registry=self.registry, paths=self.paths, parent=slot)
            storage.storage_changed.connect(self._on_models_changed)
            return storage
        raise ValueError(f"Unknown view {key!r}")

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self.preference_actions.import_action)
        file_menu.addAction(self.preference_actions.export_action)
        file_menu.addSeparator()
        self.open_data_folder_action = QAction("Open &Data Folder", self)
        self.open_data_folder_action.setToolTip(f"Open {self.paths.data_dir} in the file manager")
        self.open_data_folder_action.triggered.connect(self._on_open_data_folder_triggered)
        file_menu.addAction(self.open_data_folder_action)
        file_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        # Windows (and some desktops) bind no Quit key: Ctrl+Q there, as elsewhere (⌘Q on macOS).
        self.quit_action.setShortcuts(standard_keys(QKeySequence.StandardKey.Quit, "Ctrl+Q"))
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        # close() goes through closeEvent, so quitting asks about running jobs too.
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)

        view_menu = self.menuBar().addMenu("&View")
        for index, spec in enumerate(VIEWS):
            action = QAction(spec.label, self)
            action.setShortcut(QKeySequence(f"Ctrl+{index + 1}"))
            action.triggered.connect(lambda _checked=False, key=spec.key: self.show_view(key))
            view_menu.addAction(action)
        view_menu.addSeparator()
        self._build_appearance_menu(view_menu.addMenu("&Appearance"))

        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = QAction("&About desktop-dpo", self)
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)
        self.about_action.triggered.connect(self._on_about_triggered)
        help_menu.addAction(self.about_action)
        self.diagnostics_action = QAction("&Diagnostics…", self)
        self.diagnostics_action.setToolTip("What llama.cpp, torch and bitsandbytes see on this computer")
        self.diagnostics_action.triggered.connect(self._on_diagnostics_triggered)
        help_menu.addAction(self.diagnostics_action)
        self.diagnostics_dialog: QWidget | None = None
        self.terms_action: QAction | None = None
        self.terms_dialog: QWidget | None = None
        if demo_model.demo_installed():  # the Gemma terms come with the demo model package
            self.terms_action = QAction("Gemma terms of use…", self)
            self.terms_action.setToolTip("The terms of use of the bundled demo model, Gemma 3 270M")
            self.terms_action.triggered.connect(self._on_terms_triggered)
            help_menu.addAction(self.terms_action)

    def _build_appearance_menu(self, menu: QMenu) -> None:
        """Match System, Light or Dark: one is checked, the choice is remembered for the next start."""
        theme = current_theme()
        chosen = theme.choice if theme is not None else SYSTEM
        group = QActionGroup(self)
        self.appearance_actions: dict[str, QAction] = {}
        for choice in CHOICES:
            action = QAction(CHOICE_LABELS[choice], group)
            action.setCheckable(True)
            action.setChecked(choice == chosen)
            action.triggered.connect(lambda _checked=False, c=choice: self.choose_appearance(c))
            menu.addAction(action)
            self.appearance_actions[choice] = action

    def choose_appearance(self, choice: str) -> None:
        """Show the app in ``choice`` ("system", "light" or "dark") from now on, and at the next start."""
        install_theme(QApplication.instance(), choice)
        self.appearance_actions[choice].setChecked(True)
        self._settings.setValue(APPEARANCE_KEY, choice)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        bar.setSizeGripEnabled(False)
        self.status_jobs = QLabel(bar)
        self.status_jobs.setObjectName("statusJobs")
        # Set before the first polish, so refresh_status() re-polishes it only when a job starts or ends.
        self.status_jobs.setProperty("busy", False)
        self.status_pairs = QLabel(bar)
        self.status_pairs.setObjectName("statusPairs")
        self.status_database = QLabel(bar)
        self.status_database.setObjectName("statusDatabase")
        self.status_database.setToolTip(f"Database: {self.paths.db_path}")
        for index, label in enumerate((self.status_jobs, self.status_pairs, self.status_database)):
            if index:
                separator = QFrame(bar)
                separator.setObjectName("statusSeparator")  # a 1-pixel rule, coloured by the style sheet
                separator.setFixedWidth(1)
                bar.addPermanentWidget(separator)
            bar.addPermanentWidget(label)
        # A note on the left (a saved pick, a job's line) gets its share of the bar, and its whole text in
        # the bar's tooltip.
        bar.messageChanged.connect(self._on_status_message_changed)

    def _on_status_message_changed(self, message: str) -> None:
        self.statusBar().setToolTip(message)
        self._fit_status_jobs()

    # ---------------------------------------------------------------- navigation

    def view_keys(self) -> list[str]:
        """The sidebar's views, in order."""
        return list(self._view_keys)

    def current_view(self) -> str:
        """Key of the view on screen."""
        return self._view_keys[self.pages.currentIndex()]

    def view(self, key: str) -> QWidget:
        """The widget of one view (built now if it was never shown)."""
        existing = self._views.get(key)
        if existing is not None:
            return existing
        slot = self.pages.widget(self._view_keys.index(key))
        view = self._make_view(key, slot)
        slot.layout().addWidget(view)
        self._views[key] = view
        return view

    def show_view(self, key: str) -> None:
        """Bring a view to the front (the sidebar follows)."""
        self.nav.setCurrentRow(self._view_keys.index(key))

    def open_data_check(self) -> None:
        """Show the Data view with its data check open (Train's "Open the check")."""
        self.show_view("data")
        self.view("data").open_check()  # type: ignore[attr-defined]

    def add_above_view(self, key: str, widget: QWidget) -> None:
        """Put a widget at the top of a view's page, above the view, whether the view is built yet or not
        (the welcome card on Collect)."""
        slot = self.pages.widget(self._view_keys.index(key))
        slot.layout().insertWidget(0, widget)

    @Slot(int)
    def _on_nav_row_changed(self, row: int) -> None:
        if row < 0:
            return
        key = self._view_keys[row]
        self.view(key)
        self.pages.setCurrentIndex(row)
        self.refresh_status()
        self.view_changed.emit(key)

    # ---------------------------------------------------------------- models shared by the views

    @Slot(object)
    def _on_model_chosen(self, model: ModelRow) -> None:
        """The person chose a model in Models: Collect and Chat sample from it from now on (built or not)."""
        self._chosen_model = model
        for key in ("collect", "chat"):
            view = self._views.get(key)
            if view is not None:
                view.set_model(model)  # type: ignore[attr-defined]
        self._show_message(f"Collect and Chat now use {model.name}.")

    @Slot(object)
    def _on_chat_requested(self, model: ModelRow) -> None:
        """The person wants to chat with an exported model: open Chat on it."""
        self._on_model_chosen(model)
        self.show_view("chat")

    @Slot(object, object)
    def _on_compare_requested(self, messages: list[dict[str, str]], model: ModelRow | None) -> None:
        """A chat message goes to Collect: Collect opens on the conversation up to it, ready to sample."""
        collect = self.view("collect")
        opened = collect.open_conversation(messages, model=model)  # type: ignore[attr-defined]
        self.show_view("collect")  # refused or not: Collect says why it did not take the conversation
        if opened:
            turn = sum(1 for m in messages if m["role"] == "user")
            self._show_message(f"Collect: two answers to turn {turn} of the chat, ready to sample.")

    @Slot(object)
    def _on_evaluate_requested(self, aligned: ModelRow) -> None:
        """Evaluate an exported model against the model it was trained from, blind."""
        base = self.store.get_model(aligned.parent_model_id) if aligned.parent_model_id is not None else None
        if base is None:
            self._show_message(f"The base model of {aligned.name} is no longer registered; add it in Models.")
            return
        evaluate = self.view("evaluate")
        evaluate.set_models(base, aligned)  # type: ignore[attr-defined]
        self.show_view("evaluate")

    @Slot()
    def _on_models_changed(self) -> None:
        """A model was added, removed or changed: views that list models read them again."""
        for view in self._views.values():
            refresh_models = getattr(view, "refresh_models", None)
            if callable(refresh_models):
                refresh_models()
        self.refresh_status()

    # ---------------------------------------------------------------- status bar

    @Slot()
    def refresh_status(self) -> None:
        """Re-read the counts shown in the status bar (the usable ones as every view counts them)."""
        pairs = self.store.count_comparisons()
        counts = store_pair_counts(self.store)
        self.status_pairs.setText(
            f"{pairs} {'pair' if pairs == 1 else 'pairs'} collected · {counts.usable} usable for training"
        )
        self.status_pairs.setToolTip(f"{training_text(counts)}\n\n{PAIRS_EXPLAINED}")
        self.status_jobs.setToolTip(self._jobs_text())
        busy = bool(self.registry.running()) or self._quitting
        if self.status_jobs.property("busy") != busy:
            self.status_jobs.setProperty("busy", busy)
            # Re-apply the style sheet so the #statusJobs[busy="true"] rule follows the property.
            self.status_jobs.style().unpolish(self.status_jobs)
            self.status_jobs.style().polish(self.status_jobs)
        self._fit_status_jobs()  # after the polish: a running job's words are bold

    def _fit_status_jobs(self) -> None:
        """The running jobs' words in the status bar, whole where the window has room: the database's path
        gives way first (shortened in its middle, down to :data:`STATUS_DATABASE_MIN_PX`), then the words
        (down to :data:`STATUS_JOBS_MAX_PX`; many jobs at once would push the counts off the bar). The
        tooltips say it all."""
        free = self.width() - self.status_pairs.sizeHint().width() - STATUS_GAPS_PX
        jobs, metrics = self.status_jobs.toolTip(), self.status_jobs.fontMetrics()
        note = self.statusBar().currentMessage()
        if note:  # the note on the left takes what it needs, up to half of what is free, before the path
            free -= min(self.statusBar().fontMetrics().horizontalAdvance(note) + 24, free // 2)
        room = max(STATUS_JOBS_MAX_PX, free - STATUS_DATABASE_MIN_PX)
        self.status_jobs.setText(metrics.elidedText(jobs, Qt.TextElideMode.ElideRight, room))
        path_room = max(STATUS_DATABASE_MIN_PX, free - metrics.horizontalAdvance(self.status_jobs.text()))
        path_metrics = self.status_database.fontMetrics()
        path = self._elided_path(str(self.paths.db_path))
        self.status_database.setText(path_metrics.elidedText(path, Qt.TextElideMode.ElideMiddle, path_room))

    def resizeEvent(self, event: QResizeEvent) -> None:  # Qt override
        super().resizeEvent(event)
        self._fit_status_jobs()

    def _jobs_text(self) -> str:
        """The status bar's word on the jobs: what each running one does, in words (never a resource id)."""
        doing = self.registry.running_descriptions()
        if self._quitting:
            return f"Stopping: {', '.join(doing)}…" if doing else "Stopping…"
        return " · ".join(f"{what}…" for what in doing) if doing else "No jobs running"

    @staticmethod
    def _elided_path(path: str, limit: int = 48) -> str:
        return path if len(path) <= limit else f"{path[:16]}…{path[-(limit - 17) :]}"

    @Slot()
    def _on_pairs_changed(self) -> None:
        self.refresh_status()
        self.pairs_changed.emit()

    @Slot()
    def _on_registry_changed(self) -> None:
        # A finished job may have written pairs (an import, a collect session), so re-count too.
        self.refresh_status()
        if self._quitting:
            self.registry.cancel_all()  # a job started meanwhile (from a dialog) stops too
            if self.registry.idle():
                self.close()  # closeEvent accepts now

    @Slot(str)
    def _show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, STATUS_MESSAGE_MS)

    @Slot(float)
    def _use_label_smoothing(self, smoothing: float) -> None:
        """The data check's suggestion taken: set it on Train's form and go there."""
        from desktop_dpo.gui.data_check_panel import use_label_smoothing

        message = use_label_smoothing(self.view("train"), smoothing)  # type: ignore[arg-type]
        self.show_view("train")
        self._show_message(message)

    @Slot(object)
    def _on_network_refused(self, attempt: RefusedAttempt) -> None:
        self._show_message(f"Blocked a network connection to {attempt.target}: desktop-dpo works offline.")

    # ---------------------------------------------------------------- menu actions

    @Slot()
    def _on_open_data_folder_triggered(self) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices
        from PySide6.QtWidgets import QMessageBox

        self.paths.data_dir.mkdir(parents=True, exist_ok=True)
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.paths.data_dir))):
            QMessageBox.information(
                self,
                "Data folder",
                f"No file manager could be opened. Your data is in:\n{self.paths.data_dir}",
            )

    @Slot()
    def _on_about_triggered(self) -> None:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.about(self, "About desktop-dpo", self.about_text())

    @Slot()
    def _on_diagnostics_triggered(self) -> None:
        dialog = self.diagnostics_dialog
        if dialog is not None and dialog.isVisible():  # one at a time: it runs a probe
            dialog.raise_()
            dialog.activateWindow()
            return
        from desktop_dpo.gui.diagnostics_dialog import open_diagnostics_dialog

        self.diagnostics_dialog = open_diagnostics_dialog(self.paths, self.registry, self)
        self.diagnostics_dialog.destroyed.connect(self._on_diagnostics_destroyed)

    @Slot()
    def _on_diagnostics_destroyed(self) -> None:
        self.diagnostics_dialog = None

    @Slot()
    def _on_terms_triggered(self) -> None:
        from desktop_dpo.gui.terms_dialog import open_terms_dialog

        self.terms_dialog = open_terms_dialog(demo_model.demo_package(), self)

    def about_text(self) -> str:
        """Version and where the files are (rich text for the About box)."""
        return (
            f"<h3>desktop-dpo {__version__}</h3>"
            "<p>Collect your preferences, train QLoRA-DPO, export GGUF and chat: all on this computer, "
            "with no network.</p>"
            f"<p><b>Data:</b> {self.paths.data_dir}<br>"
            f"<b>Database:</b> {self.paths.db_path}<br>"
            f"<b>Logs:</b> {self.paths.log_dir}</p>"
        )

    # ---------------------------------------------------------------- first run

    def start_first_run(self) -> bool:
        """Greet an empty database (a welcome card on Collect) and, when the bundled demo model is installed
        but not registered (or its file is gone), unpack and register it as the default model in a job.
        Called once the window is shown; a second call does nothing. Returns True when the job will run."""
        if self.first_run is not None:
            return False
        from desktop_dpo.gui.first_run import FirstRun

        self.first_run = FirstRun(self, parent=self)
        self.first_run.message.connect(self._show_message)
        self.first_run.demo_model_ready.connect(self._on_models_changed)
        started = self.first_run.start()
        card = self.first_run.card
        if card is not None:  # a pair on Collect folds the welcome to one line: the answers get the room
            self.view("collect").pair_started.connect(lambda: card.set_compact(True))  # type: ignore[attr-defined]
        return started

    # ---------------------------------------------------------------- closing

    def closeEvent(self, event: QCloseEvent) -> None:  # Qt override
        if self._quitting:
            if not self.registry.idle():
                # Asked again while stopping: no second question, just where things stand.
                self.statusBar().showMessage(self._stopping_message())
                event.ignore()
                return
            log.info("Jobs stopped; quitting")
        else:
            self.closing.emit()
            doing = self.registry.running_descriptions()
            if doing:
                if not self._confirm_stop(doing):
                    event.ignore()
                    return
                if not self._stop_jobs_then_close():
                    event.ignore()  # closes itself once they have stopped (_on_registry_changed)
                    return
        self._save_settings()
        event.accept()

    def _confirm_stop(self, doing: list[str]) -> bool:
        """Ask whether to stop the running jobs (``doing``, in words) and quit. True for Yes."""
        from PySide6.QtWidgets import QMessageBox

        question = (
            "A job is running: stop it and quit?"
            if len(doing) == 1
            else f"{plural(len(doing), 'job')} are running: stop them and quit?"
        )
        answer = QMessageBox.question(
            self,
            "Quit desktop-dpo",
            question + "\n\n" + "\n".join(f"• {what}" for what in doing),
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _stop_jobs_then_close(self) -> bool:
        """Ask every job to stop and say so; the event loop runs on while they reach a step boundary (threads
        are never terminated). True when none runs any more, so the window may close at once."""
        self.registry.cancel_all()
        if self.registry.idle():
            return True
        log.info("Stopping %s before quitting", ", ".join(self.registry.running()))
        self._quitting = True
        self.setWindowTitle(f"{WINDOW_TITLE} (stopping…)")
        # Nothing new starts meanwhile; the window stays painted, and a second close only repeats the note.
        self.centralWidget().setEnabled(False)
        self.menuBar().setEnabled(False)
        self.setCursor(Qt.CursorShape.BusyCursor)
        self.statusBar().showMessage(self._stopping_message())
        self.refresh_status()
        return False

    def _stopping_message(self) -> str:
        """The status bar's note while the jobs stop before quitting: short, as the jobs label beside it names
        them ("Stopping: Training…") and must fit too."""
        return "Quitting…"

    # ---------------------------------------------------------------- settings

    def _restore_settings(self) -> None:
        geometry = self._settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        key = self._settings.value("window/view")
        if key not in self._view_keys:
            # First start: Collect, where the welcome card greets an empty database, unless there are pairs
            # already but no model to collect with.
            has_model = self.store.default_model() is not None
            key = "collect" if has_model or self.store.count_comparisons() == 0 else "models"
        self.show_view(key)

    def _save_settings(self) -> None:
        self._settings.setValue("window/geometry", self.saveGeometry())
        self._settings.setValue("window/view", self.current_view())
        self._settings.sync()
