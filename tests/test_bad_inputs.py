"""The catalogue of bad inputs: one test per thing a person can do wrong, named by what they do.

Each test is a row of ``docs/bad-inputs.md``: ``@case("what the person does", "the message they see")`` says
what was done and the message (``...`` for the parts that vary), and the test hands the text the person reads
to ``shows()``, which checks it. A test that is not a row says why with ``@not_a_case``. Besides the message,
each test checks that nothing already saved was lost (row counts, ``PRAGMA integrity_check``, byte-identical
files) and that no code from a model folder ran. Hypothesis fuzzes the JSONL importer, the GGUF header reader
and template rendering: nothing but the project's own errors may come out.

After changing a case, regenerate the table: ``python -m tests.bad_inputs_table``.

Sections: data import, the database, model files, adapters, model folders, chat templates, code shipped with
a model, training, export, the data folder, and the table itself.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desktop_dpo import cli
from desktop_dpo.config import AppPaths
from desktop_dpo.core import preference_io
from desktop_dpo.core.cluster import ClusterError, import_adapter
from desktop_dpo.core.dpo import checkpoint as checkpoint_module
from desktop_dpo.core.dpo.checkpoint import run_folder
from desktop_dpo.core.dpo.config import TrainConfig, TrainingError
from desktop_dpo.core.dpo.run_lock import LOCK_FILE, RunBusyError, RunLock
from desktop_dpo.core.dpo.train import drive_training
from desktop_dpo.core.errors import (
    DatabaseBusy,
    DesktopDpoError,
    ExportError,
    ModelCodeRefused,
    ModelError,
    StoreError,
)
from desktop_dpo.core.export import gguf as gguf_export
from desktop_dpo.core.export.gguf import convert_hf_to_gguf
from desktop_dpo.core.export.merge import plan_merge
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.llm.gguf_info import read_gguf_info
from desktop_dpo.core.llm.templates import ChatTemplateError, render_prompt
from desktop_dpo.core.models import register_model
from desktop_dpo.core.preference_io import import_preferences, read_preference_file
from desktop_dpo.core.storage import LEFTOVER_QUIET_S, scan_storage
from desktop_dpo.core.store import Store
from desktop_dpo.core.tensor_file import DamagedTensorFileError, check_tensor_file
from tests.bad_inputs_table import CATALOGUE, TABLE, case, not_a_case, render, shows
from tests.bad_inputs_table import watch_cases as watch_cases
from tests.core.test_cluster import write_adapter
from tests.core.test_model_code_refused import add_payload
from tests.core.test_models import write_gguf, write_hf_folder, write_safetensors

REPO = Path(__file__).resolve().parents[1]
MIN_ROWS = 40  # issue 12: "docs/bad-inputs.md has at least 40 rows"

# lock_down() changes this process's environment for good: recorded instead (tests/core/test_offline.py covers it).
pytestmark = pytest.mark.usefixtures("watch_cases", "lock_down_calls")

PAIRS = [
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    {"prompt": "Grass is", "chosen": " green.", "rejected": " purple."},
]


def _paths(home: Path) -> AppPaths:
    """The app's paths under ``home``, as the CLI makes them (nothing created)."""
    return AppPaths.in_home(home)


def paths_of(home: Path) -> AppPaths:
    """The app's paths under ``home``, folders created."""
    return _paths(home).ensure()


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def saved(home, tmp_path) -> Path:
    """A home whose database already holds the two PAIRS; returns the database path."""
    assert (
        cli.main(["--home", str(home), "data", "import", str(_write_jsonl(tmp_path / "ok.jsonl", PAIRS))])
        == 0
    )
    return _paths(home).db_path


