"""First run in the main window: the demo model is unpacked in the background and becomes the default, the
welcome card greets an empty database and leads to Collect, and the Gemma terms can be read offline."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core import demo_model
from desktop_dpo.core.demo_model import DEMO_DISPLAY_NAME, DemoPackage
from desktop_dpo.core.models import register_model
from desktop_dpo.gui.first_run import starter_prompts_path
from desktop_dpo.gui.main_window import MainWindow
from desktop_dpo.gui.terms_dialog import TermsDialog
from tests.core.test_first_run import package_from

WAIT_MS = 60_000  # generous: the machine is shared; nothing here asserts on time
REAL_PACKAGE_WAIT_MS = 300_000  # ~250 MB copied and hashed on a shared disk


def use_package(monkeypatch, package: DemoPackage | None) -> None:
    """The demo package every caller sees (the main window, the first run, the Models view)."""
    monkeypatch.setattr(demo_model, "demo_package", lambda: package)
    monkeypatch.setattr(demo_model, "demo_installed", lambda: package is not None)


@pytest.fixture
def fake_package(monkeypatch, tiny_gguf, tmp_path) -> DemoPackage:
    """The tiny GGUF in chunks, standing in for the 250 MB demo package (one test uses the real one)."""
    package = package_from(tiny_gguf, tmp_path / "package")
    use_package(monkeypatch, package)
    return package


def wait_for_outcome(qtbot, window: MainWindow, timeout: int = WAIT_MS) -> str:
    assert window.first_run is not None
    qtbot.waitUntil(lambda: window.first_run.outcome is not None, timeout=timeout)
    qtbot.waitUntil(lambda: not window.registry.running(), timeout=timeout)
    return window.first_run.outcome


def demo_files(app_home) -> list[str]:
    folder = app_home.models_dir / "demo"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------- the demo model


def test_first_run_unpacks_the_demo_and_collect_opens_on_it(qtbot, make_window, gui_store, fake_package):
    window = make_window()
    assert window.current_view() == "collect"  # a new database opens where the welcome card is
    messages: list[str] = []
    assert window.start_first_run()
    window.first_run.message.connect(messages.append)
    card = window.first_run.card
    assert card.isVisible()
    assert card.model_status().startswith("Unpacking the demo model")

    assert wait_for_outcome(qtbot, window) == "succeeded"
    [model] = gui_store.list_models()
    assert (model.name, model.source, model.is_default) == (DEMO_DISPLAY_NAME, "demo", True)
    assert any(m.startswith("Unpacking the demo model… ") and m.endswith("%") for m in messages)
    assert "demo model is ready" in window.statusBar().currentMessage()
    assert "Ready" in card.model_status() and DEMO_DISPLAY_NAME in card.model_status()
    collect = window.view("collect")
    assert collect.current_model().id == model.id
    assert DEMO_DISPLAY_NAME in collect.model_combo.currentText()
    assert demo_files(window.paths) == ["demo.gguf"]


def test_a_second_start_does_nothing(qtbot, make_window, gui_store, fake_package, app_home):
    first = make_window()
    first.start_first_run()
    assert wait_for_outcome(qtbot, first) == "succeeded"
    unpacked = app_home.models_dir / "demo" / "demo.gguf"
    written = unpacked.stat().st_mtime_ns
    assert first.close()

    second = make_window()
    assert not second.start_first_run()
    assert not second.start_first_run()  # and calling it twice is harmless
    QApplication.processEvents()
    assert second.registry.running() == [] and second.first_run.job is None
    assert unpacked.stat().st_mtime_ns == written
    assert len(gui_store.list_models()) == 1
    assert "Ready" in second.first_run.card.model_status()  # still no pairs: still greeted


def test_without_the_demo_package_nothing_runs_and_the_card_says_how_to_add_a_model(
    qtbot, monkeypatch, make_window, gui_store
):
    use_package(monkeypatch, None)
    window = make_window()
    assert not window.start_first_run()
    QApplication.processEvents()
    assert window.registry.running() == []
    card = window.first_run.card
    assert card.isVisible()
    assert "No model yet: add a GGUF file or a Hugging Face folder" in card.model_status()
    assert card.add_model_button.objectName() == "primaryButton"  # the next step stands out
    assert window.terms_action is None  # no Gemma terms without Gemma
    qtbot.mouseClick(card.add_model_button, Qt.MouseButton.LeftButton)
    assert window.current_view() == "models"


def test_a_damaged_package_is_explained_and_nothing_is_registered_or_lost(
    qtbot, make_window, gui_store, monkeypatch, tiny_gguf, tmp_path
):
    use_package(monkeypatch, package_from(tiny_gguf, tmp_path / "package", sha256="0" * 64))
    gui_store.queue_prompts([[{"role": "user", "content": "Saved before the first run?"}]])
    window = make_window()
    window.start_first_run()
    assert wait_for_outcome(qtbot, window) == "failed"

    status = window.first_run.card.model_status()
    assert "did not pass its checksum" in status and "pip install --force-reinstall" in status
    assert "could not be set up" in status
    assert gui_store.list_models() == []
    assert demo_files(window.paths) == []
    assert [p.text for p in gui_store.queued_prompts()] == ["Saved before the first run?"]


def test_quitting_while_unpacking_leaves_no_file_and_the_next_start_tries_again(
    qtbot, monkeypatch, make_window, gui_store, fake_package
):
    # Nothing to lose and it resumes next time: quitting does not ask about the unpacking.
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: pytest.fail("asked"))
    window = make_window()
    copying = threading.Event()

    def hold_the_copy(thread):
        # Runs in the job's thread at its first step (a block written to the temporary file): the copy is
        # held there until the quit below stops it, so the stop lands mid-copy every time.
        def on_event(_event):
            copying.set()
            thread.token.wait(WAIT_MS / 1000)

        thread.event.connect(on_event, Qt.ConnectionType.DirectConnection)

    window.start_first_run()
    window.first_run.job_started.connect(hold_the_copy)
    qtbot.waitUntil(copying.is_set, timeout=WAIT_MS)
    assert window.close()
    assert wait_for_outcome(qtbot, window) == "cancelled"

    assert demo_files(window.paths) == []  # neither the model nor a .partial file
    assert gui_store.list_models() == []
    assert "starts again" in window.first_run.card.model_status()
    again = make_window()
    assert again.start_first_run()
    assert wait_for_outcome(qtbot, again) == "succeeded"


def test_the_real_demo_package_opens_the_app_ready_to_collect(qtbot, make_window, gui_store, app_home):
    package = demo_model.demo_package()
    assert package is not None, "the demo extra is part of the test environment"
    window = make_window()
    window.start_first_run()
    assert wait_for_outcome(qtbot, window, REAL_PACKAGE_WAIT_MS) == "succeeded"

    model = gui_store.default_model()
    assert (model.source, model.name, model.info["architecture"]) == ("demo", DEMO_DISPLAY_NAME, "gemma3")
    assert model.path == str(app_home.models_dir / "demo" / package.file_name)
    # Ready to collect: the starter prompts go in, and a pair of answers comes out of Gemma.
    window.first_run.card.starter_button.click()
    collect = window.view("collect")
    collect.set_sampling_settings(SamplingSettings(max_tokens=4))
    assert collect.sample_button.isEnabled()
    assert collect.sample()
    qtbot.waitUntil(lambda: collect.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    assert collect.pair is not None and collect.pair.model_ids == (model.id, model.id)


# ------------------------------------------------------------------------------------- the welcome card


def test_the_starter_prompts_button_queues_62_prompts_and_shows_the_first(
    qtbot, monkeypatch, make_window, gui_store
):
    use_package(monkeypatch, None)  # the card, not the demo model, is under test
    window = make_window()
    window.show_view("data")
    window.start_first_run()
    card = window.first_run.card
    assert card.starter_button.text() == "Load the starter prompts (62)"
    window.show_view("collect")
    qtbot.mouseClick(card.starter_button, Qt.MouseButton.LeftButton)

    assert len(gui_store.queued_prompts()) == 62
    assert window.current_view() == "collect"
    first = starter_prompts_path().read_text(encoding="utf-8").splitlines()[0]
    collect = window.view("collect")
    assert collect.prompt_edit.toPlainText() == first
    assert collect.queue_label.text() == "62 queued"
    assert not card.starter_button.isEnabled()  # not queued twice


def test_write_my_own_prompt_puts_the_cursor_in_the_prompt_editor(qtbot, monkeypatch, make_window):
    use_package(monkeypatch, None)
    window = make_window()
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    window.show_view("data")
    window.start_first_run()
    window.show_view("collect")
    qtbot.mouseClick(window.first_run.card.write_button, Qt.MouseButton.LeftButton)
    collect = window.view("collect")
    assert window.current_view() == "collect"
    qtbot.waitUntil(collect.prompt_edit.hasFocus)


def test_the_welcome_card_goes_after_the_first_pick(qtbot, make_window, gui_store, fake_package, app_home):
    window = make_window()
    window.start_first_run()
    assert wait_for_outcome(qtbot, window) == "succeeded"
    collect = window.view("collect")
    collect.set_sampling_settings(SamplingSettings(max_tokens=4))
    collect.set_prompt("Say hello.")
    assert window.first_run.card_visible()
    assert collect.sample()
    qtbot.waitUntil(lambda: collect.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    assert window.first_run.card_visible()  # answers on screen, nothing saved yet

    qtbot.mouseClick(collect.verdict_buttons["left"], Qt.MouseButton.LeftButton)
    assert gui_store.count_comparisons() == 1
    assert not window.first_run.card_visible()
    assert not window.first_run.card.isVisible()
    assert window.close()
    later = make_window()
    later.start_first_run()
    assert later.first_run.card is None  # a database with pairs is not greeted again


def test_a_new_database_opens_on_collect_and_pairs_without_a_model_open_models(
    make_window, gui_store, app_home
):
    assert make_window().current_view() == "collect"
    gui_store.record_pair(
        messages=[{"role": "user", "content": "Hi?"}], text_a="Hello.", text_b="Go away.", verdict="a"
    )
    (app_home.data_dir / "window.ini").unlink(missing_ok=True)  # a first start, as far as the window knows
    assert make_window().current_view() == "models"


# ------------------------------------------------------------------------------------- the Gemma terms


def test_the_help_menu_shows_the_gemma_terms_offline(qtbot, make_window):
    window = make_window()
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    entry = next(a for a in help_menu.actions() if a.text() == "Gemma terms of use…")
    entry.trigger()
    dialog = window.terms_dialog
    assert isinstance(dialog, TermsDialog) and dialog.isVisible()
    text = dialog.terms_plain_text()
    assert text.startswith("Gemma Terms of Use") and "Section 1: DEFINITIONS" in text
    assert "huggingface.co" in dialog.notice_text.toPlainText()
    assert not dialog.terms_text.openExternalLinks() and not dialog.terms_text.openLinks()

    # A link to the web is named, not opened: the terms stay on screen.
    dialog.terms_text.anchorClicked.emit(QUrl("https://ai.google.dev/gemma/prohibited_use_policy"))
    assert dialog.link_note.isVisible()
    assert "https://ai.google.dev/gemma/prohibited_use_policy" in dialog.link_note.text()
    assert dialog.terms_plain_text() == text
    dialog.close()


def test_the_demo_models_details_link_to_its_terms(qtbot, make_window, gui_store, tiny_gguf, tiny_model_dir):
    demo = register_model(gui_store, tiny_gguf, source="demo", name=DEMO_DISPLAY_NAME)
    own = register_model(gui_store, tiny_model_dir, name="my model")
    window = make_window()
    window.show_view("models")
    models = window.view("models")
    models.select_model(own.id)
    assert not models.terms_note.isVisible()
    models.select_model(demo.id)
    assert models.terms_note.isVisible() and "Gemma Terms of Use" in models.terms_note.text()
    models.terms_note.linkActivated.emit("terms")
    assert isinstance(models.terms_dialog, TermsDialog) and models.terms_dialog.isVisible()
    assert "Section 1: DEFINITIONS" in models.terms_dialog.terms_plain_text()
    models.terms_dialog.close()


def test_the_main_window_offers_everything_the_first_run_uses(make_window):
    from PySide6.QtCore import SignalInstance

    from desktop_dpo.gui.first_run import FirstRunHost

    window = make_window()
    signals = {name for name, kind in FirstRunHost.__annotations__.items() if kind == "SignalInstance"}
    assert signals == {"view_changed", "pairs_changed", "closing"}
    for name in FirstRunHost.__annotations__:
        assert hasattr(window, name), name
    for name in signals:
        assert isinstance(getattr(window, name), SignalInstance), name
    methods = [
        name for name, value in vars(FirstRunHost).items() if callable(value) and not name.startswith("_")
    ]
    assert sorted(methods) == ["add_above_view", "show_view", "view"]
    for name in methods:
        assert callable(getattr(window, name)), name
