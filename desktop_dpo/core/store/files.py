"""The database file itself: the header check, backups, who else has it open, and SQLite's errors in words
a person can act on. No queries here."""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

from desktop_dpo.core.errors import DatabaseBusy, DatabaseDamaged, NotADatabaseError, StoreError

SQLITE_HEADER = b"SQLite format 3\x00"


def check_is_sqlite(path: Path) -> None:
    """Refuse a file that exists, is not empty and does not start with the SQLite header.

    Reads 16 bytes and nothing else, so a wrongly chosen file is never modified.
    """
    if not path.exists():
        return
    if path.is_dir():
        raise NotADatabaseError(f"{path} is a folder, not a database file. Choose a .sqlite file.")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"Cannot read {path}: {exc}. Check that the file is readable.") from exc
    if header and header != SQLITE_HEADER:
        raise NotADatabaseError(
            f"{path} is not a desktop-dpo database (it is not an SQLite file). It was left untouched; "
            "choose another file or a new name."
        )


def backup_database(conn: sqlite3.Connection, db_path: Path, backups_dir: Path, from_version: int) -> Path:
    """Copy the live database with SQLite's online backup (consistent even in WAL mode)."""
    backups_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = backups_dir / f"{db_path.stem}.v{from_version}.{stamp}.sqlite"
    counter = 1
    while target.exists():
        target = backups_dir / f"{db_path.stem}.v{from_version}.{stamp}-{counter}.sqlite"
        counter += 1
    dest = sqlite3.connect(str(target))
    try:
        conn.backup(dest)
    finally:
        dest.close()
    return target


def newest_backup(backups_dir: Path) -> Path | None:
    """The most recent copy in ``backups_dir`` (by modification time), or None."""
    try:
        copies = [p for p in backups_dir.glob("*.sqlite") if p.is_file()]
    except OSError:
        return None
    return max(copies, key=lambda p: p.stat().st_mtime, default=None)


def database_holders(path: Path | str, *, limit: int = 5) -> list[str]:
    """The other processes that have the database at ``path`` open (or its -wal, -shm or -journal file), as
    a person knows them: "desktop-dpo (pid 1234)", "sqlite3 (pid 99)".

    Linux only: reads the links in /proc/*/fd. Elsewhere, or when nothing can be seen (another user's
    processes), an empty list. This process is left out: its own connections are not "another program".
    At most ``limit`` names; a last entry says how many more there are.
    """
    proc = Path("/proc")
    if str(path) == ":memory:" or not (proc / "self" / "fd").is_dir():
        return []
    base = Path(path).resolve()
    targets = {str(base)} | {f"{base}{suffix}" for suffix in ("-wal", "-shm", "-journal")}
    me = os.getpid()
    found: list[str] = []
    try:
        pids = sorted(int(entry.name) for entry in os.scandir(proc) if entry.name.isdigit())
    except OSError:
        return []
    for pid in pids:
        if pid == me:
            continue
        try:
            fds = os.listdir(proc / str(pid) / "fd")
        except OSError:  # gone already, or another user's process
            continue
        for fd in fds:
            try:
                if os.readlink(proc / str(pid) / "fd" / fd) in targets:
                    found.append(f"{_process_name(pid)} (pid {pid})")
                    break
            except OSError:
                continue
    if len(found) > limit:
        return [*found[:limit], f"{len(found) - limit} more"]
    return found


def _process_name(pid: int) -> str:
    """ "desktop-dpo" for a desktop-dpo process (a window, the CLI, ``python -m desktop_dpo``), else its
    command name from /proc."""
    proc = Path("/proc") / str(pid)
    try:
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        argv = []
    words = [os.path.basename(arg.decode("utf-8", "replace")) for arg in argv[:3]]
    if any(word in ("desktop-dpo", "desktop-dpo.exe", "desktop_dpo") for word in words):
        return "desktop-dpo"
    try:
        return (proc / "comm").read_text(encoding="utf-8", errors="replace").strip() or "a program"
    except OSError:
        return "a program"


def explain_sqlite_error(
    exc: BaseException,
    path: Path | str | None,
    *,
    backups_dir: Path | None = None,
    outcome: str = "nothing was changed",
    busy_timeout_s: float = 30.0,
) -> StoreError:
    """The :class:`StoreError` a person can act on for a SQLite (or OS) error met on the database at ``path``.

    ``outcome`` says what that means for the work at hand ("nothing was imported").
    """
    text = str(exc).lower()
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "database or disk is full" in text:
        return StoreError(
            f"The disk holding the database {path} is full; {outcome} (the work is one transaction and "
            "was rolled back, so nothing is half-written). Free some space on that disk and try again."
        )
    if "database is locked" in text or "database is busy" in text or "database table is locked" in text:
        holders = database_holders(path) if path is not None else []
        if holders:
            return DatabaseBusy(
                f"Another program is writing to the database {path} and did not finish within "
                f"{busy_timeout_s:g} s; {outcome}. The database is open in {', '.join(holders)}. Wait for "
                "its work (an import, a training run) to end, or close that window or program, then try again."
            )
        return DatabaseBusy(
            f"Another desktop-dpo window or another program is writing to the database {path} and did not "
            f"finish within {busy_timeout_s:g} s; {outcome}. Wait for its work (an import, a training run) "
            "to end, or close the other window, then try again."
        )
    if "malformed" in text or "not a database" in text:
        where = backups_dir or (Path(path).parent / "backups" if path else None)
        newest = newest_backup(where) if where else None
        copy = (
            f"The newest backup is {newest} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(newest.stat().st_mtime))})."
            if newest
            else "There is no backup in it yet."
        )
        return DatabaseDamaged(
            f"The database {path} is damaged (SQLite says: {exc}); {outcome}. Backups are kept in {where}. "
            f"{copy} Quit desktop-dpo, move the damaged file aside and copy a backup in its place."
        )
    if "readonly" in text or "read-only" in text:
        return StoreError(
            f"The database {path} (or its folder) is read-only; {outcome}. Make the folder and the file "
            "writable, or copy the data folder somewhere you can write to and use --home."
        )
    return StoreError(f"The database {path} cannot be used ({exc}); {outcome}.")