def _comparisons(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(conn.execute("SELECT count(*) FROM comparisons").fetchone()[0])
    finally:
        conn.close()


def _import(home: Path, path: Path | str, capsys) -> str:
    """``data import`` that fails; returns what the person reads."""
    assert cli.main(["--home", str(home), "data", "import", str(path)]) == cli.EXIT_FAILED
    return capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Data import: files that are too large, not UTF-8 or not JSON a person means
# --------------------------------------------------------------------------------------------------


@case(
    "runs `data import /dev/zero`",
    "Line 1 of /dev/zero is longer than 64 MiB; nothing was imported. A preference file holds one JSON object "
    "per line: check that this is the right file (a JSONL file, not a single big JSON document or a binary "
    "file).",
)
def test_importing_dev_zero_says_a_line_is_too_long(home, saved, capsys):
    shows(_import(home, "/dev/zero", capsys))
    assert _comparisons(saved) == 2


@case(
    "imports a file over the 1 GiB cap",
    "... is larger than ...; nothing was imported. Split it into smaller files (one pair per line, so any "
    "line boundary will do) and import them one by one.",
)
def test_importing_a_file_over_the_size_cap_says_it_is_too_large(home, saved, tmp_path, capsys, monkeypatch):
    big = _write_jsonl(tmp_path / "big.jsonl", PAIRS * 20)
    monkeypatch.setattr(preference_io, "MAX_FILE_BYTES", 1024)  # the real cap is 1 GiB
    err = _import(home, big, capsys)
    assert f"{big} is larger than" in shows(err)
    # A stream (a pipe, a device) has no size to look at first: it is counted while read.
    monkeypatch.setattr(preference_io, "MAX_FILE_BYTES", 5 * 1024 * 1024)
    with pytest.raises(preference_io.PreferenceFileError, match="is larger than 5 MiB"):
        read_preference_file("/dev/zero")
    assert _comparisons(saved) == 2


@case(
    'imports a line whose "chosen" text is a lone surrogate "\\ud800"',
    'Nothing was imported from ...: 1 bad line(s). Fix them and import again. line 1: "chosen" holds a lone '
    "surrogate escape (\\ud800 at character 1), which is half of a character: remove it or give both halves",
)
@case(
    "imports a chat-format line whose message content holds a lone surrogate",
    'Nothing was imported from ...: 1 bad line(s). Fix them and import again. line 1: "prompt" message 1 '
    "content holds a lone surrogate escape (\\udfff at character 4), which is half of a character: remove it "
    "or give both halves",
)
def test_importing_a_lone_surrogate_names_the_line(home, saved, tmp_path, capsys):
    bad = tmp_path / "surrogate.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "\\ud800", "rejected": "r"}\n', encoding="utf-8")
    shows(_import(home, bad, capsys))
    conversational = tmp_path / "surrogate-chat.jsonl"
    row = {
        "prompt": [{"role": "user", "content": "ok \udfff"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    conversational.write_text(json.dumps(row) + "\n", encoding="utf-8")
    shows(_import(home, conversational, capsys))
    assert _comparisons(saved) == 2


@case(
    "imports a line with a 5000-digit number",
    "Nothing was imported from ...: 1 bad line(s). Fix them and import again. line 1: a number with thousands "
    "of digits; no preference pair holds one (write it as a string)",
)
def test_importing_a_5000_digit_number_names_the_line(home, saved, tmp_path, capsys):
    bad = tmp_path / "digits.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "c", "rejected": "r", "score": ' + "9" * 5000 + "}\n")
    shows(_import(home, bad, capsys))
    assert _comparisons(saved) == 2


@case(
    "imports a line of JSON nested 200 000 deep",
    "Nothing was imported from ...: 1 bad line(s). Fix them and import again. line 2: JSON nested too deeply "
    "(lists or objects inside each other thousands of levels deep)",
)
def test_importing_json_nested_200000_deep_names_the_line(home, saved, tmp_path, capsys):
    bad = tmp_path / "deep.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + "[" * 200_000 + "]" * 200_000 + "\n")
    shows(_import(home, bad, capsys))
    assert _comparisons(saved) == 2


@case(
    "imports a file saved as UTF-16 (with or without a byte order mark)",
    '... is saved as UTF-16 text; desktop-dpo reads UTF-8. Open it in a text editor, save it as UTF-8 ("Save '
    'as" > Encoding: UTF-8) and import it again.',
)
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_importing_a_utf16_file_says_save_it_as_utf8(home, saved, tmp_path, capsys, encoding):
    bad = tmp_path / f"{encoding}.jsonl"
    bad.write_text("".join(json.dumps(row) + "\n" for row in PAIRS), encoding=encoding)
    err = shows(_import(home, bad, capsys))
    assert f"{bad} is saved as UTF-16 text" in err
    assert _comparisons(saved) == 2


@case(
    "imports the same file twice",
    "Imported 0 pairs from ... 2 duplicates skipped (already in your data or repeated in the file; "
    "--allow-duplicates imports them).",
)
@case(
    "imports the same file again with `--allow-duplicates`",
    "Imported 2 pairs from ... 2 duplicates imported anyway, as asked.",
)
def test_importing_the_same_file_twice_skips_and_counts_the_duplicates(home, saved, tmp_path, capsys):
    again = _write_jsonl(tmp_path / "ok.jsonl", PAIRS)  # the file `saved` imported
    assert cli.main(["--home", str(home), "data", "import", str(again)]) == 0
    shows(capsys.readouterr().out)
    assert _comparisons(saved) == 2
    assert cli.main(["--home", str(home), "data", "import", str(again), "--allow-duplicates"]) == 0
    shows(capsys.readouterr().out)
    assert _comparisons(saved) == 4


# --------------------------------------------------------------------------------------------------
# Data export: never onto the database
# --------------------------------------------------------------------------------------------------


@case(
    "runs `data export` with the database's own path as the target",
    "... is the app's database; an export would replace it and every pick in it. Nothing was written; "
    "choose another file name.",
)
@case(
    "runs `data export` onto another SQLite file (a backup copy of the database)",
    "... is an SQLite database; an export would replace it. Nothing was written; choose another file name.",
)
def test_exporting_onto_the_database_is_refused_and_leaves_it_byte_identical(home, saved, tmp_path, capsys):
    before = saved.read_bytes()
    assert before.startswith(b"SQLite format 3\x00")
    assert cli.main(["--home", str(home), "data", "export", str(saved)]) == cli.EXIT_FAILED
    assert f"{saved} is the app's database" in shows(capsys.readouterr().err)
    assert saved.read_bytes() == before
    assert _comparisons(saved) == 2
    copy = tmp_path / "backup.sqlite"
    copy.write_bytes(before)
    assert cli.main(["--home", str(home), "data", "export", str(copy)]) == cli.EXIT_FAILED
    shows(capsys.readouterr().err)
    assert copy.read_bytes() == before


# --------------------------------------------------------------------------------------------------
# The database: locked, damaged, full, read-only
# --------------------------------------------------------------------------------------------------


@case(
    "imports while another program writes to the database",
    "Another desktop-dpo window or another program is writing to the database ... and did not finish within "
    "... s; nothing was imported. Wait for its work (an import, a training run) to end, or close the other "
    "window, then try again.",
)
def test_importing_while_another_program_writes_says_it_is_busy(home, saved, tmp_path):
    writer = sqlite3.connect(str(saved), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        with Store.open(saved, busy_timeout_s=0.2) as store, pytest.raises(DatabaseBusy) as caught:
            import_preferences(store, _write_jsonl(tmp_path / "new.jsonl", [PAIRS[0] | {"prompt": "New"}]))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert "did not finish within 0.2 s; nothing was imported" in shows(str(caught.value))
    assert _comparisons(saved) == 2


# Another process that takes the database's write lock, says "locked", and keeps it until its stdin closes
# (or, given a number of seconds, until they have passed).
_LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
else:
    sys.stdin.read()
conn.execute("ROLLBACK")
"""

NEW_PAIR = {"prompt": "Snow is", "chosen": " white.", "rejected": " black."}

needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names holders from /proc (Linux)")


def _hold_the_database_lock(
    db: Path, *, name: str | None = None, seconds: float | None = None
) -> subprocess.Popen:
    """Start another process holding the write lock on ``db`` (its argv[0] is ``name`` when given)."""
    args = [sys.executable, "-c", _LOCK_HOLDER, str(db), *([str(seconds)] if seconds is not None else [])]
    if name is not None:
        # `exec -a` keeps the process (and its pid) and gives it another argv[0], as a launcher would.
        args = ["bash", "-c", f'exec -a {name} "$@"', "bash", *args]
    holder = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


@pytest.fixture
def lock_holders() -> Iterator[list[subprocess.Popen]]:
    """The holders a test starts, released and waited for at its end (even a failing one)."""
    holders: list[subprocess.Popen] = []
    yield holders
    for holder in holders:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=30)


@case(
    "runs `data import` while another desktop-dpo writes to the database",
    "Another program is writing to the database ... and did not finish within ... s; nothing was imported. "
    "The database is open in desktop-dpo (pid ...). Wait for its work (an import, a training run) to end, or "
    "close that window or program, then try again. To wait longer, run it again with --wait 300.",
)
@needs_proc
def test_importing_while_another_desktop_dpo_writes_names_it_and_offers_to_wait_longer(
    home, saved, tmp_path, capsys, lock_holders
):
    holder = _hold_the_database_lock(saved, name="desktop-dpo")
    lock_holders.append(holder)
    new = _write_jsonl(tmp_path / "new.jsonl", [NEW_PAIR])
    assert cli.main(["--home", str(home), "data", "import", str(new), "--wait", "0.3"]) == cli.EXIT_FAILED
    err = shows(capsys.readouterr().err)
    assert f"Another program is writing to the database {saved}" in err
    assert "did not finish within 0.3 s; nothing was imported." in err
    assert f"The database is open in desktop-dpo (pid {holder.pid})." in err
    holder.stdin.close()
    holder.wait(timeout=30)
    assert _comparisons(saved) == 2


@case(
    "runs `data import` while another program (sqlite3, a Python script) writes to the database",
    "Another program is writing to the database ...; nothing was imported. The database is open in ... "
    "(pid ...). ... To wait longer, run it again with --wait 300.",
)
@needs_proc
def test_importing_while_another_program_writes_names_its_command(
    home, saved, tmp_path, capsys, lock_holders
):
    holder = _hold_the_database_lock(saved)
    lock_holders.append(holder)
    command = Path(f"/proc/{holder.pid}/comm").read_text().strip()  # "python3.12", as `ps` shows it
    new = _write_jsonl(tmp_path / "new.jsonl", [NEW_PAIR])
    assert cli.main(["--home", str(home), "data", "import", str(new), "--wait", "0.2"]) == cli.EXIT_FAILED
    err = shows(capsys.readouterr().err)
    assert f"The database is open in {command} (pid {holder.pid})." in err
    holder.stdin.close()
    holder.wait(timeout=30)
    assert _comparisons(saved) == 2


@case(
    "runs `data import --wait 60` while another program writes for a second",
    "Imported 1 pair from ... (... format).",
)
def test_importing_with_a_longer_wait_imports_once_the_other_writer_is_done(
    home, saved, tmp_path, capsys, lock_holders
):
    lock_holders.append(_hold_the_database_lock(saved, seconds=1.0))
    new = _write_jsonl(tmp_path / "new.jsonl", [NEW_PAIR])
    assert cli.main(["--home", str(home), "data", "import", str(new), "--wait", "60"]) == cli.EXIT_OK
    shows(capsys.readouterr().out)
    assert _comparisons(saved) == 3


@case(
    "runs `data import --wait` with soon, -5 or nan seconds",
    "argument --wait: '...' is not a number of seconds",
)
@pytest.mark.parametrize("value", ["soon", "-5", "nan"])
def test_importing_with_a_wait_that_is_not_a_number_of_seconds_says_so(home, saved, tmp_path, capsys, value):
    new = _write_jsonl(tmp_path / "new.jsonl", [NEW_PAIR])
    with pytest.raises(SystemExit) as exited:
        cli.main(["--home", str(home), "data", "import", str(new), f"--wait={value}"])
    assert exited.value.code == 2
    assert f"'{value}' is not a number of seconds" in shows(capsys.readouterr().err)
    assert _comparisons(saved) == 2


@case(
    "chooses Import Preferences… in the Data view while another desktop-dpo writes to the database",
    "Import failed: Another program is writing to the database ...; nothing was imported. The database is "
    "open in desktop-dpo (pid ...). ... [Try Again] [Cancel]",
)
@needs_proc
def test_importing_in_the_data_view_while_the_database_is_busy_offers_try_again(
    qtbot, home, saved, tmp_path, lock_holders
):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QMainWindow

    from desktop_dpo.gui.preference_file_actions import PreferenceFileActions
    from desktop_dpo.workers.job_worker import JobRegistry

    holder = _hold_the_database_lock(saved, name="desktop-dpo")
    lock_holders.append(holder)
    host = QMainWindow()
    qtbot.addWidget(host)
    registry = JobRegistry()
    paths = _paths(home)
    actions = PreferenceFileActions(
        registry=registry,
        db_path=paths.db_path,
        backups_dir=paths.backups_dir,
        parent_widget=host,
        busy_timeout_s=0.3,
    )
    statuses: list[str] = []
    actions.message.connect(statuses.append)
    changed: list[bool] = []
    actions.data_changed.connect(lambda: changed.append(True))
    host.show()
    try:
        actions.start_import(_write_jsonl(tmp_path / "new.jsonl", [NEW_PAIR]))
        qtbot.waitUntil(lambda: actions.busy_question is not None, timeout=10_000)
        box = actions.busy_question
        assert box is not None
        buttons = {b.text().replace("&", ""): b for b in box.buttons()}
        assert set(buttons) == {"Try Again", "Cancel"} and box.defaultButton() is buttons["Try Again"]
        seen = f"{box.windowTitle()}: {box.text()} " + " ".join(
            f"[{name}]" for name in ("Try Again", "Cancel")
        )
        assert f"The database is open in desktop-dpo (pid {holder.pid})" in shows(seen)
        assert _comparisons(saved) == 2 and not changed

        holder.stdin.close()  # the other program finishes its work
        holder.wait(timeout=30)
        qtbot.waitUntil(lambda: not registry.is_busy("data"), timeout=10_000)
        qtbot.mouseClick(buttons["Try Again"], Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: bool(changed), timeout=10_000)
        assert statuses[-1] == "Imported 1 pair from new.jsonl."
        assert actions.busy_question is None
        assert _comparisons(saved) == 3
    finally:
        assert registry.cancel_all_and_wait(10_000)


def _damage_pages_after_the_first(db: Path) -> None:
    with sqlite3.connect(str(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    # Page 1 (the header and the schema) stays, so the file still opens; every table page is garbage.
    data[page_size:] = b"\xa5" * (len(data) - page_size)
    db.write_bytes(bytes(data))


@case(
    "imports into a database with a damaged page (backups exist)",
    "The database ... is damaged (SQLite says: database disk image is malformed); it was not opened and nothing was "
    "changed. "
    "Backups are kept in .... The newest backup is ... (...). Quit desktop-dpo, move the damaged file aside "
    "and copy a backup in its place.",
)
def test_importing_into_a_damaged_database_names_the_newest_backup(home, saved, tmp_path, capsys):
    backups = _paths(home).backups_dir
    backups.mkdir(parents=True, exist_ok=True)
    older = backups / "desktop-dpo.v1.20240101-000000.sqlite"
    shutil.copy(saved, older)
    newest = backups / "desktop-dpo.v2.20250101-000000.sqlite"
    shutil.copy(saved, newest)
    os.utime(older, (1_700_000_000, 1_700_000_000))
    _damage_pages_after_the_first(saved)
    err = shows(_import(home, _write_jsonl(tmp_path / "new.jsonl", [PAIRS[0] | {"prompt": "New"}]), capsys))
    assert f"The database {saved} is damaged" in err
    assert f"Backups are kept in {backups}. The newest backup is {newest}" in err
    assert _comparisons(newest) == 2  # the backup it names holds the pairs


@case(
    "imports into a database with a damaged page and no backup yet",
    "The database ... is damaged (SQLite says: database disk image is malformed); it was not opened and nothing was "
    "changed. "
    "Backups are kept in .... There is no backup in it yet.",
)
def test_importing_into_a_damaged_database_without_backups_says_so(home, saved, tmp_path, capsys):
    _damage_pages_after_the_first(saved)
    err = shows(_import(home, _write_jsonl(tmp_path / "new.jsonl", [PAIRS[0] | {"prompt": "New"}]), capsys))
    assert f"Backups are kept in {_paths(home).backups_dir}. There is no backup in it yet." in err


@case(
    "imports when the disk holding the database is full",
    "The disk holding the database ... is full; nothing was imported (the work is one transaction and was "
    "rolled back, so nothing is half-written). Free some space on that disk and try again.",
)
def test_importing_when_the_disk_is_full_saves_nothing(saved, tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "x" * 3000, "rejected": "y" * 3000} for i in range(200)]
    with Store.open(saved) as store:
        store._conn.execute("PRAGMA max_page_count = 60")  # a tiny "disk" for this connection
        with pytest.raises(StoreError) as caught:
            import_preferences(store, _write_jsonl(tmp_path / "many.jsonl", rows))
    assert f"The disk holding the database {saved} is full" in shows(str(caught.value))
    assert _comparisons(saved) == 2  # the import is one transaction: nothing of it was kept


@case(
    "runs `data export` while the data folder and database are read-only",
    "Wrote 2 pairs from 2 comparisons to ... (standard format).",
)
def test_exporting_from_a_read_only_data_folder_writes_the_file(home, saved, tmp_path, capsys, monkeypatch):
    data = saved.parent
    modes = {path: path.stat().st_mode for path in [data, *data.rglob("*")]}
    for path in modes:
        path.chmod(0o555 if path.is_dir() else 0o444)
    if os.geteuid() == 0:  # root writes anyway: make the app see what another user would
        real_access = os.access
        monkeypatch.setattr(
            "desktop_dpo.cli.os.access",
            lambda p, mode: (
                False if mode == os.W_OK and data in [Path(p), *Path(p).parents] else real_access(p, mode)
            ),
        )
    try:
        target = tmp_path / "pairs.jsonl"
        assert cli.main(["--home", str(home), "data", "export", str(target), "--format", "standard"]) == 0
        shows(capsys.readouterr().out)
        assert [json.loads(line) for line in target.read_text().splitlines()] == PAIRS
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert _comparisons(saved) == 2


# --------------------------------------------------------------------------------------------------
# Fuzzing the importer: whatever the bytes, it answers with its own errors
# --------------------------------------------------------------------------------------------------

_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read_or_refuse(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_bytes(data)
        with contextlib.suppress(DesktopDpoError):
            read_preference_file(path)


@case(
    "imports a file of arbitrary bytes (hypothesis)",
    observed="a message naming the file or line, never a traceback",
)
@_FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_importing_arbitrary_bytes_raises_only_the_apps_errors(data):
    _read_or_refuse(data)


_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "\ud800", "\udfff", "\u2028", "\x00", "user", "assistant", "system"]),
)
_KEYS = st.one_of(st.sampled_from(["prompt", "chosen", "rejected", "role", "content"]), st.text(max_size=5))
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), _TEXT),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=20,
)


def _line(value: object, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@case(
    "imports JSON-ish lines of any shape: wrong types, odd keys, broken bytes (hypothesis)",
    observed="a message naming the line, never a traceback; what is imported is what the count says",
)
@_FUZZ
@given(
    st.lists(
        st.one_of(
            st.tuples(_JSON, st.booleans()).map(lambda t: _line(*t)),
            st.binary(max_size=40),
            st.sampled_from([b"", b"\xef\xbb\xbf{}", b"9" * 5000, b"[" * 5000, b'"\\ud800"', b"\xff\xfe{"]),
        ),
        max_size=6,
    )
)
def test_fuzz_importing_json_ish_lines_raises_only_the_apps_errors(lines):
    _read_or_refuse(b"\n".join(lines))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_bytes(b"\n".join(lines))
        with Store.open(":memory:") as store:
            try:
                result = import_preferences(store, path, duplicates="import")
            except DesktopDpoError:
                return
            assert store.count_comparisons() == result.imported


# ---------------------------------------------------------------------------------------------------------
# Model files: the GGUF header
# ---------------------------------------------------------------------------------------------------------

CONVERSATION = [{"role": "user", "content": "Hi"}]
_ABSURD_LENGTH = 2**64 - 1


def _gguf_bytes(kv_count: int, tensor_count: int, body: bytes) -> bytes:
    """A GGUF v3 header (little-endian) followed by ``body``: the key/value section and tensor table."""
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) + body


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _registered_nothing(store: Store) -> bool:
    return store.list_models() == []


@case(
    "adds a GGUF whose metadata key claims to be 2^64-1 bytes long",
    "bad.gguf: the file's header is damaged: it gives a text 18,446,744,073,709,551,615 bytes long, more "
    "than the 8 left. Download or copy it again.",
)
def test_adding_a_gguf_with_an_absurd_name_length_says_the_header_is_damaged(memory_store, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_gguf_bytes(1, 0, struct.pack("<Q", _ABSURD_LENGTH) + b"general."))
    with pytest.raises(ModelError) as caught:
        register_model(memory_store, bad)
    shows(str(caught.value), whole=True)
    assert _registered_nothing(memory_store)


@case(
    "adds a GGUF whose tensor name claims to be 2^64-1 bytes long",
    "bad.gguf: the file's header is damaged: it gives a text 18,446,744,073,709,551,615 bytes long, more "
    "than the ... left. Download or copy it again.",
)
def test_adding_a_gguf_with_an_absurd_tensor_name_length_says_the_header_is_damaged(memory_store, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_gguf_bytes(0, 1, struct.pack("<Q", _ABSURD_LENGTH) + b"x" * 32))
    with pytest.raises(ModelError) as caught:
        register_model(memory_store, bad)
    shows(str(caught.value), whole=True)
    assert _registered_nothing(memory_store)


@case(
    "adds a GGUF with an array nested 20 000 deep",
    "bad.gguf: the file's header is damaged: it nests arrays more than 8 deep. Download or copy it again.",
)
def test_adding_a_gguf_with_an_array_nested_20000_deep_says_the_header_is_damaged(memory_store, tmp_path):
    bad = tmp_path / "bad.gguf"
    nested = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 20_000 + struct.pack("<IQ", 4, 0)
    bad.write_bytes(_gguf_bytes(1, 0, _gguf_string("general.nested") + nested))
    with pytest.raises(ModelError) as caught:
        register_model(memory_store, bad)
    shows(str(caught.value), whole=True)
    assert _registered_nothing(memory_store)


@case(
    "adds a GGUF whose array claims 2^64-1 items in a few bytes",
    "bad.gguf: the file's header is damaged: it gives an array of 18,446,744,073,709,551,615 items, more than "
    "the rest of the file holds. Download or copy it again.",
)
def test_adding_a_gguf_with_an_array_longer_than_the_file_says_the_header_is_damaged(memory_store, tmp_path):
    bad = tmp_path / "bad.gguf"
    array = struct.pack("<IIQ", 9, 10, _ABSURD_LENGTH)  # 2^64-1 uint64 values in a few bytes
    bad.write_bytes(_gguf_bytes(1, 0, _gguf_string("tokenizer.ggml.scores") + array))
    with pytest.raises(ModelError) as caught:
        register_model(memory_store, bad)
    shows(str(caught.value), whole=True)
    assert _registered_nothing(memory_store)


@case(
    "adds a GGUF whose tensor claims 4 294 967 295 dimensions",
    "bad.gguf: the file's header is damaged: a tensor has 4,294,967,295 dimensions. Download or copy it again.",
)
def test_adding_a_gguf_whose_tensor_has_billions_of_dimensions_says_the_header_is_damaged(
    memory_store, tmp_path
):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_gguf_bytes(0, 1, _gguf_string("w") + struct.pack("<I", 2**32 - 1) + b"\0" * 64))
    with pytest.raises(ModelError) as caught:
        register_model(memory_store, bad)
    shows(str(caught.value), whole=True)
    assert _registered_nothing(memory_store)


@case(
    "adds a file that starts like a GGUF and goes on with random bytes (hypothesis)",
    observed="a message that the header is damaged, never a traceback or a hang",
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), body=st.binary(max_size=512))
def test_reading_random_bytes_after_a_gguf_magic_raises_only_model_errors(tmp_path, counts, body):
    file = tmp_path / "fuzz.gguf"
    file.write_bytes(_gguf_bytes(counts[1], counts[0], body) + b"\0" * 8)
    with contextlib.suppress(ModelError):
        read_gguf_info(file)


@pytest.fixture(scope="module")
def valid_gguf(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("gguf")
    return write_gguf(folder / "ok.gguf", chat_template="{{ messages }}", quantized=True).read_bytes()


@case(
    "adds a real GGUF with bytes of its header overwritten or cut short (hypothesis)",
    observed="a message that the header is damaged, never a traceback or a hang",
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_reading_a_mutated_gguf_header_raises_only_model_errors(tmp_path, valid_gguf, data):
    raw = bytearray(valid_gguf)
    header_end = min(len(raw), 1024)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(8, header_end - 1))
        kind = data.draw(st.sampled_from(["byte", "ff", "00"]))
        width = data.draw(st.sampled_from([1, 4, 8]))
        fill = {"byte": bytes([data.draw(st.integers(0, 255))]) * width, "ff": b"\xff" * width}.get(
            kind, b"\0" * width
        )
        raw[position : position + width] = fill
    file = tmp_path / "mutated.gguf"
    file.write_bytes(bytes(raw[: data.draw(st.integers(24, len(raw)))]))
    with contextlib.suppress(ModelError):
        read_gguf_info(file)


# ---------------------------------------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------------------------------------

_Q = "model.layers.0.self_attn.q_proj"


def _base_and_adapter(tmp_path: Path, config: dict | None = None) -> tuple[Path, Path]:
    base = write_hf_folder(tmp_path / "m", tensors={f"{_Q}.weight": ("BF16", [8, 8])})
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    adapter_settings = {
        "peft_type": "LORA",
        "r": 2,
        "lora_alpha": 4,
        "target_modules": ["q_proj"],
        **(config or {}),
    }
    (adapter / "adapter_config.json").write_text(json.dumps(adapter_settings))
    write_safetensors(
        adapter / "adapter_model.safetensors",
        {
            f"base_model.model.{_Q}.lora_A.weight": ("F32", [2, 8]),
            f"base_model.model.{_Q}.lora_B.weight": ("F32", [8, 2]),
        },
    )
    return base, adapter


@pytest.fixture
def home_store(app_home):
    s = Store.open(app_home.db_path)
    yield s
    s.close()


def _nothing_imported(store: Store, app_home) -> bool:
    runs_dir = app_home.runs_dir
    return store.list_runs() == [] and (not runs_dir.exists() or not any(runs_dir.iterdir()))


@not_a_case("the control: the hand-built base and adapter the cases below damage are good as built")
def test_a_well_formed_adapter_fits_the_hand_built_base(tmp_path):
    base, adapter = _base_and_adapter(tmp_path)
    assert set(plan_merge(base, adapter).updates) == {f"{_Q}.weight"}


@case(
    "imports an adapter whose safetensors header claims 2^62 bytes",
    "The adapter in .../adapter is damaged: .../adapter_model.safetensors (... bytes) cannot be read whole "
    "(...header too large...). It was probably cut short while being written or copied; copy or train it "
    "again. Nothing was imported.",
)
def test_importing_an_adapter_with_a_2_62_header_length_says_the_weights_cannot_be_read(
    home_store, app_home, tmp_path
):
    base, adapter = _base_and_adapter(tmp_path)
    model = register_model(home_store, base)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(struct.pack("<Q", 2**62) + weights.read_bytes()[8:])
    with pytest.raises(ClusterError) as caught:
        import_adapter(home_store, app_home, adapter, model.id)
    shows(str(caught.value))
    assert _nothing_imported(home_store, app_home)


@case(
    "imports an adapter whose safetensors lost its last 20 bytes",
    "The adapter in .../adapter is damaged: .../adapter_model.safetensors (... bytes) cannot be read whole "
    "(...). It was probably cut short while being written or copied; copy or train it again. Nothing was "
    "imported.",
)
def test_importing_an_adapter_cut_short_says_it_is_incomplete(home_store, app_home, tmp_path):
    base, adapter = _base_and_adapter(tmp_path)
    model = register_model(home_store, base)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-20])
    with pytest.raises(ClusterError) as caught:
        import_adapter(home_store, app_home, adapter, model.id)
    shows(str(caught.value))
    assert _nothing_imported(home_store, app_home)


_DAMAGED_SETTING = (
    "The adapter's settings in .../adapter_config.json are damaged: {field} is {value}, but it must be "
    "{wanted}. Copy the adapter folder again from where it was trained."
)
_NONSENSE_SETTINGS = [
    ("r", "four", "a whole number from 1 (the LoRA rank)"),
    ("r", 0, "a whole number from 1 (the LoRA rank)"),
    ("rank_pattern", "q_proj", "a mapping of module names to whole numbers from 1"),
    ("lora_dropout", "x", "a number from 0 up to (not including) 1"),
    ("lora_alpha", None, "a number above 0"),
    ("target_modules", 7, "a module name or a list of module names"),
]


def _nonsense_setting_case(field: str, value: object, wanted: str) -> Callable[[Callable], Callable]:
    return case(
        f"imports an adapter whose adapter_config.json has `{field}: {json.dumps(value)}`",
        _DAMAGED_SETTING.format(field=field, value=json.dumps(value), wanted=wanted),
        param=f"{field}={json.dumps(value)}",
    )


def _stack(*decorators: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """Apply ``decorators`` as if written one above the other, the first on top (several @case at once)."""

    def apply(test: Callable) -> Callable:
        for decorator in reversed(decorators):
            test = decorator(test)
        return test

    return apply


@_stack(*(_nonsense_setting_case(*setting) for setting in _NONSENSE_SETTINGS))
@pytest.mark.parametrize(
    ("field", "value", "wanted"),
    _NONSENSE_SETTINGS,
    ids=[f"{field}={json.dumps(value)}" for field, value, _ in _NONSENSE_SETTINGS],
)
def test_importing_an_adapter_with_a_nonsense_setting_names_the_field(
    home_store, app_home, tmp_path, field, value, wanted
):
    base, adapter = _base_and_adapter(tmp_path, {field: value})
    model = register_model(home_store, base)
    with pytest.raises(ClusterError) as caught:
        import_adapter(home_store, app_home, adapter, model.id)
    assert f"are damaged: {field} is {json.dumps(value)}, but it must be {wanted}" in shows(str(caught.value))
    assert _nothing_imported(home_store, app_home)


@case(
    'exports with an adapter whose adapter_config.json has `r: "four"`',
    'The adapter\'s settings in .../adapter/adapter_config.json are damaged: r is "four", but it must be a '
    "whole number from 1 (the LoRA rank). Copy the adapter folder again from where it was trained.",
)
def test_exporting_with_an_adapter_whose_rank_is_four_in_words_names_the_field(tmp_path):
    base, adapter = _base_and_adapter(tmp_path, {"r": "four"})
    with pytest.raises(ExportError) as caught:
        plan_merge(base, adapter)
    assert str(adapter / "adapter_config.json") in shows(str(caught.value), whole=True)


# ---------------------------------------------------------------------------------------------------------
# Model folders
# ---------------------------------------------------------------------------------------------------------


@case(
    "adds a model folder whose chat_template.jinja is not UTF-8",
    "m cannot be read: its chat_template.jinja is not UTF-8 text (byte 5 is not valid UTF-8). Save the "
    "template as UTF-8, or download or copy the model again.",
)
def test_adding_a_model_whose_chat_template_is_not_utf8_says_so(memory_store, tmp_path):
    folder = write_hf_folder(tmp_path / "m")
    (folder / "chat_template.jinja").write_bytes(b"{{ x \xff\xfe }}")
    with pytest.raises(ModelError) as caught:
        register_model(memory_store, folder)
    shows(str(caught.value), whole=True)
    assert _registered_nothing(memory_store)


_OUTSIDE = {
    "../../../../etc/passwd": "a relative path that climbs out of the folder",
    "/etc/passwd": "an absolute path",
    "sub/../../outside.safetensors": "a path that climbs out through a subfolder",
}


@_stack(
    *(
        case(
            f"adds a model folder whose shard index names {what} (`{target}`)",
            "model.safetensors.index.json in m names a weight file outside the model folder "
            f"({target!r}). A model's files may only name files in its own folder; download the model again "
            "from a source you trust.",
            param=target,
        )
        for target, what in _OUTSIDE.items()
    )
)
@pytest.mark.parametrize("target", list(_OUTSIDE), ids=list(_OUTSIDE))
def test_adding_a_model_whose_shard_index_points_outside_its_folder_is_refused(
    memory_store, tmp_path, target
):
    folder = write_hf_folder(tmp_path / "m")
    index = {"metadata": {}, "weight_map": {"embed.weight": "model.safetensors", "norm.weight": target}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError) as caught:
        register_model(memory_store, folder)
    shows(str(caught.value), whole=True)
    assert _registered_nothing(memory_store)


@case(
    "exports a run whose base model's shard index points at ../../../../etc/passwd",
    "model.safetensors.index.json in m names a weight file outside the model folder "
    "('../../../../etc/passwd'). A model's files may only name files in its own folder; download the model "
    "again from a source you trust.",
)
def test_merging_into_a_base_whose_shard_index_points_outside_its_folder_is_refused(tmp_path):
    base, adapter = _base_and_adapter(tmp_path)
    index = {"weight_map": {f"{_Q}.weight": "../../../../etc/passwd"}}
    (base / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ExportError) as caught:
        plan_merge(base, adapter)
    shows(str(caught.value), whole=True)


# ---------------------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------------------


@case(
    "chats with a model whose template runs two nested range(100000) loops",
    "The model's chat template was stopped after 1,000,000 steps: it loops far more than rendering a "
    "conversation needs. Choose another model, or remove the template so the plain User:/Assistant: "
    "layout is used.",
)
def test_chatting_with_a_template_of_two_nested_100000_loops_stops_with_a_message():
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(ChatTemplateError) as caught:
        render_prompt(CONVERSATION, template)
    assert time.monotonic() - started < 10
    shows(str(caught.value), whole=True)


_HUGE_TEXT = {
    "{{ 'x' * 300000000 }}": "multiplies 'x' by 300 000 000",
    "{{ 300000000 * 'x' }}": "multiplies 300 000 000 by 'x'",
    "{{ 'x' | center(300000000) }}": "centres 'x' in 300 000 000 characters",
    "{{ 'x'.ljust(300000000) }}": "pads 'x' to 300 000 000 characters",
    "{% for i in range(100000) %}{{ 'a long line of template text' }}{% endfor %}": (
        "prints a line 100 000 times"
    ),
    "{{ 7 ** 1000000000 }}": "computes 7 ** 1 000 000 000",
}


@_stack(
    *(
        case(
            f"chats with a model whose template {what}",
            "The model's chat template was stopped: it builds more than 1,000,008 characters of text for this "
            "conversation. Choose another model, or remove the template so the plain User:/Assistant: layout "
            "is used.",
            param=f"template{number}",
        )
        for number, what in enumerate(_HUGE_TEXT.values())
    )
)
@pytest.mark.parametrize("template", list(_HUGE_TEXT), ids=[f"template{n}" for n in range(len(_HUGE_TEXT))])
def test_chatting_with_a_template_that_builds_huge_text_stops_with_a_message(template):
    with pytest.raises(ChatTemplateError) as caught:
        render_prompt(CONVERSATION, template)
    shows(str(caught.value), whole=True)


@case(
    "chats with a model whose chat template writes the BOS token itself",
    observed="no warning about 2 BOS tokens: the prompt starts with one BOS token",
)
def test_chatting_with_a_model_whose_template_writes_bos_starts_the_prompt_with_one_bos(tiny_gguf, caplog):
    from desktop_dpo.core.llm.llamacpp import LlamaCppEngine
    from tests.plugins.tiny_model import CHAT_TEMPLATE

    assert CHAT_TEMPLATE.startswith("{{ bos_token }}")  # the case: the template writes the BOS itself
    with (
        caplog.at_level(logging.DEBUG, logger="desktop_dpo.llama_cpp"),
        LlamaCppEngine(tiny_gguf, n_ctx=128, n_threads=1, event_interval_s=0, safe_mode=True) as engine,
    ):
        engine.load()
        assert engine.chat_template == CHAT_TEMPLATE
        bos = engine.tokenize("", add_bos=True)
        assert len(bos) == 1  # the model asks for a BOS: llama.cpp's tokenizer adds one by itself
        caplog.clear()
        tokens, _stops = engine.prompt_tokens([{"role": "user", "content": "Tell me about tea."}])
    assert tokens[0] == bos[0] and tokens[1] != bos[0]
    assert "2 BOS" not in caplog.text and "also starts with a BOS" not in caplog.text


@not_a_case("the control: the output cap grows with the conversation, so a long real chat still renders")
def test_a_long_conversation_still_renders_beyond_the_minimum_output_budget():
    long = [{"role": "user", "content": "y" * 1_500_000}]
    text, _stops = render_prompt(
        long, "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ range(3)|list }}"
    )
    assert len(text) == 1_500_000 + len("[0, 1, 2]")


_PIECES = st.sampled_from(
    [
        "{{ ",
        " }}",
        "{% for m in messages %}",
        "{% endfor %}",
        "{% if ",
        " %}",
        "{% endif %}",
        "{% set x = ",
        "range(",
        ")",
        "100000",
        "3",
        "'x'",
        " * ",
        " ** ",
        " ~ ",
        " + ",
        "m['content']",
        "messages",
        "|length",
        "|center(",
        "|join",
        "raise_exception('no')",
        "loop.index",
        "{% macro f() %}{{ f() }}{% endmacro %}",
        "f()",
        "text ",
        "{{",
        "}}",
    ]
)


@case(
    "chats with a model whose template is any mix of loops, recursion, big numbers and broken syntax "
    "(hypothesis)",
    observed="a prompt, or a message about the template, never a traceback or a hang",
)
@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=14))
def test_rendering_random_templates_raises_only_the_apps_errors(pieces):
    try:
        text, _stops = render_prompt(CONVERSATION, "".join(pieces))
    except DesktopDpoError:
        return
    assert isinstance(text, str)


# ---------------------------------------------------------------------------------------------------------
# Code shipped with a model (tests/core/test_model_code_refused.py covers every place a folder can name code)
# ---------------------------------------------------------------------------------------------------------

_NAMES_CODE = {
    "tokenizer_class": "HybridDNATokenizer",
    "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]},
}


@pytest.fixture
def crafted(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A model folder whose tokenizer config names its own code (llama.cpp's converter would load it with
    trust_remote_code=True), and the marker file that code writes when it runs."""
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    marker = tmp_path / "payload-ran.txt"
    folder = write_hf_folder(tmp_path / "crafted")
    add_payload(folder, marker)
    (folder / "tokenizer_config.json").write_text(json.dumps(_NAMES_CODE))
    return folder, marker


@case(
    "adds a model folder whose tokenizer_config.json names code of its own (auto_map)",
    "crafted needs custom code from its authors to load: its tokenizer_config.json has an auto_map "
    "(AutoTokenizer: tokenization_evil.EvilTokenizer). desktop-dpo never runs code from model folders, so it "
    "does not use this one, and nothing of that code ran. Choose a version of the model that loads without "
    "custom code, or a model of a supported architecture: llama, mistral, ....",
)
def test_adding_a_model_folder_that_ships_code_is_refused_and_the_code_never_runs(memory_store, crafted):
    folder, marker = crafted
    with pytest.raises(ModelCodeRefused) as refusal:
        register_model(memory_store, folder)
    shows(str(refusal.value))
    assert _registered_nothing(memory_store)
    assert not marker.exists()


@case(
    "converts to GGUF (as Chat, Collect, Evaluate and Export do) a model folder that names code of its own",
    "crafted needs custom code from its authors to load: its tokenizer_config.json has an auto_map "
    "(AutoTokenizer: tokenization_evil.EvilTokenizer). desktop-dpo never runs code from model folders, so it "
    "does not use this one, and nothing of that code ran. Choose a version of the model that loads without "
    "custom code, or a model of a supported architecture: llama, mistral, ....",
)
def test_converting_a_model_folder_that_ships_code_is_refused_and_the_code_never_runs(
    crafted, tmp_path, monkeypatch
):
    folder, marker = crafted

    def no_child(*args, **kwargs):
        raise AssertionError("the converter was started on a folder that names code")

    monkeypatch.setattr(gguf_export.subprocess, "Popen", no_child)
    out = tmp_path / "out" / "crafted.gguf"
    with pytest.raises(ModelCodeRefused) as refusal:
        run_job(convert_hf_to_gguf(folder, out, outtype="f32"))
    shows(str(refusal.value))
    assert not marker.exists()
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------
# Training: races and wrong settings
# ---------------------------------------------------------------------------------------------------------


def _model_and_run(home: Path, **run) -> tuple[int, int]:
    """A registered (fake) model with one run; returns (model id, run id)."""
    with Store.open(paths_of(home).db_path) as store:
        model_id = store.add_model(name="tiny", path=str(home / "model"), kind="hf", fingerprint="f" * 16)
        run_id = store.create_run(
            name="round 1", base_model_id=model_id, config=TrainConfig().to_dict(), comparison_ids=[], **run
        )
    return model_id, run_id


def _hold_lock_in_another_process(run_dir: Path, run_id: int) -> subprocess.Popen:
    """Another 'window': a process that takes the run's lock and keeps it until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from desktop_dpo.core.dpo.run_lock import RunLock
        lock = RunLock(Path({str(run_dir)!r}), {run_id})
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


@case(
    "runs `desktop-dpo train --resume N` while another window trains run N",
    "Run ... is training in another window (or terminal). Wait for it to finish, or stop it there, then "
    "resume it here.",
)
def test_resuming_a_run_another_window_is_training_is_refused(home, capsys):
    _, run_id = _model_and_run(home)
    with Store.open(paths_of(home).db_path) as store:
        store.update_run(run_id, status="running", step=7)
        run = store.get_run(run_id)
    run_dir = run_folder(run, paths_of(home).runs_dir)
    other = _hold_lock_in_another_process(run_dir, run_id)
    try:
        argv = ["train", "--resume", str(run_id), "--lr", "5e-5", "--home", str(home)]
        assert cli.main(argv) == 1
        assert f"Run {run_id} is training in another window" in shows(capsys.readouterr().err)
        # The core job refuses too (the GUI's child goes through it), and records nothing over the other's.
        with Store.open(paths_of(home).db_path) as store:
            with pytest.raises(RunBusyError) as caught:
                drive_training(store, run_id, cancel=CancelToken(), runs_dir=paths_of(home).runs_dir)
            shows(str(caught.value), whole=True)
            after = store.get_run(run_id)
        assert (after.status, after.step, after.error) == ("running", 7, None)
        assert after.config["lr"] == TrainConfig().lr  # --lr was not written into the other's run
    finally:
        other.kill()
        other.wait()
    # The OS drops the lock with the process: the run can be taken again.
    RunLock(run_dir, run_id).release()
    assert (run_dir / LOCK_FILE).exists()


_NOT_A_REFERENCE = ["bogus", "model:abc", "model:", "model:-1"]


@_stack(
    *(
        case(
            f"trains with `--reference {reference}`",
            f"The reference {reference!r} is not one desktop-dpo knows: give adapter_off (the base model) or "
            "model:<id> with the id of a registered model (a previous round's), e.g. model:3.",
            param=reference,
        )
        for reference in _NOT_A_REFERENCE
    )
)
@pytest.mark.parametrize("reference", _NOT_A_REFERENCE, ids=_NOT_A_REFERENCE)
def test_training_with_a_reference_that_is_not_adapter_off_or_a_model_is_refused(home, capsys, reference):
    _model_and_run(home)
    assert cli.main(["train", "--model", "tiny", "--reference", reference, "--home", str(home)]) == 1
    shows(capsys.readouterr().err)
    with Store.open(paths_of(home).db_path) as store:
        assert len(store.list_runs()) == 1  # no run was made


@case(
    "trains against `--reference model:99` (no such model)",
    "The reference model:99 is not a registered model; give the id of one in the Models view "
    "(`desktop-dpo info` counts them), or adapter_off.",
)
def test_training_against_a_reference_model_that_is_not_registered_is_refused(home):
    from desktop_dpo.core.dpo.runs import create_run_for_model

    model_id, _ = _model_and_run(home)
    with Store.open(paths_of(home).db_path) as store:
        model = store.get_model(model_id)
        with pytest.raises(TrainingError) as caught:
            create_run_for_model(store, model, TrainConfig(), reference="model:99", comparison_ids=[1])
        shows(str(caught.value), whole=True)
        assert len(store.list_runs()) == 1


_NOT_A_NUMBER = {"nan": ".", "inf": ".", "-inf": "; learning rate must be positive."}


@_stack(
    *(
        case(
            f"trains with `--lr {value}`",
            f"These training settings cannot work: lr must be a number, not {value}{more}",
            param=value,
        )
        for value, more in _NOT_A_NUMBER.items()
    )
)
@pytest.mark.parametrize("value", list(_NOT_A_NUMBER), ids=list(_NOT_A_NUMBER))
def test_training_with_a_learning_rate_of_nan_is_refused(home, capsys, value):
    _model_and_run(home)
    assert cli.main(["train", "--model", "tiny", f"--lr={value}", "--home", str(home)]) == 1
    shows(capsys.readouterr().err)
    with pytest.raises(TrainingError, match="beta must be a number"):
        TrainConfig(beta=float("nan")).validated()
    with Store.open(paths_of(home).db_path) as store:
        assert len(store.list_runs()) == 1  # no run was made


@case(
    "resumes a run whose checkpoint pickle is refused by weights_only (or is garbage bytes)",
    "The checkpoint at ... is damaged or was not written by desktop-dpo; start the run again "
    "(desktop-dpo train --resume RUN_ID --restart) or delete ....",
)
def test_resuming_from_a_checkpoint_pickle_that_is_not_ours_says_it_is_damaged(tmp_path):
    import torch

    checkpoint = tmp_path / "run-0001" / "checkpoints" / "step-0000004"
    checkpoint.mkdir(parents=True)
    # A pickle of an arbitrary class: weights_only refuses to load it (it could run code).
    torch.save({"format": 1, "payload": Path("/etc")}, checkpoint / "training_state.pt")
    with pytest.raises(TrainingError) as caught:
        checkpoint_module.load_checkpoint(checkpoint, None, None, TrainConfig(), 4)
    message = shows(str(caught.value), whole=True)
    assert f"delete {checkpoint}" in message and "UnpicklingError" not in message
    (checkpoint / "training_state.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(TrainingError) as caught:
        checkpoint_module.load_checkpoint(checkpoint, None, None, TrainConfig(), 4)
    shows(str(caught.value), whole=True)
    assert checkpoint.is_dir()  # nothing removed behind the person's back


@case(
    "runs `import-adapter` on an adapter whose safetensors lost its last 500 bytes",
    "The adapter in ... is damaged: ... cannot be read whole (...). It was probably cut short while being "
    "written or copied; copy or train it again. Nothing was imported.",
)
def test_importing_an_adapter_cut_short_by_500_bytes_is_refused(home, tiny_model_dir, tmp_path, capsys):
    with Store.open(paths_of(home).db_path) as store:
        tiny_id = register_model(store, tiny_model_dir, name="tiny").id
    adapter = write_adapter(tmp_path / "cut", in_features=64)
    weights = adapter / "adapter_model.safetensors"
    assert check_tensor_file(weights, "the adapter") > 0
    data = weights.read_bytes()
    weights.write_bytes(data[:-500])
    argv = ["import-adapter", str(adapter), "--base", str(tiny_id), "--home", str(home)]
    assert cli.main(argv) == 1
    assert f"The adapter in {adapter} is damaged" in shows(capsys.readouterr().err)
    with Store.open(paths_of(home).db_path) as store:
        assert store.list_runs() == []  # not recorded as a completed run
    with pytest.raises(DamagedTensorFileError, match="no weights file"):
        check_tensor_file(tmp_path / "missing.safetensors", "the adapter")


# ---------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------


@case(
    "exports with `--out` on a read-only folder or mount",
    "Cannot write the export into ...: Read-only file system. Choose a folder you can write to (--out DIR), "
    "or make this one writable.",
)
def test_exporting_to_a_read_only_folder_says_so(home, tmp_path, capsys, monkeypatch):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}", encoding="utf-8")
    adapter = write_adapter(tmp_path / "adapter", in_features=64)
    with Store.open(paths_of(home).db_path) as store:
        model_id = store.add_model(name="tiny", path=str(model_dir), kind="hf", fingerprint="f" * 16)
        run_id = store.create_run(
            name="r", base_model_id=model_id, config=TrainConfig().to_dict(), comparison_ids=[]
        )
        store.update_run(run_id, status="completed", adapter_path=str(adapter))
    out = tmp_path / "mount"
    out.mkdir()
    real_mkdir = Path.mkdir

    def read_only_mount(self, *args, **kwargs):  # root ignores chmod; a read-only mount does not
        if self.parent == out:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mount)
    assert cli.main(["export", "--run", str(run_id), "--out", str(out), "--home", str(home)]) == 1
    assert f"Cannot write the export into {out}: Read-only file system" in shows(capsys.readouterr().err)
    with Store.open(paths_of(home).db_path) as store:
        assert store.get_run(run_id).status == "completed"
    assert adapter.is_dir() and list(out.iterdir()) == []


_CONVERTER_TRACEBACK = """\
INFO:hf-to-gguf:Loading model: broken-model
INFO:hf-to-gguf:Model architecture: LlamaForCausalLM
Traceback (most recent call last):
  File "/site-packages/conversion/__main__.py", line 12, in <module>
    main()
  File "/site-packages/conversion/base.py", line 481, in prepare_tensors
    data = self.get_tensor(name)
           ^^^^^^^^^^^^^^^^^^^^^
KeyError: 'model.layers.3.mlp.down_proj.weight'
"""


@case(
    "exports a model folder the converter fails on (a tensor missing, a damaged file)",
    "llama.cpp's converter could not convert ... to GGUF (the converter said: KeyError: '...'). Its "
    "architecture or tokenizer may not be supported by this converter, or the folder may be incomplete (...): "
    "check the folder, or choose a model of a supported family. Nothing was kept; details are in the log.",
)
def test_exporting_a_model_the_converter_fails_on_says_what_it_said_and_where_the_details_are(caplog):
    with caplog.at_level(logging.INFO, logger="desktop_dpo.core.export.gguf"):
        error = gguf_export._explain_failure(_CONVERTER_TRACEBACK, Path("/models/broken-model"))
    assert isinstance(error, ExportError)
    message = shows(str(error), whole=True)
    assert message.startswith(
        "llama.cpp's converter could not convert broken-model to GGUF (the converter said: "
        "KeyError: 'model.layers.3.mlp.down_proj.weight')."
    )
    assert "File " not in message and "^^^" not in message
    # The whole output is in the app's log.
    assert _CONVERTER_TRACEBACK.strip() in caplog.text


@case(
    "exports a model folder holding a weight the converter cannot place",
    "llama.cpp's converter could not convert ... to GGUF (the converter said: ValueError: Can not map tensor "
    "'...'). ... Nothing was kept; details are in the log.",
)
def test_exporting_a_model_folder_with_a_weight_the_converter_cannot_place_explains_and_keeps_nothing(
    tiny_model_dir, tmp_path, caplog
):
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "odd-model"
    shutil.copytree(tiny_model_dir, folder)
    weights = next(folder.glob("*.safetensors"))
    tensors = load_file(weights)
    tensors["model.layers.0.mystery.weight"] = torch.zeros(2, 2)  # a weight no Llama has
    save_file(tensors, weights, metadata={"format": "pt"})
    out = tmp_path / "out" / "odd-model.gguf"
    with (
        caplog.at_level(logging.INFO, logger="desktop_dpo.core.export.gguf"),
        pytest.raises(ExportError) as caught,
    ):
        run_job(convert_hf_to_gguf(folder, out, outtype="f32"))
    message = shows(str(caught.value), whole=True)
    assert message.startswith(
        "llama.cpp's converter could not convert odd-model to GGUF (the converter said: "
        "ValueError: Can not map tensor 'model.layers.0.mystery.weight')."
    )
    assert "Traceback (most recent call last):" in caplog.text  # the converter's whole output, in the log
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing half-written is kept
    assert weights.is_file()  # the model folder is as it was


@case(
    "exports a model so large that the system kills the converter (out of memory)",
    "llama.cpp's converter could not convert ... to GGUF (the converter said: Killed). ... Nothing was kept; "
    "details are in the log.",
)
def test_exporting_when_the_converter_is_killed_says_so_without_a_traceback(caplog):
    with caplog.at_level(logging.INFO, logger="desktop_dpo.core.export.gguf"):
        error = gguf_export._explain_failure("INFO:hf-to-gguf:Loading model\nKilled\n", Path("/m/big"))
    assert "could not convert big to GGUF (the converter said: Killed)." in shows(str(error), whole=True)


@case(
    "kills an export with `kill -9` while the converter runs",
    observed="the converter child ends with its parent instead of writing on to its .partial file as an orphan",
)
def test_killing_an_export_with_sigkill_ends_its_converter_child(tmp_path):
    """The parent runs ``_run_child`` (as an export does) and is killed by SIGKILL mid-way."""
    temp = tmp_path / ".model.gguf.partial"
    pid_file = tmp_path / "child.pid"
    parent_code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from desktop_dpo.core.export import gguf
        from desktop_dpo.core.jobs import CancelToken
        child = gguf._PARENT_WATCH + '''
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        with open({str(temp)!r}, "ab") as out:
            while True:
                out.write(b"x" * 1024); out.flush(); time.sleep(0.05)
        '''
        job = gguf._run_child([sys.executable, "-c", child], Path({str(temp)!r}), 10**9, "writing",
                              CancelToken(), "the test")
        for _ in job:
            pass
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=REPO)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child_pid), "the converter child outlived its killed parent"
    size = temp.stat().st_size
    time.sleep(0.3)
    assert temp.stat().st_size == size  # nobody writes the .partial any more


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


@case(
    "opens Storage after a killed export left its hidden `.NAME.PID-HEX.partial` folder",
    "Leftover of a stopped job",
)
def test_opening_storage_after_a_killed_export_offers_its_hidden_folder_for_removal(home):
    paths = paths_of(home)
    leftover = paths.exports_dir / ".tiny-run-1.4242-1a2b3c4d.partial"
    (leftover / "merged").mkdir(parents=True)
    (leftover / "merged" / "model.safetensors").write_bytes(b"\0" * 4096)
    old = time.time() - LEFTOVER_QUIET_S - 60
    os.utime(leftover, (old, old))
    for child in leftover.rglob("*"):
        os.utime(child, (old, old))
    with Store.open(paths.db_path) as store:
        items = scan_storage(store, paths)
    (item,) = [i for i in items if i.path == str(leftover)]
    assert item.kind == "leftover" and item.removable
    shows(item.label, whole=True)


# ---------------------------------------------------------------------------------------------------------
# The data folder
# ---------------------------------------------------------------------------------------------------------


@case(
    "runs `info --home FILE` where FILE is a file",
    "... is a file, not a folder, so the data folder ... cannot be made there. Give --home a folder (it is "
    "created when missing), or move the file away.",
)
@case(
    "runs `data import --home FILE` where FILE is a file",
    "... is a file, not a folder, so the data folder ... cannot be made there. Give --home a folder (it is "
    "created when missing), or move the file away.",
)
def test_giving_home_a_path_that_is_a_file_says_so(home, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n", encoding="utf-8")
    assert cli.main(["info", "--no-hardware", "--home", str(a_file)]) == 1
    out = shows(capsys.readouterr().out)
    assert f"{a_file} is a file, not a folder" in out and "no database yet" not in out
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n", encoding="utf-8")
    assert cli.main(["data", "import", str(pairs), "--home", str(a_file)]) == 1
    shows(capsys.readouterr().err)
    assert a_file.read_text(encoding="utf-8") == "mine\n"


@case(
    "runs `data import` with a read-only data folder",
    "The data folder ... is read-only: desktop-dpo keeps its database there and must write to it. Make it "
    "writable, or choose another folder with --home DIR.",
)
def test_using_a_read_only_data_folder_says_so(home, tmp_path, capsys, monkeypatch):
    paths = paths_of(home)
    with Store.open(paths.db_path) as store:
        store.add_model(name="kept", path=str(tmp_path), kind="hf", fingerprint="k" * 16)
    real_access = os.access

    def read_only(path, mode, *args, **kwargs):  # a read-only mount (root ignores chmod)
        if Path(path) == paths.data_dir and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", read_only)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n", encoding="utf-8")
    assert cli.main(["data", "import", str(pairs), "--home", str(home)]) == 1
    assert f"The data folder {paths.data_dir} is read-only" in shows(capsys.readouterr().err)
    monkeypatch.setattr(os, "access", real_access)
    with Store.open(paths.db_path) as store:
        assert [m.name for m in store.list_models()] == ["kept"]


# ---------------------------------------------------------------------------------------------------------
# The catalogue itself
# ---------------------------------------------------------------------------------------------------------


@not_a_case("checks the catalogue: every test of this module is a row or says why not")
def test_every_test_in_the_catalogue_is_a_case_or_says_why_not():
    module = sys.modules[__name__]
    tests = {name for name in vars(module) if name.startswith("test_") and callable(getattr(module, name))}
    with_cases = {c.test for c in CATALOGUE.cases}
    assert sorted(tests - with_cases - set(CATALOGUE.controls)) == []
    assert sorted((with_cases | set(CATALOGUE.controls)) - tests) == []  # no row without its test
    assert not with_cases & set(CATALOGUE.controls)
    acts = [c.act for c in CATALOGUE.cases]
    assert sorted({a for a in acts if acts.count(a) > 1}) == []  # one row per distinct act


@not_a_case("checks the catalogue: docs/bad-inputs.md is generated from the cases above and is current")
def test_the_bad_inputs_table_is_current_and_has_at_least_40_rows():
    text = render()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(CATALOGUE.cases) >= MIN_ROWS
    assert TABLE.read_text(encoding="utf-8") == text, "run: python -m tests.bad_inputs_table"
