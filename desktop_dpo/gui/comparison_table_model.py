"""The Data view's table model: one row per comparison, read from the store's summaries.

Each refresh runs one query (``Store.comparison_summaries``) that returns short previews made in SQL, so
tens of thousands of comparisons cost a few megabytes and a fraction of a second, and the model never
holds whole conversations. Everything a cell shows is worked out when Qt asks for it. Sorting happens
here (a key per column, Python's sort), so no proxy model is needed and ids stay easy to find.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont

from desktop_dpo.core.reask import agrees
from desktop_dpo.core.store import ComparisonSummary, Store
from desktop_dpo.gui.theme import text_colour

# A verdict names a generation (A or B), never a screen side; the table and the detail panel say it the way
# the person judged it: the side the better answer was shown on.
SIDE_WORDS = {"left": "Left better", "right": "Right better"}
# Pairs never shown side by side (imported, or saved without the side) keep A and B: for an imported pair,
# A is the answer the file marked chosen and B the one it marked rejected.
UNSHOWN_WORDS = {"a": "A better", "b": "B better"}
VERDICT_WORDS = {"tie": "Tie", "both_bad": "Both bad", "skip": "Skipped"}  # verdicts that name no answer
SOURCE_WORDS = {"collect": "Collected", "import": "Imported"}
IMPORTED_TIP = (
    "Imported pair, never shown side by side: A is the answer the file marked chosen, "
    "B the one it marked rejected"
)
UNSHOWN_TIP = "Not judged side by side, so its answers are called A and B"


def winning_side(verdict: str, a_shown_left: bool | None) -> str | None:
    """The screen side ("left" or "right") of the answer a verdict prefers; None for a tie, both bad,
    skipped, or a pair that was never shown side by side."""
    if a_shown_left is None or verdict not in ("a", "b"):
        return None
    return "left" if (verdict == "a") == a_shown_left else "right"


def verdict_name(verdict: str, a_shown_left: bool | None) -> str:
    """A verdict in the words the person judged it with: "Left better", "Tie", "Skipped" ... ("A better"
    for a pair never shown side by side)."""
    side = winning_side(verdict, a_shown_left)
    if side is not None:
        return SIDE_WORDS[side]
    return UNSHOWN_WORDS.get(verdict) or VERDICT_WORDS.get(verdict, verdict)


def verdict_choices(a_shown_left: bool | None) -> list[tuple[str, str]]:
    """(words, verdict) for each verdict a person can give a comparison, in the order a verdict box lists
    them: the side shown first for a pair judged side by side."""
    if a_shown_left is None:
        better = [(UNSHOWN_WORDS["a"], "a"), (UNSHOWN_WORDS["b"], "b")]
    else:
        left, right = ("a", "b") if a_shown_left else ("b", "a")
        better = [(SIDE_WORDS["left"], left), (SIDE_WORDS["right"], right)]
    return better + [(words, verdict) for verdict, words in VERDICT_WORDS.items()]


def verdict_tip(source: str, a_shown_left: bool | None) -> str | None:
    """Why a pair's answers are called A and B (None when it was judged side by side)."""
    if a_shown_left is not None:
        return None
    return IMPORTED_TIP if source == "import" else UNSHOWN_TIP


def verdict_words(summary: ComparisonSummary) -> str:
    """The verdict as a person reads it: "Left better", "Tie", "Edited · Right better" ..."""
    words = verdict_name(summary.verdict, summary.a_shown_left)
    return f"Edited · {words}" if summary.edited else words


def repeat_words(summary: ComparisonSummary) -> str:
    """A re-asked pair's mark (core/reask.py): "Repeat of #12, disagrees" ("" for any other comparison).
    Agreeing is choosing the same answer, wherever it was shown; with a skip, or the first verdict
    deleted, there is nothing to agree with."""
    if summary.repeat_of is None:
        return ""
    agreement = agrees(summary.original_verdict, summary.verdict)
    how = "" if agreement is None else (", agrees" if agreement else ", disagrees")
    return f"Repeat of #{summary.repeat_of}{how}"


