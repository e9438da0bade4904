"""Import and export of preference files (TRL JSONL) as menu actions that run as jobs.

A file may hold thousands of pairs, so the work runs on a worker thread with its own database
connection; the actions are disabled while a data job runs (one job per resource).

An import first runs asking about duplicates: when some pairs of the file are already stored, nothing is
written and the person is asked "Skip them / Import anyway / Cancel" (window-modal, so the GUI thread
keeps running); the answer starts the import again with that choice (the file is read a second time
only then).

An import that meets a database kept locked by another window or program (longer than the wait) shows why,
who holds it where that can be seen, and offers "Try Again"; nothing was imported.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QWidget

from desktop_dpo.core.errors import DatabaseBusy, DuplicatePairsFound
from desktop_dpo.core.jobs import CancelToken, Log
from desktop_dpo.core.store import Store
from desktop_dpo.core.wording import plural
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

if TYPE_CHECKING:
    from PySide6.QtWidgets import QAbstractButton, QMessageBox

    from desktop_dpo.core.preference_io import DuplicateChoice, ExportResult, ImportResult

# The dialogs and message boxes are imported where they open: the main window builds these actions at
# start-up, and PySide builds a Qt class's enums the first time Python touches it.

DATA_RESOURCE = "data"  # the JobRegistry resource: one import or export at a time
FILE_FILTER = "Preference files (*.jsonl *.json);;All files (*)"
# File-dialog filter -> export format. Conversational first: it keeps multi-turn prompts.
EXPORT_FILTERS = {
    "TRL conversational: chat messages (*.jsonl)": "conversational",
    "TRL standard: prompt, chosen, rejected as text (*.jsonl)": "standard",
}


class DuplicatesFound(NamedTuple):
    """An import that stopped before writing because some pairs are already stored: ask the person."""

    source: Path
    duplicates: int  # pairs of the file already stored (or repeated in it)
    total: int  # pairs of the file that would be imported


class DatabaseWasBusy(NamedTuple):
    """An import that found the database locked by another window or program: nothing was written."""

    source: Path
    duplicates: DuplicateChoice  # the choice the import ran with, kept for "Try Again"
    message: str  # why, and who holds the database where that can be seen


def import_job(
    db_path: Path,
    backups_dir: Path,
    source: Path,
    token: CancelToken,
    duplicates: DuplicateChoice = "ask",
    busy_timeout_s: float = 30.0,
) -> Generator[Any, None, Any]:
    """Import ``source`` into the database, on the calling (worker) thread's own connection.

    Returns the ``ImportResult``; :class:`DuplicatesFound` (nothing written) when ``duplicates`` is
    "ask" and some pairs are already stored; :class:`DatabaseWasBusy` (nothing written) when another
    writer kept the database locked for longer than ``busy_timeout_s``.
    """
    from desktop_dpo.core.preference_io import import_preferences

    yield Log(f"Importing {source.name}…")
    token.raise_if_cancelled()
    try:
        with Store.open(db_path, backups_dir=backups_dir, busy_timeout_s=busy_timeout_s) as store:
            try:
                return import_preferences(store, source, duplicates=duplicates)
            except DuplicatePairsFound as found:
                # A question for the person, not a failure: handed back as a plain result.
                return DuplicatesFound(source, found.duplicates, found.total)
    except DatabaseBusy as busy:
        # Also a question ("Try Again?"), so handed back as a plain result too.
        return DatabaseWasBusy(source, duplicates, str(busy))


def export_job(
    db_path: Path, backups_dir: Path, target: Path, fmt: str, token: CancelToken
) -> Generator[Any, None, Any]:
    """Export every usable pair to ``target`` in ``fmt``, on the worker thread's own connection."""
    from desktop_dpo.core.preference_io import export_preferences

    yield Log(f"Exporting to {target.name}…")
    token.raise_if_cancelled()
    with Store.open(db_path, backups_dir=backups_dir) as store:
        return export_preferences(store, target, file_format=fmt)


