"""Bad inputs to data import and export, and a database that is locked, damaged, full or read-only.

Each test is named by what the person does and checks the message they see, and that nothing already saved
was lost (row counts, ``PRAGMA integrity_check``). ``CASES`` lists them for the bad-inputs catalogue.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desktop_dpo import cli
from desktop_dpo.config import HOME_ENV, AppPaths
from desktop_dpo.core import preference_io
from desktop_dpo.core.errors import DatabaseBusy, DesktopDpoError, StoreError
from desktop_dpo.core.preference_io import import_preferences, read_preference_file
from desktop_dpo.core.store import Store

REPO = Path(__file__).resolve().parents[1]

# (what the person does, the message they see); the tests below check each message.
CASES = [
    ("data import /dev/zero", "Line 1 of /dev/zero is longer than 64 MiB; nothing was imported."),
    ("data import of a file over 1 GiB", "FILE is larger than 1 GiB; nothing was imported. Split it ..."),
    (
        'data import of a line with a lone surrogate "\\ud800"',
        'line 1: "chosen" holds a lone surrogate escape (\\ud800 at character 1) ...',
    ),
    ("data import of a line with a 5000-digit number", "line 1: a number with thousands of digits ..."),
    ("data import of JSON nested 200 000 deep", "line 2: JSON nested too deeply ..."),
    ("data import of a UTF-16 file", "FILE is saved as UTF-16 text; ... save it as UTF-8 ..."),
    (
        "data import while another program writes to the database",
        "Another desktop-dpo window or another program is writing to the database ... try again.",
    ),
    (
        "data import into a database with a damaged page",
        "The database ... is damaged ... Backups are kept in BACKUPS. The newest backup is FILE ...",
    ),
    ("data import when the disk is full", "The disk holding the database ... is full; nothing was imported"),
    ("data export from a read-only data folder", "Wrote N pairs ... (the export works)"),
]

PAIRS = [
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    {"prompt": "Grass is", "chosen": " green.", "rejected": " purple."},
]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "unused-default"))
    monkeypatch.setattr("desktop_dpo.core.offline.lock_down", lambda: None)
    return tmp_path / "home"


def _paths(home: Path) -> AppPaths:
    return AppPaths(data_dir=home / "data", log_dir=home / "logs")


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
    assert cli.main(["--home", str(home), "data", "import", str(path)]) == cli.EXIT_FAILED
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


# --------------------------------------------------------------------------------------------------
# Files that are too large, not UTF-8 or not JSON a person means
# --------------------------------------------------------------------------------------------------


def test_importing_dev_zero_says_a_line_is_too_long(home, saved, capsys):
    err = _import(home, "/dev/zero", capsys)
    assert "Line 1 of /dev/zero is longer than 64 MiB; nothing was imported." in err
    assert _comparisons(saved) == 2


def test_importing_a_file_over_the_size_cap_says_it_is_too_large(home, saved, tmp_path, capsys, monkeypatch):
    big = _write_jsonl(tmp_path / "big.jsonl", PAIRS * 20)
    monkeypatch.setattr(preference_io, "MAX_FILE_BYTES", 1024)  # the real cap is 1 GiB
    err = _import(home, big, capsys)
    assert f"{big} is larger than" in err and "Split it into smaller files" in err
    # A stream (a pipe, a device) has no size to look at first: it is counted while read.
    monkeypatch.setattr(preference_io, "MAX_FILE_BYTES", 5 * 1024 * 1024)
    with pytest.raises(preference_io.PreferenceFileError, match="is larger than 5 MiB"):
        read_preference_file("/dev/zero")
    assert _comparisons(saved) == 2


def test_importing_a_lone_surrogate_names_the_line(home, saved, tmp_path, capsys):
    bad = tmp_path / "surrogate.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "\\ud800", "rejected": "r"}\n', encoding="utf-8")
    err = _import(home, bad, capsys)
    assert "Nothing was imported" in err
    assert 'line 1: "chosen" holds a lone surrogate escape (\\ud800 at character 1)' in err
    conversational = tmp_path / "surrogate-chat.jsonl"
    row = {
        "prompt": [{"role": "user", "content": "ok \udfff"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    conversational.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert '"prompt" message 1 content holds a lone surrogate escape (\\udfff at character 4)' in _import(
        home, conversational, capsys
    )
    assert _comparisons(saved) == 2


def test_importing_a_5000_digit_number_names_the_line(home, saved, tmp_path, capsys):
    bad = tmp_path / "digits.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "c", "rejected": "r", "score": ' + "9" * 5000 + "}\n")
    err = _import(home, bad, capsys)
    assert "line 1: a number with thousands of digits" in err
    assert _comparisons(saved) == 2


def test_importing_json_nested_200000_deep_names_the_line(home, saved, tmp_path, capsys):
    bad = tmp_path / "deep.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + "[" * 200_000 + "]" * 200_000 + "\n")
    err = _import(home, bad, capsys)
    assert "line 2: JSON nested too deeply" in err
    assert _comparisons(saved) == 2


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_importing_a_utf16_file_says_save_it_as_utf8(home, saved, tmp_path, capsys, encoding):
    bad = tmp_path / f"{encoding}.jsonl"
    bad.write_text("".join(json.dumps(row) + "\n" for row in PAIRS), encoding=encoding)
    err = _import(home, bad, capsys)
    assert f"{bad} is saved as UTF-16 text; desktop-dpo reads UTF-8." in err and "save it as UTF-8" in err
    assert _comparisons(saved) == 2


# --------------------------------------------------------------------------------------------------
# The database: locked, damaged, full, read-only
# --------------------------------------------------------------------------------------------------


def test_importing_while_another_program_writes_says_it_is_busy(home, saved, tmp_path):
    writer = sqlite3.connect(str(saved), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        with Store.open(saved, busy_timeout_s=0.2) as store, pytest.raises(DatabaseBusy) as caught:
            import_preferences(store, _write_jsonl(tmp_path / "new.jsonl", [PAIRS[0] | {"prompt": "New"}]))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    message = str(caught.value)
    assert "Another desktop-dpo window or another program is writing to the database" in message
    assert "did not finish within 0.2 s; nothing was imported" in message and "try again" in message
    assert _comparisons(saved) == 2


def _damage_pages_after_the_first(db: Path) -> None:
    with sqlite3.connect(str(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    # Page 1 (the header and the schema) stays, so the file still opens; every table page is garbage.
    data[page_size:] = b"\xa5" * (len(data) - page_size)
    db.write_bytes(bytes(data))


def test_importing_into_a_damaged_database_names_the_newest_backup(home, saved, tmp_path, capsys):
    backups = _paths(home).backups_dir
    backups.mkdir(parents=True, exist_ok=True)
    older = backups / "desktop-dpo.v1.20240101-000000.sqlite"
    shutil.copy(saved, older)
    newest = backups / "desktop-dpo.v2.20250101-000000.sqlite"
    shutil.copy(saved, newest)
    os.utime(older, (1_700_000_000, 1_700_000_000))
    _damage_pages_after_the_first(saved)
    err = _import(home, _write_jsonl(tmp_path / "new.jsonl", [PAIRS[0] | {"prompt": "New"}]), capsys)
    assert f"The database {saved} is damaged (SQLite says: database disk image is malformed)" in err
    assert f"Backups are kept in {backups}. The newest backup is {newest}" in err
    assert _comparisons(newest) == 2  # the backup it names holds the pairs


def test_importing_into_a_damaged_database_without_backups_says_so(home, saved, tmp_path, capsys):
    _damage_pages_after_the_first(saved)
    err = _import(home, _write_jsonl(tmp_path / "new.jsonl", [PAIRS[0] | {"prompt": "New"}]), capsys)
    assert f"Backups are kept in {_paths(home).backups_dir}. There is no backup in it yet." in err


def test_importing_when_the_disk_is_full_saves_nothing(saved, tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "x" * 3000, "rejected": "y" * 3000} for i in range(200)]
    with Store.open(saved) as store:
        store._conn.execute("PRAGMA max_page_count = 60")  # a tiny "disk" for this connection
        with pytest.raises(StoreError) as caught:
            import_preferences(store, _write_jsonl(tmp_path / "many.jsonl", rows))
    assert f"The disk holding the database {saved} is full; nothing was imported" in str(caught.value)
    assert "Free some space" in str(caught.value)
    assert _comparisons(saved) == 2  # the import is one transaction: nothing of it was kept


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
        assert "Wrote 2 pairs" in capsys.readouterr().out
        assert [json.loads(line) for line in target.read_text().splitlines()] == PAIRS
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert _comparisons(saved) == 2


# --------------------------------------------------------------------------------------------------
# Fuzzing: whatever the bytes, the importer answers with its own errors
# --------------------------------------------------------------------------------------------------

_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read_or_refuse(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_bytes(data)
        with contextlib.suppress(DesktopDpoError):
            read_preference_file(path)


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
