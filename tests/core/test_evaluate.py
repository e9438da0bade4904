"""Evaluation: the Wilson interval (worked by hand), the summary in words, which prompts are evaluated, the
rule judge's edge cases, and both models sampled fairly from a tiny GGUF in llama.cpp."""

from __future__ import annotations

import shutil

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError, JobCancelled
from desktop_dpo.core.evaluate import (
    ALIGNED_SEQ,
    BASE_SEQ,
    RULES,
    EvaluationSummary,
    EvaluationVoted,
    PlainWordsRule,
    ShorterWinsRule,
    SpeaksToYouRule,
    add_evaluation_prompts,
    check_comparable,
    default_models,
    evaluation_prompts,
    evaluation_summary,
    judge_by_rule,
    model_quantization,
    record_vote,
    repeated_ngram_share,
    run_rule_evaluation,
    sample_evaluation_pair,
    vote_for,
    wilson_interval,
)
from desktop_dpo.core.jobs import CancelToken, Progress, run_job
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.llm.generation import ResponseFinished, TokenEvent
from desktop_dpo.core.models import register_model

SETTINGS = SamplingSettings(temperature=0.8, max_tokens=12)
MESSAGES = [{"role": "user", "content": "Tell me about tea."}]


# ------------------------------------------------------------------------------------------- Wilson interval
# z = 1.959964, z² = 3.841459. With p = wins / n:
#   centre = (p + z²/2n) / (1 + z²/n),  half = z / (1 + z²/n) · √(p(1 − p)/n + z²/4n²)


def test_wilson_8_of_10():
    # p = 0.8; z²/n = 0.3841459, so 1 + z²/n = 1.3841459
    # centre = (0.8 + 0.1920730) / 1.3841459 = 0.7167346
    # half   = 1.959964 / 1.3841459 · √(0.016 + 0.0096036) = 1.4160140 · 0.1600114 = 0.2265784
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-4)
    assert high == pytest.approx(0.94331, abs=1e-4)


def test_wilson_0_of_5_and_5_of_5():
    # p = 0; 1 + z²/n = 1.7682918; centre = 0.3841459 / 1.7682918 = 0.2172411
    # half = 1.959964 / 1.7682918 · √(0 + 3.841459 / 100) = 1.1083937 · 0.1959964 = 0.2172411
    # so the interval starts exactly at 0 (not a point, as the normal approximation would give) ...
    low, high = wilson_interval(0, 5)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.43448, abs=1e-4)
    # ... and 5 of 5 is its mirror image.
    low, high = wilson_interval(5, 5)
    assert low == pytest.approx(1 - 0.43448, abs=1e-4)
    assert high == pytest.approx(1.0, abs=1e-12)


def test_wilson_50_of_100_is_centred():
    # p = 0.5; 1 + z²/n = 1.0384146; centre = (0.5 + 0.0192073) / 1.0384146 = 0.5 exactly
    # half = 1.959964 / 1.0384146 · √(0.0025 + 0.0000960) = 1.8874580 · 0.0509506 = 0.0961671
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.40383, abs=1e-4)
    assert high == pytest.approx(0.59617, abs=1e-4)


def test_wilson_without_votes_knows_nothing_and_refuses_impossible_counts():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for wins, n in ((6, 5), (-1, 5), (0, -1)):
        with pytest.raises(ValueError):
            wilson_interval(wins, n)


# ------------------------------------------------------------------------------------------- the summary


def test_summary_sentence_counts_ties_apart():
    # 41 of 50: p = 0.82; 1 + z²/n = 1.0768292; centre = (0.82 + 0.0384146) / 1.0768292 = 0.7971694
    # half = 1.959964 / 1.0768292 · √(0.002952 + 0.0003841) = 1.8201248 · 0.0577594 = 0.1051293
    # -> (0.6920, 0.9023): "69–90%"
    summary = EvaluationSummary.from_counts(wins=41, losses=9, ties=6)
    assert summary.n_decisive == 50 and summary.win_rate == pytest.approx(0.82)
    assert summary.sentence() == "The aligned model won 41 of 50 decisive votes (82%, 95% CI 69–90%); 6 ties"
    assert summary.conclusion() == "better"
    assert summary.total == 56


