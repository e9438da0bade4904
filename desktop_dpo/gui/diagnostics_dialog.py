"""Help → Diagnostics: what this computer offers llama.cpp, torch and bitsandbytes, in words.

The report is :func:`desktop_dpo.core.hardware.probe_hardware`, run as a job on the resource ``hardware``
(the libraries are asked in child processes; this window never imports them). Warnings come first, each with
its command in a field to select or copy; safe mode, where it is on, has a Forget button.
"""

from __future__ import annotations

import dataclasses
import logging

from PySide6.QtCore import QEvent, QObject, Qt, Slot
from PySide6.QtGui import QCloseEvent, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.config import AppPaths
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.hardware import forget_safe_mode, hardware_report_job, safe_mode_records
from desktop_dpo.core.hardware_report import (
    FORGET_SAFE_MODE_COMMAND,
    HardwareReport,
    HardwareWarning,
    describe_safe_mode_record,
    render_report,
)
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

log = logging.getLogger(__name__)

HARDWARE_RESOURCE = "hardware"
STOP_WAIT_MS = 5_000  # a cancel kills the probe children within a tenth of a second; this bounds the rest
CHECKING_TEXT = "Checking your hardware…"


def _label(text: str, name: str, *, selectable: bool = False) -> QLabel:
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.PlainText)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _card(heading: str) -> tuple[QFrame, QVBoxLayout]:
    card = QFrame()
    card.setObjectName("diagCard")
    layout = QVBoxLayout(card)
    layout.setContentsMargins(16, 14, 16, 14)
    layout.setSpacing(8)
    layout.addWidget(_label(heading, "diagCardHeading"))
    return card, layout


class WarningCard(QFrame):
    """One fixable mismatch: the words, and the command in a read-only field with a Copy button."""

    def __init__(self, warning: HardwareWarning, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("hardwareWarning")
        self.warning = warning
        icon = _label("⚠", "hardwareWarningIcon")
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.text = _label(warning.message, "hardwareWarningText", selectable=True)
        self.command = QLineEdit(warning.command)
        self.command.setObjectName("hardwareCommand")
        self.command.setReadOnly(True)
        self.command.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.command.setCursorPosition(0)
        self.command.setToolTip("Run this in a terminal, in the environment desktop-dpo is installed in")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setObjectName("copyCommandButton")
        self.copy_button.setToolTip("Copy the command to the clipboard")
        self.copy_button.clicked.connect(self._on_copy_clicked)

        command_row = QHBoxLayout()
        command_row.setSpacing(8)
        command_row.addWidget(self.command, 1)
        command_row.addWidget(self.copy_button)
        body = QVBoxLayout()
        body.setSpacing(8)
        body.addWidget(self.text)
        body.addLayout(command_row)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(14, 12, 14, 12)
        layout.setSpacing(10)
        layout.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(body, 1)

    @Slot()
    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.warning.command)
        self.copy_button.setText("Copied")


