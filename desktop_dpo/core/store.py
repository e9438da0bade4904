"""The only module with SQL. A :class:`Store` wraps one SQLite connection for one thread.

Durability rules (a pick must never be lost):
- WAL journal, ``synchronous=FULL``: a committed write survives a killed process and a power cut.
- Every multi-row write happens inside ``with self.atomic():`` (one transaction, all or nothing).
- A connection belongs to the thread that opened it (sqlite3 enforces ``check_same_thread``);
  each worker opens its own :class:`Store` on the same file.
- Schema version lives in ``PRAGMA user_version``. Before a migration the file is copied to
  ``backups/``; a database from a newer version is refused; a file that is not SQLite is refused
  without being opened for writing.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from desktop_dpo.core.errors import (
    DatabaseBusy,
    DatabaseDamaged,
    NewerSchemaError,
    NotADatabaseError,
    StoreError,
)

if TYPE_CHECKING:
    # Imported on first use (Store.db, for table_counts): sqlite-utils imports pandas and numpy whenever
    # they are installed (~0.4 s here), which would otherwise delay the window at every start. Migrations
    # take the plain sqlite3 connection, so even the first start (which creates the schema) never imports it.
    import sqlite_utils

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
VERDICTS = ("a", "b", "tie", "both_bad", "skip")
RUN_STATUSES = ("pending", "running", "stopped", "failed", "completed")
EVALUATION_VOTES = ("aligned", "base", "tie", "both_bad")
# What a comparison search looks through: the prompt's messages, both responses, the rewrite and the note.
# The messages' contents, not their JSON, so that "user" or a quote mark match what a person wrote.
_SEARCHED_COLUMNS = (
    "(SELECT group_concat(json_extract(m.value, '$.content'), char(10)) FROM json_each(p.messages) m)",
    "ga.text",
    "gb.text",
    "c.edited_text",
    "c.note",
)


def _now() -> float:
    return time.time()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _loads(value: str | None, default: Any = None) -> Any:
    return default if value is None else json.loads(value)


def messages_key(messages: Sequence[dict[str, str]]) -> str:
    """Stable hash of a conversation, used to find a prompt that already exists."""
    import hashlib  # here: loading OpenSSL costs start-up ~2 ms, and the window opens without hashing

    canonical = _dumps([{"role": m["role"], "content": m["content"]} for m in messages])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


PairKey = tuple[str, str, str]
"""``(messages_key(prompt), chosen, rejected)``: what makes two preference pairs the same pair."""


def pair_key(messages: Sequence[dict[str, str]], chosen: str, rejected: str) -> PairKey:
    """The identity of a preference pair: the same prompt, the same chosen and rejected texts, exactly."""
    return messages_key(messages), chosen, rejected


# --------------------------------------------------------------------------------------------------
# Rows handed to callers: plain frozen dataclasses, safe to pass between threads in signals.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    id: int
    name: str
    path: str
    kind: str  # "hf" (folder of safetensors) or "gguf" (single file)
    fingerprint: str
    source: str  # user | hf_cache | lmstudio | ollama | aligned | demo | imported
    info: dict[str, Any]  # architecture, parameters, context length, chat template ...
    parent_model_id: int | None
    run_id: int | None
    created_at: float
    is_default: bool


@dataclass(frozen=True)
class PromptRow:
    id: int
    messages: list[dict[str, str]]
    source: str
    split: str | None  # None until a training run fixes it: "train" or "heldout"
    created_at: float

    @property
    def text(self) -> str:
        """The last user message (what a person recognises the prompt by)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return self.messages[-1]["content"] if self.messages else ""


@dataclass(frozen=True)
class GenerationRow:
    id: int
    prompt_id: int
    model_id: int | None  # unknown for imported data
    text: str
    sampling: dict[str, Any]
    seed: int | None  # unknown for imported data
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float | None
    finish_reason: str | None
    created_at: float


@dataclass(frozen=True)
class ComparisonRow:
    """A judgement of two generations of one prompt.

    ``verdict`` names a generation, not a screen side: "a" means generation A was better.
    ``a_shown_left`` records which side A appeared on, so position bias can be studied.
    """

    id: int
    prompt_id: int
    generation_a_id: int
    generation_b_id: int
    a_shown_left: bool | None  # None for imported pairs (never shown)
    verdict: str
    edited_text: str | None  # the person's rewrite of one response (the one they wanted)
    edited_side: str | None  # "a" or "b": which response was rewritten
    note: str | None
    source: str  # collect | import
    created_at: float
    deleted: bool


@dataclass(frozen=True)
class ComparisonView:
    """A comparison joined with its prompt and both texts (for the Data view and exports)."""

    comparison: ComparisonRow
    messages: list[dict[str, str]]
    text_a: str
    text_b: str
    model_a_id: int | None
    model_b_id: int | None

    @property
    def prompt_text(self) -> str:
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return ""


@dataclass(frozen=True)
class ComparisonSummary:
    """One row of the Data view's table: a comparison with short previews instead of full texts.

    Made in SQL (``Store.comparison_summaries``) so that tens of thousands of rows stay small in memory.
    """

    id: int
    created_at: float
    prompt: str  # the last user message, cut to the preview length
    turns: int  # messages in the prompt: system prompt and earlier turns included
    user_turns: int  # the person's messages in the prompt: the turn of a conversation the responses answer
    verdict: str
    edited_side: str | None  # "a" or "b" when the person rewrote that response
    chosen: str  # preview of the response DPO would prefer ("" for tie, both bad, skip)
    rejected: str  # preview of the response it would push away from ("" when none)
    source: str  # collect | import
    a_shown_left: bool | None  # None for imported pairs (never shown)
    deleted: bool
    has_note: bool

    @property
    def edited(self) -> bool:
        return self.edited_side is not None


