"""The Evaluate view, driven through its widgets and keys: the tiny GGUF as the base, a copy with changed
weights as the "aligned" model, both answering in llama.cpp."""

from __future__ import annotations

import shutil
import threading

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPlainTextEdit

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from desktop_dpo.gui import evaluate_view
from desktop_dpo.gui.evaluate_view import EvaluateView, vote_for_choice
from tests.gui.conftest import FixedSide, held_after_first_token, hold_the_model_child, show_active

WAIT_MS = 60_000  # generous: the machine is shared; nothing here asserts on time


@pytest.fixture(scope="session")
def changed_gguf(tiny_gguf, tmp_path_factory):
    """A copy of the tiny GGUF whose first feed-forward weights are tripled: the same file type (F32) and
    template as the base, different answers (as an aligned model's would be)."""
    from gguf import GGUFReader

    target = tmp_path_factory.mktemp("aligned") / "tiny-aligned-f32.gguf"
    shutil.copy(tiny_gguf, target)
    reader = GGUFReader(target, "r+")
    changed = [t for t in reader.tensors if t.name.startswith("blk.0.ffn_")]
    assert changed, [t.name for t in reader.tensors]
    for tensor in changed:
        tensor.data[...] = tensor.data * 3.0
    reader.data.flush()
    del reader
    return target


@pytest.fixture
def models(gui_store, tiny_gguf, changed_gguf):
    base = register_model(gui_store, tiny_gguf, name="tiny-base")
    aligned = register_model(
        gui_store, changed_gguf, name="tiny-aligned", source="aligned", parent_model_id=base.id
    )
    return base, aligned


def add_prompts(store: Store, *texts: str) -> list[int]:
    return [store.add_prompt([{"role": "user", "content": text}]) for text in texts]


def make_view(qtbot, gui_store, registry, pool, app_home, *, aligned_left=True) -> EvaluateView:
    view = EvaluateView(
        store=gui_store, registry=registry, pool=pool, paths=app_home, rng=FixedSide(aligned_left)
    )
    view.set_sampling_settings(SamplingSettings(temperature=0.8, max_tokens=10))
    show_active(qtbot, view, 1100, 780)
    view.prompt_view.setFocus()
    return view


def key(qtbot, view, combo: str) -> None:
    """Press a shortcut the way a person does, with the focus inside the tab."""
    mods, last = combo.split("+")
    modifiers = {"Alt": Qt.KeyboardModifier.AltModifier, "Ctrl": Qt.KeyboardModifier.ControlModifier}[mods]
    qtbot.keyClick(view.prompt_view, getattr(Qt.Key, f"Key_{last}"), modifiers)


def next_and_wait(qtbot, view) -> None:
    key(qtbot, view, "Alt+N")
    qtbot.waitUntil(lambda: view.vote_buttons["left"].isEnabled(), timeout=WAIT_MS)


def as_shown(text: str) -> str:
    """``text`` as a text pane shows it (Qt turns a lone carriage return, which the tiny model writes, into a
    new line)."""
    editor = QPlainTextEdit()
    editor.setPlainText(text)
    return editor.toPlainText()


def visible_words(view) -> str:
    """Every label text on screen (pane titles, status lines, activity, feedback, banner), lower-cased."""
    return " | ".join(label.text() for label in view.findChildren(QLabel) if label.isVisible()).lower()


def test_screen_sides_become_votes_for_models():
    assert [vote_for_choice(c, True) for c in ("left", "right", "tie", "both_bad")] == [
        "aligned", "base", "tie", "both_bad",
    ]  # fmt: skip
    assert [vote_for_choice(c, False) for c in ("left", "right")] == ["base", "aligned"]


def test_the_newest_aligned_model_and_its_base_are_chosen(qtbot, gui_store, registry, pool, app_home, models):
    base, aligned = models
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    chosen_base, chosen_aligned = view.models()
    assert (chosen_base.id, chosen_aligned.id) == (base.id, aligned.id)


