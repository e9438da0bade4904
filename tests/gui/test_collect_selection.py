"""Collect shows the most informative pair: 4 answers written, the two the last run is surest about shown
(before any run, two answers as they come), a line that says why, a setting that turns it off, and a repeat
that goes through the same steps. The answers come from a tiny GGUF in llama.cpp; the run's scorer is a fake
that records what it was asked and returns the rewards the test chose."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication

from desktop_dpo.core.dpo.config import TrainingError
from desktop_dpo.core.dpo.implicit_reward import ImplicitRewardScorer
from desktop_dpo.core.jobs import CancelToken
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent
from desktop_dpo.core.models import register_model
from desktop_dpo.core.pair_selection import choose_pair
from desktop_dpo.core.store import Store
from desktop_dpo.gui.collect_reveal import Pace
from desktop_dpo.gui.collect_selection import OPTION_TIP
from desktop_dpo.workers.job_op import JobOp
from tests.gui.conftest import cut_texts
from tests.gui.test_collect_view import WAIT_MS, as_shown, key, make_view, shown
from tests.gui.test_reask import DUE_SEED, judged
from tests.gui.test_screenshots import SCREENSHOT_DIR_ENV

REWARDS = [0.0, 50.0, 100.0, 50.1]  # answers 0 and 2 are the furthest apart: the pair the run is surest about
SCREENSHOT_NAME = "collect-why-this-pair.png"  # resources/screenshots/ has the README's copy


class FakeScorer:
    """Stands in for a run's adapter: records each call, returns ``rewards`` (in order, as many as asked)."""

    def __init__(self, rewards: list[float]):
        self.rewards_given = rewards
        self.calls: list[list[str]] = []
        self.loads = 0
        self.closed = False

    def rewards(self, messages: list[dict[str, str]], texts: list[str]) -> list[float]:
        self.calls.append(list(texts))
        return self.rewards_given[: len(texts)]

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def scorer(monkeypatch) -> FakeScorer:
    """``ImplicitRewardScorer.for_run`` gives the fake (counted) instead of loading torch."""
    fake = FakeScorer(REWARDS)

    def for_run(cls: Any, store: Store, run_id: int, **kwargs: Any) -> FakeScorer:
        fake.loads += 1
        fake.closed = False
        return fake

    monkeypatch.setattr(ImplicitRewardScorer, "for_run", classmethod(for_run))
    return fake


def finished_run(
    store: Store, model_id: int, name: str = "first", comparison_ids: list[int] | None = None
) -> int:
    """A completed run of ``model_id`` (its adapter is the fake's), trained on ``comparison_ids``."""
    run_id = store.create_run(
        name=name, base_model_id=model_id, config={}, comparison_ids=comparison_ids or []
    )
    store.update_run(run_id, status="completed", finished_at=time.time())
    return run_id


class Watch:
    """What the panes and the line said after each event of the pair (the job's or a repeat's playback)."""

    def __init__(self, view):
        self.view = view
        self.statuses: list[str] = []
        self.texts_while_writing: set[tuple[str, str]] = set()
        self.finished: dict[int, GenerationResult] = {}
        self.token_seqs: set[int] = set()
        real = view.selection.on_event

        def on_event(event: object) -> None:
            real(event)
            if isinstance(event, TokenEvent):
                self.token_seqs.add(event.seq)
            if isinstance(event, ResponseFinished):
                self.finished[event.seq] = event.result
            self.statuses.append(view.panes[0].status.text())
            self.texts_while_writing.add(shown(view))
            assert view.panes[1].status.text() == view.panes[0].status.text(), "both panes say the same"
            assert not view.verdict_buttons["left"].isEnabled()

        view.selection.on_event = on_event  # the job's op and the view call it by this name

    def texts(self) -> list[str]:
        return [self.finished[seq].text for seq in sorted(self.finished)]

    def phases(self) -> list[str]:
        """The statuses in order, token counts left out, each once."""
        phases: list[str] = []
        for status in self.statuses:
            phase = status.split("… ")[0] + "…" if status.endswith(("token", "tokens")) else status
            if phase != "Waiting…" and (not phases or phases[-1] != phase):  # (a Log line: "Loading tiny…")
                phases.append(phase)
        return phases


