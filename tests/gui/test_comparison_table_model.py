"""The Data view's table model: what each cell says, its tooltips, filters and sorting, on a real store."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QItemSelectionModel, QPersistentModelIndex, Qt

from desktop_dpo.core.store import Store
from desktop_dpo.gui.comparison_table_model import (
    COLUMN_INDEX,
    COLUMNS,
    DELETED,
    MUTED,
    NONE_SHOWN,
    TOOLTIP_CHARS,
    VERDICT_FILTERS,
    ComparisonTableModel,
    verdict_choices,
    verdict_name,
)

DISPLAY = Qt.ItemDataRole.DisplayRole
TOOLTIP = Qt.ItemDataRole.ToolTipRole


def record(store: Store, prompt: str, a: str, b: str, verdict: str, **kw) -> int:
    messages = kw.pop("messages", None) or [{"role": "user", "content": prompt}]
    return store.record_pair(messages=messages, text_a=a, text_b=b, verdict=verdict, **kw)


@pytest.fixture
def seeded(memory_store):
    s = memory_store
    ids = {
        "tea": record(
            s, "How do I brew\ngreen tea?", "Steep it at 80 °C.", "Boil it.", "a", a_shown_left=True
        ),
        "colour": record(s, "Name a colour.", "Stone.", "Blue.", "b", a_shown_left=False),
        "haiku": record(s, "Write a haiku.", "Soft rain.", "Rain rain.", "tie", a_shown_left=True),
        "edit": record(
            s,
            "Say hello.",
            "Hi.",
            "Yo.",
            "b",
            a_shown_left=True,
            edited_text="Hello there!",
            edited_side="a",
            note="The rewrite is friendlier.",
        ),
        "import": record(s, "Add 2 and 2.", "4", "5", "a", source="import"),
    }
    return s, ids


def cell(model: ComparisonTableModel, comparison_id: int, key: str, role=DISPLAY):
    row = model.row_of(comparison_id)
    assert row is not None, f"comparison {comparison_id} is not shown"
    return model.data(model.index(row, COLUMN_INDEX[key]), role)


def test_the_model_passes_qts_model_checks(qtmodeltester, seeded):
    store, _ids = seeded
    model = ComparisonTableModel(store)
    model.reload()
    qtmodeltester.check(model, force_py=True)


def test_each_row_shows_its_comparison_in_words(seeded):
    store, ids = seeded
    model = ComparisonTableModel(store)
    model.reload()
    assert model.rowCount() == 5 and model.columnCount() == len(COLUMNS)
    assert [model.headerData(i, Qt.Orientation.Horizontal) for i in range(len(COLUMNS))] == [
        "#", "Date", "Prompt", "Verdict", "Chosen", "Rejected", "Source", "Deleted",
    ]  # fmt: skip
    tea = ids["tea"]
    assert cell(model, tea, "id") == str(tea)
    assert cell(model, tea, "prompt") == "How do I brew green tea?"  # one line
    assert cell(model, tea, "verdict") == "Left better"  # A, shown on the left, was better
    assert (cell(model, tea, "chosen"), cell(model, tea, "rejected")) == ("Steep it at 80 °C.", "Boil it.")
    assert cell(model, tea, "source") == "Collected"
    assert cell(model, tea, "deleted") == ""
    assert len(cell(model, tea, "date")) == len("2026-12-01")
    assert len(cell(model, tea, "date", TOOLTIP)) == len("2026-12-01 06:41:07")  # the time, to the second

    colour = ids["colour"]
    assert cell(model, colour, "verdict") == "Left better"  # B was better, and B was shown on the left
    assert (cell(model, colour, "chosen"), cell(model, colour, "rejected")) == ("Blue.", "Stone.")

    haiku = ids["haiku"]
    assert cell(model, haiku, "verdict") == "Tie"
    assert cell(model, haiku, "chosen") == NONE_SHOWN and cell(model, haiku, "rejected") == NONE_SHOWN
    assert cell(model, haiku, "chosen", Qt.ItemDataRole.ForegroundRole) == MUTED

    edit = ids["edit"]
    assert cell(model, edit, "verdict") == "Edited · Right better ✎"  # ✎: it has a note
    assert (cell(model, edit, "chosen"), cell(model, edit, "rejected")) == ("Hello there!", "Hi.")

    imported = ids["import"]
    assert cell(model, imported, "source") == "Imported"
    assert cell(model, imported, "verdict") == "A better"  # never shown: A is the file's chosen answer
    assert cell(model, imported, "id", Qt.ItemDataRole.UserRole) == imported


def test_tooltips_give_the_longer_story(memory_store):
    long_answer = "A long and careful answer. " * 60
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "What now?"},
    ]
    chat = record(memory_store, "", long_answer, "No.", "a", messages=conversation)
    tie = record(memory_store, "Pick one.", "This.", "That.", "tie", note="Could not decide.")
    imported = record(memory_store, "Q?", "Yes.", "No.", "a", source="import")
    model = ComparisonTableModel(memory_store)
    model.reload()

    prompt_tip = cell(model, chat, "prompt", TOOLTIP)
    assert "4 messages" in prompt_tip and prompt_tip.endswith("What now?")
    chosen_tip = cell(model, chat, "chosen", TOOLTIP)
    assert chosen_tip == long_answer[:TOOLTIP_CHARS] + "…"  # the start of a long answer, marked as cut
    assert cell(model, chat, "rejected", TOOLTIP) == "No."
    assert cell(model, tie, "chosen", TOOLTIP) == "Tie: no response chosen"
    assert "note" in cell(model, tie, "verdict", TOOLTIP)
    assert "never shown" in cell(model, imported, "verdict", TOOLTIP)
    assert "chosen" in cell(model, imported, "verdict", TOOLTIP)
    assert "side" in model.headerData(COLUMN_INDEX["verdict"], Qt.Orientation.Horizontal, TOOLTIP)


def test_filters_search_verdicts_and_deleted_rows(seeded):
    store, ids = seeded
    model = ComparisonTableModel(store)
    model.set_filters(search="green tea")
    assert model.ids() == [ids["tea"]]
    model.set_filters(search="friendlier")  # found in the note
    assert model.ids() == [ids["edit"]]
    model.set_filters(verdict_filter="right")
    assert model.ids() == [ids["edit"]]
    model.set_filters(verdict_filter="left")
    assert sorted(model.ids()) == sorted([ids["tea"], ids["colour"]])
    model.set_filters(verdict_filter="imported")
    assert model.ids() == [ids["import"]]
    model.set_filters(verdict_filter="usable")
    assert sorted(model.ids()) == sorted([ids["tea"], ids["colour"], ids["edit"], ids["import"]])
    model.set_filters(verdict_filter="edited")
    assert model.ids() == [ids["edit"]]
    with pytest.raises(ValueError):
        model.set_filters(verdict_filter="nonsense")

    store.set_comparisons_deleted([ids["haiku"]])
    model.set_filters()
    assert ids["haiku"] not in model.ids()
    model.set_filters(include_deleted=True)
    assert cell(model, ids["haiku"], "deleted") == "Deleted"
    assert cell(model, ids["haiku"], "deleted", Qt.ItemDataRole.ForegroundRole) == DELETED
    assert cell(model, ids["haiku"], "prompt", Qt.ItemDataRole.FontRole).strikeOut()


def test_refresh_ids_updates_rows_in_place_and_drops_deleted_ones(seeded):
    store, ids = seeded
    model = ComparisonTableModel(store)
    model.reload()
    store.update_comparison(ids["haiku"], verdict="a")
    store.set_comparisons_deleted([ids["tea"], ids["colour"]])
    model.refresh_ids([ids["haiku"], ids["tea"], ids["colour"]])
    assert cell(model, ids["haiku"], "verdict") == "Left better"
    assert model.row_of(ids["tea"]) is None and model.row_of(ids["colour"]) is None
    assert sorted(model.ids()) == sorted([ids["haiku"], ids["edit"], ids["import"]])
    assert all(model.row_of(i) == row for row, i in enumerate(model.ids()))


def test_sorting_by_a_column_both_ways_and_newest_first_by_default(seeded):
    store, ids = seeded
    model = ComparisonTableModel(store)
    model.reload()
    assert model.ids() == sorted(ids.values(), reverse=True)  # newest first

    model.sort(COLUMN_INDEX["prompt"], Qt.SortOrder.AscendingOrder)
    prompts = [model.data(model.index(r, COLUMN_INDEX["prompt"])) for r in range(model.rowCount())]
    assert prompts == sorted(prompts, key=str.casefold)
    model.sort(COLUMN_INDEX["prompt"], Qt.SortOrder.DescendingOrder)
    assert [model.data(model.index(r, COLUMN_INDEX["prompt"])) for r in range(model.rowCount())] == prompts[
        ::-1
    ]

    model.sort(COLUMN_INDEX["verdict"], Qt.SortOrder.AscendingOrder)
    verdicts = [model.data(model.index(r, COLUMN_INDEX["verdict"])) for r in range(model.rowCount())]
    assert verdicts == sorted(verdicts)
    # A reload keeps the chosen order.
    model.reload()
    assert [model.data(model.index(r, COLUMN_INDEX["verdict"])) for r in range(model.rowCount())] == verdicts


def test_a_selection_follows_its_comparison_when_the_table_is_sorted(seeded):
    store, ids = seeded
    model = ComparisonTableModel(store)
    model.reload()
    selection = QItemSelectionModel(model)
    selection.select(
        model.index(model.row_of(ids["colour"]), 0),
        QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
    )
    pinned = QPersistentModelIndex(model.index(model.row_of(ids["haiku"]), COLUMN_INDEX["prompt"]))
    model.sort(COLUMN_INDEX["prompt"], Qt.SortOrder.AscendingOrder)
    assert [model.summary(i.row()).id for i in selection.selectedRows()] == [ids["colour"]]
    assert model.summary(pinned.row()).id == ids["haiku"]
    assert pinned.column() == COLUMN_INDEX["prompt"]


# ------------------------------------------------------------------------------------------- verdicts as judged


@pytest.mark.parametrize("a_shown_left", [True, False], ids=["A-left", "A-right"])
def test_verdicts_read_as_the_side_the_person_chose(memory_store, a_shown_left):
    """A verdict names a generation; the table says which side of the screen won, as the person saw it."""
    left, right = ("a", "b") if a_shown_left else ("b", "a")
    rows = {
        verdict: record(memory_store, f"Q {verdict}?", "A.", "B.", verdict, a_shown_left=a_shown_left)
        for verdict in ("a", "b", "tie", "both_bad", "skip")
    }
    model = ComparisonTableModel(memory_store)
    model.reload()
    assert cell(model, rows[left], "verdict") == "Left better"
    assert cell(model, rows[right], "verdict") == "Right better"
    assert [cell(model, rows[v], "verdict") for v in ("tie", "both_bad", "skip")] == [
        "Tie", "Both bad", "Skipped",
    ]  # fmt: skip
    assert cell(model, rows["skip"], "chosen", TOOLTIP) == "Skipped: no response chosen"
    shown = [cell(model, i, "verdict") for i in rows.values()]
    assert not any(words.startswith(("A ", "B ")) for words in shown), "A and B were never on screen"
    assert verdict_choices(a_shown_left) == [
        ("Left better", left), ("Right better", right), ("Tie", "tie"), ("Both bad", "both_bad"),
        ("Skipped", "skip"),
    ]  # fmt: skip


def test_pairs_never_shown_side_by_side_keep_a_and_b_and_say_why(memory_store):
    imported = record(memory_store, "Q?", "Yes.", "No.", "b", source="import")
    unrecorded = record(memory_store, "R?", "Yes.", "No.", "a")  # saved without the side shown
    model = ComparisonTableModel(memory_store)
    model.reload()
    assert cell(model, imported, "verdict") == "B better"
    assert "marked chosen" in cell(model, imported, "verdict", TOOLTIP)
    assert cell(model, unrecorded, "verdict") == "A better"
    assert "side by side" in cell(model, unrecorded, "verdict", TOOLTIP)
    assert verdict_name("b", None) == "B better" and verdict_name("skip", None) == "Skipped"
    assert [words for words, _verdict in verdict_choices(None)][:2] == ["A better", "B better"]


def test_verdict_filters_and_sorting_use_the_words_on_screen(seeded):
    store, _ids = seeded
    model = ComparisonTableModel(store)
    labels = [f.label for f in VERDICT_FILTERS.values()]
    assert labels == [
        "All verdicts", "Usable for training", "Left better", "Right better", "Tie", "Both bad", "Skipped",
        "Edited", "Imported", "Re-asked",
    ]  # fmt: skip
    for key, verdict_filter in VERDICT_FILTERS.items():
        if verdict_filter.label in ("Left better", "Right better", "Tie", "Both bad", "Skipped"):
            model.set_filters(verdict_filter=key, include_deleted=True)
            words = {cell(model, i, "verdict").removeprefix("Edited · ").rstrip(" ✎") for i in model.ids()}
            assert words <= {verdict_filter.label}, (key, words)

    model.set_filters()
    model.sort(COLUMN_INDEX["verdict"], Qt.SortOrder.AscendingOrder)
    verdicts = [model.data(model.index(r, COLUMN_INDEX["verdict"])) for r in range(model.rowCount())]
    assert verdicts == sorted(verdicts)
    assert "Left better" in verdicts and "A better" in verdicts