@pytest.mark.parametrize("aligned_left", [True, False], ids=["aligned-left", "aligned-right"])
def test_identities_are_hidden_until_the_vote_then_revealed_and_stored(
    qtbot, gui_store, registry, pool, app_home, models, aligned_left
):
    base, aligned = models
    (prompt_id,) = add_prompts(gui_store, "Tell me about tea.")
    view = make_view(qtbot, gui_store, registry, pool, app_home, aligned_left=aligned_left)
    assert all(not b.isEnabled() for b in view.vote_buttons.values())

    next_and_wait(qtbot, view)
    left, right = view.panes[0].shown_text(), view.panes[1].shown_text()
    assert left != right, "the changed copy answers differently (else the sides could not be told apart)"
    assert view.prompt_view.toPlainText() == "Tell me about tea."
    assert [p.title.text() for p in view.panes] == ["Left", "Right"]
    on_screen = visible_words(view)
    for giveaway in ("aligned:", "base:", "tiny-base", "tiny-aligned"):
        assert giveaway not in on_screen, f"{giveaway!r} is on screen before the vote"

    key(qtbot, view, "Alt+2")  # the right answer is better

    (vote,) = gui_store.evaluation_votes(view.evaluation().id)
    assert vote.aligned_shown_left is aligned_left
    assert vote.vote == ("base" if aligned_left else "aligned")  # the model that was on the right
    stored = (as_shown(vote.aligned_text), as_shown(vote.base_text))
    assert stored == ((left, right) if aligned_left else (right, left))
    assert vote.prompt_id == prompt_id and vote.judge == "person" and vote.seed is not None
    evaluation = gui_store.get_evaluation(vote.evaluation_id)
    assert (evaluation.base_model_id, evaluation.aligned_model_id) == (base.id, aligned.id)
    assert evaluation.quantization == "F32" and evaluation.settings["sampling"]["max_tokens"] == 10

    titles = [p.title.text() for p in view.panes]
    aligned_title = "Left: aligned · tiny-aligned" if aligned_left else "Right: aligned · tiny-aligned"
    base_title = "Right: base · tiny-base" if aligned_left else "Left: base · tiny-base"
    assert sorted(titles) == sorted([aligned_title, base_title])
    assert view.panes[1].property("chosen") is True and not view.panes[0].property("chosen")
    winner = "base" if aligned_left else "aligned"
    assert view.feedback.text() == f"Saved: right, the {winner} model."
    assert all(not b.isEnabled() for b in view.vote_buttons.values()), "a pair is voted on once"


def test_the_summary_updates_with_every_vote_and_survives_a_restart(
    qtbot, gui_store, registry, pool, app_home, models
):
    add_prompts(gui_store, "Name a colour.", "Name a fruit.", "Name a tree.")
    view = make_view(qtbot, gui_store, registry, pool, app_home, aligned_left=True)
    assert view.summary_text.text() == "No votes yet."
    assert view.votes_label.text() == "0 votes"
    shown = []
    for choice in ("Alt+1", "Alt+3", "Alt+1"):  # aligned (left), tie, aligned
        next_and_wait(qtbot, view)
        shown.append(view.prompt_view.toPlainText())
        key(qtbot, view, choice)
    assert shown == ["Name a colour.", "Name a fruit.", "Name a tree."], "each prompt once, in order"
    # 2 of 2: Wilson (0.342, 1.0).
    assert (
        view.summary_text.text()
        == "The aligned model won 2 of 2 decisive votes (100%, 95% CI 34–100%); 1 tie."
    )
    assert "Not clear yet" in view.conclusion_text.text()
    assert view.votes_label.text() == "3 votes"
    assert not view.next_button.isEnabled(), "every prompt has a vote"
    assert "0 not judged yet" in view.prompts_note.text()

    again = make_view(qtbot, gui_store, registry, pool, app_home)
    assert again.evaluation().id == view.evaluation().id, (
        "the same models and settings continue one evaluation"
    )
    assert again.votes_label.text() == "3 votes"
    again.set_sampling_settings(SamplingSettings(temperature=0.3, max_tokens=10))
    assert again.evaluation() is None and again.votes_label.text() == "0 votes", (
        "other settings, another count"
    )
    assert again.next_button.isEnabled()


def test_training_prompts_are_never_shown(qtbot, gui_store, registry, pool, app_home, models, tmp_path):
    trained, heldout, _fresh = add_prompts(gui_store, "Trained on.", "Held out.", "Never used.")
    gui_store.set_prompt_splits({trained: "train", heldout: "heldout"})
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    assert "2 evaluation prompts" in view.prompts_note.text()

    prompt_file = tmp_path / "more.txt"
    prompt_file.write_text("Trained on.\nFrom a file.\n", encoding="utf-8")
    assert view.load_prompt_file(prompt_file) == 1, "the training prompt in the file is left out"

    seen = []
    while view.next_button.isEnabled():
        next_and_wait(qtbot, view)
        seen.append(view.prompt_view.toPlainText())
        key(qtbot, view, "Alt+4")
    assert seen == ["Held out.", "Never used.", "From a file."]
    assert view.summary().both_bad == 3


