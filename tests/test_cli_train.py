"""``desktop-dpo train`` with a loss other than DPO's: the run takes what that loss learns from."""

from __future__ import annotations

from desktop_dpo import cli
from desktop_dpo.config import AppPaths
from desktop_dpo.core.store import Store
from tests.test_cli_stop import TRAIN_OPTIONS


def test_a_kto_run_from_the_command_line_learns_from_both_bad_picks_too(home_with_pairs, capsys):
    with Store.open(AppPaths.default().db_path) as store:
        both_bad = store.record_pair(
            messages=[{"role": "user", "content": "Tell me about fog."}],
            text_a=" Fog is wet.",
            text_b=" No idea.",
            verdict="both_bad",
        )
    command = ["train", "--model", "tiny", "--epochs", "1", "--loss-type", "kto", *TRAIN_OPTIONS]
    assert cli.main(command) == cli.EXIT_OK
    capsys.readouterr()
    with Store.open(AppPaths.default().db_path) as store:
        run = store.get_run(1)
    assert run.status == "completed" and run.config["loss_type"] == "kto"
    assert both_bad in run.comparison_ids  # two undesirable answers KTO learns from; DPO would skip it
    assert len(run.comparison_ids) == 9  # the eight picks and the "both bad" one


def test_an_orpo_run_from_the_command_line_takes_its_weight_and_no_reference(home_with_pairs, capsys):
    command = ["train", "--model", "tiny", "--epochs", "1", "--loss-type", "orpo", "--orpo-lambda", "0.3"]
    assert cli.main([*command, *TRAIN_OPTIONS]) == cli.EXIT_OK
    capsys.readouterr()
    with Store.open(AppPaths.default().db_path) as store:
        run = store.get_run(1)
        assert run.status == "completed", run.error
        assert (run.config["loss_type"], run.config["orpo_lambda"]) == ("orpo", 0.3)
        assert store.table_counts().get("reference_logps", 0) == 0  # ORPO never computed a reference


def test_a_dpo_run_on_a_few_picks_gets_the_settings_the_train_view_fills_in(home_with_pairs, capsys):
    # 8 picks, 6 to train on: as in the Train view, an SFT term and a higher learning rate, each option given
    # on the command line still winning (here the batch and the accumulation), and the note says only what
    # the sizing changed: not the 8 pairs per update the options replaced.
    assert cli.main(["train", "--model", "tiny", "--epochs", "1", *TRAIN_OPTIONS]) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert (
        "With 6 training pairs, a learning rate of 0.0002 instead of 0.0001 and an SFT term on your chosen "
        "answers: they learn more from a few picks." in err
    )
    with Store.open(AppPaths.default().db_path) as store:
        run = store.get_run(1)
    assert run.status == "completed", run.error
    assert (run.config["sft_weight"], run.config["lr"]) == (1.0, 2e-4)
    assert (run.config["batch_size"], run.config["grad_accum"], run.config["epochs"]) == (2, 1, 1)
    # Asked for, the command line's own learning rate and SFT weight are kept.
    command = [
        "train",
        "--model",
        "tiny",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--sft-weight",
        "0",
        *TRAIN_OPTIONS,
    ]
    assert cli.main(command) == cli.EXIT_OK
    assert "training pairs" not in capsys.readouterr().err  # nothing was left for the sizing to change
    with Store.open(AppPaths.default().db_path) as store:
        run = store.get_run(2)
    assert (run.config["sft_weight"], run.config["lr"]) == (0.0, 1e-3)
