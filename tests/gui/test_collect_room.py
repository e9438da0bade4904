"""Collect gives the answers the room, with the welcome card of a new database above it: the card folds to one
line and the prompt shrinks to a couple of lines while a pair is on screen, and nothing is cut."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QRect, Qt

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.models import register_model
from desktop_dpo.gui.collect_prompt_editor import COMPACT_LINES, COMPACT_PADDING
from desktop_dpo.gui.main_window import MainWindow
from desktop_dpo.gui.response_pane import ResponsePane
from desktop_dpo.gui.welcome_card import WELCOME_TEXT, WelcomeCard
from tests.gui.conftest import cut_texts, show_active
from tests.gui.test_first_run import use_package

WAIT_MS = 60_000  # generous: the machine is shared


def lines_on_screen(window: MainWindow, pane: ResponsePane) -> int:
    """How many lines of an answer a person sees: the pane's text, less what the page scrolled away."""
    collect = window.view("collect")
    text = pane.text.viewport()
    shown = QRect(text.mapTo(window, text.rect().topLeft()), text.size())
    page = collect.page_scroll.viewport()
    shown = shown.intersected(QRect(page.mapTo(window, page.rect().topLeft()), page.size()))
    margins = 2 * int(pane.text.document().documentMargin())
    return max(0, shown.height() - margins) // pane.text.fontMetrics().lineSpacing()


def welcomed_window(
    qtbot, monkeypatch, make_window, gui_store, tiny_gguf, width: int, height: int
) -> MainWindow:
    """A new database with a model: the welcome card on Collect, in a ``width`` x ``height`` window."""
    use_package(monkeypatch, None)
    register_model(gui_store, tiny_gguf, name="tiny")
    window = make_window()
    window.start_first_run()
    window.show_view("collect")
    window.resize(width, height)
    qtbot.waitUntil(lambda: window.width() == width and window.height() == height)
    assert window.first_run.card_visible()
    qtbot.waitUntil(lambda: cut_texts(window) == [])  # once the layout has taken in the new size
    return window


def sample_a_pair(qtbot, window: MainWindow) -> None:
    collect = window.view("collect")
    collect.set_sampling_settings(SamplingSettings(max_tokens=8))
    collect.set_prompt("Say hello.")
    assert collect.sample()
    qtbot.waitUntil(lambda: collect.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not collect.stop_button.isEnabled(), timeout=WAIT_MS)


def test_at_1280_by_800_each_answer_shows_14_lines_under_the_welcome_card(
    qtbot, monkeypatch, make_window, gui_store, tiny_gguf, app_style
):
    window = welcomed_window(qtbot, monkeypatch, make_window, gui_store, tiny_gguf, 1280, 800)
    collect, card = window.view("collect"), window.first_run.card
    assert not card.is_compact() and card.starter_button.isVisible()  # at first sight: the whole welcome

    sample_a_pair(qtbot, window)
    qtbot.waitUntil(lambda: card.is_compact())
    assert window.first_run.card_visible()  # still there until the first verdict, on one line
    assert not card.starter_button.isVisible() and not card.text.isVisible()
    assert card.compact_status.isVisible() and card.compact_status.text() == card.model_text.text()
    assert "Ready: tiny" in card.model_status()
    prompt = collect.prompt_edit
    assert prompt.height() <= COMPACT_LINES * prompt.fontMetrics().lineSpacing() + COMPACT_PADDING
    qtbot.waitUntil(lambda: all(lines_on_screen(window, pane) >= 14 for pane in collect.panes))
    assert collect.page_scroll.verticalScrollBar().maximum() == 0  # the whole page on screen
    assert cut_texts(window) == []

    qtbot.mouseClick(card.fold_toggle, Qt.MouseButton.LeftButton)  # the arrow opens the card again
    assert card.starter_button.isVisible() and card.text.text() == WELCOME_TEXT


def test_at_1024_by_640_nothing_is_cut_under_the_welcome_card(
    qtbot, monkeypatch, make_window, gui_store, tiny_gguf, app_style
):
    window = welcomed_window(qtbot, monkeypatch, make_window, gui_store, tiny_gguf, 1024, 640)
    collect = window.view("collect")

    sample_a_pair(qtbot, window)
    qtbot.waitUntil(lambda: all(lines_on_screen(window, pane) >= 8 for pane in collect.panes))
    viewport = collect.page_scroll.viewport()
    bar = collect.verdict_bar
    qtbot.waitUntil(lambda: bar.mapTo(viewport, bar.rect().bottomLeft()).y() <= viewport.height())
    assert cut_texts(window) == []

    qtbot.mouseClick(collect.verdict_buttons["left"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: collect.feedback.text().startswith("Saved"))
    assert not window.first_run.card_visible()  # the first pick: the welcome has done its work
    assert not collect.prompt_editor.is_compact()  # the next prompt gets its room back
    assert cut_texts(window) == []


@pytest.mark.parametrize("button", ["starter_button", "write_button"])
def test_the_welcome_card_folds_to_one_line_once_the_person_begins(qtbot, app_style, button):
    card = WelcomeCard(starter_count=3)
    card.set_model_ready("tiny")
    show_active(qtbot, card, 820, 200)
    full = card.sizeHint().height()
    assert card.title.isVisible() and not card.compact_status.isVisible()

    qtbot.mouseClick(getattr(card, button), Qt.MouseButton.LeftButton)
    assert card.is_compact()
    assert not card.text.isVisible() and not card.write_button.isVisible()
    assert card.compact_status.isVisible() and card.compact_status.text() == card.model_text.text()
    assert "Ready: tiny" in card.model_status()
    assert all(step.isVisible() for step in card.step_labels)  # the loop stays
    assert card.sizeHint().height() < full * 0.6
    assert cut_texts(card) == []
