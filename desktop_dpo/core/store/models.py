"""Queries on the models table: registering, reading, the default model, forgetting."""

from __future__ import annotations

from typing import Any

from desktop_dpo.core.errors import StoreError
from desktop_dpo.core.store.connection import StoreConnection
from desktop_dpo.core.store.rows import (
    ModelRow,
    from_json,
    timestamp,
    to_json,
)


class ModelQueries(StoreConnection):
    """Models: :meth:`add_model`, :meth:`get_model`, :meth:`list_models` ..."""

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
                merged = {**from_json(existing[1], {}), **(info or {})}
                self._conn.execute(
                    "UPDATE models SET name=?, kind=?, fingerprint=?, source=?, info=?, parent_model_id=?, "
                    "run_id=? WHERE id=?",
                    (name, kind, fingerprint, source, to_json(merged), parent_model_id, run_id, existing[0]),
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
                    "info": to_json(info or {}),
                    "parent_model_id": parent_model_id,
                    "run_id": run_id,
                    "created_at": timestamp(),
                },
            )

    def update_model_info(self, model_id: int, **info: Any) -> None:
        """Merge keys into a model's info (e.g. the path of its GGUF or trainable copy)."""
        with self.atomic():
            row = self._conn.execute("SELECT info FROM models WHERE id=?", (model_id,)).fetchone()
            if row is None:
                raise StoreError(f"Model {model_id} is not registered.")
            merged = {**from_json(row[0], {}), **info}
            self._conn.execute("UPDATE models SET info=? WHERE id=?", (to_json(merged), model_id))

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
            info=from_json(row["info"], {}),
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
