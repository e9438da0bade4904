"""Queries the clean-up of files on disk uses (``core/storage.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from desktop_dpo.core.store.connection import StoreConnection
from desktop_dpo.core.store.rows import (
    from_json,
    to_json,
)


class CleanupQueries(StoreConnection):
    """What the clean-up of files on disk changes in the database."""

    def remove_model_info_keys(self, model_id: int, *keys: str) -> None:
        """Drop keys from a model's info (e.g. the path of a GGUF copy that was deleted: it is re-made)."""
        with self.atomic():
            row = self._conn.execute("SELECT info FROM models WHERE id=?", (model_id,)).fetchone()
            if row is None:
                return
            info = {k: v for k, v in from_json(row[0], {}).items() if k not in keys}
            self._conn.execute("UPDATE models SET info=? WHERE id=?", (to_json(info), model_id))

    def delete_exports(self, export_ids: Sequence[int]) -> None:
        """Forget export rows whose files were deleted."""
        if not export_ids:
            return
        with self.atomic():
            self._conn.executemany("DELETE FROM exports WHERE id=?", [(int(i),) for i in export_ids])
