"""The export the GUI drives on the job resource ``"export"``: the job and its bookkeeping, on its own connection.

:func:`export_job` gives a :data:`~desktop_dpo.workers.job_worker.JobFactory` for
``JobRegistry.start(EXPORT_RESOURCE, ...)``. In the worker thread it opens its own :class:`Store`, drives
:func:`desktop_dpo.core.export.pipeline.export_run`, and when the export is complete records it with
``persist_export`` (export rows, the aligned model registered) before yielding :class:`ExportRecorded`.
A stop or a failure records nothing: the pipeline keeps no file under a final name either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from desktop_dpo.core.export.pipeline import ExportFinished, ExportSettings, export_run, persist_export
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.core.store import Store
from desktop_dpo.workers.job_worker import JobFactory

EXPORT_RESOURCE = "export"  # one export at a time: each one merges a full model in memory


@dataclass(frozen=True)
class ExportRecorded:
    """The export is complete and in the database: ``model_id`` is the aligned model now registered."""

    model_id: int
    finished: ExportFinished


def export_job(db_path: str | Path, run_id: int, settings: ExportSettings, exports_dir: Path) -> JobFactory:
    """A factory for ``JobRegistry.start(EXPORT_RESOURCE, ...)`` that exports run ``run_id``."""
    path = Path(db_path)

    def factory(cancel: CancelToken) -> Job:
        return drive_export(path, run_id, settings, exports_dir, cancel=cancel)

    return factory


def drive_export(
    db_path: Path, run_id: int, settings: ExportSettings, exports_dir: Path, *, cancel: CancelToken
) -> Job:
    """Export ``run_id`` as a job with its own store; returns :class:`ExportRecorded`."""
    store = Store.open(db_path)
    try:
        finished: ExportFinished | None = None
        for event in export_run(store, run_id, settings, exports_dir, cancel=cancel):
            if isinstance(event, ExportFinished):
                finished = event
            yield event
        assert finished is not None  # export_run yields it last or raises
        (model_id,) = persist_export(store, finished)
        recorded = ExportRecorded(model_id=model_id, finished=finished)
        yield recorded
        return recorded
    finally:
        store.close()
