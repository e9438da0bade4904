"""The only package with SQL. A :class:`Store` wraps one SQLite connection for one thread.

Durability rules (a pick must never be lost):
- WAL journal, ``synchronous=FULL``: a committed write survives a killed process and a power cut.
- Every multi-row write happens inside ``with self.atomic():`` (one transaction, all or nothing).
- A connection belongs to the thread that opened it (sqlite3 enforces ``check_same_thread``);
  each worker opens its own :class:`Store` on the same file.
- Schema version lives in ``PRAGMA user_version``. Before a migration the file is copied to
  ``backups/``; a database from a newer version is refused; a file that is not SQLite is refused
  without being opened for writing.

One module per job:
- ``connection.py``: opening, closing, pragmas, migrating, ``atomic()`` (:class:`StoreConnection`);
- ``files.py``: the database file itself: header check, backups, who holds it, errors in words;
- ``schema.py``: the migrations (``MIGRATIONS``);
- ``rows.py``: the row dataclasses handed to callers, the allowed values, the pair key;
- the queries, one mixin per table group, combined into :class:`Store` here: ``models.py``, ``pairs.py``
  (prompts, generations, comparisons), ``runs.py`` (runs, metrics, reference log-probs), ``exports.py``,
  ``chat.py``, ``reply_labels.py`` (thumbs on chat replies), ``evaluations.py``, ``cleanup.py`` (what the clean-up of files on disk changes).

This ``__init__`` is the package's public face: import from ``desktop_dpo.core.store``.
"""

from __future__ import annotations

from desktop_dpo.core.store.chat import ChatQueries
from desktop_dpo.core.store.cleanup import CleanupQueries
from desktop_dpo.core.store.connection import StoreConnection
from desktop_dpo.core.store.evaluations import EvaluationQueries
from desktop_dpo.core.store.exports import ExportQueries
from desktop_dpo.core.store.files import (
    SQLITE_HEADER,
    backup_database,
    check_is_sqlite,
    database_holders,
    explain_sqlite_error,
    newest_backup,
)
from desktop_dpo.core.store.models import ModelQueries
from desktop_dpo.core.store.pairs import PairQueries
from desktop_dpo.core.store.reply_labels import ReplyLabelQueries
from desktop_dpo.core.store.rows import (
    EVALUATION_VOTES,
    RUN_STATUSES,
    VERDICTS,
    ComparisonRow,
    ComparisonSummary,
    ComparisonView,
    ConversationRow,
    EvaluationRow,
    EvaluationVoteRow,
    ExportRow,
    GenerationRow,
    MessageRow,
    ModelRow,
    PairKey,
    PromptRow,
    ReplyLabelRow,
    RunRow,
    messages_key,
    pair_key,
)
from desktop_dpo.core.store.runs import RunQueries
from desktop_dpo.core.store.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "EVALUATION_VOTES",
    "MIGRATIONS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "SQLITE_HEADER",
    "VERDICTS",
    "ComparisonRow",
    "ComparisonSummary",
    "ComparisonView",
    "ConversationRow",
    "EvaluationRow",
    "EvaluationVoteRow",
    "ExportRow",
    "GenerationRow",
    "MessageRow",
    "ModelRow",
    "PairKey",
    "PromptRow",
    "ReplyLabelRow",
    "RunRow",
    "Store",
    "StoreConnection",
    "backup_database",
    "check_is_sqlite",
    "database_holders",
    "explain_sqlite_error",
    "messages_key",
    "newest_backup",
    "pair_key",
]


class Store(
    ModelQueries,
    PairQueries,
    RunQueries,
    ExportQueries,
    ChatQueries,
    EvaluationQueries,
    CleanupQueries,
    ReplyLabelQueries,
    StoreConnection,
):
    """One SQLite connection for the calling thread, with every query the app needs.

    Open one per thread: ``Store.open(path)``. ``":memory:"`` gives a private in-memory store.
    """
