"""The main window: opens light, navigates, counts pairs, imports and exports, and closes safely."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QMessageBox

from desktop_dpo import __version__
from desktop_dpo.config import HOME_ENV
from desktop_dpo.core.errors import DesktopDpoError, JobCancelled
from desktop_dpo.core.jobs import Log, Progress
from desktop_dpo.core.offline import RefusedAttempt
from desktop_dpo.core.storage import StorageItem
from desktop_dpo.core.store import Store
from desktop_dpo.gui.main_window import VIEWS, MainWindow
from desktop_dpo.gui.preference_file_actions import DATA_RESOURCE, EXPORT_FILTERS
from desktop_dpo.workers.job_op import JobOp
from tests.gui.conftest import HOLD_S, JOB_STOP_MS

REPO = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("torch", "transformers", "peft", "llama_cpp", "bitsandbytes", "trl")
# Nor what the first screen of a new database (Collect and the welcome card) does not need: the data
# libraries sqlite-utils pulls in, the plots, template rendering, the engines, the model registry and the
# template editor (docs/ARCHITECTURE.md, "Start-up").
FIRST_SCREEN_SKIPS = (
    "numpy",
    "pandas",
    "sqlite_utils",
    "pyqtgraph",
    "jinja2",
    "desktop_dpo.core.llm.llamacpp",
    "desktop_dpo.core.llm.supervised",
    "desktop_dpo.core.llm.hf",
    "desktop_dpo.core.models",
    "desktop_dpo.core.sampling",  # Collect imports it when it starts a pair
    "desktop_dpo.gui.template_editor",
)


def _record_pairs(store: Store, verdicts: list[str]) -> None:
    for index, verdict in enumerate(verdicts):
        store.record_pair(
            messages=[{"role": "user", "content": f"Question {index}?"}],
            text_a=f"Answer A{index}.",
            text_b=f"Answer B{index}.",
            verdict=verdict,
        )


@pytest.fixture
def window(make_window) -> MainWindow:
    return make_window()


def _looping_job(started: threading.Event, finished: threading.Event):
    """A job that works until cancelled, like a training run; records that its cleanup ran."""

    def factory(token):
        def job():
            try:
                started.set()
                while True:
                    yield Log("working")
                    if token.wait(0.05):
                        token.raise_if_cancelled()
            finally:
                finished.set()

        return job()

    return factory


# ------------------------------------------------------------------------------------------- opening


@pytest.mark.parametrize(
    ("verdicts", "view", "skipped"),
    [
        ([], "collect", HEAVY_MODULES + FIRST_SCREEN_SKIPS),  # a new database: the welcome card on Collect
        (["a", "b"], "models", HEAVY_MODULES),  # pairs but no model: Models
    ],
    ids=["new database", "pairs without a model"],
)
def test_window_opens_without_importing_ml_libraries(tmp_path, verdicts, view, skipped):
    """The real entry point, in a fresh interpreter: the window is on screen, and no ML library is loaded
    (nor, on a new database's first screen, anything else that screen does not need).

    (A subprocess, because other tests in this process import torch.)
    """
    home = tmp_path / "home"
    if verdicts:  # otherwise the very first start: the window creates the database (without sqlite-utils)
        with Store.open(home / "data" / "desktop-dpo.sqlite") as store:
            _record_pairs(store, verdicts)
    script = f"""
import json, sys
import desktop_dpo.cli
from PySide6.QtWidgets import QApplication

report = {{}}

def exec_once(app):
    app.processEvents()
    shown = [w for w in QApplication.topLevelWidgets() if w.isVisible() and type(w).__name__ == "MainWindow"]
    report["shown"] = [w.windowTitle() for w in shown]
    report["pairs"] = shown[0].status_pairs.text() if shown else None
    report["view"] = shown[0].current_view() if shown else None
    report["heavy"] = sorted(set({skipped!r}) & set(sys.modules))
    for w in shown:
        w.close()
    app.setStyleSheet("")  # the style under the style sheet
    report["style"] = QApplication.style().name().lower()
    return 0

QApplication.exec = exec_once
report["exit"] = desktop_dpo.cli.main([])  # as a desktop launcher starts it
print("REPORT " + json.dumps(report))
"""
    # A desktop that asks for another style: the app's style sheet assumes Fusion.
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QT_STYLE_OVERRIDE": "Windows", HOME_ENV: str(home)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    report = json.loads(lines[-1].removeprefix("REPORT "))
    assert report["exit"] == 0
    assert report["shown"] == ["desktop-dpo"]
    assert report["heavy"] == [], f"the window imported {report['heavy']} at start-up"
    assert report["pairs"].startswith(f"{len(verdicts)} pairs collected")
    assert report["view"] == view
    assert report["style"] == "fusion"


def test_every_view_has_a_sidebar_entry_an_icon_and_its_real_page(window):
    from desktop_dpo.gui.chat_view import ChatView
    from desktop_dpo.gui.collect_view import CollectView
    from desktop_dpo.gui.data_view import DataView
    from desktop_dpo.gui.evaluate_view import EvaluateView
    from desktop_dpo.gui.export_view import ExportView
    from desktop_dpo.gui.models_view import ModelsView
    from desktop_dpo.gui.storage_view import StorageView
    from desktop_dpo.gui.train_view import TrainView

    labels = [window.nav.item(row).text() for row in range(window.nav.count())]
    assert labels == ["Models", "Collect", "Train", "Export", "Chat", "Evaluate", "Data", "Storage"]
    expected = {
        "models": ModelsView,
        "collect": CollectView,
        "train": TrainView,
        "export": ExportView,
        "chat": ChatView,
        "evaluate": EvaluateView,
        "data": DataView,
        "storage": StorageView,
    }
    for spec in VIEWS:
        assert not window.nav.item(labels.index(spec.label)).icon().isNull()
        if spec.key in expected:
            assert isinstance(window.view(spec.key), expected[spec.key]), spec.key


def test_using_a_model_from_models_hands_it_to_collect_and_chat(qtbot, window, gui_store, tiny_gguf):
    from desktop_dpo.core.models import register_model

    first = register_model(gui_store, tiny_gguf, name="first")
    copy = tiny_gguf.parent / "second.gguf"
    if not copy.exists():
        copy.write_bytes(tiny_gguf.read_bytes())
    second = register_model(gui_store, copy, name="second")
    window.view("collect")  # built before the choice
    models = window.view("models")
    models.refresh()
    assert models.select_model(second.id)
    models.use_selected()
    assert window.view("collect").current_model().id == second.id
    assert window.view("chat").current_model().id == second.id  # built after the choice
    assert "now use second" in window.statusBar().currentMessage()
    assert first.id != second.id


def test_evaluating_an_exported_model_opens_the_blind_comparison_on_it_and_its_base(
    qtbot, window, gui_store, tiny_gguf
):
    from desktop_dpo.core.models import register_model

    base = register_model(gui_store, tiny_gguf, name="base")
    copy = tiny_gguf.parent / "aligned-copy.gguf"
    if not copy.exists():
        copy.write_bytes(tiny_gguf.read_bytes())
    aligned = register_model(gui_store, copy, name="aligned", source="aligned", parent_model_id=base.id)
    gui_store.add_export(
        path=aligned.path, quantization="F32", sha256="0" * 64, size_bytes=copy.stat().st_size
    )
    window.show_view("export")
    export = window.view("export")
    export.refresh()
    export.exports_tree.setCurrentItem(export.exports_tree.topLevelItem(0))
    assert export.evaluate_button.isEnabled()
    qtbot.mouseClick(export.evaluate_button, Qt.MouseButton.LeftButton)
    assert window.current_view() == "evaluate"
    assert window.nav.currentItem().text() == "Evaluate"
    evaluate = window.view("evaluate")
    assert evaluate.isVisible()
    assert evaluate.base_combo.currentData() == base.id
    assert evaluate.aligned_combo.currentData() == aligned.id


# ------------------------------------------------------------------------------------------- navigation


def test_clicking_the_sidebar_switches_views(qtbot, window):
    assert window.current_view() == "collect"  # first start on an empty database: the welcome card is there
    for row, spec in enumerate(VIEWS):
        rect = window.nav.visualItemRect(window.nav.item(row))
        qtbot.mouseClick(window.nav.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        assert window.current_view() == spec.key
        page = window.pages.currentWidget()
        assert page.isVisible()
        assert window.view(spec.key).isVisible()
        # Only the page on screen is visible: the others are behind it.
        others = [s.key for s in VIEWS if s.key != spec.key and window.view(s.key).isVisible()]
        assert others == []


def test_view_menu_shortcuts_switch_views(window):
    view_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    train = next(a for a in view_menu.actions() if a.text() == "Train")
    assert train.shortcut().toString() == "Ctrl+3"
    train.trigger()
    assert window.current_view() == "train"
    assert window.nav.currentItem().text() == "Train"
    views = [a for a in view_menu.actions() if not a.isSeparator() and a.menu() is None]
    shortcuts = {a.text(): a.shortcut().toString() for a in views}
    assert shortcuts == {spec.label: f"Ctrl+{n}" for n, spec in enumerate(VIEWS, 1)}
    assert shortcuts["Evaluate"] == "Ctrl+6"


def test_window_reopens_on_the_view_it_was_closed_on(make_window):
    first = make_window()
    first.show_view("chat")
    assert first.close()
    second = make_window()
    assert second.current_view() == "chat"


# ------------------------------------------------------------------------------------------- status bar


def test_status_bar_shows_database_pair_counts_and_jobs(window, app_home):
    assert window.status_pairs.text() == "0 pairs collected · 0 usable for training"
    assert window.status_jobs.text() == "No jobs running"
    assert window.status_database.toolTip().endswith(str(app_home.db_path))


def test_status_bar_counts_pairs_collected_before_start(gui_store, make_window):
    _record_pairs(gui_store, ["a", "b", "tie"])  # a tie teaches DPO nothing: collected, not usable
    window = make_window()
    assert window.status_pairs.text() == "3 pairs collected · 2 usable for training"


def test_status_bar_names_a_running_job(qtbot, window, registry):
    started, finished = threading.Event(), threading.Event()
    JobOp(registry, _looping_job(started, finished)).resource("train").start()
    qtbot.waitUntil(lambda: window.status_jobs.text() == "Training…")
    registry.cancel("train")
    qtbot.waitUntil(lambda: window.status_jobs.text() == "No jobs running")
    assert finished.is_set()


def test_a_note_in_the_status_bar_keeps_room_beside_long_job_words(qtbot, window, monkeypatch):
    """At 1024 wide, two jobs with long names and a note: the note is readable, and whole in the tooltip."""
    window.resize(1024, 640)
    jobs = "Writing answers with Tiny Llama · aligned, run 1 · Q8_0 · Measuring what the app keeps"
    monkeypatch.setattr(window, "_jobs_text", lambda: jobs)
    window.refresh_status()
    note = "The model crashed while loading (a segmentation fault) and now runs in safe mode."
    bar = window.statusBar()
    bar.showMessage(note)
    # The note's room, left of the first label: the database's path gave way (the job words keep theirs).
    qtbot.waitUntil(lambda: window.status_jobs.x() >= 150)
    assert bar.toolTip() == note
    assert window.status_jobs.toolTip() == jobs
    assert window.status_database.text().count("…") == 1  # shortened in its middle, whole in its tooltip


@pytest.mark.parametrize("name", ["models", "collect", "train", "export", "evaluate", "storage"])
def test_a_page_summary_runs_across_the_page_at_1024_by_640(qtbot, window, name):
    """At the window's smallest size the summary under a page's title keeps to two lines: it runs under the
    header's buttons too, instead of being squeezed into the gap they leave (Collect's made four)."""
    window.resize(1024, 640)
    window.show_view(name)
    view = window.view(name)
    summary = view.findChild(QLabel, "pageSummary")
    qtbot.waitUntil(lambda: summary.isVisible() and summary.width() > 0)
    qtbot.waitUntil(lambda: view.width() >= 700)
    line = summary.fontMetrics().lineSpacing()
    assert summary.width() > view.width() // 2, f"{name}: {summary.width()} of {view.width()} pixels"
    assert summary.height() <= 2 * line + 4, f"{name}: {summary.height() // line} lines"
    qtbot.waitUntil(window.registry.idle)  # Storage measures the folders when it is first shown


def test_quitting_while_storage_is_measured_asks_nothing_but_a_clean_up_is_asked_about(
    qtbot, monkeypatch, window
):
    """Opening Storage measures the app's folders (it only reads): quitting then closes at once, with no
    "A job is running" question about a scan the person never started. Deleting files is asked about."""
    import desktop_dpo.gui.storage_view as storage_view

    started, release = threading.Event(), threading.Event()

    def slow_job(*args, **kwargs):
        started.set()
        release.wait(30)
        return []
        yield  # a generator

    monkeypatch.setattr(storage_view, "scan_job", slow_job)
    monkeypatch.setattr(storage_view, "remove_items", slow_job)
    asked: list[str] = []
    monkeypatch.setattr(
        QMessageBox,
        "question",
        lambda parent, title, text, *a: asked.append(text) or QMessageBox.StandardButton.No,
    )
    view = window.view("storage")
    window.show_view("storage")
    assert started.wait(5) and window.registry.is_busy(storage_view.RESOURCE)
    assert window.status_jobs.text() == "No jobs running"
    assert window.close(), "the scan kept the window open"
    assert asked == []
    release.set()
    qtbot.waitUntil(window.registry.idle, timeout=JOB_STOP_MS)

    started.clear()
    release.clear()
    view.confirm = lambda *a: True
    cache = StorageItem(
        path="/nowhere/cache",
        kind="cache",
        size_bytes=2048,
        used_by="a copy",
        removable=True,
        reason="made again",
    )
    view.checked_items = lambda: [cache]
    window.show()
    assert view.clean_up() and started.wait(5)
    assert not window.close()
    assert asked and asked[0].startswith("A job is running: stop it and quit?")
    release.set()
    qtbot.waitUntil(window.registry.idle, timeout=JOB_STOP_MS)


def _every_resource() -> list[str]:
    """Every resource the app starts jobs on (the constants of the modules that start them)."""
    from desktop_dpo.gui.diagnostics_dialog import HARDWARE_RESOURCE
    from desktop_dpo.gui.discovered_models import SCAN_RESOURCE
    from desktop_dpo.gui.first_run import DEMO_RESOURCE
    from desktop_dpo.gui.model_registration import REGISTER_RESOURCE
    from desktop_dpo.gui.models_view import COPY_RESOURCE
    from desktop_dpo.gui.storage_view import RESOURCE as STORAGE_RESOURCE
    from desktop_dpo.workers.export_worker import EXPORT_RESOURCE
    from desktop_dpo.workers.training_worker import DEVICE_RESOURCE, TRAIN_RESOURCE

    return [
        TRAIN_RESOURCE,
        DEVICE_RESOURCE,
        EXPORT_RESOURCE,
        DATA_RESOURCE,
        REGISTER_RESOURCE,
        SCAN_RESOURCE,
        COPY_RESOURCE,
        DEMO_RESOURCE,
        HARDWARE_RESOURCE,
        STORAGE_RESOURCE,
        "generate:1",
        "generate:2",
    ]


def _resource_ids_in(text: str, resources: list[str]) -> list[str]:
    """The resource ids (or their kind, "generate") that ``text`` shows as words of their own."""
    ids = {*resources, *(r.split(":")[0] for r in resources)}
    return sorted(r for r in ids if re.search(rf"(?<![\w-]){re.escape(r)}(?![\w-])", text))


def test_status_bar_and_quit_question_say_what_jobs_do_never_their_resource(
    qtbot, monkeypatch, window, registry
):
    resources = _every_resource()
    finished = []
    for resource in resources:
        started, ended = threading.Event(), threading.Event()
        finished.append(ended)
        op = JobOp(registry, _looping_job(started, ended))
        # The generation jobs say which model writes (as ModelWorkView does); the others use the registry's words.
        op.resource(resource, describe="Writing answers with Gemma" if resource == "generate:1" else "")
        if resource == "scan-models":
            op.quiet()  # as the Models view starts it
        op.start()
        assert started.wait(5)
    qtbot.waitUntil(lambda: "Writing answers with Gemma" in window.status_jobs.toolTip())
    asked: list[str] = []
    monkeypatch.setattr(
        QMessageBox,
        "question",
        lambda parent, title, text, *a: asked.append(text) or QMessageBox.StandardButton.No,
    )
    assert not window.close()

    # So many jobs do not fit the bar: the label is cut short, its tooltip names them all.
    status, question = window.status_jobs.toolTip(), asked[0]
    assert window.status_jobs.text().endswith("…") and len(window.status_jobs.text()) < len(status)
    assert _resource_ids_in(window.status_jobs.text(), resources) == []
    assert _resource_ids_in(status, resources) == [], status
    assert _resource_ids_in(question, resources) == [], question
    for words in ("Training", "Detecting your GPU", "Unpacking the demo model", "Writing answers with Gemma"):
        assert words in status and f"• {words}" in question
    assert "Looking for models" not in status + question  # the scan is quiet: neither named nor asked about
    assert question.startswith("11 jobs are running: stop them and quit?")
    # A job that cannot start says which job holds its resource, in words too.
    with pytest.raises(DesktopDpoError, match=r"^Training is already running"):
        JobOp(registry, _looping_job(threading.Event(), threading.Event())).resource("train").start()
    registry.cancel_all()
    qtbot.waitUntil(lambda: window.status_jobs.text() == "No jobs running", timeout=JOB_STOP_MS)
    assert all(ended.is_set() for ended in finished)


def test_a_finished_jobs_loading_line_leaves_the_status_bar(qtbot, window, registry):
    """A job's Log line ("Loading Gemma…") stays in the status bar while it is true: until the job moves on
    (the activity line says something else), or until the job ends."""
    view = window.view("chat")  # any view with the messages section; the job is a stand-in
    loaded, release = threading.Event(), threading.Event()

    def generation(token):
        yield Log("Loading Gemma…")
        loaded.wait(HOLD_S)
        yield Progress(1, 2, "Gemma is writing…")
        release.wait(HOLD_S)
        return "done"

    def start(factory) -> JobOp:
        op = JobOp(registry, factory, owner=view).resource("generate:1").on_event(view.show_job_progress)
        return view.start_job(op)

    bar = window.statusBar()
    first = start(generation)
    qtbot.waitUntil(lambda: bar.currentMessage() == "Loading Gemma…")
    loaded.set()  # the model answers: the line is no longer true
    qtbot.waitUntil(lambda: bar.currentMessage() == "")
    assert view.activity() == "Gemma is writing…"
    release.set()
    qtbot.waitUntil(lambda: not first.active)

    def loads_then_answers(token):
        yield Log("Loading Gemma…")
        release.wait(HOLD_S)
        return "done"

    release.clear()
    second = start(loads_then_answers)
    qtbot.waitUntil(lambda: bar.currentMessage() == "Loading Gemma…")
    release.set()  # the job ends with the line still up: it goes with the job, not 8 seconds later
    qtbot.waitUntil(lambda: not second.active)
    qtbot.waitUntil(lambda: bar.currentMessage() == "", timeout=3_000)


# ------------------------------------------------------------------------------------------- import / export


def _write_pairs(path: Path, count: int) -> Path:
    lines = [
        json.dumps({"prompt": f"Q{i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_import_from_the_data_view_adds_pairs_and_updates_the_counts(
    qtbot, monkeypatch, gui_store, make_window, tmp_path
):
    _record_pairs(gui_store, ["a"])
    source = _write_pairs(tmp_path / "prefs.jsonl", 2)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(source), ""))
    window = make_window()
    window.show_view("data")
    data_view = window.view("data")
    assert data_view.model.rowCount() == 1
    qtbot.mouseClick(data_view.import_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.status_pairs.text().startswith("3 pairs collected"), timeout=10_000)
    assert window.status_pairs.text() == "3 pairs collected · 3 usable for training"
    assert "Imported 2 pairs from prefs.jsonl" in window.statusBar().currentMessage()
    assert gui_store.count_usable_pairs() == 3  # the GUI's own connection sees the worker's commit
    # The table re-reads the database: the imported pairs are listed, and the view's counts agree.
    qtbot.waitUntil(lambda: data_view.model.rowCount() == 3, timeout=10_000)
    assert data_view.counts_text() == "3 comparisons · 3 usable for training"


def test_deleting_in_the_data_view_updates_the_status_bar(qtbot, gui_store, make_window):
    _record_pairs(gui_store, ["a", "b", "tie"])
    window = make_window()
    window.show_view("data")
    data_view = window.view("data")
    data_view.select_ids(data_view.model.ids()[:2])  # the two newest: the tie and the "b"
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    data_view.table.setFocus()
    qtbot.keyClick(data_view.table, Qt.Key.Key_Delete)
    assert window.status_pairs.text() == "1 pair collected · 1 usable for training"
    assert "Deleted 2 comparisons" in window.statusBar().currentMessage()


def test_the_empty_data_view_leads_to_collect(qtbot, window):
    window.show_view("data")
    data_view = window.view("data")
    assert data_view.is_empty_state()
    qtbot.mouseClick(data_view.collect_button, Qt.MouseButton.LeftButton)
    assert window.current_view() == "collect"


def test_a_bad_file_is_refused_with_its_line_numbers(qtbot, monkeypatch, window, tmp_path, gui_store):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q?", "chosen": "A."}\n', encoding="utf-8")
    warnings: list[tuple[str, str]] = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(bad), ""))
    monkeypatch.setattr(
        QMessageBox, "warning", lambda parent, title, text, *a: warnings.append((title, text))
    )
    window.preference_actions.import_action.trigger()
    qtbot.waitUntil(lambda: bool(warnings), timeout=10_000)
    title, text = warnings[0]
    assert title == "Import failed"
    assert "line 1" in text and '"rejected"' in text
    assert gui_store.count_comparisons() == 0


def test_export_from_the_file_menu_writes_the_usable_pairs(
    qtbot, monkeypatch, gui_store, make_window, tmp_path
):
    _record_pairs(gui_store, ["a", "b", "tie"])
    target = tmp_path / "out" / "pairs"  # no suffix: .jsonl is added
    standard = next(f for f in EXPORT_FILTERS if f.startswith("TRL standard"))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(target), standard))
    window = make_window()
    file_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&File")
    export = next(a for a in file_menu.actions() if a.text().startswith("&Export"))
    export.trigger()
    written = target.with_suffix(".jsonl")
    qtbot.waitUntil(lambda: "Wrote 2 pairs" in window.statusBar().currentMessage(), timeout=10_000)
    rows = [json.loads(line) for line in written.read_text(encoding="utf-8").splitlines()]
    assert sorted(rows, key=lambda r: r["prompt"]) == [
        {"prompt": "Question 0?", "chosen": "Answer A0.", "rejected": "Answer B0."},
        {"prompt": "Question 1?", "chosen": "Answer B1.", "rejected": "Answer A1."},
    ]


def test_import_and_export_are_disabled_while_a_data_job_runs(qtbot, window, registry):
    window.show_view("data")
    buttons = window.view("data").action_buttons
    actions = (window.preference_actions.import_action, window.preference_actions.export_action)
    started, finished = threading.Event(), threading.Event()
    JobOp(registry, _looping_job(started, finished)).resource(DATA_RESOURCE).start()
    assert not any(action.isEnabled() for action in actions)
    assert not any(button.isEnabled() for button in buttons)
    registry.cancel(DATA_RESOURCE)
    qtbot.waitUntil(lambda: all(action.isEnabled() for action in actions), timeout=5_000)
    assert all(button.isEnabled() for button in buttons)


def test_a_refused_network_connection_is_shown(qtbot, window):
    attempt = RefusedAttempt(operation="socket.connect", target="192.0.2.1 port 443", thread="worker")
    window.network_refused.emit(attempt)
    assert "192.0.2.1 port 443" in window.statusBar().currentMessage()
    assert "offline" in window.statusBar().currentMessage()


# ------------------------------------------------------------------------------------------- menus


def test_about_names_version_data_and_log_folders(monkeypatch, window, app_home):
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.append(text))
    window.about_action.trigger()
    assert __version__ in shown[0]
    assert str(app_home.data_dir) in shown[0] and str(app_home.log_dir) in shown[0]


def test_open_data_folder_opens_the_folder(monkeypatch, window, app_home):
    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    window.open_data_folder_action.trigger()
    assert [url.toLocalFile() for url in opened] == [str(app_home.data_dir)]


# ------------------------------------------------------------------------------------------- closing


def answer_yes_to_every_question(monkeypatch) -> list[str]:
    """Answer Yes to every question box from now on; returns the list the questions' texts are added to."""
    asked: list[str] = []

    def answer_yes(parent, title, text, *args):
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", answer_yes)
    return asked


