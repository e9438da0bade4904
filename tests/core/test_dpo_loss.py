"""The preference losses against values worked out by hand (in the style of torchtune's test_dpo_loss.py).

One batch of two pairs is used throughout, chosen so the arithmetic stays readable:

    policy    chosen = [-1, -2]   rejected = [-3, -1]
    reference chosen = [-2, -2]   rejected = [-2, -2]
    log-ratios: chosen = [1, 0], rejected = [-1, 1]  ->  h = chosen - rejected = [2, -1]
    beta = 0.5  ->  beta*h = [1, -0.5]

and -log sigmoid(x) = log(1 + e^-x) = softplus(-x):
    softplus(-1)   = log(1 + e^-1)   = 0.3132616875
    softplus(0.5)  = log(1 + e^0.5)  = 0.9740769842
    softplus(1)    = 1.3132616875,   softplus(-0.5) = 0.4740769842   (softplus(x) = softplus(-x) + x)
"""

from __future__ import annotations

import math

import pytest
import torch

from desktop_dpo.core.dpo.loss import (
    LOSS_TYPES,
    DpoLossOutput,
    dpo_metrics,
    heldout_accuracy,
    preference_loss,
    with_sft_term,
)

BETA = 0.5


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return {
        "policy_chosen_logps": torch.tensor([-1.0, -2.0]),
        "policy_rejected_logps": torch.tensor([-3.0, -1.0]),
        "reference_chosen_logps": torch.tensor([-2.0, -2.0]),
        "reference_rejected_logps": torch.tensor([-2.0, -2.0]),
    }


def test_sigmoid_is_dpo_eq7(batch):
    out = preference_loss(**batch, beta=BETA, loss_type="sigmoid")
    # -log sigmoid(1) = 0.3132616875 ; -log sigmoid(-0.5) = 0.9740769842
    torch.testing.assert_close(out.losses, torch.tensor([0.3132616875, 0.9740769842]))


def test_rewards_are_beta_times_log_ratios_and_detached(batch):
    policy_chosen = batch["policy_chosen_logps"].clone().requires_grad_()
    out = preference_loss(**{**batch, "policy_chosen_logps": policy_chosen}, beta=BETA)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.5, 0.0]))  # 0.5 * [1, 0]
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.5]))  # 0.5 * [-1, 1]
    assert out.losses.requires_grad
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_sigmoid_gradient_pushes_chosen_up_by_beta_sigmoid(batch):
    # d/d(policy_chosen) of -log sigmoid(beta*h) = -beta * sigmoid(-beta*h)
    #   pair 0: -0.5 * sigmoid(-1)  = -0.5 * 0.2689414214 = -0.1344707107
    #   pair 1: -0.5 * sigmoid(0.5) = -0.5 * 0.6224593312 = -0.3112296656
    policy_chosen = batch["policy_chosen_logps"].clone().requires_grad_()
    out = preference_loss(**{**batch, "policy_chosen_logps": policy_chosen}, beta=BETA)
    out.losses.sum().backward()
    torch.testing.assert_close(policy_chosen.grad, torch.tensor([-0.1344707107, -0.3112296656]))


def test_label_smoothing_gives_conservative_dpo(batch):
    # cDPO: (1 - eps) * softplus(-beta*h) + eps * softplus(beta*h), eps = 0.1
    #   pair 0: 0.9 * 0.3132616875 + 0.1 * 1.3132616875 = 0.4132616875
    #   pair 1: 0.9 * 0.9740769842 + 0.1 * 0.4740769842 = 0.9240769842
    out = preference_loss(**batch, beta=BETA, loss_type="sigmoid", label_smoothing=0.1)
    torch.testing.assert_close(out.losses, torch.tensor([0.4132616875, 0.9240769842]))


def test_hinge_is_slic_with_margin_one_over_beta(batch):
    # relu(1 - beta*h) = relu(1 - [1, -0.5]) = [0, 1.5]
    out = preference_loss(**batch, beta=BETA, loss_type="hinge")
    torch.testing.assert_close(out.losses, torch.tensor([0.0, 1.5]))


def test_ipo_on_summed_log_ratios_is_paper_eq17(batch):
    # (h - 1/(2*beta))^2 = ([2, -1] - 1)^2 = [1, 4]
    out = preference_loss(**batch, beta=BETA, loss_type="ipo")
    torch.testing.assert_close(out.losses, torch.tensor([1.0, 4.0]))


