"""Train's trainable copy: a GGUF base model (the demo model, say) is made trainable where the person presses
Start, with no detour through the Models view.

Training loads a Hugging Face folder (:func:`~desktop_dpo.core.model_files.find_training_folder`); a GGUF gets
one by :func:`~desktop_dpo.core.models.recorded_trainable_copy`, once. :class:`TrainableCopy` runs that job as a
:class:`~desktop_dpo.workers.job_op.JobOp` on the Models view's resource (:data:`COPY_RESOURCE`), so two copies
never run at once whichever view started them, and shows its progress in the Train view's run panel; the job
records the finished copy where training looks for it (the model's info key ``trainable_copy``). The job writes under a hidden name and renames the folder into place when it is whole
(:func:`~desktop_dpo.core.model_files.atomic_output`): a stop or a failure keeps nothing half-made.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from desktop_dpo.config import AppPaths
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.model_files import (
    CAN_MAKE_TRAINABLE_COPY_KEY,
    find_training_folder,
    trainable_copy_dir,
)
from desktop_dpo.core.models import recorded_trainable_copy
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.core.wording import human_size
from desktop_dpo.gui.models_view import COPY_RESOURCE
from desktop_dpo.gui.train_live_panel import LiveRunPanel
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

COPY_AND_START = "Make a trainable copy and start"
COPY_AND_START_TOOLTIP = (
    "Make the trainable copy this GGUF needs (once), then a run of these pairs and settings"
)
STOP_COPY_TOOLTIP = "Stop making the trainable copy (nothing half-made is kept)"


# --------------------------------------------------------------------------------------------------------
# What a model needs before it can train
# --------------------------------------------------------------------------------------------------------


def needs_copy(model: ModelRow | None) -> bool:
    """Whether ``model`` is a GGUF that training can load once a trainable copy of it is made."""
    return (
        model is not None
        and model.kind == "gguf"
        and bool(model.info.get(CAN_MAKE_TRAINABLE_COPY_KEY))
        and find_training_folder(model) is None
    )


def cannot_train_reason(model: ModelRow) -> str | None:
    """Why ``model`` can never be trained here (a GGUF of an architecture transformers cannot dequantize), or
    None: a model that only needs a trainable copy can, since Start makes the copy."""
    if model.kind != "gguf" or needs_copy(model) or find_training_folder(model) is not None:
        return None
    architecture = model.info.get("architecture") or "this kind of"
    return (
        f"{model.name} is a '{architecture}' GGUF file, which cannot be turned back into a model that training "
        "can load. You can still chat with it; to train, add the Hugging Face folder of a model in Models."
    )


def model_training_note(model: ModelRow | None) -> str:
    """The line under the base model: what Start does first for a GGUF, or why it cannot be trained ("" for
    a model that trains as it is)."""
    if model is None:
        return ""
    if needs_copy(model):
        parameters = model.info.get("parameter_count")
        size = f"about {human_size(parameters * 2)}, " if isinstance(parameters, int) and parameters else ""
        return (
            f"{model.name} is a GGUF file: training needs a full-precision copy of it first ({size}made once "
            "and kept in the app's data folder). Start makes it, then trains."
        )
    return cannot_train_reason(model) or ""


def start_button_words(model: ModelRow | None) -> tuple[str, str]:
    """Train's Start button: its text and tooltip for the chosen base model."""
    if needs_copy(model):
        return COPY_AND_START, COPY_AND_START_TOOLTIP
    return "Start training", "Make a run of these pairs and settings, and train it"


# --------------------------------------------------------------------------------------------------------
# The copy job
# --------------------------------------------------------------------------------------------------------


