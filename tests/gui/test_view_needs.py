"""Each view says what it needs before it can act, in words on screen, when its prerequisite is missing:
a new person, with the demo model only or with no model at all, is never left at a blank or puzzling page."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from desktop_dpo.core.models import register_model
from desktop_dpo.gui.evaluate_view import NEEDS_ALIGNED


@pytest.fixture
def window(make_window):
    return make_window()


def test_collect_without_a_model_points_to_models(window):
    collect = window.view("collect")
    collect.set_prompt("Hello?")
    assert collect.model_combo.currentText() == "No model yet: add one in Models"
    assert not collect.sample_button.isEnabled()
    assert collect.sample_button.toolTip() == "Add a model in Models first."


def test_chat_without_a_model_leads_to_models(qtbot, window):
    window.show_view("chat")
    chat = window.view("chat")
    assert chat.models_button.isVisible()
    qtbot.mouseClick(chat.models_button, Qt.MouseButton.LeftButton)
    assert window.current_view() == "models"


def test_evaluate_with_only_the_demo_model_says_an_aligned_model_is_needed(window, gui_store, tiny_gguf):
    register_model(gui_store, tiny_gguf, source="demo", name="Gemma 3 270M (demo, Q4_K_M)")
    window.show_view("evaluate")
    evaluate = window.view("evaluate")
    assert evaluate.needs_note.isVisible()
    assert "Export a trained run first".lower() in evaluate.needs_note.text().lower()
    # Not "choose two different models": with one model there is nothing to choose yet.
    assert not evaluate.next_button.isEnabled()
    assert evaluate.next_button.toolTip() == NEEDS_ALIGNED


def test_evaluate_says_nothing_of_the_kind_once_an_aligned_model_exists(
    window, gui_store, tiny_gguf, tiny_model_dir
):
    base = register_model(gui_store, tiny_gguf, name="base")
    register_model(gui_store, tiny_model_dir, name="aligned", source="aligned", parent_model_id=base.id)
    window.show_view("evaluate")
    evaluate = window.view("evaluate")
    assert not evaluate.needs_note.isVisible()
    assert evaluate.next_button.toolTip() != NEEDS_ALIGNED