def test_ipo_with_lengths_normalises_like_trl(batch):
    # chosen lengths [2, 1], rejected [4, 1]:
    #   chosen per-token log-ratios = [1/2, 0/1] = [0.5, 0]; rejected = [-1/4, 1/1] = [-0.25, 1]
    #   delta = [0.75, -1] ; (delta - 1)^2 = [0.0625, 4]
    chosen_lengths, rejected_lengths = torch.tensor([2, 1]), torch.tensor([4, 1])
    out = preference_loss(
        **batch, beta=BETA, loss_type="ipo", chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths
    )
    torch.testing.assert_close(out.losses, torch.tensor([0.0625, 4.0]))
    # Rewards stay on the summed scale, as TRL reports them.
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.5]))

    # Passing average per-token log-probs instead gives the same loss (the caller's other option).
    averaged = {
        "policy_chosen_logps": batch["policy_chosen_logps"] / chosen_lengths,
        "reference_chosen_logps": batch["reference_chosen_logps"] / chosen_lengths,
        "policy_rejected_logps": batch["policy_rejected_logps"] / rejected_lengths,
        "reference_rejected_logps": batch["reference_rejected_logps"] / rejected_lengths,
    }
    torch.testing.assert_close(preference_loss(**averaged, beta=BETA, loss_type="ipo").losses, out.losses)


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [("sigmoid", math.log(2.0)), ("hinge", 1.0), ("ipo", 1.0 / (4 * 0.1**2))],  # ipo: (0 - 1/(2*0.1))^2 = 25
)
def test_policy_equal_to_reference(loss_type, expected):
    # A fresh LoRA adapter (B = 0): no preference yet, rewards exactly zero.
    logps = torch.tensor([-5.0, -7.0, -1.0])
    out = preference_loss(logps, logps - 1, logps, logps - 1, beta=0.1, loss_type=loss_type)
    torch.testing.assert_close(out.losses, torch.full((3,), expected))
    assert torch.equal(out.chosen_rewards, torch.zeros(3))


def test_metrics_use_trl_names_and_batch_means(batch):
    out = preference_loss(**batch, beta=BETA)
    metrics = dpo_metrics(
        out,
        policy_chosen_logps=batch["policy_chosen_logps"],
        policy_rejected_logps=batch["policy_rejected_logps"],
    )
    assert metrics == pytest.approx(
        {
            "rewards/chosen": 0.25,  # mean(0.5, 0)
            "rewards/rejected": 0.0,  # mean(-0.5, 0.5)
            "rewards/accuracies": 0.5,  # 0.5 > -0.5 yes, 0 > 0.5 no
            "rewards/margins": 0.25,  # mean(1, -0.5)
            "logps/chosen": -1.5,
            "logps/rejected": -2.0,
        }
    )


def test_a_tie_in_rewards_is_not_counted_as_accurate():
    out = DpoLossOutput(torch.zeros(2), torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0]))
    assert dpo_metrics(out)["rewards/accuracies"] == 0.5


def test_held_out_float_noise_is_a_tie_not_a_ranking():
    # Step 0 on a CPU whose kernels round the reference's batches differently from the policy's: the adapter
    # is still the reference, yet one margin comes out at +1.7e-7. The held-out curve must start at 0% right.
    chosen = torch.tensor([0.0, 0.0, 2e-7, 0.0])
    rejected = torch.tensor([-1.7e-7, 1e-7, 0.0, 0.0])
    assert dpo_metrics(DpoLossOutput(torch.zeros(4), chosen, rejected))["rewards/accuracies"] == 0.5  # as TRL
    assert heldout_accuracy(chosen, rejected) == 0.0
    # A pair the run has learnt is ranked right, however small its reward scale (β 0.01, 0.05 nats apart).
    learnt = torch.tensor([0.01 * 0.05, 0.3, -0.2, 1e-5])
    assert heldout_accuracy(learnt, torch.zeros(4)) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "kto"}, "Unknown loss type"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "sigmoid"),
        ({"label_smoothing": 0.5}, r"\[0, 0.5\)"),
        ({"chosen_lengths": torch.ones(2), "rejected_lengths": torch.ones(2)}, "ipo"),
        ({"loss_type": "ipo", "chosen_lengths": torch.ones(2)}, "both"),
    ],
)
def test_settings_that_would_be_silently_ignored_are_refused(batch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        preference_loss(**batch, beta=BETA, **kwargs)


def test_every_loss_type_is_covered():
    assert set(LOSS_TYPES) == {"sigmoid", "ipo", "hinge"}


def test_the_sft_term_adds_the_chosen_answers_per_token_nll(batch):
    # chosen lengths [2, 4] -> NLL per token = [1/2, 2/4] = [0.5, 0.5]; weight 0.4 adds 0.2 to each pair.
    policy_chosen = batch["policy_chosen_logps"].clone().requires_grad_()
    dpo = preference_loss(**{**batch, "policy_chosen_logps": policy_chosen}, beta=BETA)
    out = with_sft_term(dpo, policy_chosen, torch.tensor([2, 4]), 0.4)
    torch.testing.assert_close(out.losses, torch.tensor([0.3132616875 + 0.2, 0.9740769842 + 0.2]))
    torch.testing.assert_close(out.chosen_rewards, dpo.chosen_rewards)  # rewards are DPO's, untouched
    out.losses.sum().backward()
    # DPO's pull (-0.1344707107, -0.3112296656) plus the term's -w / length = (-0.2, -0.1).
    torch.testing.assert_close(policy_chosen.grad, torch.tensor([-0.3344707107, -0.4112296656]))
    with pytest.raises(ValueError, match="negative"):
        with_sft_term(dpo, policy_chosen, torch.tensor([2, 4]), -1.0)
