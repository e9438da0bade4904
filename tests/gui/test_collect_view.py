"""The Collect view, driven through its real widgets and keys, sampling from a tiny GGUF in llama.cpp."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMainWindow

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core import sampling
from desktop_dpo.core.llm.generation import GenerationResult
from desktop_dpo.core.models import register_model
from desktop_dpo.core.sampling import GGUF_COPY_INFO_KEY
from desktop_dpo.gui.collect_pair import describe_result
from desktop_dpo.gui.collect_view import CollectView, verdict_for
from desktop_dpo.gui.response_pane import ResponsePane
from tests.gui.conftest import FixedSide, cut_texts, held_after_first_token, hold_the_model_child, show_active

WAIT_MS = 60_000  # generous: the machine is shared; nothing here asserts on time


def make_view(
    qtbot, gui_store, registry, pool, app_home, *, a_left=True, max_tokens=8, select=False
) -> CollectView:
    """Collect on the test's store; ``select``: "Show the most informative pair" on (these tests follow
    two answers as they are written: off; test_collect_selection.py has it on)."""
    view = CollectView(store=gui_store, registry=registry, pool=pool, paths=app_home, rng=FixedSide(a_left))
    view.set_sampling_settings(SamplingSettings(max_tokens=max_tokens))
    view.selection.option.setChecked(select)
    show_active(qtbot, view, 1000, 700)
    view.prompt_edit.setFocus()
    return view


@pytest.fixture
def view(qtbot, gui_store, registry, pool, app_home, tiny_gguf) -> CollectView:
    register_model(gui_store, tiny_gguf, name="tiny")
    return make_view(qtbot, gui_store, registry, pool, app_home)


def key(qtbot, view, combo: str) -> None:
    """Press a shortcut the way a person does: with the focus in the prompt editor."""
    names = {"Ctrl": Qt.KeyboardModifier.ControlModifier, "Alt": Qt.KeyboardModifier.AltModifier}
    *mods, last = combo.split("+")
    modifiers = Qt.KeyboardModifier.NoModifier
    for mod in mods:
        modifiers |= names[mod]
    keys = {"Return": Qt.Key.Key_Return, "Esc": Qt.Key.Key_Escape}
    qt_key = keys.get(last) or getattr(Qt.Key, f"Key_{last}")
    qtbot.keyClick(view.prompt_edit, qt_key, modifiers)


def sample_and_wait(qtbot, view, prompt: str | None = "Tell me about tea.") -> None:
    if prompt is not None:
        view.prompt_edit.clear()
        qtbot.keyClicks(view.prompt_edit, prompt)
    key(qtbot, view, "Ctrl+Return")
    qtbot.waitUntil(lambda: view.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    # Both answers can be judged as soon as they are written; the job itself ends a moment later (on a busy
    # machine, after the test's next key press), and Continue waits for that.
    qtbot.waitUntil(lambda: not view.stop_button.isEnabled(), timeout=WAIT_MS)


def rewrite(qtbot, view, side: int, text: str) -> None:
    """Rewrite the answer on screen side ``side`` in the edit dialog, then get back to the view as a person
    does (without a window manager, nothing gives the view its focus back when the dialog closes)."""
    view.open_edit(side)
    view.edit_dialog.set_text(text)
    view.edit_dialog.accept()
    qtbot.waitUntil(lambda: view.edit_dialog is None)
    view.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is view.window())
    view.prompt_edit.setFocus()


def shown(view) -> tuple[str, str]:
    return view.panes[0].shown_text(), view.panes[1].shown_text()


def as_shown(*texts: str) -> tuple[str, ...]:
    """What a Qt text box shows of saved texts: a carriage return (the tiny random model writes some)
    starts a new line there, while the database keeps the text exactly as generated."""
    return tuple(text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2029", "\n") for text in texts)


# ------------------------------------------------------------------------------------------- judging


@pytest.mark.parametrize("a_left", [True, False], ids=["A-left", "A-right"])
def test_right_better_key_saves_the_pair_as_shown(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, a_left
):
    model = register_model(gui_store, tiny_gguf, name="tiny")
    view = make_view(qtbot, gui_store, registry, pool, app_home, a_left=a_left)
    view.sampling_panel.temperature.setValue(0.7)
    for button in view.verdict_buttons.values():
        assert not button.isEnabled()

    sample_and_wait(qtbot, view)
    left, right = shown(view)
    key(qtbot, view, "Alt+2")

    (saved,) = gui_store.comparison_views()
    comparison = saved.comparison
    assert comparison.a_shown_left is a_left
    assert comparison.verdict == ("b" if a_left else "a")  # the generation that was on the right
    assert as_shown(saved.text_a, saved.text_b) == ((left, right) if a_left else (right, left))
    assert saved.messages == [{"role": "user", "content": "Tell me about tea."}]
    assert saved.model_a_id == saved.model_b_id == model.id
    gen_a = gui_store.get_generation(comparison.generation_a_id)
    gen_b = gui_store.get_generation(comparison.generation_b_id)
    assert gen_a.seed is not None and gen_b.seed is not None and gen_a.seed != gen_b.seed
    assert gen_a.sampling["temperature"] == 0.7 and gen_a.sampling["max_tokens"] == 8
    assert 1 <= gen_a.completion_tokens <= 8 and gen_a.finish_reason in ("stop", "length")
    assert gen_b.seconds is not None and gen_b.prompt_tokens > 0
    assert view.pairs_label.text() == "1 usable pair"
    assert not view.verdict_buttons["left"].isEnabled(), "a saved pair cannot be judged twice"


def test_verdict_maps_screen_sides_to_generations():
    assert [verdict_for(c, True) for c in ("left", "right", "tie", "both_bad", "skip")] == [
        "a", "b", "tie", "both_bad", "skip",
    ]  # fmt: skip
    assert [verdict_for(c, False) for c in ("left", "right")] == ["b", "a"]


def test_sample_button_and_skip(qtbot, view, gui_store):
    assert not view.sample_button.isEnabled(), "nothing to sample without a prompt"
    qtbot.keyClicks(view.prompt_edit, "Name a colour.")
    qtbot.mouseClick(view.sample_button, Qt.MouseButton.LeftButton)
    assert not view.sample_button.isEnabled(), "one generation per model at a time"
    qtbot.waitUntil(lambda: view.verdict_buttons["skip"].isEnabled(), timeout=WAIT_MS)
    key(qtbot, view, "Alt+0")
    (saved,) = gui_store.comparison_views()
    assert saved.comparison.verdict == "skip"
    assert gui_store.count_usable_pairs() == 0
    assert view.pairs_label.text() == "0 usable pairs"


def test_undo_removes_the_verdict_and_restores_the_pair(qtbot, view, gui_store):
    sample_and_wait(qtbot, view)
    before = shown(view)
    key(qtbot, view, "Alt+1")
    assert gui_store.count_comparisons() == 1

    # Typing after the verdict: Ctrl+Z first undoes the typing, then the verdict.
    qtbot.keyClicks(view.prompt_edit, "!")
    key(qtbot, view, "Ctrl+Z")
    assert view.prompt_edit.toPlainText() == "Tell me about tea."
    assert gui_store.count_comparisons() == 1
    key(qtbot, view, "Ctrl+Z")

    assert gui_store.count_comparisons() == 0
    assert shown(view) == before
    assert view.verdict_buttons["left"].isEnabled()
    assert view.pairs_label.text() == "0 usable pairs"

    key(qtbot, view, "Alt+3")  # judged again: the same two generations, a new verdict
    (saved,) = gui_store.comparison_views()
    assert saved.comparison.verdict == "tie"
    assert as_shown(saved.text_a, saved.text_b) == before  # A was shown on the left
    assert gui_store.table_counts()["generations"] == 2, "undo and re-judge must not duplicate answers"


def test_edit_stores_the_rewrite_with_the_verdict(qtbot, gui_store, registry, pool, app_home, tiny_gguf):
    register_model(gui_store, tiny_gguf, name="tiny")
    view = make_view(qtbot, gui_store, registry, pool, app_home, a_left=False)
    sample_and_wait(qtbot, view)
    left_original = view.panes[0].shown_text()

    qtbot.mouseClick(view.panes[0].edit_button, Qt.MouseButton.LeftButton)
    dialog = view.edit_dialog
    assert dialog is not None and dialog.text() == left_original
    dialog.set_text("Tea is a drink made by steeping leaves in hot water.")
    dialog.accept()
    assert view.panes[0].shown_text() == "Tea is a drink made by steeping leaves in hot water."
    assert view.panes[0].badge.isVisible()
    key(qtbot, view, "Alt+1")

    (saved,) = gui_store.comparison_views()
    assert saved.comparison.edited_text == "Tea is a drink made by steeping leaves in hot water."
    assert saved.comparison.edited_side == "b"  # B was on the left
    assert as_shown(saved.text_b) == (left_original,), "the original answer is kept"
    assert saved.comparison.verdict == "b"


def test_the_rewrite_dialog_shows_the_prompt_being_answered(qtbot, view):
    sample_and_wait(qtbot, view, "Tell me about tea.")
    dialog = view.open_edit(1)
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible)
    assert dialog.prompt_view.isVisible() and dialog.prompt_view.isReadOnly()
    assert "Tell me about tea." in dialog.prompt_text()
    assert dialog.prompt_label.text() == "The prompt you are answering"
    assert dialog.prompt_view.geometry().bottom() < dialog.editor.geometry().top(), "above the editor"
    assert dialog.text() == view.panes[1].shown_text()
    dialog.reject()
    qtbot.waitUntil(lambda: view.edit_dialog is None)


def test_the_rewrite_dialog_shows_the_conversation_before_a_later_turn(qtbot, view):
    view.system_toggle.setChecked(True)
    view.system_edit.setPlainText("Be brief.")
    view.prompt_edit.setFocus()
    sample_and_wait(qtbot, view, "Tell me about tea.")
    key(qtbot, view, "Alt+1")
    key(qtbot, view, "Alt+C")
    sample_and_wait(qtbot, view, "And coffee?")

    dialog = view.open_edit(0)
    qtbot.waitUntil(dialog.isVisible)
    shown = dialog.prompt_text()
    assert dialog.prompt_label.text() == "The conversation so far"
    assert shown.index("Be brief.") < shown.index("Tell me about tea.") < shown.index("And coffee?")
    chosen = " ".join(view.history()[1]["content"].split())  # the answer chosen on turn 1
    assert chosen[:20] in " ".join(shown.split())
    dialog.reject()
    qtbot.waitUntil(lambda: view.edit_dialog is None)


def test_an_answer_of_one_token_says_1_token(qtbot, gui_store, registry, pool, app_home, tiny_gguf):
    def result(tokens: int) -> GenerationResult:
        return GenerationResult("x", 3, tokens, 0.1, "stop", 1, {})

    assert describe_result(result(1)) == "1 token · 0.1 s · finished"
    assert describe_result(result(2)) == "2 tokens · 0.1 s · finished"

    register_model(gui_store, tiny_gguf, name="tiny")
    view = make_view(qtbot, gui_store, registry, pool, app_home, max_tokens=1)
    sample_and_wait(qtbot, view)
    for pane in view.panes:
        status = pane.status.text()
        assert status.startswith(("1 token ·", "0 tokens ·")), status


# ------------------------------------------------------------------------------------------- stop and errors


def test_stop_cancels_mid_stream(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, monkeypatch, tmp_path
):
    register_model(gui_store, tiny_gguf, name="tiny")
    release_child = hold_the_model_child(monkeypatch, tmp_path)  # the stop lands mid-answer in the child too
    view = make_view(qtbot, gui_store, registry, pool, app_home, max_tokens=4000)
    first_token = threading.Event()
    stop_pressed = threading.Event()
    # The job is built from desktop_dpo.core.sampling when Collect starts a pair (imported there, not at start-up).
    held = held_after_first_token(sampling.sample_pair, first_token, stop_pressed)
    monkeypatch.setattr(sampling, "sample_pair", held)
    qtbot.keyClicks(view.prompt_edit, "Tell me a long story.")
    key(qtbot, view, "Ctrl+Return")
    qtbot.waitUntil(first_token.is_set, timeout=WAIT_MS)
    assert view.stop_button.isEnabled()
    assert not view.verdict_buttons["left"].isEnabled(), "no verdict before both answers are complete"
    key(qtbot, view, "Esc")
    stop_pressed.set()

    qtbot.waitUntil(lambda: view.sample_button.isEnabled(), timeout=WAIT_MS)
    release_child()
    assert [pane.status.text() for pane in view.panes] == ["Stopped", "Stopped"]
    assert not view.verdict_buttons["left"].isEnabled(), "a stopped pair cannot be judged"
    assert gui_store.count_comparisons() == 0
    # The model is free again: the next pair samples normally.
    view.set_sampling_settings(SamplingSettings(max_tokens=4))
    sample_and_wait(qtbot, view, prompt=None)


def test_missing_model_file_is_explained(qtbot, gui_store, registry, pool, app_home, tiny_gguf, tmp_path):
    copy = tmp_path / "gone.gguf"
    shutil.copyfile(tiny_gguf, copy)
    register_model(gui_store, copy, name="gone")
    window = QMainWindow()
    qtbot.addWidget(window)
    view = CollectView(store=gui_store, registry=registry, pool=pool, paths=app_home)
    window.setCentralWidget(view)
    window.show()
    copy.unlink()

    view.set_prompt("Hello?")
    with qtbot.waitSignal(view.status_message, timeout=WAIT_MS, check_params_cb=lambda text: "moved" in text):
        qtbot.mouseClick(view.sample_button, Qt.MouseButton.LeftButton)
    assert "moved or deleted" in view.error_text() and str(copy) in view.error_text()
    assert "moved or deleted" in window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: view.sample_button.isEnabled(), timeout=WAIT_MS)
    assert not view.verdict_buttons["left"].isEnabled()


# ------------------------------------------------------------------------------------------- the queue


def test_prompt_queue_from_a_text_file(qtbot, view, gui_store, tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Write a haiku\nabout rain.\n\nList three fruits.\n\nName a river.\n", encoding="utf-8")
    assert view.load_prompt_file(path) == 3
    assert view.queue_label.text() == "3 queued"
    assert view.prompt_edit.toPlainText() == "Write a haiku\nabout rain.", "an empty editor takes the first"

    key(qtbot, view, "Alt+N")
    assert view.prompt_edit.toPlainText() == "List three fruits."
    sample_and_wait(qtbot, view, prompt=None)
    key(qtbot, view, "Alt+1")
    assert [p.text for p in gui_store.queued_prompts()] == ["Write a haiku\nabout rain.", "Name a river."]
    assert view.queue_label.text() == "2 queued"

    key(qtbot, view, "Ctrl+Z")  # undo puts the prompt back in the queue
    assert len(gui_store.queued_prompts()) == 3


def test_queued_conversation_keeps_its_turns(qtbot, view, gui_store, tmp_path):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"messages": conversation}) + "\n", encoding="utf-8")
    view.load_prompt_file(path)
    assert view.prompt_edit.toPlainText() == "Name a colour."
    assert view.system_edit.toPlainText() == "Be brief."
    # The earlier turns are shown above the editor, and the person sees where they came from.
    assert view.history() == conversation[1:3]
    assert view.history_view.isVisibleTo(view)
    assert "Hello!" in view.history_view.toPlainText()
    assert view.prompt_label.text() == "Turn 2 of a conversation from the queue"
    sample_and_wait(qtbot, view, prompt=None)
    key(qtbot, view, "Alt+2")
    (saved,) = gui_store.comparison_views()
    assert saved.messages == conversation
    assert gui_store.queued_prompts() == []


def test_bad_prompt_file_is_explained_and_queues_nothing(qtbot, view, gui_store, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": 3}\n', encoding="utf-8")
    assert view.load_prompt_file(path) == 0
    assert "line 2" in view.error_text()
    assert gui_store.queued_prompts() == []


# ------------------------------------------------------------------------------------------- two models


def test_b_from_another_model(qtbot, gui_store, registry, pool, app_home, tiny_gguf, tiny_model_dir):
    model_a = register_model(gui_store, tiny_gguf, name="tiny gguf")
    model_b = register_model(gui_store, tiny_model_dir, name="tiny hf")
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    view.set_model(model_a)
    view.other_model_check.setChecked(True)
    view.model_b_combo.setCurrentIndex(view.model_b_combo.findData(model_b.id))

    sample_and_wait(qtbot, view)
    key(qtbot, view, "Alt+1")
    (saved,) = gui_store.comparison_views()
    assert (saved.model_a_id, saved.model_b_id) == (model_a.id, model_b.id)
    # The HF model was converted to GGUF for llama.cpp, and the view recorded the copy on the model.
    assert gui_store.get_model(model_b.id).info[GGUF_COPY_INFO_KEY].endswith(".gguf")


# ------------------------------------------------------------------------------------------- conversations


def test_continue_builds_a_three_turn_conversation_saved_with_every_turn(qtbot, view, gui_store):
    continue_button = view.continue_button
    view.system_toggle.setChecked(True)
    view.system_edit.setPlainText("Be brief.")
    view.prompt_edit.setFocus()
    assert not continue_button.isEnabled(), "nothing to continue before a verdict"
    key(qtbot, view, "Alt+C")
    assert view.history() == []

    # Turn 1: the left answer is better, and the conversation goes on with it.
    sample_and_wait(qtbot, view, "Tell me about tea.")
    assert not continue_button.isEnabled(), "a pair waiting for its verdict cannot be continued"
    left_1 = view.pair.texts[0]  # A is shown on the left
    key(qtbot, view, "Alt+1")
    assert continue_button.isEnabled()
    assert "becomes the assistant's turn" in continue_button.toolTip()
    key(qtbot, view, "Alt+C")
    assert view.history() == [
        {"role": "user", "content": "Tell me about tea."},
        {"role": "assistant", "content": left_1.strip()},
    ]
    assert view.prompt_edit.toPlainText() == "", "the editor waits for the next message"
    assert view.history_view.isVisibleTo(view) and "Tell me about tea." in view.history_view.toPlainText()
    assert "Turn 2 of a conversation" in view.prompt_label.text()
    assert view.system_edit.toPlainText() == "Be brief.", "the system prompt stays with the conversation"
    assert "Be brief." in view.system_toggle.text(), "folded, it still shows"
    assert not continue_button.isEnabled(), "one turn continues once"

    # Turn 2: the person rewrites the right answer and prefers the rewrite.
    sample_and_wait(qtbot, view, "And coffee?")
    rewrite(qtbot, view, 1, "Coffee is made from roasted beans.")
    key(qtbot, view, "Alt+2")
    qtbot.mouseClick(continue_button, Qt.MouseButton.LeftButton)
    assert view.history()[2:] == [
        {"role": "user", "content": "And coffee?"},
        {"role": "assistant", "content": "Coffee is made from roasted beans."},
    ]
    assert "your rewrite" in view.history_view.toPlainText()

    # Turn 3: a new pair on the whole conversation.
    sample_and_wait(qtbot, view, "Which one is stronger?")
    key(qtbot, view, "Alt+3")

    first, second, third = gui_store.comparison_views()
    system = {"role": "system", "content": "Be brief."}
    assert first.messages == [system, {"role": "user", "content": "Tell me about tea."}]
    assert second.messages == [system, *view.history()[:2], {"role": "user", "content": "And coffee?"}]
    assert third.messages == [
        system,
        {"role": "user", "content": "Tell me about tea."},
        {"role": "assistant", "content": first.text_a.strip()},  # what was chosen on turn 1
        {"role": "user", "content": "And coffee?"},
        {"role": "assistant", "content": "Coffee is made from roasted beans."},  # the rewrite on turn 2
        {"role": "user", "content": "Which one is stronger?"},
    ]
    assert second.comparison.edited_text == "Coffee is made from roasted beans."
    # A tie continues with the left answer.
    assert continue_button.isEnabled() and "left answer" in continue_button.toolTip()


def test_both_bad_gives_nothing_to_continue_with_until_an_answer_is_rewritten(qtbot, view, gui_store):
    sample_and_wait(qtbot, view, "Name a colour.")
    key(qtbot, view, "Alt+4")
    assert not view.continue_button.isEnabled()
    assert "rewrite" in view.continue_button.toolTip()
    key(qtbot, view, "Alt+C")
    assert view.history() == []

    key(qtbot, view, "Ctrl+Z")  # the pair is back: rewrite one answer, then both originals are bad
    rewrite(qtbot, view, 0, "Blue.")
    key(qtbot, view, "Alt+4")
    assert view.continue_button.isEnabled()
    key(qtbot, view, "Alt+C")
    assert view.history() == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
    ]
    (saved,) = gui_store.comparison_views()
    assert saved.comparison.verdict == "both_bad" and saved.comparison.edited_text == "Blue."


def test_undo_after_continue_takes_back_the_verdict_and_the_turn(qtbot, view, gui_store):
    sample_and_wait(qtbot, view, "Tell me about tea.")
    turn_1 = [
        {"role": "user", "content": "Tell me about tea."},
        {"role": "assistant", "content": view.pair.texts[0].strip()},
    ]
    key(qtbot, view, "Alt+1")
    key(qtbot, view, "Alt+C")
    sample_and_wait(qtbot, view, "And coffee?")
    before = shown(view)
    key(qtbot, view, "Alt+2")
    key(qtbot, view, "Alt+C")
    assert len(view.history()) == 4

    key(qtbot, view, "Ctrl+Z")
    assert gui_store.count_comparisons() == 1, "only the last verdict is undone"
    assert view.history() == turn_1, "turn 1 stays"
    assert view.prompt_edit.toPlainText() == "And coffee?"
    assert shown(view) == before and view.verdict_buttons["left"].isEnabled()

    key(qtbot, view, "Alt+1")  # judged again, on the same conversation
    _first, second = gui_store.comparison_views()
    assert second.messages == [*turn_1, {"role": "user", "content": "And coffee?"}]
    assert second.comparison.verdict == "a"


def test_new_conversation_goes_back_to_a_single_prompt(qtbot, view, gui_store):
    sample_and_wait(qtbot, view, "Tell me about tea.")
    key(qtbot, view, "Alt+1")
    key(qtbot, view, "Alt+C")
    assert view.new_conversation_button.isVisible()
    qtbot.keyClicks(view.prompt_edit, "What is a river?")
    qtbot.mouseClick(view.new_conversation_button, Qt.MouseButton.LeftButton)
    assert view.history() == [] and not view.history_view.isVisibleTo(view)
    assert view.prompt_edit.toPlainText() == "What is a river?", "the draft stays"
    assert view.prompt_label.text() == "Prompt" and not view.new_conversation_button.isVisible()

    sample_and_wait(qtbot, view, prompt=None)
    key(qtbot, view, "Alt+1")
    assert gui_store.comparison_views()[-1].messages == [{"role": "user", "content": "What is a river?"}]


def test_a_conversation_from_elsewhere_opens_ready_to_sample(qtbot, view, gui_store):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    sample_and_wait(qtbot, view, "Tell me about tea.")
    assert not view.open_conversation(conversation), "a pair waiting for its verdict is never thrown away"
    assert "Judge" in view.error_text()
    key(qtbot, view, "Alt+1")

    assert view.open_conversation(conversation)
    assert view.history() == conversation[1:3]
    assert view.prompt_edit.toPlainText() == "Name a colour."
    assert view.system_edit.toPlainText() == "Be brief."
    assert "from Chat" in view.prompt_label.text()
    assert view.prompt_messages() == conversation
    assert not view.continue_button.isEnabled(), "the earlier verdict belongs to another conversation"
    sample_and_wait(qtbot, view, prompt=None)
    key(qtbot, view, "Alt+2")
    assert gui_store.comparison_views()[-1].messages == conversation


def test_a_streamed_answer_is_read_from_its_beginning(qtbot):
    pane = ResponsePane(0)
    show_active(qtbot, pane, 360, 260)
    for number in range(60):
        pane.append(f"Line {number} of a long answer.\n")
    bar = pane.text.verticalScrollBar()
    assert bar.maximum() > 0  # the answer is longer than the pane
    assert bar.value() == 0  # ... and the pane still shows its first line
    reading = bar.maximum() // 2
    bar.setValue(reading)  # the person scrolls down to read on
    for number in range(20):
        pane.append(f"More {number}.\n")
    assert bar.value() == reading < bar.maximum()  # it stays where they were, not at the tail


def test_in_a_1024_by_640_window_nothing_is_cut_and_sampling_brings_the_answers_up(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, app_style
):
    register_model(gui_store, tiny_gguf, name="tiny")
    # The room Collect has in a 1024 x 640 window: less the sidebar, the menu bar and the status bar.
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    view.resize(1024 - 212, 640 - 60)
    qtbot.waitUntil(lambda: view.width() == 1024 - 212)
    assert cut_texts(view) == []
    assert view.page_scroll.horizontalScrollBar().maximum() == 0  # nothing wider than the page
    assert view.panes[0].text.height() >= 4 * view.panes[0].text.fontMetrics().lineSpacing()

    sample_and_wait(qtbot, view)
    viewport = view.page_scroll.viewport()
    bar_top = view.verdict_bar.mapTo(viewport, view.verdict_bar.rect().topLeft()).y()
    assert (
        bar_top >= 0 and bar_top + view.verdict_bar.height() <= viewport.height()
    )  # the verdicts are on screen
    assert view.panes[0].mapTo(viewport, view.panes[0].rect().bottomLeft()).y() > 0  # ... under the answers

    key(qtbot, view, "Alt+1")
    qtbot.waitUntil(lambda: view.feedback.text().startswith("Saved"))
    assert view.feedback.heightForWidth(view.feedback.width()) <= view.feedback.height()  # wrapped, not cut
    assert cut_texts(view) == []
    # Too narrow for every button's shortcut: the buttons say what they do, the shortcut is in the tooltip.
    assert "Alt+1" not in view.verdict_buttons["left"].text()
    assert "Alt+1" in view.verdict_buttons["left"].toolTip()


def test_a_wide_window_shows_the_shortcut_on_every_verdict_button(qtbot, view, app_style):
    view.resize(1700, 900)
    qtbot.waitUntil(lambda: view.width() == 1700)
    assert view.verdict_buttons["left"].text() == "Left better   Alt+1"
    assert view.undo_button.text() == "Undo   Ctrl+Z"
    assert cut_texts(view) == []
