"""Queries on exported files."""

from __future__ import annotations

from typing import Any

from desktop_dpo.core.store.connection import StoreConnection
from desktop_dpo.core.store.rows import (
    ExportRow,
    from_json,
    timestamp,
    to_json,
)


class ExportQueries(StoreConnection):
    """Exports: recorded, listed, forgotten."""

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
                    "parity": to_json(parity or {}),
                    "meta": to_json(meta or {}),
                    "created_at": timestamp(),
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
                parity=from_json(r["parity"], {}),
                meta=from_json(r["meta"], {}),
                created_at=r["created_at"],
            )
            for r in self._rows(sql, params)
        ]
