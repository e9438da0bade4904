"""The chat-template editor, through its widgets: what a person sees of a model's template, picking a known
one, an edit checked by rendering a sample conversation, going back to the model's own, and the clear choice
a GGUF without a template gets (in Models, and before Evaluate or Train start work with it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from desktop_dpo.core.llm.template_choice import (
    KNOWN_TEMPLATES,
    TemplateChoice,
    set_template_choice,
    template_choice,
    template_for,
    template_status,
)
from desktop_dpo.core.models import ModelSearchDirs, register_model
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.gui.evaluate_view import EvaluateView
from desktop_dpo.gui.models_view import ModelsView
from desktop_dpo.gui.template_editor import (
    NEEDS_CHOICE_LABEL,
    TemplateEditorDialog,
    ensure_template_chosen,
)
from tests.core.test_models import write_gguf, write_hf_folder
from tests.gui.conftest import FixedSide, show_active
from tests.gui.test_train_view import add_pairs
from tests.gui.test_train_view import make_view as make_train_view

WAIT_MS = 60_000  # generous: the machine is shared; nothing here asserts on time
# Qwen 2.5's layout without its default system prompt: a model's own template, as a GGUF header carries it.
OWN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TURN = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"


@pytest.fixture
def own_model(gui_store, tmp_path) -> ModelRow:
    """An instruct GGUF that carries its own template."""
    path = write_gguf(tmp_path / "instruct.gguf", name="Instruct", chat_template=OWN_TEMPLATE)
    return register_model(gui_store, path, name="Instruct")


@pytest.fixture
def bare_model(gui_store, tmp_path) -> ModelRow:
    """A GGUF whose conversion lost its template: the app cannot tell how it reads a conversation."""
    return register_model(gui_store, write_gguf(tmp_path / "bare.gguf", name="Bare"), name="Bare")


def open_editor(qtbot, store: Store, model: ModelRow, **kwargs) -> TemplateEditorDialog:
    dialog = TemplateEditorDialog(store, model, **kwargs)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def models_view(qtbot, store: Store, registry, app_home, tmp_path) -> ModelsView:
    """The Models view on ``store``, with no model folders to discover, once its scan is done."""
    empty = (tmp_path / "none",)
    view = ModelsView(
        store=store,
        registry=registry,
        paths=app_home,
        search_dirs=ModelSearchDirs(hf_hub=empty, lmstudio=empty, ollama=empty),
    )
    qtbot.addWidget(view)
    view.resize(910, 680)
    view.show()
    qtbot.waitUntil(lambda: not view.is_scanning(), timeout=WAIT_MS)
    return view


def stored(store: Store, model: ModelRow) -> ModelRow:
    """The model's row as read again from the database."""
    row = store.get_model(model.id)
    assert row is not None
    return row


@contextmanager
def editor_answered(act: Callable[[TemplateEditorDialog], None]) -> Iterator[list[TemplateEditorDialog]]:
    """While the block runs, the first template editor that opens (modal) is handed to ``act``, as a person at
    the screen would answer it; it is closed with Cancel if ``act`` leaves it open. Yields the editors seen."""
    seen: list[TemplateEditorDialog] = []
    tries = [0]
    done = [False]  # the block is over: stop looking (a later test's editor is not this one's)

    def answer() -> None:
        if done[0]:
            return
        dialog = next(
            (
                w
                for w in QApplication.topLevelWidgets()
                if isinstance(w, TemplateEditorDialog) and w.isVisible()
            ),
            None,
        )
        if dialog is None:
            tries[0] += 1
            if tries[0] < 2000:  # 40 s: a dialog that never opens leaves nothing running after the test
                QTimer.singleShot(20, answer)
            return
        seen.append(dialog)
        try:
            act(dialog)
        finally:
            if dialog.isVisible():
                dialog.reject()

    QTimer.singleShot(0, answer)
    try:
        yield seen
    finally:
        done[0] = True


def cancel(dialog: TemplateEditorDialog) -> None:
    dialog.cancel_button.click()


def pick_and_save(name: str) -> Callable[[TemplateEditorDialog], None]:
    def act(dialog: TemplateEditorDialog) -> None:
        dialog.options[name].click()
        dialog.save_button.click()

    return act


# ------------------------------------------------------------------------------------------- the editor


