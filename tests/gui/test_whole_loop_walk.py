"""The whole loop as a new person walks it, by keys and clicks only, in the real main window on a fresh home.

Models → Collect → Train → Export → Chat. The walk presses keys and clicks visible, enabled widgets; it only
reads widgets (their text, whether they are enabled) to check, at every step, what a person sees: no internal
word on screen, the same usable-pair count everywhere, and an export that is ready to chat with at once.

The tiny model is found the way a person's downloaded models are: in a Hugging Face cache on this computer
(here a private one, through ``HF_HUB_CACHE``), listed in Models with an Add button.
"""

from __future__ import annotations

import html
import re
import shutil

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QLabel,
    QListWidget,
    QTabBar,
    QTableWidget,
    QTreeWidget,
    QWidget,
)

# Generous: the machine is shared (the first sample converts the model, training loads torch).
WAIT_MS = 180_000
PAIRS_TO_TRAIN = 8  # Train asks for at least this many usable pairs
HUB_NAME = "acme/tiny-llama"
PROMPTS = ["Tell me about tea.", "Name a colour.", "Why is the sky blue?", "Say hello.", "Count to three.",
           "What is a river?", "Describe a cat.", "Write a short poem.", "What is bread?", "Name a planet.",
           "How do boats float?", "What is snow?"]  # fmt: skip

# Words that are the program's, not a person's: resource ids, internal names, Python's words, float noise.
INTERNAL_WORDS = [
    re.compile(r"\b[a-z]+:\d+\b"),  # a job's resource id: generate:1
    re.compile(r"\b(detect-device|demo-model|trainable-copy)\b"),
    re.compile(r"\b[a-z]+_[a-z0-9_]+\b"),  # snake_case identifiers: final_metrics, adapter_path
    re.compile(r"\b(None|nan|NaN|inf|True|False|Traceback|Exception|Error:)\b"),
    re.compile(r"\b(lr|LoRA r)\b"),  # a setting by its code name, where the form says "learning rate"
    re.compile(r"\{[a-z_]*\}"),  # a format string left unfilled
    re.compile(r"\d\.\d{6,}"),  # float noise: 0.6931481
    re.compile(r"(?<![\d.])\b1 (tokens|epochs|pairs|prompts|steps)\b"),  # "1 tokens"
]
FILE_PATH = re.compile(r"(?<![\w.])(~|[A-Za-z]:)?[/\\]\S+")  # /tmp/pytest-…/test_…/desktop-dpo.sqlite
BARE_JOB_ID = re.compile(r"^(train|generate|export|chat|copy|evaluate)\w*$")


# ------------------------------------------------------------------------------------------- what a person sees


def visible_texts(window: QWidget) -> list[str]:
    """Every text a person can read in the window now: its title, labels, buttons, tabs, list and table rows,
    combo boxes, spin boxes and the status bar. The model's own answers are left out (a tiny random model
    writes anything), and so are file paths (the test's folders are named by pytest)."""
    texts = [window.windowTitle(), window.statusBar().currentMessage()]
    for widget in window.findChildren(QWidget):
        if not widget.isVisible():
            continue
        if isinstance(widget, QLabel):
            texts.append(html.unescape(re.sub(r"<[^>]+>", " ", widget.text())))
        elif isinstance(widget, QAbstractButton):
            texts.append(widget.text())
        elif isinstance(widget, QComboBox):
            texts.append(widget.currentText())
        elif isinstance(widget, QAbstractSpinBox):
            texts.append(widget.text())
        elif isinstance(widget, QTabBar):
            texts += [widget.tabText(i) for i in range(widget.count())]
        elif isinstance(widget, QListWidget) and widget.objectName() != "chatTranscript":
            texts += [widget.item(i).text() for i in range(widget.count())]
        elif isinstance(widget, QTableWidget):
            texts += [widget.item(r, c).text() for r in range(widget.rowCount()) for c in range(widget.columnCount())
                      if widget.item(r, c) is not None]  # fmt: skip
        elif isinstance(widget, QTreeWidget):
            for row in range(widget.topLevelItemCount()):
                item = widget.topLevelItem(row)
                texts += [item.text(c) for c in range(widget.columnCount())]
    return [FILE_PATH.sub(" ", text) for text in texts if text]


def assert_no_internal_words(window: QWidget, step: str) -> None:
    """Nothing on screen is the program's own word (see INTERNAL_WORDS), and the status bar never names a job
    by its id."""
    found = [
        (text, rule.pattern) for text in visible_texts(window) for rule in INTERNAL_WORDS if rule.search(text)
    ]
    assert not found, f"{step}: internal words on screen: {found}"
    jobs = window.status_jobs.text()
    assert not BARE_JOB_ID.match(jobs), f"{step}: the status bar names a job by its id: {jobs!r}"


