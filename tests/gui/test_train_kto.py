"""KTO in the Train view: with KTO chosen, a line says how many more examples single labels bring (counted by
the same function training uses), and the run it starts trains on them, "both bad" picks included."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from desktop_dpo.core.dpo import events
from desktop_dpo.gui.metrics_plots import KL_PLOT
from desktop_dpo.gui.train_settings_form import LOSS_SETTINGS
from tests.core.test_reply_labels import chat
from tests.core.test_train import chosen_text, rejected_text
from tests.gui.test_train_loss_choice import DPO, choose
from tests.gui.test_train_view import (  # noqa: F401  (model: a fixture)
    TINY,
    add_flat_run,
    add_pairs,
    click,
    make_view,
    model,
    wait_for_end,
)

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
    # Its reference point z0 came in with every step and is drawn beside the three plots.
    assert view.plots.reference_point.isVisible()
    assert [x for x, _ in view.plots.points("kl")] == list(range(1, run.step + 1))

    choose(combo, DPO)
    assert not form.single_labels_note.isVisible()


def rate(store, model_id: int, good: int, bad: int, first: int = 0) -> None:
    """``good`` chat replies of the model rated 👍, then ``bad`` rated 👎, each in a conversation of its own."""
    for i in range(first, first + good + bad):
        desirable = i < first + good
        reply = chosen_text(f"topic {i}") if desirable else rejected_text(f"topic {i}")
        store.set_reply_label(chat(store, model_id, f"Tell me about topic {i}.", reply), desirable)


def add_kto_run(store, model_id: int, z0: list[float]) -> int:
    """A stopped KTO run whose steps stored these reference points z0."""
    config = TINY.replace(loss_type="kto").to_dict()
    run_id = store.create_run(name="kto", base_model_id=model_id, config=config, comparison_ids=[])
    store.update_run(run_id, status="stopped", step=len(z0), total_steps=6)
    for step, kl in enumerate(z0, 1):
        metrics = {"loss": 0.5, "rewards/accuracies": 0.5, "rewards/margins": 0.1 * step, "kl": kl}
        store.add_run_metrics(run_id, step, metrics)
    return run_id


def test_a_kto_run_shows_its_reference_point_z0_and_a_dpo_run_does_not(
    qtbot,
    gui_store,
    registry,
    app_home,
    model,  # noqa: F811
):
    view = make_view(qtbot, gui_store, registry, app_home)
    plots, z0 = view.plots, view.plots.reference_point
    kto = add_kto_run(gui_store, model.id, [0.0, 0.02, 0.05])
    view.refresh_runs()
    view.select_run(kto)
    QApplication.processEvents()

    assert z0.isVisible() and z0.title.text() == KL_PLOT.title == "KL reference point z0"
    assert "reference point" in z0.widget.toolTip()
    assert plots.points("kl") == [(1.0, 0.0), (2.0, 0.02), (3.0, 0.05)]
    assert z0.widget.width() >= 110 and z0.widget.height() >= 110  # beside the three, with room of its own
    assert all(plot.isVisible() for plot in plots.widgets.values())
    # A step of the run training now adds its point as it comes.
    step = events.StepMetrics(
        step=4, total_steps=6, epoch=0.6, loss=0.4, rewards_chosen=0.1, rewards_rejected=-0.1,
        rewards_accuracies=0.75, rewards_margins=0.2, logps_chosen=-5.0, logps_rejected=-7.0, lr=1e-3,
        grad_norm=1.0, tokens_per_s=100.0, eta_s=10.0, kl=0.08,
    )  # fmt: skip
    view.live_panel.show_event(step, plot=True)
    assert plots.points("kl")[-1] == (4.0, 0.08)

    flat = add_flat_run(gui_store, model.id)  # a DPO run stores no z0: no such plot
    view.refresh_runs()
    view.select_run(flat)
    QApplication.processEvents()
    assert not z0.isVisible() and plots.points("kl") == []
    assert all(plot.isVisible() for plot in plots.widgets.values())


def test_kto_starts_from_chat_ratings_alone_and_says_what_is_missing_until_then(
    qtbot,
    gui_store,
    registry,
    app_home,
    model,  # noqa: F811
):
    rate(gui_store, model.id, good=14, bad=0)  # thumbs on chat replies only: no pair at all
    view = make_view(qtbot, gui_store, registry, app_home, TINY.replace(heldout_fraction=0.1))
    view.settings_form.advanced_toggle.click()
    assert "Train needs at least 8 usable pairs" in view.start_reason.text()  # DPO learns from pairs

    choose(view.settings_form.editors["loss_type"], KTO)
    qtbot.waitUntil(lambda: "KTO needs" in view.start_reason.text())
    assert not view.start_button.isEnabled() and view.start_reason.isVisible()
    assert "tiny has 14 (14 good, 0 bad)" in view.start_reason.text()
    assert "Rate 3 more replies as bad (👎) in Chat" in view.start_reason.text()

    rate(gui_store, model.id, good=0, bad=6, first=14)
    view.refresh_plan()  # as when the view is shown again after Chat

    assert view.start_button.isEnabled() and not view.start_reason.isVisible()
    assert view.pairs_note.text() == (
        "20 labelled answers (14 good, 6 bad) from 20 prompts: 18 to train on; 2 prompts (2 answers) held out "
        "to check that the model generalises."
    )
    click(qtbot, view.start_button)
    wait_for_end(qtbot, view, registry)
    (run,) = gui_store.list_runs()
    assert run.status == "completed", run.error
    assert run.comparison_ids == [] and len(run.reply_label_ids) == 20
    # Held out by prompt, as the plan said: two rated replies' prompts never trained on.
    splits = [p.split for p in gui_store.list_prompts()]
    assert splits.count("heldout") == 2 and splits.count("train") == 18
