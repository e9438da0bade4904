"""The Data view: every comparison in one table, to search, read in full, fix, delete and take elsewhere.

The table is a :class:`ComparisonTableModel` on the GUI thread's store connection: one query per refresh,
short previews made in SQL, so tens of thousands of comparisons scroll without a widget per row. The
panel under the table reads the selected comparison in full (prompt with its system prompt and earlier
turns, both responses, the person's rewrite, the note, model and sampling settings) with a few
single-row queries.

Every change is written at once: a verdict chosen in the panel, a note when its field is left (Enter or
a click elsewhere), a deletion the moment it is asked for. Deleting is a soft delete (rows stay, so
training runs keep their lineage) and can be undone straight away; with "Show deleted" ticked, deleted
rows can be restored at any time. Import and export are the main window's actions, running as jobs.

Keyboard:

=============  ==========================================================
Delete         delete the selected comparisons (focus in the table)
Ctrl+Z         undo the last deletion (outside text fields)
Ctrl+F         search
=============  ==========================================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import (
    QEvent,
    QItemSelection,
    QItemSelectionModel,
    QObject,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QAction, QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QWidget,
)

from desktop_dpo.core.data_check import Finding
from desktop_dpo.core.dpo.pair_counts import PAIRS_EXPLAINED, store_pair_counts, training_text
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.store import Store
from desktop_dpo.core.wording import plural
from desktop_dpo.gui.comparison_detail import ComparisonDetail
from desktop_dpo.gui.comparison_table_model import (
    COLUMN_INDEX,
    COLUMNS,
    VERDICT_FILTERS,
    ComparisonTableModel,
    verdict_name,
)
from desktop_dpo.gui.data_check_panel import DataCheckPanel
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.view_messages import ViewMessages
from desktop_dpo.gui.widgets import (
    STRETCH,
    button,
    card,
    hbox,
    make_page,
    page_pill,
    standard_keys,
    styled_label,
    title_block,
    vbox,
    view_shortcut,
)
from desktop_dpo.workers.job_worker import JobRegistry

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("prompt", "chosen", "rejected")  # share the table's spare width
# The keys of Delete, Undo and Find where the platform binds none (see widgets.standard_keys).
DELETE_FALLBACK, UNDO_FALLBACK, FIND_FALLBACK = "Del", "Ctrl+Z", "Ctrl+F"
TEXT_COLUMN_MIN_WIDTH = 90  # below this the table scrolls sideways instead
TABLE_MIN_HEIGHT = 130  # the header and about three rows, however short the window
SEARCH_DELAY_MS = 300  # typing pauses this long before the search runs (one query, not one per key)


class DataView(ViewMessages, QWidget):
    """Browse, search, fix, delete and restore comparisons; import and export preference files.

    Args:
        store: the GUI thread's database connection.
        import_action, export_action: the main window's "Import/Export Preferences…" actions (they run jobs
            and are disabled while one runs); the view's buttons trigger them and follow their state.
        registry, db_path: the job registry and database file the data check runs on, off the GUI thread
            (without them it runs on ``store`` at once).

    Signals:
        data_changed(): the view changed comparisons (counts should be re-read).
        status_message(str): a line for the status bar (also shown in the window's status bar).
        collect_requested(): the person asked to go and collect pairs (from the empty state).
        label_smoothing_chosen(float): train with this label smoothing (the data check's suggestion).
    """

    data_changed = Signal()
    status_message = Signal(str)
    collect_requested = Signal()
    label_smoothing_chosen = Signal(float)

    def __init__(
        self,
        *,
        store: Store,
        import_action: QAction,
        export_action: QAction,
        registry: JobRegistry | None = None,
        db_path: Path | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        make_page(self, "data")
        self.store = store
        # "Check my data": a job on its own store when the registry and the database file are given
        self.check_panel = DataCheckPanel(store, registry, db_path)
        self._finding_ids: frozenset[int] | None = None  # the comparisons of the finding chosen, if one is
        self.model = ComparisonTableModel(store, self)
        self._undo_batches: list[list[int]] = []  # ids of each deletion, most recent last
        self._splitter_placed = False
        self._loaded_stamp: tuple[int, int] | None = None  # the store's change stamp at the last refresh

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.apply_filters)

        self._build(import_action, export_action)
        self._build_shortcuts()
        self.refresh()

    # ---------------------------------------------------------------- building

    def _build(self, import_action: QAction, export_action: QAction) -> None:
        title, summary = title_block(
            "Data", "Everything you have judged: search it, fix it, take it elsewhere."
        )
        self.counts_label = page_pill(PAIRS_EXPLAINED)  # the counts go in front once known
        self.import_button = self._button_for(import_action, primary=True, text="Import…")
        self.export_button = self._button_for(export_action, primary=False, text="Export…")
        self.check_button = button(
            "Check my data",
            self.open_check,
            tooltip="Look for repeated or conflicting pairs, identical answers and a lean towards one side "
            "or the longer answer",
        )
        self.check_panel.finding_chosen.connect(self._on_finding_chosen)
        self.check_panel.show_all_requested.connect(self.show_all_pairs)
        self.check_panel.closed.connect(self.show_all_pairs)
        self.check_panel.label_smoothing_chosen.connect(self.label_smoothing_chosen)
        self.action_buttons = [self.import_button, self.export_button]
        centred = Qt.AlignmentFlag.AlignVCenter
        title_row = hbox(
            title,
            (self.counts_label, 0, centred),
            STRETCH,
            (self.check_button, 0, centred),
            (self.import_button, 0, centred),
            (self.export_button, 0, centred),
            spacing=12,
        )
        header = vbox(title_row, summary, spacing=2)

        filters = self._build_filters()

        # -- error banner and the undo notice
        self.banner = MessageBanner()
        self.notice = MessageBanner()
        self.undo_button = button(
            "Undo  Ctrl+Z", self.undo_delete, tooltip="Bring back the comparisons just deleted (Ctrl+Z)"
        )
        self.notice.add_action(self.undo_button)

        # -- the table and the detail panel
        self._build_table()
        self.table_empty = QLabel()
        self.table_empty.setObjectName("tableEmpty")
        self.table_empty.setVisible(False)
        self.detail = ComparisonDetail()
        self.detail.verdict_chosen.connect(self._on_detail_verdict_chosen)
        self.detail.note_edited.connect(self._on_detail_note_edited)
        table_box = QWidget()
        vbox(self.table_empty, (self.table, 1), parent=table_box, margins=(0, 0, 0, 0), spacing=4)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(table_box)
        self.splitter.addWidget(self.detail)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)

        table_page = QWidget()
        vbox(
            filters,
            self.check_panel,
            self.banner,
            self.notice,
            (self.splitter, 1),
            parent=table_page,
            margins=(0, 0, 0, 0),
            spacing=8,
        )

        self.pages = QStackedWidget()
        self.empty_page = self._build_empty_page(import_action)
        self.pages.addWidget(self.empty_page)
        self.pages.addWidget(table_page)

        vbox(header, (self.pages, 1), parent=self, margins=(24, 20, 24, 16), spacing=12)
        # A centred card gets its size hint, which does not wrap the text for the card's width: say how tall
        # the text is once this view's style (its font size) applies.
        self.empty_text.ensurePolished()
        card_width = self.empty_text.parentWidget().width() if self.empty_text.parentWidget() else 540
        self.empty_text.setMinimumHeight(self.empty_text.heightForWidth(card_width - 48))

    def _build_filters(self) -> QHBoxLayout:
        """Filters and row actions."""
        self.search_edit = QLineEdit()
        self.search_edit.setObjectName("searchBox")
        self.search_edit.setPlaceholderText("Search prompts, answers, rewrites and notes")
        self.search_edit.setToolTip(
            "Finds the words anywhere in a prompt, either answer, a rewrite or a note (Ctrl+F)"
        )
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(self._on_search_text_changed)
        self.search_edit.returnPressed.connect(self.apply_filters)
        self.verdict_filter = QComboBox()
        self.verdict_filter.setObjectName("verdictFilter")
        for key, verdict_filter in VERDICT_FILTERS.items():
            self.verdict_filter.addItem(verdict_filter.label, key)
        self.verdict_filter.setToolTip("Show only comparisons with this verdict")
        self.verdict_filter.currentIndexChanged.connect(lambda _index: self.apply_filters())
        self.show_deleted_check = QCheckBox("Show deleted")
        self.show_deleted_check.setToolTip("Also list deleted comparisons, to read or restore them")
        self.show_deleted_check.toggled.connect(lambda _checked: self.apply_filters())
        self.matches_label = QLabel()
        self.matches_label.setObjectName("dataMatches")
        self.delete_button = button(
            "Delete",
            self.delete_selected,
            tooltip="Delete the selected comparisons (Delete); Ctrl+Z brings them back",
        )
        self.restore_button = button(
            "Restore", self.restore_selected, tooltip="Bring the selected deleted comparisons back"
        )
        return hbox(
            (self.search_edit, 3),
            self.verdict_filter,
            self.show_deleted_check,
            (self.matches_label, 1),
            self.restore_button,
            self.delete_button,
            spacing=8,
        )

    def _build_table(self) -> None:
        """The comparisons' table (``table``)."""
        self.table = QTableView()
        self.table.setObjectName("comparisonTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.verticalHeader().setVisible(False)
        # Fixed row heights: Qt never measures 20 000 rows' contents.
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(28)
        header_view = self.table.horizontalHeader()
        header_view.setHighlightSections(False)
        header_view.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        for index, column in enumerate(COLUMNS):
            self.table.setColumnWidth(index, column.width)
        # The texts share the width the short columns leave (see _fit_text_columns); all can be dragged.
        self._table_viewport = self.table.viewport()
        self._table_viewport.installEventFilter(self)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COLUMN_INDEX["id"], Qt.SortOrder.DescendingOrder)  # newest first
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)

        self.table.setMinimumHeight(TABLE_MIN_HEIGHT)

    def _build_empty_page(self, import_action: QAction) -> QWidget:
        self.empty_text = styled_label(
            "Judge pairs of answers in <b>Collect</b>, or import a TRL preference file (JSON Lines, "
            "standard or conversational). Every pick then appears here, to search, fix or export.",
            "emptyText",
            wrap=True,
        )
        self.collect_button = button("Go to Collect", self.collect_requested, name="primaryButton")
        self.empty_import_button = self._button_for(import_action, primary=False)
        buttons = hbox(self.collect_button, self.empty_import_button, STRETCH, spacing=8)
        frame, frame_layout = card((24, 20, 24, 20), 10)
        frame.setFixedWidth(540)
        frame_layout.addWidget(styled_label("No comparisons yet", "emptyTitle"))
        frame_layout.addWidget(self.empty_text)
        frame_layout.addLayout(buttons)
        page = QWidget()
        vbox((frame, 0, Qt.AlignmentFlag.AlignHCenter), STRETCH, parent=page, margins=(0, 40, 0, 0))
        return page

    @staticmethod
    def _button_for(action: QAction, *, primary: bool, text: str | None = None) -> QPushButton:
        shortcut = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        item = button(
            text or action.text().replace("&", ""),
            action.trigger,
            tooltip=f"{action.toolTip()} ({shortcut})" if shortcut else action.toolTip(),
            name="primaryButton" if primary else "secondaryButton",
        )
        item.setEnabled(action.isEnabled())
        # Follow the action: disabled while an import or export runs.
        action.enabledChanged.connect(item.setEnabled)
        return item

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        if event.type() == QEvent.Type.Resize and watched is self._table_viewport:
            self._fit_text_columns()
        return False

    def _fit_text_columns(self) -> None:
        others = sum(
            self.table.columnWidth(i)
            for i, column in enumerate(COLUMNS)
            if column.key not in TEXT_COLUMNS and not self.table.isColumnHidden(i)
        )
        spare = self.table.viewport().width() - others
        # The prompt gets a bigger share: it is what a person looks rows up by.
        shares = {"prompt": 0.4, "chosen": 0.3, "rejected": 0.3}
        for key, share in shares.items():
            self.table.setColumnWidth(COLUMN_INDEX[key], max(TEXT_COLUMN_MIN_WIDTH, int(spare * share)))

    def _build_shortcuts(self) -> None:
        # Every key the platform binds to Delete, Undo and Find, or the usual one where it binds none.
        self.delete_shortcut = QShortcut(self.table)
        self.delete_shortcut.setKeys(standard_keys(QKeySequence.StandardKey.Delete, DELETE_FALLBACK))
        self.delete_shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)  # never while typing a search
        self.delete_shortcut.activated.connect(self.delete_selected)
        # Text fields keep Ctrl+Z for their own typing; elsewhere in the view it undoes a deletion.
        self.undo_shortcut = view_shortcut(
            self, standard_keys(QKeySequence.StandardKey.Undo, UNDO_FALLBACK), self.undo_delete
        )
        self.search_shortcut = view_shortcut(
            self,
            standard_keys(QKeySequence.StandardKey.Find, FIND_FALLBACK),
            self._on_search_shortcut_activated,
        )

    # ---------------------------------------------------------------- loading and filtering

    @Slot()
    def refresh(self) -> None:
        """Read the comparisons again (after an import, or when another view changed them)."""
        self._search_timer.stop()
        selected, current = self.selected_ids(), self._current_id()
        try:
            self._loaded_stamp = self.store.change_stamp()
            self.model.set_filters(
                search=self.search_edit.text(),
                verdict_filter=self.verdict_filter.currentData(),
                include_deleted=self.show_deleted_check.isChecked(),
                ids=self._finding_ids,  # a data check's finding stays chosen until "Show all comparisons"
            )
        except DesktopDpoError as exc:
            self.show_error(f"The comparisons could not be read: {exc}")
            return
        if self.table.isColumnHidden(COLUMN_INDEX["deleted"]) == self.model.include_deleted:
            self.table.setColumnHidden(COLUMN_INDEX["deleted"], not self.model.include_deleted)
            self._fit_text_columns()
        self.select_ids(selected, current=current)
        self._update_counts()
        self._show_current_detail()
        self._update_actions()

    @Slot()
    def apply_filters(self) -> None:
        """Run the search and filters now (typing waits a moment first)."""
        self.refresh()

    @Slot(str)
    def _on_search_text_changed(self, _text: str) -> None:
        self._search_timer.start()  # restarts: the search runs once typing pauses

    @Slot()
    def _on_search_shortcut_activated(self) -> None:
        self.search_edit.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search_edit.selectAll()

    def _update_counts(self) -> None:
        try:
            total = self.store.count_comparisons()
            everything = self.store.count_comparisons(include_deleted=True)
            counts = store_pair_counts(self.store)
        except DesktopDpoError as exc:
            self.show_error(f"The comparisons could not be counted: {exc}")
            return
        self.counts_label.setText(f"{plural(total, 'comparison')} · {counts.usable} usable for training")
        self.counts_label.setToolTip(
            f"{plural(total, 'comparison')} not deleted: {training_text(counts)}.\n\n{PAIRS_EXPLAINED}"
        )
        deleted = everything - total
        shown = self.model.rowCount()
        filtered = (
            bool(self.search_edit.text().strip())
            or self.verdict_filter.currentData() != "all"
            or self.model.id_filter is not None
        )
        if filtered:
            self.matches_label.setText(f"{shown} matching")
        elif deleted and not self.model.include_deleted:
            self.matches_label.setText(f"{deleted} deleted, not shown")
        elif deleted:
            self.matches_label.setText(f"including {deleted} deleted")
        else:
            self.matches_label.setText("")
        self.pages.setCurrentWidget(self.empty_page if everything == 0 else self.pages.widget(1))
        if shown:
            self.table_empty.setVisible(False)
        else:
            if filtered:
                self.table_empty.setText("No comparison matches the search and filter.")
            else:
                self.table_empty.setText("Every comparison is deleted: tick “Show deleted” to see them.")
            self.table_empty.setVisible(True)

    def counts_text(self) -> str:
        """What the counts pill says, e.g. "12 comparisons · 9 usable for training"."""
        return self.counts_label.text()

    def is_empty_state(self) -> bool:
        """True while the page says there is nothing yet and what to do about it."""
        return self.pages.currentWidget() is self.empty_page

    # ---------------------------------------------------------------- selection

    def selected_ids(self) -> list[int]:
        """Ids of the selected comparisons, in table order."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [self.model.summary(row).id for row in rows]

    def _current_id(self) -> int | None:
        index = self.table.currentIndex()
        return self.model.summary(index.row()).id if index.isValid() else None

    def select_ids(self, ids: Sequence[int], *, current: int | None = None) -> None:
        """Select the rows showing ``ids`` (those not shown are ignored); ``current`` gets the focus."""
        selection = QItemSelection()
        rows = [row for i in ids if (row := self.model.row_of(i)) is not None]
        for row in rows:
            selection.select(self.model.index(row, 0), self.model.index(row, len(COLUMNS) - 1))
        selection_model = self.table.selectionModel()
        current_row = self.model.row_of(current) if current is not None else None
        if current_row is None and rows:
            current_row = rows[0]
        if current_row is not None:
            selection_model.setCurrentIndex(
                self.model.index(current_row, 0), QItemSelectionModel.SelectionFlag.NoUpdate
            )
            self.table.scrollTo(self.model.index(current_row, 0))
        selection_model.select(
            selection,
            QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
        )
        if not rows:
            selection_model.clearCurrentIndex()
        self._show_current_detail()
        self._update_actions()

    @Slot()
    def _on_table_selection_changed(self) -> None:
        self._show_current_detail()
        self._update_actions()

    def _show_current_detail(self) -> None:
        selected = self.selected_ids()
        # One comparison at a time: with several selected, a verdict box would seem to change them all.
        shown_id = selected[0] if len(selected) == 1 else None
        if shown_id is None:
            if len(selected) > 1:
                self.detail.clear(f"{plural(len(selected), 'comparison')} selected. Delete removes them all.")
            else:
                self.detail.clear("Select a comparison to read it in full, change its verdict or add a note.")
            return
        self._show_detail(shown_id)

    def _show_detail(self, comparison_id: int) -> None:
        try:
            views = self.store.comparison_views(ids=[comparison_id], include_deleted=True)
            if not views:
                self.detail.clear("This comparison is no longer in the database.")
                return
            view = views[0]
            generations = (
                self.store.get_generation(view.comparison.generation_a_id),
                self.store.get_generation(view.comparison.generation_b_id),
            )
            names: list[str | None] = []
            for model_id in (view.model_a_id, view.model_b_id):
                model = self.store.get_model(model_id) if model_id is not None else None
                names.append(model.name if model is not None else None)
            repeat_of = view.comparison.repeat_of
            original = self.store.get_comparison(repeat_of) if repeat_of is not None else None
        except DesktopDpoError as exc:
            self.show_error(f"The comparison could not be read: {exc}")
            return
        self.detail.show_comparison(view, generations, (names[0], names[1]), original)

    def _update_actions(self) -> None:
        rows = [index.row() for index in self.table.selectionModel().selectedRows()]
        summaries = [self.model.summary(row) for row in rows]
        self.delete_button.setEnabled(any(not s.deleted for s in summaries))
        self.restore_button.setVisible(self.model.include_deleted)
        self.restore_button.setEnabled(any(s.deleted for s in summaries))
        self.undo_button.setEnabled(bool(self._undo_batches))

    # ---------------------------------------------------------------- deleting, undoing, restoring

    @Slot()
    def delete_selected(self) -> list[int]:
        """Soft-delete the selected comparisons (undo brings them back). Returns their ids."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        ids = [self.model.summary(row).id for row in rows if not self.model.summary(row).deleted]
        if not ids:
            return []
        self.detail.flush_note()
        try:
            self.store.set_comparisons_deleted(ids, True)
        except DesktopDpoError as exc:
            self.show_error(f"Nothing was deleted: {exc}")
            return []
        self._undo_batches.append(ids)
        next_row = rows[0]
        self.model.refresh_ids(ids)
        if self.model.include_deleted:
            self.select_ids(ids)
        elif self.model.rowCount():
            # Keep going from where the deleted rows were, as a mail client does.
            self.select_ids([self.model.summary(min(next_row, self.model.rowCount() - 1)).id])
        else:
            self.select_ids([])
        self._show_notice(
            f"Deleted {plural(len(ids), 'comparison')}. They are kept but no longer trained on or exported."
        )
        self._after_change(f"Deleted {plural(len(ids), 'comparison')}. Ctrl+Z brings them back.")
        return ids

    @Slot()
    def undo_delete(self) -> list[int]:
        """Bring back the comparisons of the last deletion. Returns their ids."""
        if not self._undo_batches:
            return []
        ids = self._undo_batches[-1]
        try:
            self.store.set_comparisons_deleted(ids, False)
        except DesktopDpoError as exc:
            self.show_error(f"The deletion could not be undone: {exc}")
            return []
        self._undo_batches.pop()
        self.refresh()
        self.select_ids(ids)
        self._hide_notice()
        self._after_change(f"Restored {plural(len(ids), 'comparison')}.")
        return ids

    @Slot()
    def restore_selected(self) -> list[int]:
        """Restore the selected deleted comparisons (shown with "Show deleted"). Returns their ids."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        ids = [self.model.summary(row).id for row in rows if self.model.summary(row).deleted]
        if not ids:
            return []
        try:
            self.store.set_comparisons_deleted(ids, False)
        except DesktopDpoError as exc:
            self.show_error(f"Nothing was restored: {exc}")
            return []
        # A restored comparison is no longer part of a deletion that could be undone.
        self._undo_batches = [[i for i in batch if i not in ids] for batch in self._undo_batches]
        self._undo_batches = [batch for batch in self._undo_batches if batch]
        self.model.refresh_ids(ids)
        self._show_current_detail()
        self._hide_notice()
        self._after_change(f"Restored {plural(len(ids), 'comparison')}.")
        return ids

    # ---------------------------------------------------------------- verdict and note

    def _update_comparison(self, comparison_id: int, failure: str, **changes: str) -> bool:
        """Write ``changes`` to comparison ``comparison_id`` and show its new row; False (with ``failure``
        and the reason in the banner) when the store refused."""
        try:
            self.store.update_comparison(comparison_id, **changes)
        except DesktopDpoError as exc:
            self.show_error(f"{failure}: {exc}")
            return False
        self.model.refresh_ids([comparison_id])
        return True

    @Slot(int, str)
    def _on_detail_verdict_chosen(self, comparison_id: int, verdict: str) -> None:
        if not self._update_comparison(comparison_id, "The verdict was not changed", verdict=verdict):
            return
        if self.detail.comparison_id == comparison_id:
            self._show_detail(comparison_id)
        row = self.model.row_of(comparison_id)
        a_shown_left = self.model.summary(row).a_shown_left if row is not None else None
        self._after_change(f"Comparison #{comparison_id}: now “{verdict_name(verdict, a_shown_left)}”.")

    @Slot(int, str)
    def _on_detail_note_edited(self, comparison_id: int, note: str) -> None:
        if self._update_comparison(comparison_id, "The note was not saved", note=note):
            self._after_change(f"Saved the note of comparison #{comparison_id}.")

    def set_verdict(self, verdict: str) -> None:
        """Choose ``verdict`` for the comparison in the panel, as the verdict box does."""
        index = self.detail.verdict_combo.findData(verdict)
        self.detail.verdict_combo.setCurrentIndex(index)
        self.detail.verdict_combo.activated.emit(index)

    def _after_change(self, message: str) -> None:
        self._update_counts()
        self._update_actions()
        self.notify(message)
        self.check_panel.data_changed()  # an open data check looks again
        self.data_changed.emit()

    # ---------------------------------------------------------------- the data check

    @Slot()
    def open_check(self) -> None:
        """Show the "Check my data" panel and check the data (off the GUI thread when it can)."""
        self.check_panel.open()

    @Slot(object)
    def _on_finding_chosen(self, finding: Finding) -> None:
        """List exactly the finding's comparisons: the search and the verdict filter are cleared."""
        for widget in (self.search_edit, self.verdict_filter):
            widget.blockSignals(True)
        self.search_edit.clear()
        self.verdict_filter.setCurrentIndex(0)
        for widget in (self.search_edit, self.verdict_filter):
            widget.blockSignals(False)
        self._finding_ids = frozenset(finding.ids)
        self.refresh()
        total = sum(self.splitter.sizes())  # the pairs are what the person came for: the table gets more
        if total > 0 and self.splitter.sizes()[0] < total * 0.55:
            self.splitter.setSizes([int(total * 0.6), total - int(total * 0.6)])
        self.notify(f"Showing the {plural(finding.count, 'comparison')} of “{finding.title}”.")

    @Slot()
    def show_all_pairs(self) -> None:
        """Leave a data check's finding: list every comparison again."""
        if self._finding_ids is None:
            return
        self.check_panel.clear_choice()
        self._finding_ids = None
        self.refresh()

    # ---------------------------------------------------------------- messages

    def _show_notice(self, text: str) -> None:
        self.notice.show_message(text, tone="success")
        self._update_actions()

    @Slot()
    def _hide_notice(self) -> None:
        self.notice.setVisible(False)

    def notice_visible(self) -> bool:
        """True while the "Deleted … Undo" notice is on screen."""
        return self.notice.isVisibleTo(self)

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        # Pairs may have been judged in Collect (or imported) while this view was hidden; re-read the table
        # only then: it may be tens of thousands of rows.
        if not event.spontaneous() and self.store.change_stamp() != self._loaded_stamp:
            self.refresh()
        super().showEvent(event)
        if not self._splitter_placed:
            self._splitter_placed = True
            # Once laid out: the table smaller than the detail (the person may drag it after).
            QTimer.singleShot(0, self._place_splitter)

    @Slot()
    def _place_splitter(self) -> None:
        total = sum(self.splitter.sizes())
        if total > 0:
            self.splitter.setSizes([int(total * 0.4), total - int(total * 0.4)])
