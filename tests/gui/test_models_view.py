"""The Models view, through its real widgets: adding models (and refusing bad ones in words), the models found
on this computer, the default, removing, and the trainable copy of a GGUF, on the session's tiny model."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QToolButton

from desktop_dpo.core.llm.templates import DEFAULT_TEMPLATE
from desktop_dpo.core.model_files import TRAINABLE_COPY_MARKER, is_partial_output
from desktop_dpo.core.models import ModelSearchDirs, fingerprint, register_model, trainable_copy
from desktop_dpo.core.store import Store
from desktop_dpo.core.wording import human_size
from desktop_dpo.gui import discovered_models, model_registration
from desktop_dpo.gui.main_window import MainWindow
from desktop_dpo.gui.model_details_panel import (
    COPY_READY,
    DEFAULT_TEMPLATE_LABEL,
    NEEDS_COPY,
    OWN_TEMPLATE_LABEL,
    human_count,
)
from desktop_dpo.gui.models_view import COLUMNS, ModelsView
from desktop_dpo.workers.job_worker import JobRegistry
from tests.core.test_models import write_gguf, write_hf_folder
from tests.gui.conftest import cut_texts, hold_the_trainable_copy

WAIT_MS = 60_000  # generous: the machine is shared; nothing here asserts on time
COPY_WAIT_MS = 300_000  # the first trainable copy imports transformers and torch


@pytest.fixture
def no_dirs(tmp_path) -> ModelSearchDirs:
    """Search folders with nothing in them (most tests are not about discovery)."""
    return ModelSearchDirs(
        hf_hub=(tmp_path / "no-hf",), lmstudio=(tmp_path / "no-lms",), ollama=(tmp_path / "no-ol",)
    )


@pytest.fixture
def make_view(qtbot, gui_store, registry, app_home, no_dirs):
    def make(search_dirs: ModelSearchDirs | None = None) -> ModelsView:
        view = ModelsView(
            store=gui_store, registry=registry, paths=app_home, search_dirs=search_dirs or no_dirs
        )
        qtbot.addWidget(view)
        view.resize(910, 680)  # the main window's default size, less the sidebar
        view.show()
        qtbot.waitUntil(lambda: not view.is_scanning(), timeout=WAIT_MS)
        return view

    return make


@pytest.fixture
def view(make_view) -> ModelsView:
    return make_view()


@pytest.fixture
def changes(view) -> list[str]:
    """One entry per models_changed signal."""
    seen: list[str] = []
    view.models_changed.connect(lambda: seen.append("changed"))
    return seen


def add_and_wait(qtbot, view: ModelsView, path, **kwargs) -> None:
    """Add a model and wait until its job is over (the model is listed, or the banner says why not)."""
    before = len(view.models())
    assert view.add_model_path(path, **kwargs)
    qtbot.waitUntil(lambda: len(view.models()) > before or bool(view.error_text()), timeout=WAIT_MS)


def refresh(qtbot, view: ModelsView) -> None:
    """Re-read models added through the store, and let the layout place the details' buttons (a person
    cannot click a button before it is on screen)."""
    view.refresh()
    qtbot.waitUntil(lambda: view.remove_button.width() > 0 and view.copy_button.width() > 0, timeout=WAIT_MS)


def model_by_path(store: Store, path) -> object:
    return next(m for m in store.list_models() if Path(m.path) == Path(path).absolute())


# ------------------------------------------------------------------------------------------- empty state


def test_a_new_person_is_told_what_to_do(view):
    assert view.models_stack.currentWidget() is view.empty_state
    assert "Add a Hugging Face folder or a GGUF file" in view.empty_text.text()
    assert view.empty_folder_button.isEnabled() and view.empty_gguf_button.isEnabled()
    assert not view.use_button.isEnabled() and not view.remove_button.isEnabled()
    assert "No models in the Hugging Face cache, LM Studio or Ollama" in view.discovered_note.text()


def test_parameter_counts_read_as_model_cards_write_them():
    assert [human_count(n) for n in (268_098_176, 1_500_000_000, 6_200, 7_000_000_000, None)] == [
        "268M",
        "1.5B",
        "6.2K",
        "7B",
        "—",
    ]


# ------------------------------------------------------------------------------------------- adding


def test_adding_the_tiny_folder_and_gguf_shows_what_they_are(
    qtbot, view, changes, gui_store, tiny_model_dir, tiny_gguf
):
    add_and_wait(qtbot, view, tiny_model_dir)
    assert view.error_text() == ""
    hf = model_by_path(gui_store, tiny_model_dir)
    assert view.models_stack.currentWidget() is view.table
    row = view.row_texts(hf.id)
    assert row["Format"] == f"Hugging Face · {hf.info['dtype']}"
    assert row["Architecture"] == "llama"
    assert row["Context"] == "512"
    assert row["Chat template"] == OWN_TEMPLATE_LABEL
    assert row["Training"] == "trainable as is"
    assert row["Source"] == "yours"
    params = human_count(hf.info["parameter_count"])
    assert params != "—"
    assert row["Size"] == f"{params} parameters\n{human_size(hf.info['size_bytes'])}"

    add_and_wait(qtbot, view, tiny_gguf)
    gguf = model_by_path(gui_store, tiny_gguf)
    row = view.row_texts(gguf.id)
    assert (row["Format"], row["Architecture"], row["Context"]) == ("GGUF · F32", "llama", "512")
    assert row["Chat template"] == OWN_TEMPLATE_LABEL
    assert row["Training"] == NEEDS_COPY
    assert row["Size"].endswith(human_size(tiny_gguf.stat().st_size))
    assert changes == ["changed", "changed"]

    # The model just added is selected, with its details.
    assert view.selected_model().id == gguf.id
    details = view.details_texts()
    assert details["path"] == str(tiny_gguf.absolute())
    assert details["fingerprint"] == fingerprint(tiny_gguf) == gguf.fingerprint
    assert "<|assistant|>" in details["template_text"]
    assert view.copy_button.isEnabled()


def test_in_a_small_window_names_stay_readable_and_the_details_scroll_whole(
    qtbot, view, app_style, gui_store, tiny_model_dir, tiny_gguf
):
    """At 1024×640 (the page is ~790 px wide) the columns the details also show make way for the names, and
    the details keep each line whole, scrolling when they need more height than the panel has."""
    from desktop_dpo.gui.models_view import NAME_MIN_PX

    add_and_wait(qtbot, view, tiny_model_dir, name="A model with a rather long name for a small window")
    add_and_wait(qtbot, view, tiny_gguf)
    view.resize(790, 580)
    name_column = COLUMNS.index("Name")
    qtbot.waitUntil(lambda: view.table.columnWidth(name_column) >= NAME_MIN_PX, timeout=WAIT_MS)
    assert not view.table.horizontalScrollBar().isVisible()
    assert view.table.isColumnHidden(COLUMNS.index("Context"))
    assert not view.table.isColumnHidden(COLUMNS.index("Chat template"))  # what needs a choice stays
    assert cut_texts(view) == []
    view.resize(1700, 900)  # room again: every column is back
    qtbot.waitUntil(lambda: not view.table.isColumnHidden(COLUMNS.index("Context")), timeout=WAIT_MS)
    assert cut_texts(view) == []


def test_a_base_model_is_labelled_with_the_default_template_and_its_stop_strings(
    qtbot, view, gui_store, tmp_path
):
    # A Hugging Face folder without a template is a base model (a GGUF without one needs a choice instead:
    # tests/gui/test_template_editor.py).
    base = write_hf_folder(tmp_path / "base-model")
    add_and_wait(qtbot, view, base)
    model = model_by_path(gui_store, base)
    assert view.row_texts(model.id)["Chat template"] == DEFAULT_TEMPLATE_LABEL
    view.select_model(model.id)
    details = view.details_texts()
    assert details["template_text"].endswith(DEFAULT_TEMPLATE)
    assert "User: Tell me about tea.\nAssistant:" in details["template_text"]
    assert r"'\nUser:'" in details["template"] and r"'\nAssistant:'" in details["template"]
    assert details["template_notice"] == ""


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "not-there"


def _empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _bert(tmp_path: Path) -> Path:
    return write_hf_folder(tmp_path / "bert", config={"model_type": "bert"})


def _custom_code(tmp_path: Path) -> Path:
    return write_hf_folder(tmp_path / "custom", config={"auto_map": {"AutoModelForCausalLM": "modeling_x.X"}})


def _truncated_gguf(tmp_path: Path) -> Path:
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) - 64])
    return cut


@pytest.mark.parametrize(
    ("make_path", "words"),
    [
        (_missing, "nothing is there"),
        (_empty_folder, "holds no model weights"),
        (_bert, "'bert' model, which desktop-dpo cannot train"),
        (_custom_code, "never runs code from model folders"),
        (_truncated_gguf, "incomplete"),
    ],
    ids=["missing", "no-weights", "unsupported-architecture", "trust-remote-code", "truncated-gguf"],
)
def test_bad_input_is_explained_and_adds_nothing(qtbot, view, changes, gui_store, tmp_path, make_path, words):
    register_model(gui_store, write_gguf(tmp_path / "kept.gguf"), name="kept")
    refresh(qtbot, view)
    add_and_wait(qtbot, view, make_path(tmp_path))
    assert words in view.error_text()
    assert [m.name for m in gui_store.list_models()] == ["kept"], "a refusal must not touch what is saved"
    assert [m.name for m in view.models()] == ["kept"]
    assert changes == []
    qtbot.waitUntil(lambda: view.add_folder_button.isEnabled(), timeout=WAIT_MS)
    qtbot.mouseClick(view.banner.findChild(QToolButton), Qt.MouseButton.LeftButton)  # dismissed
    assert view.error_text() == ""


@pytest.fixture
def pickle_folder(tmp_path) -> Path:
    folder = write_hf_folder(tmp_path / "old-model", config={"torch_dtype": "float16"}, tensors={})
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    return folder


def test_pickle_weights_are_added_only_when_the_person_says_yes(
    qtbot, monkeypatch, view, changes, gui_store, pickle_folder
):
    asked: list[str] = []

    def answer(reply):
        def question(parent, title, text, *args):
            asked.append(text)
            return reply

        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    assert view.add_model_path(pickle_folder)
    qtbot.waitUntil(lambda: bool(view.error_text()), timeout=WAIT_MS)
    assert "can run any code" in asked[0] and "old-model" in asked[0]
    assert "Not added" in view.error_text() and "pickle" in view.error_text()
    assert gui_store.list_models() == [] and changes == []

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    qtbot.waitUntil(lambda: view.add_folder_button.isEnabled(), timeout=WAIT_MS)
    assert view.add_model_path(pickle_folder)
    qtbot.waitUntil(lambda: len(gui_store.list_models()) == 1, timeout=WAIT_MS)
    (model,) = gui_store.list_models()
    assert len(asked) == 2
    assert model.info["weights_format"] == "pickle"
    assert view.row_texts(model.id)["Format"] == "Hugging Face · F16 · pickle"
    assert view.error_text() == ""
    assert changes == ["changed"]


def test_a_slow_disk_does_not_freeze_the_window(qtbot, monkeypatch, view, gui_store, tiny_gguf):
    inside, release = threading.Event(), threading.Event()
    real_fingerprint = model_registration.fingerprint

    def slow_fingerprint(path):  # reading the weights' headers from a slow disk
        inside.set()
        release.wait(60)
        return real_fingerprint(path)

    monkeypatch.setattr(model_registration, "fingerprint", slow_fingerprint)
    assert view.add_model_path(tiny_gguf)
    qtbot.waitUntil(inside.is_set, timeout=WAIT_MS)
    # The window goes on answering meanwhile; adding another model waits for this one.
    assert view.activity().startswith("Reading")
    assert not view.add_folder_button.isEnabled() and not view.add_gguf_button.isEnabled()
    qtbot.mouseClick(view.rescan_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not view.is_scanning(), timeout=WAIT_MS)
    assert gui_store.list_models() == []
    release.set()
    qtbot.waitUntil(lambda: len(view.models()) == 1, timeout=WAIT_MS)
    assert view.activity() == ""
    qtbot.waitUntil(lambda: view.add_gguf_button.isEnabled(), timeout=WAIT_MS)


# ------------------------------------------------------------------------------------------- on this computer


@pytest.fixture
def fake_computer(tmp_path) -> ModelSearchDirs:
    """A Hugging Face cache, an LM Studio folder and an Ollama store, each holding one model."""
    hub = tmp_path / "hf" / "hub"
    snapshot = hub / "models--acme--tiny" / "snapshots" / ("1" * 40)
    write_hf_folder(snapshot)
    (hub / "models--acme--tiny" / "refs").mkdir()
    (hub / "models--acme--tiny" / "refs" / "main").write_text("1" * 40)
    lmstudio = tmp_path / "lmstudio" / "models"
    (lmstudio / "lmstudio-community" / "Qwen3-GGUF").mkdir(parents=True)
    write_gguf(lmstudio / "lmstudio-community" / "Qwen3-GGUF" / "Qwen3-Q4_K_M.gguf", arch="qwen3")
    ollama = tmp_path / "ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    digest = "a" * 64
    write_gguf(ollama / "blobs" / f"sha256-{digest}", name="Llama 3.2 1B")
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "llama3.2" / "1b"
    manifest.parent.mkdir(parents=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 1}
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [layer]}))
    return ModelSearchDirs(hf_hub=(hub,), lmstudio=(lmstudio,), ollama=(ollama,))


def test_models_on_this_computer_are_listed_and_added_with_one_click(
    qtbot, make_view, fake_computer, gui_store, tmp_path
):
    view = make_view(fake_computer)
    qtbot.waitUntil(lambda: len(view.discovered()) == 3, timeout=WAIT_MS)
    table = view.discovered_table
    shown = {table.item(row, 0).text(): table.item(row, 1).text() for row in range(table.rowCount())}
    assert shown == {
        "acme/tiny": "HF cache",
        "lmstudio-community/Qwen3-GGUF/Qwen3-Q4_K_M.gguf": "LM Studio",
        "llama3.2:1b": "Ollama",
    }
    assert "3 models" in view.discovered_note.text()

    qtbot.mouseClick(view.add_button_for("llama3.2:1b"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(gui_store.list_models()) == 1, timeout=WAIT_MS)
    (model,) = gui_store.list_models()
    assert (model.name, model.source, model.kind) == ("llama3.2:1b", "ollama", "gguf")
    assert view.row_texts(model.id)["Source"] == "Ollama"
    assert view.add_button_for("llama3.2:1b").text() == "Added"
    assert not view.add_button_for("llama3.2:1b").isEnabled()

    qtbot.waitUntil(lambda: view.add_button_for("acme/tiny").isEnabled(), timeout=WAIT_MS)
    qtbot.mouseClick(view.add_button_for("acme/tiny"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(gui_store.list_models()) == 2, timeout=WAIT_MS)
    hf = next(m for m in gui_store.list_models() if m.kind == "hf")
    assert (hf.name, hf.source) == ("acme/tiny", "hf_cache")
    assert view.row_texts(hf.id)["Source"] == "HF cache"

    # A model downloaded meanwhile appears on Rescan.
    write_gguf(
        fake_computer.lmstudio[0] / "lmstudio-community" / "Qwen3-GGUF" / "Qwen3-Q8_0.gguf", arch="qwen3"
    )
    qtbot.mouseClick(view.rescan_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(view.discovered()) == 4, timeout=WAIT_MS)
    assert view.add_button_for("lmstudio-community/Qwen3-GGUF/Qwen3-Q8_0.gguf").isEnabled()


# ------------------------------------------------------------------------------------------- choosing, default, removing


@pytest.fixture
def two_models(qtbot, view, gui_store, tmp_path):
    first = register_model(gui_store, write_gguf(tmp_path / "first.gguf", name="First"))
    second = register_model(gui_store, write_gguf(tmp_path / "second.gguf", name="Second"))
    refresh(qtbot, view)
    return first, second


def test_set_as_default_marks_the_model(qtbot, view, changes, gui_store, two_models):
    first, second = two_models
    view.select_model(second.id)
    qtbot.mouseClick(view.default_button, Qt.MouseButton.LeftButton)
    assert gui_store.default_model().id == second.id
    assert view.row_texts(second.id)["Name"] == "Second  ★ default"
    assert view.row_texts(first.id)["Name"] == "First"
    assert view.selected_model().id == second.id
    assert not view.default_button.isEnabled(), "it is the default already"
    assert changes == ["changed"]


def test_use_this_model_tells_the_other_views(qtbot, view, two_models):
    first, second = two_models
    chosen: list[object] = []
    view.model_chosen.connect(chosen.append)
    view.select_model(second.id)
    qtbot.mouseClick(view.use_button, Qt.MouseButton.LeftButton)
    assert [m.id for m in chosen] == [second.id]
    assert chosen[0].name == "Second"
    view.select_model(first.id)
    view.table.setFocus()
    qtbot.keyClick(view.table, Qt.Key.Key_Return)  # Enter in the list does the same
    assert [m.id for m in chosen] == [second.id, first.id]


def test_removing_a_model_keeps_the_comparisons_made_with_it(
    qtbot, monkeypatch, view, changes, gui_store, two_models
):
    first, second = two_models
    gui_store.record_pair(
        messages=[{"role": "user", "content": "Tell me about tea."}],
        text_a="Tea is a drink.",
        text_b="Tea grows on bushes.",
        verdict="b",
        model_a_id=first.id,
        model_b_id=first.id,
    )
    view.select_model(first.id)
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.No)
    qtbot.mouseClick(view.remove_button, Qt.MouseButton.LeftButton)
    assert len(gui_store.list_models()) == 2 and changes == [], "the person said no"

    asked: list[str] = []
    monkeypatch.setattr(
        QMessageBox,
        "question",
        lambda parent, title, text, *a: asked.append(text) or QMessageBox.StandardButton.Yes,
    )
    view.table.setFocus()
    qtbot.keyClick(view.table, Qt.Key.Key_Delete)  # the Delete key asks too
    assert "Its files stay where they are" in asked[0]
    assert [m.id for m in gui_store.list_models()] == [second.id]
    assert [m.id for m in view.models()] == [second.id]
    assert Path(first.path).is_file(), "the model's file was not touched"
    (saved,) = gui_store.comparison_views()
    assert (saved.text_a, saved.text_b, saved.comparison.verdict) == (
        "Tea is a drink.",
        "Tea grows on bushes.",
        "b",
    )
    assert gui_store.count_usable_pairs() == 1
    assert view.error_text() == ""
    assert changes == ["changed"]


# ------------------------------------------------------------------------------------------- trainable copy


def test_trainable_copy_is_made_and_recorded(qtbot, view, changes, gui_store, app_home, tiny_gguf):
    model = register_model(gui_store, tiny_gguf, name="tiny")
    refresh(qtbot, view)
    view.select_model(model.id)
    assert view.row_texts(model.id)["Training"] == NEEDS_COPY
    progress: list[int] = []
    view.activity_row.bar.valueChanged.connect(progress.append)

    qtbot.mouseClick(view.copy_button, Qt.MouseButton.LeftButton)
    assert view.stop_button.isVisible() and view.stop_button.isEnabled()
    assert not view.copy_button.isEnabled(), "one copy at a time"
    assert not view.remove_button.isEnabled(), "a model being copied cannot be removed"
    qtbot.waitUntil(lambda: view.row_texts(model.id)["Training"] == COPY_READY, timeout=COPY_WAIT_MS)

    copy = Path(gui_store.get_model(model.id).info["trainable_copy"])
    assert copy.parent == app_home.models_dir
    assert (copy / "config.json").is_file() and (copy / TRAINABLE_COPY_MARKER).is_file()
    assert not view.stop_button.isVisible()
    assert progress and progress[-1] == 1000
    assert not view.copy_button.isEnabled(), "the copy is ready"
    assert str(copy) in view.details_texts()["training"]
    assert changes == ["changed"]
    assert view.error_text() == ""


def test_stopping_a_trainable_copy_keeps_nothing_half_made(
    qtbot, monkeypatch, view, gui_store, app_home, tiny_gguf
):
    model = register_model(gui_store, tiny_gguf, name="tiny")
    refresh(qtbot, view)
    view.select_model(model.id)
    inside, release = hold_the_trainable_copy(monkeypatch)
    qtbot.mouseClick(view.copy_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(inside.is_set, timeout=WAIT_MS)
    assert [p for p in app_home.models_dir.iterdir() if is_partial_output(p)], "the copy was under way"

    qtbot.mouseClick(view.stop_button, Qt.MouseButton.LeftButton)
    release.set()
    qtbot.waitUntil(lambda: not view.stop_button.isVisible(), timeout=COPY_WAIT_MS)
    assert list(app_home.models_dir.iterdir()) == []
    assert "trainable_copy" not in gui_store.get_model(model.id).info
    assert view.row_texts(model.id)["Training"] == NEEDS_COPY
    # It can be started again once the stopped job's thread has ended (a moment after it said "cancelled").
    qtbot.waitUntil(view.copy_button.isEnabled, timeout=WAIT_MS)
    assert view.error_text() == ""


def test_a_trainable_copy_that_cannot_be_made_says_why(
    qtbot, monkeypatch, view, gui_store, app_home, tiny_gguf
):
    model = register_model(gui_store, tiny_gguf, name="tiny")
    refresh(qtbot, view)
    view.select_model(model.id)
    monkeypatch.setattr(trainable_copy, "available_memory_bytes", lambda: 1024)
    qtbot.mouseClick(view.copy_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(view.error_text()), timeout=WAIT_MS)
    assert "No trainable copy of tiny was made" in view.error_text()
    assert "free memory" in view.error_text() and "Close other programs" in view.error_text()
    assert "trainable_copy" not in gui_store.get_model(model.id).info
    assert list(app_home.models_dir.iterdir()) == []


# ------------------------------------------------------------------------------------------- in the main window


def test_main_window_shows_the_models_view_and_waits_for_a_scan_when_closing(
    qtbot, monkeypatch, gui_store, app_home
):
    started, ended = threading.Event(), threading.Event()

    def slow_disk(search_dirs):  # a scan of a slow disk, still running when the person quits
        started.set()
        time.sleep(0.5)
        ended.set()
        return []

    monkeypatch.setattr(discovered_models, "discover_local_models", slow_disk)
    registry = JobRegistry()
    window = MainWindow(store=gui_store, registry=registry, paths=app_home)
    window.show()
    window.show_view("models")  # a new database opens on Collect
    view = window.view("models")
    assert isinstance(view, ModelsView)
    assert window.current_view() == "models"
    assert started.wait(30)
    assert window.status_jobs.text() == "No jobs running", "a scan of folders is not a job to wait for"
    monkeypatch.setattr(QMessageBox, "question", lambda *args: pytest.fail("asked about a scan of folders"))
    assert window.close()
    assert ended.is_set(), "the scan's thread must not outlive the window"
    window.deleteLater()


def test_an_aligned_model_shows_its_lineage_and_trains_from_its_merged_folder(
    qtbot, view, gui_store, tiny_gguf, tiny_model_dir, tmp_path
):
    import shutil

    base = register_model(gui_store, tiny_gguf, name="tiny base")
    ids = [
        gui_store.record_pair(
            messages=[{"role": "user", "content": f"q{i}"}], text_a="a", text_b="b", verdict="a"
        )
        for i in range(4)
    ]
    run = gui_store.create_run(
        name="round one", base_model_id=base.id, config={"beta": 0.1}, comparison_ids=ids
    )
    exported = tmp_path / "tiny-run-1.Q8_0.gguf"
    shutil.copy2(tiny_gguf, exported)
    aligned = register_model(
        gui_store, exported, name="tiny · run 1", source="aligned", parent_model_id=base.id, run_id=run
    )
    gui_store.update_model_info(aligned.id, hf_path=str(tiny_model_dir))  # what an export records
    refresh(qtbot, view)

    assert view.select_model(aligned.id)
    details = view.details_texts()
    assert details["lineage"].splitlines() == [
        "tiny base (user)",
        "→ tiny · run 1: run 1 “round one”, 4 pairs, β 0.1",
    ]
    assert details["training"] == f"{COPY_READY}: {tiny_model_dir}"
    assert view.select_model(base.id)
    assert view.details_texts()["lineage"] == "An original model: no round of alignment made it."