def test_the_editor_opens_on_the_models_own_template_with_its_preview(qtbot, gui_store, own_model):
    dialog = open_editor(qtbot, gui_store, own_model)
    assert dialog.selection() == "own" and dialog.options["own"].isChecked()
    assert dialog.template_text() == OWN_TEMPLATE
    assert not dialog.is_editing()  # read-only until "Edit…"
    preview = dialog.preview_text()
    assert preview.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert CHATML_TURN in preview and preview.endswith("<|im_start|>assistant\n")
    assert dialog.render_error() == ""
    assert "'<|im_end|>'" in dialog.stops_text()
    # Nothing is chosen yet, so there is nothing to go back from.
    assert not dialog.use_own_button.isEnabled() and dialog.can_save()


def test_picking_chatml_in_models_previews_it_and_saving_stores_it(
    qtbot, gui_store, registry, app_home, tmp_path
):
    base = write_gguf(tmp_path / "phi.gguf", name="Phi", chat_template=KNOWN_TEMPLATES["phi3"].text)
    model = register_model(gui_store, base, name="Phi")
    view = models_view(qtbot, gui_store, registry, app_home, tmp_path)
    changes: list[str] = []
    view.models_changed.connect(lambda: changes.append("changed"))
    assert view.select_model(model.id)
    assert "<|end|>" in view.details_texts()["template"]  # Phi-3 ends an answer with <|end|>

    seen_preview: list[str] = []

    def act(dialog: TemplateEditorDialog) -> None:
        assert "<|user|>" in dialog.preview_text()
        dialog.options["chatml"].click()
        seen_preview.append(dialog.preview_text())
        dialog.save_button.click()

    with editor_answered(act) as seen:
        qtbot.mouseClick(view.template_button, Qt.MouseButton.LeftButton)
    assert len(seen) == 1
    assert CHATML_TURN in seen_preview[0] and "<|user|>" not in seen_preview[0]

    # Stored for this model: the engines, training and the export read it from the row.
    row = stored(gui_store, model)
    assert template_for(row) == KNOWN_TEMPLATES["chatml"].text
    assert template_choice(row) == TemplateChoice("known", name="chatml")
    assert view.row_texts(model.id)["Chat template"] == "ChatML (chosen)"
    details = view.details_texts()
    assert "ChatML (chosen)" in details["template"] and "'<|im_end|>'" in details["template"]
    assert details["template_text"] == KNOWN_TEMPLATES["chatml"].text
    assert changes == ["changed"]  # Collect and Chat re-read the model: their next sample uses ChatML


def test_an_edit_that_breaks_the_template_says_why_and_cannot_be_saved(qtbot, gui_store, own_model):
    dialog = open_editor(qtbot, gui_store, own_model)
    dialog.options["custom"].click()
    assert dialog.is_editing() and dialog.template_text() == OWN_TEMPLATE  # starts from the template shown

    # The person deletes the closing {% endif %} and types a broken tag instead.
    text = OWN_TEMPLATE.removesuffix("{% endif %}")
    dialog.set_template_text(text)
    qtbot.keyClicks(dialog.editor, "{% endfi %}")
    assert not dialog.can_save()  # not rendered yet: Save waits
    qtbot.waitUntil(lambda: dialog.render_error() != "", timeout=WAIT_MS)
    error = dialog.render_error()
    assert error.startswith("This template is not valid Jinja") and "endfi" in error
    assert "Choose another model" not in error  # advice for elsewhere; the way out is on screen
    assert dialog.preview_text() == "" and dialog.stops_text() == ""
    assert not dialog.can_save()
    assert not dialog.save()
    assert dialog.isVisible() and template_choice(stored(gui_store, own_model)) is None

    # A template that leaves out what the person writes is refused too, in words.
    dialog.set_template_text("{{ bos_token }}{% for message in messages %}{{ message['role'] }}{% endfor %}")
    qtbot.waitUntil(lambda: "leaves out the conversation's text" in dialog.render_error(), timeout=WAIT_MS)
    assert not dialog.can_save()

    # Fixed: the preview comes back, and Save stores the edit.
    fixed = OWN_TEMPLATE.replace("'<|im_end|>\\n'", "'<|im_end|>\\n\\n'")
    dialog.set_template_text(fixed)
    qtbot.waitUntil(dialog.can_save, timeout=WAIT_MS)
    assert dialog.render_error() == "" and "France?<|im_end|>\n\n<|im_start|>" in dialog.preview_text()
    with qtbot.waitSignal(dialog.template_saved, timeout=WAIT_MS):
        dialog.save_button.click()
    row = stored(gui_store, own_model)
    assert template_choice(row) == TemplateChoice("custom", text=fixed) and template_for(row) == fixed


