"""Queries on blind A/B evaluations and their votes (counts only: no domain types)."""

from __future__ import annotations

from typing import Any

from desktop_dpo.core.errors import StoreError
from desktop_dpo.core.store.connection import StoreConnection
from desktop_dpo.core.store.rows import (
    EVALUATION_VOTES,
    EvaluationRow,
    EvaluationVoteRow,
    from_json,
    timestamp,
    to_json,
)


class EvaluationQueries(StoreConnection):
    """Evaluations and their votes."""

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
                    "settings": to_json(settings or {}),
                    "created_at": timestamp(),
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
            settings=from_json(row["settings"], {}),
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
                    "created_at": timestamp(),
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
