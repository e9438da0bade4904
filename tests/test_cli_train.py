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