def test_closing_with_a_job_running_stops_the_job_when_the_person_says_yes(
    qtbot, monkeypatch, window, registry
):
    started, finished = threading.Event(), threading.Event()
    thread = JobOp(registry, _looping_job(started, finished)).resource("train").start().thread
    assert started.wait(5)
    asked = answer_yes_to_every_question(monkeypatch)
    window.close()  # returns at once: the window stays up, painted, until the job has stopped
    assert thread.wait(JOB_STOP_MS)  # (the registry lets go of the thread once the event loop runs)
    assert asked and asked[0].startswith("A job is running: stop it and quit?")
    assert finished.is_set(), "the job's cleanup (finally) did not run"
    assert thread.isFinished()
    assert thread.outcome == "cancelled"
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=JOB_STOP_MS)
    assert not window.isVisible()


def test_closing_with_a_job_running_keeps_everything_when_the_person_says_no(
    qtbot, monkeypatch, window, registry
):
    started, finished = threading.Event(), threading.Event()
    thread = JobOp(registry, _looping_job(started, finished)).resource("train").start().thread
    assert started.wait(5)
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.No)
    assert not window.close()
    qtbot.wait(200)  # the job keeps going meanwhile
    assert window.isVisible()
    assert thread.isRunning() and not finished.is_set()
    assert registry.running() == ["train"]
    registry.cancel("train")
    qtbot.waitUntil(lambda: registry.running() == [], timeout=5_000)
    assert finished.is_set()


