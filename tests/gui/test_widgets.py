"""The shared page pieces: the model picker keeps the person's choice, and a view's sampling settings come back."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.store import Store
from desktop_dpo.gui.sampling_settings_panel import SamplingSettingsPanel
from desktop_dpo.gui.widgets import NO_MODEL_YET, ModelCombo


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
    assert tooltip == "/models/beta.gguf"  # the path, on hover
    assert changes == []  # filling never looks like the person choosing


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
