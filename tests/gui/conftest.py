"""Fixtures shared by the GUI tests: the GUI thread's store, the job registry, the engine pool, a main window.

The tiny model fixtures (``tiny_model_dir``, ``tiny_gguf``) and ``app_home`` come from tests/conftest.py.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel, QWidget

from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.llm.generation import TokenEvent
from desktop_dpo.core.llm.llama_child import FAULT_ENV
from desktop_dpo.core.store import Store
from desktop_dpo.gui.resource_files import read_style_sheet
from desktop_dpo.workers.job_worker import JobRegistry

JOB_STOP_MS = 60_000  # generous: the machine is shared; a job that has not stopped by then is a failure
HOLD_S = 60  # a held job goes on by itself after this long, so a failing test cannot hang


@pytest.fixture
def app_style() -> Generator[None, None, None]:
    """The app's style sheet (fonts, paddings and sizes as a person sees them), for this test only."""
    app = QApplication.instance()
    app.setStyleSheet(read_style_sheet())
    yield
    app.setStyleSheet("")


def hold_the_trainable_copy(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make the next trainable copies wait, their temporary folder already made, until the test sets the second
    event returned; the first is set when a copy is waiting."""
    from desktop_dpo.core.models import trainable_copy

    inside, release = threading.Event(), threading.Event()
    real_load = trainable_copy._load_gguf_tokenizer

    def held_load(path: Any) -> Any:
        inside.set()
        release.wait(HOLD_S)
        return real_load(path)

    monkeypatch.setattr(trainable_copy, "_load_gguf_tokenizer", held_load)
    return inside, release


def cut_texts(root: QWidget) -> list[str]:
    """The texts on screen under ``root`` that do not fit: a one-line label or a button whose text is wider
    than the room it has, or a widget that sticks out of its window's right edge."""
    cut = []
    right_edge = root.window().mapToGlobal(root.window().rect().topRight()).x()
    for widget in root.findChildren(QWidget):
        if not widget.isVisible():
            continue
        text = ""
        if (
            isinstance(widget, QLabel)
            and not widget.wordWrap()
            and widget.textFormat() != Qt.TextFormat.RichText
        ):
            text, room = widget.text(), widget.contentsRect().width()
        elif isinstance(widget, QAbstractButton):
            text, room = widget.text(), widget.width() - 8  # the button's frame and padding
        if text and "<" not in text and widget.fontMetrics().horizontalAdvance(text) > room:
            cut.append(f"{type(widget).__name__} {widget.objectName()!r}: {text!r}")
        elif widget.mapToGlobal(widget.rect().topRight()).x() > right_edge + 1:
            cut.append(f"{type(widget).__name__} {widget.objectName()!r} sticks out of the window")
    return cut


def show_active(qtbot, widget: QWidget, width: int, height: int) -> None:
    """Show ``widget`` at ``width`` x ``height`` as the active window, so that keys reach it (closed at the end)."""
    qtbot.addWidget(widget)
    widget.resize(width, height)
    widget.show()
    widget.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is widget.window())


def hold_the_model_child(monkeypatch, folder: Path) -> Callable[[], None]:
    """Make the model's child process (started from now on) pause every answer after its first token until
    the returned function is called. The app's llama.cpp runs in a child that would otherwise write the
    whole answer while the test holds the job in the window's process."""
    marker = folder / "hold-the-model"
    marker.write_text("held")
    monkeypatch.setenv(FAULT_ENV, f"hold:{marker}")
    return lambda: marker.unlink(missing_ok=True)


def held_after_first_token(
    real_job: Callable[..., Generator[Any, None, Any]],
    first_token: threading.Event,
    release: threading.Event,
    *,
    visible: bool = False,
) -> Callable[..., Generator[Any, None, Any]]:
    """Wraps the job function ``real_job``: the real job, paused in its worker thread after its first token
    (with text, when ``visible``) until ``release`` is set; a tiny model would otherwise finish before a key
    could be pressed."""

    def held(*args: Any, **kwargs: Any) -> Generator[Any, None, Any]:
        job = real_job(*args, **kwargs)
        try:
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    return stop.value
                yield event
                if (
                    isinstance(event, TokenEvent)
                    and (event.text.strip() or not visible)
                    and not first_token.is_set()
                ):
                    first_token.set()
                    release.wait(HOLD_S)
        finally:
            job.close()

    return held


class FixedSide(random.Random):
    """Puts generation A (in Evaluate: the aligned model's answer) on the left when ``a_left``.

    Only the side is fixed: the seeds drawn from it still come from a seeded rng.
    """

    def __init__(self, a_left: bool):
        super().__init__(0)
        self.a_left = a_left

    def random(self) -> float:
        return 0.1 if self.a_left else 0.9


@pytest.fixture
def gui_store(app_home):
    """The GUI thread's store, opened as the app opens it (database and backups under the private home)."""
    store = Store.open(app_home.db_path, backups_dir=app_home.backups_dir)
    yield store
    store.close()


@pytest.fixture
def registry():
    """The job registry. Every job must stop at the end; their last signals are then delivered (ask for
    ``gui_store`` first, so that happens while the store is still open)."""
    jobs = JobRegistry()
    yield jobs
    assert jobs.cancel_all_and_wait(JOB_STOP_MS), "a test left a job that would not stop"
    QApplication.processEvents()


@pytest.fixture
def pool():
    """The llama.cpp engines, closed at the end."""
    engines = EnginePool()
    yield engines
    engines.close_all()


@pytest.fixture
def make_window(qtbot, gui_store, registry, app_home):
    """Makes main windows on the test's store and registry (call it again for a restart); all closed at the end."""
    from desktop_dpo.gui.main_window import MainWindow  # only the tests that need a window import every view

    windows: list[MainWindow] = []

    def make() -> MainWindow:
        window = MainWindow(store=gui_store, registry=registry, paths=app_home)
        windows.append(window)
        window.show()
        qtbot.waitExposed(window)
        return window

    yield make
    # Not qtbot.addWidget: it closes windows before fixtures end, possibly while a job is still finishing
    # (a job reports success just before its thread ends), and the window would then ask about it.
    assert registry.cancel_all_and_wait(JOB_STOP_MS)
    QApplication.processEvents()  # what the finished threads queued, while the store is still open
    for window in windows:
        window.close()
        window.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