def test_closing_with_no_job_running_asks_nothing(monkeypatch, window):
    monkeypatch.setattr(QMessageBox, "question", lambda *args: pytest.fail("asked although no job runs"))
    assert window.close()
    assert not window.isVisible()


def _slow_to_stop_job(started: threading.Event, finished: threading.Event, stop_s: float):
    """A job that works until cancelled and then needs ``stop_s`` seconds to stop (a training step ending,
    a checkpoint being written)."""

    def factory(token):
        def job():
            started.set()
            try:
                while True:
                    yield Log("working")
                    token.wait(0.05)
            except JobCancelled:
                time.sleep(stop_s)  # the job's own slow clean-up, in its worker thread
                raise
            finally:
                finished.set()

        return job()

    return factory


def test_quitting_while_a_job_stops_keeps_the_window_alive_until_it_has(qtbot, monkeypatch, window, registry):
    """After "Yes", the window is not frozen while the job takes its time to stop: the event loop runs (a
    timer fires, the window repaints), the window says it is stopping, asks nothing more, and then closes."""
    started, finished = threading.Event(), threading.Event()
    outcomes: list[str] = []
    op = JobOp(registry, _slow_to_stop_job(started, finished, 1.0)).resource("train")
    op.on_cancelled(lambda: outcomes.append("cancelled")).start()
    assert started.wait(5)
    asked = answer_yes_to_every_question(monkeypatch)
    ticks_while_stopping: list[bool] = []
    timer = QTimer(window)
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks_while_stopping.append(window.isVisible() and not finished.is_set()))
    paints = _PaintCounter()
    window.statusBar().installEventFilter(paints)

    assert not window.close()  # not yet: the job is stopping
    timer.start()
    assert window.isVisible() and registry.running() == ["train"]
    assert "stopping" in window.windowTitle()
    assert window.status_jobs.text() == "Stopping: Training…"
    assert window.statusBar().currentMessage() == "Quitting…"
    assert not window.centralWidget().isEnabled()  # nothing new starts meanwhile
    paints.count = 0
    # Closing again (the title bar's ×, Ctrl+Q) neither asks again nor stacks up.
    assert not window.close() and not window.close()
    assert len(asked) == 1

    qtbot.waitUntil(lambda: not window.isVisible(), timeout=JOB_STOP_MS)
    assert sum(ticks_while_stopping) >= 10, "the event loop stood still while the job stopped"
    assert paints.count > 0, "the window did not repaint while the job stopped"
    assert finished.is_set() and outcomes == ["cancelled"]
    assert registry.idle() and registry.running() == []
    assert len(asked) == 1


class _PaintCounter(QObject):
    """Counts the paint events of the widget it filters."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        if event.type() == QEvent.Type.Paint:
            self.count += 1
        return False
