"""The Train view's past runs: every run in a list, and the stored settings, error and warnings of the one selected.

A row shows a run's name, base model, status, steps, pairs and final metrics, in columns that share the list's
width (nothing scrolls sideways; long names are shortened in the middle); hovering it shows the whole name and
every setting, and hovering the status of a failed run its error. The view decides how a run's status is shown (a
run the database says is "running" while no job of the view trains it is :data:`INTERRUPTED`) and when
Resume may be pressed; :class:`RunsPanel` shows it. Plain helpers say a run's metrics and settings in words.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QEvent, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QScrollArea,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.core.dpo.runs import run_label
from desktop_dpo.core.store import RunRow, Store
from desktop_dpo.gui.theme import colour_item_text, follow_scheme, recolour_items, text_colour
from desktop_dpo.gui.widgets import button, styled_label

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
COLUMN_RUN, COLUMN_BASE, COLUMN_STATUS, COLUMN_STEPS, COLUMN_PAIRS, COLUMN_METRICS = range(len(RUN_COLUMNS))
FITTED_COLUMNS = (COLUMN_STATUS, COLUMN_STEPS, COLUMN_PAIRS)  # always shown whole
MIN_ROWS = 4  # runs the list shows at least, however short the window
# The main settings of a selected run, in the form's words (the TrainConfig field, what a person reads).
DETAIL_KEYS = {
    "beta": "β",
    "lr": "learning rate",
    "epochs": "epochs",
    "batch_size": "batch size",
    "grad_accum": "gradient accumulation",
    "lora_r": "LoRA rank",
    "max_length": "maximum length",
    "quantization": "quantization",
}


def summarise_metrics(metrics: dict[str, Any]) -> str:
    """A run's final reward accuracy (train, held-out) and margin in one short line ("" when none): the share
    of pairs where the model favours the chosen answer, as a percentage."""
    parts = []
    if "train/rewards/accuracies" in metrics:
        parts.append(f"accuracy {metrics['train/rewards/accuracies']:.0%}")
    if "heldout/rewards/accuracies" in metrics:
        parts.append(f"held-out {metrics['heldout/rewards/accuracies']:.0%}")
    if "train/rewards/margins" in metrics:
        parts.append(f"margin {metrics['train/rewards/margins']:.2f}")
    return " · ".join(parts)


def describe_settings(config: dict[str, Any]) -> str:
    """A run's settings as ``name = value`` lines, for a tooltip or the details panel."""
    return "\n".join(f"{name} = {value}" for name, value in sorted(config.items()))


def stored_warnings(store: Store, run_id: int) -> list[str]:
    """The training warnings stored for run ``run_id``, oldest first."""
    return [m["message"] for _, row in store.run_metrics(run_id, split="warning")
            for m in row.get("messages", [])]  # fmt: skip


def describe_run(run: RunRow, warnings: Sequence[str], progress: str | None = None) -> str:
    """The details of a selected run (rich text): its main settings, what it did in the person's terms
    (``progress``, ``core/dpo/run_progress.py``), final metrics, error and warnings."""
    settings = ", ".join(
        f"{words} {run.config[key]}" for key, words in DETAIL_KEYS.items() if key in run.config
    )
    lines = [
        f"<b>{html.escape(run_label(run.id, run.name))}</b> · {html.escape(settings)} (hover a row for every setting)"
    ]
    if progress:
        lines.append(html.escape(progress))
    final = summarise_metrics(run.final_metrics)
    if final:
        lines.append(f"Final: {html.escape(final)}")
    if run.error:
        lines.append(f"<span style='color:{text_colour('#991b1b')}'>{html.escape(run.error)}</span>")
    warning = text_colour("#92400e")
    lines.extend(f"<span style='color:{warning}'>⚠ {html.escape(w)}</span>" for w in warnings)
    return "<br>".join(lines)


def frameless_scroll(widget: QWidget) -> QScrollArea:
    """``widget`` in a frameless area that scrolls up and down only (styled as ``settingsScroll``)."""
    scroll = QScrollArea()
    scroll.setObjectName("settingsScroll")
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(widget)
    return scroll


