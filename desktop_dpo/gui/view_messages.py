"""The messages section of a view: its error banner, its activity line and its notes for the status bar.

Every view tells the person the same three things the same way: a problem, in words, in a dismissable banner
(:class:`~desktop_dpo.gui.message_banner.MessageBanner`); what is happening, or what to do next, in a line
with a small progress bar (:class:`ActivityLine`); and short notes for the window's status bar, also sent as
the view's ``status_message`` signal so a window (or a test) can follow them.

A running job's ``Log`` line ("Loading Gemma…") is the one note that is not on a timer: it stays in the status
bar while it is true, and goes as soon as the view's activity line moves on or the job that sent it ends, so
the bar never keeps a finished job's progress.
"""

from __future__ import annotations

from PySide6.QtCore import SignalInstance
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMainWindow, QProgressBar, QWidget

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import Log, Progress
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.workers.job_op import JobOp

STATUS_MESSAGE_MS = 8000  # how long a note stays in the status bar


class ActivityLine(QWidget):
    """What is happening, or what to do next, with a small progress bar; hidden while it says nothing."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = QLabel()
        self.label.setObjectName("activityText")  # the views' style sheets colour it
        self.label.setWordWrap(True)  # a long message wraps: it never widens the view past the window
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(220)
        self.bar.setMaximumHeight(10)
        self.bar.setTextVisible(False)
        self.bar.setVisible(False)
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(2, 0, 2, 0)
        self._layout.addWidget(self.label, 1)
        self._layout.addWidget(self.bar)
        self.setVisible(False)

    def add_widget(self, widget: QWidget) -> None:
        """Put ``widget`` (a Stop button, say) at the end of the line."""
        self._layout.addWidget(widget)

    def set_text(self, text: str) -> None:
        """Say ``text``; an empty text hides the line."""
        self.label.setText(text)
        self.setVisible(bool(text))

    def text(self) -> str:
        """The line's text."""
        return self.label.text()

    def show_progress(self, fraction: float | None) -> None:
        """Show the bar at ``fraction`` (0 to 1), or as a busy indicator when the amount is not known."""
        self.bar.setVisible(True)
        self.setVisible(True)
        self.bar.setRange(0, 0 if fraction is None else 1000)
        if fraction is not None:
            self.bar.setValue(int(fraction * 1000))

    def hide_progress(self) -> None:
        """Hide the bar (the text stays)."""
        self.bar.setVisible(False)


class ViewMessages:
    """Mixin for a view (``class SomeView(ViewMessages, QWidget)``) that owns ``show_error`` and friends.

    The view declares ``status_message = Signal(str)``, builds ``self.banner = MessageBanner()`` (and, if it
    says what it is doing, ``self.activity_row = ActivityLine()``) and places them in its layout.
    """

    banner: MessageBanner
    activity_row: ActivityLine
    status_message: SignalInstance
    _job_line = ""  # the running job's Log line this view put in the status bar (see show_log)
    _job_ops: tuple[JobOp, ...] = ()  # the ops start_job started, until their outcome reached the view

    def _set_activity(self, text: str) -> None:
        """The view's activity line: what is happening, or what to do next ("" hides it)."""
        if text != self._job_line:
            self._clear_job_line()  # the job is past what its Log line said
        self.activity_row.set_text(text)

    def activity(self) -> str:
        """The activity line's text."""
        return self.activity_row.text()

    def show_error(self, message: str) -> None:
        """Show a problem in words, in the view's banner and the status bar."""
        self.banner.show_message(message)
        self.notify(message.splitlines()[0] if message else "")

    def show_log(self, message: str, level: str = "info") -> None:
        """A job's ``Log`` line: on the activity line and the status bar; a warning (the model crashed and is
        retried in safe mode) stays in the banner too, in amber, so the person sees what happened.

        While a job of :meth:`start_job` runs, the status bar keeps the line (however long the model takes
        to load) until the activity line moves on or the job ends; otherwise it is a timed note. A warning is
        said once, in the banner: the activity line says only that the job goes on."""
        self._set_activity("Carrying on (see the note above)…" if level == "warning" else message)
        if any(op.active for op in self._job_ops):
            self.status_message.emit(message)
            window = self._main_window()
            if window is not None:
                window.statusBar().showMessage(message)  # no timeout: _clear_job_line takes it away
                self._job_line = message
        else:
            self.notify(message)
        if level == "warning":
            self.banner.show_message(message, tone="warning")

    def show_job_progress(self, event: object) -> None:
        """Show a job's ``Progress`` (on the activity line, with its message) or ``Log`` line; any other event
        is the view's own."""
        if isinstance(event, Progress):
            self.activity_row.show_progress(event.fraction)
            if event.message:
                self._set_activity(event.message)
        elif isinstance(event, Log):
            self.show_log(event.message, event.level)

    def stop_job(self, op: JobOp | None) -> None:
        """Ask ``op`` to stop at its next step (its ``on_cancelled`` follows), and say so."""
        if op is not None and op.active:
            op.cancel()
            self._set_activity("Stopping…")

    def start_job(self, op: JobOp) -> JobOp | None:
        """Start ``op`` (a :class:`~desktop_dpo.workers.job_op.JobOp`); None when a job already holds its
        resource, with why in the banner."""
        try:
            started = op.start()
        except DesktopDpoError as exc:
            self.show_error(str(exc))
            return None
        self._job_ops = (*self._job_ops, started)
        # A bound method of the view (a QWidget): queued to the GUI thread, after the job's outcome reached
        # the view, and disconnected if the view goes first.
        started.thread.finished.connect(self._on_view_job_finished)
        return started

    def _on_view_job_finished(self) -> None:
        """A job of :meth:`start_job` ended: its Log line leaves the status bar, unless another job of the
        view runs on (which owns the line now)."""
        self._job_ops = tuple(op for op in self._job_ops if op.active)
        if not self._job_ops:
            self._clear_job_line()

    def _clear_job_line(self) -> None:
        """Take the job's Log line out of the status bar, if it is still what the bar says."""
        line, self._job_line = self._job_line, ""
        window = self._main_window()
        if line and window is not None and window.statusBar().currentMessage() == line:
            window.statusBar().clearMessage()

    def clear_error(self) -> None:
        """Hide the banner."""
        self.banner.clear()

    def error_text(self) -> str:
        """The problem shown in the banner ("" when none, or when the banner's page is not on screen)."""
        assert isinstance(self, QWidget)
        return self.banner.text.text() if self.banner.isVisibleTo(self) else ""

    def notify(self, text: str) -> None:
        """A line for the status bar."""
        self.status_message.emit(text)
        window = self._main_window()
        if window is not None:
            window.statusBar().showMessage(text, STATUS_MESSAGE_MS)
            self._job_line = ""  # replaced by this note

    def _main_window(self) -> QMainWindow | None:
        """The window whose status bar the view's notes go to (None for a view on its own)."""
        assert isinstance(self, QWidget)
        window = self.window()
        return window if window is not self and isinstance(window, QMainWindow) else None
