"""The one rule for every file a person names as an export target: never replace what the app keeps.

An export replaces its target (atomically, by a rename), so a target that is the database, a file the app
keeps in its data or log folder, or any SQLite file would be destroyed without a backup. Every writer of
user-chosen export files (``data export``, ``data export-trl``, the window's Export action) calls
:func:`check_export_target` before it writes, and before it changes anything in the database.

The rule:
- the app's database (and its ``-wal``/``-shm``/``-journal`` companions) is never a target;
- no existing SQLite file anywhere is replaced (read from its header bytes, whatever its name);
- inside the data folder or the log folder only a new file may be written: an existing one is the app's.
"""

from __future__ import annotations

import os
from pathlib import Path

from desktop_dpo.config import AppPaths
from desktop_dpo.core.errors import ProtectedFileError
from desktop_dpo.core.store import SQLITE_HEADER

# Files SQLite keeps next to a database while it is open (WAL mode) or in a transaction (rollback mode).
_DATABASE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def _same_file(a: Path, b: Path) -> bool:
    # samefile sees through symbolic links, hard links and letter case on case-insensitive disks.
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be reached): not the same existing file
        return False


def _is_sqlite_file(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:  # a folder, or unreadable: the write will fail on its own, with its own message
        return False


def _inside(target: Path, folder: Path) -> bool:
    """True if ``target`` lies in ``folder`` (at any depth), however either path is spelled."""
    resolved = target.resolve()
    folder_resolved = folder.resolve()
    if resolved.is_relative_to(folder_resolved):
        return True
    # A different spelling of the same folder (letter case on macOS/Windows, a bind mount): compare the
    # existing ancestors as files.
    return any(_same_file(parent, folder) for parent in resolved.parents if parent.exists())


def check_export_target(target: str | Path, *, database: Path | None, paths: AppPaths | None = None) -> None:
    """Refuse an export ``target`` that would replace something the app keeps; return if it is safe.

    Args:
        target: the file the export would write (replacing it if it exists).
        database: the open store's database file (``Store.path``); None for an in-memory store.
        paths: the app's folders; default :meth:`AppPaths.default` (which honours ``DESKTOP_DPO_HOME``).

    Raises:
        ProtectedFileError: ``target`` is the database, an existing SQLite file, or an existing file (or
            folder) inside the app's data or log folder. Nothing is read beyond 16 header bytes, nothing
            is written.
    """
    target = Path(target).expanduser().absolute()
    paths = paths or AppPaths.default()
    databases = [paths.db_path] + ([database] if database is not None else [])
    for db in databases:
        for suffix in _DATABASE_COMPANIONS:
            companion = db.with_name(db.name + suffix)
            if target.resolve() == companion.resolve() or _same_file(target, companion):
                raise ProtectedFileError(
                    f"{target} is the app's database; an export would replace it and every pick in it. "
                    "Nothing was written; choose another file name."
                )
    if not target.exists():
        return  # a new file may go anywhere, the app's folders included (for instance its exports folder)
    if _is_sqlite_file(target):
        raise ProtectedFileError(
            f"{target} is an SQLite database; an export would replace it. Nothing was written; choose "
            "another file name."
        )
    for folder, what in ((paths.data_dir, "data folder"), (paths.log_dir, "log folder")):
        if _inside(target, folder):
            raise ProtectedFileError(
                f"{target} already exists in desktop-dpo's {what} ({folder}), where an export would replace "
                f"a file the app keeps. Nothing was written; choose a new file name, or a folder outside "
                f"{folder}."
            )
