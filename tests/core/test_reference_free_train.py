"""ORPO and SimPO runs end to end on the tiny Llama: they train without a reference model, without a
reference pass and without a single row in the reference cache, and the preference still generalises."""

from __future__ import annotations

import pytest

from desktop_dpo.core.dpo import train as train_module
from desktop_dpo.core.dpo.config import TrainConfig, TrainingError
from desktop_dpo.core.dpo.events import EvalMetrics, ReferenceReady, Started, StepMetrics
from desktop_dpo.core.store import Store
from tests.core.test_train import BASE, add_pairs, drive, model_dirs, new_run, of_type  # noqa: F401


@pytest.fixture
def no_reference(monkeypatch):
    """Records every model load, every reference pass and every reference cache write."""
    seen: dict[str, list] = {"loads": [], "passes": [], "rows": []}
    real_load = train_module.load_causal_lm

    def load(folder, *args, **kwargs):
        seen["loads"].append(str(folder))
        return real_load(folder, *args, **kwargs)

    def fill_reference(*args, **kwargs):
        seen["passes"].append(args)
        raise AssertionError("a reference-free run computed reference log-probs")

    real_put = Store.put_reference_logps

    def put(self, *args, **kwargs):
        seen["rows"].append(args)
        return real_put(self, *args, **kwargs)

    monkeypatch.setattr(train_module, "load_causal_lm", load)
    monkeypatch.setattr(train_module, "fill_reference", fill_reference)
    monkeypatch.setattr(Store, "put_reference_logps", put)
    return seen


@pytest.mark.parametrize(
    ("loss_type", "settings"),
    [("orpo", {"orpo_lambda": 0.5, "lr": 1e-2}), ("simpo", {"simpo_beta": 2.0, "simpo_gamma": 0.5})],
)
def test_a_reference_free_run_trains_without_any_reference(
    store,
    tmp_path,
    model_dirs,  # noqa: F811
    no_reference,
    loss_type,
    settings,
):
    add_pairs(store)
    config = BASE.replace(loss_type=loss_type, epochs=3, lora_dropout=0.0, eval_every=6, **settings)
    # Even a run that names a previous round's model as its reference never loads it.
    run_id = new_run(
        store,
        tmp_path,
        model_dirs[0],
        config,
        reference="previous",
        other_model=model_dirs[1],
        name=loss_type,
    )

    events = drive(store, run_id)

    assert no_reference["loads"] == [str(model_dirs[0])]  # the policy only, once
    assert no_reference["passes"] == [] and no_reference["rows"] == []
    assert of_type(events, ReferenceReady) == []
    assert store.get_reference_logps(["anything"]) == {}
    run = store.get_run(run_id)
    assert run.status == "completed" and run.step == of_type(events, Started)[0].total_steps
    assert run.config["loss_type"] == loss_type
    steps = of_type(events, StepMetrics)
    assert all(s.loss == s.loss and s.loss > 0 for s in steps)  # finite and positive
    # The preference is learnt and generalises to unseen topics: the held-out loss falls and the reward
    # margin (the length-normalised log-probs, the base already leans the right way) widens.
    evals = of_type(events, EvalMetrics)
    assert evals[-1].loss < evals[0].loss and evals[-1].accuracy >= 0.8
    assert evals[-1].margins > evals[0].margins + 0.2


def test_settings_that_cannot_work_are_refused_in_words():
    with pytest.raises(TrainingError, match="ORPO has its own SFT term"):
        TrainConfig(loss_type="orpo", sft_weight=0.5).validated()
    with pytest.raises(TrainingError, match="label smoothing applies to the sigmoid loss only"):
        TrainConfig(loss_type="simpo", label_smoothing=0.1).validated()
    with pytest.raises(TrainingError, match="SimPO's target margin"):
        TrainConfig(loss_type="simpo", simpo_gamma=-1.0).validated()
    with pytest.raises(TrainingError, match="ORPO's λ must be positive"):
        TrainConfig(loss_type="orpo", orpo_lambda=0.0).validated()
    with pytest.raises(TrainingError, match="loss type must be one of sigmoid, ipo, hinge, kto, orpo, simpo"):
        TrainConfig(loss_type="cpo").validated()
    assert (
        TrainConfig.from_dict({"loss_type": "simpo", "simpo_beta": 2.5, "simpo_gamma": 1.25}).simpo_gamma
        == 1.25
    )
