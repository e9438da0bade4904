"""The open/close/durability core of the :class:`~desktop_dpo.core.store.Store`: one SQLite connection for
the calling thread, its pragmas, migrations, transactions and error messages. The queries live in the
mixins beside this module (``models.py``, ``pairs.py`` ...), which the ``Store`` class combines.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import logging
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from desktop_dpo.core.errors import NewerSchemaError, NotADatabaseError, StoreError
from desktop_dpo.core.store.files import backup_database, check_is_sqlite, explain_sqlite_error
from desktop_dpo.core.store.schema import MIGRATIONS

if TYPE_CHECKING:
    # Imported on first use (Store.db, for table_counts): sqlite-utils imports pandas and numpy whenever
    # they are installed (~0.4 s here), which would otherwise delay the window at every start. Migrations
    # take the plain sqlite3 connection, so even the first start (which creates the schema) never imports it.
    import sqlite_utils


log = logging.getLogger(__name__)

_S = TypeVar("_S", bound="StoreConnection")


class StoreConnection:
    """One SQLite connection for the calling thread: opening (creating or migrating), closing, ``atomic()``.

    The base of :class:`~desktop_dpo.core.store.Store`; open one per thread with ``Store.open(path)``.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path | None,
        migrations: Sequence[Callable[[sqlite3.Connection], None]] = MIGRATIONS,
    ):
        self._conn = conn
        self.path = path
        self._thread = threading.get_ident()
        self._migrations = list(migrations)
        self.last_backup: Path | None = None
        self._savepoints = 0  # a counter, so nested atomic() blocks get distinct savepoint names
        self.backups_dir: Path | None = None  # named in the message for a damaged database
        self.busy_timeout_s = 30.0  # how long a write waits for another connection
        self.read_only = False  # opened with Store.open(read_only=True)
        self._held: Path | None = None  # the file counted in _files_in_use until close()

    # The database files this process has connections to, with how many. SQLite's locks on a file are POSIX
    # locks, which belong to the process: closing *any* descriptor of the file drops all of them, those of
    # every other connection included. Another process (the training child) then takes the file for
    # unused, and this process's connections read a WAL index rebuilt under them (SQLITE_IOERR_SHORT_READ,
    # "disk I/O error"; measured with a worker store opened while a training child wrote). So the header
    # check below, which opens and closes the file, runs only when no connection here has it open yet.
    _files_in_use: ClassVar[collections.Counter[Path]] = collections.Counter()
    _files_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def _check_file(cls, db_path: Path) -> None:
        """``check_is_sqlite``, unless a connection of this process has the file open (it was checked then)."""
        with cls._files_lock:
            in_use = cls._files_in_use[db_path.resolve()] > 0
        if not in_use:
            check_is_sqlite(db_path)

    def _hold(self: _S) -> _S:
        if self.path is not None:
            self._held = self.path.resolve()
            with self._files_lock:
                self._files_in_use[self._held] += 1
        return self

    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils' view of this connection (table counts), made on first use."""
        import sqlite_utils

        return sqlite_utils.Database(self._conn)

    # ---------------------------------------------------------------- opening, closing, schema

    @classmethod
    def open(
        cls: type[_S],
        path: str | Path,
        *,
        backups_dir: Path | None = None,
        migrations: Sequence[Callable[[sqlite3.Connection], None]] = MIGRATIONS,
        busy_timeout_s: float = 30.0,
        read_only: bool = False,
    ) -> _S:
        """Open (creating or migrating) the database at ``path`` for the calling thread.

        Raises :class:`NotADatabaseError` for a file that is not SQLite (left untouched) and
        :class:`NewerSchemaError` for a database made by a newer desktop-dpo. ``busy_timeout_s`` is how
        long a write waits for another connection's transaction before :class:`DatabaseBusy`.
        ``read_only`` opens an existing, current database for reading only (export from a read-only
        folder or file): nothing is created, migrated or written, and writes fail.
        """
        memory = str(path) == ":memory:"
        db_path = None if memory else Path(path)
        backups = backups_dir or (db_path.parent / "backups" if db_path else None)
        if read_only:
            if db_path is None or not db_path.is_file():
                raise StoreError(f"There is no database at {path} to read.")
            cls._check_file(db_path)
            return cls._open_read_only(db_path, backups, migrations, busy_timeout_s)._hold()
        if db_path is not None:
            cls._check_file(db_path)
            try:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"Cannot create the folder for the database {db_path}: {exc}") from exc
        try:
            conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the database {path}: {exc}") from exc
        store = cls(conn, db_path, migrations)
        store.backups_dir = backups
        store.busy_timeout_s = busy_timeout_s
        try:
            store._configure()
            store._migrate(backups)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "not a database" in str(exc):
                raise NotADatabaseError(
                    f"{path} is damaged or not a desktop-dpo database ({exc}). It was left untouched. "
                    "Restore a copy from the backups folder or choose another file."
                ) from exc
            if "unable to open database file" in str(exc) and db_path is not None:
                raise StoreError(
                    f"Cannot open the database {path} for writing: the file or its folder "
                    f"{db_path.parent} is read-only (SQLite says: {exc}). Make them writable, or copy the "
                    "data folder somewhere you can write to and use --home."
                ) from exc
            raise store.explain(exc, "it was not opened and nothing was changed") from exc
        except Exception:
            conn.close()
            raise
        return store._hold()

    @classmethod
    def _open_read_only(
        cls: type[_S],
        db_path: Path,
        backups_dir: Path | None,
        migrations: Sequence[Callable[[sqlite3.Connection], None]],
        busy_timeout_s: float,
    ) -> _S:
        uri = "file:" + urllib.parse.quote(str(db_path.resolve()))
        last: sqlite3.Error | None = None
        # mode=ro needs the WAL's -shm file, or a folder it may create it in; in a read-only folder without
        # one, no writer can be at work (it would have made one), so the file is read as immutable.
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                conn = sqlite3.connect(uri + query, uri=True, timeout=busy_timeout_s, isolation_level=None)
            except sqlite3.Error as exc:
                last = exc
                continue
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            except sqlite3.Error as exc:
                conn.close()
                last = exc
                continue
            if version != len(migrations):
                conn.close()
                newer = version > len(migrations)
                raise (NewerSchemaError if newer else StoreError)(
                    f"The database {db_path} is read-only and at schema {version}; this desktop-dpo "
                    f"reads schema {len(migrations)}. "
                    + (
                        "Update desktop-dpo to read it."
                        if newer
                        else "Open it once where it can be written, so desktop-dpo can upgrade it."
                    )
                )
            store = cls(conn, db_path, migrations)
            store.backups_dir = backups_dir
            store.busy_timeout_s = busy_timeout_s
            store.read_only = True
            return store
        raise explain_sqlite_error(
            last or sqlite3.OperationalError("unable to open database file"),
            db_path,
            backups_dir=backups_dir,
            outcome="it cannot be read either",
            busy_timeout_s=busy_timeout_s,
        )

    def explain(self, exc: BaseException, outcome: str = "nothing was changed") -> StoreError:
        """:func:`explain_sqlite_error` for this store's file, backups folder and wait."""
        return explain_sqlite_error(
            exc, self.path, backups_dir=self.backups_dir, outcome=outcome, busy_timeout_s=self.busy_timeout_s
        )

    @contextlib.contextmanager
    def explained_errors(self, outcome: str = "nothing was changed") -> Iterator[None]:
        """Turn a SQLite error (locked, damaged, disk full) inside the block into a :class:`StoreError`
        whose message says what happened and what the person can do; ``outcome`` says what it meant."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self.explain(exc, outcome) from exc
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise self.explain(exc, outcome) from exc

    def _configure(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(self._migrations):
            raise NewerSchemaError(
                f"This database was made by a newer version of desktop-dpo (schema {version}; this "
                f"version understands up to {len(self._migrations)}). Update desktop-dpo to open it; "
                "the file was not changed."
            )
        if self.path is not None:
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # FULL: a committed pick survives a power cut, not only a killed process.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")

    def _migrate(self, backups_dir: Path | None) -> None:
        version = self.schema_version
        target = len(self._migrations)
        if version == target:
            return
        if version > 0 and self.path is not None and backups_dir is not None:
            self.last_backup = backup_database(self._conn, self.path, backups_dir, version)
            log.info(
                "Backed up the database to %s before migrating %d -> %d", self.last_backup, version, target
            )
        try:
            # All pending migrations in one transaction: a failure leaves the file at its old version,
            # never at an intermediate one that no released desktop-dpo produced.
            with self.atomic():
                for index in range(version, target):
                    self._migrations[index](self._conn)
                    # PRAGMA user_version is transactional: it commits or rolls back with the migration.
                    self._conn.execute(f"PRAGMA user_version = {index + 1}")
        except Exception as exc:
            if version == 0:
                raise
            copy = f" A copy taken before the upgrade is at {self.last_backup}." if self.last_backup else ""
            raise StoreError(
                f"Upgrading the database from schema {version} to {target} failed ({exc}). It was left "
                f"unchanged at schema {version}.{copy}"
            ) from exc

    @property
    def schema_version(self) -> int:
        """``PRAGMA user_version``: the number of migrations applied."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection (checkpointing the WAL when this is the last one)."""
        self._conn.close()
        if self._held is not None:
            with self._files_lock:
                self._files_in_use[self._held] -= 1
                if self._files_in_use[self._held] <= 0:
                    del self._files_in_use[self._held]
            self._held = None

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction: everything inside commits together or not at all. Nests (savepoints)."""
        if self._conn.in_transaction:
            self._savepoints += 1
            name = f"sp_{self._savepoints}"
            self._conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                # Some errors (disk full, I/O) end the whole transaction: then there is nothing to roll
                # back, and trying would hide the original error behind "no such savepoint".
                if self._conn.in_transaction:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                raise
            else:
                self._conn.execute(f"RELEASE {name}")
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        else:
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT can leave the transaction open; close it so the connection stays usable.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        cursor = self._conn.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
            tuple(row.values()),
        )
        return int(cursor.lastrowid)

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._conn.execute(sql, tuple(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]

    def table_counts(self) -> dict[str, int]:
        """Rows per table (for the status bar and tests)."""
        return {name: self.db[name].count for name in self.db.table_names()}

    # ---------------------------------------------------------------- models