class PreferenceFileActions(QObject):
    """The "Import preferences…" and "Export preferences…" actions (menu bar, Data view).

    Signals:
        message(str): a line for the status bar.
        data_changed(): an import added pairs (counts should be re-read).

    ``duplicates_question`` is the open "already in your data" question, if any (window-modal, so the
    GUI thread keeps running while it waits for an answer); ``busy_question`` the open "the database is
    busy: Try Again?" message. ``busy_timeout_s`` is how long an import waits for another writer.
    """

    message = Signal(str)
    data_changed = Signal()

    def __init__(
        self,
        *,
        registry: JobRegistry,
        db_path: Path,
        backups_dir: Path,
        parent_widget: QWidget,
        busy_timeout_s: float = 30.0,
    ):
        super().__init__(parent_widget)
        self._registry = registry
        self._db_path = db_path
        self._backups_dir = backups_dir
        self._parent_widget = parent_widget
        self.duplicates_question: QMessageBox | None = None
        self.busy_question: QMessageBox | None = None
        self.busy_timeout_s = busy_timeout_s

        self.import_action = QAction("&Import Preferences…", parent_widget)
        self.import_action.setShortcut(QKeySequence("Ctrl+I"))
        self.import_action.setToolTip("Add the pairs of a TRL preference file (JSONL) to your data")
        self.import_action.triggered.connect(self._on_import_triggered)
        self.export_action = QAction("&Export Preferences…", parent_widget)
        self.export_action.setShortcut(QKeySequence("Ctrl+E"))
        self.export_action.setToolTip("Write your pairs as a TRL preference file (JSONL)")
        self.export_action.triggered.connect(self._on_export_triggered)
        registry.changed.connect(self._on_registry_changed)

    # ---------------------------------------------------------------- starting jobs

    def start_import(self, source: Path, duplicates: DuplicateChoice = "ask") -> None:
        """Import ``source`` in the background (what the action does after its file dialog).

        ``duplicates``: "ask" (pairs already stored: ask the person first), "skip" or "import".
        """

        def on_succeeded(result: ImportResult | DuplicatesFound | DatabaseWasBusy) -> None:
            if isinstance(result, DuplicatesFound):
                self._ask_about_duplicates(result)
            elif isinstance(result, DatabaseWasBusy):
                self._offer_to_try_again(result)
            else:
                self._on_import_succeeded(source, result)

        def factory(token: CancelToken) -> Generator[Any, None, Any]:
            return import_job(
                self._db_path, self._backups_dir, source, token, duplicates, self.busy_timeout_s
            )

        (
            JobOp(self._registry, factory, owner=self)
            .resource(DATA_RESOURCE, describe="Importing preferences")
            .on_event(self._on_data_event)
            .on_success(on_succeeded)
            .on_failure(lambda message: self._on_data_failed("Import failed", message))
            .on_cancelled(lambda: self.message.emit("Import stopped; nothing was imported."))
            .start()
        )

    def start_export(self, target: Path, fmt: str) -> None:
        """Export to ``target`` in the background (what the action does after its file dialog)."""

        def factory(token: CancelToken) -> Generator[Any, None, Any]:
            return export_job(self._db_path, self._backups_dir, target, fmt, token)

        (
            JobOp(self._registry, factory, owner=self)
            .resource(DATA_RESOURCE, describe="Exporting preferences")
            .on_event(self._on_data_event)
            .on_success(lambda result: self._on_export_succeeded(target, fmt, result))
            .on_failure(lambda message: self._on_data_failed("Export failed", message))
            .on_cancelled(lambda: self.message.emit("Export stopped."))
            .start()
        )

    # ---------------------------------------------------------------- slots

    @Slot()
    def _on_import_triggered(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        name, _filter = QFileDialog.getOpenFileName(
            self._parent_widget, "Import preferences", str(Path.home()), FILE_FILTER
        )
        if name:
            self.start_import(Path(name))

    @Slot()
    def _on_export_triggered(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        filters = ";;".join(EXPORT_FILTERS)
        name, chosen = QFileDialog.getSaveFileName(
            self._parent_widget, "Export preferences", str(Path.home() / "preferences.jsonl"), filters
        )
        if not name:
            return
        target = Path(name)
        if not target.suffix:
            target = target.with_suffix(".jsonl")
        self.start_export(target, EXPORT_FILTERS.get(chosen, "conversational"))

    @Slot()
    def _on_registry_changed(self) -> None:
        idle = not self._registry.is_busy(DATA_RESOURCE)
        self.import_action.setEnabled(idle)
        self.export_action.setEnabled(idle)

    def _on_data_event(self, event: object) -> None:
        if isinstance(event, Log):
            self.message.emit(event.message)

    def _ask_about_duplicates(self, found: DuplicatesFound) -> None:
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Some pairs are already in your data",
            f"{found.duplicates} of {plural(found.total, 'pair')} in {found.source.name} "
            f"{'is' if found.duplicates == 1 else 'are'} already in your data.",
            QMessageBox.StandardButton.NoButton,
            self._parent_widget,
        )
        box.setInformativeText(
            "Skip them to import only the new pairs, or import them anyway to have them twice "
            "(training then weighs them double)."
        )
        skip = box.addButton("Skip Them", QMessageBox.ButtonRole.AcceptRole)
        anyway = box.addButton("Import Anyway", QMessageBox.ButtonRole.ActionRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(skip)
        box.setEscapeButton(cancel)  # Escape and closing the box cancel: nothing is imported
        choices: dict[QAbstractButton, DuplicateChoice] = {skip: "skip", anyway: "import"}

        def on_clicked(button: QAbstractButton) -> None:
            self.duplicates_question = None
            box.deleteLater()
            choice = choices.get(button)
            if choice is None:
                self.message.emit(f"Import of {found.source.name} cancelled; nothing was imported.")
            else:
                self._when_data_idle(lambda: self.start_import(found.source, choice))

        box.buttonClicked.connect(on_clicked)
        self.duplicates_question = box
        box.open()  # window-modal, without a nested event loop: the answer arrives as a signal

    def _offer_to_try_again(self, busy: DatabaseWasBusy) -> None:
        from PySide6.QtWidgets import QMessageBox

        self.message.emit(f"Import of {busy.source.name} failed: the database is busy; nothing was imported.")
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Import failed",
            busy.message,
            QMessageBox.StandardButton.NoButton,
            self._parent_widget,
        )
        again = box.addButton("Try Again", QMessageBox.ButtonRole.AcceptRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(again)
        box.setEscapeButton(cancel)  # Escape and closing the box: nothing is imported

        def on_clicked(button: QAbstractButton) -> None:
            self.busy_question = None
            box.deleteLater()
            if button is again:
                self._when_data_idle(lambda: self.start_import(busy.source, busy.duplicates))
            else:
                self.message.emit(f"Import of {busy.source.name} cancelled; nothing was imported.")

        box.buttonClicked.connect(on_clicked)
        self.busy_question = box
        box.open()  # window-modal, like the duplicates question

    def _when_data_idle(self, start: Callable[[], None]) -> None:
        """Call ``start`` now, or once the data job still running has ended (one data job at a time).

        The question about duplicates is asked as soon as the checking job answers, and that job may not
        have ended yet when the answer comes.
        """
        if not self._registry.is_busy(DATA_RESOURCE):
            start()
            return

        def on_registry_changed() -> None:
            if not self._registry.is_busy(DATA_RESOURCE):
                self._registry.changed.disconnect(on_registry_changed)
                start()

        self._registry.changed.connect(on_registry_changed)

    def _on_import_succeeded(self, source: Path, result: ImportResult) -> None:
        text = f"Imported {plural(result.imported, 'pair')} from {source.name}."
        if result.identical_skipped:
            text += f" Skipped {plural(result.identical_skipped, 'pair')} with identical answers."
        if result.duplicates_skipped:
            text += f" {plural(result.duplicates_skipped, 'duplicate')} skipped (already in your data)."
        if result.duplicates_imported:
            text += f" {plural(result.duplicates_imported, 'duplicate')} imported anyway."
        self.message.emit(text)
        self.data_changed.emit()

    def _on_export_succeeded(self, target: Path, fmt: str, result: ExportResult) -> None:
        from PySide6.QtWidgets import QMessageBox

        self.message.emit(f"Wrote {plural(result.written, 'pair')} to {target} ({fmt}).")
        if result.skipped:
            reasons = "\n".join(f"• comparison {cid}: {reason}" for cid, reason in result.skipped[:10])
            more = f"\n… and {len(result.skipped) - 10} more" if len(result.skipped) > 10 else ""
            QMessageBox.information(
                self._parent_widget,
                "Some pairs were left out",
                f"Wrote {plural(result.written, 'pair')} to {target}. "
                f"{plural(len(result.skipped), 'pair')} cannot be written in the {fmt} format:\n\n"
                f"{reasons}{more}",
            )

    def _on_data_failed(self, title: str, message: str) -> None:
        from PySide6.QtWidgets import QMessageBox

        self.message.emit(title)
        QMessageBox.warning(self._parent_widget, title, message)
