"""The SFT start's held-out NLL on the loss plot: a dashed teal line with large dots at the supervised steps it
was measured after (step 0 included), named in the legend, live and from a stored history."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from desktop_dpo.core.dpo.events import SftEvalMetrics, SftStepMetrics
from desktop_dpo.gui.metrics_plots import MetricsPlots
from desktop_dpo.gui.train_live_panel import LiveRunPanel
from tests.gui.test_train_view import TINY, make_view, model  # noqa: F401  (model: a fixture)


def sft_step(step: int, loss: float) -> SftStepMetrics:
    return SftStepMetrics(
        step=step, total_steps=3, epoch=step / 3, loss=loss, lr=1e-4, grad_norm=1.0, tokens_per_s=1.0, eta_s=0.0
    )  # fmt: skip


def test_a_live_two_phase_run_draws_the_heldout_nll_beside_the_sft_curve(qtbot):
    panel = LiveRunPanel(stop=lambda: None)
    qtbot.addWidget(panel)
    events = [
        SftEvalMetrics(step=0, loss=4.0, demonstrations=2, tokens=30),  # before the first step
        sft_step(1, 3.5),
        sft_step(2, 3.0),
        sft_step(3, 2.6),
        SftEvalMetrics(step=3, loss=3.1, demonstrations=2, tokens=30),
    ]
    for event in events:
        panel.show_event(event, plot=True)
    plots = panel.plots
    assert plots.points("loss", "sft_heldout") == [(0.0, 4.0), (3.0, 3.1)]
    assert plots.points("loss", "sft") == [(1.0, 3.5), (2.0, 3.0), (3.0, 2.6)]
    assert "SFT: learning your written answers (╌●╌ on held-out prompts), then" in plots.legend_text()


def test_a_stored_history_draws_it_and_a_run_without_it_does_not_name_it(qtbot):
    plots = MetricsPlots()
    qtbot.addWidget(plots)
    sft = [(1, {"phase": "sft", "loss": 3.2}), (2, {"phase": "sft", "loss": 2.5})]
    heldout = [(0, {"phase": "sft", "loss": 3.9}), (2, {"phase": "sft", "loss": 3.0})]
    plots.show_history([(1, {"loss": 0.69})], [], sft, heldout)
    assert plots.points("loss", "sft_heldout") == [(0.0, 3.9), (2.0, 3.0)]
    assert plots.points("loss") == [(3.0, 0.69)]  # the preference steps still come after the supervised ones
    assert "on held-out prompts" in plots.legend_text()
    plots.show_history([(1, {"loss": 0.69})], [], sft)  # no held-out written answers: nothing measured
    assert plots.points("loss", "sft_heldout") == []
    assert "on held-out prompts" not in plots.legend_text() and "SFT" in plots.legend_text()


def test_reopening_a_two_phase_run_in_train_shows_its_heldout_nll(
    qtbot,
    gui_store,
    registry,
    app_home,
    model,  # noqa: F811
):
    view = make_view(qtbot, gui_store, registry, app_home)
    run_id = gui_store.create_run(
        name="two phases",
        base_model_id=model.id,
        config=TINY.replace(sft_phase="rewrites").to_dict(),
        comparison_ids=[],
    )
    gui_store.update_run(run_id, status="completed", step=1, total_steps=1)
    gui_store.add_run_metrics(run_id, 1, {"phase": "sft", "loss": 3.0}, split="sft")
    gui_store.add_run_metrics(run_id, 0, {"phase": "sft", "loss": 4.2}, split="sft_heldout")
    gui_store.add_run_metrics(run_id, 1, {"phase": "sft", "loss": 3.4}, split="sft_heldout")
    gui_store.add_run_metrics(run_id, 1, {"loss": 0.69})
    view.refresh_runs()
    view.select_run(run_id)
    QApplication.processEvents()
    assert view.plots.points("loss", "sft_heldout") == [(0.0, 4.2), (1.0, 3.4)]
    assert "on held-out prompts" in view.plots.legend_text()