def test_use_the_models_own_removes_the_choice(qtbot, gui_store, own_model):
    set_template_choice(gui_store, own_model.id, TemplateChoice("known", name="llama3"))
    dialog = open_editor(qtbot, gui_store, stored(gui_store, own_model))
    assert dialog.selection() == "llama3" and "<|start_header_id|>user" in dialog.preview_text()
    assert dialog.use_own_button.isEnabled()
    with qtbot.waitSignal(dialog.template_saved, timeout=WAIT_MS):
        dialog.use_own_button.click()
    assert not dialog.isVisible()
    row = stored(gui_store, own_model)
    assert template_choice(row) is None and template_for(row) == OWN_TEMPLATE


def test_cancel_stores_nothing(qtbot, gui_store, own_model):
    dialog = open_editor(qtbot, gui_store, own_model)
    dialog.options["gemma"].click()
    assert "<start_of_turn>user" in dialog.preview_text()
    dialog.cancel_button.click()
    assert template_choice(stored(gui_store, own_model)) is None and dialog.saved_model is None


def test_a_broken_own_template_shows_why_and_cannot_be_picked(qtbot, gui_store, own_model):
    gui_store.update_model_info(own_model.id, chat_template="{% for message in messages %}{{ message }}")
    model = stored(gui_store, own_model)
    dialog = open_editor(qtbot, gui_store, model, reason=template_status(model).message)
    assert not dialog.options["own"].isEnabled()
    assert "Does not work" in dialog.option_notes["own"].text()
    assert "not valid Jinja" in dialog.render_error()  # the broken text is shown, with why
    assert dialog.selection() is None and not dialog.can_save()
    assert dialog.notice.message().startswith("Its own chat template does not work")


# ------------------------------------------------------------------------------------------- the clear choice


def test_a_gguf_without_a_template_is_marked_and_its_notice_opens_the_editor(
    qtbot, gui_store, registry, app_home, tmp_path, bare_model
):
    view = models_view(qtbot, gui_store, registry, app_home, tmp_path)
    assert view.select_model(bare_model.id)
    assert view.row_texts(bare_model.id)["Chat template"] == NEEDS_CHOICE_LABEL
    details = view.details_texts()
    assert details["template_notice"].startswith("The GGUF file has no chat template")
    assert view.template_notice.choose_button.isVisible() and not view.template_text.isVisible()

    seen_state: list[tuple[bool, str, bool]] = []

    def act(dialog: TemplateEditorDialog) -> None:
        seen_state.append((dialog.options["own"].isEnabled(), dialog.notice.message(), dialog.can_save()))
        pick_and_save("plain")(dialog)

    with editor_answered(act) as seen:
        qtbot.mouseClick(view.template_notice.choose_button, Qt.MouseButton.LeftButton)
    assert len(seen) == 1
    own_enabled, notice, could_save = seen_state[0]
    assert not own_enabled and notice.startswith("The GGUF file has no chat template") and not could_save

    assert not template_status(stored(gui_store, bare_model)).needs_choice
    assert view.details_texts()["template_notice"] == "" and not view.template_notice.isVisible()
    assert view.row_texts(bare_model.id)["Chat template"] == "Plain User:/Assistant: (chosen)"


def test_ensure_template_chosen_asks_only_when_the_model_needs_it(qtbot, gui_store, own_model, bare_model):
    # A usable model: no editor, the row as stored.
    with editor_answered(cancel) as seen:
        assert ensure_template_chosen(None, gui_store, own_model) == stored(gui_store, own_model)
        qtbot.wait(100)
    assert seen == []

    # Cancelled: nothing to start with, nothing stored.
    with editor_answered(cancel) as seen:
        assert ensure_template_chosen(None, gui_store, bare_model) is None
    assert len(seen) == 1 and template_choice(stored(gui_store, bare_model)) is None

    # Chosen: the row with the choice, to start the work with.
    with editor_answered(pick_and_save("mistral")):
        ready = ensure_template_chosen(None, gui_store, bare_model)
    assert ready is not None and template_for(ready) == KNOWN_TEMPLATES["mistral"].text


