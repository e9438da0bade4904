"""The Export view, driven through its widgets: export a trained run of the tiny model, stop one, refuse one."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtWidgets import QApplication

from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.train import drive_training
from desktop_dpo.core.jobs import CancelToken
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from desktop_dpo.gui.export_view import ExportView
from desktop_dpo.workers.job_worker import JobRegistry

WAIT_MS = 120_000  # generous: the machine is shared; nothing here asserts on time
CONFIG = TrainConfig(
    lr=5e-3, epochs=1, batch_size=2, grad_accum=1, max_length=48, max_prompt_length=24, lora_r=4, lora_alpha=8,
    checkpoint_every=100, eval_every=100, heldout_fraction=0.25, seed=5, threads=1, quantization="none",
    device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def trained_db(tiny_model_dir, tmp_path_factory) -> Path:
    """A database with one completed run of the tiny model (trained once for the module)."""
    folder = tmp_path_factory.mktemp("export-view")
    store = Store.open(folder / "desktop-dpo.sqlite")
    for i, topic in enumerate(["owls", "tea", "snow", "maps", "bells", "kites", "ferns", "dunes"]):
        store.record_pair(
            messages=[{"role": "user", "content": f"Tell me about {topic}."}],
            text_a=f" Gladly! {topic} are lovely." if i % 2 else f" No. {topic} bore me.",
            text_b=f" No. {topic} bore me." if i % 2 else f" Gladly! {topic} are lovely.",
            verdict="a" if i % 2 else "b",
        )
    base = register_model(store, tiny_model_dir, name="tiny")
    run_id = store.create_run(
        name="first",
        base_model_id=base.id,
        config=CONFIG.to_dict(),
        comparison_ids=[v.comparison.id for v in store.comparison_views()],
        checkpoint_dir=str(folder / "run"),
    )
    drive_training(store, run_id, cancel=CancelToken())
    store.close()
    return folder / "desktop-dpo.sqlite"


@pytest.fixture
def registry():
    jobs = JobRegistry()
    yield jobs
    jobs.cancel_all_and_wait(60_000)


@pytest.fixture
def view_store(app_home, trained_db):
    shutil.copy2(trained_db, app_home.db_path)
    store = Store.open(app_home.db_path)
    yield store
    store.close()


@pytest.fixture
def view(qtbot, view_store, registry, app_home) -> ExportView:
    widget = ExportView(store=view_store, registry=registry, paths=app_home)
    qtbot.addWidget(widget)
    widget.resize(1000, 760)
    widget.show()
    return widget


def test_export_writes_the_files_shows_the_parity_report_and_registers_the_model(
    qtbot, view, view_store, app_home
):
    assert view.run_combo.count() == 1 and "Run 1 · first" in view.run_combo.currentText()
    # How well the run learned, in words: the held-out accuracy when it had held-out pairs.
    run = view_store.list_runs()[0]
    measured = "held-out accuracy" if "heldout/rewards/accuracies" in run.final_metrics else "accuracy"
    assert re.search(rf"·\s+{measured} \d+%$", view.run_combo.currentText()), view.run_combo.currentText()
    # By default the file to share and, for a model this small, the 8-bit file the app goes on with.
    assert view.chosen_quantizations() == ("Q8_0", "Q4_K_M")
    assert view.working_line.text() == (
        "The app goes on with Q8_0: Collect, Chat and Evaluate run it. Q4_K_M is for sharing."
    )
    view.quant_checks["Q8_0"].click()
    assert view.chosen_quantizations() == ("Q4_K_M",)
    assert "At 4 bits much of a short run's change is rounded away: tick Q8_0" in view.working_line.text()
    view._on_run_changed()  # the run's defaults do not undo what the person ticked
    assert view.chosen_quantizations() == ("Q4_K_M",)
    view.quant_checks["Q4_K_M"].click()
    assert view.working_line.text() == "Tick at least one file type." and not view.export_button.isEnabled()
    view.quant_checks["Q8_0"].click()
    view.quant_checks["F16"].click()
    assert view.chosen_quantizations() == ("Q8_0", "F16")
    assert view.working_line.text().endswith("F16 is for sharing.")

    with qtbot.waitSignal(view.models_changed, timeout=WAIT_MS):
        qtbot.mouseClick(view.export_button, Qt.MouseButton.LeftButton)
        assert not view.export_button.isEnabled() and view.stop_button.isEnabled()

    folder = app_home.exports_dir / "tiny-run-1"
    assert (folder / "tiny-run-1.Q8_0.gguf").is_file() and (folder / "tiny-run-1.F16.gguf").is_file()
    assert "Tokenizers agree" in view.report_text()
    assert "Answers like the trained model" in view.parity_badge.text()
    assert view.exports_tree.topLevelItemCount() == 2
    assert "Registered as" in view.activity()
    aligned = [m for m in view_store.list_models() if m.source == "aligned"]
    assert len(aligned) == 1 and aligned[0].run_id == 1
    assert aligned[0].path.endswith(".Q8_0.gguf"), "the file the app goes on with is the registered model"
    # The registered file is selected at once: "Chat with it" works without a click on its row.
    assert view.exports_tree.currentItem().toolTip(0) == aligned[0].path
    assert view.chat_button.isEnabled() and view.evaluate_button.isEnabled()

    # A past export can be chatted with and run from a terminal.
    view.exports_tree.setCurrentItem(view.exports_tree.topLevelItem(0))
    assert "llama-cli -m" in view.llama_cpp_command() and "--jinja" in view.llama_cpp_command()
    chosen = []
    view.model_chosen.connect(chosen.append)
    exported_paths = {view.exports_tree.topLevelItem(i).toolTip(0) for i in range(2)}
    registered = next(i for i in range(2) if view.exports_tree.topLevelItem(i).toolTip(0) == aligned[0].path)
    assert aligned[0].path in exported_paths
    view.exports_tree.setCurrentItem(view.exports_tree.topLevelItem(registered))
    qtbot.mouseClick(view.chat_button, Qt.MouseButton.LeftButton)
    assert [m.id for m in chosen] == [aligned[0].id]

    # Another day: the parity report of a past export is there when the person selects it.
    later = ExportView(store=view_store, registry=view.registry, paths=app_home)
    qtbot.addWidget(later)
    later.show()
    assert later.report_text() == ""
    later.exports_tree.setCurrentItem(later.exports_tree.topLevelItem(0))
    assert "Tokenizers agree" in later.report_text() and "Q8_0: " in later.report_text()
    assert "Answers like the trained model" in later.parity_badge.text()


def test_exporting_under_an_existing_name_is_refused_in_the_banner(qtbot, view, app_home):
    (app_home.exports_dir / "tiny-run-1").mkdir(parents=True)
    notes: list[str] = []
    view.status_message.connect(notes.append)
    qtbot.mouseClick(view.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.banner.message() != "", timeout=WAIT_MS)
    assert "already exists" in view.banner.message()
    assert any("already exists" in note for note in notes)  # the status bar hears it, as from every view
    assert "failed" in view.activity()
    # Export comes back once the job's thread has ended and let go of the export slot.
    qtbot.waitUntil(view.export_button.isEnabled, timeout=WAIT_MS)
    assert view.exports_tree.topLevelItemCount() == 0


def test_stop_keeps_nothing_and_the_database_unchanged(qtbot, view, view_store, app_home):
    before = view_store.table_counts()
    view.start_export()
    qtbot.waitUntil(lambda: "Converting" in view.activity() or "Writing" in view.activity(), timeout=WAIT_MS)
    qtbot.mouseClick(view.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not view.exporting(), timeout=WAIT_MS)
    assert "stopped" in view.activity().lower()
    assert list(app_home.exports_dir.iterdir()) == []
    assert view_store.table_counts() == before


def test_with_no_finished_run_the_view_says_what_it_needs(qtbot, registry, app_home):
    store = Store.open(app_home.db_path)
    try:
        view = ExportView(store=store, registry=registry, paths=app_home)
        qtbot.addWidget(view)
        view.show()
        assert view.empty_label.isVisible() and "needs a finished training run" in view.empty_label.text()
        assert not view.export_button.isEnabled()
        assert not view.start_export()
    finally:
        store.close()


def test_the_window_stays_responsive_while_exporting(qtbot, view):
    ticks = []
    from PySide6.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    with qtbot.waitSignal(view.models_changed, timeout=WAIT_MS):
        view.start_export()
    timer.stop()
    QApplication.processEvents()
    assert len(ticks) > 3  # the event loop kept running while the worker merged, converted and quantized


def _shown_bytes(text: str) -> float:
    """The size a label shows ("about 134 KB") in bytes."""
    number, unit = re.search(r"about ([\d.]+) (B|KB|MB|GB)", text).groups()
    return float(number) * {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def test_a_finished_export_is_ready_to_chat_with_and_its_report_fits_a_small_window(qtbot, view, app_home):
    view.resize(1024 - 212, 640)  # the smallest usual window, less the sidebar
    estimate = _shown_bytes(view.quant_checks["Q8_0"].text())
    chosen = []
    view.model_chosen.connect(chosen.append)
    with qtbot.waitSignal(view.models_changed, timeout=WAIT_MS):
        qtbot.mouseClick(view.export_button, Qt.MouseButton.LeftButton)

    # The new file the app goes on with is selected: every action on it is ready, no click on its row needed.
    written = app_home.exports_dir / "tiny-run-1" / "tiny-run-1.Q8_0.gguf"
    assert view.exports_tree.currentItem().toolTip(0) == str(written)
    for action in (view.chat_button, view.evaluate_button, view.open_button, view.copy_button):
        assert action.isEnabled(), action.text()
    qtbot.mouseClick(view.chat_button, Qt.MouseButton.LeftButton)
    assert [m.path for m in chosen] == [str(written)]

    # The size offered before exporting was close to the file's (llama.cpp's mix of types, not a flat rate).
    assert abs(estimate - written.stat().st_size) / written.stat().st_size < 0.15

    # The success line wraps on a row of its own: all of it shows, and none of it runs under Stop or Export.
    label = view.activity_row.label
    text = label.text()
    assert "Registered as" in text and str(written.parent) in text

    def fits() -> bool:  # once the layout has settled (it is laid out again after the text changed)
        needed = label.fontMetrics().boundingRect(
            QRect(0, 0, label.width(), 10_000), Qt.TextFlag.TextWordWrap, text
        )
        return label.isVisible() and needed.width() <= label.width() and needed.height() <= label.height()

    qtbot.waitUntil(fits, timeout=5_000)
    # ... in the page as the window holds it: nothing asked the window to grow to show it all.
    assert (view.width(), view.height()) == (1024 - 212, 640)
    shown = QRect(label.mapTo(view, QPoint(0, 0)), label.size())
    assert view.rect().contains(shown.topRight())
    for button in (view.stop_button, view.export_button):
        placed = QRect(button.mapTo(view, QPoint(0, 0)), button.size())
        assert not shown.intersects(placed) and view.rect().contains(placed)

    # The report leads with a sentence a person understands; the measurements are folded away.
    assert view.report_summary.isVisible()
    assert view.report_summary.text().startswith("The exported model answers like the one you trained")
    assert re.search(r"same next word \d+ of \d+ times", view.report_summary.text())
    assert view.details_toggle.isVisible() and not view.report_lines.isVisible()
    assert "Tokenizers agree" not in view.report_summary.text()
    qtbot.mouseClick(view.details_toggle, Qt.MouseButton.LeftButton)
    assert view.report_lines.isVisible() and "Tokenizers agree" in view.report_lines.text()


def test_a_skipped_check_says_so_in_plain_words_and_offers_no_details(qtbot, view):
    view.parity_check.setChecked(False)
    with qtbot.waitSignal(view.models_changed, timeout=WAIT_MS):
        view.start_export()
    assert view.report_summary.text().startswith("The check was skipped")
    assert view.parity_badge.text() == "Check skipped"
    assert not view.details_toggle.isVisible() and not view.report_lines.isVisible()
    assert view.chat_button.isEnabled()