def test_several_draws_a_prompt_narrow_the_interval_only_by_what_they_add():
    one_draw = [(p, "aligned") for p in range(8)] + [(8, "base"), (9, "base"), (10, "tie")]
    summary = EvaluationSummary.from_prompt_votes(one_draw)
    assert (summary.wins, summary.losses, summary.ties) == (8, 2, 1)
    assert (summary.ci_low, summary.ci_high) == pytest.approx(wilson_interval(8, 10)), (
        "one draw: plain Wilson"
    )
    # Four draws that always agree: 32 of 40 votes, but no more known than from the 10 prompts.
    copies = EvaluationSummary.from_prompt_votes(one_draw * 4)
    assert (copies.wins, copies.n_decisive, copies.win_rate) == (32, 40, 0.8)
    assert (copies.ci_low, copies.ci_high) == pytest.approx(wilson_interval(8, 10))
    assert copies.ci_low < wilson_interval(32, 40)[0] - 0.1
    # Four draws that vary within each prompt the same way (3 won, 1 lost): nothing varies between the
    # prompts, so the 40 votes count as 40.
    varied = [(p, vote) for p in range(10) for vote in ("aligned", "aligned", "aligned", "base")]
    summary = EvaluationSummary.from_prompt_votes(varied)
    assert (summary.ci_low, summary.ci_high) == pytest.approx(wilson_interval(30, 40))
    # Every vote one way: as wide as one draw's.
    swept = EvaluationSummary.from_prompt_votes([(p, "aligned") for p in range(5)] * 3)
    assert (swept.ci_low, swept.ci_high) == pytest.approx(wilson_interval(5, 5))
    assert EvaluationSummary.from_prompt_votes([(1, "tie")]).n_decisive == 0


def test_summary_of_votes_with_both_bad_and_no_decisive_vote():
    summary = EvaluationSummary.from_votes(["tie", "both_bad", "both_bad"])
    assert (summary.n_decisive, summary.ties, summary.both_bad) == (0, 1, 2)
    assert summary.win_rate is None and (summary.ci_low, summary.ci_high) == (0.0, 1.0)
    assert summary.sentence() == "No decisive votes yet; 1 tie; 2 both bad"
    assert summary.conclusion() == "unclear"
    assert EvaluationSummary.from_votes([]).sentence() == "No votes yet"
    one = EvaluationSummary.from_votes(["base", "both_bad"])
    assert one.sentence().startswith("The aligned model won 0 of 1 decisive vote (0%, 95% CI 0–79%)")
    assert one.sentence().endswith("; 0 ties; 1 both bad")
    with pytest.raises(ValueError):
        EvaluationSummary.from_votes(["left"])


def test_conclusion_follows_the_interval_not_the_rate():
    assert EvaluationSummary.from_counts(wins=6, losses=4).conclusion() == "unclear"  # 60%, CI 31–83%
    assert EvaluationSummary.from_counts(wins=5, losses=45).conclusion() == "worse"


def test_the_summary_of_an_evaluation_counts_its_stored_votes(store):
    base = store.add_model(name="base", path="/m/base.gguf", kind="gguf", fingerprint="f1")
    aligned = store.add_model(name="aligned", path="/m/aligned.gguf", kind="gguf", fingerprint="f2")
    evaluation_id = store.create_evaluation(name="e", base_model_id=base, aligned_model_id=aligned)
    other = store.create_evaluation(name="other", base_model_id=base, aligned_model_id=aligned)
    for vote in ["aligned"] * 8 + ["base"] * 2 + ["tie"] * 3 + ["both_bad"]:
        store.add_evaluation_vote(evaluation_id, prompt_id=None, base_text="b", aligned_text="a", vote=vote)
    store.add_evaluation_vote(other, prompt_id=None, base_text="b", aligned_text="a", vote="base")

    summary = evaluation_summary(store, evaluation_id)
    assert (summary.wins, summary.losses, summary.ties, summary.both_bad) == (8, 2, 3, 1)
    assert summary.n_decisive == 10 and summary.win_rate == pytest.approx(0.8)
    assert (summary.ci_low, summary.ci_high) == pytest.approx((0.49016, 0.94331), abs=1e-4)  # 8 of 10
    assert evaluation_summary(store, other).losses == 1, "each evaluation counts its own votes"
    empty = store.create_evaluation(name="empty", base_model_id=base, aligned_model_id=aligned)
    assert evaluation_summary(store, empty).sentence() == "No votes yet"


# ------------------------------------------------------------------------------------------- the rule judge

RULE = ShorterWinsRule()
GOOD_SHORT = "Tea is a drink made by steeping leaves in hot water."  # 11 words
GOOD_LONG = "Tea is a drink made by steeping the dried leaves of a shrub in water that is hot."  # 18
LOOPING = "the cat sat on the mat the cat sat on the mat"  # 12 words, 3 of 9 4-grams repeat


