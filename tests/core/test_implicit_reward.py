"""The implicit-reward scorer (``core/dpo/implicit_reward.py``) on the tiny Llama: its rewards are the ones the
DPO loss code computes from the same log-probabilities (and the ones a real run reports for its held-out pairs),
a zero adapter scores every answer 0, and a run that cannot judge says what to do.

The adapters of most tests are made here (``modeling.attach_lora`` on the base, saved with ``save_pretrained``,
as training writes them) and recorded as a completed run: the in-memory adapter they come from is the oracle's
model, loaded independently of the scorer's loading path.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from desktop_dpo.core.dpo.batches import collate
from desktop_dpo.core.dpo.config import TrainingError
from desktop_dpo.core.dpo.data import PreferencePair
from desktop_dpo.core.dpo.implicit_reward import ImplicitRewardScorer, latest_scoring_run
from desktop_dpo.core.dpo.logps import sequence_logps
from desktop_dpo.core.dpo.loss import preference_loss
from desktop_dpo.core.dpo.modeling import attach_lora, load_causal_lm
from desktop_dpo.core.dpo.tokenizing import resolve_chat_template, tokenize_pair
from desktop_dpo.core.errors import ModelError
from tests.conftest import train_to_the_end
from tests.core.test_train import BASE, TOPICS, add_pairs, chosen_text, rejected_text

torch.set_num_threads(1)

TOL = 1e-5
# Short limits: the long answer below is cut, and the conversation's prompt shortened; the scorer must cut
# them exactly as training does.
CONFIG = BASE.replace(beta=0.3, max_length=48, max_prompt_length=24)
QUESTION = [{"role": "user", "content": "Tell me about owls."}]
CONVERSATION = [
    {"role": "user", "content": "Hi."},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "How does a rainbow form?"},
]
ANSWERS = [
    " Yes, gladly! Owls are lovely, thank you.",
    " No. Owls bore me, go away.",
    "The quick brown fox jumps over the lazy dog. " * 4,  # longer than max_length allows: cut
    "",
    " Maybe tomorrow, when the weather is better.",
]


def _register(store, model_dir: Path, name: str = "tiny") -> int:
    return store.add_model(name=name, path=str(model_dir), kind="hf", fingerprint=f"fp-{name}")


def _finished_run(
    store, model_id: int, adapter_dir: Path | None, *, config=CONFIG, finished_at=None, name="r"
):
    """A run recorded as completed with ``adapter_dir`` as its adapter (as ``persist_outcome`` leaves it)."""
    run_id = store.create_run(name=name, base_model_id=model_id, config=config.to_dict(), comparison_ids=[])
    store.update_run(
        run_id,
        status="completed",
        adapter_path=str(adapter_dir) if adapter_dir else None,
        finished_at=finished_at if finished_at is not None else time.time(),
    )
    return run_id


def _adapter(model_dir: Path, folder: Path, *, zero: bool) -> object:
    """A LoRA adapter on the tiny base, saved to ``folder``: fresh (B = 0) or perturbed (random B); the model."""
    config = CONFIG.replace(init_lora_weights=zero)
    model = attach_lora(load_causal_lm(model_dir, "none", "cpu"), config, "none")
    if not zero:
        with torch.no_grad():  # a larger update than a random init gives, so rewards differ clearly
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.05)
    model.save_pretrained(str(folder), safe_serialization=True)
    model.eval()
    return model


@pytest.fixture(scope="module")
def perturbed(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("perturbed") / "adapter"
    return folder, _adapter(tiny_model_dir, folder, zero=False)


@pytest.fixture
def scorer(store, tiny_model_dir, perturbed):
    run_id = _finished_run(store, _register(store, tiny_model_dir), perturbed[0])
    scorer = ImplicitRewardScorer.for_run(store, run_id, device="cpu")
    yield scorer
    scorer.close()


def _tokenized(tokenizer, messages, chosen: str, rejected: str):
    """One pair as training tokenizes it, with this file's limits."""
    return tokenize_pair(
        tokenizer,
        PreferencePair(1, 1, messages, chosen, rejected),
        chat_template=resolve_chat_template(tokenizer),
        max_length=CONFIG.max_length,
        max_prompt_length=CONFIG.max_prompt_length,
    )


def _loss_rewards(model, tokenizer, messages, chosen: str, rejected: str) -> tuple[float, float]:
    """The oracle: the DPO loss code's chosen and rejected rewards for one pair, as training computes them
    (training's tokenization of the pair, TRL's 2B-row batch, adapter on = policy, off = reference)."""
    pair = _tokenized(tokenizer, messages, chosen, rejected)
    batch = collate([pair], tokenizer.pad_token_id)
    with torch.inference_mode():
        policy = sequence_logps(model, batch)
        with model.disable_adapter():
            reference = sequence_logps(model, batch)
    output = preference_loss(*policy, *reference, beta=CONFIG.beta, loss_type="sigmoid")
    return output.chosen_rewards.item(), output.rejected_rewards.item()


