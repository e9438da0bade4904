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


def _paths(home: Path) -> AppPaths:
    return AppPaths.in_home(home)


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
        # A pick between two identical answers gives training nothing: not usable, as the window counts it.
        store.record_pair(
            messages=[{"role": "user", "content": "R?"}], text_a="Same", text_b="Same", verdict="a"
        )
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
    assert "Pairs:            2 collected, 1 usable for training" in out
    assert "Network:          blocked beyond this computer" in out
    for library in ("PySide6", "torch", "transformers", "llama-cpp-python"):
        line = next(line for line in out.splitlines() if line.startswith(library + ":"))
        assert line.split(":", 1)[1].strip()[0].isdigit(), line
    assert "HEAVY []" in out


def test_info_on_a_fresh_home_creates_nothing(home, lock_down_calls, capsys):
    assert cli.main(["--home", str(home), "info"]) == 0
    assert "no database yet" in capsys.readouterr().out
    assert not _paths(home).db_path.exists()


def _write_pairs(path: Path, pairs: list[tuple[str, str, str]]) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in pairs),
        encoding="utf-8",
    )
    return path


def test_importing_a_file_twice_skips_the_duplicates_unless_allowed(home, lock_down_calls, tmp_path, capsys):
    source = _write_pairs(tmp_path / "in.jsonl", [("Sky?", "Blue.", "Red."), ("Grass?", "Green.", "Blue.")])
    assert cli.main(["--home", str(home), "data", "import", str(source)]) == 0
    assert "Imported 2 pairs" in capsys.readouterr().out

    assert cli.main(["--home", str(home), "data", "import", str(source)]) == 0
    out = capsys.readouterr().out
    assert "Imported 0 pairs" in out and "2 duplicates skipped" in out and "--allow-duplicates" in out
    with Store.open(_paths(home).db_path) as store:
        assert store.count_comparisons() == 2

    assert cli.main(["--home", str(home), "data", "import", str(source), "--allow-duplicates"]) == 0
    out = capsys.readouterr().out
    assert "Imported 2 pairs" in out and "2 duplicates imported anyway" in out
    with Store.open(_paths(home).db_path) as store:
        assert store.count_comparisons() == 4


def test_exporting_onto_the_database_fails_and_leaves_it_byte_identical(
    home, lock_down_calls, tmp_path, capsys
):
    source = _write_pairs(tmp_path / "in.jsonl", [("Sky?", "Blue.", "Red.")])
    assert cli.main(["--home", str(home), "data", "import", str(source)]) == 0
    database = _paths(home).db_path
    before = database.read_bytes()
    assert before.startswith(b"SQLite format 3\x00")

    assert cli.main(["--home", str(home), "data", "export", str(database)]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"{database} is the app's database" in err and "choose another file name" in err
    assert database.read_bytes() == before
    with Store.open(database) as store:
        assert store.count_usable_pairs() == 1

    copy = tmp_path / "backup.sqlite"  # any SQLite file, not only the app's
    copy.write_bytes(before)
    assert cli.main(["--home", str(home), "data", "export", str(copy)]) == cli.EXIT_FAILED
    assert "is an SQLite database" in capsys.readouterr().err
    assert copy.read_bytes() == before


def test_exporting_for_a_cluster_never_replaces_a_file_in_the_data_folder(
    home, lock_down_calls, tmp_path, capsys
):
    source = _write_pairs(tmp_path / "in.jsonl", [(f"Question {i}?", "Yes.", "No.") for i in range(12)])
    assert cli.main(["--home", str(home), "data", "import", str(source)]) == 0
    folder = _paths(home).exports_dir / "cluster"
    assert cli.main(["--home", str(home), "data", "export-trl", str(folder)]) == 0  # new files: fine
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    database_before = _paths(home).db_path.read_bytes()

    assert cli.main(["--home", str(home), "data", "export-trl", str(folder)]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "already exists in desktop-dpo's data folder" in err and "choose a new file name" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert _paths(home).db_path.read_bytes() == database_before


def test_info_shows_the_hardware_in_words(home, lock_down_calls, capsys):
    """The real probe: llama.cpp and torch are asked in child processes, and answer."""
    from desktop_dpo.core.llm.load_modes import cpu_description

    assert cli.main(["--home", str(home), "info"]) == 0
    out = capsys.readouterr().out
    hardware = out.split("\nHardware\n", 1)[1]
    rows = dict(line.split(":", 1) for line in hardware.splitlines() if ":" in line)
    rows = {label: value.strip() for label, value in rows.items()}
    name, flags = cpu_description()
    assert rows["CPU"].startswith(name)
    features = rows["CPU features"].split(", ")
    if "avx2" in flags:
        assert "AVX2" in features, rows["CPU features"]
    if "amx_int8" in flags:
        assert "AMX_INT8" in features, rows["CPU features"]
    assert rows["llama.cpp"].startswith("0.") and "backends: " in rows["llama.cpp"]
    assert "CPU" in rows["llama.cpp"]
    assert rows["GPU offload"].startswith(("yes", "no"))
    assert rows["torch"][0].isdigit() and "build)" in rows["torch"]
    assert rows["bitsandbytes"][0].isdigit()
    assert rows["Safe mode"] == "off: every model loads normally"
    assert not _paths(home).data_dir.exists()  # asking writes nothing


def test_info_forgets_safe_mode_and_can_leave_out_the_hardware(home, lock_down_calls, capsys, tmp_path):
    from desktop_dpo.core.llm.load_modes import LoadModeMemory

    model = tmp_path / "demo.gguf"
    model.write_bytes(b"GGUF")
    memory = LoadModeMemory.in_folder(_paths(home).data_dir)
    memory.remember(model, "safe", "crashed while loading (signal 11, SIGSEGV)")
    assert cli.main(["--home", str(home), "info", "--no-hardware", "--forget-safe-mode"]) == 0
    out = capsys.readouterr().out
    assert "Safe mode forgotten (1 remembered load): every model loads in the normal mode next time." in out
    assert "Hardware" not in out
    assert memory.records() == []
    assert cli.main(["--home", str(home), "info", "--no-hardware", "--forget-safe-mode"]) == 0
    assert "Safe mode was off for every model: nothing to forget." in capsys.readouterr().out
