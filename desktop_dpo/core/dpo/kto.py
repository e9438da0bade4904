"""The KTO loss as a pure tensor function: log-probabilities of single answers in, per-answer losses out.

KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization") learns from answers
labelled desirable or undesirable one by one, not from pairs. For a prompt x and an answer y, with the
log-ratio r(x, y) = log π_θ(y|x) − log π_ref(y|x) and a reference point z0 (below), Eq. (7) of the paper is

    L(x, y) = λ_D · (1 − σ(β·(r(x, y) − z0)))   for a desirable y,
    L(x, y) = λ_U · (1 − σ(β·(z0 − r(x, y))))   for an undesirable y,

and the training loss is the mean over the batch's answers. z0 is the KL divergence of the policy from the
reference, KL(π_θ(y'|x) ‖ π_ref(y'|x)), estimated as the paper and TRL do from *mismatched* pairs: each prompt
x_i of the batch with another example's answer y'_j, z0 = max(0, mean_i r(x_i, y'_j)), detached (no gradient
flows through it; it only sets where "better than the reference" starts).

The weights λ_D and λ_U balance the two kinds of labels: Eq. (8) of the paper recommends
λ_D·n_D / (λ_U·n_U) ∈ [1, 4/3] (:func:`balanced_weights`); TRL's defaults are λ_D = λ_U = 1.

This module follows TRL 1.16's ``KTOTrainer._compute_loss`` (``trl/trainer/kto_trainer.py``), its oracle in
``tests/core/test_kto_oracle.py``. Nothing here touches a model, a tokenizer or the disk.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

# Eq. (8): the desirable side's total weight should be 1 to 4/3 times the undesirable side's.
BALANCE_LOW, BALANCE_HIGH = 1.0, 4.0 / 3.0


class KtoLossOutput(NamedTuple):
    """What :func:`kto_loss` returns. Every field has shape [B], one value per answer, so the outputs of
    several micro-batches concatenate field by field."""

    losses: torch.Tensor  # per-answer loss, weighted by λ_D or λ_U; the training loss is its mean
    rewards: torch.Tensor  # β·(log π_θ(y|x) − log π_ref(y|x)), detached
    desirable: torch.Tensor  # bool: the label
    kl: torch.Tensor  # z0 of the answer's batch (the same value across a batch), detached
    logits: torch.Tensor  # β·(r − z0), detached: > 0 where the policy favours the answer more than z0


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    reference_kl_logps: torch.Tensor,
    desirable: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KtoLossOutput:
    """Per-answer KTO loss (Eq. 7) and the rewards TRL reports.

    Args:
        policy_logps: [B] log π_θ(y|x) of each labelled answer, summed over its tokens (with gradient).
        reference_logps: [B] log π_ref(y|x) (no gradient needed).
        policy_kl_logps: [B] log π_θ(y'|x) of each prompt with a mismatched answer y' (another example's);
            detached here: the KL estimate carries no gradient, as in TRL.
        reference_kl_logps: [B] log π_ref(y'|x).
        desirable: [B] bool, True for a desirable answer.
        beta: β, how far the policy may move from the reference.
        desirable_weight: λ_D; undesirable_weight: λ_U (see :func:`balanced_weights`).

    Returns:
        :class:`KtoLossOutput` of five [B] tensors.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}.")
    if desirable_weight <= 0 or undesirable_weight <= 0:
        raise ValueError("The desirable and undesirable weights must be positive.")
    desirable = desirable.to(device=policy_logps.device, dtype=torch.bool)
    # z0: the batch's mean mismatched log-ratio, clamped at 0 (a KL divergence is never negative), detached.
    kl = (policy_kl_logps.detach() - reference_kl_logps).mean().clamp(min=0)  # []
    logratios = policy_logps - reference_logps  # r(x, y), [B]
    desirable_losses = desirable_weight * (1.0 - F.sigmoid(beta * (logratios - kl)))
    undesirable_losses = undesirable_weight * (1.0 - F.sigmoid(beta * (kl - logratios)))
    losses = torch.where(desirable, desirable_losses, undesirable_losses)
    return KtoLossOutput(
        losses=losses,
        rewards=beta * logratios.detach(),
        desirable=desirable,
        kl=kl.expand_as(logratios).clone(),
        logits=beta * (logratios.detach() - kl),
    )


def balanced_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(λ_D, λ_U) for ``n_desirable`` and ``n_undesirable`` answers, balanced as Eq. (8) of the paper says:
    λ_D·n_D / (λ_U·n_U) ∈ [1, 4/3].

    Both stay 1 (TRL's defaults) when the counts already lie in that range (a set of picks only gives as many
    of each). Otherwise the weight of the scarcer side is raised to the nearest end of the range, the other
    kept at 1: more undesirable answers ("both bad" picks) raise λ_D to n_U/n_D; many more desirable ones
    (rewrites) raise λ_U to (3/4)·n_D/n_U. With one side empty there is nothing to balance.
    """
    if n_desirable <= 0 or n_undesirable <= 0:
        return 1.0, 1.0
    ratio = n_desirable / n_undesirable
    if ratio < BALANCE_LOW:
        return BALANCE_LOW / ratio, 1.0
    if ratio > BALANCE_HIGH:
        return 1.0, ratio / BALANCE_HIGH
    return 1.0, 1.0


def _mean_or_zero(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``values[mask]``; 0 (no change from the reference) when the mask selects nothing."""
    return values[mask].float().mean().item() if bool(mask.any()) else 0.0


def kto_metrics(
    output: KtoLossOutput,
    *,
    policy_chosen_logps: torch.Tensor | None = None,
    policy_rejected_logps: torch.Tensor | None = None,
) -> dict[str, float]:
    """Batch means under the names of :func:`~desktop_dpo.core.dpo.loss.dpo_metrics` (and TRL's KTO).

    ``rewards/chosen`` and ``rewards/rejected`` average the rewards of the desirable and of the undesirable
    answers, ``rewards/margins`` is their difference (TRL's KTO metrics; a side the batch lacks counts 0).
    ``rewards/accuracies`` is KTO's own: the share of answers on the side of z0 their label asks for (a
    desirable one with β·(r − z0) > 0, an undesirable one with < 0). ``kl`` is z0 (each step stores it,
    ``StepMetrics.kl``, and the Train view plots it). ``policy_chosen_logps``
    ([B], every labelled answer) gives ``logps/chosen`` and ``logps/rejected`` by label;
    ``policy_rejected_logps`` (the mismatched answers) is not reported.
    """
    del policy_rejected_logps  # the mismatched answers only feed z0
    desirable = output.desirable.bool()
    right_side = torch.where(desirable, output.logits > 0, output.logits < 0)
    chosen = _mean_or_zero(output.rewards, desirable)
    rejected = _mean_or_zero(output.rewards, ~desirable)
    metrics = {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/accuracies": right_side.float().mean().item(),
        "rewards/margins": chosen - rejected,
        "kl": output.kl.float().mean().item(),
    }
    if policy_chosen_logps is not None:
        logps = policy_chosen_logps.detach()
        metrics["logps/chosen"] = _mean_or_zero(logps, desirable)
        metrics["logps/rejected"] = _mean_or_zero(logps, ~desirable)
    return metrics