def test_models_at_different_quantizations_are_explained(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, tiny_model_dir
):
    base = register_model(gui_store, tiny_gguf, name="tiny-gguf")
    register_model(gui_store, tiny_model_dir, name="tiny-folder", source="aligned", parent_model_id=base.id)
    add_prompts(gui_store, "Tell me about tea.")
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    key(qtbot, view, "Alt+N")
    assert "Export the aligned model at F32" in view.error_text()
    assert not registry.running() and view.pair is None
    assert gui_store.list_evaluations() == []


def test_an_aligned_q8_0_is_compared_with_its_gguf_base_at_q8_0_through_the_trainable_copy(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, tiny_model_dir, tmp_path
):
    # An export goes on with its Q8_0 file; the base it was trained from is a GGUF of another type (F32 here, the
    # demo's Q4_K_M), so the comparison runs the base's trainable copy at Q8_0 instead of refusing.
    from desktop_dpo.core.export.gguf import convert_hf_to_gguf
    from desktop_dpo.core.jobs import run_job
    from desktop_dpo.core.model_files import trainable_copy_dir
    from desktop_dpo.core.models import recorded_trainable_copy

    base = register_model(gui_store, tiny_gguf, name="tiny-gguf")
    base, _ = run_job(recorded_trainable_copy(gui_store, base, trainable_copy_dir(app_home, base)))
    q8_file, _ = run_job(convert_hf_to_gguf(tiny_model_dir, tmp_path / "aligned.Q8_0.gguf", outtype="q8_0"))
    aligned = register_model(
        gui_store, q8_file, name="tiny-aligned", source="aligned", parent_model_id=base.id
    )
    add_prompts(gui_store, "Tell me about tea.")
    view = EvaluateView(store=gui_store, registry=registry, pool=pool, paths=app_home, rng=FixedSide(True))
    with qtbot.waitSignal(view.models_changed, timeout=5_000, raising=False) as told:
        pass  # told after the view has filled its lists
    view.set_sampling_settings(SamplingSettings(temperature=0.8, max_tokens=10))
    show_active(qtbot, view, 1100, 780)
    view.prompt_view.setFocus()
    chosen_base, chosen_aligned = view.models()
    assert chosen_aligned.id == aligned.id
    assert chosen_base.name == "tiny-gguf, as Q8_0" and chosen_base.parent_model_id == base.id
    assert view.base_combo.currentText().startswith("tiny-gguf, as Q8_0")
    assert told.signal_triggered, "the other views are told a model was registered"
    next_and_wait(qtbot, view)
    assert view.error_text() == ""
    assert view.pair is not None and view.pair.base.id == chosen_base.id
    # Another day: the copy is registered already, so nothing new is announced.
    again = EvaluateView(store=gui_store, registry=registry, pool=pool, paths=app_home, rng=FixedSide(True))
    qtbot.addWidget(again)
    with qtbot.waitSignal(again.models_changed, timeout=500, raising=False) as told_again:
        pass
    assert again.models()[0].id == chosen_base.id and not told_again.signal_triggered


def test_stop_leaves_nothing_to_judge_and_the_prompt_comes_round_again(
    qtbot, gui_store, registry, pool, app_home, models, monkeypatch, tmp_path
):
    add_prompts(gui_store, "Tell me a long story.")
    release_child = hold_the_model_child(monkeypatch, tmp_path)  # the stop lands mid-answer in the child too
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    view.set_sampling_settings(SamplingSettings(max_tokens=4000))
    first_token = threading.Event()
    stop_pressed = threading.Event()
    held = held_after_first_token(evaluate_view.sample_evaluation_pair, first_token, stop_pressed)
    monkeypatch.setattr(evaluate_view, "sample_evaluation_pair", held)
    key(qtbot, view, "Alt+N")
    qtbot.waitUntil(first_token.is_set, timeout=WAIT_MS)
    assert view.stop_button.isEnabled() and not view.next_button.isEnabled()
    assert [p.shown_text() for p in view.panes] == ["", ""], "no text before both answers are complete"
    qtbot.keyClick(view.prompt_view, Qt.Key.Key_Escape)
    stop_pressed.set()
    qtbot.waitUntil(lambda: view.next_button.isEnabled(), timeout=WAIT_MS)
    release_child()

    assert all(not b.isEnabled() for b in view.vote_buttons.values())
    assert [p.status.text() for p in view.panes] == ["Stopped", "Stopped"]
    assert gui_store.list_evaluations() == []
    assert [p.text for p in view.remaining_prompts()] == ["Tell me a long story."]


