"""Every view, as a person sees it, at 1024×640, 1280×800 and 1920×1080, light and dark: empty, busy, finished.

Each state is built once, in the real main window with the app's real theme; then the window is resized and
switched between the schemes, and at each size and scheme it is checked as a person reads it:

- no text is cut: no label or button narrower than its text, no text shortened with "…" by the code, no combo
  box, tab or table header Qt shortens, nothing sticking out of the window (``cut_texts``);
- every label is readable: its darkest and lightest pixels differ by at least 3:1 (WCAG contrast), which
  catches dark text on a dark card in the dark scheme, or light text on a light one.

The states:

- empty: a fresh data folder (no pairs, models, runs, exports or conversations), what a new person sees;
- busy: each view's own job in flight, held in its worker thread once the view shows progress (Collect and
  Evaluate writing a pair, Chat writing a reply, Train at its first step, Export exporting, Models making a
  trainable copy, Storage measuring, Data importing a file of preferences);
- finished: the same views after their work, on a data folder built once with real tiny models (a completed
  run, an export registered as the aligned model, a conversation, an evaluation with votes): a complete pair,
  the run and the export selected, a conversation, the evaluation's summary, a selected pair in Data, Storage
  measured, a model's details.

Set ``DESKTOP_DPO_SCREENSHOT_DIR`` to keep every screenshot there as ``view-state-WxH-scheme.png``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QThread
from PySide6.QtGui import QImage, QPalette
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QWidget

from desktop_dpo.config import AppPaths
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.events import StepMetrics
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.llm.generation import TokenEvent
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from desktop_dpo.gui.theme import DARK, LIGHT, current_theme, install_theme
from desktop_dpo.workers import job_worker
from desktop_dpo.workers.job_worker import JobRegistry
from tests.conftest import record_topic_pairs, train_to_the_end
from tests.gui.conftest import HOLD_S, JOB_STOP_MS, cut_texts, hold_the_trainable_copy

SIZES = ((1024, 640), (1280, 800), (1920, 1080))
SCHEMES = (LIGHT, DARK)
VIEWS = ("models", "collect", "train", "export", "chat", "evaluate", "data", "storage")
SCREENSHOT_DIR_ENV = "DESKTOP_DPO_SCREENSHOT_DIR"
MIN_CONTRAST = 3.0  # WCAG's minimum for large text and user-interface parts
WAIT_MS = (
    180_000  # generous: the machine is shared (the first answer converts the model, training loads torch)
)
TOPICS = ["apples", "rivers", "trains", "music", "winter", "cats", "maps", "bread", "stars", "clocks"]
CONFIG = TrainConfig(
    lr=5e-3, epochs=1, batch_size=2, grad_accum=1, max_length=64, max_prompt_length=32, lora_r=4,
    lora_alpha=8, checkpoint_every=100, eval_every=100, heldout_fraction=0.25, seed=3, threads=1,
    quantization="none", device="cpu",
)  # fmt: skip


# ------------------------------------------------------------------------------------------- looking


def luminance(rgb: np.ndarray) -> np.ndarray:
    """WCAG relative luminance of sRGB pixels (the last axis: red, green, blue as 0…255)."""
    channel = rgb / 255.0
    linear = np.where(channel <= 0.03928, channel / 12.92, ((channel + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722])


def pixels(image: QImage) -> np.ndarray:
    """The image's pixels as an array of rows of (red, green, blue)."""
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3).astype(float)


def unreadable_labels(window: QWidget, shot: np.ndarray, ratio: float) -> list[str]:
    """Labels with text whose darkest and lightest pixels (in ``shot``, the window's screenshot at ``ratio``
    device pixels per pixel) differ by less than :data:`MIN_CONTRAST`."""
    found = []
    for label in window.findChildren(QLabel):
        if not label.isVisible() or not label.text().strip() or label.pixmap() is not None:
            continue
        seen = label.visibleRegion().boundingRect()
        if seen.width() < 4 or seen.height() < 4:
            continue
        top_left = label.mapTo(window, seen.topLeft())
        x, y = int(top_left.x() * ratio), int(top_left.y() * ratio)
        light = luminance(shot[y : y + int(seen.height() * ratio), x : x + int(seen.width() * ratio)])
        if light.size == 0:
            continue
        contrast = (light.max() + 0.05) / (light.min() + 0.05)
        if contrast < MIN_CONTRAST:
            found.append(f"{label.objectName() or 'QLabel'} {label.text()[:60]!r}: {contrast:.2f}:1")
    return found