@pytest.mark.parametrize("messages", [QUESTION, CONVERSATION], ids=["one turn", "conversation"])
def test_rewards_are_the_loss_codes_rewards_for_the_same_pair(scorer, perturbed, tiny_model_dir, messages):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    got = scorer.rewards(messages, ANSWERS)
    assert len(got) == len(ANSWERS)
    for first, second in [(0, 1), (2, 3), (4, 0)]:  # (2, 3): a truncated answer against an empty one
        expected = _loss_rewards(perturbed[1], tokenizer, messages, ANSWERS[first], ANSWERS[second])
        assert got[first] == pytest.approx(expected[0], abs=TOL)
        assert got[second] == pytest.approx(expected[1], abs=TOL)


def test_rewards_do_not_depend_on_the_order_or_company_of_the_answers(scorer):
    together = scorer.rewards(QUESTION, ANSWERS)
    alone = [scorer.rewards(QUESTION, [text])[0] for text in ANSWERS]
    backwards = scorer.rewards(QUESTION, ANSWERS[::-1])
    assert together == pytest.approx(alone, abs=TOL)
    assert backwards[::-1] == pytest.approx(together, abs=TOL)
    assert scorer.rewards(QUESTION, []) == []


def test_a_perturbed_adapter_tells_answers_apart(scorer):
    rewards = scorer.rewards(QUESTION, ANSWERS)
    assert all(abs(r) > 1e-3 for r in rewards)
    assert len({round(r, 4) for r in rewards}) == len(ANSWERS)


def test_per_token_rewards_are_each_answers_reward_spread_over_its_tokens(scorer, tiny_model_dir):
    """A reward per token is the summed reward divided by the answer's scored tokens, as training tokenizes
    the answer (the cut one counted to its cut, the empty one its end-of-turn token alone)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    summed = scorer.rewards(QUESTION, ANSWERS)
    per_token = scorer.rewards(QUESTION, ANSWERS, per_token=True)
    for answer, total, mean in zip(ANSWERS, summed, per_token, strict=True):
        tokens = _tokenized(tokenizer, QUESTION, answer, answer).chosen_ids
        assert mean * len(tokens) == pytest.approx(total, abs=TOL)
    long_answer = 2  # cut at max_length: far more tokens than the others, so its sum says mostly "long"
    assert abs(per_token[long_answer]) < abs(summed[long_answer]) / 10


def test_a_zero_adapter_scores_every_answer_zero(store, tiny_model_dir, tmp_path):
    _adapter(tiny_model_dir, tmp_path / "adapter", zero=True)
    run_id = _finished_run(store, _register(store, tiny_model_dir), tmp_path / "adapter")
    with ImplicitRewardScorer.for_run(store, run_id, device="cpu") as scorer:
        assert scorer.run_id == run_id
        assert scorer.rewards(CONVERSATION, ANSWERS) == pytest.approx([0.0] * len(ANSWERS), abs=1e-7)


def test_rewards_match_what_a_trained_run_reports_for_its_heldout_pairs(store, tiny_model_dir, tmp_path):
    """End to end: a real run's final held-out rewards (its own session, its own cached reference) are the
    means of the scorer's rewards of the held-out chosen and rejected answers."""
    topics = TOPICS[:12]
    add_pairs(store, topics)
    model_id = _register(store, tiny_model_dir)
    config = BASE.replace(epochs=1, beta=0.2, heldout_fraction=0.25, checkpoint_every=1000).to_dict()
    run_id = train_to_the_end(store, model_id, config, tmp_path / "run", "trained")
    metrics = store.get_run(run_id).final_metrics
    heldout = [t for t in topics if _split(store, f"Tell me about {t}.") == "heldout"]
    assert heldout and metrics["heldout/pairs"] == len(heldout)
    chosen, rejected = [], []
    with ImplicitRewardScorer.for_run(store, run_id) as scorer:
        for topic in heldout:
            pair = scorer.rewards(
                [{"role": "user", "content": f"Tell me about {topic}."}],
                [chosen_text(topic), rejected_text(topic)],
            )
            chosen.append(pair[0])
            rejected.append(pair[1])
    assert sum(chosen) / len(chosen) == pytest.approx(metrics["heldout/rewards/chosen"], abs=TOL)
    assert sum(rejected) / len(rejected) == pytest.approx(metrics["heldout/rewards/rejected"], abs=TOL)
    assert abs(metrics["heldout/rewards/chosen"]) > 1e-4  # the run moved: not the trivial zero


def _split(store, text: str) -> str | None:
    return next(p.split for p in store.list_prompts() if p.messages[-1]["content"] == text)


