"""The command line for outgrowing one machine: data export-trl, import-adapter, import-model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from desktop_dpo import cli
from desktop_dpo.config import AppPaths
from desktop_dpo.core.cluster import ACCELERATE_FILE, HELDOUT_FILE, README_FILE, SCRIPT_FILE, TRAIN_FILE
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from tests.core.test_cluster import write_adapter

# lock_down() changes this process's environment for good: recorded instead (tests/core/test_offline.py covers it).
pytestmark = pytest.mark.usefixtures("lock_down_calls")


def paths_of(home: Path) -> AppPaths:
    return AppPaths.in_home(home).ensure()


@pytest.fixture
def tiny_id(home, tiny_model_dir) -> int:
    with Store.open(paths_of(home).db_path) as store:
        return register_model(store, tiny_model_dir, name="tiny").id


def import_pairs(home: Path, tmp_path: Path, count: int = 10) -> None:
    source = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"A good answer {i}.", "rejected": f"bad {i}"}
        for i in range(count)
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert cli.main(["data", "import", str(source), "--home", str(home)]) == 0


def test_export_trl_writes_a_folder_that_trains_elsewhere(home, tiny_id, tmp_path, capsys):
    import_pairs(home, tmp_path)
    capsys.readouterr()
    folder = tmp_path / "cluster"
    assert cli.main(["data", "export-trl", str(folder), "--model", "tiny", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "Wrote 9 pairs to train on (9 prompts) and 1 held out (1 prompt)" in out
    assert str(folder / README_FILE) in out
    for name in (TRAIN_FILE, HELDOUT_FILE, SCRIPT_FILE, ACCELERATE_FILE, README_FILE):
        assert (folder / name).is_file(), name


def test_export_trl_says_why_it_cannot(home, tiny_id, tmp_path, capsys):
    assert cli.main(["data", "export-trl", str(tmp_path / "x"), "--home", str(home)]) == cli.EXIT_FAILED
    assert "no usable pairs" in capsys.readouterr().err
    assert cli.main(["data", "export-trl", str(tmp_path / "x"), "--run", "7", "--home", str(home)]) == 1
    assert "no training run 7" in capsys.readouterr().err
    assert cli.main(["data", "export-trl", str(tmp_path / "x"), "--model", "nope", "--home", str(home)]) == 1
    assert "No registered model is called 'nope'" in capsys.readouterr().err


def test_import_adapter_registers_a_run_and_refuses_one_of_another_model(home, tiny_id, tmp_path, capsys):
    wide = write_adapter(tmp_path / "wide", in_features=128)
    assert cli.main(["import-adapter", str(wide), "--base", str(tiny_id), "--home", str(home)]) == 1
    assert "does not fit tiny" in capsys.readouterr().err
    fitting = write_adapter(tmp_path / "fitting", in_features=64)
    argv = [
        "import-adapter",
        str(fitting),
        "--base",
        "tiny",
        "--name",
        "from the cluster",
        "--home",
        str(home),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Imported as run 1 (from the cluster)" in out and "desktop-dpo export --run 1" in out
    with Store.open(paths_of(home).db_path) as store:
        (run,) = store.list_runs()
    assert (run.status, run.base_model_id, run.name) == ("completed", tiny_id, "from the cluster")
    assert cli.main(["import-adapter", str(fitting), "--base", "9", "--home", str(home)]) == 1
    assert "No registered model is called '9'" in capsys.readouterr().err


def test_import_model_registers_a_merged_folder(home, tiny_id, tiny_model_dir, tmp_path, capsys):
    merged = tmp_path / "merged"
    shutil.copytree(tiny_model_dir, merged)
    argv = ["import-model", str(merged), "--name", "merged elsewhere", "--base", "tiny", "--home", str(home)]
    assert cli.main(argv) == 0
    assert "Registered merged elsewhere as model 2" in capsys.readouterr().out
    with Store.open(paths_of(home).db_path) as store:
        model = store.get_model(2)
    assert (model.source, model.parent_model_id) == ("imported", tiny_id)
    assert cli.main(["import-model", str(tmp_path / "missing"), "--home", str(home)]) == 1
    assert capsys.readouterr().err.strip()