def settle() -> None:
    """Let the window finish laying itself out: the resize, what the layouts post in turn, and the layout of
    any text a job's report set during the last pass (it would otherwise be checked before its re-layout)."""
    for _ in range(3):
        QApplication.processEvents()
    for _ in range(3):
        QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)


def check_every_size_and_scheme(window: QWidget, view: str, state: str) -> list[str]:
    """Show ``view`` at each size in each scheme: what is cut or unreadable there (see the module's docstring).
    The screenshots are saved when :data:`SCREENSHOT_DIR_ENV` names a folder."""
    folder = os.environ.get(SCREENSHOT_DIR_ENV)
    window.show_view(view)
    problems = []
    for scheme in SCHEMES:
        window.choose_appearance(scheme)
        for width, height in SIZES:
            window.resize(width, height)
            settle()
            where = f"{view}, {state}, {width}×{height}, {scheme}"
            problems += [f"{where}: cut: {text}" for text in cut_texts(window)]
            image = window.grab().toImage()
            shot = pixels(image)
            problems += [
                f"{where}: unreadable: {text}"
                for text in unreadable_labels(window, shot, image.width() / window.width())
            ]
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
                image.save(str(Path(folder) / f"{view}-{state}-{width}x{height}-{scheme}.png"))
    return problems


# ------------------------------------------------------------------------------------------- the app


@pytest.fixture
def themed() -> Generator[None, None, None]:
    """The app's real theme for this test; afterwards the bare look the other tests expect (no style sheet,
    Qt's own palette, no theme, the colour scheme left to the platform)."""
    app = QApplication.instance()
    yield
    theme = current_theme()
    if theme is not None:
        app.styleHints().unsetColorScheme()
        theme.setParent(None)
        theme.deleteLater()
    app.setStyleSheet("")
    app.setPalette(QPalette())
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@contextmanager
def main_window(qtbot, paths: AppPaths) -> Iterator[Any]:
    """The main window on ``paths``'s data folder, with its own store and jobs (all stopped at the end)."""
    from desktop_dpo.core.llm.engine_pool import EnginePool
    from desktop_dpo.gui.main_window import MainWindow

    store = Store.open(paths.db_path, backups_dir=paths.backups_dir)
    registry, pool = JobRegistry(), EnginePool()
    window = MainWindow(store=store, registry=registry, paths=paths, pool=pool)
    install_theme(QApplication.instance(), LIGHT)
    window.show()
    qtbot.waitExposed(window)
    try:
        yield window
    finally:
        assert registry.cancel_all_and_wait(JOB_STOP_MS), "a job would not stop"
        QApplication.processEvents()
        window.close()
        window.deleteLater()
        QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        pool.close_all()
        store.close()


def home_at(root: Path) -> AppPaths:
    """A data folder under ``root``."""
    return AppPaths.in_home(root).ensure()


@pytest.fixture(scope="module")
def finished_home(tiny_model_dir, tiny_gguf, tmp_path_factory) -> dict[str, Any]:
    """A data folder after the whole loop, built once through the core with the tiny models: pairs, the base
    model and its GGUF, a completed run, its export registered as the aligned model, a conversation with
    replies and prompts to evaluate on (the votes are given at Evaluate's settings, see record_votes)."""
    from desktop_dpo.core.export.pipeline import ExportSettings, export_run, persist_export

    paths = home_at(tmp_path_factory.mktemp("screens"))
    with Store.open(paths.db_path, backups_dir=paths.backups_dir) as store:
        record_topic_pairs(store, TOPICS)
        base = register_model(store, tiny_model_dir, name="Tiny Llama")
        chat_model = register_model(store, tiny_gguf, name="Tiny Llama (GGUF)")
        run_id = train_to_the_end(
            store, base.id, CONFIG.to_dict(), paths.runs_dir / "run-1", name="Tiny Llama, first round"
        )
        settings = ExportSettings(quantizations=("Q8_0",), destination=str(paths.exports_dir))
        finished, _events = run_job(export_run(store, run_id, settings, paths.exports_dir))
        [aligned_id] = persist_export(store, finished)
        conversation = store.create_conversation(chat_model.id, "Rivers and tea")
        for role, text in [
            ("user", "Tell me about rivers."),
            ("assistant", "Rivers carry water from the hills to the sea, and towns grow along them."),
            ("user", "And tea?"),
            ("assistant", "Tea is the leaf of a shrub, dried and steeped in hot water."),
        ]:
            store.add_message(conversation, role, text)
        for topic in ["snow", "bells"]:
            store.add_prompt([{"role": "user", "content": f"Tell me about {topic}."}], source="evaluate")
    return {"paths": paths, "base": base.id, "chat": chat_model.id, "run": run_id, "aligned": aligned_id}


