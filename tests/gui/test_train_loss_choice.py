"""The Train view's loss choice: the losses in words, the settings each uses, and an ORPO run that trains
with what the person chose (and no reference model)."""

from __future__ import annotations

from desktop_dpo.gui.train_settings_form import LOSS_SETTINGS
from tests.gui.test_train_view import TINY, add_pairs, click, make_view, model, wait_for_end  # noqa: F401

ORPO, SIMPO, DPO = "ORPO", "SimPO", "DPO"


def choose(combo, text: str) -> None:
    """Pick ``text`` in ``combo`` as a person does (the choice counts as their edit)."""
    index = combo.findText(text)
    assert index >= 0, [combo.itemText(i) for i in range(combo.count())]
    combo.setCurrentIndex(index)


def shown(form) -> set[str]:
    """The loss-specific settings on the form now."""
    return {name for name in LOSS_SETTINGS if form.editors[name].isVisible()}


def test_each_loss_shows_the_settings_it_uses_and_orpo_starts_an_orpo_run(
    qtbot,
    gui_store,
    registry,
    app_home,
    model,  # noqa: F811
):
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home, TINY.replace(label_smoothing=0.1))
    form = view.settings_form
    combo = form.editors["loss_type"]
    form.advanced_toggle.click()
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert texts[0] == DPO and ORPO in texts and SIMPO in texts
    assert "sigmoid" not in texts  # the person reads names and what they do, not internal values
    assert "the standard" in form.help_labels["loss_type"].text()
    assert shown(form) == {"beta", "label_smoothing", "sft_weight"} and form.find_beta_button.isVisible()

    choose(combo, SIMPO)
    assert shown(form) == {"simpo_beta", "simpo_gamma"}
    assert "How far ahead the chosen answer must be" in form.help_labels["simpo_gamma"].text()

    assert "no head start" in form.help_labels["loss_type"].text()  # the help says what SimPO does

    choose(combo, ORPO)
    assert "less memory and time" in form.help_labels["loss_type"].text()
    assert shown(form) == {"orpo_lambda"} and not form.find_beta_button.isVisible()
    assert form.help_labels["orpo_lambda"].isVisible()
    form.editors["orpo_lambda"].setValue(0.25)
    # The preset's label smoothing (hidden now: it belongs to DPO) does not stop the run.
    click(qtbot, view.start_button)
    wait_for_end(qtbot, view, registry)
    (run,) = gui_store.list_runs()
    assert run.status == "completed", run.error
    assert (run.config["loss_type"], run.config["orpo_lambda"], run.config["label_smoothing"]) == (
        "orpo",
        0.25,
        0.0,
    )

    choose(combo, DPO)
    assert shown(form) == {"beta", "label_smoothing", "sft_weight"}
    assert view.settings().loss_type == "sigmoid"
