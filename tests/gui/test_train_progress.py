"""After each round the Train view says, in the person's terms, how far the model moved and how often it now
agrees with their picks on prompts it never saw."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from tests.core.test_run_progress import add_model, finished_run
from tests.gui.test_train_view import make_view, model  # noqa: F401  (model: a fixture)


def test_a_finished_round_says_how_often_the_new_model_agrees_and_how_it_compares_to_the_last(
    qtbot,
    gui_store,
    registry,
    app_home,
    model,  # noqa: F811
):
    first = finished_run(gui_store, model.id, accuracy=9 / 14, pairs=14, chosen=0.02, rejected=-0.03)
    exported = add_model(gui_store, "round one", run_id=first.id)
    second = finished_run(gui_store, exported, accuracy=14 / 18, pairs=18, chosen=0.07, rejected=-0.05)
    view = make_view(qtbot, gui_store, registry, app_home)
    view.refresh_runs()
    view.select_run(second.id)
    QApplication.processEvents()

    details = view.run_details.text()
    assert "moved the model a little from where it started" in details
    assert "The new model agrees with your picks on 78% of prompts it never saw" in details
    assert f"up from 64% after Run {first.id}" in details

    gui_store.update_run(second.id, status="stopped")  # a stopped run is not a finished round
    view.refresh_runs()
    view.select_run(second.id)
    QApplication.processEvents()
    assert "agrees with your picks" not in view.run_details.text()