@dataclass(frozen=True)
class RunRow:
    id: int
    name: str
    base_model_id: int | None
    reference: str  # "adapter_off" or "model:<id>"
    config: dict[str, Any]
    comparison_ids: list[int]  # the snapshot of data this run used, fixed at creation
    status: str
    step: int
    total_steps: int | None
    adapter_path: str | None
    checkpoint_dir: str | None
    error: str | None
    final_metrics: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class ExportRow:
    id: int
    run_id: int | None
    model_id: int | None
    path: str
    quantization: str
    sha256: str
    size_bytes: int
    parity: dict[str, Any]
    meta: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class ConversationRow:
    id: int
    model_id: int | None
    title: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class MessageRow:
    id: int
    conversation_id: int
    role: str
    content: str
    meta: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class EvaluationRow:
    """One blind comparison of an aligned model against its base (many votes)."""

    id: int
    name: str
    base_model_id: int | None
    aligned_model_id: int | None
    quantization: str | None  # both models ran at this quantization ("Q4_K_M"); None when unknown
    settings: dict[str, Any]  # sampling settings shared by both models (and the rule, for a rule judge)
    created_at: float


@dataclass(frozen=True)
class EvaluationVoteRow:
    """One judged prompt of an evaluation. ``vote`` names a model, never a screen side."""

    id: int
    evaluation_id: int
    prompt_id: int | None
    base_text: str
    aligned_text: str
    aligned_shown_left: bool | None  # None when nothing was shown (a rule judged)
    vote: str  # "aligned" | "base" | "tie" | "both_bad"
    judge: str  # "person" or the name of the rule that judged
    seed: int | None  # the sampler seed both answers used
    created_at: float


# --------------------------------------------------------------------------------------------------
# Schema and migrations
# --------------------------------------------------------------------------------------------------


