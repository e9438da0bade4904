"""The first-run experience of the main window: the welcome card and the demo model set up in the background.

:class:`FirstRun` drives :func:`desktop_dpo.core.first_run.prepare_demo_model` as a job on the resource
``demo-model`` (the GUI thread never copies or reads the model) and records the result on the window's
store when the job succeeds. While the database has no pairs, a :class:`WelcomeCard` sits at the top of
the Collect page; it goes as soon as the first pair is saved (or imported), or when the person closes it.

It uses the main window only through :class:`FirstRunHost`, the window's public API (an import-linter
contract keeps this module from importing ``main_window``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from PySide6.QtCore import QObject, QTimer, Signal, SignalInstance, Slot
from PySide6.QtWidgets import QVBoxLayout, QWidget

from desktop_dpo.core import demo_model
from desktop_dpo.core.demo_model import DemoPackage
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.first_run import (
    DEMO_SOURCE,
    DemoModelReady,
    demo_model_missing,
    prepare_demo_model,
    record_demo_model,
)
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.prompt_files import read_prompt_file
from desktop_dpo.core.store import ModelRow
from desktop_dpo.gui.resource_files import resource_file
from desktop_dpo.gui.welcome_card import WelcomeCard
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

if TYPE_CHECKING:
    from desktop_dpo.config import AppPaths
    from desktop_dpo.core.store import Store

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


class FirstRunHost(Protocol):
    """What the first run uses of the main window: its public API, nothing more."""

    store: Store
    registry: JobRegistry
    paths: AppPaths
    view_changed: SignalInstance  # (str) the key of the view now on screen
    pairs_changed: SignalInstance  # () pairs were saved, undone, deleted or imported
    closing: SignalInstance  # () the window is closing, before it asks about running jobs

    def view(self, key: str) -> QWidget: ...

    def show_view(self, key: str) -> None: ...

    def add_above_view(self, key: str, widget: QWidget) -> None: ...


class FirstRun(QObject):
    """Greets an empty database and sets up the bundled demo model once.

    Args:
        window: the main window, through its public API (:class:`FirstRunHost`).
        parent: the QObject that owns this one (the main window).

    Signals:
        job_started(object): the demo job's worker thread, before it runs (a test acts inside it through it).
        demo_model_ready(object): the demo model's :class:`ModelRow`, registered as the default.
        failed(str): why the demo model could not be set up.
        message(str): a line for the status bar.
    """

    job_started = Signal(object)
    demo_model_ready = Signal(object)
    failed = Signal(str)
    message = Signal(str)

    def __init__(self, window: FirstRunHost, parent: QObject | None = None):
        super().__init__(parent)
        self.window = window
        self._package: DemoPackage | None = None  # see package
        self.card: WelcomeCard | None = None
        self.holder: QWidget | None = None  # the card with the page's margins, in the Collect page
        self.job: JobOp | None = None
        self.outcome: str | None = None  # "succeeded" | "failed" | "cancelled" once the demo job ended
        self._shown_percent = -1

    @property
    def package(self) -> DemoPackage | None:
        """The installed demo package (None without the ``demo`` extra), looked up the first time it is used."""
        if self._package is None:
            # Through the module, so that one stand-in (tests) reaches every caller.
            self._package = demo_model.demo_package()
        return self._package

    # ---------------------------------------------------------------- starting

    def start(self) -> bool:
        """Show the welcome card if the database has no pairs, and start setting up the demo model if it is
        missing. Returns True when the demo job will run (it starts ``START_DELAY_MS`` later, so the window
        paints first)."""
        store = self.window.store
        # Whether the package is installed is enough here (finding it imports nothing); where its files are
        # is looked up when the job starts.
        needed = demo_model.demo_installed() and demo_model_missing(store)
        if store.count_comparisons(include_deleted=True) == 0:
            self._show_card(unpacking=needed)
        if needed:
            # See _on_window_closing: quitting stops the unpacking without asking.
            self.window.closing.connect(self._on_window_closing)
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
        # The card sits above the Collect view, whether the view is built yet or not.
        self.window.add_above_view("collect", holder)
        holder.show()  # now, not when the layout next gets round to it: the window may be on screen already
        self.window.view_changed.connect(self._on_view_changed)
        self.window.pairs_changed.connect(self.refresh)

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

    @Slot(str)
    def _on_view_changed(self, key: str) -> None:
        if key == "collect":  # pairs may have come from elsewhere (another process) since it was last shown
            self.refresh()

    def card_visible(self) -> bool:
        """True while the welcome card is shown (on the Collect page)."""
        return self.holder is not None and not self.holder.isHidden()

    # ---------------------------------------------------------------- the demo job

    @Slot()
    def _on_window_closing(self) -> None:
        # Unpacking stops at its next block, before the window asks about running jobs. Nothing is lost
        # (the file only gets its name once complete) and it starts again next time, so there is nothing to
        # ask the person.
        if self.job is not None:
            self.job.cancel()
            self.job.wait(STOP_WAIT_MS)

    @Slot()
    def _start_job(self) -> None:
        package = self.package
        assert package is not None
        models_dir = self.window.paths.models_dir

        def factory(token: CancelToken) -> Job:
            return prepare_demo_model(models_dir, package, cancel=token)

        op = JobOp(self.window.registry, factory, owner=self).resource(DEMO_RESOURCE).slots("demo")
        try:
            self.job_started.emit(op.thread)
            self.job = op.start()
        except DesktopDpoError as exc:  # one already runs (a second window on the same registry)
            log.info("Demo model not started: %s", exc)
            return
        log.info("Unpacking the demo model into %s", models_dir)

    def _on_demo_event(self, event: object) -> None:
        if not isinstance(event, Progress):
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

    def _on_demo_succeeded(self, ready: object) -> None:
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

    def _on_demo_failed(self, message: str) -> None:
        self._fail(message)

    def _fail(self, message: str) -> None:
        self.outcome = "failed"
        if self.card is not None:
            self.card.set_model_failed(message)
        self.message.emit(f"The demo model could not be set up: {message}")
        self.failed.emit(message)

    def _on_demo_cancelled(self) -> None:
        self.outcome = "cancelled"
        if self.card is not None:
            self.card.set_model_stopped()
