"""The export the GUI drives on the job resource ``"export"``: the job and its bookkeeping, on its own store.

:func:`export_job` gives a :data:`~desktop_dpo.workers.job_op.StoreJobFactory` for a
:class:`~desktop_dpo.workers.job_op.JobOp` with ``store=<database file>``: in the worker thread, on the
store the op opened there, it drives :func:`desktop_dpo.core.export.pipeline.export_run`, and when the
export is complete records it with ``persist_export`` (export rows, the aligned model registered) before
yielding :class:`ExportRecorded`. A stop or a failure records nothing: the pipeline keeps no file under a
final name either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from desktop_dpo.core.export.pipeline import ExportFinished, ExportSettings, export_run, persist_export
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.core.store import Store
from desktop_dpo.workers.job_op import StoreJobFactory

EXPORT_RESOURCE = "export"  # one export at a time: each one merges a full model in memory


@dataclass(frozen=True)
class ExportRecorded:
    """The export is complete and in the database: ``model_id`` is the aligned model now registered."""

    model_id: int
    finished: ExportFinished


def export_job(run_id: int, settings: ExportSettings, exports_dir: Path) -> StoreJobFactory:
    """A factory for ``JobOp(registry, ..., store=db_path)`` that exports run ``run_id``."""

    def factory(store: Store, cancel: CancelToken) -> Job:
        return drive_export(store, run_id, settings, exports_dir, cancel=cancel)

    return factory


def drive_export(
    store: Store, run_id: int, settings: ExportSettings, exports_dir: Path, *, cancel: CancelToken
) -> Job:
    """Export ``run_id`` as a job on ``store`` (this thread's own); returns :class:`ExportRecorded`."""
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