def repeat_tip(summary: ComparisonSummary) -> str:
    """The verdict cell's words on a repeat ("" for any other comparison)."""
    if summary.repeat_of is None:
        return ""
    agreement = agrees(summary.original_verdict, summary.verdict)
    how = {
        True: "You chose the same answer as the first time.",
        False: "You chose differently from the first time.",
        None: "Nothing to compare: a skip, or the first verdict was deleted.",
    }[agreement]
    return (
        f"Re-asked: the answers of #{summary.repeat_of}, shown again with their sides swapped. {how} "
        "A repeat's verdict never trains; it measures how consistent your verdicts are."
    )


@dataclass(frozen=True)
class VerdictFilter:
    """One choice of the verdict filter."""

    label: str
    query: dict[str, Any]  # keyword arguments for Store.comparison_summaries
    keep: Callable[[ComparisonSummary], bool] | None = None  # what SQL cannot tell: the side shown


def _won_on(side: str) -> VerdictFilter:
    return VerdictFilter(
        SIDE_WORDS[side], {"verdicts": ["a", "b"]}, lambda s: winning_side(s.verdict, s.a_shown_left) == side
    )


VERDICT_FILTERS: dict[str, VerdictFilter] = {
    "all": VerdictFilter("All verdicts", {}),
    "usable": VerdictFilter("Usable for training", {"usable": True}),
    "left": _won_on("left"),
    "right": _won_on("right"),
    **{verdict: VerdictFilter(words, {"verdicts": [verdict]}) for verdict, words in VERDICT_WORDS.items()},
    "edited": VerdictFilter("Edited", {"edited": True}),
    "imported": VerdictFilter("Imported", {}, lambda s: s.source == "import"),
    "repeats": VerdictFilter("Re-asked", {}, lambda s: s.repeat_of is not None),
}

MUTED = "#94a3b8"  # light-scheme colours; the scheme shown picks the painted one (gui/theme.py)
DELETED = "#b91c1c"
NONE_SHOWN = "—"  # a cell with nothing to show (no chosen response for a tie)
TOOLTIP_CHARS = 400  # a tooltip shows this much of a text; the store is asked for one more to know "cut"


def one_line(text: str) -> str:
    """Text on one line (a table cell): runs of whitespace, newlines included, become one space."""
    return " ".join(text.split())