def _migration_1(db: sqlite3.Connection) -> None:
    """The first schema: models, prompts, generations, comparisons, runs, exports, caches, chat."""
    db.execute(
        """
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            path TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL CHECK (kind IN ('hf', 'gguf')),
            fingerprint TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT 'user',
            info TEXT NOT NULL DEFAULT '{}',
            parent_model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
            run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            created_at REAL NOT NULL,
            is_default INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute(
        """
        CREATE TABLE prompts (
            id INTEGER PRIMARY KEY,
            messages TEXT NOT NULL,
            messages_key TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL DEFAULT 'user',
            split TEXT CHECK (split IN ('train', 'heldout')),
            queued INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE generations (
            id INTEGER PRIMARY KEY,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
            text TEXT NOT NULL,
            sampling TEXT NOT NULL DEFAULT '{}',
            seed INTEGER,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            seconds REAL,
            finish_reason TEXT,
            created_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE comparisons (
            id INTEGER PRIMARY KEY,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            generation_a_id INTEGER NOT NULL REFERENCES generations(id),
            generation_b_id INTEGER NOT NULL REFERENCES generations(id),
            a_shown_left INTEGER,
            verdict TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie', 'both_bad', 'skip')),
            edited_text TEXT,
            edited_side TEXT CHECK (edited_side IN ('a', 'b')),
            note TEXT,
            source TEXT NOT NULL DEFAULT 'collect',
            created_at REAL NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            deleted_at REAL
        )"""
    )
    db.execute(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            base_model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
            reference TEXT NOT NULL DEFAULT 'adapter_off',
            config TEXT NOT NULL,
            comparison_ids TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'stopped', 'failed', 'completed')),
            step INTEGER NOT NULL DEFAULT 0,
            total_steps INTEGER,
            adapter_path TEXT,
            checkpoint_dir TEXT,
            error TEXT,
            final_metrics TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        )"""
    )
    db.execute(
        """
        CREATE TABLE run_metrics (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            split TEXT NOT NULL DEFAULT 'train',
            metrics TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (run_id, step, split)
        )"""
    )
    db.execute(
        """
        CREATE TABLE exports (
            id INTEGER PRIMARY KEY,
            run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
            path TEXT NOT NULL,
            quantization TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            parity TEXT NOT NULL DEFAULT '{}',
            meta TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE reference_logps (
            key TEXT PRIMARY KEY,
            chosen_logp REAL NOT NULL,
            rejected_logp REAL NOT NULL,
            created_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
            title TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX idx_generations_prompt ON generations(prompt_id)")
    db.execute("CREATE INDEX idx_comparisons_prompt ON comparisons(prompt_id)")
    db.execute("CREATE INDEX idx_comparisons_created ON comparisons(created_at)")
    db.execute("CREATE INDEX idx_messages_conversation ON messages(conversation_id)")


def _migration_2(db: sqlite3.Connection) -> None:
    """Blind A/B evaluations of an aligned model against its base, and their votes."""
    db.execute(
        """
        CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            base_model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
            aligned_model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
            quantization TEXT,
            settings TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE evaluation_votes (
            id INTEGER PRIMARY KEY,
            evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
            prompt_id INTEGER REFERENCES prompts(id),
            base_text TEXT NOT NULL,
            aligned_text TEXT NOT NULL,
            aligned_shown_left INTEGER,
            vote TEXT NOT NULL CHECK (vote IN ('aligned', 'base', 'tie', 'both_bad')),
            judge TEXT NOT NULL,
            seed INTEGER,
            created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX idx_evaluation_votes_evaluation ON evaluation_votes(evaluation_id)")


# Each entry takes the schema from version i to i + 1. Append only; never edit a released one.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_2]
SCHEMA_VERSION = len(MIGRATIONS)


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


class Store:
    """One SQLite connection for the calling thread, with every query the app needs.

    Open one per thread: ``Store.open(path)``. ``":memory:"`` gives a private in-memory store.
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

    def _hold(self) -> Store:
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
        cls,
        path: str | Path,
        *,
        backups_dir: Path | None = None,
        migrations: Sequence[Callable[[sqlite3.Connection], None]] = MIGRATIONS,
        busy_timeout_s: float = 30.0,
        read_only: bool = False,
    ) -> Store:
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
        cls,
        db_path: Path,
        backups_dir: Path | None,
        migrations: Sequence[Callable[[sqlite3.Connection], None]],
        busy_timeout_s: float,
    ) -> Store:
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

    def __enter__(self) -> Store:
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

    def add_model(
        self,
        *,
        name: str,
        path: str,
        kind: str,
        fingerprint: str,
        source: str = "user",
        info: dict[str, Any] | None = None,
        parent_model_id: int | None = None,
        run_id: int | None = None,
    ) -> int:
        """Register a model, or update the entry with the same path. Returns its id."""
        with self.atomic():
            existing = self._conn.execute("SELECT id, info FROM models WHERE path = ?", (path,)).fetchone()
            if existing:
                # Merge: keys recorded later (a GGUF or trainable copy's path) survive a re-registration.
                merged = {**_loads(existing[1], {}), **(info or {})}
                self._conn.execute(
                    "UPDATE models SET name=?, kind=?, fingerprint=?, source=?, info=?, parent_model_id=?, "
                    "run_id=? WHERE id=?",
                    (name, kind, fingerprint, source, _dumps(merged), parent_model_id, run_id, existing[0]),
                )
                return int(existing[0])
            return self._insert(
                "models",
                {
                    "name": name,
                    "path": path,
                    "kind": kind,
                    "fingerprint": fingerprint,
                    "source": source,
                    "info": _dumps(info or {}),
                    "parent_model_id": parent_model_id,
                    "run_id": run_id,
                    "created_at": _now(),
                },
            )

    def update_model_info(self, model_id: int, **info: Any) -> None:
        """Merge keys into a model's info (e.g. the path of its GGUF or trainable copy)."""
        with self.atomic():
            row = self._conn.execute("SELECT info FROM models WHERE id=?", (model_id,)).fetchone()
            if row is None:
                raise StoreError(f"Model {model_id} is not registered.")
            merged = {**_loads(row[0], {}), **info}
            self._conn.execute("UPDATE models SET info=? WHERE id=?", (_dumps(merged), model_id))

    def set_default_model(self, model_id: int) -> None:
        """Make one model the default (the one the app opens on)."""
        with self.atomic():
            self._conn.execute("UPDATE models SET is_default = (id = ?)", (model_id,))

    def _model(self, row: dict[str, Any]) -> ModelRow:
        return ModelRow(
            id=row["id"],
            name=row["name"],
            path=row["path"],
            kind=row["kind"],
            fingerprint=row["fingerprint"],
            source=row["source"],
            info=_loads(row["info"], {}),
            parent_model_id=row["parent_model_id"],
            run_id=row["run_id"],
            created_at=row["created_at"],
            is_default=bool(row["is_default"]),
        )

    def get_model(self, model_id: int) -> ModelRow | None:
        rows = self._rows("SELECT * FROM models WHERE id=?", (model_id,))
        return self._model(rows[0]) if rows else None

    def list_models(self) -> list[ModelRow]:
        return [self._model(r) for r in self._rows("SELECT * FROM models ORDER BY is_default DESC, id")]

    def default_model(self) -> ModelRow | None:
        rows = self._rows("SELECT * FROM models ORDER BY is_default DESC, id LIMIT 1")
        return self._model(rows[0]) if rows else None

    def remove_model(self, model_id: int) -> None:
        """Forget a model (files are not touched; generations keep their text)."""
        with self.atomic():
            self._conn.execute("DELETE FROM models WHERE id=?", (model_id,))

    # ---------------------------------------------------------------- prompts

    def add_prompt(
        self, messages: Sequence[dict[str, str]], *, source: str = "user", queued: bool = False
    ) -> int:
        """Store a prompt (a list of ``{role, content}`` messages); an identical one is reused."""
        if not messages:
            raise StoreError("A prompt needs at least one message.")
        key = messages_key(messages)
        with self.atomic():
            existing = self._conn.execute("SELECT id FROM prompts WHERE messages_key=?", (key,)).fetchone()
            if existing:
                if queued:
                    self._conn.execute("UPDATE prompts SET queued=1 WHERE id=?", (existing[0],))
                return int(existing[0])
            return self._insert(
                "prompts",
                {
                    "messages": _dumps([{"role": m["role"], "content": m["content"]} for m in messages]),
                    "messages_key": key,
                    "source": source,
                    "queued": int(queued),
                    "created_at": _now(),
                },
            )

    def _prompt(self, row: dict[str, Any]) -> PromptRow:
        return PromptRow(
            id=row["id"],
            messages=_loads(row["messages"], []),
            source=row["source"],
            split=row["split"],
            created_at=row["created_at"],
        )

    def get_prompt(self, prompt_id: int) -> PromptRow | None:
        rows = self._rows("SELECT * FROM prompts WHERE id=?", (prompt_id,))
        return self._prompt(rows[0]) if rows else None

    def list_prompts(self) -> list[PromptRow]:
        return [self._prompt(r) for r in self._rows("SELECT * FROM prompts ORDER BY id")]

    def queue_prompts(
        self, prompts: Iterable[Sequence[dict[str, str]]], *, source: str = "queue"
    ) -> list[int]:
        """Add prompts to the work queue in one transaction. Returns their ids in order."""
        with self.atomic():
            return [self.add_prompt(p, source=source, queued=True) for p in prompts]

    def queued_prompts(self) -> list[PromptRow]:
        """Prompts waiting in the queue, oldest first."""
        return [self._prompt(r) for r in self._rows("SELECT * FROM prompts WHERE queued=1 ORDER BY id")]

    def dequeue_prompt(self, prompt_id: int) -> None:
        """Take a prompt off the queue (it was judged or skipped)."""
        with self.atomic():
            self._conn.execute("UPDATE prompts SET queued=0 WHERE id=?", (prompt_id,))

    def set_prompt_splits(self, splits: dict[int, str]) -> None:
        """Fix the train/held-out split of prompts. A split once made is never changed."""
        with self.atomic():
            for prompt_id, split in splits.items():
                if split not in ("train", "heldout"):
                    raise StoreError(f"Unknown split {split!r}.")
                self._conn.execute(
                    "UPDATE prompts SET split=? WHERE id=? AND split IS NULL", (split, prompt_id)
                )

    # ---------------------------------------------------------------- generations

    def add_generation(
        self,
        *,
        prompt_id: int,
        text: str,
        model_id: int | None = None,
        sampling: dict[str, Any] | None = None,
        seed: int | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        seconds: float | None = None,
        finish_reason: str | None = None,
    ) -> int:
        """Store one response. Model and seed may be unknown (imported data)."""
        with self.atomic():
            return self._insert(
                "generations",
                {
                    "prompt_id": prompt_id,
                    "model_id": model_id,
                    "text": text,
                    "sampling": _dumps(sampling or {}),
                    "seed": seed,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "seconds": seconds,
                    "finish_reason": finish_reason,
                    "created_at": _now(),
                },
            )

    def get_generation(self, generation_id: int) -> GenerationRow | None:
        rows = self._rows("SELECT * FROM generations WHERE id=?", (generation_id,))
        if not rows:
            return None
        row = rows[0]
        return GenerationRow(
            id=row["id"],
            prompt_id=row["prompt_id"],
            model_id=row["model_id"],
            text=row["text"],
            sampling=_loads(row["sampling"], {}),
            seed=row["seed"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            seconds=row["seconds"],
            finish_reason=row["finish_reason"],
            created_at=row["created_at"],
        )

    # ---------------------------------------------------------------- comparisons

    def add_comparison(
        self,
        *,
        prompt_id: int,
        generation_a_id: int,
        generation_b_id: int,
        verdict: str,
        a_shown_left: bool | None = None,
        edited_text: str | None = None,
        edited_side: str | None = None,
        note: str | None = None,
        source: str = "collect",
    ) -> int:
        """Save a judgement. Committed before returning: a crash right after cannot lose it."""
        if verdict not in VERDICTS:
            raise StoreError(f"Unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}.")
        if (edited_text is None) != (edited_side is None):
            raise StoreError("An edit needs both the edited text and the side it rewrites.")
        with self.atomic():
            return self._insert(
                "comparisons",
                {
                    "prompt_id": prompt_id,
                    "generation_a_id": generation_a_id,
                    "generation_b_id": generation_b_id,
                    "a_shown_left": None if a_shown_left is None else int(a_shown_left),
                    "verdict": verdict,
                    "edited_text": edited_text,
                    "edited_side": edited_side,
                    "note": note,
                    "source": source,
                    "created_at": _now(),
                },
            )

    def record_pair(
        self,
        *,
        messages: Sequence[dict[str, str]],
        text_a: str,
        text_b: str,
        verdict: str,
        model_a_id: int | None = None,
        model_b_id: int | None = None,
        a_shown_left: bool | None = None,
        generation_meta_a: dict[str, Any] | None = None,
        generation_meta_b: dict[str, Any] | None = None,
        edited_text: str | None = None,
        edited_side: str | None = None,
        note: str | None = None,
        source: str = "collect",
    ) -> int:
        """Prompt + two generations + the comparison, in one transaction. Returns the comparison id."""
        with self.atomic():
            prompt_id = self.add_prompt(messages, source=source)
            gen_a = self.add_generation(
                prompt_id=prompt_id, text=text_a, model_id=model_a_id, **(generation_meta_a or {})
            )
            gen_b = self.add_generation(
                prompt_id=prompt_id, text=text_b, model_id=model_b_id, **(generation_meta_b or {})
            )
            return self.add_comparison(
                prompt_id=prompt_id,
                generation_a_id=gen_a,
                generation_b_id=gen_b,
                verdict=verdict,
                a_shown_left=a_shown_left,
                edited_text=edited_text,
                edited_side=edited_side,
                note=note,
                source=source,
            )

    def _comparison(self, row: dict[str, Any]) -> ComparisonRow:
        return ComparisonRow(
            id=row["id"],
            prompt_id=row["prompt_id"],
            generation_a_id=row["generation_a_id"],
            generation_b_id=row["generation_b_id"],
            a_shown_left=None if row["a_shown_left"] is None else bool(row["a_shown_left"]),
            verdict=row["verdict"],
            edited_text=row["edited_text"],
            edited_side=row["edited_side"],
            note=row["note"],
            source=row["source"],
            created_at=row["created_at"],
            deleted=bool(row["deleted"]),
        )

    def get_comparison(self, comparison_id: int) -> ComparisonRow | None:
        rows = self._rows("SELECT * FROM comparisons WHERE id=?", (comparison_id,))
        return self._comparison(rows[0]) if rows else None

    _VIEW_SQL = """
        SELECT c.*, p.messages AS p_messages, ga.text AS text_a, gb.text AS text_b,
               ga.model_id AS model_a_id, gb.model_id AS model_b_id
        FROM comparisons c
        JOIN prompts p ON p.id = c.prompt_id
        JOIN generations ga ON ga.id = c.generation_a_id
        JOIN generations gb ON gb.id = c.generation_b_id
    """

    def _view(self, row: dict[str, Any]) -> ComparisonView:
        return ComparisonView(
            comparison=self._comparison(row),
            messages=_loads(row["p_messages"], []),
            text_a=row["text_a"],
            text_b=row["text_b"],
            model_a_id=row["model_a_id"],
            model_b_id=row["model_b_id"],
        )

    def comparison_views(
        self,
        *,
        include_deleted: bool = False,
        search: str | None = None,
        ids: Sequence[int] | None = None,
        verdicts: Sequence[str] | None = None,
    ) -> list[ComparisonView]:
        """Comparisons with prompt and texts, oldest first; optional text search and id/verdict filter."""
        clauses: list[str] = []
        params: list[Any] = []
        if not include_deleted:
            clauses.append("c.deleted = 0")
        if search:
            # Escape LIKE's wildcards: searching for "100%" or "snake_case" means those characters.
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            like = f"%{escaped}%"
            clauses.append(
                "(p.messages LIKE ? ESCAPE '\\' OR ga.text LIKE ? ESCAPE '\\' OR gb.text LIKE ? ESCAPE '\\' "
                "OR c.edited_text LIKE ? ESCAPE '\\' OR c.note LIKE ? ESCAPE '\\')"
            )
            params += [like] * 5
        if ids is not None:
            if not ids:
                return []
            clauses.append(f"c.id IN ({', '.join('?' for _ in ids)})")
            params += list(ids)
        if verdicts is not None:
            clauses.append(f"c.verdict IN ({', '.join('?' for _ in verdicts)})")
            params += list(verdicts)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return [self._view(r) for r in self._rows(self._VIEW_SQL + where + " ORDER BY c.id", params)]

    def set_comparisons_deleted(self, comparison_ids: Sequence[int], deleted: bool = True) -> None:
        """Soft delete (or restore) comparisons. Rows stay, so training runs keep their lineage."""
        with self.atomic():
            for comparison_id in comparison_ids:
                self._conn.execute(
                    "UPDATE comparisons SET deleted=?, deleted_at=? WHERE id=?",
                    (int(deleted), _now() if deleted else None, comparison_id),
                )

    def update_comparison(
        self,
        comparison_id: int,
        *,
        verdict: str | None = None,
        edited_text: str | None = None,
        edited_side: str | None = None,
        note: str | None = None,
    ) -> None:
        """Change the verdict, edit or note of a saved comparison."""
        if verdict is not None and verdict not in VERDICTS:
            raise StoreError(f"Unknown verdict {verdict!r}.")
        if edited_text is not None and edited_side not in ("a", "b"):
            # Without its side an edit cannot become a training pair (see add_comparison).
            raise StoreError("An edit needs the side it rewrites: 'a' or 'b'.")
        with self.atomic():
            if verdict is not None:
                self._conn.execute("UPDATE comparisons SET verdict=? WHERE id=?", (verdict, comparison_id))
            if edited_text is not None:
                self._conn.execute(
                    "UPDATE comparisons SET edited_text=?, edited_side=? WHERE id=?",
                    (edited_text, edited_side, comparison_id),
                )
            if note is not None:
                self._conn.execute("UPDATE comparisons SET note=? WHERE id=?", (note, comparison_id))

    def delete_comparison_for_undo(self, comparison_id: int) -> None:
        """Undo a pick just made: remove the comparison row (its generations stay for reuse)."""
        with self.atomic():
            self._conn.execute("DELETE FROM comparisons WHERE id=?", (comparison_id,))

    # Every pair training takes from a comparison, as (prompt key, chosen, rejected); the same rules as
    # desktop_dpo.core.dpo.data.pairs_from_comparisons: the verdict pair, then an edit over the response
    # it rewrites, then the edit over the other response unless the verdict named that one.
    _STORED_PAIRS_SQL = """
        WITH c AS (
            SELECT p.messages_key AS k, c.verdict, c.edited_text AS e, c.edited_side AS side,
                   ga.text AS ta, gb.text AS tb
            FROM comparisons c
            JOIN prompts p ON p.id = c.prompt_id
            JOIN generations ga ON ga.id = c.generation_a_id
            JOIN generations gb ON gb.id = c.generation_b_id
            WHERE c.deleted = 0 AND p.messages_key IN ({keys})
        )
        SELECT k, CASE verdict WHEN 'a' THEN ta ELSE tb END, CASE verdict WHEN 'a' THEN tb ELSE ta END
            FROM c WHERE verdict IN ('a', 'b')
        UNION
        SELECT k, e, CASE side WHEN 'a' THEN ta ELSE tb END
            FROM c WHERE e IS NOT NULL AND side IN ('a', 'b')
        UNION
        SELECT k, e, CASE side WHEN 'a' THEN tb ELSE ta END
            FROM c WHERE e IS NOT NULL AND side IN ('a', 'b') AND verdict != (CASE side WHEN 'a' THEN 'b' ELSE 'a' END)
    """
    _KEYS_PER_QUERY = 500  # below SQLite's oldest limit on bound parameters (999)

    def stored_pair_keys(self, prompt_keys: Iterable[str]) -> set[PairKey]:
        """The pairs already stored for these prompts (``messages_key`` values), as :func:`pair_key` values.

        Only live comparisons count: a deleted pair brought back by an import is new data again, and
        skipping it would leave the person's file unimported for no reason they can see.
        """
        keys = sorted(set(prompt_keys))
        found: set[PairKey] = set()
        for start in range(0, len(keys), self._KEYS_PER_QUERY):
            chunk = keys[start : start + self._KEYS_PER_QUERY]
            sql = self._STORED_PAIRS_SQL.format(keys=", ".join("?" for _ in chunk))
            found.update((k, chosen, rejected) for k, chosen, rejected in self._conn.execute(sql, chunk))
        return found

    def count_usable_pairs(self) -> int:
        """Comparisons that give DPO a chosen and a rejected response (a/b verdicts or edits)."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM comparisons WHERE deleted=0 AND (verdict IN ('a','b') OR edited_text IS NOT NULL)"
        ).fetchone()
        return int(row[0])

    def count_comparisons(self, *, include_deleted: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM comparisons" + ("" if include_deleted else " WHERE deleted=0")
        return int(self._conn.execute(sql).fetchone()[0])

    def change_stamp(self) -> tuple[int, int]:
        """A value that differs after any committed write, by this connection or another one.

        Lets a view skip re-reading tens of thousands of rows when nothing changed since it last looked:
        ``PRAGMA data_version`` moves when another connection commits, ``total_changes`` when this one
        writes.
        """
        version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        return version, self._conn.total_changes

    # The last user message of a prompt, found in SQL so that a summary never loads whole conversations.
    _LAST_USER_SQL = """(SELECT json_extract(m.value, '$.content') FROM json_each(p.messages) m
                        WHERE json_extract(m.value, '$.role') = 'user' ORDER BY m.key DESC LIMIT 1)"""
    _USER_TURNS_SQL = """(SELECT COUNT(*) FROM json_each(p.messages) m
                         WHERE json_extract(m.value, '$.role') = 'user')"""

    def comparison_summaries(
        self,
        *,
        include_deleted: bool = False,
        search: str | None = None,
        verdicts: Sequence[str] | None = None,
        edited: bool | None = None,
        usable: bool | None = None,
        ids: Sequence[int] | None = None,
        preview_chars: int = 240,
    ) -> list[ComparisonSummary]:
        """Comparisons for a table, oldest first, with previews of at most ``preview_chars`` characters.

        Filters combine with AND: ``search`` (prompt, both texts, the edit and the note; LIKE wildcards in
        it are taken literally), ``verdicts``, ``edited`` (has a rewrite or not), ``usable`` (gives DPO a
        pair: verdict A or B, or an edit; as :meth:`count_usable_pairs` counts) and ``ids``.
        Chosen and rejected follow training: an edit is chosen over the response it rewrites; otherwise
        the response the verdict names is chosen over the other.
        """
        if preview_chars < 1:
            raise ValueError(f"preview_chars must be at least 1, got {preview_chars}")
        clauses: list[str] = []
        params: list[Any] = [preview_chars] * 3
        if not include_deleted:
            clauses.append("c.deleted = 0")
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(
                "(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in _SEARCHED_COLUMNS) + ")"
            )
            params += [f"%{escaped}%"] * len(_SEARCHED_COLUMNS)
        if verdicts is not None:
            if not verdicts:
                return []
            clauses.append(f"c.verdict IN ({', '.join('?' for _ in verdicts)})")
            params += list(verdicts)
        if edited is not None:
            clauses.append("c.edited_text IS NOT NULL" if edited else "c.edited_text IS NULL")
        if usable is not None:
            test = "(c.verdict IN ('a', 'b') OR c.edited_text IS NOT NULL)"
            clauses.append(test if usable else f"NOT {test}")
        if ids is not None:
            if not ids:
                return []
            clauses.append(f"c.id IN ({', '.join('?' for _ in ids)})")
            params += list(ids)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"""
            SELECT c.id, c.created_at, c.verdict, c.edited_side, c.source, c.a_shown_left, c.deleted,
                   COALESCE(c.note, '') != '' AS has_note,
                   json_array_length(p.messages) AS turns,
                   {self._USER_TURNS_SQL} AS user_turns,
                   substr(COALESCE({self._LAST_USER_SQL}, ''), 1, ?) AS prompt,
                   substr(COALESCE(CASE WHEN c.edited_text IS NOT NULL THEN c.edited_text
                                        WHEN c.verdict = 'a' THEN ga.text
                                        WHEN c.verdict = 'b' THEN gb.text END, ''), 1, ?) AS chosen,
                   substr(COALESCE(CASE WHEN c.edited_text IS NOT NULL
                                            THEN (CASE c.edited_side WHEN 'a' THEN ga.text ELSE gb.text END)
                                        WHEN c.verdict = 'a' THEN gb.text
                                        WHEN c.verdict = 'b' THEN ga.text END, ''), 1, ?) AS rejected
            FROM comparisons c
            JOIN prompts p ON p.id = c.prompt_id
            JOIN generations ga ON ga.id = c.generation_a_id
            JOIN generations gb ON gb.id = c.generation_b_id
            {where}
            ORDER BY c.id
        """
        # Tuples, not _rows' dicts: this may be tens of thousands of rows, read on the GUI thread.
        return [
            ComparisonSummary(
                id=row[0],
                created_at=row[1],
                verdict=row[2],
                edited_side=row[3],
                source=row[4],
                a_shown_left=None if row[5] is None else bool(row[5]),
                deleted=bool(row[6]),
                has_note=bool(row[7]),
                turns=int(row[8] or 0),
                user_turns=int(row[9] or 0),
                prompt=row[10],
                chosen=row[11],
                rejected=row[12],
            )
            for row in self._conn.execute(sql, params).fetchall()
        ]

    # ---------------------------------------------------------------- training runs

    def create_run(
        self,
        *,
        name: str,
        base_model_id: int | None,
        config: dict[str, Any],
        comparison_ids: Sequence[int],
        reference: str = "adapter_off",
        checkpoint_dir: str | None = None,
    ) -> int:
        """Create a run with its data snapshot fixed now (later picks do not change it)."""
        with self.atomic():
            return self._insert(
                "runs",
                {
                    "name": name,
                    "base_model_id": base_model_id,
                    "reference": reference,
                    "config": _dumps(config),
                    "comparison_ids": _dumps(sorted(int(i) for i in comparison_ids)),
                    "checkpoint_dir": checkpoint_dir,
                    "created_at": _now(),
                },
            )

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Update status, step, paths, error, metrics or times of a run."""
        allowed = {
            "status", "step", "total_steps", "adapter_path", "checkpoint_dir", "error",
            "final_metrics", "started_at", "finished_at", "name", "config",
        }  # fmt: skip
        unknown = set(fields) - allowed
        if unknown:
            raise StoreError(f"Unknown run fields: {sorted(unknown)}")
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise StoreError(f"Unknown run status {fields['status']!r}.")
        for key in ("final_metrics", "config"):
            if key in fields:
                fields[key] = _dumps(fields[key])
        if not fields:
            return
        with self.atomic():
            self._conn.execute(
                f"UPDATE runs SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?",
                (*fields.values(), run_id),
            )

    def _run(self, row: dict[str, Any]) -> RunRow:
        return RunRow(
            id=row["id"],
            name=row["name"],
            base_model_id=row["base_model_id"],
            reference=row["reference"],
            config=_loads(row["config"], {}),
            comparison_ids=_loads(row["comparison_ids"], []),
            status=row["status"],
            step=row["step"],
            total_steps=row["total_steps"],
            adapter_path=row["adapter_path"],
            checkpoint_dir=row["checkpoint_dir"],
            error=row["error"],
            final_metrics=_loads(row["final_metrics"], {}),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    def get_run(self, run_id: int) -> RunRow | None:
        rows = self._rows("SELECT * FROM runs WHERE id=?", (run_id,))
        return self._run(rows[0]) if rows else None

    def list_runs(self) -> list[RunRow]:
        return [self._run(r) for r in self._rows("SELECT * FROM runs ORDER BY id DESC")]

    def add_run_metrics(self, run_id: int, step: int, metrics: dict[str, Any], split: str = "train") -> None:
        """Store the metrics of one step (replacing a value written before a resume)."""
        with self.atomic():
            self._conn.execute(
                "INSERT OR REPLACE INTO run_metrics (run_id, step, split, metrics, created_at) VALUES (?,?,?,?,?)",
                (run_id, step, split, _dumps(metrics), _now()),
            )

    def run_metrics(self, run_id: int, split: str = "train") -> list[tuple[int, dict[str, Any]]]:
        """``(step, metrics)`` of a run, in step order."""
        rows = self._conn.execute(
            "SELECT step, metrics FROM run_metrics WHERE run_id=? AND split=? ORDER BY step", (run_id, split)
        ).fetchall()
        return [(int(step), _loads(metrics, {})) for step, metrics in rows]

    # ---------------------------------------------------------------- exports

    def add_export(
        self,
        *,
        path: str,
        quantization: str,
        sha256: str,
        size_bytes: int,
        run_id: int | None = None,
        model_id: int | None = None,
        parity: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Record a finished export file."""
        with self.atomic():
            return self._insert(
                "exports",
                {
                    "run_id": run_id,
                    "model_id": model_id,
                    "path": path,
                    "quantization": quantization,
                    "sha256": sha256,
                    "size_bytes": size_bytes,
                    "parity": _dumps(parity or {}),
                    "meta": _dumps(meta or {}),
                    "created_at": _now(),
                },
            )

    def list_exports(self, run_id: int | None = None) -> list[ExportRow]:
        sql = "SELECT * FROM exports" + (" WHERE run_id=?" if run_id is not None else "") + " ORDER BY id"
        params = (run_id,) if run_id is not None else ()
        return [
            ExportRow(
                id=r["id"],
                run_id=r["run_id"],
                model_id=r["model_id"],
                path=r["path"],
                quantization=r["quantization"],
                sha256=r["sha256"],
                size_bytes=r["size_bytes"],
                parity=_loads(r["parity"], {}),
                meta=_loads(r["meta"], {}),
                created_at=r["created_at"],
            )
            for r in self._rows(sql, params)
        ]

    # ---------------------------------------------------------------- reference log-prob cache

    def get_reference_logps(self, keys: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Cached ``(chosen_logp, rejected_logp)`` for the keys that have one."""
        found: dict[str, tuple[float, float]] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            rows = self._conn.execute(
                f"SELECT key, chosen_logp, rejected_logp FROM reference_logps WHERE key IN ({', '.join('?' for _ in chunk)})",
                chunk,
            ).fetchall()
            found.update({k: (float(c), float(r)) for k, c, r in rows})
        return found

    def put_reference_logps(self, values: dict[str, tuple[float, float]]) -> None:
        """Cache reference log-probs, all in one transaction."""
        now = _now()
        with self.atomic():
            self._conn.executemany(
                "INSERT OR REPLACE INTO reference_logps (key, chosen_logp, rejected_logp, created_at) VALUES (?,?,?,?)",
                [(k, float(c), float(r), now) for k, (c, r) in values.items()],
            )

    # ---------------------------------------------------------------- chat

    def create_conversation(self, model_id: int | None, title: str = "") -> int:
        now = _now()
        with self.atomic():
            return self._insert(
                "conversations", {"model_id": model_id, "title": title, "created_at": now, "updated_at": now}
            )

    def add_message(
        self, conversation_id: int, role: str, content: str, meta: dict[str, Any] | None = None
    ) -> int:
        """Append a message to a conversation."""
        now = _now()
        with self.atomic():
            message_id = self._insert(
                "messages",
                {
                    "conversation_id": conversation_id,
                    "role": role,
                    "content": content,
                    "meta": _dumps(meta or {}),
                    "created_at": now,
                },
            )
            self._conn.execute("UPDATE conversations SET updated_at=? WHERE id=?", (now, conversation_id))
            return message_id

    def delete_message(self, message_id: int) -> None:
        """Remove one message (regenerate replaces the last answer)."""
        with self.atomic():
            self._conn.execute("DELETE FROM messages WHERE id=?", (message_id,))

    @staticmethod
    def _conversation(row: dict[str, Any]) -> ConversationRow:
        return ConversationRow(row["id"], row["model_id"], row["title"], row["created_at"], row["updated_at"])

    def list_conversations(self) -> list[ConversationRow]:
        """Every conversation, the one written to last first (ties: the newer one first)."""
        return [
            self._conversation(r)
            for r in self._rows("SELECT * FROM conversations ORDER BY updated_at DESC, id DESC")
        ]

    def get_conversation(self, conversation_id: int) -> ConversationRow | None:
        """One conversation, or None when there is none with that id."""
        rows = self._rows("SELECT * FROM conversations WHERE id=?", (conversation_id,))
        return self._conversation(rows[0]) if rows else None

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        """Change a conversation's title (its place in the list stays: renaming is not a new message)."""
        with self.atomic():
            self._conn.execute("UPDATE conversations SET title=? WHERE id=?", (title, conversation_id))

    def set_conversation_model(self, conversation_id: int, model_id: int | None) -> None:
        """The model a conversation talks to (opened with it next time)."""
        with self.atomic():
            self._conn.execute("UPDATE conversations SET model_id=? WHERE id=?", (model_id, conversation_id))

    def delete_conversation(self, conversation_id: int) -> None:
        """Remove a conversation and all its messages."""
        with self.atomic():
            # Explicitly, not only by ON DELETE CASCADE: a connection opened without foreign keys keeps none.
            self._conn.execute("DELETE FROM messages WHERE conversation_id=?", (conversation_id,))
            self._conn.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))

    def set_system_prompt(self, conversation_id: int, text: str) -> None:
        """Make ``text`` the conversation's system prompt ("" removes it). It is listed first whenever it
        was written (see :meth:`conversation_messages`)."""
        with self.atomic():
            rows = self._conn.execute(
                "SELECT id FROM messages WHERE conversation_id=? AND role='system' ORDER BY id",
                (conversation_id,),
            ).fetchall()
            if not text:
                self._conn.execute(
                    "DELETE FROM messages WHERE conversation_id=? AND role='system'", (conversation_id,)
                )
            elif rows:
                self._conn.execute("UPDATE messages SET content=? WHERE id=?", (text, rows[0][0]))
                for (extra,) in rows[1:]:  # one system prompt per conversation
                    self._conn.execute("DELETE FROM messages WHERE id=?", (extra,))
            else:
                self.add_message(conversation_id, "system", text)

    def update_message_meta(self, message_id: int, meta: dict[str, Any]) -> None:
        """Replace the meta of a message (seed, settings, tokens ... of an answer)."""
        with self.atomic():
            self._conn.execute("UPDATE messages SET meta=? WHERE id=?", (_dumps(meta), message_id))

    def conversation_messages(self, conversation_id: int) -> list[MessageRow]:
        """A conversation's messages in order: the system prompt first, then the turns as written."""
        return [
            MessageRow(
                r["id"], r["conversation_id"], r["role"], r["content"], _loads(r["meta"], {}), r["created_at"]
            )
            for r in self._rows(
                "SELECT * FROM messages WHERE conversation_id=? "
                "ORDER BY CASE role WHEN 'system' THEN 0 ELSE 1 END, id",
                (conversation_id,),
            )
        ]

    # ---------------------------------------------------------------- evaluations

    def create_evaluation(
        self,
        *,
        name: str,
        base_model_id: int | None,
        aligned_model_id: int | None,
        quantization: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> int:
        """Start an evaluation of ``aligned_model_id`` against ``base_model_id``. Returns its id."""
        with self.atomic():
            return self._insert(
                "evaluations",
                {
                    "name": name,
                    "base_model_id": base_model_id,
                    "aligned_model_id": aligned_model_id,
                    "quantization": quantization,
                    "settings": _dumps(settings or {}),
                    "created_at": _now(),
                },
            )

    @staticmethod
    def _evaluation(row: dict[str, Any]) -> EvaluationRow:
        return EvaluationRow(
            id=row["id"],
            name=row["name"],
            base_model_id=row["base_model_id"],
            aligned_model_id=row["aligned_model_id"],
            quantization=row["quantization"],
            settings=_loads(row["settings"], {}),
            created_at=row["created_at"],
        )

    def get_evaluation(self, evaluation_id: int) -> EvaluationRow | None:
        """One evaluation, or None when there is none with that id."""
        rows = self._rows("SELECT * FROM evaluations WHERE id=?", (evaluation_id,))
        return self._evaluation(rows[0]) if rows else None

    def list_evaluations(
        self, *, base_model_id: int | None = None, aligned_model_id: int | None = None
    ) -> list[EvaluationRow]:
        """Evaluations, the newest first; optionally only those of one base and/or aligned model."""
        clauses: list[str] = []
        params: list[Any] = []
        if base_model_id is not None:
            clauses.append("base_model_id=?")
            params.append(base_model_id)
        if aligned_model_id is not None:
            clauses.append("aligned_model_id=?")
            params.append(aligned_model_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return [
            self._evaluation(r)
            for r in self._rows(f"SELECT * FROM evaluations{where} ORDER BY id DESC", params)
        ]

    def add_evaluation_vote(
        self,
        evaluation_id: int,
        *,
        prompt_id: int | None,
        base_text: str,
        aligned_text: str,
        vote: str,
        judge: str = "person",
        aligned_shown_left: bool | None = None,
        seed: int | None = None,
    ) -> int:
        """Save one vote ("aligned", "base", "tie" or "both_bad"), committed before returning."""
        if vote not in EVALUATION_VOTES:
            raise StoreError(f"Unknown vote {vote!r}; expected one of {', '.join(EVALUATION_VOTES)}.")
        if not judge:
            raise StoreError("A vote needs its judge: 'person' or the name of a rule.")
        with self.atomic():
            if (
                self._conn.execute("SELECT 1 FROM evaluations WHERE id=?", (evaluation_id,)).fetchone()
                is None
            ):
                raise StoreError(f"Evaluation {evaluation_id} does not exist; start an evaluation first.")
            return self._insert(
                "evaluation_votes",
                {
                    "evaluation_id": evaluation_id,
                    "prompt_id": prompt_id,
                    "base_text": base_text,
                    "aligned_text": aligned_text,
                    "aligned_shown_left": None if aligned_shown_left is None else int(aligned_shown_left),
                    "vote": vote,
                    "judge": judge,
                    "seed": seed,
                    "created_at": _now(),
                },
            )

    def evaluation_votes(self, evaluation_id: int) -> list[EvaluationVoteRow]:
        """The votes of an evaluation, in the order they were given."""
        return [
            EvaluationVoteRow(
                id=r["id"],
                evaluation_id=r["evaluation_id"],
                prompt_id=r["prompt_id"],
                base_text=r["base_text"],
                aligned_text=r["aligned_text"],
                aligned_shown_left=None if r["aligned_shown_left"] is None else bool(r["aligned_shown_left"]),
                vote=r["vote"],
                judge=r["judge"],
                seed=r["seed"],
                created_at=r["created_at"],
            )
            for r in self._rows(
                "SELECT * FROM evaluation_votes WHERE evaluation_id=? ORDER BY id", (evaluation_id,)
            )
        ]

    def evaluation_vote_counts(self, evaluation_id: int) -> dict[str, int]:
        """How many votes of each kind an evaluation has: every one of ``EVALUATION_VOTES``, 0 included.

        Counts only: ``core.evaluate.evaluation_summary`` turns them into a summary with its interval (the
        store builds no domain types; an import-linter contract keeps it below them).
        """
        counts = dict.fromkeys(EVALUATION_VOTES, 0)
        for vote, count in self._conn.execute(
            "SELECT vote, COUNT(*) FROM evaluation_votes WHERE evaluation_id=? GROUP BY vote",
            (evaluation_id,),
        ).fetchall():
            counts[vote] = int(count)
        return counts

    # ---------------------------------------------------------------- storage (clean-up of files on disk)

    def remove_model_info_keys(self, model_id: int, *keys: str) -> None:
        """Drop keys from a model's info (e.g. the path of a GGUF copy that was deleted: it is re-made)."""
        with self.atomic():
            row = self._conn.execute("SELECT info FROM models WHERE id=?", (model_id,)).fetchone()
            if row is None:
                return
            info = {k: v for k, v in _loads(row[0], {}).items() if k not in keys}
            self._conn.execute("UPDATE models SET info=? WHERE id=?", (_dumps(info), model_id))

    def delete_exports(self, export_ids: Sequence[int]) -> None:
        """Forget export rows whose files were deleted."""
        if not export_ids:
            return
        with self.atomic():
            self._conn.executemany("DELETE FROM exports WHERE id=?", [(int(i),) for i in export_ids])