def usable_in(text: str) -> int:
    """The usable-pair count in a line such as "8 usable pairs" or "· 8 usable for training"."""
    match = re.search(r"(\d+) usable", text)
    assert match, f"no usable count in {text!r}"
    return int(match.group(1))


# ------------------------------------------------------------------------------------------- a person's hands


def press(qtbot, keys: str) -> None:
    """Press a key combination ("Ctrl+Return", "Alt+1") where the keyboard focus is, as a person does."""
    modifiers = {"Ctrl": Qt.KeyboardModifier.ControlModifier, "Alt": Qt.KeyboardModifier.AltModifier}
    *held, last = keys.split("+")
    mods = Qt.KeyboardModifier.NoModifier
    for name in held:
        mods |= modifiers[name]
    target = QApplication.focusWidget() or QApplication.activeWindow()
    qtbot.keyClick(target, getattr(Qt.Key, f"Key_{last}"), mods)


def go_to(qtbot, window, number: int, key: str) -> QWidget:
    """Open a view of the sidebar by its shortcut (Ctrl+1 … Ctrl+8); returns the view now on screen."""
    press(qtbot, f"Ctrl+{number}")
    assert window.current_view() == key
    return window.view(key)


def click(qtbot, button: QAbstractButton) -> None:
    """Click a button a person can see and use."""
    assert button.isVisible(), f"{button.text()!r} is not on screen"
    assert button.isEnabled(), f"{button.text()!r} is greyed out: {button.toolTip()}"
    # A check box takes clicks on its box and its words, not on the empty room after them.
    where = QPoint(8, button.height() // 2) if isinstance(button, QCheckBox) else button.rect().center()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton, pos=where)


def click_row(qtbot, table, row: int) -> None:
    """Click the first cell of a row of a table or tree."""
    rect = table.visualRect(table.model().index(row, 0))
    assert rect.isValid(), f"row {row} is not on screen"
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def row_texts(tree: QTreeWidget, row: int) -> dict[str, str]:
    """A row of a list with columns, by its column titles as shown."""
    header, item = tree.headerItem(), tree.topLevelItem(row)
    return {header.text(c): item.text(c) for c in range(tree.columnCount())}


def type_into(qtbot, editor: QWidget, text: str) -> None:
    """Click into a text field, select what is there (Ctrl+A) and type ``text`` over it."""
    qtbot.mouseClick(editor.viewport() if hasattr(editor, "viewport") else editor, Qt.MouseButton.LeftButton,
                     pos=QPoint(5, 5))  # fmt: skip
    press(qtbot, "Ctrl+A")
    qtbot.keyClicks(QApplication.focusWidget(), text)


# ------------------------------------------------------------------------------------------- the walk


@pytest.fixture
def computer_with_a_model(tmp_path, monkeypatch, tiny_model_dir) -> str:
    """A computer whose Hugging Face cache holds the tiny model (and with no LM Studio or Ollama models)."""
    hub = tmp_path / "hf-hub"
    snapshot = hub / "models--acme--tiny-llama" / "snapshots" / ("1" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (hub / "models--acme--tiny-llama" / "refs").mkdir()
    (hub / "models--acme--tiny-llama" / "refs" / "main").write_text("1" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "no-ollama"))
    monkeypatch.setenv("HOME", str(tmp_path / "person"))  # no LM Studio folder
    (tmp_path / "person").mkdir()
    return HUB_NAME


def test_a_new_person_walks_the_whole_loop_by_keys_and_clicks(qtbot, make_window, computer_with_a_model):
    window = make_window()
    window.resize(1280, 800)
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    assert_no_internal_words(window, "first start")

    choose_the_model(qtbot, window)
    collect_enough_pairs(qtbot, window)
    check_every_screen_counts_the_same(qtbot, window, PAIRS_TO_TRAIN)
    run_name = train_a_short_run(qtbot, window)
    export_and_open_chat(qtbot, window, run_name)
    chat_with_the_aligned_model(qtbot, window)


def choose_the_model(qtbot, window) -> None:
    """Models: the model found on this computer is added with one click, then chosen with "Use this model"."""
    models = go_to(qtbot, window, 1, "models")
    qtbot.waitUntil(lambda: not models.is_scanning(), timeout=WAIT_MS)
    click(qtbot, models.add_button_for(HUB_NAME))
    qtbot.waitUntil(lambda: len(models.models()) == 1, timeout=WAIT_MS)
    assert_no_internal_words(window, "Models, a model added")
    click_row(qtbot, models.table, 0)
    click(qtbot, models.use_button)
    assert HUB_NAME in window.statusBar().currentMessage()  # "Collect and Chat now use …"


def collect_enough_pairs(qtbot, window) -> None:
    """Collect: type a prompt, Ctrl+Enter samples two answers, Alt+1 or Alt+2 picks one; until Train has enough."""
    collect = go_to(qtbot, window, 2, "collect")
    assert HUB_NAME in collect.model_combo.currentText()
    for index, prompt in enumerate(PROMPTS):
        if usable_in(collect.pairs_label.text()) == PAIRS_TO_TRAIN:
            break
        type_into(qtbot, collect.prompt_edit, prompt)
        press(qtbot, "Ctrl+Return")
        qtbot.waitUntil(lambda: collect.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
        qtbot.waitUntil(lambda: not collect.stop_button.isEnabled(), timeout=WAIT_MS)
        assert_no_internal_words(window, f"Collect, pair {index + 1} sampled")
        press(qtbot, f"Alt+{1 + index % 2}")
        assert_no_internal_words(window, f"Collect, pair {index + 1} judged")
    assert usable_in(collect.pairs_label.text()) == PAIRS_TO_TRAIN


def check_every_screen_counts_the_same(qtbot, window, usable: int) -> None:
    """Collect, the status bar, Data and Train all say the same number of usable pairs."""
    assert usable_in(window.view("collect").pairs_label.text()) == usable
    assert usable_in(window.status_pairs.text()) == usable
    data = go_to(qtbot, window, 7, "data")
    assert usable_in(data.counts_label.text()) == usable
    assert usable_in(window.status_pairs.text()) == usable
    assert_no_internal_words(window, "Data")
    train = go_to(qtbot, window, 3, "train")
    qtbot.waitUntil(lambda: train.preset is not None, timeout=WAIT_MS)  # "Detecting your GPU…" ends
    assert usable_in(train.pairs_pill.text()) == usable
    assert usable_in(window.status_pairs.text()) == usable


def train_a_short_run(qtbot, window) -> str:
    """Train: one epoch (typed into the form), Start by click, wait until it has finished; the run is listed
    with a plain status. Returns the run's name as listed."""
    train = window.view("train")
    assert_no_internal_words(window, "Train, before a run")
    epochs = train.settings_form.editors["epochs"]
    type_into(qtbot, epochs, "1")
    press(qtbot, "Tab")
    assert epochs.value() == 1
    click(qtbot, train.start_button)
    qtbot.waitUntil(lambda: train.phase() != "idle", timeout=WAIT_MS)
    assert_no_internal_words(window, "Train, starting")
    qtbot.waitUntil(lambda: train.phase() == "idle" and train.start_button.isEnabled(), timeout=WAIT_MS)
    assert train.run_headline.text().startswith("Finished"), train.run_headline.text()
    assert train.runs_tree.topLevelItemCount() == 1
    run = row_texts(train.runs_tree, 0)
    assert run["Status"] == "completed"
    assert usable_in(f"{run['Pairs']} usable") == PAIRS_TO_TRAIN  # the run trained on the pairs counted
    assert_no_internal_words(window, "Train, finished")
    return run["Run"]


def export_and_open_chat(qtbot, window, run_name: str) -> None:
    """Export: the run is offered; F16 only (the quickest file that still chats), Export by click; the new file
    is selected and "Chat with it" is ready without a click on its row; clicking it opens Chat."""
    export = go_to(qtbot, window, 4, "export")
    offered = export.run_combo.currentText()
    assert offered.startswith(run_name)
    assert offered.count(HUB_NAME) == 1 and offered.count(" pairs") == 1, f"said twice: {offered!r}"
    for name, check in export.quant_checks.items():
        if check.isChecked() != (name == "F16"):
            click(qtbot, check)
    assert export.chosen_quantizations() == ("F16",)
    assert_no_internal_words(window, "Export, before")
    with qtbot.waitSignal(export.models_changed, timeout=WAIT_MS):
        click(qtbot, export.export_button)
    qtbot.waitUntil(lambda: not export.exporting(), timeout=WAIT_MS)
    selected = export.exports_tree.currentItem()
    assert selected is not None and selected.toolTip(0).endswith(".F16.gguf")
    assert export.chat_button.isEnabled(), "Chat with it is greyed out after the export"
    assert_no_internal_words(window, "Export, finished")
    click(qtbot, export.chat_button)


def chat_with_the_aligned_model(qtbot, window) -> None:
    """Chat: opens on the aligned model; a message sent by Ctrl+Enter gets a reply."""
    assert window.current_view() == "chat"
    chat = window.view("chat")
    assert "aligned, run 1 · F16" in chat.model_combo.currentText()
    assert_no_internal_words(window, "Chat, opened")
    type_into(qtbot, chat.input_edit, "Hello there.")
    press(qtbot, "Ctrl+Return")
    qtbot.waitUntil(lambda: chat.transcript.message_count() == 2, timeout=WAIT_MS)  # the message, the reply
    qtbot.waitUntil(lambda: not chat.transcript.writing and not chat.stop_button.isEnabled(), timeout=WAIT_MS)
    assert "Hello there." in chat.transcript.toPlainText()
    assert_no_internal_words(window, "Chat, replied")
