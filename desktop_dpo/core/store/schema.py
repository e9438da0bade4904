"""The schema, as migrations: each takes the database from version i to i + 1 (``PRAGMA user_version``).

Append only; never edit a released one. Each takes the plain ``sqlite3.Connection`` (not sqlite-utils, which
imports pandas), so even the first start, which creates the schema, stays quick.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _migration_1(db: sqlite3.Connection) -> None:
    """The first schema: models, prompts, generations, comparisons, runs, exports, caches, chat."""
    _create_model_table(db)
    _create_pair_tables(db)
    _create_run_tables(db)
    _create_export_table(db)
    _create_reference_cache(db)
    _create_chat_tables(db)
    db.execute("CREATE INDEX idx_generations_prompt ON generations(prompt_id)")
    db.execute("CREATE INDEX idx_comparisons_prompt ON comparisons(prompt_id)")
    db.execute("CREATE INDEX idx_comparisons_created ON comparisons(created_at)")
    db.execute("CREATE INDEX idx_messages_conversation ON messages(conversation_id)")


def _create_model_table(db: sqlite3.Connection) -> None:
    """Models: registered files and folders, with their lineage (parent model, the run that made it)."""
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


def _create_pair_tables(db: sqlite3.Connection) -> None:
    """Prompts, the generations sampled for them, and the comparisons (the person's verdicts)."""
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


def _create_run_tables(db: sqlite3.Connection) -> None:
    """Training runs (with their fixed data snapshot) and their metrics per step."""
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


def _create_export_table(db: sqlite3.Connection) -> None:
    """Exported files (GGUFs) with their checksum and parity check."""
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


def _create_reference_cache(db: sqlite3.Connection) -> None:
    """The reference model's log-probs, cached per pair so a resumed or repeated run skips them."""
    db.execute(
        """
        CREATE TABLE reference_logps (
            key TEXT PRIMARY KEY,
            chosen_logp REAL NOT NULL,
            rejected_logp REAL NOT NULL,
            created_at REAL NOT NULL
        )"""
    )


def _create_chat_tables(db: sqlite3.Connection) -> None:
    """Chat: conversations and their messages."""
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


def _migration_3(db: sqlite3.Connection) -> None:
    """A log of which comparisons changed, written by triggers, so the pair counts recount only those.

    One row per comparison ever written (inserted, changed in what training reads, or removed), with the
    number of its newest change; ``seq`` only grows. Triggers, not the store's methods, write it, so every
    connection's writes (an import job's too) are logged. Existing rows need no entry: a count starts by
    reading everything, then follows the log.
    """
    db.execute(
        """
        CREATE TABLE comparison_changes (
            comparison_id INTEGER PRIMARY KEY,
            seq INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX idx_comparison_changes_seq ON comparison_changes(seq)")
    # The note and the time of a delete do not change what a comparison gives training: not logged.
    read_by_training = (
        "prompt_id, generation_a_id, generation_b_id, verdict, edited_text, edited_side, deleted"
    )
    next_seq = "(SELECT COALESCE(MAX(seq), 0) + 1 FROM comparison_changes)"
    for name, event, row in (
        ("inserted", "INSERT", "NEW"),
        ("updated", f"UPDATE OF {read_by_training}", "NEW"),
        ("removed", "DELETE", "OLD"),
    ):
        db.execute(
            f"""
            CREATE TRIGGER comparison_{name} AFTER {event} ON comparisons BEGIN
                INSERT OR REPLACE INTO comparison_changes (comparison_id, seq) VALUES ({row}.id, {next_seq});
            END"""
        )


def _migration_4(db: sqlite3.Connection) -> None:
    """Thumbs up or down on chat replies, re-asked pairs, and the replies a run trains on.

    - ``reply_labels``: one row per rated chat reply (a thumb taken back sets ``deleted``, so a run that
      trained on it keeps its lineage). The conversation up to the reply is kept as its prompt (``messages``,
      and ``prompt_id``, the prompt row with the same messages, which fixes its train/held-out split), with
      the reply's text and the model that wrote it: the label stays what it was when given, whatever later
      happens to the conversation.
    - ``comparisons.repeat_of``: a verdict given on an earlier pair shown again with its sides swapped (the
      person's own consistency); training reads the original only.
    - ``runs.reply_label_ids``: the rated replies a run trains on, fixed when it is made (as ``comparison_ids``).

    Existing rows keep every value: columns are only added, with defaults that mean "none".
    """
    db.execute(
        """
        CREATE TABLE reply_labels (
            id INTEGER PRIMARY KEY,
            message_id INTEGER UNIQUE REFERENCES messages(id) ON DELETE SET NULL,
            conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            messages TEXT NOT NULL,
            reply TEXT NOT NULL,
            model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
            desirable INTEGER NOT NULL CHECK (desirable IN (0, 1)),
            created_at REAL NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX idx_reply_labels_conversation ON reply_labels(conversation_id)")
    db.execute("ALTER TABLE comparisons ADD COLUMN repeat_of INTEGER REFERENCES comparisons(id)")
    db.execute("ALTER TABLE runs ADD COLUMN reply_label_ids TEXT NOT NULL DEFAULT '[]'")


def _migration_5(db: sqlite3.Connection) -> None:
    """``comparisons.chosen_by``: how the pair was chosen from several sampled answers ("surest": by the
    model's last run, ``pair_selection``); NULL for a pair shown as its two answers came, as every earlier
    pair was. Collect asks it of a run's pairs before choosing by that run (``Store.chosen_share``)."""
    db.execute("ALTER TABLE comparisons ADD COLUMN chosen_by TEXT")


# Each entry takes the schema from version i to i + 1. Append only; never edit a released one.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
]
SCHEMA_VERSION = len(MIGRATIONS)
