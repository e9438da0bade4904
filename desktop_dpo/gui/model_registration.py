"""Adding a model to the list: the job that reads and fingerprints it, and what the Models view makes of it.

A person picks a Hugging Face folder or a GGUF file (or clicks Add on a model found on this computer);
:class:`ModelRegistration` reads the model's headers and fingerprints its weights in a job (resource
``register-model``, :func:`inspect_for_registration`), so a slow or network disk never freezes the window.
The job writes nothing: back on the GUI thread, the registration records the model in the view's store, or
says in words why it was not added.

A folder whose weights are only pickle files (which can run code when loaded) is added only after the person
says yes to a warning; then it is read once more, allowing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QFileDialog, QWidget

from desktop_dpo.core.errors import DesktopDpoError, ModelError
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.models import ModelInfo, fingerprint, inspect_model
from desktop_dpo.core.store import Store
from desktop_dpo.gui.storage_view import ask_yes_no
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

REGISTER_RESOURCE = "register-model"

GGUF_FILE_FILTER = "GGUF models (*.gguf);;All files (*)"
PICKLE_QUESTION = (
    "{name} stores its weights only as pickle files. Loading a pickle file can run any code that was put "
    "into it, with your permissions: only allow this for a model from a source you trust.\n\n"
    "Add it with its pickle weights?"
)


# --------------------------------------------------------------------------------------------------------
# The job (runs in a worker thread; it reads files and returns plain objects, the GUI thread writes the row)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InspectedModel:
    """A model read and fingerprinted, ready to be recorded."""

    info: ModelInfo
    fingerprint: str
    source: str  # the store's source value: user | hf_cache | lmstudio | ollama ...
    name: str | None  # the name to record (a discovered model's label), None for the model's own


@dataclass(frozen=True)
class PickleConsentNeeded:
    """The folder is usable only with its pickle weights: the person must say yes first."""

    path: str
    name: str  # what the question calls the model
    reason: str  # core's refusal, shown when the person says no
    source: str
    label: str | None  # the name to record if they say yes


def inspect_for_registration(
    path: str | Path, *, source: str, name: str | None, allow_pickle: bool, cancel: CancelToken
) -> Job:
    """Read a model's headers and fingerprint it (a job). Returns :class:`InspectedModel`, or
    :class:`PickleConsentNeeded` when only allowing its pickle weights would make it usable.

    Raises:
        ModelError: the model cannot be used, in words the person can act on.
    """
    path = Path(path)
    yield Progress(0, 2, f"Reading {path.name}")
    try:
        info = inspect_model(path, allow_pickle=allow_pickle)
    except ModelError as refusal:
        if allow_pickle:
            raise
        try:
            # Header reads only: asking again tells "pickle weights" from every other refusal.
            with_pickle = inspect_model(path, allow_pickle=True)
        except ModelError:
            raise refusal from None
        return PickleConsentNeeded(str(path), name or with_pickle.name, str(refusal), source, name)
    cancel.raise_if_cancelled()
    yield Progress(1, 2, f"Fingerprinting {info.name}")
    return InspectedModel(info, fingerprint(info.path), source, name)


# --------------------------------------------------------------------------------------------------------
# Its driver (GUI thread)
# --------------------------------------------------------------------------------------------------------


class ModelRegistration(QObject):
    """Adds models to the list, one at a time: asks for a file or folder, runs the job, records the model.

    Args:
        store: the GUI thread's database connection (the model's row is written there).
        registry: the job registry (resource ``register-model``).
        parent: the view the file dialogs and the pickle question belong to.

    Signals:
        reading(str): a model is being read; what to say meanwhile ("Reading tiny.gguf…").
        added(int, str): the model was recorded, with its id and the name it was recorded under.
        refused(str): nothing was added (or could not start), and why, in words.
        ended(): the job is over, however it ended (before ``added`` or ``refused``).
    """

    reading = Signal(str)
    added = Signal(int, str)
    refused = Signal(str)
    ended = Signal()

    def __init__(self, *, store: Store, registry: JobRegistry, parent: QWidget):
        super().__init__(parent)
        self.store = store
        self.registry = registry
        self._widget = parent
        self._op: JobOp | None = None

    def is_busy(self) -> bool:
        """True while a model is being read (no other can be added meanwhile)."""
        return self.registry.is_busy(REGISTER_RESOURCE)

    @Slot()
    def choose_folder(self) -> None:
        """Ask for a Hugging Face model folder, then add it."""
        folder = QFileDialog.getExistingDirectory(
            self._widget, "Add a Hugging Face model folder", str(Path.home())
        )
        if folder:
            self.add(folder)

    @Slot()
    def choose_gguf(self) -> None:
        """Ask for a GGUF file, then add it."""
        name, _filter = QFileDialog.getOpenFileName(
            self._widget, "Add a GGUF file", str(Path.home()), GGUF_FILE_FILTER
        )
        if name:
            self.add(name)

    def add(
        self, path: str | Path, *, source: str = "user", name: str | None = None, allow_pickle: bool = False
    ) -> bool:
        """Register the model at ``path`` in a job (an HF folder or a GGUF file). Returns False when it could
        not start (``refused`` says why); the outcome (``added`` or ``refused``) follows when the job ends."""

        def factory(token: CancelToken) -> Job:
            return inspect_for_registration(
                path, source=source, name=name, allow_pickle=allow_pickle, cancel=token
            )

        try:
            self._op = (
                JobOp(self.registry, factory, owner=self)
                .resource(REGISTER_RESOURCE)
                .slots("register")
                .start()
            )
        except DesktopDpoError as exc:
            self.refused.emit(str(exc))
            return False
        self.reading.emit(f"Reading {Path(path).name}…")
        return True

    def _on_register_succeeded(self, result: object) -> None:
        self.ended.emit()
        if isinstance(result, PickleConsentNeeded):
            if ask_yes_no(self._widget, "Allow pickle weights?", PICKLE_QUESTION.format(name=result.name)):
                self.add(result.path, source=result.source, name=result.label, allow_pickle=True)
            else:
                self.refused.emit(f"Not added. {result.reason}")
            return
        assert isinstance(result, InspectedModel)
        info = result.info
        name = result.name or info.name
        try:
            model_id = self.store.add_model(
                name=name,
                path=info.path,
                kind=info.kind,
                fingerprint=result.fingerprint,
                source=result.source,
                info=info.to_dict(),
            )
        except DesktopDpoError as exc:
            self.refused.emit(f"{info.name} was not added: {exc}")
            return
        self.added.emit(model_id, name)

    def _on_register_failed(self, message: str) -> None:
        self.ended.emit()
        self.refused.emit(message)

    def _on_register_cancelled(self) -> None:
        self.ended.emit()