def format_date(timestamp: float) -> str:
    """A comparison's local date and time, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def format_day(timestamp: float) -> str:
    """A comparison's local date (the table's Date column; its tooltip has the time)."""
    return time.strftime("%Y-%m-%d", time.localtime(timestamp))


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    width: int  # initial width in pixels (the prompt column stretches)
    sort_key: Callable[[ComparisonSummary], Any]
    tooltip: str


COLUMNS = (
    Column("id", "#", 52, lambda s: s.id, "The comparison's number"),
    Column("date", "Date", 96, lambda s: (s.created_at, s.id), "When it was judged or imported"),
    Column(
        "prompt",
        "Prompt",
        260,
        lambda s: one_line(s.prompt).casefold(),
        "The last user message (“Turn 3 ·”: the third message of a conversation, trained with the turns before it)",
    ),
    Column(
        "verdict",
        "Verdict",
        120,
        verdict_words,
        "Which answer was better, by the side of the screen you saw it on",
    ),
    Column("chosen", "Chosen", 180, lambda s: one_line(s.chosen).casefold(), "The response training prefers"),
    Column(
        "rejected", "Rejected", 180, lambda s: one_line(s.rejected).casefold(), "The response training avoids"
    ),
    Column("source", "Source", 84, lambda s: s.source, "Judged in Collect, or imported from a file"),
    Column("deleted", "Deleted", 74, lambda s: s.deleted, "Deleted comparisons are kept, but not trained on"),
)
COLUMN_INDEX = {column.key: index for index, column in enumerate(COLUMNS)}


class ComparisonTableModel(QAbstractTableModel):
    """Comparisons of one :class:`Store` as table rows, filtered by search text, verdict and deleted state.

    Signals:
        reloaded(): the rows were read again from the store (filters changed or :meth:`reload`).
    """

    reloaded = Signal()

    def __init__(self, store: Store, parent: QObject | None = None):
        super().__init__(parent)
        self._store = store
        self._rows: list[ComparisonSummary] = []
        self._row_of: dict[int, int] = {}  # comparison id -> row
        self._search = ""
        self._verdict_filter = "all"
        self._include_deleted = False
        self._ids: frozenset[int] | None = None  # only these comparisons (a data check's finding), or all
        self._sort_column = COLUMN_INDEX["id"]
        self._sort_order = Qt.SortOrder.DescendingOrder  # newest first

    # ---------------------------------------------------------------- filters and loading

    @property
    def include_deleted(self) -> bool:
        return self._include_deleted

    @property
    def id_filter(self) -> frozenset[int] | None:
        """The only comparisons shown (None: no such filter)."""
        return self._ids

    def set_filters(
        self,
        *,
        search: str = "",
        verdict_filter: str = "all",
        include_deleted: bool = False,
        ids: Iterable[int] | None = None,
    ) -> None:
        """Show the comparisons that match, read from the store now; ``ids``: only these (None: any)."""
        if verdict_filter not in VERDICT_FILTERS:
            raise ValueError(f"Unknown verdict filter {verdict_filter!r}")
        self._search = search.strip()
        self._verdict_filter = verdict_filter
        self._include_deleted = include_deleted
        self._ids = None if ids is None else frozenset(ids)
        self.reload()

    def reload(self) -> None:
        """Read the rows again (one query), keeping the sort order."""
        rows = self._store.comparison_summaries(
            include_deleted=self._include_deleted,
            search=self._search or None,
            preview_chars=TOOLTIP_CHARS + 1,
            **VERDICT_FILTERS[self._verdict_filter].query,
        )
        keep = VERDICT_FILTERS[self._verdict_filter].keep
        if keep is not None:
            rows = [summary for summary in rows if keep(summary)]
        if self._ids is not None:  # here, not in SQL: a finding may name more ids than a query may bind
            rows = [summary for summary in rows if summary.id in self._ids]
        self.beginResetModel()
        self._rows = rows
        self._sort_rows()
        self.endResetModel()
        self.reloaded.emit()

    def refresh_ids(self, ids: Iterable[int]) -> None:
        """Re-read some rows after a change (verdict, note, deleted): in place, or gone when no longer shown."""
        ids = [i for i in ids if i in self._row_of]
        if not ids:
            return
        # Filters other than "deleted" are not applied here: a row whose verdict was just changed stays in
        # sight until the next refresh, rather than vanishing under the person's cursor.
        fresh = {
            s.id: s
            for s in self._store.comparison_summaries(
                ids=ids, include_deleted=True, preview_chars=TOOLTIP_CHARS + 1
            )
        }
        gone = [i for i in ids if i not in fresh or (fresh[i].deleted and not self._include_deleted)]
        for comparison_id, summary in fresh.items():
            row = self._row_of.get(comparison_id)
            if row is not None and comparison_id not in gone:
                self._rows[row] = summary
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
        self._remove_ids(gone)

    def _remove_ids(self, ids: Iterable[int]) -> None:
        # Remove from the bottom up, in contiguous runs, so each beginRemoveRows range stays valid.
        rows = sorted((self._row_of[i] for i in ids if i in self._row_of), reverse=True)
        while rows:
            last = first = rows.pop(0)
            while rows and rows[0] == first - 1:
                first = rows.pop(0)
            self.beginRemoveRows(QModelIndex(), first, last)
            del self._rows[first : last + 1]
            self.endRemoveRows()
        self._reindex()

    def _reindex(self) -> None:
        self._row_of = {summary.id: row for row, summary in enumerate(self._rows)}

    # ---------------------------------------------------------------- lookups

    def summary(self, row: int) -> ComparisonSummary:
        """The comparison shown in ``row``."""
        return self._rows[row]

    def row_of(self, comparison_id: int) -> int | None:
        """The row showing a comparison, or None when it is not shown."""
        return self._row_of.get(comparison_id)

    def ids(self) -> list[int]:
        """Comparison ids in row order."""
        return [summary.id for summary in self._rows]

    # ---------------------------------------------------------------- QAbstractTableModel

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex | None = None) -> int:  # Qt override
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex | None = None) -> int:  # Qt override
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(  # Qt override
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section].title
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section].tooltip
        return None

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:  # Qt override
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        summary = self._rows[index.row()]
        key = COLUMNS[index.column()].key
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(summary, key)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(summary, key)
        if role == Qt.ItemDataRole.UserRole:
            return summary.id
        if role == Qt.ItemDataRole.ForegroundRole:
            if key == "deleted" and summary.deleted:
                return QColor(text_colour(DELETED))
            if summary.deleted or self._display(summary, key) == NONE_SHOWN:
                return QColor(text_colour(MUTED))
            return None
        if role == Qt.ItemDataRole.FontRole and summary.deleted and key == "prompt":
            font = QFont()
            font.setStrikeOut(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and key == "id":
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _display(self, summary: ComparisonSummary, key: str) -> str:
        if key == "id":
            return str(summary.id)
        if key == "date":
            return format_day(summary.created_at)
        if key == "prompt":
            text = one_line(summary.prompt)
            return f"Turn {summary.user_turns} · {text}" if summary.user_turns > 1 else text
        if key == "verdict":
            repeat = repeat_words(summary)
            return (
                verdict_words(summary)
                + (f" · {repeat}" if repeat else "")
                + (" ✎" if summary.has_note else "")
            )
        if key in ("chosen", "rejected"):
            return one_line(getattr(summary, key)) or NONE_SHOWN
        if key == "source":
            return SOURCE_WORDS.get(summary.source, summary.source.capitalize())
        if key == "deleted":
            return "Deleted" if summary.deleted else ""
        raise KeyError(key)

    def _tooltip(self, summary: ComparisonSummary, key: str) -> str | None:
        if key in ("prompt", "chosen", "rejected"):
            text = getattr(summary, key)
            if not text and key != "prompt":
                return f"{verdict_name(summary.verdict, summary.a_shown_left)}: no response chosen"
            shown = text[:TOOLTIP_CHARS] + ("…" if len(text) > TOOLTIP_CHARS else "")
            if key == "prompt" and summary.user_turns > 1:
                return (
                    f"Turn {summary.user_turns} of a conversation, the last of {summary.turns} messages "
                    f"(select the row to read them all):\n\n{shown}"
                )
            if key == "prompt" and summary.turns > 1:
                # The table shows the last user message; say that there is more before it.
                return f"The last of {summary.turns} messages (select the row to read them all):\n\n{shown}"
            return shown
        if key == "verdict":
            tips = [
                verdict_tip(summary.source, summary.a_shown_left) if summary.verdict in ("a", "b") else None
            ]
            tips.append(repeat_tip(summary))
            if summary.has_note:
                tips.append("Has a note (select the row to read it)")
            return "\n".join(tip for tip in tips if tip) or None
        if key == "date":
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary.created_at))
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:  # Qt override
        if not 0 <= column < len(COLUMNS):
            return
        self._sort_column, self._sort_order = column, order
        self.layoutAboutToBeChanged.emit()
        old_ids = [summary.id for summary in self._rows]
        self._sort_rows()
        # Selection and current index follow their comparisons to the rows they move to.
        moved_from, moved_to = [], []
        for index in self.persistentIndexList():
            comparison_id = old_ids[index.row()] if index.row() < len(old_ids) else None
            new_row = self._row_of.get(comparison_id) if comparison_id is not None else None
            moved_from.append(index)
            moved_to.append(self.index(new_row, index.column()) if new_row is not None else QModelIndex())
        self.changePersistentIndexList(moved_from, moved_to)
        self.layoutChanged.emit()

    def _sort_rows(self) -> None:
        key = COLUMNS[self._sort_column].sort_key
        descending = self._sort_order == Qt.SortOrder.DescendingOrder
        # Ties keep id order (sort is stable, and the store returns rows by id).
        self._rows.sort(key=lambda s: s.id)
        self._rows.sort(key=key, reverse=descending)
        self._reindex()

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:  # Qt override
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
