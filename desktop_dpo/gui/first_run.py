"""The first-run experience of the main window: the welcome card and the demo model set up in the background.

:class:`FirstRun` drives :func:`desktop_dpo.core.first_run.prepare_demo_model` as a job on the resource
``demo-model`` (the GUI thread never copies or reads the model) and records the result on the window's
store when the job succeeds. While the database has no pairs, a :class:`WelcomeCard` sits at the top of
the Collect page; it goes as soon as the first pair is saved (or imported), or when the person closes it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import QVBoxLayout, QWidget

from desktop_dpo.core import demo_model
from desktop_dpo.core.demo_model import DemoPackage
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.first_run import (
    DEMO_SOURCE,
    DemoModelReady,
    demo_model_needed,
    prepare_demo_model,
    record_demo_model,
)
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.sampling import read_prompt_file
from desktop_dpo.core.store import ModelRow
from desktop_dpo.gui.resource_files import resource_file
from desktop_dpo.gui.welcome_card import WelcomeCard
from desktop_dpo.workers.job_worker import JobThread

if TYPE_CHECKING:
    from desktop_dpo.gui.main_window import MainWindow

log = logging.getLogger(__name__)

DEMO_RESOURCE = "demo-model"
STARTER_PROMPTS = "starter_prompts.txt"
# The copy starts a moment after the window opens, so that it does not compete with the first paint.
START_DELAY_MS = 300
STOP_WAIT_MS = 10_000  # a stop lands within one 4 MB block; this only bounds a stalled disk


def starter_prompts_path() -> Path | None:
    """The bundled starter prompts (``resources/starter_prompts.txt``), or None when they are not there."""
    return resource_file(STARTER_PROMPTS)


def _count_prompts(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return len(read_prompt_file(path).prompts)
    except DesktopDpoError as exc:
        log.warning("The starter prompts cannot be read: %s", exc)
        return 0


class FirstRun(QObject):
    """Greets an empty database and sets up the bundled demo model once.

    Args:
        window: the main window (its store, job registry, paths, views and status bar).

    Signals:
        job_started(object): the demo job's :class:`JobThread`, before it runs (connect to it here).
        demo_model_ready(object): the demo model's :class:`ModelRow`, registered as the default.
        failed(str): why the demo model could not be set up.
        message(str): a line for the status bar.
    """

    job_started = Signal(object)
    demo_model_ready = Signal(object)
    failed = Signal(str)
    message = Signal(str)

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        # Looked up through the module, so that one stand-in (tests) reaches every caller.
        self.package: DemoPackage | None = demo_model.demo_package()
        self.card: WelcomeCard | None = None
        self.holder: QWidget | None = None  # the card with the page's margins, in the Collect page
        self.job: JobThread | None = None
        self.outcome: str | None = None  # "succeeded" | "failed" | "cancelled" once the demo job ended
        self._shown_percent = -1
        self._watched_collect: QWidget | None = None

    # ---------------------------------------------------------------- starting

    def start(self) -> bool:
        """Show the welcome card if the database has no pairs, and start setting up the demo model if it is
        missing. Returns True when the demo job will run (it starts ``START_DELAY_MS`` later, so the window
        paints first)."""
        store = self.window.store
        needed = demo_model_needed(store, self.package)
        if store.count_comparisons(include_deleted=True) == 0:
            self._show_card(unpacking=needed)
        if needed:
            # See eventFilter: quitting stops the unpacking without asking.
            self.window.installEventFilter(self)
            QTimer.singleShot(START_DELAY_MS, self._start_job)
        return needed

    def _show_card(self, *, unpacking: bool) -> None:
        path = starter_prompts_path()
        card = WelcomeCard(starter_count=_count_prompts(path))
        card.starter_requested.connect(self.load_starter_prompts)
        card.write_requested.connect(self.write_own_prompt)
        card.add_model_requested.connect(lambda: self.window.show_view("models"))
        card.terms_requested.connect(self.show_terms)
        self.card = card
        if unpacking:
            card.set_model_unpacking(0.0)
        else:
            self._show_model_state()
        holder = QWidget()
        holder.setObjectName("pageArea")  # the page's background around the card
        margins = QVBoxLayout(holder)
        margins.setContentsMargins(24, 12, 24, 0)
        margins.addWidget(card)
        card.dismissed.connect(holder.hide)
        self.holder = holder
        # The Collect page's slot: the card sits above the view, whether the view is built yet or not.
        slot = self.window.pages.widget(self.window.view_keys().index("collect"))
        slot.layout().insertWidget(0, holder)
        holder.show()  # now, not when the layout next gets round to it: the window may be on screen already
        self.window.nav.currentRowChanged.connect(self._on_view_changed)
        self.window.preference_actions.data_changed.connect(self.refresh)
        self._on_view_changed()

    def _show_model_state(self) -> None:
        card = self.card
        if card is None:
            return
        model = self.window.store.default_model()
        if model is None:
            card.set_model_missing()
        else:
            card.set_model_ready(model.name, demo=model.source == DEMO_SOURCE)

    # ---------------------------------------------------------------- the welcome card's buttons

    @Slot()
    def load_starter_prompts(self) -> int:
        """Queue the starter prompts in Collect and show Collect with the first one. Returns how many."""
        path = starter_prompts_path()
        if path is None:
            return 0
        collect = self.window.view("collect")
        self.window.show_view("collect")
        count = int(collect.load_prompt_file(path))  # type: ignore[attr-defined]
        if count and self.card is not None:
            self.card.set_starter_done(count)
        collect.prompt_edit.setFocus()  # type: ignore[attr-defined]
        return count

    @Slot()
    def write_own_prompt(self) -> None:
        """Show Collect with the cursor in the prompt editor."""
        collect = self.window.view("collect")
        self.window.show_view("collect")
        collect.prompt_edit.setFocus()  # type: ignore[attr-defined]

    @Slot()
    def show_terms(self) -> QWidget | None:
        """Open the Gemma terms of use (None when the demo package is not installed)."""
        from desktop_dpo.gui.terms_dialog import open_terms_dialog

        return open_terms_dialog(self.package, self.window)

    # ---------------------------------------------------------------- the card goes once there are pairs

    @Slot()
    def refresh(self) -> None:
        """Hide the card once the database holds a pair."""
        if self.holder is None or self.holder.isHidden():
            return
        if self.window.store.count_comparisons(include_deleted=True) > 0:
            self.holder.hide()

    @Slot()
    def _on_view_changed(self, _row: int = -1) -> None:
        if self.window.current_view() != "collect":
            return
        collect = self.window.view("collect")  # built by now: it is on screen
        if collect is not self._watched_collect:
            collect.pairs_changed.connect(self.refresh)  # type: ignore[attr-defined]
            self._watched_collect = collect
        self.refresh()

    def card_visible(self) -> bool:
        """True while the welcome card is shown (on the Collect page)."""
        return self.holder is not None and not self.holder.isHidden()

    # ---------------------------------------------------------------- the demo job

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        # The window is closing: unpacking stops at its next block, before the window asks about running
        # jobs. Nothing is lost (the file only gets its name once complete) and it starts again next time,
        # so there is nothing to ask the person.
        if event.type() == QEvent.Type.Close and watched is self.window:
            thread = self.job
            if thread is not None and thread.isRunning():
                thread.cancel()
                thread.wait(STOP_WAIT_MS)
        return False

    @Slot()
    def _start_job(self) -> None:
        package = self.package
        assert package is not None
        models_dir = self.window.paths.models_dir

        def factory(token: CancelToken) -> Job:
            return prepare_demo_model(models_dir, package, cancel=token)

        def connect(thread: JobThread) -> None:
            thread.event.connect(self._on_job_event)
            thread.succeeded.connect(self._on_job_succeeded)
            thread.failed.connect(self._on_job_failed)
            thread.cancelled.connect(self._on_job_cancelled)
            self.job = thread
            self.job_started.emit(thread)

        try:
            self.window.registry.start(DEMO_RESOURCE, factory, connect=connect)
        except DesktopDpoError as exc:  # one already runs (a second window on the same registry)
            log.info("Demo model not started: %s", exc)
            return
        log.info("Unpacking the demo model into %s", models_dir)

    @Slot(object)
    def _on_job_event(self, event: object) -> None:
        if self.sender() is not self.job or not isinstance(event, Progress):
            return
        fraction = event.fraction
        if self.card is not None:
            self.card.set_model_unpacking(fraction)
        percent = -1 if fraction is None else int(fraction * 100)
        if percent != self._shown_percent:  # one status line per percent, not per block
            self._shown_percent = percent
            self.message.emit(
                f"Unpacking the demo model… {percent}%" if percent >= 0 else "Unpacking the demo model…"
            )

    @Slot(object)
    def _on_job_succeeded(self, ready: object) -> None:
        if self.sender() is not self.job:
            return
        self.job = None
        assert isinstance(ready, DemoModelReady)
        try:
            model: ModelRow = record_demo_model(self.window.store, ready)
        except DesktopDpoError as exc:
            self._fail(f"The demo model was unpacked but could not be registered: {exc}")
            return
        self.outcome = "succeeded"
        log.info("Demo model registered as model %s (%s)", model.id, model.path)
        self._show_model_state()
        self.message.emit(f"The demo model is ready: {model.name}.")
        self.demo_model_ready.emit(model)

    @Slot(str)
    def _on_job_failed(self, message: str) -> None:
        if self.sender() is not self.job:
            return
        self.job = None
        self._fail(message)

    def _fail(self, message: str) -> None:
        self.outcome = "failed"
        if self.card is not None:
            self.card.set_model_failed(message)
        self.message.emit(f"The demo model could not be set up: {message}")
        self.failed.emit(message)

    @Slot()
    def _on_job_cancelled(self) -> None:
        if self.sender() is not self.job:
            return
        self.job = None
        self.outcome = "cancelled"
        if self.card is not None:
            self.card.set_model_stopped()