# ------------------------------------------------------------------------------------------- empty and finished


def test_every_view_empty_at_every_size_in_both_schemes(qtbot, themed, tmp_path):
    problems = []
    with main_window(qtbot, home_at(tmp_path / "fresh")) as window:
        # What a new person sees once Train, on first show, has sized its settings (its note is rewritten then).
        window.show_view("train")
        qtbot.waitUntil(lambda: window.view("train").preset is not None, timeout=WAIT_MS)
        for view in VIEWS:
            problems += check_every_size_and_scheme(window, view, "empty")
    assert problems == [], "\n".join(problems)


def models_of(window, home: dict) -> tuple[Any, Any]:
    """The base and the aligned model rows."""
    return window.store.get_model(home["base"]), window.store.get_model(home["aligned"])


def finish(qtbot, window, view: str, home: dict) -> None:
    """Bring ``view`` to where its work is done."""
    page = window.view(view)
    window.show_view(view)
    if view == "models":
        page.select_model(home["base"])
    elif view == "collect":
        page.prompt_edit.setPlainText("Tell me about rivers and the sea.")
        assert page.sample()
        qtbot.waitUntil(
            lambda: page.verdict_buttons["left"].isEnabled() and not page.stop_button.isEnabled(),
            timeout=WAIT_MS,
        )
    elif view == "train":
        page.refresh_runs(select=home["run"])
    elif view == "export":
        page.select_run(home["run"])
        page.exports_tree.setCurrentItem(page.exports_tree.topLevelItem(0))
    elif view == "chat":
        assert page.open_conversation(page.store.list_conversations()[0].id)
    elif view == "evaluate":
        base, aligned = models_of(window, home)
        record_votes(page, base, aligned)
        page.set_models(base, aligned)
    elif view == "data":
        page.select_ids(page.selected_ids() or [page.store.comparison_views()[0].comparison.id])
    elif view == "storage":
        qtbot.waitUntil(
            lambda: page.table.rowCount() > 0 and not window.registry.is_busy("storage"), timeout=WAIT_MS
        )
    QApplication.processEvents()


def record_votes(page, base, aligned) -> None:
    """An evaluation of ``aligned`` against ``base`` at Evaluate's settings, with four votes."""
    from desktop_dpo.core.evaluate import PERSON, PROMPT_SOURCE, evaluation_settings

    store = page.store
    evaluation = store.create_evaluation(
        name=f"{aligned.name} against {base.name}", base_model_id=base.id, aligned_model_id=aligned.id,
        settings={**evaluation_settings(page.sampling_panel.settings()), "judge": PERSON},
    )  # fmt: skip
    for topic, vote in [("owls", "aligned"), ("kites", "aligned"), ("ferns", "base"), ("dunes", "tie")]:
        prompt = store.add_prompt(
            [{"role": "user", "content": f"Tell me about {topic}."}], source=PROMPT_SOURCE
        )
        store.add_evaluation_vote(
            evaluation, prompt_id=prompt, base_text="No.", aligned_text="Gladly!", vote=vote,
            aligned_shown_left=True, seed=1,
        )  # fmt: skip


def test_every_view_finished_at_every_size_in_both_schemes(qtbot, themed, finished_home):
    problems = []
    with main_window(qtbot, finished_home["paths"]) as window:
        window.view("models").select_model(finished_home["chat"])
        window.view("models").use_selected()
        for view in VIEWS:
            finish(qtbot, window, view, finished_home)
            problems += check_every_size_and_scheme(window, view, "finished")
    assert problems == [], "\n".join(problems)


# ------------------------------------------------------------------------------------------- busy