def test_repeated_ngram_share_is_counted_as_documented():
    words = LOOPING.split()
    assert repeated_ngram_share(words, 4) == pytest.approx(3 / 9)
    assert repeated_ngram_share(GOOD_LONG.split(), 4) == 0.0
    assert repeated_ngram_share(["too", "short"], 4) == 0.0  # no 4-gram at all


def test_the_shorter_good_answer_wins_on_either_side():
    assert judge_by_rule(GOOD_SHORT, GOOD_LONG, RULE) == "a"
    assert judge_by_rule(GOOD_LONG, GOOD_SHORT, RULE) == "b"


def test_a_degenerate_answer_loses_even_when_shorter():
    assert judge_by_rule("Tea is nice.", GOOD_LONG, RULE) == "b"  # under 8 words
    assert judge_by_rule(GOOD_LONG, LOOPING, RULE) == "a"  # shorter but repeating itself
    assert judge_by_rule("", GOOD_SHORT, RULE) == "b"  # an empty answer has no words


def test_both_degenerate_is_both_bad_and_equal_lengths_tie():
    assert judge_by_rule("", "", RULE) == "both_bad"
    assert judge_by_rule("Short.", LOOPING, RULE) == "both_bad"
    other = "Coffee is a drink made by brewing beans in hot water."  # 11 words, like GOOD_SHORT
    assert judge_by_rule(GOOD_SHORT, other, RULE) == "tie"
    assert judge_by_rule(GOOD_SHORT, GOOD_SHORT, RULE) == "tie"


def test_the_thresholds_are_the_rules_and_exactly_at_them_is_fine():
    eight = "one two three four five six seven eight"
    assert not RULE.degenerate(eight) and RULE.degenerate("one two three four five six seven")
    # 10 words, 7 4-grams, 1 repeat: 1/7 = 0.14 is under 0.2; a stricter rule calls it repeating.
    once = "a b c d a b c d e f"
    assert not RULE.degenerate(once)
    assert ShorterWinsRule(max_repeated_share=0.1).degenerate(once)
    # w0 … w7 then w0 … w4: 13 words, 10 4-grams, the last two repeat the first two: exactly 0.2, which
    # is not above the threshold.
    words = [f"w{i}" for i in range(8)] + [f"w{i}" for i in range(5)]
    assert repeated_ngram_share(words, 4) == pytest.approx(0.2)
    assert not RULE.degenerate(" ".join(words))


def test_the_rule_that_speaks_to_you_prefers_the_reader_addressed_answer_whatever_its_length():
    rule = SpeaksToYouRule()
    to_you = "You can brew tea by pouring hot water over the leaves."  # 11 words, 1 "you"
    long_to_you = (
        "If you want a good cup, warm your pot first, then pour the water over the leaves and wait a while, "
        "and you will taste the difference."
    )  # 26 words, 3 of them "you"/"your"
    plain = "Tea is brewed by pouring hot water over the dried leaves of the plant."  # no "you"
    assert judge_by_rule(to_you, plain, rule) == "a"
    assert judge_by_rule(plain, long_to_you, rule) == "b"  # the longer answer wins here: not a length rule
    assert judge_by_rule(long_to_you, to_you, rule) == "a"  # 3/26 > 1/11
    assert (
        judge_by_rule(plain, "Coffee is brewed by pouring hot water over ground roasted beans.", rule)
        == "tie"
    )
    assert judge_by_rule("You you you.", plain, rule) == "b"  # too short: saying "you" and stopping loses
    assert judge_by_rule("", "", rule) == "both_bad"
    assert RULES[rule.name] is SpeaksToYouRule and RULES[RULE.name] is ShorterWinsRule


def test_the_plain_words_rule_prefers_shorter_words_whatever_the_length_or_voice():
    rule = PlainWordsRule()
    plain_long = "Put the tea in a pot, pour hot water on it, wait a few minutes and then pour it out into your cup."  # 23 words, 3.1 letters each
    fancy_short = "Steeping tea leaves extracts aromatic compounds, producing flavourful beverages."  # 9 words, 7.8 letters each
    assert rule.letters_per_word(fancy_short) > 7.5 > 3.5 > rule.letters_per_word(plain_long)
    assert judge_by_rule(fancy_short, plain_long, rule) == "b"  # the longer answer wins: not a length rule
    assert judge_by_rule(plain_long, fancy_short, rule) == "a"
    # Reordered words have the same average: a tie, as are averages within a tenth of a letter.
    assert judge_by_rule(plain_long, " ".join(reversed(plain_long.split())), rule) == "tie"
    assert judge_by_rule("Too short, say.", plain_long, rule) == "b"  # a degenerate answer loses
    assert RULES[rule.name] is PlainWordsRule
    assert rule.to_dict()["name"] == "plain_words" and rule.to_dict()["min_words"] == 8


