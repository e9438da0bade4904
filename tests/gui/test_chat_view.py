"""The Chat view, driven through its real widgets and keys, answering with a tiny GGUF in llama.cpp."""

from __future__ import annotations

import random
import shutil
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QApplication, QMainWindow, QMessageBox

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent
from desktop_dpo.core.llm.templates import ChatTemplateError
from desktop_dpo.core.models import register_model
from desktop_dpo.core.sampling import GGUF_COPY_INFO_KEY
from desktop_dpo.core.store import Store
from desktop_dpo.gui import chat_view
from desktop_dpo.gui.chat_view import EMPTY_TITLE, NO_MODEL_TITLE, ChatView
from desktop_dpo.gui.collect_view import CollectView
from desktop_dpo.gui.main_window import MainWindow
from desktop_dpo.workers.job_op import JobOp
from tests.gui.conftest import held_after_first_token, hold_the_model_child, show_active

WAIT_MS = 60_000  # generous: the machine is shared; nothing here asserts on time


@pytest.fixture
def model(gui_store, tiny_gguf):
    return register_model(gui_store, tiny_gguf, name="tiny")


def make_view(qtbot, gui_store, registry, pool, app_home, *, max_tokens=8, seed=0) -> ChatView:
    view = ChatView(store=gui_store, registry=registry, pool=pool, paths=app_home, rng=random.Random(seed))
    view.set_sampling_settings(SamplingSettings(max_tokens=max_tokens))
    show_active(qtbot, view, 1100, 760)
    view.input_edit.setFocus()
    return view


@pytest.fixture
def view(qtbot, gui_store, registry, pool, app_home, model) -> ChatView:
    return make_view(qtbot, gui_store, registry, pool, app_home)


def press(qtbot, widget, combo: str) -> None:
    """Press a shortcut the way a person does, with the focus in ``widget``."""
    if combo == "Esc":
        qtbot.keyClick(widget, Qt.Key.Key_Escape)
    elif combo == "Ctrl+Return":
        qtbot.keyClick(widget, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    else:
        raise ValueError(combo)


def idle(view: ChatView) -> bool:
    model = view.current_model()
    return view.reply is None and model is not None and not view.registry.is_busy(f"generate:{model.id}")


def send(qtbot, view: ChatView, text: str) -> None:
    """Type a message, press Ctrl+Enter, wait until the reply is saved and the model is free."""
    qtbot.keyClicks(view.input_edit, text)
    press(qtbot, view.input_edit, "Ctrl+Return")
    qtbot.waitUntil(lambda: idle(view), timeout=WAIT_MS)


def turns(store: Store, conversation_id: int) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in store.conversation_messages(conversation_id)]


class Gate:
    """Wraps the real chat job: records the messages it was given and, when held, pauses it in its worker
    thread after the first visible text until released (a tiny model would otherwise finish at once)."""

    def __init__(self, monkeypatch, *, hold: bool, child_folder: Path | None = None):
        self.hold = hold
        self.received: list[list[dict[str, str]]] = []
        self.first_text = threading.Event()
        self.release = threading.Event()
        # The model's child holds after its first text as well, until the stop reaches it (or this is called).
        self.release_child = hold_the_model_child(monkeypatch, child_folder) if child_folder else lambda: None
        real = chat_view.chat_reply
        held = held_after_first_token(real, self.first_text, self.release, visible=True)

        def gated(*args, **kwargs):
            self.received.append([dict(m) for m in args[3]])
            return (yield from (held if self.hold else real)(*args, **kwargs))

        monkeypatch.setattr(chat_view, "chat_reply", gated)


# ------------------------------------------------------------------------------------------- sending


