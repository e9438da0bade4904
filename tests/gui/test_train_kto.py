"""KTO in the Train view: with KTO chosen, a line says how many more examples single labels bring (counted by
the same function training uses), and the run it starts trains on them, "both bad" picks included."""

from __future__ import annotations

from desktop_dpo.gui.train_settings_form import LOSS_SETTINGS
from tests.gui.test_train_loss_choice import DPO, choose
from tests.gui.test_train_view import TINY, add_pairs, click, make_view, model, wait_for_end  # noqa: F401

KTO = "KTO"
LINE = (
    "Single labels add 6 examples: 4 from “both bad” picks and 2 rewrites "
    "(KTO learns from each answer on its own)."
)


def add_single_labels(store) -> None:
    """Two "both bad" picks and two rewrites (one beside a tie, one beside a pick)."""
    for topic in ("owls", "bells"):
        store.record_pair(
            messages=[{"role": "user", "content": f"What do you think of {topic}?"}],
            text_a=f" No. {topic} bore me, go away.",
            text_b=f" No. I do not care about {topic}.",
            verdict="both_bad",
        )
    for topic, verdict in (("ferns", "tie"), ("moths", "b")):
        store.record_pair(
            messages=[{"role": "user", "content": f"Say something about {topic}."}],
            text_a=f" No. {topic}?",
            text_b=f" Fine, {topic}.",
            verdict=verdict,
            edited_text=f" Yes, gladly! {topic} are lovely, thank you.",
            edited_side="a",
        )


def test_kto_says_what_single_labels_add_and_trains_on_them(
    qtbot,
    gui_store,
    registry,
    app_home,
    model,  # noqa: F811
):
    add_pairs(gui_store)  # 12 picks
    add_single_labels(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home, TINY.replace(label_smoothing=0.1))
    form = view.settings_form
    combo = form.editors["loss_type"]
    form.advanced_toggle.click()
    assert not form.single_labels_note.isVisible()  # DPO learns from pairs only: nothing to say

    choose(combo, KTO)
    qtbot.waitUntil(lambda: form.single_labels_note.isVisible())
    assert form.single_labels_note.text() == LINE
    assert "each answer on its own" in form.single_labels_note.toolTip()
    # KTO has a β; label smoothing and the SFT weight belong to DPO.
    assert {name for name in LOSS_SETTINGS if form.editors[name].isVisible()} == {"beta"}

    click(qtbot, view.start_button)
    wait_for_end(qtbot, view, registry)
    (run,) = gui_store.list_runs()
    assert run.status == "completed", run.error
    assert run.config["loss_type"] == "kto" and run.config["label_smoothing"] == 0.0
    assert len(run.comparison_ids) == 12 + 2 + 2  # the "both bad" picks are in the run's snapshot

    choose(combo, DPO)
    assert not form.single_labels_note.isVisible()
