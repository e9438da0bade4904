"""Re-asking on screen: Collect now and then shows an earlier pair again, sides swapped, saved linked to the
first verdict, and the person's own prompt comes back; the Data view's check states the agreement and offers
the label smoothing it implies, which lands in Train's advanced settings."""

from __future__ import annotations

import itertools
import random

from PySide6.QtCore import Qt

from desktop_dpo.core.llm.generation import GenerationResult
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from desktop_dpo.gui.collect_reveal import (
    DEFAULT_FIRST_TOKEN_S,
    DEFAULT_TOKENS_PER_S,
    TOKENS_PER_S_RANGE,
    Pace,
    token_count,
)
from desktop_dpo.gui.collect_view import CollectView
from tests.gui.test_collect_view import WAIT_MS, key, make_view, shown
from tests.gui.test_data_check import open_check

DUE_SEED = 31  # random.Random(31).random() < 1/20: the first pair asked for is a repeat


def judged(store: Store, count: int) -> list[int]:
    """``count`` pairs judged in Collect (shown side by side), A on the left, A better."""
    return [
        store.record_pair(
            messages=[{"role": "user", "content": f"Earlier question {n}?"}],
            text_a=f"The first answer to question {n}.",
            text_b=f"Another answer, number {n}.",
            verdict="a",
            a_shown_left=True,
        )
        for n in range(count)
    ]


