"""Composition root of the GUI: logging, QApplication, the GUI thread's Store, the job registry and the
main window. Nothing else wires these together; views receive what they need from here.
"""

from __future__ import annotations

import gc
import logging
import sys
import traceback
from collections.abc import Callable
from types import TracebackType

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from desktop_dpo import __version__
from desktop_dpo.config import APP_NAME, AppPaths
from desktop_dpo.core.errors import StoreError
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.offline import add_refusal_listener, remove_refusal_listener
from desktop_dpo.core.store import Store
from desktop_dpo.gui.main_window import MainWindow
from desktop_dpo.gui.resource_files import resource_icon
from desktop_dpo.gui.theme import SYSTEM, install_theme, saved_choice
from desktop_dpo.log_files import LOG_FILE_BYTES, LOG_FILE_COUNT, configure_logging  # noqa: F401 - re-exported
from desktop_dpo.workers.job_worker import JobRegistry, describe_error

log = logging.getLogger(__name__)

# Exit status when the app cannot start (database refused, folders not writable): not a crash.
EXIT_CANNOT_START = 2
COLLECT_EVERY_MS = 250  # how often the GUI thread runs the garbage collection that is due


def create_application(argv: list[str] | None = None, appearance: str = SYSTEM) -> QApplication:
    """The QApplication with the app's name, icon and look (reuses one that already exists).

    ``appearance`` is "system" (follow the desktop's light or dark setting), "light" or "dark".
    """
    app = QApplication.instance()
    if app is None:
        # Fusion everywhere: the style sheet and the palettes of gui/theme.py are made for it.
        # Fusion is asked for on the command line: asking the application for its style from Python costs
        # ~10 ms of start-up (PySide builds QStyle's enums), and setting it again costs as much.
        app = QApplication([*(argv if argv is not None else sys.argv[:1]), "-style", "Fusion"])
    elif app.style().name().lower() != "fusion":
        app.setStyle("Fusion")
    assert isinstance(app, QApplication)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setApplicationVersion(__version__)
    # Matches resources/<id>.desktop, so desktop shells group the window with its launcher.
    app.setDesktopFileName("io.github.desktop_dpo")
    app.setWindowIcon(resource_icon("desktop-dpo.svg"))
    install_theme(app, appearance)
    return app


def _refuse_to_start(title: str, message: str) -> int:
    from PySide6.QtWidgets import QMessageBox  # only when something went wrong

    log.error("%s: %s", title, message)
    QMessageBox.critical(None, title, message)
    return EXIT_CANNOT_START


def run_gui(paths: AppPaths) -> int:
    """Open the main window and run the event loop. Returns the process exit status.

    A database that cannot be opened (not SQLite, made by a newer version, unreadable) is explained in a
    message box and the app exits with status 2 instead of a traceback.
    """
    # The window's settings file is read before the window exists, so its first paint is in the right scheme.
    app = create_application(appearance=saved_choice(str(paths.window_settings)))
    try:
        paths.ensure()
    except OSError as exc:
        return _refuse_to_start("desktop-dpo cannot start", f"Cannot create the folder for your data: {exc}")
    configure_logging(paths.log_file)
    log.info("desktop-dpo %s starting; data in %s", __version__, paths.data_dir)

    try:
        store = Store.open(paths.db_path, backups_dir=paths.backups_dir)
    except StoreError as exc:
        return _refuse_to_start("desktop-dpo cannot open its database", str(exc))

    registry = JobRegistry()
    pool = EnginePool()
    window = MainWindow(store=store, registry=registry, paths=paths, pool=pool)
    # Refusals can happen in any thread; the signal carries them to the GUI thread.
    refusal_listener = window.network_refused.emit
    add_refusal_listener(refusal_listener)
    previous_hook = sys.excepthook
    sys.excepthook = _make_excepthook(window)
    window.show()
    # The welcome card is placed before the first paint; the demo model (if it must be unpacked) starts
    # copying in a job once the event loop runs, so start-up does not wait for it.
    window.start_first_run()
    # The command line may have paused the collector for start-up (cli.start_window); from the first turn of
    # the event loop, after the first paint, it collects on this thread only.
    QTimer.singleShot(0, lambda: collect_on_gui_thread(app))
    try:
        return app.exec()
    finally:
        gc.enable()
        sys.excepthook = previous_hook
        remove_refusal_listener(refusal_listener)
        # The window asked before closing and closed once its jobs had stopped, so this finds none; it only
        # covers a quit that bypassed the window (blocking is harmless now: nothing is left to paint).
        registry.cancel_all_and_wait()
        pool.close_all()
        store.close()
        log.info("desktop-dpo stopped")


def collect_on_gui_thread(app: QApplication) -> None:
    """From now on, Python's garbage collector runs on the GUI thread only.

    Left automatic, it runs in whichever thread happens to allocate, a job's worker thread too; if the
    cycle it frees holds a Qt object (a closed dialog's wrapper, a lambda that captured a widget), that
    object is destroyed off its thread, and the process dies in native code. So the automatic collector stays
    off and a timer here runs what it would have run (:func:`collect_due_garbage`). What start-up made (Qt's
    Python types and enums, the modules, the window) lives as long as the app: it is frozen first, so later
    collections skip it.
    """
    gc.freeze()
    gc.disable()
    timer = QTimer(app)
    timer.timeout.connect(collect_due_garbage)
    timer.start(COLLECT_EVERY_MS)


def collect_due_garbage() -> None:
    """The collection Python's automatic collector would run now (the oldest generation past its threshold),
    run on the calling thread."""
    counts, thresholds = gc.get_count(), gc.get_threshold()
    for generation in (2, 1, 0):
        if counts[generation] > thresholds[generation]:
            gc.collect(generation)
            return


def _make_excepthook(
    window: MainWindow,
) -> Callable[[type[BaseException], BaseException, TracebackType | None], None]:
    """Errors escaping a slot: log them with the traceback and tell the person, instead of only stderr."""

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        from PySide6.QtWidgets import QMessageBox

        log.error("Unhandled error:\n%s", "".join(traceback.format_exception(kind, exc, tb)))
        QMessageBox.warning(
            window, "Something went wrong", f"{describe_error(exc)}\n\nLog file: {window.paths.log_file}"
        )

    return hook
