"""A native crash or hang of llama.cpp, in the Collect view: a message, never a dead window or a lost pick.

Each fault is injected in the model's child process as native code fails (``llama_child.FAULT_ENV``): a
real segmentation fault while loading in the normal mode (the AMX class of crash, reproduced on any CPU), a
segmentation fault in the middle of a pair, and a child that stops answering. The window goes on; the
person reads what happened; the database is intact with every pick saved before; the next sample works.
"""

from __future__ import annotations

import sqlite3

import pytest

from desktop_dpo.core.llm import supervised
from desktop_dpo.core.llm.llama_child import FAULT_ENV
from desktop_dpo.core.llm.load_modes import LoadModeMemory
from desktop_dpo.core.models import register_model
from tests.gui.test_collect_view import WAIT_MS, key, make_view, sample_and_wait


def integrity(db_path) -> str:
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        connection.close()


def pick(qtbot, view, prompt: str) -> None:
    sample_and_wait(qtbot, view, prompt)
    key(qtbot, view, "Alt+1")


@pytest.mark.parametrize(
    ("fault", "seen"),
    [
        (
            "amx",
            "The model crashed while loading (a segmentation fault (signal 11)); trying again in safe mode",
        ),
        ("segv-pair", "The model crashed while writing the answers (a segmentation fault (signal 11))"),
        ("hang-pair", "The model stopped responding while writing the answers"),
    ],
)
def test_a_native_fault_is_a_message_and_every_pick_survives(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, tmp_path, monkeypatch, fault, seen
):
    monkeypatch.setattr(supervised, "HANG_TIMEOUT_S", 3.0)
    register_model(gui_store, tiny_gguf, name="tiny")
    view = make_view(qtbot, gui_store, registry, pool, app_home, max_tokens=40)
    for prompt in ("Tell me about tea.", "Name a colour."):
        pick(qtbot, view, prompt)
    saved = [c.comparison.id for c in gui_store.comparison_views()]
    assert len(saved) == 2

    # The fault is in the next child: the model is unloaded (as before training), then loads again.
    once = tmp_path / "fault-once"
    once.write_text("armed")
    monkeypatch.setenv(FAULT_ENV, fault if fault == "amx" else f"{fault}:{once}")
    pool.close_all()

    view.prompt_edit.clear()
    qtbot.keyClicks(view.prompt_edit, "What is a river?")
    key(qtbot, view, "Ctrl+Return")
    qtbot.waitUntil(lambda: seen in view.banner.message(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: view.sample_button.isEnabled(), timeout=WAIT_MS)
    assert view.isVisible()
    if fault == "amx":
        # Retried at once in safe mode: the pair arrived, and the next start goes straight to safe mode.
        assert view.verdict_buttons["left"].isEnabled()
        (record,) = LoadModeMemory.in_folder(app_home.data_dir).records()
        assert record.mode == "safe"
    else:
        assert "Nothing you saved is lost" in view.banner.message()
        assert not view.verdict_buttons["left"].isEnabled(), "a broken pair cannot be judged"

    assert integrity(app_home.db_path) == "ok"
    assert [c.comparison.id for c in gui_store.comparison_views()] == saved

    # The next sample works, and its pick is saved with the others.
    pick(qtbot, view, "Why is the sea salty?")
    assert len(gui_store.comparison_views()) == 3
    assert integrity(app_home.db_path) == "ok"
