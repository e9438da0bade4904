"""Shortcuts built from Qt's standard keys (Quit, Undo) have a key on every platform, and Sample takes both
Enter keys.

A platform may bind no key to a standard key (Windows has no Quit key; neither has the offscreen platform these
tests run on): ``no_standard_keys`` simulates one that binds none at all.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QApplication

from desktop_dpo.core.models import register_model
from desktop_dpo.gui.collect_view import CollectView
from desktop_dpo.gui.data_view import DataView
from desktop_dpo.gui.widgets import standard_keys
from tests.gui.test_collect_view import WAIT_MS, key, make_view, sample_and_wait

CTRL = Qt.KeyboardModifier.ControlModifier


def shown_keys(keys: QKeySequence) -> str:
    """A key sequence as a menu or a button shows it."""
    return keys.toString(QKeySequence.SequenceFormat.NativeText)


@pytest.fixture
def no_standard_keys(monkeypatch) -> None:
    """A platform that binds no key to any standard key."""
    monkeypatch.setattr(QKeySequence, "keyBindings", staticmethod(lambda _key: []))


@pytest.fixture
def collect(qtbot, gui_store, registry, pool, app_home, tiny_gguf) -> CollectView:
    register_model(gui_store, tiny_gguf, name="tiny")
    return make_view(qtbot, gui_store, registry, pool, app_home)


def test_standard_keys_are_the_platforms_or_the_fallback(qapp, monkeypatch):
    undo = QKeySequence.keyBindings(QKeySequence.StandardKey.Undo)
    assert undo and standard_keys(QKeySequence.StandardKey.Undo, "Ctrl+Z") == undo  # every binding, in order
    monkeypatch.setattr(QKeySequence, "keyBindings", staticmethod(lambda _key: []))
    assert standard_keys(QKeySequence.StandardKey.Undo, "Ctrl+Z") == [QKeySequence("Ctrl+Z")]


# ------------------------------------------------------------------------------------------- Quit


def quits_with_ctrl_q(qtbot, window) -> None:
    """File › Quit shows Ctrl+Q, and Ctrl+Q closes the window."""
    file_menu = window.menuBar().actions()[0].menu()
    assert file_menu.title() == "&File"
    (quit_action,) = [action for action in file_menu.actions() if action.text() == "&Quit"]
    assert shown_keys(quit_action.shortcut()) == "Ctrl+Q"  # what the menu shows beside "Quit"
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    qtbot.keyClick(window, Qt.Key.Key_Q, CTRL)
    qtbot.waitUntil(lambda: not window.isVisible())


def test_quit_has_ctrl_q_where_the_platform_binds_no_quit_key(qtbot, make_window):
    """Like Windows, the offscreen platform binds no key to Quit."""
    assert QKeySequence.keyBindings(QKeySequence.StandardKey.Quit) == []
    quits_with_ctrl_q(qtbot, make_window())


def test_quit_has_ctrl_q_with_no_standard_keys_at_all(qtbot, make_window, no_standard_keys):
    quits_with_ctrl_q(qtbot, make_window())


# ------------------------------------------------------------------------------------------- Collect


def test_undo_a_verdict_with_ctrl_z_with_no_standard_keys(qtbot, no_standard_keys, collect, gui_store):
    undo_shortcut = collect.shortcuts["undo"]
    assert [shown_keys(keys) for keys in undo_shortcut.keys()] == ["Ctrl+Z"]  # noqa: SIM118 (a QShortcut)
    assert "(Ctrl+Z)" in collect.undo_button.toolTip()
    sample_and_wait(qtbot, collect)
    key(qtbot, collect, "Alt+1")
    assert gui_store.count_comparisons() == 1
    key(qtbot, collect, "Ctrl+Z")  # from the prompt editor, which lets the key through (UndoKeyFilter)
    assert gui_store.count_comparisons() == 0
    assert collect.verdict_buttons["left"].isEnabled()


def test_every_undo_key_of_the_platform_undoes_a_verdict(qtbot, collect, gui_store):
    """The offscreen platform binds Alt+Backspace to Undo as well, as Windows does: it undoes the verdict too,
    from the prompt editor as from anywhere in the view."""
    undo = QKeySequence.keyBindings(QKeySequence.StandardKey.Undo)
    assert QKeySequence("Alt+Backspace") in undo
    assert collect.shortcuts["undo"].keys() == undo
    sample_and_wait(qtbot, collect)
    key(qtbot, collect, "Alt+2")
    assert gui_store.count_comparisons() == 1
    qtbot.keyClick(collect.prompt_edit, Qt.Key.Key_Backspace, Qt.KeyboardModifier.AltModifier)
    assert gui_store.count_comparisons() == 0
    assert collect.verdict_buttons["right"].isEnabled()


def test_sample_with_ctrl_and_the_keypad_enter(qtbot, collect):
    qtbot.keyClicks(collect.prompt_edit, "Name a colour.")
    qtbot.keyClick(collect.prompt_edit, Qt.Key.Key_Enter, CTRL | Qt.KeyboardModifier.KeypadModifier)
    assert not collect.sample_button.isEnabled(), "sampling started"
    qtbot.waitUntil(lambda: collect.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not collect.stop_button.isEnabled(), timeout=WAIT_MS)


# ------------------------------------------------------------------------------------------- Data


def data_view(qtbot, store) -> DataView:
    view = DataView(store=store, import_action=QAction("Import"), export_action=QAction("Export"))
    qtbot.addWidget(view)
    return view


def test_data_deletes_undoes_and_finds_with_the_platforms_keys(qtbot, gui_store):
    view = data_view(qtbot, gui_store)
    for shortcut, standard in (
        (view.delete_shortcut, QKeySequence.StandardKey.Delete),
        (view.undo_shortcut, QKeySequence.StandardKey.Undo),
        (view.search_shortcut, QKeySequence.StandardKey.Find),
    ):
        assert shortcut.keys() == QKeySequence.keyBindings(standard)  # every binding of the platform


def test_data_keeps_delete_undo_and_find_keys_with_no_standard_keys(qtbot, gui_store, no_standard_keys):
    view = data_view(qtbot, gui_store)
    shown = [
        [shown_keys(keys) for keys in shortcut.keys()]  # noqa: SIM118 (a QShortcut)
        for shortcut in (view.delete_shortcut, view.undo_shortcut, view.search_shortcut)
    ]
    assert shown == [["Del"], ["Ctrl+Z"], ["Ctrl+F"]]