def test_a_verdict_becomes_a_vote_for_a_model():
    assert [vote_for(v, True) for v in ("a", "b", "tie", "both_bad")] == [
        "aligned",
        "base",
        "tie",
        "both_bad",
    ]
    assert [vote_for(v, False) for v in ("a", "b")] == ["base", "aligned"]


# ------------------------------------------------------------------------------------------- the prompts


def test_prompts_used_to_train_leave_the_evaluation_set(store, tmp_path):
    trained = store.add_prompt([{"role": "user", "content": "trained on"}])
    heldout = store.add_prompt([{"role": "user", "content": "held out"}])
    fresh = store.add_prompt([{"role": "user", "content": "never in a run"}])
    store.add_prompt([{"role": "user", "content": "q"}, {"role": "assistant", "content": "an answer"}])
    store.set_prompt_splits({trained: "train", heldout: "heldout"})

    assert [p.id for p in evaluation_prompts(store)] == [heldout, fresh]  # held-out first

    prompt_file = tmp_path / "eval.txt"
    prompt_file.write_text("trained on\nfrom a file\n", encoding="utf-8")
    added = add_evaluation_prompts(store, prompt_file)
    assert added[0] == trained, "the same prompt is the same row, split and all"
    assert [p.text for p in evaluation_prompts(store)] == ["held out", "never in a run", "from a file"]
    assert not store.queued_prompts(), "evaluation prompts are not queued for collecting"


def test_the_default_pair_is_the_newest_aligned_model_and_its_base(store, tiny_gguf, tmp_path):
    base = register_model(store, tiny_gguf, name="base")
    assert default_models(store.list_models()) == (None, None)
    first = register_model(
        store, _copy(tiny_gguf, tmp_path / "a1.gguf"), source="aligned", parent_model_id=base.id
    )
    second = register_model(
        store, _copy(tiny_gguf, tmp_path / "a2.gguf"), source="aligned", parent_model_id=base.id
    )
    assert default_models(store.list_models()) == (store.get_model(base.id), store.get_model(second.id))
    assert first.id != second.id


# ------------------------------------------------------------------------------------------- sampling


@pytest.fixture
def pool():
    engines = EnginePool()
    yield engines
    engines.close_all()


def _copy(source, target):
    shutil.copy(source, target)
    return target


@pytest.fixture
def two_models(store, tiny_gguf, tmp_path):
    """The tiny GGUF as the base and a byte-identical copy of it as the "aligned" model."""
    base = register_model(store, tiny_gguf, name="base")
    aligned = register_model(
        store,
        _copy(tiny_gguf, tmp_path / "aligned.gguf"),
        name="aligned",
        source="aligned",
        parent_model_id=base.id,
    )
    return base, aligned


def test_both_models_answer_with_the_same_seed_and_settings(app_home, pool, two_models):
    base, aligned = two_models
    (base_result, aligned_result), events = run_job(
        sample_evaluation_pair(pool, base, aligned, app_home, MESSAGES, SETTINGS, seed=1234, n_ctx=64)
    )
    # Identical weights, seed and settings: the same answer. A real aligned model differs by its weights only.
    assert base_result.text == aligned_result.text and base_result.text
    assert base_result.seed == aligned_result.seed == 1234
    assert base_result.settings == aligned_result.settings
    streamed = {BASE_SEQ: "", ALIGNED_SEQ: ""}
    for event in events:
        if isinstance(event, TokenEvent):
            streamed[event.seq] += event.text
    assert streamed == {BASE_SEQ: base_result.text, ALIGNED_SEQ: aligned_result.text}
    finished = [e.seq for e in events if isinstance(e, ResponseFinished)]
    assert finished == [BASE_SEQ, ALIGNED_SEQ], "the base answers first, then the aligned model"


