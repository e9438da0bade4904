"""Oracle: our reference-free losses equal TRL 1.16 on the same tiny model, token ids and settings.

ORPO is TRL's ``trl/experimental/orpo`` ``ORPOTrainer``; SimPO is ``trl/experimental/cpo``'s ``CPOTrainer``
with ``loss_type="simpo"`` and ``cpo_alpha=0`` (the paper's SimPO has no NLL term). As in
``test_dpo_oracle.py``: fp32 on the CPU, a LoRA adapter with ``init_lora_weights=False`` so the numbers mean
something, and the comparison of token ids, loss, the metrics TRL logs and the LoRA gradients, within 1e-4,
for each pair alone and for the whole batch, in both our batch layouts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from desktop_dpo.core.dpo.batches import collate, collate_for, collate_shared, response_lengths
from desktop_dpo.core.dpo.logps import sequence_logps
from desktop_dpo.core.dpo.reference_free import (
    orpo_loss,
    orpo_metrics,
    reference_free_outputs,
    simpo_loss,
    with_prompt_scoring,
)
from desktop_dpo.core.dpo.tokenizing import resolve_chat_template, tokenize_pair
from tests.core.test_dpo_oracle import (  # noqa: F401  (model_dir: fixture)
    PAIRS,
    conversational_rows,
    cpu_trainer_args,
    lora_grads,
    model_dir,
    peft_trainer,
    trl_numbers,
)

torch.set_num_threads(1)

TOL = 1e-4
LAMBDA = 0.2  # ORPO's λ (TRL's ORPOConfig.beta)
SIMPO_BETA, SIMPO_GAMMA = 2.0, 1.0


def trl_trainer(folder: Path, output_dir: Path, loss_type: str):
    """TRL's ORPOTrainer ("orpo") or CPOTrainer with loss_type="simpo" ("simpo") on a fresh copy of the tiny
    model, fp32 on the CPU, with a perturbed LoRA adapter."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    common = {**cpu_trainer_args(output_dir, len(PAIRS)), "max_length": 256, "remove_unused_columns": False}
    if loss_type == "orpo":
        args, trainer_class = ORPOConfig(beta=LAMBDA, **common), ORPOTrainer
    else:
        args = CPOConfig(loss_type="simpo", beta=SIMPO_BETA, simpo_gamma=SIMPO_GAMMA, cpo_alpha=0.0, **common)
        trainer_class = CPOTrainer
    return peft_trainer(trainer_class, folder, args, conversational_rows(PAIRS), pad_with_eos=True)


def our_numbers(model, batch: dict[str, torch.Tensor], loss_type: str) -> dict[str, float]:
    """The same quantities from our batch layout, log-probs and loss functions."""
    model.zero_grad()
    if loss_type == "orpo":
        scored = with_prompt_scoring(batch)
        output = reference_free_outputs("orpo", sequence_logps(model, scored), scored, beta=LAMBDA)
        extra = orpo_metrics(output)
        scale = LAMBDA
    else:
        output = reference_free_outputs(
            "simpo", sequence_logps(model, batch), batch, beta=SIMPO_BETA, gamma=SIMPO_GAMMA
        )
        extra, scale = {}, SIMPO_BETA
    loss = output.losses.mean()
    loss.backward()
    chosen, rejected = output.chosen_rewards, output.rejected_rewards
    return {
        "loss": loss.item(),
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
        # TRL logs the length-normalised log-probs these losses use, s = reward / scale.
        "logps/chosen": (chosen / scale).mean().item(),
        "logps/rejected": (rejected / scale).mean().item(),
        **extra,
    }