def _run_row(run: RunRow, model_names: dict[int, str], status: str) -> QTreeWidgetItem:
    """A run's row: the run id in column 0's data, the status as shown in the status column's data."""
    steps = f"{run.step} / {run.total_steps}" if run.total_steps else str(run.step)
    base = model_names.get(run.base_model_id, "(removed)") if run.base_model_id is not None else "—"
    item = QTreeWidgetItem(
        [
            run_label(run.id, run.name),
            base,
            STATUS_LABELS.get(status, status),
            steps,
            str(len(run.comparison_ids)),
            summarise_metrics(run.final_metrics) or "—",
        ]
    )
    item.setData(0, Qt.ItemDataRole.UserRole, run.id)
    item.setData(COLUMN_STATUS, Qt.ItemDataRole.UserRole, status)
    if status in STATUS_COLOURS:
        colour_item_text(item, STATUS_COLOURS[status], COLUMN_STATUS)
    tip = f"{run_label(run.id, run.name)}\nBase model: {base}\n\n{describe_settings(run.config)}"
    for column in range(len(RUN_COLUMNS)):
        item.setToolTip(column, tip)
    if run.error:
        item.setToolTip(COLUMN_STATUS, run.error)
    return item


class _ElideMiddle(QStyledItemDelegate):
    """Cells whose text, when too long, loses its middle rather than its end."""

    def initStyleOption(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        """The usual options, eliding in the middle."""
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideMiddle


class RunsPanel(QFrame):
    """The "Runs" card: the list of runs, Resume, "Resume with smaller settings" and the selected run's details.

    Signals:
        run_selected(object): the run selected in the list changed (its id; None: none).
        resume_requested(int): Resume was pressed with this run selected.
        smaller_requested(int): "Resume with smaller settings" was pressed with this run selected.
    """

    run_selected = Signal(object)
    resume_requested = Signal(int)
    smaller_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.setSpacing(6)
        self.resume_button = button("Resume", self._on_resume_clicked)
        self.smaller_button = button("Resume with smaller settings", self._on_smaller_clicked)
        head = QHBoxLayout()
        head.addWidget(styled_label("Runs", "cardHeading"), 1)
        head.addWidget(self.smaller_button)
        head.addWidget(self.resume_button)
        layout.addLayout(head)
        self.tree = self._build_tree()
        follow_scheme(self.tree, lambda: recolour_items(self.tree))
        self._fit_height()
        layout.addWidget(self.tree, 2)
        self.details = styled_label("", "runDetails", wrap=True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self._details_shown: tuple[RunRow | None, Sequence[str], str | None] = (None, (), None)
        follow_scheme(self.details, lambda: self.show_details(*self._details_shown))
        details_scroll = frameless_scroll(self.details)
        # The list keeps room for MIN_ROWS runs; the details share what is left with it (what a round did,
        # the final metrics, an error, warnings), and scroll only when even that is not enough.
        details_scroll.setMinimumHeight(76)
        layout.addWidget(details_scroll, 3)

    def _build_tree(self) -> QTreeWidget:
        tree = QTreeWidget()
        tree.setObjectName("runsTree")
        tree.setColumnCount(len(RUN_COLUMNS))
        tree.setHeaderLabels(list(RUN_COLUMNS))
        tree.setRootIsDecorated(False)
        tree.setUniformRowHeights(True)
        tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        tree.setAlternatingRowColors(False)
        # Names keep their start ("Run 3 · Gemma…") and end (the date); the tooltip has them whole. The
        # metrics are cut at their end: the held-out accuracy comes before the margin.
        self._middle = _ElideMiddle(tree)
        for column in (COLUMN_RUN, COLUMN_BASE):
            tree.setItemDelegateForColumn(column, self._middle)
        header_view = tree.header()
        header_view.setStretchLastSection(False)
        header_view.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header_view.setSectionResizeMode(COLUMN_RUN, QHeaderView.ResizeMode.Stretch)
        for column in FITTED_COLUMNS:
            header_view.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self._viewport = tree.viewport()
        self._viewport.installEventFilter(self)
        tree.currentItemChanged.connect(self._on_current_item_changed)
        return tree

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        """Fit the columns again when the list changes width."""
        if watched is self._viewport and event.type() == QEvent.Type.Resize:
            self._fit_columns()
        return super().eventFilter(watched, event)

    def _fit_columns(self) -> None:
        """Share the list's width so that nothing needs scrolling sideways: status, steps and pairs whole, the
        metrics and the base model as much as they need up to a share of what is left (the held-out
        accuracy at least), and the run's name the rest."""
        tree, header_view = self.tree, self.tree.header()
        tree.setColumnHidden(COLUMN_BASE, False)  # measured whole (a hidden section's size hint is 0)

        def needed(column: int) -> int:
            return max(tree.sizeHintForColumn(column), header_view.sectionSizeHint(column))

        left = tree.viewport().width() - sum(needed(c) for c in FITTED_COLUMNS)
        key = tree.fontMetrics().horizontalAdvance("accuracy 100% · held-out 100%") + 16
        header_view.resizeSection(COLUMN_METRICS, min(needed(COLUMN_METRICS), max(key, int(left * 0.4))))
        # The base model's names may be shortened (in the middle), its column's title never is: where the
        # list is too narrow for the title, the column goes (a run's name and its details name the model).
        base = min(needed(COLUMN_BASE), int(left * 0.25))
        tree.setColumnHidden(COLUMN_BASE, base < header_view.sectionSizeHint(COLUMN_BASE))
        header_view.resizeSection(COLUMN_BASE, base)

    def _fit_height(self) -> None:
        """Tall enough for the header and :data:`MIN_ROWS` runs, whatever the font and the style's padding."""
        tree = self.tree
        row = tree.sizeHintForRow(0) if tree.topLevelItemCount() else tree.fontMetrics().height() + 8
        frame = 2 * tree.frameWidth()
        tree.setMinimumHeight(tree.header().sizeHint().height() + MIN_ROWS * row + frame + 2)

    # ---------------------------------------------------------------- the list

    def fill(
        self,
        runs: Sequence[RunRow],
        model_names: dict[int, str],
        status_of: Callable[[RunRow], str],
        select: int | None,
    ) -> None:
        """List ``runs`` (``status_of(run)`` is the status shown) and select run ``select`` when listed;
        ``run_selected`` is emitted only when that selects a run."""
        self.tree.blockSignals(True)
        self.tree.clear()
        chosen: QTreeWidgetItem | None = None
        for run in runs:
            item = _run_row(run, model_names, status_of(run))
            self.tree.addTopLevelItem(item)
            if run.id == select:
                chosen = item
        self.tree.blockSignals(False)
        self._fit_height()
        self._fit_columns()
        if chosen is not None:
            self.tree.setCurrentItem(chosen)

    def item(self, run_id: int | None) -> QTreeWidgetItem | None:
        """The row of run ``run_id`` (None when it is not listed)."""
        for index in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(index)
            if item.data(0, Qt.ItemDataRole.UserRole) == run_id:
                return item
        return None

    def set_steps(self, run_id: int | None, *, steps: int, total: int) -> None:
        """Show a training run's step count in its row."""
        item = self.item(run_id)
        if item is not None:
            item.setText(COLUMN_STEPS, f"{steps} / {total}")

    def status_text(self, run_id: int) -> str:
        """The status column of a run, as shown ("" when it is not listed)."""
        item = self.item(run_id)
        return item.text(COLUMN_STATUS) if item is not None else ""

    def selected_run_id(self) -> int | None:
        """The run selected in the list."""
        item = self.tree.currentItem()
        return item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None

    def selected_status(self) -> str | None:
        """The status of the selected run as shown (``INTERRUPTED`` included); None when none is selected."""
        item = self.tree.currentItem()
        return item.data(COLUMN_STATUS, Qt.ItemDataRole.UserRole) if item is not None else None

    def select(self, run_id: int) -> None:
        """Select a run in the list (nothing happens when it is not listed)."""
        item = self.item(run_id)
        if item is not None:
            self.tree.setCurrentItem(item)

    def show_details(
        self, run: RunRow | None, warnings: Sequence[str] = (), progress: str | None = None
    ) -> None:
        """Show the selected run's details, with its stored ``warnings`` and what it did in the person's terms
        (``progress``) (None: no run is selected)."""
        self._details_shown = (run, warnings, progress)
        if run is None:
            self.details.setText("Select a run to see its curves and settings.")
        else:
            self.details.setText(describe_run(run, warnings, progress))

    def update_actions(self, *, busy: bool, smaller: bool) -> None:
        """Resume is for a stopped, failed or interrupted run while nothing trains (``busy``: a run trains);
        ``smaller``: the selected run has smaller settings to resume with."""
        status = self.selected_status()
        self.resume_button.setEnabled(not busy and status in RESUMABLE)
        self.resume_button.setToolTip(
            "Continue the selected run from its last checkpoint"
            if status in RESUMABLE
            else "Select a stopped, failed or interrupted run to resume it"
        )
        self.smaller_button.setVisible(smaller)

    # ---------------------------------------------------------------- slots

    @Slot(object, object)
    def _on_current_item_changed(self, current: QTreeWidgetItem | None, _previous: object) -> None:
        self.run_selected.emit(current.data(0, Qt.ItemDataRole.UserRole) if current is not None else None)

    @Slot()
    def _on_resume_clicked(self) -> None:
        run_id = self.selected_run_id()
        if run_id is not None:
            self.resume_requested.emit(run_id)

    @Slot()
    def _on_smaller_clicked(self) -> None:
        run_id = self.selected_run_id()
        if run_id is not None:
            self.smaller_requested.emit(run_id)