class TrainableCopy(QObject):
    """The Train view's trainable-copy job: :meth:`start`, :meth:`stop`, and one of three outcomes.

    Args:
        store: the GUI thread's database connection (the copy is recorded there).
        registry: the job registry (the copy holds :data:`COPY_RESOURCE`, as in the Models view).
        paths: the app's folders (the copy goes under ``paths.models_dir``).
        start_job: the view's ``start_job`` (says in its banner why a job could not start).
        panel: the run panel that shows the copy's progress and whose Stop stops it.

    Signals:
        succeeded(int): the copy of model ``id`` is made and recorded: training can load it now.
        failed(str): no copy was made; why, in words.
        cancelled(str): stopped as asked; what to tell the person.
    """

    succeeded = Signal(int)
    failed = Signal(str)
    cancelled = Signal(str)

    def __init__(
        self,
        store: Store,
        registry: JobRegistry,
        paths: AppPaths,
        start_job: Callable[[JobOp], JobOp | None],
        panel: LiveRunPanel,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self.store = store
        self.registry = registry
        self.paths = paths
        self._start_job = start_job
        self.panel = panel
        self._op: JobOp | None = None
        self._model: ModelRow | None = None
        self._stopping = False
        self._stop_tooltip = panel.stop_button.toolTip()

    @property
    def active(self) -> bool:
        """True while a copy started here runs (until its outcome is handled)."""
        return self._op is not None and self._op.active

    def stoppable(self) -> bool:
        """True while a copy runs and Stop was not pressed yet."""
        return self.active and not self._stopping

    def busy_elsewhere(self) -> bool:
        """True while another view (Models) makes a trainable copy."""
        return self.registry.is_busy(COPY_RESOURCE) and not self.active

    def blocker(self, model: ModelRow) -> str:
        """Why Start cannot train ``model`` now, as far as its trainable copy goes ("" when nothing stops it)."""
        if self.active:
            return "The trainable copy is being made: the run starts when it is ready."
        if needs_copy(model) and self.busy_elsewhere():
            return "A trainable copy is being made in Models: Start is ready when it is done."
        return cannot_train_reason(model) or ""

    def start(self, model: ModelRow) -> bool:
        """Start copying ``model`` (a GGUF) with its progress in the panel; False when it could not start."""
        out_dir = trainable_copy_dir(self.paths, model)

        def factory(store: Store, token: CancelToken) -> Job:
            return recorded_trainable_copy(store, model, out_dir, cancel=token)

        op = self._start_job(
            JobOp(self.registry, factory, store=self.paths.db_path, owner=self)
            .resource(COPY_RESOURCE)
            .slots("copy")
        )
        if op is None:
            return False
        self._op, self._model, self._stopping = op, model, False
        self.panel.headline.setText(f"Making a trainable copy of {model.name}…")
        self.panel.detail.setText("Getting ready. Training starts as soon as the copy is made.")
        self.panel.detail.setToolTip(f"The copy goes to {out_dir}")
        self.panel.progress.setRange(0, 0)  # busy until the first step reports
        self.panel.progress.setFormat("%p%")
        self.panel.progress.setVisible(True)
        self.panel.stop_button.setToolTip(STOP_COPY_TOOLTIP)
        return True

    def stop(self) -> None:
        """Stop the copy at its next step; nothing half-made is kept."""
        if self.stoppable() and self._op is not None:
            self._op.cancel()
            self._stopping = True
            self.panel.headline.setText("Stopping the trainable copy…")

    # ---------------------------------------------------------------- the job's outcomes

    def _on_copy_event(self, event: object) -> None:
        if not isinstance(event, Progress) or self._stopping:
            return
        self.panel.progress.setRange(0, 1000)
        self.panel.progress.setValue(int(event.fraction * 1000))
        if event.message:
            self.panel.detail.setText(f"{event.message}… Training starts as soon as the copy is made.")

    def _end(self, headline: str, detail: str) -> ModelRow | None:
        model, self._model, self._stopping = self._model, None, False
        self.panel.stop_button.setToolTip(self._stop_tooltip)
        self.panel.headline.setText(headline)
        self.panel.detail.setText(detail)
        self.panel.detail.setToolTip("")
        self.panel.progress.setRange(0, 1)
        self.panel.progress.setValue(0)
        self.panel.progress.setVisible(False)
        return model

    def _on_copy_succeeded(self, model: object) -> None:
        self._end("Trainable copy ready", "Starting the run…")
        assert isinstance(model, ModelRow)  # the job recorded the copy where training looks for it
        self.succeeded.emit(model.id)

    def _on_copy_failed(self, message: str) -> None:
        model = self._end("No trainable copy was made", "The message above says why; no run was started.")
        name = model.name if model is not None else "the model"
        self.failed.emit(f"No trainable copy of {name} was made. {message}")

    def _on_copy_cancelled(self) -> None:
        model = self._end(
            "Stopped before training",
            f"Nothing half-made was kept. Press “{COPY_AND_START}” to make the copy again.",
        )
        name = model.name if model is not None else "the model"
        self.cancelled.emit(f"Stopped: no trainable copy of {name} was kept, and no run was started.")
