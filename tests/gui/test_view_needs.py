"""Each view says what it needs before it can act, in words on screen, when its prerequisite is missing:
a new person, with the demo model only or with no model at all, is never left at a blank or puzzling page."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QApplication

from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from desktop_dpo.gui.evaluate_view import NEEDS_ALIGNED
from desktop_dpo.gui.main_window import MainWindow
from desktop_dpo.workers.job_worker import JobRegistry
from tests.plugins import tiny_model as _tiny_model_plugin

tiny_model_dir = _tiny_model_plugin.tiny_model_dir
tiny_gguf = _tiny_model_plugin.tiny_gguf


@pytest.fixture
def gui_store(app_home):
    store = Store.open(app_home.db_path, backups_dir=app_home.backups_dir)
    yield store
    store.close()


@pytest.fixture
def window(qtbot, gui_store, app_home):
    registry = JobRegistry()
    window = MainWindow(store=gui_store, registry=registry, paths=app_home)
    window.show()
    qtbot.waitExposed(window)
    yield window
    assert registry.cancel_all_and_wait(60_000)
    QApplication.processEvents()
    window.close()
    window.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_collect_without_a_model_points_to_models(window):
    collect = window.view("collect")
    collect.set_prompt("Hello?")
    assert collect.model_combo.currentText() == "No model yet: add one in Models"
    assert not collect.sample_button.isEnabled()
    assert collect.sample_button.toolTip() == "Add a model in Models first."


def test_chat_without_a_model_leads_to_models(qtbot, window):
    window.show_view("chat")
    chat = window.view("chat").chat
    assert chat.models_button.isVisible()
    qtbot.mouseClick(chat.models_button, Qt.MouseButton.LeftButton)
    assert window.current_view() == "models"


def test_evaluate_with_only_the_demo_model_says_an_aligned_model_is_needed(window, gui_store, tiny_gguf):
    register_model(gui_store, tiny_gguf, source="demo", name="Gemma 3 270M (demo, Q4_K_M)")
    window.show_view("chat")
    page = window.view("chat")
    page.setCurrentIndex(1)
    evaluate = page.evaluate
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
    window.show_view("chat")
    page = window.view("chat")
    page.setCurrentIndex(1)
    assert not page.evaluate.needs_note.isVisible()
    assert page.evaluate.next_button.toolTip() != NEEDS_ALIGNED