class JobHold:
    """Holds a job in its worker thread, as a slow model or a big file would: the job whose resource starts
    with :attr:`resource` stops after the first event :attr:`when` accepts (before its first event when
    :attr:`when` is None) until :meth:`end` cancels and releases it."""

    def __init__(self, monkeypatch):
        self.resource = "-"
        self.when: Callable[[object], bool] | None = None
        self.inside, self.release = threading.Event(), threading.Event()
        real_drive = job_worker.drive

        def held_drive(job: Any, on_event: Callable[[Any], object], cancel: CancelToken | None = None) -> Any:
            if not QThread.currentThread().objectName().startswith(self.resource):
                return real_drive(job, on_event, cancel)
            if self.when is None:
                self._wait()

            def on_held_event(event: object) -> None:
                on_event(event)
                if self.when is not None and not self.inside.is_set() and self.when(event):
                    self._wait()

            return real_drive(job, on_held_event, cancel)

        monkeypatch.setattr(job_worker, "drive", held_drive)

    def _wait(self) -> None:
        self.inside.set()
        self.release.wait(HOLD_S)

    def hold(self, resource: str, when: Callable[[object], bool] | None = None) -> None:
        """Hold the next job on ``resource``."""
        self.resource, self.when = resource, when
        self.inside.clear()
        self.release.clear()

    def end(self, qtbot, registry: JobRegistry) -> None:
        """Stop the held job (it stops at once, as the person's Stop does) and wait until it has ended."""
        for name in registry.running():
            if name.startswith(self.resource):
                registry.cancel(name)
        self.release.set()
        qtbot.waitUntil(
            lambda: not any(n.startswith(self.resource) for n in registry.running()), timeout=JOB_STOP_MS
        )
        self.resource = "-"


def a_token(event: object) -> bool:
    """The first token of an answer has come."""
    return isinstance(event, TokenEvent)


def start_busy(qtbot, window, monkeypatch, tmp_path: Path, hold: JobHold, view: str, home: dict) -> None:
    """Start ``view``'s own job and wait until it is held mid-way."""
    page = window.view(view)
    window.show_view(view)
    if view == "models":
        inside, release = hold_the_trainable_copy(monkeypatch)
        hold.inside, hold.release, hold.resource = inside, release, "trainable-copy"
        page.select_model(home["chat"])
        assert page.make_trainable_copy_of_selected()
    elif view == "collect":
        hold.hold("generate", a_token)
        page.prompt_edit.setPlainText("Tell me about rivers and the sea.")
        assert page.sample()
    elif view == "chat":
        hold.hold("generate", a_token)
        page.set_message("What else grows along rivers?")
        assert page.send()
    elif view == "evaluate":
        hold.hold("generate", a_token)
        assert page.next_prompt(), page.error_text()
    elif view == "train":
        hold.hold("train", lambda event: isinstance(event, StepMetrics))
        qtbot.waitUntil(page.start_button.isEnabled, timeout=WAIT_MS)
        page.settings_form.editors["epochs"].setValue(1)
        assert page.start() is not None
    elif view == "export":
        hold.hold("export", lambda event: True)
        page.select_run(home["run"])
        page.name_edit.setText("second-export")  # the first export's folder is taken
        assert page.start_export()
    elif view == "storage":
        qtbot.waitUntil(lambda: not window.registry.is_busy("storage"), timeout=WAIT_MS)
        hold.hold("storage")
        assert page.scan()
    elif view == "data":
        source = tmp_path / "preferences.jsonl"
        rows = [
            {"prompt": f"Imported question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."}
            for i in range(3)
        ]
        source.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(source), ""))
        hold.hold("data")
        page.import_button.click()
    qtbot.waitUntil(hold.inside.is_set, timeout=WAIT_MS)
    for _ in range(3):
        QApplication.processEvents()  # the events the job sent before it was held


def test_every_view_busy_at_every_size_in_both_schemes(qtbot, themed, finished_home, monkeypatch, tmp_path):
    hold = JobHold(monkeypatch)
    problems = []
    with main_window(qtbot, finished_home["paths"]) as window:
        window.view("models").select_model(finished_home["chat"])
        window.view("models").use_selected()  # Collect and Chat write with the GGUF model
        window.view("evaluate").set_models(*models_of(window, finished_home))
        for view in VIEWS:
            start_busy(qtbot, window, monkeypatch, tmp_path, hold, view, finished_home)
            try:
                problems += check_every_size_and_scheme(window, view, "busy")
            finally:
                hold.end(qtbot, window.registry)
    assert problems == [], "\n".join(problems)