def sample_selected(qtbot, view, prompt: str = "Tell me about tea.") -> Watch:
    watch = Watch(view)
    view.prompt_edit.clear()
    qtbot.keyClicks(view.prompt_edit, prompt)
    key(qtbot, view, "Ctrl+Return")
    qtbot.waitUntil(lambda: view.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not view.stop_button.isEnabled(), timeout=WAIT_MS)
    return watch


def test_the_setting_is_on_by_default_and_remembered(qtbot, gui_store, registry, pool, app_home):
    view = make_view(qtbot, gui_store, registry, pool, app_home, select=True)
    assert view.selection.option.isChecked() and view.selection.option.toolTip() == OPTION_TIP
    view.sampling_panel.set_expanded(True)
    assert view.selection.option.isVisible(), "in Collect's sampling settings"
    view.selection.option.setChecked(False)
    again = make_view(qtbot, gui_store, registry, pool, app_home, select=False)
    again.selection.option.setChecked(True)
    view.close()
    fresh = type(view)(store=gui_store, registry=registry, pool=pool, paths=app_home)
    qtbot.addWidget(fresh)
    assert fresh.selection.option.isChecked()
    again.selection.option.setChecked(False)
    fresh_off = type(view)(store=gui_store, registry=registry, pool=pool, paths=app_home)
    qtbot.addWidget(fresh_off)
    assert not fresh_off.selection.option.isChecked()


def test_after_a_run_the_pair_it_is_surest_about_is_shown_and_saved(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, scorer
):
    model = register_model(gui_store, tiny_gguf, name="tiny")
    finished_run(gui_store, model.id)
    view = make_view(qtbot, gui_store, registry, pool, app_home, select=True)

    watch = sample_selected(qtbot, view)

    texts = watch.texts()
    assert len(texts) == 4 and watch.token_seqs <= {0, 1, 2, 3} and len(watch.token_seqs) > 2
    assert scorer.loads == 1 and scorer.calls == [texts], "the run compared the 4 answers, once loaded"
    choice = choose_pair(texts, REWARDS, "Run 1 · first")
    assert (choice.first, choice.second) == (0, 2) or choice.distance < 0.2  # 0 and 2: unless the same words
    assert shown(view) == as_shown(texts[choice.first], texts[choice.second])  # A on the left (FixedSide)
    assert watch.texts_while_writing == {("", "")}, "no answer is shown before the two are chosen"
    phases = watch.phases()
    assert phases[0] == "Writing 4 answers to find the pair that teaches the most…"
    assert phases[-2:] == [
        "Loading Run 1 · first to compare the answers…",
        "Comparing the answers with Run 1 · first…",
    ]
    line = view.selection.line
    assert line.isVisible() and line.text() == choice.reason
    assert "Run 1 · first is surest which of these two is better" in line.text()

    key(qtbot, view, "Alt+1")
    (saved,) = gui_store.comparison_views()
    assert (saved.text_a, saved.text_b) == (texts[choice.first], texts[choice.second])
    assert saved.comparison.chosen_by == "surest", "the pick remembers its pair was chosen"
    seeds = {
        gui_store.get_generation(g).seed
        for g in (saved.comparison.generation_a_id, saved.comparison.generation_b_id)
    }
    assert len(seeds) == 2 and None not in seeds

    second = sample_selected(qtbot, view, "Name a colour.")
    assert scorer.loads == 1 and len(scorer.calls) == 2, "the run stays loaded for the next pair"
    assert "Loading Run 1 · first to compare the answers…" not in second.phases()

    # The Train view starts a run: the run's model is freed (training needs the memory).
    release = threading.Event()

    def training(_cancel: CancelToken) -> Generator[Any, None, None]:
        yield "started"
        release.wait(30)

    op = JobOp(registry, training).resource("train").start()
    qtbot.waitUntil(lambda: scorer.closed, timeout=WAIT_MS)
    release.set()
    qtbot.waitUntil(lambda: not op.active, timeout=WAIT_MS)