def test_a_missing_model_file_is_explained(qtbot, gui_store, registry, pool, app_home, tiny_gguf, tmp_path):
    base = register_model(gui_store, tiny_gguf, name="tiny-base")
    gone = tmp_path / "gone.gguf"
    shutil.copyfile(tiny_gguf, gone)
    register_model(gui_store, gone, name="gone", source="aligned", parent_model_id=base.id)
    add_prompts(gui_store, "Hello?")
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    gone.unlink()

    with qtbot.waitSignal(view.status_message, timeout=WAIT_MS, check_params_cb=lambda text: "moved" in text):
        key(qtbot, view, "Alt+N")
    assert "moved or deleted" in view.error_text() and str(gone) in view.error_text()
    qtbot.waitUntil(lambda: view.next_button.isEnabled(), timeout=WAIT_MS)
    assert all(not b.isEnabled() for b in view.vote_buttons.values())
    assert gui_store.list_evaluations() == []


def test_evaluate_starts_with_collects_sampling_settings_and_keeps_its_own_once_changed(
    qtbot, gui_store, registry, pool, app_home
):
    from desktop_dpo.gui.collect_view import CollectView

    collect = CollectView(store=gui_store, registry=registry, pool=pool, paths=app_home)
    qtbot.addWidget(collect)
    collects = SamplingSettings(temperature=0.7, max_tokens=80)
    collect.set_sampling_settings(collects)  # remembered, as the person's change in Collect is

    view = EvaluateView(store=gui_store, registry=registry, pool=pool, paths=app_home)
    show_active(qtbot, view, 1100, 780)
    assert view.sampling_panel.settings() == collects, "like with like: not the 256-token defaults"
    assert "up to 80 tokens" in view.sampling_panel.summary.text()
    assert "same sampling settings as collect" in visible_words(view)
    assert not view.use_collect_button.isVisible()

    view.sampling_panel.max_tokens.setValue(120)  # the person changes them here
    assert "not collect's sampling settings" in visible_words(view)
    assert view.use_collect_button.isVisible()
    again = EvaluateView(store=gui_store, registry=registry, pool=pool, paths=app_home)
    qtbot.addWidget(again)
    assert again.sampling_panel.settings().max_tokens == 120, "the person's own choice is remembered"

    qtbot.mouseClick(view.use_collect_button, Qt.MouseButton.LeftButton)
    assert view.sampling_panel.settings() == collects
    assert not view.use_collect_button.isVisible()
    collect.set_sampling_settings(SamplingSettings(max_tokens=64))
    view.hide()
    view.show()  # back to Evaluate: it follows Collect again
    assert view.sampling_panel.settings() == SamplingSettings(max_tokens=64)


def test_while_a_pair_is_written_both_panes_show_progress_but_no_text(
    qtbot, gui_store, registry, pool, app_home, models, monkeypatch, tmp_path
):
    add_prompts(gui_store, "Tell me a long story.")
    release_child = hold_the_model_child(monkeypatch, tmp_path)
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    view.set_sampling_settings(SamplingSettings(max_tokens=50))
    first_token = threading.Event()
    release = threading.Event()
    held = held_after_first_token(evaluate_view.sample_evaluation_pair, first_token, release)
    monkeypatch.setattr(evaluate_view, "sample_evaluation_pair", held)
    try:
        key(qtbot, view, "Alt+N")
        statuses = [p.status.text() for p in view.panes]
        assert all(statuses) and statuses[0] == statuses[1], "a sign of life at once, the same on both sides"
        qtbot.waitUntil(lambda: "of at most 50 tokens" in view.panes[0].status.text(), timeout=WAIT_MS)

        for pane in view.panes:
            assert pane.status.isVisible() and "first answer" in pane.status.text().lower()
            assert pane.status.text() == view.panes[0].status.text(), "progress says nothing about the sides"
            assert pane.shown_text() == "" and "revealed after your vote" in pane.text.placeholderText()
        assert all(not b.isEnabled() for b in view.vote_buttons.values())
        assert [p.title.text() for p in view.panes] == ["Left", "Right"], "the sides stay unnamed"
    finally:
        release.set()
        release_child()
    qtbot.waitUntil(lambda: view.vote_buttons["left"].isEnabled(), timeout=WAIT_MS)
    assert all(p.shown_text() for p in view.panes)
    assert all("token" in p.status.text() and "of at most" not in p.status.text() for p in view.panes)