def test_ctrl_enter_streams_the_reply_and_saves_it(qtbot, view, gui_store, monkeypatch):
    gate = Gate(monkeypatch, hold=True)
    view.set_sampling_settings(SamplingSettings(max_tokens=300))
    assert view.pages.currentWidget() is view.empty_state
    assert view.empty_title.text() == EMPTY_TITLE
    assert not view.send_button.isEnabled(), "nothing to send yet"

    qtbot.keyClicks(view.input_edit, "Tell me about tea.")
    press(qtbot, view.input_edit, "Ctrl+Return")
    # The person's message is saved the moment it is sent, before any reply.
    conversation = view.conversation_id()
    assert conversation is not None
    assert turns(gui_store, conversation) == [("user", "Tell me about tea.")]
    assert view.input_edit.toPlainText() == ""
    assert not view.send_button.isEnabled() and view.stop_button.isEnabled()

    qtbot.waitUntil(gate.first_text.is_set, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: view.transcript.reply_text() != "", timeout=WAIT_MS)
    partial = view.transcript.reply_text()
    assert partial in view.transcript_text()
    assert turns(gui_store, conversation) == [("user", "Tell me about tea.")], "nothing saved mid-reply"
    gate.release.set()

    qtbot.waitUntil(lambda: idle(view), timeout=WAIT_MS)
    (_user, answer) = gui_store.conversation_messages(conversation)
    assert answer.role == "assistant" and answer.content.startswith(partial.strip())
    assert answer.content in view.transcript_text()
    assert answer.meta["model"] == "tiny" and answer.meta["stopped"] is False
    assert isinstance(answer.meta["seed"], int) and answer.meta["settings"]["max_tokens"] == 300
    assert answer.meta["completion_tokens"] >= 1 and answer.meta["seconds"] > 0
    assert [view.conversation_list.item(i).text() for i in range(view.conversation_list.count())] == [
        "Tell me about tea."
    ]
    assert view.regenerate_button.isEnabled()


def test_second_message_sends_the_first_exchange_and_the_system_prompt(qtbot, view, gui_store, monkeypatch):
    gate = Gate(monkeypatch, hold=False)
    view.system_toggle.setChecked(True)
    qtbot.keyClicks(view.system_edit, "Be brief.")
    view.input_edit.setFocus()
    send(qtbot, view, "Hello")
    first_answer = gui_store.conversation_messages(view.conversation_id())[-1].content
    send(qtbot, view, "And tea?")

    assert gate.received == [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": first_answer},
            {"role": "user", "content": "And tea?"},
        ],
    ]
    assert [role for role, _ in turns(gui_store, view.conversation_id())] == [
        "system", "user", "assistant", "user", "assistant",
    ]  # fmt: skip
    assert view.transcript.message_count() == 4, "the system prompt is in its editor, not in the transcript"


def test_stop_keeps_the_partial_reply_marked_stopped(qtbot, view, gui_store, monkeypatch, tmp_path, pool):
    # The model's child pauses after the first token too, so the stop lands mid-answer, not after the tiny
    # model has written (or ended) its whole reply.
    gate = Gate(monkeypatch, hold=True, child_folder=tmp_path)
    pool.close_all()  # the view may have loaded its model already: the next child starts held
    view.set_sampling_settings(SamplingSettings(max_tokens=400))
    qtbot.keyClicks(view.input_edit, "Tell me a long story.")
    press(qtbot, view.input_edit, "Ctrl+Return")
    qtbot.waitUntil(gate.first_text.is_set, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: view.transcript.reply_text() != "", timeout=WAIT_MS)
    press(qtbot, view.input_edit, "Esc")
    gate.release.set()

    qtbot.waitUntil(lambda: idle(view), timeout=WAIT_MS)
    gate.release_child()
    (_user, answer) = gui_store.conversation_messages(view.conversation_id())
    assert answer.meta["stopped"] is True and answer.meta["finish_reason"] == "cancelled", answer.meta
    assert answer.content and answer.content in view.transcript_text()
    assert 1 <= answer.meta["completion_tokens"] < 400
    assert answer.meta["settings"]["max_tokens"] == 400 and isinstance(answer.meta["seed"], int)
    assert answer.meta["seconds"] > 0
    assert "Stopped after" in view.transcript_text()
    assert not view.stop_button.isEnabled()
    qtbot.keyClicks(view.input_edit, "Go on.")
    assert view.send_button.isEnabled(), "Send is back after a stop"


def test_regenerate_replaces_the_last_reply(qtbot, view, gui_store):
    send(qtbot, view, "Name a colour.")
    conversation = view.conversation_id()
    (_user, old) = gui_store.conversation_messages(conversation)

    qtbot.mouseClick(view.regenerate_button, Qt.MouseButton.LeftButton)
    assert not view.regenerate_button.isEnabled(), "one reply at a time"
    qtbot.waitUntil(lambda: idle(view), timeout=WAIT_MS)

    messages = gui_store.conversation_messages(conversation)
    assert [m.role for m in messages] == ["user", "assistant"]
    # (SQLite may give the new row the old one's id: the seed and the time tell them apart.)
    assert messages[1].meta["seed"] != old.meta["seed"] and messages[1].created_at > old.created_at
    assert gui_store.table_counts()["messages"] == 2, "the old reply is gone from the database"
    assert view.transcript.message_count() == 2
    assert messages[1].content in view.transcript_text()


