"""Collect's "Write my own answer": after sampling, the written answer is saved as a demonstration and as
preferred to each sampled answer; before sampling, as a demonstration alone. The counts a person reads and
what training reads (pairs and SFT demonstrations) both see it."""

from __future__ import annotations

from PySide6.QtCore import Qt

from desktop_dpo.core.dpo.data import pairs_from_comparisons
from desktop_dpo.core.dpo.pair_counts import store_pair_counts
from desktop_dpo.core.dpo.sft_phase import demonstrations
from tests.gui.test_collect_view import sample_and_wait, view  # noqa: F401  (view: fixture)

WRITTEN = "Tea is a drink made by steeping leaves in hot water."


def write_own(qtbot, view, text: str) -> None:  # noqa: F811
    assert view.own_answer.button.isEnabled(), view.own_answer.button.toolTip()
    qtbot.mouseClick(view.own_answer.button, Qt.MouseButton.LeftButton)
    dialog = view.own_answer.dialog
    assert dialog is not None and not dialog.save_button.isEnabled()  # nothing written yet
    dialog.set_text(text)
    assert dialog.save_button.isEnabled() and dialog.save_button.text() == "Save my answer"
    dialog.accept()
    qtbot.waitUntil(lambda: view.own_answer.dialog is None)


def test_written_answer_after_sampling_is_a_demonstration_and_beats_both_samples(qtbot, view, gui_store):  # noqa: F811
    sample_and_wait(qtbot, view)
    sampled = {view.panes[0].shown_text(), view.panes[1].shown_text()}
    write_own(qtbot, view, WRITTEN)

    assert view.feedback.text() == "Saved your answer: better than both sampled answers."
    (saved,) = gui_store.comparison_views()
    pairs = pairs_from_comparisons([saved])
    assert [p.chosen for p in pairs] == [WRITTEN, WRITTEN]
    assert {p.rejected.replace("\r", "\n") for p in pairs} == {s.replace("\r", "\n") for s in sampled}
    assert [d.chosen for d in demonstrations([saved], "rewrites")] == [WRITTEN]
    counts = store_pair_counts(gui_store)
    assert counts.usable == 1 and counts.pairs == 2
    assert view.pairs_label.text() == "1 usable pair"
    # Undo takes it back like any verdict.
    qtbot.mouseClick(view.undo_button, Qt.MouseButton.LeftButton)
    assert gui_store.comparison_views() == []


def test_written_answer_without_sampling_is_a_demonstration_alone(qtbot, view, gui_store):  # noqa: F811
    view.prompt_edit.clear()
    assert not view.own_answer.button.isEnabled()
    assert view.own_answer.button.toolTip() == "Write a prompt first."
    qtbot.keyClicks(view.prompt_edit, "Tell me about tea.")
    write_own(qtbot, view, WRITTEN)

    assert view.feedback.text() == "Saved your answer as an example to learn from."
    (saved,) = gui_store.comparison_views()
    assert saved.prompt_text == "Tell me about tea."
    assert pairs_from_comparisons([saved]) == []  # nothing to prefer it to
    assert [d.chosen for d in demonstrations([saved], "rewrites")] == [WRITTEN]
    assert store_pair_counts(gui_store).pairs == 0
