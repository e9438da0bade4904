"""The data check on screen: the Data view's "Check my data" panel and the Train view's one-line notice.

The check itself is :mod:`desktop_dpo.core.data_check`. It reads every stored text (about a second for
20 000 comparisons), so :class:`DataChecker` runs it as a quiet job on a store opened in the worker thread;
without a job registry (a bare host) it runs at once on the given store.

- :class:`DataCheckPanel` (Data view): what the check found, each finding in plain words with what to do
  and a "Show in the table" button, which filters the table to the finding's comparisons; "Show all
  comparisons" goes back.
- The agreement on re-asked pairs is a line under the rates; when it is low, its finding has a button that
  sets the label smoothing it suggests in Train's advanced settings (``label_smoothing_chosen``, wired by the
  main window to :func:`use_label_smoothing`).
- :class:`DataCheckLine` (Train view): "2 findings in your data: see Data ▸ Check my data", with a button
  that opens the panel; hidden when the check finds no problem (a suggestion is no problem).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QResizeEvent, QShowEvent
from PySide6.QtWidgets import QFrame, QPushButton, QScrollArea, QVBoxLayout, QWidget

from desktop_dpo.core.data_check import DataCheck, Finding, Rate, agreement_text, check_data, data_check_job
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.store import Store
from desktop_dpo.core.wording import plural
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.widgets import (
    STRETCH,
    button,
    close_button,
    hbox,
    set_style_property,
    styled_label,
    text_label,
    vbox,
)
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

if TYPE_CHECKING:
    from desktop_dpo.core.dpo.config import TrainConfig

CHECK_RESOURCE = "data-check"  # one per asker: "data-check:data", "data-check:train"
CHECK_WORDS = "Checking your data"
FINDINGS_MAX_HEIGHT = 160  # the findings scroll past this, so the table and the detail keep their room


class DataChecker(QObject):
    """Runs the data check off the GUI thread and reports what it found.

    Args:
        store: the GUI thread's store (read at once when there is no ``registry``; its change stamp says
            whether a new check is needed).
        registry, db_path: the job registry and the database file the job opens its own store on.
        asker: names the job's resource (``"data-check:<asker>"``).

    Signals:
        checked(DataCheck): a check finished.
        failed(str): a check failed, in words.
    """

    checked = Signal(object)
    failed = Signal(str)

    def __init__(
        self,
        store: Store,
        registry: JobRegistry | None,
        db_path: Path | None,
        asker: str,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self._store, self._registry, self._db_path, self._asker = store, registry, db_path, asker
        self._op: JobOp | None = None
        self._again = False  # the data changed while a check ran: check once more after it
        self.result: DataCheck | None = None
        self.checked_stamp: tuple[int, int] | None = None  # the store's change stamp the result is for

    @property
    def running(self) -> bool:
        """True while a check runs."""
        return self._op is not None and self._op.active

    def run(self) -> None:
        """Check the data now (after the running check, when one runs)."""
        if self.running:
            self._again = True
            return
        self._again = False
        stamp = self._store.change_stamp()
        if self._registry is None or self._db_path is None:
            try:
                self._on_succeeded(check_data(self._store), stamp)
            except DesktopDpoError as exc:
                self.failed.emit(f"The data could not be checked: {exc}")
            return
        self._op = (
            JobOp(self._registry, data_check_job, store=self._db_path, owner=self)
            .resource(f"{CHECK_RESOURCE}:{self._asker}", describe=CHECK_WORDS)
            .quiet()
            .on_success(lambda result: self._on_succeeded(result, stamp))
            .on_failure(self._on_failed)
        )
        try:
            self._op.start()
        except DesktopDpoError as exc:
            self._op = None
            self.failed.emit(f"The data could not be checked: {exc}")

    def stale(self) -> bool:
        """True when no check was made yet, or the data changed since the last one."""
        return self.checked_stamp is None or self._store.change_stamp() != self.checked_stamp

    def run_if_changed(self) -> None:
        """Check again only if the data changed since the last check (or none was made)."""
        if self.stale() and not self.running:
            self.run()

    def _on_succeeded(self, result: object, stamp: tuple[int, int]) -> None:
        assert isinstance(result, DataCheck)
        self.result, self.checked_stamp = result, stamp
        self.checked.emit(result)
        if self._again:
            self.run()

    def _on_failed(self, message: str) -> None:
        self.failed.emit(f"The data could not be checked: {message}")
        if self._again:
            self.run()


def rates_text(check: DataCheck) -> str:
    """How often the left and the longer answer won, in words ("" when nothing was decided)."""
    parts = []
    if check.position is not None:
        side_words = _rate_words(check.position, "pair judged side by side", "pairs judged side by side")
        parts.append(f"The left answer won {side_words}")
    if check.length is not None:
        parts.append(f"the longer answer won {_rate_words(check.length, 'decided pair', 'decided pairs')}")
    text = "; ".join(parts)
    text = text[:1].upper() + text[1:] + "." if text else ""
    if check.agreement is not None:  # how consistent the person's own verdicts are (re-asked pairs)
        text = f"{text} {agreement_text(check.agreement)}".strip()
    return text


class SettingsHost(Protocol):
    """What :func:`use_label_smoothing` needs of the Train view."""

    def settings(self) -> TrainConfig: ...

    def set_settings(self, config: TrainConfig) -> None: ...


def use_label_smoothing(train: SettingsHost, smoothing: float) -> str:
    """Set ``smoothing`` as the label smoothing on the Train view's form; returns what to tell the person.

    Label smoothing is the sigmoid (DPO) loss's (cDPO): another loss is switched to it, and the message
    says so.
    """
    config = train.settings()
    switched = config.loss_type != "sigmoid"
    train.set_settings(config.replace(loss_type="sigmoid", label_smoothing=smoothing))
    form = getattr(train, "settings_form", None)
    toggle = getattr(form, "advanced_toggle", None)
    if toggle is not None:
        toggle.setChecked(True)  # unfolded: the person sees the value set
    return f"Label smoothing set to {smoothing:.2f} in Train ▸ Advanced settings" + (
        " (with the DPO loss: label smoothing belongs to it)." if switched else "."
    )


def _rate_words(measured: Rate, one: str, many: str) -> str:
    """E.g. "18 of 20 pairs judged side by side (90%; 95% interval 70–97%)"."""
    return (
        f"{measured.hits} of {measured.total} {one if measured.total == 1 else many} ({measured.share:.0%}; "
        f"95% interval {measured.low * 100:.0f}–{measured.high * 100:.0f}%)"
    )


class FindingRow(QFrame):
    """One finding: its title and size, what it means and what to do, and "Show in the table".

    Signals:
        chosen(Finding): the person asked to see the finding's comparisons.
        smoothing_chosen(float): the person asked to train with the label smoothing a low agreement suggests.
    """

    chosen = Signal(object)
    smoothing_chosen = Signal(float)

    def __init__(self, finding: Finding, parent: QWidget | None = None, *, smoothing: float | None = None):
        super().__init__(parent)
        self.setObjectName("dataFinding")
        self.finding = finding
        self.title = styled_label(finding.title, "findingTitle")
        words = "Suggestion" if finding.suggestion else plural(finding.count, "comparison")
        self.size_label = styled_label(words, "findingSize")
        self.advice = text_label(finding.advice, "findingAdvice")
        self.show_button = button(
            "Show in the table",
            lambda: self.chosen.emit(self.finding),
            tooltip=f"List only {'this comparison' if finding.count == 1 else f'these {finding.count} comparisons'} "
            "in the table below",
        )
        self.smoothing_button: QPushButton | None = None
        if smoothing is not None:
            self.smoothing_button = button(
                f"Train with label smoothing {smoothing:.2f}",
                lambda: self.smoothing_chosen.emit(smoothing),
                tooltip="Set it in Train ▸ Advanced settings (with the DPO loss) and go to Train",
            )
        actions = [self.smoothing_button] if self.smoothing_button is not None else []
        vbox(
            hbox(self.title, self.size_label, STRETCH, *actions, self.show_button, spacing=8),
            self.advice,
            parent=self,
            margins=(10, 6, 10, 8),
            spacing=2,
        )

    def set_selected(self, selected: bool) -> None:
        """Mark the finding whose comparisons the table shows."""
        set_style_property(self, "selected", selected)


class DataCheckPanel(QFrame):
    """The Data view's data check: findings, each one a click away from its comparisons.

    Signals:
        finding_chosen(Finding): show only this finding's comparisons.
        show_all_requested(): show every comparison again.
        closed(): the person closed the panel (the view shows every comparison again).
        label_smoothing_chosen(float): train with this label smoothing (a low agreement's suggestion).
    """

    label_smoothing_chosen = Signal(float)
    finding_chosen = Signal(object)
    show_all_requested = Signal()
    closed = Signal()

    def __init__(
        self,
        store: Store,
        registry: JobRegistry | None = None,
        db_path: Path | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("dataCheckPanel")
        self.checker = DataChecker(store, registry, db_path, "data", self)
        self.checker.checked.connect(self._on_checked)
        self.checker.failed.connect(self._on_failed)
        self.rows: list[FindingRow] = []
        self.chosen_key: str | None = None

        self.heading = styled_label("Data check", "cardHeading")
        self.status = styled_label("", "findingStatus")
        self.show_all_button = button(
            "Show all comparisons", self._on_show_all_clicked, tooltip="List every comparison again"
        )
        self.show_all_button.setVisible(False)
        self.again_button = button("Check again", self.check_again, tooltip="Run the check on your data now")
        close = close_button("Close the data check and show all comparisons", self.close_panel)
        self.rates = text_label("", "findingRates")
        self.rates.setToolTip(
            "By chance, each would be about half. A 95% interval that leaves out 50% is a finding below."
        )
        self.findings_box = QWidget()
        self.findings_box.setObjectName("dataFindings")
        self.findings_layout = QVBoxLayout(self.findings_box)
        self.findings_layout.setContentsMargins(0, 0, 0, 0)
        self.findings_layout.setSpacing(6)
        self.scroll = QScrollArea()
        self.scroll.setObjectName("dataFindingsScroll")
        self.scroll.setWidget(self.findings_box)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setMaximumHeight(FINDINGS_MAX_HEIGHT)
        top = hbox(
            self.heading,
            (self.status, 1),
            self.show_all_button,
            self.again_button,
            (close, 0, Qt.AlignmentFlag.AlignTop),
            spacing=8,
        )
        vbox(top, self.rates, self.scroll, parent=self, margins=(14, 10, 10, 12), spacing=6)
        self.setVisible(False)

    # ---------------------------------------------------------------- checking

    def open(self) -> None:
        """Show the panel with the last check, and check the data again if it changed since."""
        if self.checker.result is not None:
            self._on_checked(self.checker.result)
        if self.isVisible():
            self._check_if_stale()
        self.setVisible(True)  # its show event checks

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        # Opened, or back on screen with the Data view: pairs may have been judged or imported meanwhile.
        super().showEvent(event)
        if not event.spontaneous():
            self._check_if_stale()

    def _check_if_stale(self) -> None:
        if not self.checker.running and (self.checker.result is None or self.checker.stale()):
            self.check_again()

    @Slot()
    def check_again(self) -> None:
        """Check the data now (the findings on screen stay until the new ones come)."""
        self._show_checking()
        self.checker.run()

    def data_changed(self) -> None:
        """The view changed comparisons: check again while the panel is open."""
        if self.isVisible():
            self.check_again()

    def _show_checking(self) -> None:
        self.status.setText(f"{CHECK_WORDS}…")

    @Slot(object)
    def _on_checked(self, check: DataCheck) -> None:
        suggestions = len(check.findings) - len(check.problems)
        if not check.checked:
            status = check.summary()
        elif check.problems:
            found = plural(len(check.problems), "finding") + (
                f" and {plural(suggestions, 'suggestion')}" if suggestions else ""
            )
            status = f"{found} in {plural(check.checked, 'comparison')}"
        else:
            status = f"Nothing to fix in {plural(check.checked, 'comparison')}" + (
                f"; {plural(suggestions, 'suggestion')}." if suggestions else "."
            )
        self.status.setText(status)
        self.rates.setText(rates_text(check))
        self.rates.setVisible(bool(self.rates.text()))
        for row in self.rows:
            row.deleteLater()
        self.rows = []
        for finding in check.findings:
            smoothing = check.label_smoothing if finding.key == "low_agreement" else None
            row = FindingRow(finding, self.findings_box, smoothing=smoothing)
            row.chosen.connect(self._on_row_chosen)
            row.smoothing_chosen.connect(self.label_smoothing_chosen)
            row.set_selected(finding.key == self.chosen_key)
            self.findings_layout.addWidget(row)
            row.show()  # now, not when the layout gets round to it: the height below counts shown rows only
            self.rows.append(row)
        self.scroll.setVisible(bool(self.rows))
        self._fit_findings()

    def _fit_findings(self) -> None:
        """As tall as the findings need, up to :data:`FINDINGS_MAX_HEIGHT` (then they scroll): a scroll area
        alone would get what is left after the table, a sliver."""
        if not self.rows:
            return
        width = self.scroll.viewport().width()
        needed = self.findings_box.heightForWidth(width) if width > 0 else -1
        if needed <= 0:  # not laid out yet (or a restyle under way): the box's own idea of its height
            needed = self.findings_box.sizeHint().height()
        self.scroll.setFixedHeight(min(needed, FINDINGS_MAX_HEIGHT))

    def resizeEvent(self, event: QResizeEvent) -> None:  # Qt override
        super().resizeEvent(event)
        self._fit_findings()  # the advice wraps to another number of lines

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.status.setText(message)

    # ---------------------------------------------------------------- choosing

    def choose(self, key: str) -> Finding:
        """Show only the comparisons of the finding ``key``, as its button does."""
        row = next(row for row in self.rows if row.finding.key == key)
        row.show_button.click()
        return row.finding

    @Slot(object)
    def _on_row_chosen(self, finding: Finding) -> None:
        self.chosen_key = finding.key
        for row in self.rows:
            row.set_selected(row.finding.key == finding.key)
        self.show_all_button.setVisible(True)
        # Once the layouts have taken in what changed: the chosen finding wholly in sight.
        QTimer.singleShot(0, self._show_chosen_row)
        self.finding_chosen.emit(finding)

    @Slot()
    def _show_chosen_row(self) -> None:
        for row in self.rows:
            if row.finding.key == self.chosen_key:
                self.scroll.ensureWidgetVisible(row, 0, 0)

    @Slot()
    def _on_show_all_clicked(self) -> None:
        self.clear_choice()
        self.show_all_requested.emit()

    def clear_choice(self) -> None:
        """No finding chosen any more (the table shows every comparison)."""
        self.chosen_key = None
        for row in self.rows:
            row.set_selected(False)
        self.show_all_button.setVisible(False)

    @Slot()
    def close_panel(self) -> None:
        """Hide the panel; the table shows every comparison again."""
        self.setVisible(False)
        self.clear_choice()
        self.closed.emit()

    def findings(self) -> list[Finding]:
        """The findings on screen, in order."""
        return [row.finding for row in self.rows]


class DataCheckLine(MessageBanner):
    """Train's line: "2 findings in your data: see Data ▸ Check my data", and a button that opens the check.

    Checks each time the widget it is placed in is shown (the Train view), and only if the data changed
    since the last check; hidden when no problem was found. The ✕ hides it until the data changes.

    Signals:
        open_requested(): the person asked to see the check in the Data view.
    """

    open_requested = Signal()

    def __init__(
        self, store: Store, registry: JobRegistry | None, db_path: Path | None, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.checker = DataChecker(store, registry, db_path, "train", self)
        self.checker.checked.connect(self._on_checked)
        self.open_button: QPushButton = button(
            "Open the check", self.open_requested.emit, tooltip="See the findings in the Data view"
        )
        self.add_action(self.open_button)
        self._watched: QWidget | None = None
        if parent is not None:
            self._watch(parent)

    def refresh(self) -> None:
        """Check the data again if it changed since the last check."""
        self.checker.run_if_changed()

    @Slot(object)
    def _on_checked(self, check: DataCheck) -> None:
        if check.problems:
            self.show_message(f"{check.summary()}: see Data ▸ Check my data.", tone="warning")
        else:
            self.clear()

    # A hidden line hears no show events of its own: it listens to the widget it is placed in.
    def _watch(self, host: QWidget) -> None:
        if self._watched is not None:
            self._watched.removeEventFilter(self)
        self._watched = host
        host.installEventFilter(self)

    def event(self, event: QEvent) -> bool:  # Qt override
        if event.type() == QEvent.Type.ParentChange and self.parentWidget() is not None:
            self._watch(self.parentWidget())
        return super().event(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        if watched is self._watched and event.type() == QEvent.Type.Show and not event.spontaneous():
            self.refresh()
        return False
