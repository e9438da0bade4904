"""The SFT start in the Train view: the option in Advanced settings, the preset for a base model, and a
two-phase run whose loss plot shows the supervised phase (teal, "SFT" in the legend) and then the preference
phase after it on one step axis."""

from __future__ import annotations

from desktop_dpo.gui.metrics_plots import MetricsPlots
from tests.gui.test_train_view import TINY, click, make_view, model, wait_for_end  # noqa: F401  (model: fixture)

TOPICS = ["apples", "rivers", "trains", "music", "winter", "cats", "maps", "bread", "stars", "clocks"]


def add_rewrites(store) -> None:
    for topic in TOPICS:
        store.record_pair(
            messages=[{"role": "user", "content": f"Tell me about {topic}."}],
            text_a=f" Yes, gladly! {topic} are lovely, thank you.",
            text_b=f" No. {topic} bore me, go away.",
            verdict="a",
            edited_text=f" Of course! A warm note on {topic}, with thanks.",
            edited_side="a",
        )


def test_a_stored_two_phase_history_draws_sft_then_the_preference_steps(qtbot):
    plots = MetricsPlots()
    qtbot.addWidget(plots)
    plots.show()
    assert "SFT" not in plots.legend_text()
    sft = [
        (1, {"phase": "sft", "loss": 3.2}),
        (2, {"phase": "sft", "loss": 2.9}),
        (3, {"phase": "sft", "loss": 2.5}),
    ]
    train = [(1, {"loss": 0.69, "rewards/accuracies": 0.5, "rewards/margins": 0.0}), (2, {"loss": 0.6})]
    plots.show_history(train, [(0, {"rewards/accuracies": 0.5})], sft)
    assert plots.points("loss", "sft") == [(1.0, 3.2), (2.0, 2.9), (3.0, 2.5)]
    assert plots.points("loss") == [(4.0, 0.69), (5.0, 0.6)]  # after the supervised steps
    assert plots.points("rewards/accuracies", "heldout") == [(3.0, 0.5)]  # the check before preference step 1
    assert "SFT: learning your written answers" in plots.legend_text()
    assert plots.boundaries["loss"].isVisible() and plots.boundaries["loss"].value() == 3.5
    # A run without an SFT phase: no teal curve, no boundary, steps from 1 again.
    plots.show_history(train, [])
    assert plots.points("loss", "sft") == [] and plots.points("loss")[0] == (1.0, 0.69)
    assert "SFT" not in plots.legend_text() and not plots.boundaries["loss"].isVisible()


def test_the_sft_option_is_in_advanced_settings_with_a_plain_help_line(qtbot, gui_store, registry, app_home):
    view = make_view(qtbot, gui_store, registry, app_home)
    form = view.settings_form
    editor = form.editors["sft_phase"]
    assert [editor.itemText(i) for i in range(editor.count())] == [
        "Off",
        "Written answers",
        "Written + chosen",
    ]
    assert "learns to write the answers you wrote or rewrote yourself" in form.help_labels["sft_phase"].text()
    editor.setCurrentIndex(1)
    assert form.settings().sft_phase == "rewrites"


def test_a_two_phase_run_shows_both_phases_live_and_when_reopened(
    qtbot,
    gui_store,
    registry,
    app_home,
    model,  # noqa: F811
):
    add_rewrites(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home, TINY.replace(sft_phase="rewrites", sft_epochs=2))
    click(qtbot, view.start_button)
    wait_for_end(qtbot, view, registry)
    (run,) = gui_store.list_runs()
    assert run.status == "completed"
    sft_steps = len(gui_store.run_metrics(run.id, split="sft"))
    assert sft_steps > 0
    assert [x for x, _ in view.plots.points("loss", "sft")] == list(range(1, sft_steps + 1))
    preference = [x for x, _ in view.plots.points("loss")]
    assert preference == list(range(sft_steps + 1, sft_steps + run.total_steps + 1))
    assert "SFT" in view.plots.legend_text()