class DiagnosticsDialog(QDialog):
    """The hardware report, gathered off the GUI thread. Non-modal when opened with ``show()``.

    Attributes a test (or a person's eyes) reads: ``status_label`` ("Checking your hardware…", then a summary),
    ``report`` (the :class:`HardwareReport`, None until it arrives), ``warning_cards``, ``report_rows`` (the
    (label, value) rows shown), ``safe_mode_text`` and ``safe_mode_labels``, ``forget_button``.
    """

    def __init__(self, paths: AppPaths, registry: JobRegistry, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("diagnosticsDialog")
        self.setWindowTitle("Diagnostics")
        self.resize(900, 720)
        self.paths = paths
        self.registry = registry
        self.report: HardwareReport | None = None
        self.job: JobOp | None = None
        self.warning_cards: list[WarningCard] = []
        self.report_rows: list[tuple[str, str]] = []
        self.safe_mode_labels: list[QLabel] = []

        title = _label("Your hardware", "diagTitle")
        summary = _label(
            "What llama.cpp, torch and bitsandbytes see on this computer, and what to change where they "
            "miss something. Nothing here leaves the computer.",
            "diagSummary",
        )
        self.status_label = _label(CHECKING_TEXT, "diagStatus")
        self.busy = QProgressBar()
        self.busy.setObjectName("diagBusy")
        self.busy.setRange(0, 0)  # busy: the probe does not know how far it is
        self.busy.setTextVisible(False)

        # Filled when the report arrives.
        self.warnings_box = QVBoxLayout()
        self.warnings_box.setSpacing(10)
        self.report_card, report_layout = _card("What the libraries see")
        self.report_grid = QGridLayout()
        self.report_grid.setHorizontalSpacing(16)
        self.report_grid.setVerticalSpacing(6)
        self.report_grid.setColumnStretch(1, 1)
        report_layout.addLayout(self.report_grid)
        self.report_card.setVisible(False)

        self.safe_mode_card, safe_layout = _card("Safe mode")
        self.safe_mode_text = _label("", "diagNote", selectable=True)
        self.safe_mode_list = QVBoxLayout()
        self.safe_mode_list.setSpacing(4)
        self.forget_button = QPushButton("Forget")
        self.forget_button.setObjectName("secondaryButton")
        self.forget_button.setToolTip(
            "Forget these crashes: each model loads in the normal mode again (if it crashes again, the app "
            "falls back to safe mode by itself)"
        )
        self.forget_button.clicked.connect(self._on_forget_clicked)
        forget_row = QHBoxLayout()
        forget_row.addStretch(1)
        forget_row.addWidget(self.forget_button)
        safe_layout.addWidget(self.safe_mode_text)
        safe_layout.addLayout(self.safe_mode_list)
        safe_layout.addLayout(forget_row)
        self.safe_mode_card.setVisible(False)

        content = QWidget()
        content.setObjectName("diagnosticsContent")
        column = QVBoxLayout(content)
        column.setContentsMargins(0, 0, 6, 0)
        column.setSpacing(12)
        column.addLayout(self.warnings_box)
        column.addWidget(self.report_card)
        column.addWidget(self.safe_mode_card)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setObjectName("diagnosticsScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(content)

        self.copy_button = QPushButton("Copy report")
        self.copy_button.setObjectName("secondaryButton")
        self.copy_button.setToolTip("Copy the whole report as text, to paste into a bug report")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self._on_copy_clicked)
        self.close_button = QPushButton("Close")
        self.close_button.setObjectName("primaryButton")
        self.close_button.setDefault(True)
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.copy_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(22, 20, 22, 18)
        layout.setSpacing(10)
        layout.addWidget(title)
        layout.addWidget(summary)
        layout.addWidget(self.status_label)
        layout.addWidget(self.busy)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)

        if parent is not None:
            # The window is closing: stop the probe quietly rather than have the window ask about "a job".
            parent.installEventFilter(self)

    # ---------------------------------------------------------------- the probe job

    def start(self) -> bool:
        """Start gathering the report; False when another Diagnostics window is gathering it already."""
        paths = self.paths

        def factory(token: CancelToken) -> Job:
            return hardware_report_job(paths, cancel=token)

        try:
            self.job = (
                JobOp(self.registry, factory, owner=self).resource(HARDWARE_RESOURCE).slots("probe").start()
            )
        except DesktopDpoError:
            self._set_status("The hardware is being checked in another window already.", "error")
            self.busy.setVisible(False)
            return False
        return True

    def stop(self) -> None:
        """Stop the probe, if it runs (its children are killed), and wait for its thread."""
        probe, self.job = self.job, None
        if probe is not None:
            probe.drop()  # what it still reports is for nobody
            probe.cancel()
            probe.wait(STOP_WAIT_MS)

    def _on_probe_succeeded(self, report: object) -> None:
        assert isinstance(report, HardwareReport)
        self.show_report(report)

    def _on_probe_failed(self, message: str) -> None:
        self.busy.setVisible(False)
        self._set_status(f"The hardware could not be checked: {message}", "error")

    # ---------------------------------------------------------------- showing the report

    def show_report(self, report: HardwareReport) -> None:
        """Show ``report``: warnings first, then every row, then safe mode."""
        self.report = report
        self.busy.setVisible(False)
        warnings = report.warnings()
        if warnings:
            count = len(warnings)
            self._set_status(
                f"{count} thing{'s' if count != 1 else ''} to fix: run "
                f"{'each command' if count != 1 else 'the command'} below in a terminal, then restart "
                "desktop-dpo.",
                "warning",
            )
        else:
            self._set_status("✓ Nothing to fix: the libraries use what this computer offers.", "ok")

        for card in self.warning_cards:
            card.deleteLater()
        self.warning_cards = [WarningCard(warning) for warning in warnings]
        for card in self.warning_cards:
            self.warnings_box.addWidget(card)

        while self.report_grid.count():
            item = self.report_grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.report_rows = report.lines(safe_mode=False)
        for row, (label, value) in enumerate(self.report_rows):
            name = _label(label, "diagLabel")
            name.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            self.report_grid.addWidget(name, row, 0)
            self.report_grid.addWidget(_label(value, "diagValue", selectable=True), row, 1)
        self.report_card.setVisible(True)
        self._show_safe_mode()
        self.copy_button.setEnabled(True)

    def _show_safe_mode(self) -> None:
        report = self.report
        assert report is not None
        for label in self.safe_mode_labels:
            label.deleteLater()
        self.safe_mode_labels = []
        if report.safe_mode:
            count = len(report.safe_mode)
            self.safe_mode_text.setText(
                f"On for {count} model file{'s' if count != 1 else ''}: llama.cpp crashed loading "
                f"{'them' if count != 1 else 'it'} on this CPU, so {'they load' if count != 1 else 'it loads'} "
                "without the AMX and repack buffers (safe, but slower). Forget this to try the normal mode "
                f"again; from a terminal: {FORGET_SAFE_MODE_COMMAND}"
            )
            for record in report.safe_mode:
                label = _label("•  " + describe_safe_mode_record(record), "safeModeRecord", selectable=True)
                self.safe_mode_labels.append(label)
                self.safe_mode_list.addWidget(label)
        else:
            self.safe_mode_text.setText("Off: every model loads in the normal mode.")
        self.forget_button.setVisible(bool(report.safe_mode))
        self.safe_mode_card.setVisible(True)

    def _set_status(self, text: str, tone: str = "") -> None:
        self.status_label.setProperty("tone", tone)
        self.status_label.style().unpolish(self.status_label)
        self.status_label.style().polish(self.status_label)
        self.status_label.setText(text)

    def report_text(self) -> str:
        """The whole report as plain text (what Copy report puts on the clipboard)."""
        return "" if self.report is None else render_report(self.report)

    # ---------------------------------------------------------------- buttons

    @Slot()
    def _on_forget_clicked(self) -> None:
        report = self.report
        if report is None or not report.safe_mode:
            return
        try:
            dropped = forget_safe_mode(self.paths, report.safe_mode)
            remaining = safe_mode_records(self.paths, cpu=report.cpu, version=report.llama_cpp_version)
        except OSError as exc:
            self._set_status(f"Safe mode could not be forgotten: {exc.strerror or exc}", "error")
            return
        log.info("Forgot safe mode for %d load record(s)", dropped)
        self.report = dataclasses.replace(report, safe_mode=remaining)
        self._show_safe_mode()

    @Slot()
    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.report_text())
        self.copy_button.setText("Copied")

    # ---------------------------------------------------------------- closing

    def closeEvent(self, event: QCloseEvent) -> None:  # Qt override
        self.stop()
        super().closeEvent(event)

    def done(self, result: int) -> None:  # Qt override: Escape ends here, not in closeEvent
        self.stop()
        super().done(result)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        if event.type() == QEvent.Type.Close and watched is self.parent():
            self.stop()
        return False


def open_diagnostics_dialog(paths: AppPaths, registry: JobRegistry, parent: QWidget) -> DiagnosticsDialog:
    """Open Help → Diagnostics next to ``parent`` (non-modal; deleted when closed) and start the probe."""
    dialog = DiagnosticsDialog(paths, registry, parent)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    dialog.start()
    return dialog
