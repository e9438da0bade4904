"""The Storage view: what desktop-dpo keeps on this computer, how big it is, and a safe clean-up.

The list comes from :func:`desktop_dpo.core.storage.scan_storage` (run as a job on the resource
``storage``, so a large models folder never blocks the window) and shows each item's size, what it is for
and whether it may go. Only removable items can be ticked; checkpoints of a stopped or failed run can be
ticked once the person says they will not resume it. "Clean up…" names the total to be freed and asks
before anything is deleted; the clean-up (:func:`~desktop_dpo.core.storage.remove_items`) runs as a job,
judges every item again before deleting it, and updates the rows that pointed at what it removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHeaderView,
    QMessageBox,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from desktop_dpo.config import AppPaths
from desktop_dpo.core.jobs import Progress
from desktop_dpo.core.storage import (
    CleanupResult,
    Removing,
    StorageItem,
    remove_items,
    scan_job,
    total_size,
)
from desktop_dpo.core.store import Store
from desktop_dpo.core.wording import human_size
from desktop_dpo.gui import widgets
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.page_view import PageView
from desktop_dpo.gui.theme import colour_item_text, follow_scheme, recolour_items
from desktop_dpo.gui.view_messages import ActivityLine
from desktop_dpo.gui.widgets import STRETCH, PageHeader, hbox, styled_label, vbox
from desktop_dpo.workers.job_op import JobOp, StoreJobFactory
from desktop_dpo.workers.job_worker import JobRegistry

log = logging.getLogger(__name__)

RESOURCE = "storage"
COLUMNS = ("What", "Size", "What it is for", "Can it go?")
COLUMN_WHAT, COLUMN_SIZE, COLUMN_FOR, COLUMN_STATUS = range(len(COLUMNS))
ITEM_ROLE = Qt.ItemDataRole.UserRole  # the StorageItem of a row, on its first cell
MUTED = "#64748b"  # in the light scheme (gui/theme.py)


def ask_yes_no(parent: QWidget, title: str, text: str) -> bool:
    """A Yes/No question, No by default (nothing is deleted by a stray Enter)."""
    answer = QMessageBox.question(
        parent,
        title,
        text,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


class _SizeItem(QTableWidgetItem):
    """A size cell that sorts by bytes, not by its text ("9 MB" after "10 GB")."""

    def __init__(self, size: int):
        super().__init__(human_size(size))
        self.size = size
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:  # Qt override
        return self.size < other.size if isinstance(other, _SizeItem) else super().__lt__(other)


class StorageView(PageView):
    """What the app keeps on disk, with sizes, and a clean-up of what may go.

    Args:
        store: the GUI thread's database connection (its file is what the jobs open on their own thread).
        registry: the job registry (scan and clean-up run on resource ``storage``).
        paths: the app's folders.

    Signals:
        status_message(str): a line for the status bar.
        storage_changed(): a clean-up removed files (other views may re-read models and runs).
    """

    PAGE = "storage"

    status_message = Signal(str)
    storage_changed = Signal()

    def __init__(
        self, *, store: Store, registry: JobRegistry, paths: AppPaths, parent: QWidget | None = None
    ):
        super().__init__(store=store, registry=registry, paths=paths, parent=parent)
        self.db_path = store.path or paths.db_path
        # Asks before deleting; tests replace it. (parent, title, text) -> yes?
        self.confirm: Callable[[QWidget, str, str], bool] = ask_yes_no
        self.items: list[StorageItem] = []
        self.last_result: CleanupResult | None = None
        self._scanned_once = False
        self._result_message = ""  # what the last clean-up freed
        self._filling = False
        self._build()
        registry.changed.connect(self._on_registry_changed)
        self._update_actions()

    # ---------------------------------------------------------------- building

    def _build(self) -> None:
        self.rescan_button = widgets.button("Rescan", self.scan, tooltip="Measure the app's folders again")
        header = PageHeader(
            "Storage",
            "What desktop-dpo keeps on this computer, and what can go. Copies are made again when needed; "
            "what a model, a run or an export still needs stays.",
            self.rescan_button,
        )

        self.total_label = styled_label("Measuring…", "storageTotal")
        self.freeable_label = styled_label("", "storageFreeable")
        totals = hbox(self.total_label, 12, self.freeable_label, STRETCH)

        self.table = QTableWidget(0, len(COLUMNS))
        follow_scheme(self.table, lambda: recolour_items(self.table))
        self.table.setObjectName("storageTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setSortingEnabled(True)
        heading = self.table.horizontalHeader()
        heading.setSectionResizeMode(COLUMN_WHAT, QHeaderView.ResizeMode.ResizeToContents)
        heading.setSectionResizeMode(COLUMN_SIZE, QHeaderView.ResizeMode.ResizeToContents)
        heading.setSectionResizeMode(COLUMN_FOR, QHeaderView.ResizeMode.Stretch)
        heading.setSectionResizeMode(COLUMN_STATUS, QHeaderView.ResizeMode.Stretch)
        self.table.itemChanged.connect(self._on_table_item_changed)

        self.resume_check = QCheckBox("Offer checkpoints of stopped runs")
        self.resume_check.setToolTip(
            "A stopped or failed run continues from its checkpoints; without them it starts again at step 0. "
            "Tick this only for runs you will not resume."
        )
        self.resume_check.toggled.connect(self._on_resume_toggled)
        self.selected_label = styled_label("", "storageSelected")
        self.select_button = widgets.button("Select all that can go", self.select_all_removable)
        self.clean_button = widgets.button(
            "Clean up…",
            self.clean_up,
            tooltip="Delete the ticked items (you are asked first)",
            name="primaryButton",
        )
        actions = hbox(
            self.resume_check, STRETCH, self.selected_label, 8, self.select_button, self.clean_button
        )

        card, card_layout = widgets.card((14, 12, 14, 12), 10)
        card_layout.addLayout(totals)
        card_layout.addWidget(self.table, 1)
        card_layout.addLayout(actions)

        self.banner = MessageBanner()
        self.activity_row = ActivityLine()

        vbox(
            header,
            self.banner,
            (card, 1),
            self.activity_row,
            parent=self,
            margins=(24, 20, 24, 16),
            spacing=12,
        )

    # ---------------------------------------------------------------- the list

    def _fill(self, items: list[StorageItem]) -> None:
        self.items = items
        confirm = self.resume_check.isChecked()
        self._filling = True
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(items))
        for row, item in enumerate(items):
            what = QTableWidgetItem(item.label)
            what.setData(ITEM_ROLE, item)
            what.setToolTip(item.path)
            flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
            if item.can_remove(confirm):
                flags |= Qt.ItemFlag.ItemIsUserCheckable
                what.setCheckState(Qt.CheckState.Unchecked)
            what.setFlags(flags)
            purpose = QTableWidgetItem(item.used_by)
            purpose.setToolTip(f"{item.used_by}\n{item.path}")
            verdict = "Can go. " if item.removable else ""
            status = QTableWidgetItem(verdict + item.reason)
            status.setToolTip(item.reason)
            if not item.can_remove(confirm):
                colour_item_text(status, MUTED)
            for column, cell in ((COLUMN_WHAT, what), (COLUMN_FOR, purpose), (COLUMN_STATUS, status)):
                cell.setFlags(
                    flags
                    if column == COLUMN_WHAT
                    else Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                )
                self.table.setItem(row, column, cell)
            self.table.setItem(row, COLUMN_SIZE, _SizeItem(item.size_bytes))
        self.table.setSortingEnabled(True)
        self.table.sortItems(COLUMN_SIZE, Qt.SortOrder.DescendingOrder)
        self._filling = False
        total = total_size(items)
        freeable = total_size(i for i in items if i.can_remove(confirm))
        self.total_label.setText(f"desktop-dpo keeps {human_size(total)} in {len(items)} items")
        self.freeable_label.setText(f"{human_size(freeable)} can go" if freeable else "Nothing can go now")
        self._update_selection()

    def _row_item(self, row: int) -> StorageItem | None:
        cell = self.table.item(row, COLUMN_WHAT)
        return cell.data(ITEM_ROLE) if cell is not None else None

    def row_of(self, path: str) -> int:
        """The table row showing ``path`` (-1 when none)."""
        for row in range(self.table.rowCount()):
            item = self._row_item(row)
            if item is not None and item.path == path:
                return row
        return -1

    def set_checked(self, path: str, checked: bool = True) -> bool:
        """Tick (or untick) the item at ``path``. False when it cannot be ticked."""
        row = self.row_of(path)
        cell = self.table.item(row, COLUMN_WHAT) if row >= 0 else None
        if cell is None or not cell.flags() & Qt.ItemFlag.ItemIsUserCheckable:
            return False
        cell.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        return True

    def checked_items(self) -> list[StorageItem]:
        """The ticked items, largest first."""
        chosen = []
        for row in range(self.table.rowCount()):
            cell = self.table.item(row, COLUMN_WHAT)
            if cell is not None and cell.checkState() == Qt.CheckState.Checked:
                chosen.append(cell.data(ITEM_ROLE))
        return chosen

    @Slot()
    def select_all_removable(self) -> None:
        """Tick every item that can go."""
        for row in range(self.table.rowCount()):
            cell = self.table.item(row, COLUMN_WHAT)
            if cell is not None and cell.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                cell.setCheckState(Qt.CheckState.Checked)

    @Slot(QTableWidgetItem)
    def _on_table_item_changed(self, cell: QTableWidgetItem) -> None:
        if not self._filling and cell.column() == COLUMN_WHAT:
            self._update_selection()

    @Slot(bool)
    def _on_resume_toggled(self, _checked: bool) -> None:
        ticked = {item.path for item in self.checked_items()}
        self._fill(self.items)
        for path in ticked:
            self.set_checked(path)

    def _update_selection(self) -> None:
        chosen = self.checked_items()
        self.selected_label.setText(
            f"{len(chosen)} ticked · {human_size(total_size(chosen))}" if chosen else "Tick what should go"
        )
        self._update_actions()

    def _update_actions(self) -> None:
        busy = self.registry.is_busy(RESOURCE)
        self.rescan_button.setEnabled(not busy)
        self.select_button.setEnabled(
            not busy and any(i.can_remove(self.resume_check.isChecked()) for i in self.items)
        )
        self.clean_button.setEnabled(not busy and bool(self.checked_items()))
        self.resume_check.setEnabled(not busy)

    # ---------------------------------------------------------------- jobs

    def _start(
        self, factory: StoreJobFactory, on_succeeded: Callable[[object], None], *, quiet: bool = False
    ) -> bool:
        """Start a storage job. A ``quiet`` one (the scan: it only reads sizes, and ends in moments) is
        neither named in the status bar nor asked about before quitting; the clean-up, which deletes, is."""
        op = (
            JobOp(self.registry, factory, store=self.db_path, owner=self)
            .resource(RESOURCE)
            .slots("storage")
            .on_success(on_succeeded)
        )
        started = self.start_job(op.quiet() if quiet else op)
        self._update_actions()
        return started is not None

    @Slot()
    def scan(self) -> bool:
        """Measure the app's folders again (a job). False when another storage job is running."""
        paths = self.paths
        self._scanned_once = True
        return self._start(
            lambda store, token: scan_job(store, paths, token), self._on_scan_succeeded, quiet=True
        )

    @Slot()
    def clean_up(self) -> bool:
        """Ask, then delete the ticked items (a job). Returns whether the clean-up started."""
        chosen = self.checked_items()
        if not chosen or self.registry.is_busy(RESOURCE):
            return False
        freed = human_size(total_size(chosen))
        resumable = [i for i in chosen if i.needs_confirmation and not i.removable]
        text = f"Delete {len(chosen)} item(s) and free {freed}?"
        if resumable:
            runs = ", ".join(str(i.run_id) for i in resumable)
            text += (
                f"\n\nRun(s) {runs} can no longer be resumed afterwards: they would start again at step 0."
            )
        text += "\n\nCopies are made again when needed; nothing a model, a run or an export needs is deleted."
        if not self.confirm(self, "Clean up", text):
            return False
        paths = self.paths
        confirm_no_resume = self.resume_check.isChecked()
        self.clear_error()
        self._set_activity(f"Removing {len(chosen)} item(s)…")
        return self._start(
            lambda store, token: remove_items(
                store, paths, chosen, token, confirm_no_resume=confirm_no_resume
            ),
            self._on_cleanup_succeeded,
        )

    def _on_storage_event(self, event: object) -> None:
        if isinstance(event, Removing):
            self._set_activity(f"Removing {event.done + 1} of {event.total}: {event.path}")
        elif isinstance(event, Progress) and event.message:
            self._set_activity(event.message)

    def _on_scan_succeeded(self, items: object) -> None:
        self._fill(list(items) if isinstance(items, list) else [])
        self._set_activity(self._result_message)  # what the last clean-up did stays in view
        self._update_actions()

    def _on_cleanup_succeeded(self, result: object) -> None:
        if isinstance(result, CleanupResult):
            self.last_result = result
            message = f"Freed {human_size(result.bytes_freed)} ({len(result.removed)} item(s) removed)."
            self._result_message = message
            self._set_activity(message)
            self.notify(message)
            if result.skipped:
                lines = "\n".join(f"• {path}: {why}" for path, why in result.skipped[:10])
                self.show_error(f"{len(result.skipped)} item(s) were left in place:\n{lines}")
            if result.removed:
                self.storage_changed.emit()
        self.scan()  # the list as it is now

    def _on_storage_failed(self, message: str) -> None:
        self._set_activity("")
        self.show_error(message)
        self._update_actions()

    def _on_storage_cancelled(self) -> None:
        self._set_activity("Stopped.")
        self.scan()  # the list as it is now

    @Slot()
    def _on_registry_changed(self) -> None:
        self._update_actions()

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        # Measured when first shown, not at start-up: the window opens at once whatever the folders hold.
        if not self._scanned_once and not self.registry.is_busy(RESOURCE):
            self.scan()
        super().showEvent(event)
