"""The base of the views that sample from models: Collect, Evaluate and Chat.

They share what they are given (the GUI thread's store, the job registry, the engine pool and the app's
folders), the random source that decides which answer is shown on which side, and the settings file where
their sampling settings are remembered. :class:`ModelWorkView` sets these up once, so each view's
``__init__`` holds only its own state.
"""

from __future__ import annotations

import random
from pathlib import Path

from PySide6.QtCore import QSettings, Slot
from PySide6.QtWidgets import QWidget

from desktop_dpo.config import AppPaths
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.gui.view_messages import ViewMessages
from desktop_dpo.gui.widgets import make_page
from desktop_dpo.workers.job_worker import JobRegistry

PROMPT_FILE_FILTER = "Prompt files (*.txt *.jsonl *.json);;All files (*)"


class ModelWorkView(ViewMessages, QWidget):
    """A page that runs generation jobs on the shared engine pool.

    Args:
        store: the GUI thread's database connection.
        registry: the job registry (generation runs on resource ``generate:<model id>``).
        pool: the engine pool shared with the other views (models stay loaded between jobs).
        paths: the app's folders (GGUF copies of Hugging Face models, settings).
        rng: decides which generation is shown where (tests pass a seeded one); by default a
            ``DEFAULT_RNG()``.

    Subclasses set ``PAGE``, the page name the style sheet scopes their rules by (see ``widgets.make_page``).
    """

    PAGE = ""
    DEFAULT_RNG: type[random.Random] = random.Random

    def __init__(
        self,
        *,
        store: Store,
        registry: JobRegistry,
        pool: EnginePool,
        paths: AppPaths,
        rng: random.Random | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        make_page(self, self.PAGE)
        self.store = store
        self.registry = registry
        self.pool = pool
        self.paths = paths
        self._rng = rng or self.DEFAULT_RNG()
        self._settings = QSettings(str(paths.data_dir / "window.ini"), QSettings.Format.IniFormat)

    def _ask_prompt_file(self, title: str) -> str:
        """A prompt file the person picks ("" when they cancel)."""
        from PySide6.QtWidgets import QFileDialog  # here: PySide builds its enums on first use

        name, _filter = QFileDialog.getOpenFileName(self, title, str(Path.home()), PROMPT_FILE_FILTER)
        return name


class SingleModelView(ModelWorkView):
    """A view that works with one chosen model (Collect's first model, Chat's): the choice is kept across
    refreshes of the model list, and starts as the default model. Subclasses fill their picker in
    ``refresh_models``."""

    _model: ModelRow | None = None

    def refresh_models(self) -> None:
        raise NotImplementedError

    @Slot(object)
    def set_model(self, model: ModelRow | None) -> None:
        """Work with ``model`` from now on (e.g. the model chosen in the Models view)."""
        self._model = model
        self.refresh_models()

    def current_model(self) -> ModelRow | None:
        """The model the next sample or reply comes from."""
        return self._model

    def _preferred_model_id(self) -> int | None:
        """The model to select in the picker: the one chosen, else the default model."""
        if self._model is not None:
            return self._model.id
        default = self.store.default_model()
        return default.id if default is not None else None
