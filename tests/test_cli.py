"""The command line: the window by default, data import/export and info without a screen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop_dpo import cli
from desktop_dpo.config import HOME_ENV, AppPaths
from desktop_dpo.core.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private home; monkeypatch restores DESKTOP_DPO_HOME, which --home sets for the whole process."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "unused-default"))
    return tmp_path / "home"


@pytest.fixture
def lock_down_calls(monkeypatch) -> list[str]:
    """Record lock_down() instead of running it: the real one changes this process's environment for good
    (tests/core/test_offline.py covers it). Records which command ran by then (none should have)."""
    calls: list[str] = []
    monkeypatch.setattr("desktop_dpo.core.offline.lock_down", lambda: calls.append("lock_down"))
    return calls


def _paths(home: Path) -> AppPaths:
    return AppPaths(data_dir=home / "data", log_dir=home / "logs")


def test_no_command_opens_the_window_after_locking_down(monkeypatch, home, lock_down_calls):
    opened: list[AppPaths] = []

    def fake_run_gui(paths: AppPaths) -> int:
        opened.append(paths)
        lock_down_calls.append("gui")
        return 0

    monkeypatch.setattr("desktop_dpo.app.run_gui", fake_run_gui)
    assert cli.main(["--home", str(home)]) == 0
    assert cli.main(["gui", "--home", str(home)]) == 0
    monkeypatch.setenv(HOME_ENV, str(home))
    assert cli.main([]) == 0  # as a desktop launcher starts it
    assert [p.data_dir for p in opened] == [home.resolve() / "data"] * 2 + [home / "data"]
    assert lock_down_calls == ["lock_down", "gui"] * 3


def test_import_then_export_round_trips_a_trl_file(home, lock_down_calls, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    pairs = [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"prompt": "Two and two make", "chosen": " four.", "rejected": " five."},
        {"prompt": "Same", "chosen": "x", "rejected": "x"},  # teaches nothing: skipped
    ]
    source.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")

    assert cli.main(["--home", str(home), "data", "import", str(source)]) == 0
    out = capsys.readouterr().out
    assert "Imported 2 pairs" in out and "standard format" in out and "Skipped 1 pair" in out
    with Store.open(_paths(home).db_path) as store:
        assert store.count_usable_pairs() == 2

    target = tmp_path / "out.jsonl"
    assert cli.main(["data", "export", str(target), "--format", "standard", "--home", str(home)]) == 0
    assert "Wrote 2 pairs" in capsys.readouterr().out
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert sorted(rows, key=lambda r: r["prompt"]) == sorted(pairs[:2], key=lambda r: r["prompt"])

    conversational = tmp_path / "conv.jsonl"
    assert cli.main(["--home", str(home), "data", "export", str(conversational)]) == 0  # the default format
    first = json.loads(conversational.read_text(encoding="utf-8").splitlines()[0])
    assert first["prompt"][0]["role"] == "user" and first["chosen"][0]["role"] == "assistant"
    assert lock_down_calls == ["lock_down"] * 3  # once per command


def test_a_bad_file_fails_with_its_line_numbers_and_imports_nothing(home, lock_down_calls, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q", "chosen": "A", "rejected": "B"}\n{"prompt": "Q"}\n', encoding="utf-8")
    assert cli.main(["--home", str(home), "data", "import", str(bad)]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "line 2" in err and "Nothing was imported" in err
    with Store.open(_paths(home).db_path) as store:
        assert store.count_comparisons() == 0


def test_missing_file_and_empty_export_say_what_to_do(home, lock_down_calls, tmp_path, capsys):
    assert cli.main(["--home", str(home), "data", "import", str(tmp_path / "nope.jsonl")]) == cli.EXIT_FAILED
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["--home", str(home), "data", "export", str(tmp_path / "out.jsonl")]) == cli.EXIT_FAILED
    assert "no usable pairs" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_data_needs_an_action(home, lock_down_calls, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--home", str(home), "data"])
    assert exit_info.value.code == 2
    assert "import" in capsys.readouterr().err


def test_info_shows_folders_counts_and_versions_without_importing_ml_libraries(tmp_path):
    """In a fresh interpreter (other tests import torch): `info` reads versions from package metadata."""
    home = tmp_path / "home"
    with Store.open(_paths(home).db_path) as store:
        store.record_pair(messages=[{"role": "user", "content": "Q?"}], text_a="A", text_b="B", verdict="b")
    script = (
        "import sys, desktop_dpo.cli as c; code = c.main(['--home', sys.argv[1], 'info']); "
        "print('HEAVY', sorted({'torch', 'transformers', 'peft', 'llama_cpp', 'bitsandbytes', 'trl'} & set(sys.modules))); "
        "sys.exit(code)"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script, str(home)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"Data folder:      {home.resolve() / 'data'}" in out
    assert "Pairs:            1 collected, 1 usable for training" in out
    assert "Network:          blocked beyond this computer" in out
    for library in ("PySide6", "torch", "transformers", "llama-cpp-python"):
        line = next(line for line in out.splitlines() if line.startswith(library + ":"))
        assert line.split(":", 1)[1].strip()[0].isdigit(), line
    assert "HEAVY []" in out


def test_info_on_a_fresh_home_creates_nothing(home, lock_down_calls, capsys):
    assert cli.main(["--home", str(home), "info"]) == 0
    assert "no database yet" in capsys.readouterr().out
    assert not _paths(home).db_path.exists()