def test_html_and_markdown_in_a_reply_are_shown_literally(qtbot, view, gui_store, monkeypatch):
    reply = "<b>bold?</b> **not bold** <a href='x'>link</a>"

    def fake_reply(pool, model, paths, messages, settings, seed=None, cancel=None):
        # The tiny model cannot be made to write HTML; this stands in for a model that does.
        yield TokenEvent(0, reply, 5)
        result = GenerationResult(reply, 3, 5, 0.1, "stop", seed or 0, settings.to_dict())
        yield ResponseFinished(0, result)
        return result

    monkeypatch.setattr(chat_view, "chat_reply", fake_reply)
    send(qtbot, view, "<i>hello</i>")
    for _ in range(2):  # as streamed, then as re-read from the database
        text = view.transcript_text()
        assert reply in text and "<i>hello</i>" in text
        html = view.transcript.toHtml()
        assert "&lt;b&gt;bold?&lt;/b&gt;" in html and "<a href" not in html
        view.open_conversation(view.conversation_id())
    assert turns(gui_store, view.conversation_id())[-1] == ("assistant", reply)


# ------------------------------------------------------------------------------------------- conversations


def test_conversations_persist_and_reload_in_a_new_view(
    qtbot, gui_store, registry, pool, app_home, model, monkeypatch
):
    first_view = make_view(qtbot, gui_store, registry, pool, app_home)
    send(qtbot, first_view, "First chat")
    first = first_view.conversation_id()
    first_transcript = first_view.transcript_text()
    qtbot.mouseClick(first_view.new_button, Qt.MouseButton.LeftButton)
    assert first_view.pages.currentWidget() is first_view.empty_state
    send(qtbot, first_view, "Second chat")
    second = first_view.conversation_id()
    first_view.close()

    view = make_view(qtbot, gui_store, registry, pool, app_home)
    items = [view.conversation_list.item(i) for i in range(view.conversation_list.count())]
    assert [item.text() for item in items] == ["Second chat", "First chat"], "newest first"
    assert view.conversation_id() == second, "opens where the person left off"
    assert "Second chat" in view.transcript_text()
    view.conversation_list.setCurrentItem(items[1])
    assert view.conversation_id() == first
    assert view.transcript_text() == first_transcript
    items = [view.conversation_list.item(i) for i in range(view.conversation_list.count())]

    # Rename in place (as the list's editor commits it) and by the view's method.
    items[1].setText("Tea, mostly")
    assert gui_store.get_conversation(first).title == "Tea, mostly"
    assert view.rename_conversation(second, "   ") is False
    assert gui_store.get_conversation(second).title == "Second chat"

    # Delete asks first; "No" keeps everything.
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.No)
    qtbot.mouseClick(view.delete_button, Qt.MouseButton.LeftButton)
    assert len(gui_store.list_conversations()) == 2
    asked = []

    def yes(*args):
        asked.append(args[2])
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", yes)
    qtbot.mouseClick(view.delete_button, Qt.MouseButton.LeftButton)
    assert "Tea, mostly" in asked[0] and "2 messages" in asked[0]
    assert [c.id for c in gui_store.list_conversations()] == [second]
    assert gui_store.conversation_messages(first) == []
    assert view.conversation_id() is None and view.pages.currentWidget() is view.empty_state


def test_switching_conversation_is_refused_while_a_reply_streams(qtbot, view, gui_store, monkeypatch):
    send(qtbot, view, "Earlier chat")
    earlier = view.conversation_id()
    view.new_conversation()
    gate = Gate(monkeypatch, hold=True)
    view.set_sampling_settings(SamplingSettings(max_tokens=300))
    qtbot.keyClicks(view.input_edit, "Current chat")
    press(qtbot, view.input_edit, "Ctrl+Return")
    current = view.conversation_id()
    qtbot.waitUntil(gate.first_text.is_set, timeout=WAIT_MS)

    assert not view.conversation_list.isEnabled() and not view.new_button.isEnabled()
    assert view.open_conversation(earlier) is False
    assert view.new_conversation() is False
    assert view.delete_conversation(current, confirm=False) is False
    assert view.conversation_id() == current
    gate.release.set()
    qtbot.waitUntil(lambda: idle(view), timeout=WAIT_MS)
    assert [role for role, _ in turns(gui_store, current)] == ["user", "assistant"]
    assert view.conversation_list.isEnabled()
    assert view.open_conversation(earlier) is True
    assert "Earlier chat" in view.transcript_text() and "Current chat" not in view.transcript_text()


