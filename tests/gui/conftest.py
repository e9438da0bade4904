"""Fixtures shared by the GUI tests: the GUI thread's store, the job registry, the engine pool, a main window.

The tiny model fixtures (``tiny_model_dir``, ``tiny_gguf``) and ``app_home`` come from tests/conftest.py.
"""

from __future__ import annotations

import gc
import random
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QComboBox,
    QHeaderView,
    QLabel,
    QStyle,
    QStyleOptionComboBox,
    QTabBar,
    QWidget,
)

from desktop_dpo.app import collect_due_garbage
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.llm.generation import TokenEvent
from desktop_dpo.core.llm.llama_child import FAULT_ENV
from desktop_dpo.core.store import Store
from desktop_dpo.gui.resource_files import read_style_sheet
from desktop_dpo.workers.job_worker import JobRegistry

JOB_STOP_MS = 60_000  # generous: the machine is shared; a job that has not stopped by then is a failure
HOLD_S = 60  # a held job goes on by itself after this long, so a failing test cannot hang


@pytest.fixture(autouse=True)
def collect_on_the_test_thread() -> Generator[None, None, None]:
    """Python's collector runs on the test's (GUI) thread only, as in the app (``app.collect_on_gui_thread``):
    left automatic, it may free a cycle holding a Qt object in a job's worker thread, and the whole test run
    dies in native code."""
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    collect_due_garbage()
    if was_enabled:
        gc.enable()


@pytest.fixture(autouse=True, scope="module")
def collect_after_the_module() -> Generator[None, None, None]:
    """What a module's windows left behind is freed here, on this thread, not later in another test's thread."""
    yield
    gc.collect()


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
    than the room it has, a label or button lower than its lines, a wrapping label with a word wider than its
    lines, a label the code shortened to fit
    ("…", the whole text in its tooltip), a combo box, tab or table header whose text Qt shortens, or a widget
    that sticks out of its window's right edge."""
    cut = []
    right_edge = root.window().mapToGlobal(root.window().rect().topRight()).x()
    for widget in root.findChildren(QWidget):
        if not widget.isVisible():
            continue
        shortened = _shortened_text(widget)
        if shortened:
            cut.append(f"{type(widget).__name__} {widget.objectName()!r}: {shortened!r}")
            continue
        text = ""
        if (
            isinstance(widget, QLabel)
            and not widget.wordWrap()
            and widget.textFormat() != Qt.TextFormat.RichText
        ):
            text, room = widget.text(), widget.contentsRect().width()
        elif isinstance(widget, QLabel) and widget.textFormat() != Qt.TextFormat.RichText:
            # A label that wraps breaks its lines at spaces only: its longest word must fit on a line.
            words = widget.text().split() or [""]
            text, room = max(words, key=widget.fontMetrics().horizontalAdvance), widget.contentsRect().width()
        elif isinstance(widget, QAbstractButton):
            text, room = widget.text(), widget.width() - 8  # the button's frame and padding
        if text and "<" not in text and widget.fontMetrics().horizontalAdvance(text) > room:
            cut.append(f"{type(widget).__name__} {widget.objectName()!r}: {text!r}")
        elif _cut_at_the_bottom(widget):
            cut.append(
                f"{type(widget).__name__} {widget.objectName()!r} cut at its bottom: {_text_of(widget)!r}"
            )
        elif widget.mapToGlobal(widget.rect().topRight()).x() > right_edge + 1:
            cut.append(f"{type(widget).__name__} {widget.objectName()!r} sticks out of the window")
    return cut


def _text_of(widget: QWidget) -> str:
    return widget.text() if isinstance(widget, (QLabel, QAbstractButton)) else ""


def _cut_at_the_bottom(widget: QWidget) -> bool:
    """A label or button lower than its text: a wrapping label whose lines need more height than it has, or
    one line squeezed below the font's height."""
    if not _text_of(widget):
        return False
    if isinstance(widget, QLabel) and widget.wordWrap():
        room = widget.contentsRect()
        margins = widget.height() - room.height()
        return widget.heightForWidth(widget.width()) - margins > room.height() + 2
    return widget.contentsRect().height() < widget.fontMetrics().height() - 2


def _shortened_text(widget: QWidget) -> str:
    """The text ``widget`` shows shortened, or "": a label elided by the code (it ends with "…" and its
    tooltip holds the whole text, unless it shows the first items of a " · " list whole), a combo box's current
    text wider than its text field, a tab narrower than its text, or a table header section narrower than its
    title (only sections in view count)."""
    if isinstance(widget, QLabel):
        text, tip = widget.text(), widget.toolTip()
        whole = text[:-1].rstrip()
        elided = text.endswith("…") and whole and tip.startswith(whole) and len(tip) > len(text)
        # Whole items of a list shown, the rest left to the tooltip (the status bar's running jobs): not cut.
        return text if elided and not tip[len(text) :].startswith(" · ") else ""
    if isinstance(widget, QComboBox) and not widget.isEditable() and widget.currentText():
        option = QStyleOptionComboBox()
        widget.initStyleOption(option)
        field = widget.style().subControlRect(
            QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, widget
        )
        text = widget.currentText()
        return text if widget.fontMetrics().horizontalAdvance(text) > field.width() else ""
    if isinstance(widget, QTabBar):
        cut = [
            widget.tabText(i)
            for i in range(widget.count())
            if widget.isTabVisible(i) and widget.tabRect(i).width() < widget.tabSizeHint(i).width()
        ]
        return " | ".join(cut)
    if isinstance(widget, QHeaderView) and widget.model() is not None:
        cut = []
        for section in range(widget.count()):
            position = widget.sectionViewportPosition(section)
            size = widget.sectionSize(section)
            if widget.isSectionHidden(section) or position < 0 or position + size > widget.viewport().width():
                continue  # hidden, or scrolled out of view: not cut
            title = widget.model().headerData(section, widget.orientation())
            if (
                title
                and widget.orientation() == Qt.Orientation.Horizontal
                and size < _title_room(widget, section)
            ):
                cut.append(str(title))
        return " | ".join(cut)
    return ""


def _title_room(header: QHeaderView, section: int) -> int:
    """The width a header section needs to show its title whole: the title in the header's font, and the
    section's padding (as a button's, see cut_texts). Not ``sectionSizeFromContents``: it measures with the
    widget's font and its own margins on top of the style sheet's, a few pixels more than the title takes."""
    title = str(header.model().headerData(section, header.orientation()))
    return header.fontMetrics().horizontalAdvance(title) + 8


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
