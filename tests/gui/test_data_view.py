"""The Data view, driven through its real widgets and keys, on a database file shared with a worker."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QFileDialog, QMainWindow, QMessageBox

from desktop_dpo.core.store import Store
from desktop_dpo.gui.comparison_table_model import COLUMN_INDEX
from desktop_dpo.gui.data_view import DataView
from desktop_dpo.gui.preference_file_actions import PreferenceFileActions
from tests.core.test_reask import repeat

WAIT_MS = 10_000  # generous: the machine is shared; nothing here asserts on time
SAMPLING = {
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "max_tokens": 64,
}


@pytest.fixture
def make_view(qtbot, gui_store, registry, app_home):
    def make() -> tuple[DataView, PreferenceFileActions]:
        host = QMainWindow()
        qtbot.addWidget(host)
        actions = PreferenceFileActions(
            registry=registry, db_path=app_home.db_path, backups_dir=app_home.backups_dir, parent_widget=host
        )
        view = DataView(
            store=gui_store, import_action=actions.import_action, export_action=actions.export_action
        )
        actions.data_changed.connect(view.refresh)  # as the main window wires them
        actions.message.connect(lambda text: host.statusBar().showMessage(text))
        host.setCentralWidget(view)
        host.resize(1100, 760)
        host.show()
        host.activateWindow()
        qtbot.waitUntil(lambda: QApplication.activeWindow() is host)
        return view, actions

    return make


def record(store: Store, prompt: str, a: str, b: str, verdict: str, **kw) -> int:
    messages = kw.pop("messages", None) or [{"role": "user", "content": prompt}]
    return store.record_pair(messages=messages, text_a=a, text_b=b, verdict=verdict, **kw)


@pytest.fixture
def seeded(gui_store):
    s = gui_store
    model = s.add_model(name="tiny-chat Q8_0", path="/models/tiny.gguf", kind="gguf", fingerprint="sha256:1")
    meta_a = {"sampling": SAMPLING, "seed": 1234, "completion_tokens": 12, "seconds": 0.5}
    meta_b = {"sampling": SAMPLING, "seed": 99, "completion_tokens": 30, "seconds": 1.25}
    return {
        "tea": record(
            s,
            "How do I brew green tea?",
            "Steep it at 80 °C for two minutes.",
            "Boil it for ten minutes.",
            "a",
            a_shown_left=False,
            model_a_id=model,
            model_b_id=model,
            generation_meta_a=meta_a,
            generation_meta_b=meta_b,
        ),
        "colour": record(s, "Name a colour.", "Stone.", "Blue.", "b", a_shown_left=True),
        "haiku": record(s, "Write a haiku about rain.", "Soft rain on the path.", "Rain rain rain.", "tie"),
        "hello": record(
            s,
            "",
            "Hi.",
            "Go away.",
            "a",
            messages=[
                {"role": "system", "content": "You are a polite pirate."},
                {"role": "user", "content": "Greet me."},
                {"role": "assistant", "content": "Ahoy."},
                {"role": "user", "content": "Say hello properly."},
            ],
            edited_text="Hello, and welcome aboard!",
            edited_side="a",
            note="The rewrite is friendlier.",
        ),
        "import": record(s, "Add 2 and 2.", "4", "5", "a", source="import"),
    }


def shown_ids(view: DataView) -> list[int]:
    return view.model.ids()


def click_row(qtbot, view: DataView, comparison_id: int, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    row = view.model.row_of(comparison_id)
    assert row is not None, f"comparison {comparison_id} is not in the table"
    index = view.model.index(row, COLUMN_INDEX["prompt"])
    view.table.scrollTo(index)
    qtbot.mouseClick(
        view.table.viewport(), Qt.MouseButton.LeftButton, modifier, view.table.visualRect(index).center()
    )


def cell(view: DataView, comparison_id: int, key: str) -> str:
    row = view.model.row_of(comparison_id)
    assert row is not None
    return view.model.data(view.model.index(row, COLUMN_INDEX[key]))


def deleted_in_db(store: Store, ids) -> list[bool]:
    rows = {s.id: s for s in store.comparison_summaries(include_deleted=True, ids=list(ids))}
    return [rows[i].deleted for i in ids]


# ------------------------------------------------------------------------------------------- rows and detail


def test_rows_show_prompt_verdict_and_texts_and_the_counts(make_view, seeded):
    view, _actions = make_view()
    assert not view.is_empty_state()
    assert shown_ids(view) == sorted(seeded.values(), reverse=True)  # newest first
    assert view.counts_text() == "5 comparisons · 4 usable for training"
    assert cell(view, seeded["tea"], "prompt") == "How do I brew green tea?"
    assert cell(view, seeded["tea"], "verdict") == "Right better"  # A won, and it was shown on the right
    assert cell(view, seeded["tea"], "chosen") == "Steep it at 80 °C for two minutes."
    assert cell(view, seeded["tea"], "rejected") == "Boil it for ten minutes."
    assert cell(view, seeded["hello"], "prompt") == "Turn 2 · Say hello properly."  # a conversation
    assert cell(view, seeded["import"], "source") == "Imported"
    assert view.table.isColumnHidden(COLUMN_INDEX["deleted"])  # only shown with "Show deleted"


def test_the_detail_panel_shows_the_whole_comparison(qtbot, make_view, seeded):
    view, _actions = make_view()
    detail = view.detail
    click_row(qtbot, view, seeded["tea"])
    assert detail.comparison_id == seeded["tea"]
    assert detail.title.text() == f"Comparison #{seeded['tea']}"
    assert "A was shown" not in detail.meta.text()  # the answers are laid out as they were shown
    assert "How do I brew green tea?" in detail.prompt_text.toPlainText()
    assert detail.panes["a"].text.toPlainText() == "Steep it at 80 °C for two minutes."
    assert detail.panes["b"].text.toPlainText() == "Boil it for ten minutes."
    assert detail.panes["a"].badge.text() == "✓ Better" and not detail.panes["b"].badge.isVisibleTo(detail)
    assert detail.panes["a"].property("chosen") is True and detail.panes["b"].property("chosen") is False
    meta_a = detail.panes["a"].meta.text()
    assert "tiny-chat Q8_0" in meta_a and "temperature 0.7" in meta_a and "12 tokens in 0.5 s" in meta_a
    assert (
        "seed 1234" in detail.panes["a"].meta.toolTip()
        and "max tokens 64" in detail.panes["a"].meta.toolTip()
    )
    assert not detail.edit_pane.isVisibleTo(detail)
    assert detail.verdict_combo.currentText() == "Right better"
    assert detail.note_edit.text() == ""

    # A conversation: system prompt and earlier turns, the person's rewrite and note.
    click_row(qtbot, view, seeded["hello"])
    prompt = detail.prompt_text.toPlainText()
    for words in (
        "System",
        "You are a polite pirate.",
        "Greet me.",
        "Assistant",
        "Ahoy.",
        "Say hello properly.",
    ):
        assert words in prompt
    assert prompt.index("polite pirate") < prompt.index("Greet me.") < prompt.index("Say hello properly.")
    assert detail.edit_pane.isVisibleTo(detail)
    assert detail.edit_pane.title.text() == "Your rewrite of answer A"  # saved without the side shown
    assert detail.edit_pane.text.toPlainText() == "Hello, and welcome aboard!"
    assert detail.note_edit.text() == "The rewrite is friendlier."
    assert detail.panes["a"].meta.text() == "Model and sampling settings unknown"

    click_row(qtbot, view, seeded["import"])
    assert detail.panes["a"].meta.text().startswith("Imported")
    assert "A was shown" not in detail.meta.text()


def test_a_later_turn_of_a_conversation_shows_every_earlier_turn(qtbot, make_view, gui_store):
    conversation = [
        {"role": "system", "content": "You are a concise tea expert."},
        {"role": "user", "content": "How do I brew green tea?"},
        {"role": "assistant", "content": "At 80 °C for two minutes."},
        {"role": "user", "content": "How often can I re-steep it?"},
        {"role": "assistant", "content": "Twice, a little longer each time."},
        {"role": "user", "content": "Milk or sugar?"},
    ]
    third = record(gui_store, "", "Neither.", "Both, lots.", "a", messages=conversation)
    single = record(gui_store, "Name a colour.", "Blue.", "Stone.", "a")
    view, _actions = make_view()
    assert cell(view, third, "prompt") == "Turn 3 · Milk or sugar?"
    assert cell(view, single, "prompt") == "Name a colour.", "a single prompt has no marker"
    row = view.model.row_of(third)
    tip = view.model.data(view.model.index(row, COLUMN_INDEX["prompt"]), Qt.ItemDataRole.ToolTipRole)
    assert tip.startswith("Turn 3 of a conversation") and tip.endswith("Milk or sugar?")

    click_row(qtbot, view, third)
    detail = view.detail
    shown = detail.prompt_text.toPlainText()
    lines = [
        "System  You are a concise tea expert.",
        "User · turn 1  How do I brew green tea?",
        "Assistant · turn 1  At 80 °C for two minutes.",
        "User · turn 2  How often can I re-steep it?",
        "Assistant · turn 2  Twice, a little longer each time.",
        "User · turn 3 · answered below  Milk or sugar?",
    ]
    assert [line.replace("\xa0", " ") for line in shown.splitlines() if line.strip()] == lines
    assert "turn 3 of a conversation" in detail.meta.text()

    click_row(qtbot, view, single)
    assert "turn" not in detail.prompt_text.toPlainText() and "conversation" not in detail.meta.text()

    # A long conversation scrolls in its box, and opens on the message the responses answer.
    long_turns = [{"role": "user", "content": "Tell me everything."}]
    long_turns += [{"role": "assistant", "content": "\n".join(f"Fact {i}." for i in range(30))}]
    long_turns += [{"role": "user", "content": "Now in one line?"}]
    long = record(gui_store, "", "Tea is good.", "No.", "a", messages=long_turns)
    view.refresh()
    click_row(qtbot, view, long)
    bar = detail.prompt_text.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum())


def test_pairs_judged_while_the_view_was_hidden_are_there_when_it_is_shown_again(
    make_view, seeded, gui_store
):
    view, _actions = make_view()
    view.hide()
    judged = record(gui_store, "Judged in Collect meanwhile.", "Yes.", "No.", "b")
    view.show()
    assert shown_ids(view)[0] == judged  # newest first
    assert view.counts_text() == "6 comparisons · 5 usable for training"


# ------------------------------------------------------------------------------------------- search and filter


def test_search_narrows_the_table_and_clearing_it_brings_everything_back(qtbot, make_view, seeded):
    view, _actions = make_view()
    qtbot.keyClicks(view.search_edit, "green tea")
    qtbot.waitUntil(lambda: shown_ids(view) == [seeded["tea"]], timeout=WAIT_MS)
    assert view.matches_label.text() == "1 matching"
    assert view.counts_text().startswith("5 comparisons")  # the totals do not follow the search

    view.search_edit.clear()
    qtbot.waitUntil(lambda: len(shown_ids(view)) == 5, timeout=WAIT_MS)
    # Responses, rewrites and notes are searched too.
    for text, key in (
        ("ten minutes", "tea"),
        ("welcome aboard", "hello"),
        ("friendlier", "hello"),
        ("Stone", "colour"),
    ):
        view.search_edit.setText(text)
        qtbot.waitUntil(lambda key=key: shown_ids(view) == [seeded[key]], timeout=WAIT_MS)
    view.search_edit.setText("nothing like this anywhere")
    qtbot.waitUntil(lambda: shown_ids(view) == [], timeout=WAIT_MS)
    assert view.table_empty.isVisibleTo(view)
    assert "No comparison matches" in view.table_empty.text()


def test_ctrl_f_goes_to_the_search_box_where_delete_edits_the_text_not_the_rows(qtbot, make_view, seeded):
    view, _actions = make_view()
    click_row(qtbot, view, seeded["tea"])
    qtbot.keyClick(view.table, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert view.search_edit.hasFocus()
    qtbot.keyClicks(view.search_edit, "tea")
    qtbot.keyClick(view.search_edit, Qt.Key.Key_Home)
    qtbot.keyClick(view.search_edit, Qt.Key.Key_Delete)
    assert view.search_edit.text() == "ea"
    assert len(view.store.comparison_summaries()) == 5  # nothing was deleted


def test_the_verdict_filter_shows_one_kind_of_verdict(make_view, seeded):
    view, _actions = make_view()

    def choose(label: str) -> list[int]:
        view.verdict_filter.setCurrentIndex(view.verdict_filter.findText(label))
        return sorted(shown_ids(view))

    assert choose("Tie") == [seeded["haiku"]]
    assert choose("Right better") == sorted([seeded["tea"], seeded["colour"]])
    assert choose("Left better") == []
    assert choose("Imported") == [seeded["import"]]
    assert choose("Edited") == [seeded["hello"]]
    assert choose("Usable for training") == sorted(
        [seeded["tea"], seeded["colour"], seeded["hello"], seeded["import"]]
    )
    assert choose("All verdicts") == sorted(seeded.values())


def test_a_re_asked_pair_is_marked_with_whether_it_agreed_and_that_it_never_trains(
    qtbot, make_view, gui_store
):
    steep = record(gui_store, "Brew tea?", "Steep it.", "Boil it.", "a", a_shown_left=True)  # left better
    colour = record(gui_store, "Name a colour.", "Stone.", "Blue.", "b", a_shown_left=True)
    disagreeing = repeat(gui_store, steep, "b")  # B, now on the left: the other answer this time
    agreeing = repeat(gui_store, colour, "b")
    view, _actions = make_view()

    assert cell(view, steep, "verdict") == "Left better", "the first verdict is not marked"
    assert cell(view, disagreeing, "verdict") == f"Left better · Repeat of #{steep}, disagrees"
    assert cell(view, agreeing, "verdict") == f"Left better · Repeat of #{colour}, agrees"
    tip = view.model.data(
        view.model.index(view.model.row_of(disagreeing), COLUMN_INDEX["verdict"]), Qt.ItemDataRole.ToolTipRole
    )
    assert "sides swapped" in tip and "never trains" in tip
    assert view.counts_text() == "4 comparisons · 2 usable for training", "repeats are no pairs of their own"

    click_row(qtbot, view, disagreeing)
    note = view.detail.repeat_note
    qtbot.waitUntil(note.isVisible)
    assert f"A re-asked pair: the answers of #{steep}, shown again with their sides swapped" in note.text()
    assert (
        "It disagrees with your first verdict: the first time, you preferred the answer now on the right."
        in note.text()
    )
    assert "A repeat's verdict never trains (the first one does, once)" in note.text()
    click_row(qtbot, view, agreeing)
    assert (
        "It agrees with your first verdict: the first time too, you preferred the answer now on the left."
        in note.text()
    )
    click_row(qtbot, view, steep)
    assert not note.isVisible()

    view.verdict_filter.setCurrentIndex(view.verdict_filter.findText("Re-asked"))
    assert sorted(shown_ids(view)) == [disagreeing, agreeing]
    view.verdict_filter.setCurrentIndex(view.verdict_filter.findText("Usable for training"))
    assert sorted(shown_ids(view)) == [steep, colour]


# ------------------------------------------------------------------------------------------- delete, undo, restore


def test_deleting_two_rows_with_the_delete_key_and_undoing_it(qtbot, make_view, seeded, gui_store, app_home):
    view, _actions = make_view()
    tea, colour = seeded["tea"], seeded["colour"]
    click_row(qtbot, view, tea)
    click_row(qtbot, view, colour, Qt.KeyboardModifier.ControlModifier)
    assert view.selected_ids() == sorted([tea, colour], key=lambda i: view.model.row_of(i))
    assert view.detail.stack.currentIndex() == 0  # two rows: no single comparison to show
    assert gui_store.count_usable_pairs() == 4

    with qtbot.waitSignal(view.data_changed, timeout=WAIT_MS):
        qtbot.keyClick(view.table, Qt.Key.Key_Delete)
    assert tea not in shown_ids(view) and colour not in shown_ids(view)
    assert gui_store.count_usable_pairs() == 2
    assert view.counts_text() == "3 comparisons · 2 usable for training"
    assert view.notice_visible() and "Deleted 2 comparisons" in view.notice.message()
    with Store.open(app_home.db_path) as other:  # soft delete: still in the file, marked deleted
        assert deleted_in_db(other, [tea, colour]) == [True, True]
        assert other.count_comparisons(include_deleted=True) == 5

    with qtbot.waitSignal(view.data_changed, timeout=WAIT_MS):
        qtbot.keyClick(view.table, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert sorted(view.selected_ids()) == sorted([tea, colour])  # back, and selected
    assert gui_store.count_usable_pairs() == 4
    assert deleted_in_db(gui_store, [tea, colour]) == [False, False]
    assert not view.notice_visible()


def test_the_delete_and_undo_buttons(qtbot, make_view, seeded, gui_store):
    view, _actions = make_view()
    assert not view.delete_button.isEnabled()  # nothing selected
    click_row(qtbot, view, seeded["haiku"])
    assert view.delete_button.isEnabled()
    qtbot.mouseClick(view.delete_button, Qt.MouseButton.LeftButton)
    assert seeded["haiku"] not in shown_ids(view)
    assert view.matches_label.text() == "1 deleted, not shown"
    # The next row is selected, so Delete can go on down the list.
    assert len(view.selected_ids()) == 1
    qtbot.mouseClick(view.undo_button, Qt.MouseButton.LeftButton)
    assert seeded["haiku"] in shown_ids(view)
    assert deleted_in_db(gui_store, [seeded["haiku"]]) == [False]
    assert not view.undo_button.isEnabled()  # nothing left to undo


def test_show_deleted_lists_deleted_rows_and_restore_brings_them_back(qtbot, make_view, seeded, gui_store):
    gui_store.set_comparisons_deleted([seeded["tea"], seeded["haiku"]])
    view, _actions = make_view()
    assert not view.restore_button.isVisibleTo(view)
    assert sorted(shown_ids(view)) == sorted([seeded["colour"], seeded["hello"], seeded["import"]])

    view.show_deleted_check.click()
    assert len(shown_ids(view)) == 5
    assert not view.table.isColumnHidden(COLUMN_INDEX["deleted"])
    assert cell(view, seeded["tea"], "deleted") == "Deleted"
    assert view.restore_button.isVisibleTo(view)
    click_row(qtbot, view, seeded["tea"])
    assert "deleted" in view.detail.meta.text()
    assert view.restore_button.isEnabled() and not view.delete_button.isEnabled()
    with qtbot.waitSignal(view.data_changed, timeout=WAIT_MS):
        qtbot.mouseClick(view.restore_button, Qt.MouseButton.LeftButton)
    assert cell(view, seeded["tea"], "deleted") == ""
    assert deleted_in_db(gui_store, [seeded["tea"], seeded["haiku"]]) == [False, True]
    assert view.counts_text() == "4 comparisons · 4 usable for training"

    view.show_deleted_check.click()
    assert seeded["haiku"] not in shown_ids(view) and seeded["tea"] in shown_ids(view)


# ------------------------------------------------------------------------------------------- verdict and note


def test_changing_the_verdict_persists_at_once(qtbot, make_view, seeded, gui_store, app_home):
    view, _actions = make_view()
    haiku = seeded["haiku"]
    click_row(qtbot, view, haiku)
    assert view.detail.verdict_combo.currentText() == "Tie"
    combo = view.detail.verdict_combo
    combo.setFocus()
    with qtbot.waitSignal(view.data_changed, timeout=WAIT_MS):
        qtbot.keyClick(combo, Qt.Key.Key_Up)  # Tie -> B better, as a person scrolls the box
    assert combo.currentText() == "B better"
    assert cell(view, haiku, "verdict") == "B better"
    assert cell(view, haiku, "chosen") == "Rain rain rain."
    assert view.detail.panes["b"].badge.text() == "✓ Better"
    assert view.counts_text() == "5 comparisons · 5 usable for training"
    with Store.open(app_home.db_path) as reopened:
        assert reopened.get_comparison(haiku).verdict == "b"


def combo_texts(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_verdicts_read_left_and_right_as_the_person_judged_them(qtbot, make_view, seeded, gui_store):
    view, _actions = make_view()
    detail, tea = view.detail, seeded["tea"]  # A won, shown on the right
    messages: list[str] = []
    view.status_message.connect(messages.append)
    click_row(qtbot, view, tea)
    left, right = detail.panes["b"], detail.panes["a"]
    assert (left.title.text(), right.title.text()) == ("Left answer", "Right answer")
    assert left.text.toPlainText() == "Boil it for ten minutes."
    qtbot.waitUntil(lambda: left.isVisible() and left.x() < right.x(), timeout=WAIT_MS)  # as shown then
    assert right.badge.text() == "✓ Better"
    combo = detail.verdict_combo
    assert combo_texts(combo) == ["Left better", "Right better", "Tie", "Both bad", "Skipped"]
    assert combo.currentText() == "Right better"

    combo.setFocus()
    with qtbot.waitSignal(view.data_changed, timeout=WAIT_MS):
        qtbot.keyClick(combo, Qt.Key.Key_Up)  # Right better -> Left better
    assert cell(view, tea, "verdict") == "Left better"
    assert gui_store.get_comparison(tea).verdict == "b"  # the generation that was on the left
    assert cell(view, tea, "chosen") == "Boil it for ten minutes."
    assert messages[-1] == f"Comparison #{tea}: now “Left better”."
    assert left.badge.text() == "✓ Better" and not right.badge.isVisibleTo(detail)

    click_row(qtbot, view, seeded["colour"])  # A shown on the left
    assert detail.panes["a"].title.text() == "Left answer"
    qtbot.waitUntil(lambda: detail.panes["a"].x() < detail.panes["b"].x(), timeout=WAIT_MS)
    assert combo.currentText() == "Right better"  # B won, on the right

    # An imported pair was never on screen: A and B, and a tooltip saying what they are.
    click_row(qtbot, view, seeded["import"])
    assert (detail.panes["a"].title.text(), detail.panes["b"].title.text()) == ("Answer A", "Answer B")
    assert "marked chosen" in detail.panes["a"].title.toolTip()
    assert detail.panes["b"].meta.text().startswith("Imported as rejected")
    assert combo_texts(combo)[:2] == ["A better", "B better"] and combo.currentText() == "A better"
    assert "marked chosen" in combo.itemData(0, Qt.ItemDataRole.ToolTipRole)
    assert "never shown" in view.model.data(
        view.model.index(view.model.row_of(seeded["import"]), COLUMN_INDEX["verdict"]),
        Qt.ItemDataRole.ToolTipRole,
    )


def test_the_rewrite_of_a_side_shown_answer_is_named_by_its_side(qtbot, make_view, gui_store):
    rewritten = record(
        gui_store, "Say hi.", "Hi.", "Yo.", "b", a_shown_left=True, edited_text="Hello!", edited_side="a"
    )
    view, _actions = make_view()
    click_row(qtbot, view, rewritten)
    assert view.detail.edit_pane.title.text() == "Your rewrite of the left answer"
    assert "original left answer" in view.detail.edit_pane.meta.text()
    assert cell(view, rewritten, "verdict") == "Edited · Right better"


def test_a_note_is_saved_when_the_field_is_left(qtbot, make_view, seeded, app_home):
    view, _actions = make_view()
    colour = seeded["colour"]
    click_row(qtbot, view, colour)
    qtbot.mouseClick(view.detail.note_edit, Qt.MouseButton.LeftButton)
    qtbot.keyClicks(view.detail.note_edit, "Blue is a colour; stone is not.")
    with qtbot.waitSignal(view.data_changed, timeout=WAIT_MS):
        click_row(qtbot, view, seeded["tea"])  # clicking elsewhere saves the note of the row it belongs to
    assert view.detail.comparison_id == seeded["tea"] and view.detail.note_edit.text() == ""
    with Store.open(app_home.db_path) as reopened:
        assert reopened.get_comparison(colour).note == "Blue is a colour; stone is not."
    assert cell(view, colour, "verdict").endswith("✎")
    view.search_edit.setText("stone is not")
    qtbot.waitUntil(lambda: shown_ids(view) == [colour], timeout=WAIT_MS)


# ------------------------------------------------------------------------------------------- import, empty state


def write_pairs(path, count: int):
    lines = [
        json.dumps({"prompt": f"Imported question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_empty_state_says_what_to_do_and_an_import_fills_the_table(
    qtbot, monkeypatch, make_view, gui_store, tmp_path
):
    view, _actions = make_view()
    assert view.is_empty_state()
    assert "Collect" in view.empty_text.text() and "import" in view.empty_text.text()
    assert view.counts_text() == "0 comparisons · 0 usable for training"
    with qtbot.waitSignal(view.collect_requested, timeout=WAIT_MS):
        qtbot.mouseClick(view.collect_button, Qt.MouseButton.LeftButton)

    source = write_pairs(tmp_path / "prefs.jsonl", 3)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(source), ""))
    qtbot.mouseClick(view.import_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(shown_ids(view)) == 3, timeout=WAIT_MS)  # imported on a worker's connection
    assert not view.is_empty_state()
    assert view.counts_text() == "3 comparisons · 3 usable for training"
    assert sorted(cell(view, i, "prompt") for i in shown_ids(view)) == [
        f"Imported question {i}?" for i in range(3)
    ]
    assert {cell(view, i, "source") for i in shown_ids(view)} == {"Imported"}


def test_import_adds_to_what_is_shown_and_keeps_the_selection(
    qtbot, monkeypatch, make_view, seeded, tmp_path
):
    view, _actions = make_view()
    click_row(qtbot, view, seeded["colour"])
    source = write_pairs(tmp_path / "more.jsonl", 2)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(source), ""))
    qtbot.mouseClick(view.import_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(shown_ids(view)) == 7, timeout=WAIT_MS)
    assert view.selected_ids() == [seeded["colour"]]
    assert view.detail.comparison_id == seeded["colour"]
    assert view.counts_text() == "7 comparisons · 6 usable for training"


# ------------------------------------------------------------------------------------------- duplicates, export target


def import_file(qtbot, monkeypatch, view: DataView, source) -> None:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(source), ""))
    qtbot.mouseClick(view.import_button, Qt.MouseButton.LeftButton)


def duplicates_question(qtbot, actions: PreferenceFileActions) -> QMessageBox:
    qtbot.waitUntil(
        lambda: actions.duplicates_question is not None and actions.duplicates_question.isVisible(),
        timeout=WAIT_MS,
    )
    assert actions.duplicates_question is not None
    return actions.duplicates_question


def button(box: QMessageBox, text: str):
    return next(b for b in box.buttons() if b.text().replace("&", "") == text)


def status_text(view: DataView) -> str:
    return view.window().statusBar().currentMessage()


@pytest.fixture
def imported_three(qtbot, monkeypatch, make_view, tmp_path):
    """The Data view after importing three pairs, and a second file holding those three and two more."""
    view, actions = make_view()
    import_file(qtbot, monkeypatch, view, write_pairs(tmp_path / "prefs.jsonl", 3))
    qtbot.waitUntil(lambda: len(shown_ids(view)) == 3, timeout=WAIT_MS)
    qtbot.waitUntil(view.import_button.isEnabled, timeout=WAIT_MS)  # the import job has ended
    return view, actions, write_pairs(tmp_path / "more.jsonl", 5)


def test_importing_pairs_already_there_asks_and_skip_them_imports_only_the_new_ones(
    qtbot, monkeypatch, imported_three
):
    view, actions, more = imported_three
    import_file(qtbot, monkeypatch, view, more)
    box = duplicates_question(qtbot, actions)
    assert box.text() == "3 of 5 pairs in more.jsonl are already in your data."
    # The order of the buttons follows the platform's layout; what they say does not.
    assert {b.text().replace("&", "") for b in box.buttons()} == {"Skip Them", "Import Anyway", "Cancel"}
    assert box.defaultButton() is button(box, "Skip Them")
    assert len(shown_ids(view)) == 3  # nothing is written while the question is open

    qtbot.mouseClick(button(box, "Skip Them"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(shown_ids(view)) == 5, timeout=WAIT_MS)
    assert sorted(cell(view, i, "prompt") for i in shown_ids(view)) == [
        f"Imported question {i}?" for i in range(5)
    ]
    qtbot.waitUntil(lambda: "3 duplicates skipped" in status_text(view), timeout=WAIT_MS)
    assert "Imported 2 pairs from more.jsonl" in status_text(view)
    assert actions.duplicates_question is None


def test_importing_pairs_already_there_and_choosing_import_anyway_keeps_both_copies(
    qtbot, monkeypatch, imported_three
):
    view, actions, more = imported_three
    import_file(qtbot, monkeypatch, view, more)
    box = duplicates_question(qtbot, actions)
    qtbot.mouseClick(button(box, "Import Anyway"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(shown_ids(view)) == 8, timeout=WAIT_MS)
    assert view.counts_text() == "8 comparisons · 8 usable for training"
    prompts = sorted(cell(view, i, "prompt") for i in shown_ids(view))
    assert prompts.count("Imported question 0?") == 2 and prompts.count("Imported question 4?") == 1
    qtbot.waitUntil(lambda: "3 duplicates imported anyway" in status_text(view), timeout=WAIT_MS)


def test_cancelling_the_duplicates_question_imports_nothing(qtbot, monkeypatch, imported_three):
    view, actions, more = imported_three
    import_file(qtbot, monkeypatch, view, more)
    box = duplicates_question(qtbot, actions)
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "nothing was imported" in status_text(view), timeout=WAIT_MS)
    view.refresh()
    assert len(shown_ids(view)) == 3
    assert view.import_button.isEnabled()  # ready for another import


def test_exporting_onto_the_database_shows_why_and_leaves_it_untouched(
    qtbot, monkeypatch, make_view, seeded, app_home
):
    view, _actions = make_view()
    database = app_home.db_path
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(database), ""))
    warnings: list[tuple[str, str]] = []
    monkeypatch.setattr(
        QMessageBox, "warning", lambda parent, title, text, *a: warnings.append((title, text))
    )
    companions = [database.with_name(database.name + s) for s in ("", "-wal")]
    before = [p.read_bytes() for p in companions]

    qtbot.mouseClick(view.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(warnings), timeout=WAIT_MS)
    ((title, text),) = warnings
    assert title == "Export failed"
    assert f"{database} is the app's database" in text and "choose another file name" in text
    assert [p.read_bytes() for p in companions] == before
    view.refresh()
    assert view.counts_text() == "5 comparisons · 4 usable for training"