# ------------------------------------------------------------------------------------------- sharing the model


def test_send_waits_while_collect_samples_from_the_same_model(
    qtbot, view, gui_store, registry, pool, app_home, model, monkeypatch
):
    # Collect holds the model: Chat cannot send and says why.
    holding = threading.Event()
    release = threading.Event()

    def collect_job(_token):
        holding.set()
        release.wait(WAIT_MS / 1000)
        yield from ()

    qtbot.keyClicks(view.input_edit, "Hello?")
    assert view.send_button.isEnabled()
    JobOp(registry, collect_job).resource(f"generate:{model.id}").start()
    qtbot.waitUntil(holding.is_set, timeout=WAIT_MS)
    assert not view.send_button.isEnabled()
    assert "busy" in view.note.text() and "Collect" in view.note.text()
    assert view.send() is False
    release.set()
    qtbot.waitUntil(view.send_button.isEnabled, timeout=WAIT_MS)
    assert view.note.text() == ""

    # And the other way round: while Chat writes, Collect cannot sample from the model.
    collect = CollectView(store=gui_store, registry=registry, pool=pool, paths=app_home)
    qtbot.addWidget(collect)
    collect.set_prompt("A prompt")
    gate = Gate(monkeypatch, hold=True)
    view.set_sampling_settings(SamplingSettings(max_tokens=300))
    press(qtbot, view.input_edit, "Ctrl+Return")
    qtbot.waitUntil(gate.first_text.is_set, timeout=WAIT_MS)
    assert not collect.sample_button.isEnabled()
    assert "busy" in collect.sample_button.toolTip()
    gate.release.set()
    qtbot.waitUntil(lambda: idle(view), timeout=WAIT_MS)
    qtbot.waitUntil(collect.sample_button.isEnabled, timeout=WAIT_MS)


# ------------------------------------------------------------------------------------------- errors, empty


def test_missing_model_file_shows_the_banner_and_loses_nothing(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, tmp_path
):
    copy = tmp_path / "gone.gguf"
    shutil.copyfile(tiny_gguf, copy)
    register_model(gui_store, copy, name="gone")
    window = QMainWindow()
    qtbot.addWidget(window)
    view = ChatView(store=gui_store, registry=registry, pool=pool, paths=app_home, rng=random.Random(1))
    view.set_sampling_settings(SamplingSettings(max_tokens=8))
    window.setCentralWidget(view)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    send(qtbot, view, "Hello")
    conversation = view.conversation_id()
    saved = turns(gui_store, conversation)
    copy.unlink()

    qtbot.keyClicks(view.input_edit, "Are you still there?")
    with qtbot.waitSignal(view.status_message, timeout=WAIT_MS, check_params_cb=lambda t: "moved" in t):
        qtbot.mouseClick(view.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: idle(view), timeout=WAIT_MS)
    assert "moved or deleted" in view.error_text() and str(copy) in view.error_text()
    assert "moved or deleted" in window.statusBar().currentMessage()
    assert turns(gui_store, conversation) == [*saved, ("user", "Are you still there?")]
    assert view.transcript.message_count() == 3, "no empty reply is left on screen"
    assert view.regenerate_button.isEnabled(), "the unanswered message can be answered later"


def test_a_template_that_refuses_is_explained_and_the_message_kept(qtbot, view, gui_store, monkeypatch):
    def refusing_reply(pool, model, paths, messages, settings, seed=None, cancel=None):
        # What the engine raises when a model's chat template rejects the conversation.
        raise ChatTemplateError("The model's chat template could not render this conversation (no system).")
        yield  # a generator, like the real job

    monkeypatch.setattr(chat_view, "chat_reply", refusing_reply)
    send(qtbot, view, "Hello")
    assert "chat template could not render" in view.error_text()
    assert turns(gui_store, view.conversation_id()) == [("user", "Hello")]
    assert view.transcript.message_count() == 1