def test_latest_scoring_run_follows_the_lineage(store, tmp_path):
    base = _register(store, tmp_path / "base", "base")
    unrelated = _register(store, tmp_path / "other", "other")
    first = _finished_run(store, base, tmp_path / "a1", finished_at=100.0, name="first")
    second = _finished_run(store, base, tmp_path / "a2", finished_at=200.0, name="second")
    for status in ("failed", "stopped", "running"):  # later, but never finished: never chosen
        run = store.create_run(name=status, base_model_id=base, config=CONFIG.to_dict(), comparison_ids=[])
        store.update_run(run, status=status, finished_at=300.0)
    assert latest_scoring_run(store, base) == second
    assert latest_scoring_run(store, unrelated) is None
    assert latest_scoring_run(store, 999) is None

    # The first run's export, registered as an aligned model that points back to it.
    exported = store.add_model(
        name="aligned", path=str(tmp_path / "aligned.gguf"), kind="gguf", fingerprint="fp-aligned",
        source="aligned", parent_model_id=base, run_id=first,
    )  # fmt: skip
    store.add_export(path=str(tmp_path / "aligned.gguf"), quantization="F16", sha256="0", size_bytes=1,
                     run_id=first, model_id=exported)  # fmt: skip
    assert latest_scoring_run(store, exported) == first
    # Known only by its export row (a model row without run_id) works the same.
    by_export = _register(store, tmp_path / "merged", "merged")
    store.add_export(path=str(tmp_path / "m.gguf"), quantization="Q8_0", sha256="1", size_bytes=1,
                     run_id=second, model_id=by_export)  # fmt: skip
    assert latest_scoring_run(store, by_export) == second

    # A next round trained from the aligned model judges its answers once it has finished.
    failed = store.create_run(name="r2", base_model_id=exported, config=CONFIG.to_dict(), comparison_ids=[])
    store.update_run(failed, status="failed", finished_at=400.0)
    assert latest_scoring_run(store, exported) == first
    round_two = _finished_run(store, exported, tmp_path / "a3", finished_at=500.0, name="round two")
    assert latest_scoring_run(store, exported) == round_two
    assert latest_scoring_run(store, base) == second  # the base's own runs are unchanged


def test_a_deleted_adapter_folder_is_explained(store, tiny_model_dir, tmp_path, perturbed):
    folder = tmp_path / "adapter"
    shutil.copytree(perturbed[0], folder)
    run_id = _finished_run(store, _register(store, tiny_model_dir), folder, name="warm")
    shutil.rmtree(folder)
    with pytest.raises(TrainingError) as caught:
        ImplicitRewardScorer.for_run(store, run_id, device="cpu")
    message = str(caught.value)
    assert f"run {run_id}" in message and str(folder) in message
    assert "Put the folder back" in message and "Train view" in message
    # Nothing else is harmed: the run is still the one to use once its folder is back.
    assert latest_scoring_run(store, store.get_run(run_id).base_model_id) == run_id
    shutil.copytree(perturbed[0], folder)
    with ImplicitRewardScorer.for_run(store, run_id, device="cpu") as scorer:
        assert len(scorer.rewards(QUESTION, ANSWERS[:2])) == 2


def test_runs_that_cannot_judge_say_what_to_do(store, tiny_model_dir, tmp_path, perturbed):
    model_id = _register(store, tiny_model_dir)
    stopped = store.create_run(
        name="half", base_model_id=model_id, config=CONFIG.to_dict(), comparison_ids=[]
    )
    store.update_run(stopped, status="stopped", step=3)
    with pytest.raises(TrainingError, match=r"has not finished \(status: stopped\).*Resume it"):
        ImplicitRewardScorer.for_run(store, stopped, device="cpu")
    with pytest.raises(TrainingError, match="no training run 999"):
        ImplicitRewardScorer.for_run(store, 999, device="cpu")

    copy = tmp_path / "moved-model"
    shutil.copytree(tiny_model_dir, copy)
    run_id = _finished_run(store, _register(store, copy, "copy"), perturbed[0])
    shutil.rmtree(copy)
    with pytest.raises(ModelError, match=f"Run {run_id} cannot judge answers: .*no longer in"):
        ImplicitRewardScorer.for_run(store, run_id, device="cpu")


def test_a_closed_scorer_refuses_to_score(scorer):
    scorer.close()
    scorer.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        scorer.rewards(QUESTION, ANSWERS)


def test_importing_the_module_loads_no_ml_library():
    code = (
        "import sys; import desktop_dpo.core.dpo.implicit_reward; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_config_beta_scales_the_rewards(store, tiny_model_dir, perturbed):
    model_id = _register(store, tiny_model_dir)
    small = _finished_run(store, model_id, perturbed[0], config=CONFIG.replace(beta=0.1), name="b0.1")
    large = _finished_run(store, model_id, perturbed[0], config=CONFIG.replace(beta=0.4), name="b0.4")
    with ImplicitRewardScorer.for_run(store, small, device="cpu") as scorer:
        low = scorer.rewards(QUESTION, ANSWERS[:2])
    with ImplicitRewardScorer.for_run(store, large, device="cpu") as scorer:
        high = scorer.rewards(QUESTION, ANSWERS[:2])
    assert high == pytest.approx([4 * r for r in low], abs=TOL)
