"""Queries on training runs, their metrics per step, and the reference log-prob cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from desktop_dpo.core.errors import StoreError
from desktop_dpo.core.store.connection import StoreConnection
from desktop_dpo.core.store.rows import (
    RUN_STATUSES,
    RunRow,
    from_json,
    timestamp,
    to_json,
)


class RunQueries(StoreConnection):
    """Runs (created with their data snapshot fixed), metrics, cached reference log-probs."""

    def create_run(
        self,
        *,
        name: str,
        base_model_id: int | None,
        config: dict[str, Any],
        comparison_ids: Sequence[int],
        reference: str = "adapter_off",
        checkpoint_dir: str | None = None,
        reply_label_ids: Sequence[int] = (),
    ) -> int:
        """Create a run with its data snapshot fixed now (later picks and thumbs do not change it)."""
        replies = sorted(int(i) for i in reply_label_ids)
        extra = {"reply_label_ids": to_json(replies)} if replies else {}  # a schema before 4 has no column
        with self.atomic():
            return self._insert(
                "runs",
                {
                    **extra,
                    "name": name,
                    "base_model_id": base_model_id,
                    "reference": reference,
                    "config": to_json(config),
                    "comparison_ids": to_json(sorted(int(i) for i in comparison_ids)),
                    "checkpoint_dir": checkpoint_dir,
                    "created_at": timestamp(),
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
                fields[key] = to_json(fields[key])
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
            config=from_json(row["config"], {}),
            comparison_ids=from_json(row["comparison_ids"], []),
            status=row["status"],
            step=row["step"],
            total_steps=row["total_steps"],
            adapter_path=row["adapter_path"],
            checkpoint_dir=row["checkpoint_dir"],
            error=row["error"],
            final_metrics=from_json(row["final_metrics"], {}),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            reply_label_ids=tuple(from_json(row.get("reply_label_ids"), [])),
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
                (run_id, step, split, to_json(metrics), timestamp()),
            )

    def run_metrics(self, run_id: int, split: str = "train") -> list[tuple[int, dict[str, Any]]]:
        """``(step, metrics)`` of a run, in step order."""
        rows = self._conn.execute(
            "SELECT step, metrics FROM run_metrics WHERE run_id=? AND split=? ORDER BY step", (run_id, split)
        ).fetchall()
        return [(int(step), from_json(metrics, {})) for step, metrics in rows]

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
        now = timestamp()
        with self.atomic():
            self._conn.executemany(
                "INSERT OR REPLACE INTO reference_logps (key, chosen_logp, rejected_logp, created_at) VALUES (?,?,?,?)",
                [(k, float(c), float(r), now) for k, (c, r) in values.items()],
            )
