"""Queries on thumbs up and down given to chat replies (KTO's single labels from Chat)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from desktop_dpo.core.errors import StoreError
from desktop_dpo.core.store.connection import StoreConnection
from desktop_dpo.core.store.rows import ReplyLabelRow, from_json, timestamp, to_json


class ReplyLabelQueries(StoreConnection):
    """One label per chat reply: given, changed, or taken back (kept as deleted, for runs' lineage)."""

    def set_reply_label(self, message_id: int, desirable: bool | None) -> int | None:
        """Mark the assistant message ``message_id`` good (True), bad (False), or take its thumb back (None).

        The label keeps the conversation up to the reply (the system prompt included) as its prompt, the
        reply's text and the model that wrote it, as they are now. Returns the label's id (None when a thumb
        that was never given is taken back).

        Raises:
            StoreError: there is no such message, or it is not a reply of the model.
        """
        rows = self._rows("SELECT * FROM messages WHERE id=?", (message_id,))
        if not rows or rows[0]["role"] != "assistant":
            raise StoreError("Only a reply of the model can be rated, and this one is no longer there.")
        existing = self._conn.execute(
            "SELECT id FROM reply_labels WHERE message_id=?", (message_id,)
        ).fetchone()
        with self.atomic():
            if desirable is None:
                if existing is not None:
                    self._conn.execute("UPDATE reply_labels SET deleted=1 WHERE id=?", (existing[0],))
                return existing[0] if existing else None
            if existing is not None:
                self._conn.execute(
                    "UPDATE reply_labels SET desirable=?, deleted=0 WHERE id=?", (int(desirable), existing[0])
                )
                return int(existing[0])
            message = rows[0]
            conversation_id = message["conversation_id"]
            before = [
                {"role": r["role"], "content": r["content"]}
                for r in self._rows(
                    "SELECT role, content FROM messages WHERE conversation_id=? AND (role='system' OR id<?) "
                    "ORDER BY CASE role WHEN 'system' THEN 0 ELSE 1 END, id",
                    (conversation_id, message_id),
                )
            ]
            model_id = from_json(message["meta"], {}).get("model_id")
            if model_id is None:
                found = self._conn.execute(
                    "SELECT model_id FROM conversations WHERE id=?", (conversation_id,)
                ).fetchone()
                model_id = found[0] if found else None
            prompt_id = self.add_prompt(before, source="chat")  # type: ignore[attr-defined]
            return self._insert(
                "reply_labels",
                {
                    "message_id": message_id,
                    "conversation_id": conversation_id,
                    "prompt_id": prompt_id,
                    "messages": to_json(before),
                    "reply": message["content"],
                    "model_id": model_id,
                    "desirable": int(desirable),
                    "created_at": timestamp(),
                },
            )

    def conversation_reply_labels(self, conversation_id: int) -> dict[int, bool]:
        """The thumbs shown in a conversation: ``{message id: desirable}`` of its rated replies."""
        rows = self._conn.execute(
            "SELECT message_id, desirable FROM reply_labels "
            "WHERE conversation_id=? AND deleted=0 AND message_id IS NOT NULL",
            (conversation_id,),
        ).fetchall()
        return {int(m): bool(d) for m, d in rows}

    @staticmethod
    def _reply_label(row: dict[str, Any]) -> ReplyLabelRow:
        return ReplyLabelRow(
            id=row["id"],
            message_id=row["message_id"],
            conversation_id=row["conversation_id"],
            prompt_id=row["prompt_id"],
            messages=from_json(row["messages"], []),
            reply=row["reply"],
            model_id=row["model_id"],
            desirable=bool(row["desirable"]),
            created_at=row["created_at"],
            deleted=bool(row["deleted"]),
        )

    def reply_labels(
        self,
        *,
        ids: Sequence[int] | None = None,
        model_id: int | None = None,
        include_deleted: bool = False,
    ) -> list[ReplyLabelRow]:
        """Rated replies, oldest first: those with ``ids``, or those written by ``model_id`` (both: either
        filter applies)."""
        clauses: list[str] = []
        params: list[Any] = []
        if not include_deleted:
            clauses.append("deleted = 0")
        if ids is not None:
            if not ids:
                return []
            clauses.append(f"id IN ({', '.join('?' for _ in ids)})")
            params += [int(i) for i in ids]
        if model_id is not None:
            clauses.append("model_id = ?")
            params.append(model_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return [
            self._reply_label(r) for r in self._rows(f"SELECT * FROM reply_labels{where} ORDER BY id", params)
        ]
