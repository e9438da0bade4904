"""The person's workflow (core/person_loop.py): a pick budget over rounds, and the pair Collect would show."""

from __future__ import annotations

import dataclasses
import random
import shutil

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.demo_loop import DemoSettings, evaluate_round, prepare_copy, store_evaluation_prompts
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.evaluate import base_at, comparable_base
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.llm.template_choice import template_for
from desktop_dpo.core.models import register_model
from desktop_dpo.core.pair_selection import choose_pair
from desktop_dpo.core.person_loop import (
    PersonSettings,
    evaluate_draws,
    show_pair,
    shows_as_they_come_after,
)
from desktop_dpo.core.store import Store


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
    with pytest.raises(DesktopDpoError, match="SFT weight"):
        PersonSettings(sft_weight=-1).validated()
    with pytest.raises(DesktopDpoError, match="answered 1 to 16 times, not 0"):
        PersonSettings(evaluation_draws=0).validated()
    with pytest.raises(DesktopDpoError, match="No working file type 'Q2_K'"):
        PersonSettings(working="Q2_K").validated()


def test_every_round_trains_with_the_demos_settings_and_the_workflows_sft_term():
    demo = DemoSettings(train_changes=(("epochs", 1),))
    assert PersonSettings().training(demo).train_config() == demo.train_config(), "the demo's, by default"
    config = PersonSettings(sft_weight=2.0).training(demo).train_config()
    assert config.sft_weight == 2.0 and demo.train_config().sft_weight == 1.0, "the demo keeps its own"
    assert config.replace(sft_weight=1.0) == demo.train_config(), "nothing else changes"


def test_with_kto_every_round_learns_from_both_bad_picks_too():
    demo = DemoSettings(train_changes=(("epochs", 1),))
    kto, dpo = PersonSettings(loss_type="kto"), PersonSettings()
    config = kto.training(demo).train_config()  # validated: KTO refuses an SFT term
    assert (config.loss_type, config.sft_weight) == ("kto", 0.0)
    assert config.replace(loss_type="sigmoid", sft_weight=1.0) == demo.train_config(), "nothing else changes"
    assert [v for v in ("a", "b", "tie", "both_bad") if kto.trains_on(v)] == ["a", "b", "both_bad"]
    assert [v for v in ("a", "b", "tie", "both_bad") if dpo.trains_on(v)] == ["a", "b"]
    with pytest.raises(DesktopDpoError, match="No loss 'orpo' for the person workflow: sigmoid, kto"):
        PersonSettings(loss_type="orpo").validated()


def test_from_the_base_each_round_trains_the_base_on_every_pick_so_far():
    every_pick, round_3 = [1, 2, 3, 4, 5, 6], [5, 6]
    assert PersonSettings().round_training("base", "round 2's", every_pick, round_3) == ("round 2's", [5, 6])
    from_base = PersonSettings(train_from="base")
    assert from_base.round_training("base", "round 2's", every_pick, round_3) == ("base", every_pick)
    with pytest.raises(
        DesktopDpoError, match="No way to train 'parent' for the person workflow: current, base"
    ):
        PersonSettings(train_from="parent").validated()


@pytest.fixture
def pool():
    engines = EnginePool()
    yield engines
    engines.close_all()


class RecordingScorer:
    """Stands in for a run's implicit rewards: one per answer, made up, and records what it was asked."""

    def __init__(self, rewards: tuple[float, ...] = (0.0, 3.0, 0.1, 5.0)) -> None:
        self.asked: list[list[str]] = []
        self.per_token: list[bool] = []
        self.given = list(rewards)

    def rewards(self, messages, texts, per_token=False):
        self.asked.append(list(texts))
        self.per_token.append(per_token)
        return self.given[: len(texts)]


MESSAGES = [{"role": "user", "content": "Tell me about tea."}]
DEMO = DemoSettings(sampling=SamplingSettings(temperature=1.0, max_tokens=8))


def _showing(pool, model, app_home, person) -> tuple:
    """show_pair's arguments before the scorer: MESSAGES from ``model``, seeded, not cancelled."""
    return pool, model, app_home, MESSAGES, DEMO, person, random.Random(3), CancelToken()


