"""The person's workflow (core/person_loop.py): a pick budget over rounds, and the pair Collect would show."""

from __future__ import annotations

import dataclasses
import random

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.demo_loop import DemoSettings
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.models import register_model
from desktop_dpo.core.pair_selection import choose_pair
from desktop_dpo.core.person_loop import PersonSettings, show_pair


def test_the_budget_is_spread_over_the_rounds_and_adds_up():
    assert PersonSettings(picks=150, rounds=3).round_budgets() == [50, 50, 50]
    assert PersonSettings(picks=100, rounds=3).round_budgets() == [33, 33, 34]
    assert sum(PersonSettings(picks=7, rounds=2).round_budgets()) == 7


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(DesktopDpoError, match="2 picks cannot be spread over 3 rounds"):
        PersonSettings(picks=2, rounds=3).validated()
    with pytest.raises(DesktopDpoError, match="at least 2 answers"):
        PersonSettings(candidates=1).validated()
    with pytest.raises(DesktopDpoError, match="No rule 'longest' for choosing a pair before a run"):
        PersonSettings(before_run="longest").validated()
    with pytest.raises(DesktopDpoError, match="No rule 'random' for choosing a pair after a run: surest"):
        PersonSettings(after_run="random").validated()


@pytest.fixture
def pool():
    engines = EnginePool()
    yield engines
    engines.close_all()


class RecordingScorer:
    """Stands in for a run's implicit rewards: one per answer, made up, and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def rewards(self, messages, texts):
        self.asked.append(list(texts))
        return [0.0, 3.0, 0.1, 5.0][: len(texts)]


MESSAGES = [{"role": "user", "content": "Tell me about tea."}]
DEMO = DemoSettings(sampling=SamplingSettings(temperature=1.0, max_tokens=8))


def test_without_selection_two_answers_are_sampled_and_shown(app_home, store, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    scorer = RecordingScorer()
    person = PersonSettings(selection=False)
    (left, right, choice, _), _ = run_job(
        show_pair(pool, model, app_home, MESSAGES, DEMO, person, random.Random(3), CancelToken(), scorer)
    )
    assert choice.how == "only" and scorer.asked == []
    assert left.seed != right.seed


def test_with_selection_four_answers_are_scored_and_the_surest_pair_shown(app_home, store, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    scorer = RecordingScorer()
    person = PersonSettings(selection=True, candidates=4)
    (left, right, choice, _), _ = run_job(
        show_pair(
            pool, model, app_home, MESSAGES, DEMO, person, random.Random(3), CancelToken(), scorer, "Run 1"
        )
    )
    [texts] = scorer.asked
    assert len(texts) == 4
    assert choice == choose_pair(texts, [0.0, 3.0, 0.1, 5.0], "Run 1")
    assert (left.text, right.text) == (texts[choice.first], texts[choice.second])
    assert choice.how == "surest" and "Run 1" in choice.reason
    assert {choice.first, choice.second} == {
        0,
        3,
    } or choice.distance < 0.2  # 0 and 5.0, unless the same words


def test_before_any_run_the_selection_shows_two_answers_as_they_come(app_home, store, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    plain = PersonSettings(selection=False)
    person = PersonSettings(selection=True, candidates=4)
    (left, right, choice, _), _ = run_job(
        show_pair(pool, model, app_home, MESSAGES, DEMO, person, random.Random(3), CancelToken())
    )
    assert choice.how == "as_they_come" and choice.considered == 2
    # The same two answers, from the same draws, as without selection: no run, nothing to choose by.
    (plain_left, plain_right, _, _), _ = run_job(
        show_pair(pool, model, app_home, MESSAGES, DEMO, plain, random.Random(3), CancelToken())
    )
    assert (left.text, left.seed, right.seed) == (plain_left.text, plain_left.seed, plain_right.seed)
    # Asked to, it picks the most different of 4 instead.
    different = dataclasses.replace(person, before_run="different")
    (*_, choice, _), _ = run_job(
        show_pair(pool, model, app_home, MESSAGES, DEMO, different, random.Random(3), CancelToken())
    )
    assert choice.how == "different" and choice.considered == 4
