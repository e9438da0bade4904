"""Queries on chat conversations and their messages."""

from __future__ import annotations

from typing import Any

from desktop_dpo.core.store.connection import StoreConnection
from desktop_dpo.core.store.rows import (
    ConversationRow,
    MessageRow,
    from_json,
    timestamp,
    to_json,
)


class ChatQueries(StoreConnection):
    """Conversations and messages: the system prompt first, then the turns as written."""

    def create_conversation(self, model_id: int | None, title: str = "") -> int:
        now = timestamp()
        with self.atomic():
            return self._insert(
                "conversations", {"model_id": model_id, "title": title, "created_at": now, "updated_at": now}
            )

    def add_message(
        self, conversation_id: int, role: str, content: str, meta: dict[str, Any] | None = None
    ) -> int:
        """Append a message to a conversation."""
        now = timestamp()
        with self.atomic():
            message_id = self._insert(
                "messages",
                {
                    "conversation_id": conversation_id,
                    "role": role,
                    "content": content,
                    "meta": to_json(meta or {}),
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
            self._conn.execute("UPDATE messages SET meta=? WHERE id=?", (to_json(meta), message_id))

    def conversation_messages(self, conversation_id: int) -> list[MessageRow]:
        """A conversation's messages in order: the system prompt first, then the turns as written."""
        return [
            MessageRow(
                r["id"],
                r["conversation_id"],
                r["role"],
                r["content"],
                from_json(r["meta"], {}),
                r["created_at"],
            )
            for r in self._rows(
                "SELECT * FROM messages WHERE conversation_id=? "
                "ORDER BY CASE role WHEN 'system' THEN 0 ELSE 1 END, id",
                (conversation_id,),
            )
        ]