def test_collect_re_asks_an_earlier_pair_swapped_and_links_the_verdict(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf
):
    register_model(gui_store, tiny_gguf, name="tiny")
    originals = judged(gui_store, 10)
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    view.reasker.rng = random.Random(DUE_SEED)
    qtbot.keyClicks(view.prompt_edit, "My own new question.")

    key(qtbot, view, "Ctrl+Return")
    qtbot.waitUntil(lambda: view.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)  # written out

    pair = view.pair
    assert pair is not None and pair.repeat_of in originals
    original = gui_store.get_comparison(pair.repeat_of)
    number = originals.index(original.id)
    # Sides swapped: A was on the left the first time, so now it is on the right.
    assert shown(view) == (f"Another answer, number {number}.", f"The first answer to question {number}.")
    assert view.prompt_edit.toPlainText() == f"Earlier question {number}?"
    assert view.verdict_buttons["left"].isEnabled() and view.verdict_buttons["right"].isEnabled()
    assert not view.stop_button.isEnabled(), "nothing is being written"
    labels = view.findChildren(type(view.feedback))
    on_screen = " ".join(label.text() for label in labels if label.isVisible()).lower()
    assert "which answer is better? alt+1 left" in on_screen, "asked as any pair is"
    assert not any(word in on_screen for word in ("repeated", "again", "earlier pair")), "it does not say so"

    key(qtbot, view, "Alt+2")  # the right answer, which is A: the same verdict as before

    stored = gui_store.comparison_views()[-1].comparison
    assert (stored.repeat_of, stored.verdict, stored.a_shown_left) == (original.id, "a", False)
    assert (stored.generation_a_id, stored.generation_b_id) == (
        original.generation_a_id,
        original.generation_b_id,
    )
    assert view.prompt_edit.toPlainText() == "My own new question.", "the person's prompt is back"
    assert view.pairs_label.text() == "10 usable pairs", "a repeat is not another pair to train on"

    key(qtbot, view, "Ctrl+Return")  # never twice in a row: this one is sampled for the person's prompt
    qtbot.waitUntil(lambda: view.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    assert view.pair.repeat_of is None and view.pair.messages[-1]["content"] == "My own new question."
    qtbot.waitUntil(lambda: not view.stop_button.isEnabled(), timeout=WAIT_MS)
    # The next repeat is written at the pace this pair was (the last of its answers to finish).
    low, high = TOKENS_PER_S_RANGE
    paces = {min(max(r.tokens_per_second, low), high) for r in view.pair.results if r.completion_tokens > 1}
    assert not paces or view.reveal.pace.tokens_per_s in paces


def start_a_repeat(qtbot, gui_store, registry, pool, app_home, tmp_path) -> tuple[CollectView, list[int]]:
    """Ten judged pairs, then Sample in a view whose next pair is a repeat, written at 5 tokens a second.
    Its model is never run: a repeat's answers are stored ones."""
    gui_store.add_model(name="tiny", path=str(tmp_path / "tiny"), kind="hf", fingerprint="fp")
    originals = judged(gui_store, 10)
    view = make_view(qtbot, gui_store, registry, pool, app_home)
    view.reasker.rng = random.Random(DUE_SEED)
    view.reveal.pace = Pace(tokens_per_s=5.0, first_token_s=0.2)  # under two seconds for these answers
    qtbot.keyClicks(view.prompt_edit, "My own new question.")
    key(qtbot, view, "Ctrl+Return")
    assert view.pair is not None and view.pair.repeat_of in originals
    return view, originals


def test_a_repeat_is_written_out_as_a_new_pair_is_and_judged_once_both_are_done(
    qtbot, gui_store, registry, pool, app_home, tmp_path
):
    seen: list[tuple[tuple[str, str], bool]] = []  # what is on screen after each bit of text
    view, _originals = start_a_repeat(qtbot, gui_store, registry, pool, app_home, tmp_path)
    view.reveal.event.connect(
        lambda _event: seen.append((shown(view), view.verdict_buttons["left"].isEnabled()))
    )
    number = int(view.prompt_edit.toPlainText().split()[-1].rstrip("?"))
    full = (f"Another answer, number {number}.", f"The first answer to question {number}.")

    # As a sampled pair starts: empty panes waiting, nothing to judge, Stop on, the same line below.
    assert shown(view) == ("", "")
    assert [pane.status.text() for pane in view.panes] == ["Waiting…", "Waiting…"]
    assert not any(button.isEnabled() for button in view.verdict_buttons.values())
    assert view.stop_button.isEnabled() and not view.sample_button.isEnabled()
    assert view.activity() == "Writing two answers with tiny… Esc stops."

    qtbot.waitUntil(lambda: 0 < len(shown(view)[1]) < len(full[1]), timeout=WAIT_MS)
    assert view.panes[1].status.text().startswith("Writing… ")
    assert full[1].startswith(shown(view)[1]), "the answer grows from its beginning"
    assert not view.verdict_buttons["left"].isEnabled()

    qtbot.waitUntil(lambda: view.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    assert shown(view) == full
    assert all(pane.status.text().endswith("· finished") for pane in view.panes)
    assert not view.stop_button.isEnabled()
    assert view.activity().startswith("Which answer is better? Alt+1 left")
    # Many steps, each a longer beginning of the answers; the verdicts came on only once both were whole.
    assert len({texts for texts, _judgeable in seen}) >= 5
    assert all(texts == full for texts, judgeable in seen if judgeable)
    for (before, _b), (after, _a) in itertools.pairwise(seen):
        assert all(a.startswith(b) for a, b in zip(after, before, strict=True))


def test_stop_or_skip_while_a_repeat_is_written_saves_nothing_and_loses_nothing(
    qtbot, gui_store, registry, pool, app_home, tmp_path
):
    view, originals = start_a_repeat(qtbot, gui_store, registry, pool, app_home, tmp_path)
    before = [(c.comparison.id, c.comparison.verdict) for c in gui_store.comparison_views()]
    qtbot.waitUntil(lambda: shown(view)[1] != "", timeout=WAIT_MS)

    key(qtbot, view, "Alt+0")  # skip while it is being written: nothing to judge yet, as when sampling
    assert [(c.comparison.id, c.comparison.verdict) for c in gui_store.comparison_views()] == before

    key(qtbot, view, "Esc")
    partial = shown(view)
    assert [pane.status.text() for pane in view.panes] == ["Stopped", "Stopped"]
    assert partial != ("", "") and view.pair is not None and not view.pair.complete, "the text so far stays"
    assert not any(button.isEnabled() for button in view.verdict_buttons.values())
    assert view.prompt_edit.toPlainText() == "My own new question.", "the person's prompt is back"
    assert view.sample_button.isEnabled() and not view.stop_button.isEnabled()
    qtbot.wait(400)
    assert shown(view) == partial, "nothing more is written after Stop"
    key(qtbot, view, "Alt+0")
    assert [(c.comparison.id, c.comparison.verdict) for c in gui_store.comparison_views()] == before

    assert len(gui_store.repeat_candidate_ids()) == len(originals), "the stopped repeat can come again"

    key(qtbot, view, "Ctrl+Return")  # a new pair for the person's own prompt (its model is not there)
    assert view.pair.repeat_of is None and view.pair.messages[-1]["content"] == "My own new question."
    qtbot.waitUntil(lambda: not view.stop_button.isEnabled(), timeout=WAIT_MS)


def test_the_check_states_the_agreement_and_sets_the_smoothing_in_train(qtbot, make_window, gui_store):
    originals = judged(gui_store, 20)
    for number, original_id in enumerate(originals):
        original = gui_store.get_comparison(original_id)
        gui_store.add_comparison(
            prompt_id=original.prompt_id,
            generation_a_id=original.generation_a_id,
            generation_b_id=original.generation_b_id,
            verdict="b" if number in (1, 8, 15) else "a",
            a_shown_left=False,
            repeat_of=original_id,
        )
    window = make_window()
    window.show_view("data")
    data = window.view("data")
    open_check(qtbot, data)
    panel = data.check_panel

    assert (
        "You agreed with yourself on 17 of 20 repeated pairs (85%; 95% interval 64–95%)."
        in panel.rates.text()
    )
    (row,) = [r for r in panel.rows if r.finding.key == "low_agreement"]
    assert "label smoothing 0.08" in row.advice.text()
    assert row.smoothing_button is not None and row.smoothing_button.isVisible()
    assert row.smoothing_button.text() == "Train with label smoothing 0.08"

    qtbot.mouseClick(row.smoothing_button, Qt.MouseButton.LeftButton)

    assert window.current_view() == "train"
    train = window.view("train")
    assert train.settings().label_smoothing == 0.08 and train.settings().loss_type == "sigmoid"
    form = train.settings_form
    assert form.advanced_toggle.isChecked() and form.editors["label_smoothing"].isVisible()
    assert "Label smoothing set to 0.08" in window.statusBar().currentMessage()


def test_the_pace_is_learnt_from_answers_sampled_whole():
    def answer(tokens: int, seconds: float, prompt_seconds: float, finish: str = "stop") -> GenerationResult:
        return GenerationResult("x" * tokens * 4, 12, tokens, seconds, finish, 1, {}, prompt_seconds)

    pace = Pace()
    assert (pace.tokens_per_s, pace.first_token_s) == (DEFAULT_TOKENS_PER_S, DEFAULT_FIRST_TOKEN_S)
    pace.observe(answer(40, 2.5, 0.5))  # 40 tokens in 2 s after half a second on the prompt
    assert (pace.tokens_per_s, pace.first_token_s) == (20.0, 0.5)
    pace.observe(answer(3, 1.0, 0.2, finish="cancelled"))  # a stopped answer says nothing of the pace
    pace.observe(answer(1, 0.01, 0.005))  # nor does a single token
    assert (pace.tokens_per_s, pace.first_token_s) == (20.0, 0.5)
    pace.observe(answer(100, 0.1, 0.05))  # 2000 tokens a second: a fluke, held to the range
    assert pace.tokens_per_s == TOKENS_PER_S_RANGE[1]
    # An answer's length: its stored tokens, else about four characters a token.
    assert token_count(answer(7, 1.0, 0.1)) == 7
    assert token_count(GenerationResult("y" * 40, 0, 0, 0.0, "stop", 0, {})) == 10