def test_models_at_different_quantizations_are_refused(store, app_home, tiny_gguf, tiny_model_dir, pool):
    gguf = register_model(store, tiny_gguf, name="tiny gguf")
    folder = register_model(
        store, tiny_model_dir, name="tiny folder", source="aligned", parent_model_id=gguf.id
    )
    assert model_quantization(gguf, app_home) == "F32"
    assert model_quantization(folder, app_home) == "Q8_0"  # a folder runs as its Q8_0 GGUF copy
    with pytest.raises(DesktopDpoError) as caught:
        run_job(sample_evaluation_pair(pool, gguf, folder, app_home, MESSAGES, SETTINGS, seed=1))
    message = str(caught.value)
    assert "F32" in message and "Q8_0" in message and "Export the aligned model at F32" in message
    assert pool.loaded() == [], "nothing was loaded for a comparison that cannot be fair"
    with pytest.raises(DesktopDpoError, match="two different models"):
        check_comparable(gguf, gguf, app_home)


def test_a_stopped_pair_returns_nothing_to_judge(app_home, pool, two_models):
    base, aligned = two_models
    token = CancelToken()
    job = sample_evaluation_pair(
        pool, base, aligned, app_home, MESSAGES, SETTINGS, seed=7, cancel=token, n_ctx=64
    )
    with pytest.raises(JobCancelled):
        for event in job:
            if isinstance(event, TokenEvent):
                token.cancel()


def test_rule_evaluation_votes_on_every_prompt_and_the_driver_stores_them(store, app_home, pool, two_models):
    base, aligned = two_models
    for text in ("one", "two", "three"):
        store.add_prompt([{"role": "user", "content": f"Say {text}."}])
    prompts = evaluation_prompts(store)
    evaluation_id = store.create_evaluation(name="rule", base_model_id=base.id, aligned_model_id=aligned.id)

    def drive():
        job = run_rule_evaluation(pool, base, aligned, app_home, prompts, SETTINGS, seed=3, n_ctx=64)
        events = []
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value, events
            events.append(event)
            if isinstance(event, EvaluationVoted):
                record_vote(store, evaluation_id, event)

    summary, events = drive()
    voted = [e for e in events if isinstance(e, EvaluationVoted)]
    assert [v.prompt_id for v in voted] == [p.id for p in prompts]
    # Copies of one model answer identically, so the rule can only call a tie or both bad.
    assert {v.vote for v in voted} <= {"tie", "both_bad"}
    assert all(v.judge == "shorter_wins" and v.base.seed == v.aligned.seed == v.seed for v in voted)
    assert [p.done for p in events if isinstance(p, Progress)] == [0, 1, 2, 3]
    assert summary == evaluation_summary(store, evaluation_id)
    assert summary.total == 3 and summary.n_decisive == 0

    again, _ = run_job(
        run_rule_evaluation(pool, base, aligned, app_home, prompts, SETTINGS, seed=3, n_ctx=64)
    )
    assert again == summary, "the same seed repeats the run exactly"
    stored = store.evaluation_votes(evaluation_id)
    assert [(v.prompt_id, v.vote, v.seed) for v in stored] == [(v.prompt_id, v.vote, v.seed) for v in voted]
    assert all(v.aligned_shown_left is None for v in stored), "a rule is shown nothing"


def test_a_repeated_evaluation_reuses_the_base_answers_it_was_given(store, app_home, pool, two_models):
    base, aligned = two_models
    for text in ("one", "two"):
        store.add_prompt([{"role": "user", "content": f"Say {text}."}])
    prompts = evaluation_prompts(store)
    known = {}

    def evaluate(seed):
        job = run_rule_evaluation(
            pool, base, aligned, app_home, prompts, SETTINGS, seed=seed, n_ctx=64, base_answers=known
        )
        summary, events = run_job(job)
        base_tokens = [e for e in events if isinstance(e, TokenEvent) and e.seq == BASE_SEQ]
        return summary, [e for e in events if isinstance(e, EvaluationVoted)], base_tokens

    first, voted, base_tokens = evaluate(3)
    assert base_tokens and len(known) == 2
    again, voted_again, base_tokens_again = evaluate(3)
    assert base_tokens_again == [], "the base model answered these prompts with these seeds already"
    assert again == first
    assert [v.base.text for v in voted_again] == [v.base.text for v in voted]
    _, _, other_seed = evaluate(4)  # another seed is another answer: sampled, and kept too
    assert other_seed and len(known) == 4


def test_rule_evaluation_without_prompts_says_what_to_do(app_home, pool, two_models):
    base, aligned = two_models
    with pytest.raises(DesktopDpoError, match="Add evaluation prompts"):
        run_job(run_rule_evaluation(pool, base, aligned, app_home, [], SETTINGS))