def test_evaluate_asks_for_the_template_before_sampling(qtbot, gui_store, registry, pool, app_home, tmp_path):
    base = register_model(gui_store, write_gguf(tmp_path / "bare-base.gguf", name="Base"), name="bare-base")
    aligned_path = write_gguf(tmp_path / "aligned.gguf", name="Aligned", chat_template=OWN_TEMPLATE)
    register_model(gui_store, aligned_path, name="aligned", source="aligned", parent_model_id=base.id)
    gui_store.add_prompt([{"role": "user", "content": "Tell me about tea."}])
    view = EvaluateView(store=gui_store, registry=registry, pool=pool, paths=app_home, rng=FixedSide(True))
    show_active(qtbot, view, 1100, 780)
    assert view.next_button.isEnabled(), view.next_button.toolTip()

    with editor_answered(cancel) as seen:
        assert not view.next_prompt()
    assert len(seen) == 1 and seen[0].model.id == base.id
    assert "needs its chat template chosen first" in view.error_text()
    assert view.pair is None and not registry.is_busy(f"generate:{base.id}")


def test_train_asks_for_the_template_before_a_run_is_made(
    qtbot, gui_store, registry, app_home, tmp_path, monkeypatch
):
    model = register_model(gui_store, write_hf_folder(tmp_path / "instruct-hf"), name="instruct")
    gui_store.update_model_info(
        model.id, chat_template="{% for message in messages %}{{ message }}"
    )  # broken
    add_pairs(gui_store)
    view = make_train_view(qtbot, gui_store, registry, app_home)
    assert view.start_button.isEnabled(), view.start_reason.text()
    started: list[int] = []
    monkeypatch.setattr(view, "_start_job", lambda run_id: started.append(run_id) or True)

    with editor_answered(cancel) as seen:
        assert view.start() is None
    assert len(seen) == 1 and "does not work" in seen[0].notice.message()
    assert gui_store.list_runs() == [] and started == []
    assert "needs its chat template chosen first" in view.error_text()

    with editor_answered(pick_and_save("chatml")):
        run_id = view.start()
    assert run_id is not None and started == [run_id]
    assert template_for(stored(gui_store, model)) == KNOWN_TEMPLATES["chatml"].text


def test_the_editor_fits_a_small_screen(qtbot, gui_store, bare_model):
    dialog = open_editor(qtbot, gui_store, bare_model)
    dialog.resize(1024, 640)
    qtbot.waitUntil(lambda: dialog.width() <= 1024 and dialog.height() <= 640, timeout=WAIT_MS)
    minimum = dialog.minimumSizeHint().expandedTo(dialog.minimumSize())
    assert minimum.width() <= 1000 and minimum.height() <= 600
    for widget in (dialog.save_button, dialog.cancel_button, dialog.editor, dialog.preview):
        assert widget.isVisible() and widget.height() > 0
        bottom_right = widget.mapTo(dialog, widget.rect().bottomRight())
        assert bottom_right.x() <= dialog.width() and bottom_right.y() <= dialog.height()


def test_collect_asks_for_the_template_before_sampling(
    qtbot, gui_store, registry, pool, app_home, bare_model
):
    from tests.gui.test_collect_view import make_view as make_collect_view

    view = make_collect_view(qtbot, gui_store, registry, pool, app_home)
    view.set_prompt("Tell me about tea.")
    with editor_answered(cancel) as seen:
        assert not view.sample()
    assert len(seen) == 1 and seen[0].model.id == bare_model.id
    assert "needs its chat template chosen first" in view.error_text()
    assert view.pair is None and not registry.is_busy(f"generate:{bare_model.id}")

    with editor_answered(pick_and_save("plain")):
        assert view.sample()  # the pair starts with the template picked (this bare file then fails to load)
    assert template_for(stored(gui_store, bare_model)) == KNOWN_TEMPLATES["plain"].text
    qtbot.waitUntil(lambda: not registry.is_busy(f"generate:{bare_model.id}"), timeout=WAIT_MS)


def test_chat_asks_for_the_template_before_sending(qtbot, gui_store, registry, pool, app_home, bare_model):
    from tests.gui.test_chat_view import make_view as make_chat_view

    view = make_chat_view(qtbot, gui_store, registry, pool, app_home)
    view.input_edit.setPlainText("Hello there")
    with editor_answered(cancel) as seen:
        assert not view.send()
    assert len(seen) == 1 and seen[0].model.id == bare_model.id
    assert "needs its chat template chosen first" in view.error_text()
    # Nothing was sent or saved: the message is still in the editor.
    assert view.input_edit.toPlainText() == "Hello there" and gui_store.list_conversations() == []
