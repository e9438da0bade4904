"""The export the GUI drives on the job resource ``"export"``: the recorded job, on the worker's own store.

:func:`export_job` gives a :data:`~desktop_dpo.workers.job_op.StoreJobFactory` for a
:class:`~desktop_dpo.workers.job_op.JobOp` with ``store=<database file>``: in the worker thread, on the
store the op opened there, it runs :func:`desktop_dpo.core.export.pipeline.recorded_export`, the job the CLI
and the demo run too: the export's events, then the export recorded (export rows, the aligned model
registered) and :class:`~desktop_dpo.core.export.pipeline.ExportRecorded`. A stop or a failure records
nothing: the pipeline keeps no file under a final name either.
"""

from __future__ import annotations

from pathlib import Path

from desktop_dpo.core.export.pipeline import ExportSettings, recorded_export
from desktop_dpo.core.jobs import CancelToken, Job
from desktop_dpo.core.store import Store
from desktop_dpo.workers.job_op import StoreJobFactory

EXPORT_RESOURCE = "export"  # one export at a time: each one merges a full model in memory


def export_job(run_id: int, settings: ExportSettings, exports_dir: Path) -> StoreJobFactory:
    """A factory for ``JobOp(registry, ..., store=db_path)`` that exports run ``run_id`` and records it."""

    def factory(store: Store, cancel: CancelToken) -> Job:
        return recorded_export(store, run_id, settings, exports_dir, cancel=cancel)

    return factory
