"""The data check on screen: the Data view's "Check my data" panel filters the table to a finding's pairs,
and the Train view's line says when the check found something."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QMainWindow

from desktop_dpo.core.store import Store
from desktop_dpo.gui.data_view import DataView
from desktop_dpo.gui.preference_file_actions import PreferenceFileActions
from desktop_dpo.gui.theme import current_theme
from desktop_dpo.gui.train_view import TrainView
from tests.gui.conftest import cut_texts

WAIT_MS = 60_000  # generous: the machine is shared; nothing here asserts on time


def judge(store: Store, prompt: str, a: str, b: str, verdict: str = "a", left: bool = True) -> int:
    return store.record_pair(
        messages=[{"role": "user", "content": prompt}], text_a=a, text_b=b, verdict=verdict, a_shown_left=left
    )


def clean(store: Store) -> list[int]:
    """Two pairs for each of four prompts; left and longer answers win half the time: nothing to find."""
    ids = []
    for p in range(4):
        ids.append(judge(store, f"Prompt {p}", f"A long answer number {p}", f"Short {p}", "a", left=True))
        ids.append(judge(store, f"Prompt {p}", f"Another long answer {p}", f"Brief {p}", "b", left=True))
    return ids


@pytest.fixture
def problems(gui_store) -> dict[str, list[int]]:
    """Clean data, plus three copies of one pair and two pairs whose answers are the same."""
    everything = clean(gui_store)
    duplicates = [judge(gui_store, "Name a fruit", "Apple", "Stone") for _ in range(3)]
    identical = [
        judge(gui_store, "Yes or no?", "Yes.", "Yes.", "a"),
        judge(gui_store, "Yes or no?", "Yes. ", "Yes.", "b", left=False),
    ]
    return {"all": everything + duplicates + identical, "duplicates": duplicates, "identical": identical}


@pytest.fixture
def make_view(qtbot, gui_store, registry, app_home):
    """The Data view as the main window makes it: the check runs as a job on its own store."""

    def make() -> DataView:
        host = QMainWindow()
        qtbot.addWidget(host)
        actions = PreferenceFileActions(
            registry=registry, db_path=app_home.db_path, backups_dir=app_home.backups_dir, parent_widget=host
        )
        view = DataView(
            store=gui_store,
            import_action=actions.import_action,
            export_action=actions.export_action,
            registry=registry,
            db_path=app_home.db_path,
        )
        host.setCentralWidget(view)
        host.resize(1280, 800)
        host.show()
        qtbot.waitExposed(host)
        return view

    return make


def shown_ids(view: DataView) -> list[int]:
    return sorted(view.model.ids())


def open_check(qtbot, view: DataView) -> None:
    qtbot.mouseClick(view.check_button, Qt.MouseButton.LeftButton)
    assert view.check_panel.isVisible()
    qtbot.waitUntil(lambda: view.check_panel.checker.result is not None, timeout=WAIT_MS)
    assert not view.check_panel.checker.running


def test_clicking_a_finding_filters_the_table_to_exactly_its_pairs(qtbot, make_view, problems) -> None:
    view = make_view()
    assert not view.check_panel.isVisible()
    open_check(qtbot, view)
    panel = view.check_panel
    titles = [row.title.text() for row in panel.rows]
    assert titles == ["Both answers the same", "Pairs judged more than once"]
    assert panel.status.text() == "2 findings in 13 comparisons"
    duplicates = panel.rows[1]
    assert duplicates.size_label.text() == "3 comparisons"
    assert duplicates.advice.text().startswith("3 comparisons repeat the same prompt and answers")
    assert duplicates.show_button.text() == "Show in the table"
    assert duplicates.show_button.toolTip() == "List only these 3 comparisons in the table below"
    # Left won 7 of 11 (identical answers left out), the longer 4 of 8 (Apple and Stone are as long).
    assert panel.rates.text().startswith("The left answer won 7 of 11 pairs judged side by side (64%;")
    assert "the longer answer won 4 of 8 decided pairs (50%;" in panel.rates.text()

    view.search_edit.setText("Prompt")  # a search typed before is cleared: the finding shows whole
    view.apply_filters()
    qtbot.mouseClick(duplicates.show_button, Qt.MouseButton.LeftButton)
    assert shown_ids(view) == problems["duplicates"]
    assert view.search_edit.text() == ""
    assert view.matches_label.text() == "3 matching"
    assert duplicates.property("selected") is True
    assert panel.show_all_button.isVisible()

    qtbot.mouseClick(panel.rows[0].show_button, Qt.MouseButton.LeftButton)  # another finding
    assert shown_ids(view) == problems["identical"]
    assert panel.rows[0].property("selected") is True and duplicates.property("selected") is False

    # The way back: every pair again, the finding no longer marked.
    qtbot.mouseClick(panel.show_all_button, Qt.MouseButton.LeftButton)
    assert shown_ids(view) == sorted(problems["all"])
    assert not panel.show_all_button.isVisible()
    assert view.matches_label.text() == ""
    assert panel.rows[0].property("selected") is False


def test_closing_the_check_shows_all_pairs_and_a_deletion_checks_again(qtbot, make_view, problems) -> None:
    view = make_view()
    open_check(qtbot, view)
    view.check_panel.choose("duplicates")
    assert shown_ids(view) == problems["duplicates"]
    # Delete two of the three copies: the table keeps the one left, and the open check looks again.
    view.select_ids(problems["duplicates"][1:])
    view.delete_selected()
    assert shown_ids(view) == problems["duplicates"][:1]
    qtbot.waitUntil(
        lambda: (
            [row.finding.key for row in view.check_panel.rows] == ["identical_answers", "single_pair_prompts"]
        ),  # the copy left is alone with its prompt
        timeout=WAIT_MS,
    )
    assert view.check_panel.status.text() == "1 finding and 1 suggestion in 11 comparisons"
    view.check_panel.close_panel()
    assert not view.check_panel.isVisible()
    assert shown_ids(view) == sorted(set(problems["all"]) - set(problems["duplicates"][1:]))


def test_clean_data_has_nothing_to_fix(qtbot, make_view, gui_store) -> None:
    clean(gui_store)
    view = make_view()
    open_check(qtbot, view)
    assert view.check_panel.rows == []
    assert view.check_panel.status.text() == "Nothing to fix in 8 comparisons."
    assert not view.check_panel.scroll.isVisible()
    # Pairs judged elsewhere (Collect) while the view was away: back on screen, the open check looks again.
    host = view.window()
    host.hide()
    judge(gui_store, "Name a fruit", "Apple", "Stone")
    judge(gui_store, "Name a fruit", "Apple", "Stone")
    host.show()
    qtbot.waitUntil(lambda: [f.key for f in view.check_panel.findings()] == ["duplicates"], timeout=WAIT_MS)
    assert view.check_panel.status.text() == "1 finding in 10 comparisons"
    assert view.check_panel.scroll.isVisible()


def make_train_view(qtbot, gui_store, registry, app_home) -> TrainView:
    view = TrainView(store=gui_store, registry=registry, paths=app_home, pool=None)
    qtbot.addWidget(view)
    view.resize(1280, 800)
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: view.data_check_line.checker.result is not None, timeout=WAIT_MS)
    return view


def test_train_says_when_the_data_check_finds_something(
    qtbot, gui_store, registry, app_home, problems
) -> None:
    view = make_train_view(qtbot, gui_store, registry, app_home)
    line = view.data_check_line
    assert line.isVisible()
    assert line.message() == "2 findings in your data: see Data ▸ Check my data."
    assert line.open_button.text() == "Open the check"
    qtbot.waitUntil(lambda: view.preset is not None, timeout=WAIT_MS)  # the device job ends before teardown


def test_train_says_nothing_about_clean_data(qtbot, gui_store, registry, app_home) -> None:
    clean(gui_store)
    view = make_train_view(qtbot, gui_store, registry, app_home)
    assert view.data_check_line.checker.result.findings == ()
    assert not view.data_check_line.isVisible()
    qtbot.waitUntil(lambda: view.preset is not None, timeout=WAIT_MS)


def test_trains_line_opens_the_check_in_the_data_view(qtbot, make_window, gui_store, problems) -> None:
    window = make_window()
    window.show_view("train")
    line = window.view("train").data_check_line
    qtbot.waitUntil(lambda: line.isVisible(), timeout=WAIT_MS)
    qtbot.mouseClick(line.open_button, Qt.MouseButton.LeftButton)
    assert window.current_view() == "data"
    data = window.view("data")
    assert data.check_panel.isVisible()
    qtbot.waitUntil(lambda: len(data.check_panel.rows) == 2, timeout=WAIT_MS)
    QApplication.processEvents()
    qtbot.waitUntil(lambda: window.view("train").preset is not None, timeout=WAIT_MS)


TOPICS = ["green tea", "a bicycle chain", "sourdough", "a leaking tap", "tomato seedlings", "a cover letter",
          "jet lag", "a wool jumper", "cast iron pans", "houseplants", "a slow laptop", "a first 5k run"]  # fmt: skip


def lived_in(store: Store) -> None:
    """Data as a person might have it after an afternoon: a lean to the left, a repeat, a change of mind."""
    for k in range(24):
        topic, turn = TOPICS[k % 12], (k + k // 12) % 2
        good = (
            f"Here is what works for {topic}: start gently, check on it every few days and keep notes."
            if turn
            else f"Check {topic} once a week."
        )
        bad = (
            f"Ask someone else about {topic}."
            if turn
            else f"Honestly, {topic} is not worth the bother: leave it alone and hope for the best."
        )
        judge(store, f"How do I look after {topic}?", good, bad, "a", left=k % 6 != 5)  # left wins 20 of 24
    first = store.comparison_views(ids=[1])[0]
    judge(store, first.prompt_text, first.text_a, first.text_b, "a")  # judged twice
    judge(store, "How do I look after green tea?", "Keep it sealed.", "Keep it sealed.", "a")
    judge(store, "Name a colour.", "Blue.", "Stone.", "a")
    judge(store, "Name a colour.", "Blue.", "Stone.", "b")  # a change of mind


@pytest.fixture
def themed() -> Generator[None, None, None]:
    """The app's real theme for this test; afterwards the bare look the other tests expect (as
    ``test_screenshots.themed``): no style sheet, Qt's own palette, no theme."""
    app = QApplication.instance()
    yield
    theme = current_theme()
    if theme is not None:
        app.styleHints().unsetColorScheme()
        theme.setParent(None)
        theme.deleteLater()
    app.setStyleSheet("")
    app.setPalette(QPalette())
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_the_check_fits_at_1280x800_in_both_schemes(qtbot, make_window, gui_store, app_style, themed) -> None:
    """Nothing on the Data view is cut with the check open and a finding chosen (saved as a screenshot when
    DESKTOP_DPO_SCREENSHOT_DIR names a folder)."""
    lived_in(gui_store)
    window = make_window()
    window.resize(1280, 800)
    window.open_data_check()
    data = window.view("data")
    qtbot.waitUntil(lambda: data.check_panel.checker.result is not None, timeout=WAIT_MS)
    assert [f.key for f in data.check_panel.findings()] == [
        "conflicts",
        "identical_answers",
        "duplicates",
        "position_bias",
    ]
    for _ in range(3):  # what the layouts post in turn, as before a person's click
        QApplication.processEvents()
    chosen = data.check_panel.choose("position_bias")
    assert sorted(data.model.ids()) == list(chosen.ids)
    folder = os.environ.get("DESKTOP_DPO_SCREENSHOT_DIR")
    for scheme in ("light", "dark"):
        window.choose_appearance(scheme)
        for _ in range(3):
            QApplication.processEvents()
        assert cut_texts(data.check_panel) == [], scheme
        # The findings get the height they need (up to a limit), and the chosen one is wholly in sight.
        chosen_row = data.check_panel.rows[3]
        assert chosen_row.property("selected") is True
        assert chosen_row.visibleRegion().boundingRect() == chosen_row.rect(), scheme
        if folder:
            window.grab().save(str(Path(folder) / f"data-check-1280x800-{scheme}.png"))
