"""The shared page pieces: the model picker keeps the person's choice, and a view's sampling settings come back."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QLabel, QTextEdit, QWidget

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.export.pipeline import aligned_model_name
from desktop_dpo.core.store import Store
from desktop_dpo.gui.sampling_settings_panel import SamplingSettingsPanel
from desktop_dpo.gui.widgets import NO_MODEL_YET, STRETCH, FitsText, FoldToggle, ModelCombo, hbox, vbox


def _models(store: Store, names: list[str]):
    for name in names:
        store.add_model(name=name, path=f"/models/{name}.gguf", kind="gguf", fingerprint=name)
    return store.list_models()


def test_the_model_picker_keeps_the_choice_when_it_is_filled_again(qtbot, gui_store):
    combo = ModelCombo("The model that answers")
    qtbot.addWidget(combo)
    changes: list[int] = []
    combo.currentIndexChanged.connect(changes.append)
    models = _models(gui_store, ["alpha", "beta"])
    combo.fill(models, None)
    assert [combo.itemText(i) for i in range(combo.count())] == ["alpha  ·  GGUF", "beta  ·  GGUF"]
    assert combo.chosen(models).name == "alpha"  # nothing wanted: the first
    combo.fill(models, models[1].id)
    assert combo.model_id() == models[1].id
    combo.fill(_models(gui_store, ["gamma"]), combo.model_id())
    assert combo.chosen(gui_store.list_models()).name == "beta"  # still the person's choice
    tooltip = combo.itemData(combo.currentIndex(), Qt.ItemDataRole.ToolTipRole)
    assert tooltip == "beta  ·  GGUF\n/models/beta.gguf"  # the whole text and the path, on hover
    assert changes == []  # filling never looks like the person choosing


@pytest.mark.parametrize("min_length", [16, None])  # as narrow as the Train view's, and the default
def test_an_aligned_model_and_its_base_read_differently_in_a_narrow_picker(qtbot, gui_store, min_length):
    base = gui_store.add_model(
        name="Gemma 3 270M (demo, Q4_K_M)", path="/models/gemma.gguf", kind="gguf", fingerprint="base"
    )
    for run in (3, 4):  # two rounds of the same base, as the export registers them
        gui_store.add_model(
            name=aligned_model_name("Gemma 3 270M (demo, Q4_K_M)", run, "Q4_K_M"),
            path=f"/exports/gemma-run-{run}/model.Q4_K_M.gguf",
            kind="gguf",
            fingerprint=f"run {run}",
            source="aligned",
            parent_model_id=base,
        )
    models = gui_store.list_models()
    page = QWidget()
    combo = ModelCombo("The model that answers", **({"min_length": min_length} if min_length else {}))
    hbox(combo, STRETCH, parent=page)
    qtbot.addWidget(page)
    page.resize(combo.sizeHint().width(), 40)  # the picker no wider than it asks to be
    page.show()
    qtbot.waitExposed(page)
    combo.fill(models, None)
    texts = [combo.itemText(i) for i in range(combo.count())]
    shown = []
    for index in range(combo.count()):
        combo.setCurrentIndex(index)
        shown.append(combo.shown_text())
        combo.repaint()  # paints the shortened text (no error on the way)
    width = combo.width()
    if min_length:
        ends_cut = {combo.fontMetrics().elidedText(t, Qt.TextElideMode.ElideRight, width) for t in texts}
        assert len(ends_cut) < len(texts)  # cut at their end, as a plain box does, they would read alike
    assert len(set(shown)) == len(texts)  # as this box shows them, each reads differently
    assert all(combo.fontMetrics().horizontalAdvance(text) <= width for text in shown)
    assert "run 3" in shown[1] and "run 4" in shown[2] and "(demo" in shown[0]
    assert all(text.startswith("Gem") for text in shown), shown  # the start, for the family
    tooltips = [combo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(combo.count())]
    assert tooltips[1].startswith("Gemma 3 270M · aligned, run 3 · Q4_K_M  ·  GGUF\n")  # whole, on hover
    assert combo.view().minimumWidth() >= combo.view().sizeHintForColumn(0)  # the open list shows them whole


def test_without_models_the_picker_says_where_to_add_one(qtbot):
    combo = ModelCombo("The model that answers")
    qtbot.addWidget(combo)
    combo.fill([], None)
    assert combo.currentText() == NO_MODEL_YET and combo.model_id() is None
    combo.fill([], None, placeholder=False)
    assert combo.count() == 0


def test_sampling_settings_are_saved_and_come_back(qtbot, tmp_path):
    saved = QSettings(str(tmp_path / "window.ini"), QSettings.Format.IniFormat)
    first = SamplingSettingsPanel()
    qtbot.addWidget(first)
    first.remember(saved, "collect/sampling")
    assert first.settings() == SamplingSettings()  # nothing saved yet: the defaults
    first.set_settings(SamplingSettings(temperature=0.3, max_tokens=64))
    again = SamplingSettingsPanel()
    qtbot.addWidget(again)
    again.remember(saved, "collect/sampling")
    assert again.settings() == SamplingSettings(temperature=0.3, max_tokens=64)
    saved.setValue("chat/sampling", "{not json")
    unreadable = SamplingSettingsPanel()
    qtbot.addWidget(unreadable)
    unreadable.remember(saved, "chat/sampling")
    assert unreadable.settings() == SamplingSettings()


def test_a_box_lays_out_widgets_layouts_stretch_and_space_in_order(qtbot):
    page = QWidget()
    qtbot.addWidget(page)
    first, second, third = QLabel("first"), QLabel("second"), QLabel("third")
    row = hbox(second, STRETCH, 12, (third, 2, Qt.AlignmentFlag.AlignTop), spacing=5)
    column = vbox(first, (row, 1), parent=page, margins=(1, 2, 3, 4), spacing=6)
    assert page.layout() is column and first.parentWidget() is page and third.parentWidget() is page
    assert column.itemAt(1).layout() is row and column.stretch(1) == 1
    assert (column.contentsMargins().left(), column.contentsMargins().bottom(), column.spacing()) == (1, 4, 6)
    assert [row.itemAt(i).widget() for i in (0, 3)] == [second, third]
    assert row.itemAt(1).spacerItem() is not None and row.stretch(1) == 1  # the free room
    assert row.itemAt(2).spacerItem().sizeHint().width() == 12  # a fixed space
    assert row.stretch(3) == 2 and row.itemAt(3).alignment() == Qt.AlignmentFlag.AlignTop


def test_a_fold_toggle_shows_its_body_and_turns_its_arrow(qtbot):
    body = QWidget()
    qtbot.addWidget(body)
    toggle = FoldToggle("More", body, name="moreToggle", tooltip="Show more")
    qtbot.addWidget(toggle)
    assert body.isHidden() and toggle.arrowType() == Qt.ArrowType.RightArrow
    toggle.click()
    assert not body.isHidden() and toggle.arrowType() == Qt.ArrowType.DownArrow
    toggle.click()
    assert body.isHidden() and toggle.arrowType() == Qt.ArrowType.RightArrow


class _Fitted(FitsText, QTextEdit):
    def __init__(self):
        super().__init__()
        self.fit_height(40, 120, floor=30)


def test_a_fitted_text_box_is_as_tall_as_its_text_within_its_limits(qtbot):
    box = _Fitted()
    qtbot.addWidget(box)
    box.resize(300, 200)
    box.show()
    assert box.sizeHint().height() == 40 and box.minimumSizeHint().height() == 30
    box.setPlainText("one line")
    box.fit_to_contents()
    assert box.sizeHint().height() == 40  # short text: the lower limit
    box.setPlainText("\n".join(f"line {i}" for i in range(40)))
    box.fit_to_contents()
    assert box.sizeHint().height() == 120  # long text: the upper limit, then it scrolls


def test_a_warning_from_a_job_is_said_once_in_the_banner(qtbot):
    """A model that crashed and is retried in safe mode: the long message in the amber banner, not again on
    the activity line below it."""
    from PySide6.QtCore import Signal

    from desktop_dpo.gui.message_banner import MessageBanner
    from desktop_dpo.gui.view_messages import ActivityLine, ViewMessages

    class View(ViewMessages, QWidget):
        status_message = Signal(str)

        def __init__(self) -> None:
            super().__init__()
            self.banner, self.activity_row = MessageBanner(), ActivityLine()
            vbox(self.banner, self.activity_row, parent=self)

    view = View()
    qtbot.addWidget(view)
    view.show()
    crashed = "The model crashed while loading (a segmentation fault) and now runs in safe mode."
    view.show_log(crashed, "warning")
    assert view.banner.message() == crashed
    assert crashed not in view.activity() and view.activity() != ""
    view.show_log("Loading Tiny Llama…")  # an ordinary line goes on the activity line
    assert view.activity() == "Loading Tiny Llama…"