@pytest.mark.parametrize("loss_type", ["orpo", "simpo"])
def test_loss_metrics_and_gradients_equal_trl(model_dir, tmp_path, loss_type):  # noqa: F811
    trainer = trl_trainer(model_dir, tmp_path, loss_type)
    tokenizer, model = trainer.processing_class, trainer.model
    trl_rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]

    # 1. Same token ids: TRL's chosen/rejected rows are our prompt + answer, its labels mask our prompt.
    ours = [
        tokenize_pair(tokenizer, p, chat_template=resolve_chat_template(tokenizer), max_length=256,
                      max_prompt_length=128)
        for p in PAIRS
    ]  # fmt: skip
    for mine, theirs in zip(ours, trl_rows, strict=True):
        for side, answer in (("chosen", mine.chosen_ids), ("rejected", mine.rejected_ids)):
            assert theirs[f"{side}_input_ids"] == [*mine.prompt_ids, *answer]
            assert theirs[f"{side}_labels"] == [-100] * len(mine.prompt_ids) + list(answer)

    # 2. Same numbers, each pair alone and the whole batch, padded rows and each prompt once.
    assert "label_seq" in collate_for(model, ours, pad_id=tokenizer.pad_token_id)
    keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
            "logps/chosen", "logps/rejected"]  # fmt: skip
    if loss_type == "orpo":
        keys += ["nll_loss", "log_odds_ratio", "log_odds_chosen"]
    deltas_seen = []
    for rows, pairs in [([r], [p]) for r, p in zip(trl_rows, ours, strict=True)] + [(trl_rows, ours)]:
        theirs = trl_numbers(trainer, rows, "_stored_metrics")
        trl_grads = lora_grads(model)
        for layout in (collate, collate_shared):
            mine = our_numbers(model, layout(pairs, pad_id=tokenizer.pad_token_id), loss_type)
            deltas = {key: abs(mine[key] - theirs[key]) for key in keys}
            assert max(deltas.values()) < TOL, (layout.__name__, deltas, mine, theirs)
            grads = lora_grads(model)
            for name, grad in grads.items():
                torch.testing.assert_close(grad, trl_grads[name], atol=TOL, rtol=TOL, msg=name)
            deltas_seen.append(
                max([*deltas.values(), *((grads[n] - trl_grads[n]).abs().max().item() for n in grads)])
            )
    print(f"{loss_type}: largest difference from TRL {max(deltas_seen):.2e}")
    # The comparison means something: the rewards differ between the two answers, the loss is not trivial.
    assert abs(theirs["rewards/margins"]) > 1e-3
    assert theirs["loss"] > 1e-2


def test_the_prompt_is_scored_once_with_the_answers(model_dir):  # noqa: F811
    """ORPO's NLL term covers the prompt too (TRL's choice): the shared layout scores the prompt's tokens
    in the same forward pass, and both layouts agree on them and on the answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval().requires_grad_(False)
    ours = [
        tokenize_pair(tokenizer, p, chat_template=resolve_chat_template(tokenizer), max_length=256,
                      max_prompt_length=128)
        for p in PAIRS
    ]  # fmt: skip
    results = []
    with torch.no_grad():
        for layout in (collate, collate_shared):
            batch = layout(ours, pad_id=tokenizer.pad_token_id)
            plain = sequence_logps(model, batch)
            scored = with_prompt_scoring(batch)
            first, second = sequence_logps(model, scored)
            n = len(ours)
            torch.testing.assert_close(first[:n], plain[0])
            torch.testing.assert_close(second[:n], plain[1])
            assert scored["prompt_lengths"].tolist() == [len(p.prompt_ids) - 1 for p in ours]
            assert torch.equal(scored["answer_lengths"], torch.cat(response_lengths(batch)))
            results.append(first[n:])
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-5)
    assert (results[0] < 0).all()


def test_orpo_and_simpo_by_hand():
    """Values worked out by hand from the papers' equations (ORPO Eq. 6–7, SimPO Eq. 6)."""
    import math

    # One pair: answers of 2 and 4 tokens, summed log-probs −1 and −4: s_w = −0.5, s_l = −1.
    chosen, rejected = torch.tensor([-1.0]), torch.tensor([-4.0])
    lengths_w, lengths_l = torch.tensor([2]), torch.tensor([4])
    log_odds = (-0.5 + 1.0) - (math.log(1 - math.exp(-0.5)) - math.log(1 - math.exp(-1.0)))
    # prompt: 3 scored tokens summing to −3; NLL = (3 + 1) / (3 + 2) per token.
    out = orpo_loss(chosen, rejected, lengths_w, lengths_l, torch.tensor([-3.0]), torch.tensor([3]), lam=0.1)
    expected = 4.0 / 5.0 + 0.1 * -math.log(1 / (1 + math.exp(-log_odds)))
    assert out.losses.item() == pytest.approx(expected, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(-0.05)
    assert out.log_odds.item() == pytest.approx(log_odds, abs=1e-6)
    losses, rewards_w, rewards_l = simpo_loss(chosen, rejected, lengths_w, lengths_l, beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-(2.0 * 0.5 - 0.5)))), abs=1e-6)
    assert (rewards_w.item(), rewards_l.item()) == pytest.approx((-1.0, -2.0))