def test_no_models_points_to_the_models_view(qtbot, gui_store, registry, pool, app_home):
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    assert view.empty_title.text() == NO_MODEL_TITLE
    assert view.models_button.isVisible()
    qtbot.keyClicks(view.input_edit, "Hello")
    assert not view.send_button.isEnabled()
    assert "Models" in view.note.text()
    with qtbot.waitSignal(view.models_requested, timeout=WAIT_MS):
        qtbot.mouseClick(view.models_button, Qt.MouseButton.LeftButton)


def test_main_window_shows_the_chat_view_on_its_own_page(qtbot, gui_store, registry, app_home):
    window = MainWindow(store=gui_store, registry=registry, paths=app_home)
    window.show()
    qtbot.waitExposed(window)
    try:
        window.show_view("chat")
        chat = window.view("chat")
        assert isinstance(chat, ChatView) and chat.isVisible()
        assert not window.view("evaluate").isVisible(), "Evaluate has its own page in the sidebar"
        assert chat.pool is window.pool
        qtbot.mouseClick(chat.models_button, Qt.MouseButton.LeftButton)
        assert window.current_view() == "models"
    finally:
        window.close()
        window.deleteLater()
        QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_chat_with_a_hugging_face_model_records_its_gguf_copy(
    qtbot, gui_store, registry, pool, app_home, tiny_model_dir
):
    model = register_model(gui_store, tiny_model_dir, name="tiny hf")
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    assert view.current_model().id == model.id
    send(qtbot, view, "Hello")
    assert [role for role, _ in turns(gui_store, view.conversation_id())] == ["user", "assistant"]
    # The job converted the folder for llama.cpp, and the view recorded the copy on the model.
    assert gui_store.get_model(model.id).info[GGUF_COPY_INFO_KEY].endswith(".gguf")


# ------------------------------------------------------------------------------------------- to Collect


def point_of(transcript, text: str):
    """Where ``text`` is shown in the transcript (viewport coordinates), as a right-click would land."""
    found = transcript.document().find(text)
    assert not found.isNull(), f"{text!r} is not in the transcript"
    return transcript.cursorRect(found).center()


def test_any_message_of_the_person_goes_to_collect_with_the_conversation_up_to_it(
    qtbot, make_window, gui_store, model
):
    window = make_window()
    window.show_view("chat")
    chat = window.view("chat")
    chat.set_sampling_settings(SamplingSettings(max_tokens=8))
    chat.system_toggle.setChecked(True)
    chat.system_edit.setPlainText("Be brief.")
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    chat.input_edit.setFocus()
    assert not chat.compare_button.isEnabled(), "no message to compare answers to yet"
    send(qtbot, chat, "Hello there, friend.")
    send(qtbot, chat, "Name a colour now.")
    system, first, reply, second, _last_reply = [
        {"role": role, "content": content} for role, content in turns(gui_store, chat.conversation_id())
    ]

    # A reply of the model has nothing to compare: only the person's messages offer it.
    menu = chat.build_transcript_menu(point_of(chat.transcript, "Assistant · tiny"))  # its header
    assert "compareInCollect" not in [action.objectName() for action in menu.actions()]
    assert any("Copy" in action.text() for action in menu.actions()), "the usual menu is still there"
    menu.deleteLater()

    # Right-click the first message: Collect opens on it, a single turn with the system prompt.
    chat.transcript.customContextMenuRequested.emit(point_of(chat.transcript, "Hello there, friend."))
    menu = chat.transcript_menu
    assert menu is not None
    next(action for action in menu.actions() if action.objectName() == "compareInCollect").trigger()
    menu.close()
    assert window.current_view() == "collect"
    collect = window.view("collect")
    assert collect.prompt_messages() == [system, first]
    assert collect.history() == []

    # The button takes the last message, with the exchange before it as earlier turns.
    window.show_view("chat")
    qtbot.mouseClick(chat.compare_button, Qt.MouseButton.LeftButton)
    assert window.current_view() == "collect"
    assert collect.history() == [first, reply]
    assert collect.prompt_edit.toPlainText() == "Name a colour now."
    assert collect.history_view.isVisibleTo(collect)
    assert "Hello there, friend." in collect.history_view.toPlainText()
    assert collect.current_model().id == model.id
    assert "turn 2" in window.statusBar().currentMessage()

    collect.set_sampling_settings(SamplingSettings(max_tokens=8))
    assert collect.sample()
    qtbot.waitUntil(lambda: collect.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    collect.judge("left")
    (saved,) = gui_store.comparison_views()
    assert saved.messages == [system, first, reply, second]
