"""The base of the views that sample from models: Collect, Evaluate and Chat.

They share what they are given (the GUI thread's store, the job registry, the engine pool and the app's
folders), the random source that decides which answer is shown on which side, and the settings file where
their sampling settings are remembered. :class:`ModelWorkView` sets these up once, so each view's
``__init__`` holds only its own state.

They also run their generation the same way: one job at a time on the model's resource
(``generate:<model id>``), held in ``_generating``; Stop (Esc) cancels it at the next token, and the view's
``_on_<kind>_cancelled`` slot says what becomes of the text written so far.
"""

from __future__ import annotations

import random
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Slot
from PySide6.QtWidgets import QHBoxLayout, QLayout, QVBoxLayout, QWidget

from desktop_dpo.config import AppPaths
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.page_view import PageView
from desktop_dpo.gui.view_messages import ActivityLine
from desktop_dpo.workers.job_op import JobOp, StoreJobFactory
from desktop_dpo.workers.job_worker import JobRegistry

PROMPT_FILE_FILTER = "Prompt files (*.txt *.jsonl *.json);;All files (*)"
STOP_SHORTCUT = "Esc"


class ModelWorkView(PageView):
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
        super().__init__(store=store, registry=registry, paths=paths, pool=pool, parent=parent)
        self.pool: EnginePool = pool  # never None on these pages
        self._rng = rng or self.DEFAULT_RNG()
        self._settings = QSettings(str(paths.window_settings), QSettings.Format.IniFormat)
        self._generating: JobOp | None = None  # the view's generation job (the last one started)
        self.registry.changed.connect(self._on_registry_changed)  # a model may have become free or busy

    def _page_layout(self, header: QLayout, card: QWidget) -> QVBoxLayout:
        """The page's column: ``header``, ``card``, then the messages section (the banner and the activity
        line, made here). The view adds the rest below."""
        self.banner = MessageBanner()
        self.activity_row = ActivityLine()
        return self._page_column(header, card, self.banner, self.activity_row, scroll=True)

    @staticmethod
    def _actions_row(lead: QWidget, *buttons: QWidget, top: bool = False) -> QHBoxLayout:
        """A row of a card's actions: ``lead`` (a note, the sampling settings) takes the room, then the
        buttons; ``top`` keeps them at the top of the row when ``lead`` grows taller."""
        actions = QHBoxLayout()
        actions.setSpacing(8)
        actions.addWidget(lead, 1)
        for item in buttons:
            if top:
                actions.addWidget(item, 0, Qt.AlignmentFlag.AlignTop)
            else:
                actions.addWidget(item)
        return actions

    def _with_template(self, model: ModelRow) -> ModelRow | None:
        """``model`` as stored now, with a usable chat template: a model that needs one chosen first opens
        the template editor (never a guessed template). None when the person cancelled it (the banner says
        why nothing starts)."""
        from desktop_dpo.gui.template_editor import ensure_template_chosen, template_needed_message

        checked = ensure_template_chosen(self, self.store, model)
        if checked is None:
            self.show_error(template_needed_message(model))
        return checked

    # ---------------------------------------------------------------- generation

    @property
    def _streaming(self) -> bool:
        """A generation job of this view runs (its outcome has not reached the view yet)."""
        return self._generating is not None and self._generating.active

    def _start_generation(self, factory: StoreJobFactory, model: ModelRow, kind: str) -> bool:
        """Start a generation job on ``model``'s resource, the job working on a store of its own; its events
        and outcome go to the view's ``_on_<kind>_event/succeeded/failed/cancelled`` slots. False when it
        could not start (a job holds the model: the banner says so)."""
        self._generating = self.start_job(
            JobOp(self.registry, factory, store=self.paths.db_path, owner=self)
            .resource(f"generate:{model.id}", describe=f"Writing answers with {model.name}")
            .slots(kind)
        )
        return self._generating is not None

    @Slot()
    def stop(self) -> None:
        """Stop the generation at the next token (the view's ``_on_<kind>_cancelled`` follows)."""
        self.stop_job(self._generating)

    def _update_actions(self) -> None:
        """Enable the view's buttons for what it is doing (the views say how)."""

    @Slot()
    def _on_registry_changed(self) -> None:
        self._update_actions()

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
