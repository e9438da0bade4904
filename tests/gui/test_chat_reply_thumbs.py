"""👍/👎 on Chat replies: shown beside each finished reply, saved at once, toggled, and shown as chosen when the
conversation is opened again (``gui/chat_reply_thumbs.py``)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from desktop_dpo.core.models import register_model
from desktop_dpo.gui.chat_reply_thumbs import DOWN_TOOLTIP, UP_TOOLTIP, thumb_texts
from desktop_dpo.gui.chat_view import ChatView
from tests.gui.test_chat_view import WAIT_MS, idle, make_view, send
from tests.gui.test_chat_view import model as model  # the fixture
from tests.gui.test_train_loss_choice import choose
from tests.gui.test_train_view import TINY, add_pairs
from tests.gui.test_train_view import make_view as make_train_view


def stored_conversation(store, model_id: int) -> tuple[int, list[int]]:
    """A conversation of two exchanges; returns its id and its two replies' message ids."""
    conversation = store.create_conversation(model_id, "Colours")
    replies = []
    for question, answer in (("Name a colour.", " Blue."), ("Another?", " Green, like grass.")):
        store.add_message(conversation, "user", question)
        replies.append(store.add_message(conversation, "assistant", answer, {"model_id": model_id}))
    return conversation, replies


def thumbs_shown(view: ChatView, message_id: int) -> bool:
    rating = view.reply_thumbs.rating_of(message_id)
    return rating is not None and rating.isVisible()


def test_thumbs_are_saved_toggled_and_shown_again_on_reopening(
    qtbot, gui_store, registry, pool, app_home, model
):
    conversation, (first, second) = stored_conversation(gui_store, model.id)
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    view.open_conversation(conversation)

    qtbot.waitUntil(lambda: thumbs_shown(view, first) and thumbs_shown(view, second))
    rating = view.reply_thumbs.rating_of(first)
    assert (rating.up.text(), rating.down.text()) == thumb_texts()  # 👍/👎 where a font draws them
    assert (rating.up.toolTip(), rating.down.toolTip()) == (UP_TOOLTIP, DOWN_TOOLTIP)
    assert not rating.up.isChecked() and not rating.down.isChecked()
    # Beside its bubble: right of the reply's text, not over it.
    assert rating.geometry().left() > view.transcript.viewport().width() // 2

    qtbot.mouseClick(rating.up, Qt.MouseButton.LeftButton)
    assert gui_store.conversation_reply_labels(conversation) == {first: True}, "saved at once"
    assert rating.up.isChecked() and not rating.down.isChecked()
    assert "click again to take it back" in rating.up.toolTip()

    qtbot.mouseClick(rating.down, Qt.MouseButton.LeftButton)  # the other thumb replaces it
    assert gui_store.conversation_reply_labels(conversation) == {first: False}
    assert rating.down.isChecked() and not rating.up.isChecked()
    qtbot.mouseClick(rating.down, Qt.MouseButton.LeftButton)  # the same thumb again: taken back
    assert gui_store.conversation_reply_labels(conversation) == {}
    assert not rating.up.isChecked() and not rating.down.isChecked()

    # The keyboard: Tab reaches a thumb, Space presses it.
    other = view.reply_thumbs.rating_of(second)
    assert other.up.focusPolicy() & Qt.FocusPolicy.TabFocus
    other.up.setFocus()
    qtbot.keyClick(other.up, Qt.Key.Key_Space)
    assert gui_store.conversation_reply_labels(conversation) == {second: True}

    reopened = make_view(qtbot, gui_store, registry, pool, app_home)
    reopened.open_conversation(conversation)
    qtbot.waitUntil(lambda: thumbs_shown(reopened, second))
    assert reopened.reply_thumbs.rating_of(second).up.isChecked()
    assert not reopened.reply_thumbs.rating_of(first).up.isChecked()
    assert not reopened.reply_thumbs.rating_of(first).down.isChecked()

    reopened.new_conversation()
    assert reopened.reply_thumbs.rating_of(second) is None, "a new chat has no thumbs of the old one"


def test_a_streamed_reply_gets_its_thumbs_once_finished(qtbot, gui_store, registry, pool, app_home, model):
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    send(qtbot, view, "Name a colour.")
    (_question, reply) = gui_store.conversation_messages(view.conversation_id())
    qtbot.waitUntil(lambda: thumbs_shown(view, reply.id), timeout=WAIT_MS)

    qtbot.mouseClick(view.reply_thumbs.rating_of(reply.id).down, Qt.MouseButton.LeftButton)
    (label,) = gui_store.reply_labels()
    assert (label.reply, label.desirable, label.model_id) == (reply.content, False, model.id)
    assert label.messages == [{"role": "user", "content": "Name a colour."}]

    qtbot.mouseClick(view.regenerate_button, Qt.MouseButton.LeftButton)
    assert not thumbs_shown(view, reply.id), "a reply being replaced loses its thumbs"
    qtbot.waitUntil(lambda: idle(view), timeout=WAIT_MS)
    (_question, new) = gui_store.conversation_messages(view.conversation_id())
    rating = view.reply_thumbs.rating_of(new.id)
    assert rating is not None and rating.isVisible() and rating.chosen is None, "the new reply is not rated"
    assert [x.reply for x in gui_store.reply_labels()] == [reply.content], "the old label stays, as given"


def test_trains_single_labels_line_counts_the_rated_replies(
    qtbot, gui_store, registry, app_home, tiny_model_dir
):
    model_id = register_model(gui_store, tiny_model_dir, name="tiny").id
    add_pairs(gui_store)
    for number, good in enumerate((True, False, True)):
        conversation = gui_store.create_conversation(model_id, f"Chat {number}")
        gui_store.add_message(conversation, "user", f"Question {number}?")
        reply = gui_store.add_message(conversation, "assistant", f" Reply {number}.", {"model_id": model_id})
        gui_store.set_reply_label(reply, good)
    view = make_train_view(qtbot, gui_store, registry, app_home, TINY)
    form = view.settings_form
    form.advanced_toggle.click()

    choose(form.editors["loss_type"], "KTO")

    qtbot.waitUntil(lambda: form.single_labels_note.isVisible())
    assert form.single_labels_note.text() == (
        "Single labels add 3 examples: 3 chat replies you rated (KTO learns from each answer on its own)."
    )
