"""Re-asking on screen: Collect now and then shows an earlier pair again, sides swapped, saved linked to the
first verdict, and the person's own prompt comes back; the Data view's check states the agreement and offers
the label smoothing it implies, which lands in Train's advanced settings."""

from __future__ import annotations

import random

from PySide6.QtCore import Qt

from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from tests.gui.test_collect_view import WAIT_MS, key, make_view, shown
from tests.gui.test_data_check import open_check

DUE_SEED = 31  # random.Random(31).random() < 1/20: the first pair asked for is a repeat


def judged(store: Store, count: int) -> list[int]:
    """``count`` pairs judged in Collect (shown side by side), A on the left, A better."""
    return [
        store.record_pair(
            messages=[{"role": "user", "content": f"Earlier question {n}?"}],
            text_a=f"The first answer to question {n}.",
            text_b=f"Another answer, number {n}.",
            verdict="a",
            a_shown_left=True,
        )
        for n in range(count)
    ]


def test_collect_re_asks_an_earlier_pair_swapped_and_links_the_verdict(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf
):
    register_model(gui_store, tiny_gguf, name="tiny")
    originals = judged(gui_store, 10)
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    view.reasker.rng = random.Random(DUE_SEED)
    qtbot.keyClicks(view.prompt_edit, "My own new question.")

    key(qtbot, view, "Ctrl+Return")

    pair = view.pair
    assert pair is not None and pair.repeat_of in originals
    original = gui_store.get_comparison(pair.repeat_of)
    number = originals.index(original.id)
    # Sides swapped: A was on the left the first time, so now it is on the right.
    assert shown(view) == (f"Another answer, number {number}.", f"The first answer to question {number}.")
    assert view.prompt_edit.toPlainText() == f"Earlier question {number}?"
    assert view.verdict_buttons["left"].isEnabled() and view.verdict_buttons["right"].isEnabled()
    assert not view.stop_button.isEnabled(), "nothing is being written"
    labels = view.findChildren(type(view.feedback))
    on_screen = " ".join(label.text() for label in labels if label.isVisible()).lower()
    assert "which answer is better? alt+1 left" in on_screen, "asked as any pair is"
    assert not any(word in on_screen for word in ("repeated", "again", "earlier pair")), "it does not say so"

    key(qtbot, view, "Alt+2")  # the right answer, which is A: the same verdict as before

    stored = gui_store.comparison_views()[-1].comparison
    assert (stored.repeat_of, stored.verdict, stored.a_shown_left) == (original.id, "a", False)
    assert (stored.generation_a_id, stored.generation_b_id) == (
        original.generation_a_id,
        original.generation_b_id,
    )
    assert view.prompt_edit.toPlainText() == "My own new question.", "the person's prompt is back"
    assert view.pairs_label.text() == "10 usable pairs", "a repeat is not another pair to train on"

    key(qtbot, view, "Ctrl+Return")  # never twice in a row: this one is sampled for the person's prompt
    qtbot.waitUntil(lambda: view.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    assert view.pair.repeat_of is None and view.pair.messages[-1]["content"] == "My own new question."
    qtbot.waitUntil(lambda: not view.stop_button.isEnabled(), timeout=WAIT_MS)


def test_the_check_states_the_agreement_and_sets_the_smoothing_in_train(qtbot, make_window, gui_store):
    originals = judged(gui_store, 20)
    for number, original_id in enumerate(originals):
        original = gui_store.get_comparison(original_id)
        gui_store.add_comparison(
            prompt_id=original.prompt_id,
            generation_a_id=original.generation_a_id,
            generation_b_id=original.generation_b_id,
            verdict="b" if number in (1, 8, 15) else "a",
            a_shown_left=False,
            repeat_of=original_id,
        )
    window = make_window()
    window.show_view("data")
    data = window.view("data")
    open_check(qtbot, data)
    panel = data.check_panel

    assert (
        "You agreed with yourself on 17 of 20 repeated pairs (85%; 95% interval 64–95%)."
        in panel.rates.text()
    )
    (row,) = [r for r in panel.rows if r.finding.key == "low_agreement"]
    assert "label smoothing 0.08" in row.advice.text()
    assert row.smoothing_button is not None and row.smoothing_button.isVisible()
    assert row.smoothing_button.text() == "Train with label smoothing 0.08"

    qtbot.mouseClick(row.smoothing_button, Qt.MouseButton.LeftButton)

    assert window.current_view() == "train"
    train = window.view("train")
    assert train.settings().label_smoothing == 0.08 and train.settings().loss_type == "sigmoid"
    form = train.settings_form
    assert form.advanced_toggle.isChecked() and form.editors["label_smoothing"].isVisible()
    assert "Label smoothing set to 0.08" in window.statusBar().currentMessage()
