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
    QBoxLayout,
    QDialog,
    QFrame,
    QGridLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
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
from desktop_dpo.gui.widgets import (
    STRETCH,
    button,
    card,
    hbox,
    scroll_area,
    set_style_property,
    text_label,
    vbox,
)
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

log = logging.getLogger(__name__)

HARDWARE_RESOURCE = "hardware"
STOP_WAIT_MS = 5_000  # a cancel kills the probe children within a tenth of a second; this bounds the rest
CHECKING_TEXT = "Checking your hardware…"


def _card(heading: str) -> tuple[QFrame, QBoxLayout]:
    frame, layout = card((16, 14, 16, 14), 8, name="diagCard")
    layout.addWidget(text_label(heading, "diagCardHeading"))
    return frame, layout


class WarningCard(QFrame):
    """One fixable mismatch: the words, and the command in a read-only field with a Copy button."""

    def __init__(self, warning: HardwareWarning, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("hardwareWarning")
        self.warning = warning
        icon = text_label("⚠", "hardwareWarningIcon")
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.text = text_label(warning.message, "hardwareWarningText", selectable=True)
        self.command = QLineEdit(warning.command)
        self.command.setObjectName("hardwareCommand")
        self.command.setReadOnly(True)
        self.command.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.command.setCursorPosition(0)
        self.command.setToolTip("Run this in a terminal, in the environment desktop-dpo is installed in")
        self.copy_button = button(
            "Copy",
            self._on_copy_clicked,
            tooltip="Copy the command to the clipboard",
            name="copyCommandButton",
        )

        command_row = hbox((self.command, 1), self.copy_button, spacing=8)
        body = vbox(self.text, command_row, spacing=8)
        hbox(
            (icon, 0, Qt.AlignmentFlag.AlignTop),
            (body, 1),
            parent=self,
            margins=(14, 12, 14, 12),
            spacing=10,
        )

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

        title = text_label("Your hardware", "diagTitle")
        summary = text_label(
            "What llama.cpp, torch and bitsandbytes see on this computer, and what to change where they "
            "miss something. Nothing here leaves the computer.",
            "diagSummary",
        )
        self.status_label = text_label(CHECKING_TEXT, "diagStatus")
        self.busy = QProgressBar()
        self.busy.setObjectName("diagBusy")
        self.busy.setRange(0, 0)  # busy: the probe does not know how far it is
        self.busy.setTextVisible(False)

        # Filled when the report arrives.
        self.warnings_box = vbox(spacing=10)
        self.report_card, report_layout = _card("What the libraries see")
        self.report_grid = QGridLayout()
        self.report_grid.setHorizontalSpacing(16)
        self.report_grid.setVerticalSpacing(6)
        self.report_grid.setColumnStretch(1, 1)
        report_layout.addLayout(self.report_grid)
        self.report_card.setVisible(False)

        self.safe_mode_card, safe_layout = _card("Safe mode")
        self.safe_mode_text = text_label("", "diagNote", selectable=True)
        self.safe_mode_list = vbox(spacing=4)
        self.forget_button = button(
            "Forget",
            self._on_forget_clicked,
            tooltip="Forget these crashes: each model loads in the normal mode again (if it crashes again, "
            "the app falls back to safe mode by itself)",
        )
        safe_layout.addWidget(self.safe_mode_text)
        safe_layout.addLayout(self.safe_mode_list)
        safe_layout.addLayout(hbox(STRETCH, self.forget_button))
        self.safe_mode_card.setVisible(False)

        content = QWidget()
        content.setObjectName("diagnosticsContent")
        vbox(
            self.warnings_box,
            self.report_card,
            self.safe_mode_card,
            STRETCH,
            parent=content,
            margins=(0, 0, 6, 0),
            spacing=12,
        )
        scroll = scroll_area(content, "diagnosticsScroll")

        self.copy_button = button(
            "Copy report",
            self._on_copy_clicked,
            tooltip="Copy the whole report as text, to paste into a bug report",
        )
        self.copy_button.setEnabled(False)
        self.close_button = button("Close", self.close, name="primaryButton")
        self.close_button.setDefault(True)

        vbox(
            title,
            summary,
            self.status_label,
            self.busy,
            (scroll, 1),
            hbox(self.copy_button, STRETCH, self.close_button),
            parent=self,
            margins=(22, 20, 22, 18),
            spacing=10,
        )

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

        for warning_card in self.warning_cards:
            warning_card.deleteLater()
        self.warning_cards = [WarningCard(warning) for warning in warnings]
        for warning_card in self.warning_cards:
            self.warnings_box.addWidget(warning_card)

        while self.report_grid.count():
            item = self.report_grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.report_rows = report.lines(safe_mode=False)
        for row, (label, value) in enumerate(self.report_rows):
            name = text_label(label, "diagLabel")
            name.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            self.report_grid.addWidget(name, row, 0)
            self.report_grid.addWidget(text_label(value, "diagValue", selectable=True), row, 1)
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
                label = text_label(
                    "•  " + describe_safe_mode_record(record), "safeModeRecord", selectable=True
                )
                self.safe_mode_labels.append(label)
                self.safe_mode_list.addWidget(label)
        else:
            self.safe_mode_text.setText("Off: every model loads in the normal mode.")
        self.forget_button.setVisible(bool(report.safe_mode))
        self.safe_mode_card.setVisible(True)

    def _set_status(self, text: str, tone: str = "") -> None:
        set_style_property(self.status_label, "tone", tone)
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
