"""The composition root: a database the app cannot open is explained, not a traceback; logs rotate."""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop_dpo import app as app_module
from desktop_dpo.app import EXIT_CANNOT_START, LOG_FILE_BYTES, LOG_FILE_COUNT, configure_logging, run_gui
from desktop_dpo.log_files import RotatingLogFile


@pytest.fixture
def restore_logging():
    """run_gui() configures the root logger; put it back so later tests do not log into a deleted folder."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def critical_boxes(monkeypatch):
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(
        QMessageBox, "critical", lambda parent, title, text, *args: shown.append((title, text))
    )
    # Must never get as far as the event loop.
    monkeypatch.setattr(app_module.MainWindow, "show", lambda self: pytest.fail("the window opened"))
    return shown


def test_a_file_that_is_not_a_database_is_explained_and_left_alone(
    qapp, app_home, critical_boxes, restore_logging
):
    app_home.db_path.write_bytes(b"this is somebody's shopping list\n")
    assert run_gui(app_home) == EXIT_CANNOT_START
    (title, text), *_ = critical_boxes
    assert "cannot open its database" in title
    assert str(app_home.db_path) in text and "not a desktop-dpo database" in text
    assert app_home.db_path.read_bytes() == b"this is somebody's shopping list\n"


def test_a_database_from_a_newer_version_is_explained(qapp, app_home, critical_boxes, restore_logging):
    conn = sqlite3.connect(app_home.db_path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    assert run_gui(app_home) == EXIT_CANNOT_START
    (_title, text), *_ = critical_boxes
    assert "newer version of desktop-dpo" in text
    assert "Update desktop-dpo" in text
    # And it is in the log file, for a bug report.
    assert "newer version" in app_home.log_file.read_text(encoding="utf-8")


def test_application_gets_name_icon_and_style(qapp, restore_logging):
    app = app_module.create_application()
    assert app is QApplication.instance()
    assert app.applicationName() == "desktop-dpo"
    assert not app.windowIcon().isNull()
    assert "#sidebar" in app.styleSheet()


def test_log_file_rotates_at_5_mb_keeping_5(tmp_path, restore_logging):
    log_file = tmp_path / "logs" / "desktop-dpo.log"
    configure_logging(log_file)
    configure_logging(log_file)  # a second call replaces, it does not double every line
    ours = [h for h in logging.getLogger().handlers if hasattr(h, "maxBytes")]
    assert len(ours) == 1
    assert (ours[0].maxBytes, ours[0].backupCount) == (LOG_FILE_BYTES, LOG_FILE_COUNT) == (5 * 1024 * 1024, 5)
    logging.getLogger("desktop_dpo.test").info("hello from the test")
    ours[0].flush()
    assert "hello from the test" in log_file.read_text(encoding="utf-8")


def test_log_file_is_set_aside_when_full_and_only_the_newest_backups_stay(tmp_path):
    log_file = tmp_path / "app.log"
    handler = RotatingLogFile(log_file, max_bytes=100, backup_count=2)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("desktop_dpo.test.rotation")
    log.propagate = False
    log.addHandler(handler)
    try:
        for number in range(12):  # 12 lines of 40 bytes: two fit in 100 bytes, so six files in all
            log.warning("line %02d %s", number, "x" * 31)
    finally:
        log.removeHandler(handler)
        handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app.log", "app.log.1", "app.log.2"]
    current = log_file.read_text(encoding="utf-8").splitlines()
    newer, older = ((tmp_path / f"app.log.{n}").read_text(encoding="utf-8").splitlines() for n in (1, 2))
    assert [line[:7] for line in current] == ["line 10", "line 11"]
    assert [line[:7] for line in newer] == ["line 08", "line 09"]
    assert [line[:7] for line in older] == ["line 06", "line 07"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())


class _Cycle:
    """Garbage only the cycle collector frees (it refers to itself); records the thread that freed it."""

    def __init__(self, freed_on: list[int]):
        self.me = self
        self.freed_on = freed_on

    def __del__(self) -> None:
        self.freed_on.append(threading.get_ident())


def test_garbage_made_in_a_worker_thread_is_freed_on_the_gui_thread(qapp, qtbot):
    """A cycle holding a Qt object, freed in a job's thread, would destroy that object off its thread."""
    enabled = gc.isenabled()
    timers = set(qapp.findChildren(QTimer))
    try:
        gc.enable()  # as the app runs before (the tests' own fixture keeps it off)
        app_module.collect_on_gui_thread(qapp)
        assert not gc.isenabled()  # automatic collection, which runs on any thread, is off
        freed_on: list[int] = []

        def worker() -> None:
            for _ in range(2000):  # far more than a collection's threshold of allocations
                _Cycle(freed_on)
                _ = [[] for _ in range(10)]

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert freed_on == []  # nothing was collected in the worker
        qtbot.waitUntil(lambda: len(freed_on) > 0, timeout=5000)  # the GUI thread's timer collects it
        assert set(freed_on) == {threading.get_ident()}
    finally:
        for timer in set(qapp.findChildren(QTimer)) - timers:
            timer.stop()
            timer.deleteLater()
        gc.unfreeze()
        if not enabled:
            gc.disable()
