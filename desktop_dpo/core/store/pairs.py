"""Queries on the preference data: prompts (and their queue), generations, comparisons."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from desktop_dpo.core.errors import StoreError
from desktop_dpo.core.store.connection import StoreConnection
from desktop_dpo.core.store.rows import (
    VERDICTS,
    ComparisonRow,
    ComparisonSummary,
    ComparisonView,
    GenerationRow,
    PairKey,
    PromptRow,
    from_json,
    messages_key,
    timestamp,
    to_json,
)

# What a comparison search looks through: the prompt's messages, both responses, the rewrite and the note.
# The messages' contents, not their JSON, so that "user" or a quote mark match what a person wrote.
_SEARCHED_COLUMNS = (
    "(SELECT group_concat(json_extract(m.value, '$.content'), char(10)) FROM json_each(p.messages) m)",
    "ga.text",
    "gb.text",
    "c.edited_text",
    "c.note",
)


class PairQueries(StoreConnection):
    """Prompts, generations and comparisons: recording a pick, reading, searching, soft delete."""

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
                    "messages": to_json([{"role": m["role"], "content": m["content"]} for m in messages]),
                    "messages_key": key,
                    "source": source,
                    "queued": int(queued),
                    "created_at": timestamp(),
                },
            )

    def _prompt(self, row: dict[str, Any]) -> PromptRow:
        return PromptRow(
            id=row["id"],
            messages=from_json(row["messages"], []),
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
                    "sampling": to_json(sampling or {}),
                    "seed": seed,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "seconds": seconds,
                    "finish_reason": finish_reason,
                    "created_at": timestamp(),
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
            sampling=from_json(row["sampling"], {}),
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
        repeat_of: int | None = None,
        chosen_by: str | None = None,
    ) -> int:
        """Save a judgement. Committed before returning: a crash right after cannot lose it.

        ``repeat_of``: the comparison this verdict repeats (the same two answers shown again, sides swapped).
        ``chosen_by``: how the two were chosen from more answers (``PairChoice.how``, e.g. "surest"); None
        when they were shown as they came.
        """
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
                    "created_at": timestamp(),
                    **({"repeat_of": repeat_of} if repeat_of is not None else {}),
                    **({"chosen_by": chosen_by} if chosen_by is not None else {}),
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
        chosen_by: str | None = None,
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
                chosen_by=chosen_by,
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
            repeat_of=row.get("repeat_of"),
            chosen_by=row.get("chosen_by"),
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
            messages=from_json(row["p_messages"], []),
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
                    (int(deleted), timestamp() if deleted else None, comparison_id),
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

    def chosen_share(self, comparison_ids: Sequence[int]) -> float:
        """The share of ``comparison_ids`` (a run's pairs) whose two answers were chosen from more
        (``chosen_by`` set), deleted ones included: a run learnt from them. 0.0 for none."""
        ids = sorted({int(i) for i in comparison_ids})
        if not ids:
            return 0.0
        chosen = 0
        for start in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            part = ids[start : start + 500]
            sql = (
                f"SELECT COUNT(*) FROM comparisons WHERE chosen_by IS NOT NULL "
                f"AND id IN ({', '.join('?' * len(part))})"
            )
            chosen += int(self._conn.execute(sql, part).fetchone()[0])
        return chosen / len(ids)

    def count_comparisons(self, *, include_deleted: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM comparisons" + ("" if include_deleted else " WHERE deleted=0")
        return int(self._conn.execute(sql).fetchone()[0])

    # The comparisons Collect may re-ask (core/reask.py's repeat_candidates is the spec, tested against
    # these): judged, that is live, shown side by side, not skipped and not itself a repeat ...
    _JUDGED_SQL = (
        "c.deleted = 0 AND c.repeat_of IS NULL AND c.verdict != 'skip' AND c.a_shown_left IS NOT NULL"
    )
    # ... and not re-asked already (by a live repeat). Not correlated: SQLite builds the set once.
    _NOT_REPEATED_SQL = (
        "c.id NOT IN (SELECT repeat_of FROM comparisons WHERE repeat_of IS NOT NULL AND deleted = 0)"
    )
    _CANDIDATES_SQL = (
        f"SELECT c.id FROM comparisons c WHERE {_JUDGED_SQL} AND {_NOT_REPEATED_SQL} ORDER BY c.id"
    )

    def repeat_candidate_counts(self) -> tuple[int, int]:
        """(judged comparisons, those of them with no live repeat yet): see :func:`core.reask.pick_repeat`."""
        sql = (
            f"SELECT COUNT(*), COALESCE(SUM({self._NOT_REPEATED_SQL}), 0) FROM comparisons c "
            f"WHERE {self._JUDGED_SQL}"
        )
        judged, candidates = self._conn.execute(sql).fetchone()
        return int(judged), int(candidates)

    def repeat_candidate_ids(self) -> list[int]:
        """Every comparison that can be re-asked, oldest first."""
        return [int(row[0]) for row in self._conn.execute(self._CANDIDATES_SQL)]

    def repeat_candidate(self, index: int) -> ComparisonView | None:
        """The ``index``-th comparison that can be re-asked (oldest first), with its texts; None past the last.
        Only its texts are read, whatever the number of comparisons."""
        row = self._conn.execute(f"{self._CANDIDATES_SQL} LIMIT 1 OFFSET ?", (index,)).fetchone()
        views = self.comparison_views(ids=[int(row[0])]) if row is not None else []
        return views[0] if views else None

    def change_stamp(self) -> tuple[int, int]:
        """A value that differs after any committed write, by this connection or another one.

        Lets a view skip re-reading tens of thousands of rows when nothing changed since it last looked:
        ``PRAGMA data_version`` moves when another connection commits, ``total_changes`` when this one
        writes.
        """
        version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        return version, self._conn.total_changes

    def comparison_change_mark(self) -> int | None:
        """The newest entry of the comparisons' change log (schema 3): 0 while it is empty.

        None when this database keeps no log (a store opened with fewer migrations): then nothing can be
        read as changed since a mark. Read a mark *before* what it should cover: a write committed after
        it has a later mark, so it is reported again by :meth:`comparisons_changed_since` (never missed).
        """
        logged = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'comparison_changes'"
        ).fetchone()
        if logged is None:
            return None
        return int(self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM comparison_changes").fetchone()[0])

    def comparisons_changed_since(self, mark: int) -> tuple[list[int], list[ComparisonView]]:
        """Comparisons written after ``mark`` (:meth:`comparison_change_mark`), by any connection.

        Returns the ids of every comparison added, changed in what training reads (verdict, rewrite,
        deleted or not; not the note) or removed since, and the views of those of them that are live
        (not deleted, not removed), oldest first. A few rows after one verdict, however many there are.
        """
        changed = "SELECT comparison_id FROM comparison_changes WHERE seq > ?"
        ids = sorted(int(row[0]) for row in self._conn.execute(changed, (mark,)))  # by the seq index
        if not ids:
            return [], []
        sql = f"{self._VIEW_SQL} WHERE c.deleted = 0 AND c.id IN ({changed}) ORDER BY c.id"
        return ids, [self._view(row) for row in self._rows(sql, (mark,))]

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
        pair: verdict A or B on a pair not re-asked, or an edit) and ``ids``.
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
        if usable is not None:  # a repeat's verdict never trains (core/reask.py); a rewrite made on it does
            test = "((c.verdict IN ('a', 'b') AND c.repeat_of IS NULL) OR c.edited_text IS NOT NULL)"
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
                                        WHEN c.verdict = 'b' THEN ga.text END, ''), 1, ?) AS rejected,
                   c.repeat_of, CASE WHEN o.deleted = 0 THEN o.verdict END AS original_verdict
            FROM comparisons c
            JOIN prompts p ON p.id = c.prompt_id
            JOIN generations ga ON ga.id = c.generation_a_id
            JOIN generations gb ON gb.id = c.generation_b_id
            LEFT JOIN comparisons o ON o.id = c.repeat_of
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
                repeat_of=row[13],
                original_verdict=row[14],
            )
            for row in self._conn.execute(sql, params).fetchall()
        ]