def test_without_selection_two_answers_are_sampled_and_shown(app_home, store, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    scorer = RecordingScorer()
    person = PersonSettings(selection=False)
    (left, right, choice, _), _ = run_job(
        show_pair(pool, model, app_home, MESSAGES, DEMO, person, random.Random(3), CancelToken(), scorer)
    )
    assert choice.how == "only" and scorer.asked == []
    assert left.seed != right.seed


@pytest.mark.parametrize("per_token", [False, True], ids=["summed rewards", "rewards per token"])
def test_with_selection_four_answers_are_scored_and_the_surest_pair_shown(
    app_home, store, tiny_gguf, pool, per_token
):
    model = register_model(store, tiny_gguf, name="tiny")
    scorer = RecordingScorer()
    person = PersonSettings(selection=True, candidates=4, reward_per_token=per_token)
    (left, right, choice, _), _ = run_job(
        show_pair(
            pool, model, app_home, MESSAGES, DEMO, person, random.Random(3), CancelToken(), scorer, "Run 1"
        )
    )
    [texts] = scorer.asked
    assert len(texts) == 4 and scorer.per_token == [per_token]
    assert choice == choose_pair(texts, [0.0, 3.0, 0.1, 5.0], "Run 1")
    assert (left.text, right.text) == (texts[choice.first], texts[choice.second])
    assert choice.how == "surest" and "Run 1" in choice.reason
    assert {choice.first, choice.second} == {
        0,
        3,
    } or choice.distance < 0.2  # 0 and 5.0, unless the same words


def test_changed_mind_scores_the_answers_under_the_run_before_too(app_home, store, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    last, before = RecordingScorer(), RecordingScorer((4.0, 0.0, 2.0, 1.0))
    person = PersonSettings(selection=True, candidates=4, after_run="changed_mind")
    (left, right, choice, _), _ = run_job(
        show_pair(*_showing(pool, model, app_home, person), last, "Run 2", earlier_scorer=before)
    )
    # Both runs scored the same four answers; the pair shown is the one their orders disagree on most surely.
    assert last.asked == before.asked and len(last.asked[0]) == 4
    texts = last.asked[0]
    assert choice == choose_pair(
        texts, [0.0, 3.0, 0.1, 5.0], "Run 2", after_run="changed_mind", earlier=[4.0, 0.0, 2.0, 1.0]
    )
    assert (left.text, right.text) == (texts[choice.first], texts[choice.second])
    assert choice.how == "changed_mind" and "Run 2 and the run before it disagree most" in choice.reason


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


def test_after_a_run_that_learnt_from_chosen_pairs_two_answers_come_as_they_are(
    app_home, store, tiny_gguf, pool
):
    model = register_model(store, tiny_gguf, name="tiny")
    scorer = RecordingScorer()
    person = PersonSettings(selection=True, candidates=4)
    (left, right, choice, scoring), _ = run_job(
        show_pair(*_showing(pool, model, app_home, person), scorer, "Run 2", True)
    )
    assert choice.how == "after_chosen" and choice.considered == 2 and choice.chosen_by is None
    assert choice.reason.startswith("Run 2 learnt from pairs chosen by an earlier run")
    assert scorer.asked == [] and scoring == 0.0, "nothing compared"
    plain = PersonSettings(selection=False)
    (plain_left, plain_right, _, _), _ = run_job(
        show_pair(pool, model, app_home, MESSAGES, DEMO, plain, random.Random(3), CancelToken())
    )
    assert (left.seed, right.seed, left.text) == (plain_left.seed, plain_right.seed, plain_left.text)


def test_an_evaluation_of_several_draws_answers_each_prompt_once_a_draw_and_pools_the_votes(
    app_home, store, tiny_gguf, tmp_path, pool
):
    base = register_model(store, tiny_gguf, name="base")
    aligned = register_model(
        store, shutil.copy(tiny_gguf, tmp_path / "copy.gguf"), name="copy", source="aligned"
    )
    prompts = store_evaluation_prompts(store, ["Say one.", "Say two."])
    demo = dataclasses.replace(DEMO, seed=5)

    def evaluate(settings):
        return evaluate_round(store, pool, app_home, base, aligned, prompts, settings, CancelToken())

    summary, _ = run_job(evaluate_draws(evaluate, demo, 3))
    evaluations = store.list_evaluations()
    assert len(evaluations) == 3 and summary.total == 6, "three draws of two prompts"
    seeds = [{v.seed for v in store.evaluation_votes(e.id)} for e in evaluations]
    assert len(set().union(*seeds)) == 6, "each draw answers with seeds of its own"
    # A copy answers as the base does, so the votes can only be ties and both bad, in every draw.
    assert summary.n_decisive == 0 and summary.ties + summary.both_bad == 6
    one, _ = run_job(evaluate_draws(evaluate, demo, 1))
    newest = store.list_evaluations()[0]  # newest first; the first draw is the oldest
    assert {v.seed for v in store.evaluation_votes(newest.id)} == seeds[-1], "one draw: the first's seeds"
    assert one.total == 2


def test_at_q8_0_the_base_is_compared_as_its_trainable_copy_at_q8_0(
    app_home, store, tiny_gguf, tiny_model_dir, tmp_path, pool
):
    from desktop_dpo.core.export.gguf import convert_hf_to_gguf

    base = register_model(store, tiny_gguf, name="base")  # an F32 GGUF, as the demo's is a Q4_K_M one
    base, _ = run_job(prepare_copy(store, app_home, base, CancelToken()))
    q8_file, _ = run_job(convert_hf_to_gguf(tiny_model_dir, tmp_path / "aligned-q8.gguf", outtype="q8_0"))
    aligned = register_model(store, q8_file, name="aligned", source="aligned", parent_model_id=base.id)
    prompts = store_evaluation_prompts(store, ["Say one."])

    def evaluate(compared):
        return run_job(evaluate_round(store, pool, app_home, compared, aligned, prompts, DEMO, CancelToken()))

    with pytest.raises(DesktopDpoError, match="base runs at F32 and aligned at Q8_0"):
        evaluate(base)
    assert base_at(store, base, "F32").id == base.id, "at its own file type the base is itself"
    compared = base_at(store, base, "Q8_0")
    assert compared.kind == "hf" and compared.parent_model_id == base.id
    assert template_for(compared) == template_for(base), "it answers in the base's own template"
    (evaluation_id, _summary, votes), _ = evaluate(compared)
    evaluation = store.get_evaluation(evaluation_id)
    assert evaluation is not None and evaluation.quantization == "Q8_0" and len(votes) == 1
    assert base_at(store, base, "Q8_0").id == compared.id, "the next round compares the same row"
    # The Evaluate view's choice of base for this aligned model: the same copy; for a model at the base's own
    # type, the base itself.
    assert comparable_base(store, base, aligned, app_home).id == compared.id
    same_type = register_model(
        store, shutil.copy(tiny_gguf, tmp_path / "f32.gguf"), name="f32", source="aligned"
    )
    assert comparable_base(store, base, same_type, app_home).id == base.id
    # A base without a trainable copy is left as it is: the comparison then says why it cannot run.
    bare = register_model(store, shutil.copy(tiny_gguf, tmp_path / "bare.gguf"), name="bare")
    assert comparable_base(store, bare, aligned, app_home).id == bare.id
    with pytest.raises(DesktopDpoError, match="base runs at F32, and no copy of it runs at Q5_K_M"):
        base_at(store, base, "Q5_K_M")


def test_the_rounds_alternate_by_what_the_last_run_learnt_from(memory_store: Store):
    def run_of(chosen: list[str | None]) -> int:
        ids = [
            memory_store.record_pair(
                messages=[{"role": "user", "content": f"Q{n} of {len(chosen)}?"}],
                text_a="a",
                text_b="b",
                verdict="a",
                chosen_by=how,
            )
            for n, how in enumerate(chosen)
        ]
        return ids

    person = PersonSettings(selection=True)
    as_they_came = run_of([None, None, "surest"])  # round 1's pairs, one chosen
    chosen = run_of(["surest", "surest", None])  # round 2's, chosen by round 1's run
    assert not shows_as_they_come_after(memory_store, person, None), "before a run: the before_run rule"
    assert not shows_as_they_come_after(memory_store, person, as_they_came), "round 2 is chosen"
    assert shows_as_they_come_after(memory_store, person, chosen), "round 3 comes as it is"
    assert not shows_as_they_come_after(memory_store, dataclasses.replace(person, alternate=False), chosen)
    assert not shows_as_they_come_after(memory_store, PersonSettings(selection=False), chosen)