def test_before_the_first_run_two_answers_are_written_as_they_come_and_the_line_says_why(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, scorer
):
    register_model(gui_store, tiny_gguf, name="tiny")
    view = make_view(qtbot, gui_store, registry, pool, app_home, select=True)
    streamed: set[int] = set()
    real = view._on_sample_event

    def on_event(event: object) -> None:
        real(event)
        if isinstance(event, TokenEvent):
            streamed.add(event.seq)

    view._on_sample_event = on_event  # the job's op finds the view's slot by this name
    qtbot.keyClicks(view.prompt_edit, "Tell me about tea.")
    key(qtbot, view, "Ctrl+Return")
    qtbot.waitUntil(lambda: view.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not view.stop_button.isEnabled(), timeout=WAIT_MS)

    assert streamed == {0, 1}, "two answers, not four: nothing to choose by yet"
    line = view.selection.line
    assert line.isVisible() and line.text().startswith("No training run yet")
    assert "After your first run, Collect shows the pair that run is surest about." in line.text()
    assert scorer.loads == 0 and scorer.calls == [], "no run: nothing loaded"
    key(qtbot, view, "Alt+1")
    (saved,) = gui_store.comparison_views()
    assert as_shown(saved.text_a, saved.text_b) == shown(view)
    assert saved.comparison.chosen_by is None
    # With the setting off, no line.
    view.selection.option.setChecked(False)
    qtbot.keyClicks(view.prompt_edit, " Again.")
    key(qtbot, view, "Ctrl+Return")
    qtbot.waitUntil(lambda: view.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    assert not line.isVisible()


def test_with_the_setting_off_two_answers_are_written_as_they_come_and_nothing_is_compared(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, scorer
):
    model = register_model(gui_store, tiny_gguf, name="tiny")
    finished_run(gui_store, model.id)
    view = make_view(qtbot, gui_store, registry, pool, app_home, select=False)
    streamed: list[tuple[int, str]] = []  # (answer, what its pane showed) after each token
    real = view._on_sample_event

    def on_event(event: object) -> None:
        real(event)
        if isinstance(event, TokenEvent):
            streamed.append((event.seq, view.panes[event.seq].shown_text()))

    view._on_sample_event = on_event  # the job's op finds the view's slot by this name

    qtbot.keyClicks(view.prompt_edit, "Tell me about tea.")
    key(qtbot, view, "Ctrl+Return")
    qtbot.waitUntil(lambda: view.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not view.stop_button.isEnabled(), timeout=WAIT_MS)

    assert {seq for seq, _text in streamed} <= {0, 1}, "two answers"
    assert any(text for _seq, text in streamed), "shown as they are written"
    assert view.activity().startswith("Which answer is better?")
    assert all(pane.status.text().endswith(("finished", "reached the token limit")) for pane in view.panes)
    assert not view.selection.line.isVisible()
    assert scorer.loads == 0 and scorer.calls == []
    key(qtbot, view, "Alt+2")
    (saved,) = gui_store.comparison_views()
    assert as_shown(saved.text_a, saved.text_b) == shown(view)


def test_a_run_that_cannot_be_loaded_does_not_stop_collecting(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, monkeypatch
):
    model = register_model(gui_store, tiny_gguf, name="tiny")
    finished_run(gui_store, model.id)
    gone = "The adapter of run 1 (first) is no longer in /nowhere (moved or deleted?), so it cannot judge answers."

    def for_run(cls: Any, store: Store, run_id: int, **kwargs: Any) -> Any:
        raise TrainingError(gone)

    monkeypatch.setattr(ImplicitRewardScorer, "for_run", classmethod(for_run))
    view = make_view(qtbot, gui_store, registry, pool, app_home, select=True)

    watch = sample_selected(qtbot, view)

    texts = watch.texts()
    assert len(texts) == 4
    assert shown(view) == as_shown(texts[0], texts[1]), "the first two, as they came"
    line = view.selection.line
    assert line.isVisible()
    assert line.text().startswith("Run 1 · first could not be loaded to compare the answers")
    assert line.text().endswith("so these are two of the 4 answers as they came.")
    assert line.toolTip() == gone
    assert not view.banner.isVisible(), "nothing for the person to fix before the next pick"
    key(qtbot, view, "Alt+1")
    (saved,) = gui_store.comparison_views()
    assert (saved.text_a, saved.text_b) == (texts[0], texts[1])
    assert saved.comparison.chosen_by is None, "nothing chose them"


def test_after_a_run_that_learnt_from_chosen_pairs_the_next_pairs_come_as_they_are_then_chosen_again(
    qtbot, gui_store, registry, pool, app_home, tiny_gguf, scorer
):
    model = register_model(gui_store, tiny_gguf, name="tiny")
    view = make_view(qtbot, gui_store, registry, pool, app_home, select=True)
    chosen = []
    for number in range(3):  # two of three pairs chosen by an earlier run
        chosen.append(
            gui_store.record_pair(
                messages=[{"role": "user", "content": f"Question {number}?"}],
                text_a=f"A short answer {number}.",
                text_b=f"A much longer answer to question {number}.",
                verdict="a",
                chosen_by="surest" if number < 2 else None,
            )
        )
    finished_run(gui_store, model.id, "second", comparison_ids=chosen)

    plain = sample_selected(qtbot, view)

    assert plain.finished == {} and scorer.calls == [], (
        "no selection job: two answers as they come, none compared"
    )
    assert all(pane.shown_text() for pane in view.panes)
    line = view.selection.line
    assert line.isVisible()
    assert line.text() == (
        "Run 1 · second learnt from pairs chosen by an earlier run, so these two answers come as they are: "
        "the next run learns your taste unfiltered, and the round after shows chosen pairs again."
    )
    key(qtbot, view, "Alt+1")
    unchosen = gui_store.comparison_views()[-1].comparison
    assert unchosen.chosen_by is None
    assert gui_store.chosen_share(chosen) == pytest.approx(2 / 3)

    # The next run learns from those pairs as they came: the round after it is chosen again.
    finished_run(gui_store, model.id, "third", comparison_ids=[unchosen.id, chosen[2]])
    again = sample_selected(qtbot, view, "Name a colour.")
    assert len(again.texts()) == 4 and scorer.calls == [again.texts()]
    assert "Run 2 · third is surest which of these two is better" in line.text()


def test_a_repeat_goes_through_the_steps_of_a_chosen_pair(
    qtbot, gui_store, registry, pool, app_home, tmp_path, scorer
):
    model_id = gui_store.add_model(name="tiny", path=str(tmp_path / "tiny"), kind="hf", fingerprint="fp")
    originals = judged(gui_store, 10)
    finished_run(gui_store, model_id)
    view = make_view(qtbot, gui_store, registry, pool, app_home, select=True)
    view.reasker.rng = random.Random(DUE_SEED)
    view.reveal.pace = Pace(tokens_per_s=10.0, first_token_s=0.2)
    started = time.monotonic()

    watch = sample_selected(qtbot, view, "My own new question.")

    pair = view.pair
    assert pair is not None and pair.repeat_of in originals
    number = originals.index(pair.repeat_of)
    full = (f"Another answer, number {number}.", f"The first answer to question {number}.")
    assert shown(view) == full, "sides swapped, as any repeat"
    assert watch.texts_while_writing == {("", "")}
    assert sorted(watch.finished) == [0, 1, 2, 3], "written as 4 answers are"
    # Two pairs one after the other, each as long as its longer answer takes at 10 tokens a second.
    assert time.monotonic() - started >= 2 * (0.2 + max(len(t) for t in full) / 4 / 10.0) - 0.1
    assert watch.phases() == [
        "Writing 4 answers to find the pair that teaches the most…",
        "Loading Run 1 · first to compare the answers…",
        "Comparing the answers with Run 1 · first…",
    ]
    assert scorer.calls == [[full[1], full[0]]], "the run compared the two answers (A, B)"
    line = view.selection.line
    assert line.isVisible()
    assert line.text() == (
        "Of 4 answers, Run 1 · first is surest which of these two is better (reward gap 50.00): your pick "
        "confirms what it learnt or corrects it where it is most wrong."
    )
    assert all(pane.status.text().endswith("· finished") for pane in view.panes)
    key(qtbot, view, "Alt+2")
    assert gui_store.comparison_views()[-1].comparison.repeat_of == pair.repeat_of


def test_the_why_line_fits_at_1024_by_640(
    qtbot, make_window, gui_store, tmp_path, monkeypatch, scorer, app_style
):
    """A chosen pair with readable answers (the model's job replaced by one that writes them), in the main
    window at its smallest size: nothing cut. With DESKTOP_DPO_SCREENSHOT_DIR=resources/screenshots the
    screenshot replaces the README's."""
    model_id = gui_store.add_model(
        name="Gemma 3 270M", path=str(tmp_path / "gemma"), kind="gguf", fingerprint="fp"
    )
    finished_run(gui_store, model_id, "round one")
    answers = [
        "Tea is made by pouring hot water over the dried leaves of the tea plant. Green, black and oolong "
        "teas all come from the same plant; they differ in how the leaves are dried.",
        "Tea is a drink made from the leaves of Camellia sinensis, grown mostly in China, India and Kenya. "
        "Black tea is fully oxidised; green tea is heated early so that it stays green.",
        "Tea. It is a drink.",
        "Tea is the most popular drink in the world after water, and every country brews it its own way: "
        "with milk in Britain, with mint in Morocco, whisked to a froth in Japan.",
    ]

    def written(*args: Any, **kwargs: Any) -> Generator[Any, None, list[GenerationResult]]:
        results = []
        for seq, text in enumerate(answers):
            yield TokenEvent(seq, text, len(text) // 4)
            result = GenerationResult(text, 12, len(text) // 4, 1.8, "stop", seq + 1, {})
            yield ResponseFinished(seq, result)
            results.append(result)
        return results

    monkeypatch.setattr("desktop_dpo.core.sampling.sample_answers", written)
    scorer.rewards_given = [0.4, 1.1, 2.7, 1.3]  # a run's rewards (β·log-ratios): answers 0 and 2 apart most
    window = make_window()
    window.show_view("collect")
    collect = window.view("collect")
    collect.set_model(gui_store.get_model(model_id))
    collect.set_prompt("Tell me about tea.")
    monkeypatch.setattr(collect, "_with_template", lambda model: model)
    assert collect.selection.option.isChecked()
    window.resize(1024, 640)
    qtbot.waitUntil(lambda: window.width() == 1024 and window.height() == 640)
    assert collect.sample()
    qtbot.waitUntil(lambda: collect.verdict_buttons["left"].isEnabled(), timeout=WAIT_MS)
    line = collect.selection.line
    assert line.isVisible() and "Run 1 · round one is surest which" in line.text()
    assert "reward gap 2.30" in line.text()
    qtbot.waitUntil(lambda: cut_texts(window) == [], timeout=5000)
    for _ in range(3):
        QApplication.processEvents()
    folder = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path)  # the README's copy: that folder set
    assert window.grab().save(str(folder / SCREENSHOT_NAME))
    assert line.visibleRegion().boundingRect().height() >= line.height() - 1, "the whole line is in view"


def test_stop_while_a_chosen_repeat_is_written_saves_nothing_and_gives_the_prompt_back(
    qtbot, gui_store, registry, pool, app_home, tmp_path, scorer
):
    model_id = gui_store.add_model(name="tiny", path=str(tmp_path / "tiny"), kind="hf", fingerprint="fp")
    judged(gui_store, 10)
    finished_run(gui_store, model_id)
    view = make_view(qtbot, gui_store, registry, pool, app_home, select=True)
    view.reasker.rng = random.Random(DUE_SEED)
    view.reveal.pace = Pace(tokens_per_s=5.0, first_token_s=0.2)
    qtbot.keyClicks(view.prompt_edit, "My own new question.")
    key(qtbot, view, "Ctrl+Return")
    qtbot.waitUntil(lambda: view.panes[0].status.text().endswith("tokens"), timeout=WAIT_MS)
    assert view.selection.line.isVisible() and view.stop_button.isEnabled()

    key(qtbot, view, "Esc")

    assert [pane.status.text() for pane in view.panes] == ["Stopped", "Stopped"]
    assert not view.selection.line.isVisible() and not view.verdict_buttons["left"].isEnabled()
    assert view.prompt_edit.toPlainText() == "My own new question."
    assert len(gui_store.comparison_views()) == 10 and scorer.calls == []
