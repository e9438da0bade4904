"""Preference losses as pure tensor functions: log-probabilities in, per-pair losses and rewards out.

Notation (shared by every loss below). For a prompt x with a chosen response y_w and a rejected one y_l,

    h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)]

is the difference of the policy-to-reference log-ratios. The losses follow TRL 1.16's ``DPOTrainer``
(``trl/trainer/dpo_trainer.py``, ``_compute_loss``), which is this module's oracle in
``tests/core/test_dpo_oracle.py``; where TRL departs from a paper, the docstring says so.

Nothing here touches a model, a tokenizer or the disk, so every function is checked against values
worked out by hand (``tests/core/test_dpo_loss.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "hinge")

TIE_MARGIN = 1e-4
"""Held-out reward margins (``chosen − rejected``) smaller than this are ties, and a tie is not ranked right
(:func:`heldout_accuracy`). The reference's log-probabilities are computed once, in other batches than the
policy's, so at step 0, while the adapter is still the reference, the margins are float noise (~1e-7, of
either sign, from how the CPU's matrix kernels round each batch), not a ranking. 1e-4 is a thousand times
that noise and well under the margins a run teaches."""


class DpoLossOutput(NamedTuple):
    """What :func:`preference_loss` returns. Every field has shape [B], one value per pair."""

    losses: torch.Tensor  # per-pair loss; the training loss is its mean
    chosen_rewards: torch.Tensor  # β·(log π_θ(y_w|x) − log π_ref(y_w|x)), detached
    rejected_rewards: torch.Tensor  # β·(log π_θ(y_l|x) − log π_ref(y_l|x)), detached


def preference_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> DpoLossOutput:
    """Per-pair preference loss and the implicit rewards TRL reports.

    Args:
        policy_chosen_logps: [B] log π_θ(y_w|x), summed over the response tokens (see ``ipo`` below).
        policy_rejected_logps: [B] log π_θ(y_l|x).
        reference_chosen_logps: [B] log π_ref(y_w|x) (no gradient needed).
        reference_rejected_logps: [B] log π_ref(y_l|x).
        beta: β; for ``ipo`` it is the regularisation τ of the IPO paper.
        loss_type: one of :data:`LOSS_TYPES`:

            ``"sigmoid"``: DPO, Rafailov et al. 2023, Eq. 7:
            ``L = −log σ(β·h)``. With ``label_smoothing = ε > 0`` this becomes conservative DPO
            (cDPO, Mitchell 2023, "A note on DPO with noisy preferences"), which assumes each label is
            flipped with probability ε: ``L = −(1 − ε)·log σ(β·h) − ε·log σ(−β·h)``, as in the DPO
            authors' ``trainers.py``. (TRL 1.16 no longer applies ``label_smoothing`` to "sigmoid";
            with ε = 0 the two agree.)

            ``"ipo"``: IPO, Azar et al. 2023, Eq. 17: ``L = (h − 1/(2τ))²``. The paper writes h with
            *summed* sequence log-probs, which makes the squared loss grow with the square of the
            response length, so a fixed τ means different things for short and long answers. TRL
            (confirmed with the IPO authors) uses *length-normalised* log-ratios instead: each
            log-ratio is divided by its response's token count. Two ways to get that here:
            pass summed log-probs together with ``chosen_lengths``/``rejected_lengths`` (the
            normalisation happens here and the rewards stay on TRL's summed scale), or pass average
            per-token log-probs (``sequence_logps(..., average=True)``) and no lengths (then the
            rewards are per-token too).

            ``"hinge"``: the rank-calibration loss of SLiC-HF (Zhao et al. 2023),
            ``max(0, δ − log π_θ(y_w|x) + log π_θ(y_l|x))``, written on the reference log-ratios as in the
            DPO authors' ``trainers.py`` and in TRL: ``L = max(0, 1 − β·h)``, i.e. δ = 1/β. (SLiC's
            extra cross-entropy regulariser on a reference text is not part of it.)

        label_smoothing: ε in [0, 0.5), only for ``"sigmoid"``.
        chosen_lengths: [B] response token counts, only for ``"ipo"`` with summed log-probs.
        rejected_lengths: [B] likewise for the rejected responses.

    Returns:
        :class:`DpoLossOutput` of three [B] tensors. The rewards are β times the summed (or, for IPO
        fed with averages, per-token) log-ratios, detached, exactly as TRL logs them.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}.")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}.")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to the 'sigmoid' loss only, not to {loss_type!r}.")
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("Pass both chosen_lengths and rejected_lengths, or neither.")
    if chosen_lengths is not None and loss_type != "ipo":
        raise ValueError("Response lengths are used by the 'ipo' loss only.")

    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # [B]

    if loss_type == "sigmoid":
        logits = chosen_logratios - rejected_logratios  # h, [B]
        # Eq. 7 (and its cDPO form): logsigmoid is the numerically stable log σ.
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(
            -beta * logits
        )
    elif loss_type == "ipo":
        if chosen_lengths is not None and rejected_lengths is not None:
            # Length normalisation as TRL does it: per-token log-ratios; clamp guards an empty response.
            chosen_scores = chosen_logratios / chosen_lengths.to(chosen_logratios.dtype).clamp(min=1.0)
            rejected_scores = rejected_logratios / rejected_lengths.to(rejected_logratios.dtype).clamp(
                min=1.0
            )
        else:
            chosen_scores, rejected_scores = chosen_logratios, rejected_logratios
        # Eq. 17 with τ = β: regress the (normalised) margin onto 1/(2τ) instead of pushing it to infinity.
        losses = (chosen_scores - rejected_scores - 1.0 / (2.0 * beta)) ** 2
    else:  # hinge
        logits = chosen_logratios - rejected_logratios
        losses = torch.relu(1.0 - beta * logits)

    return DpoLossOutput(
        losses=losses,
        chosen_rewards=beta * chosen_logratios.detach(),
        rejected_rewards=beta * rejected_logratios.detach(),
    )


def with_sft_term(
    output: DpoLossOutput,
    policy_chosen_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    weight: float,
) -> DpoLossOutput:
    """``output`` with an SFT term on the chosen responses added to each pair's loss (RPO).

    ``L = L_pref + w · NLL(y_w)``, the NLL being the chosen response's mean per-token negative
    log-likelihood, ``−log π_θ(y_w|x) / |y_w|`` (Pang et al. 2024, "Iterative Reasoning Preference
    Optimization", Eq. 3; TRL's ``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1, w]``, which
    averages over the tokens of the whole batch instead: the same for a batch of one pair).

    Why: DPO alone can satisfy its margin by making the rejected answers unlikely while the chosen ones
    fall too ("chosen_falling"), and then the model does not write answers like the chosen ones more
    often. The SFT term holds the chosen answers up. ``policy_chosen_logps`` is summed over the response
    tokens, with gradient; ``chosen_lengths`` [B] counts them. The rewards are unchanged.
    """
    if weight < 0:
        raise ValueError(f"The SFT weight must not be negative, got {weight}.")
    nll = -policy_chosen_logps / chosen_lengths.to(policy_chosen_logps.dtype).clamp(min=1.0)
    return output._replace(losses=output.losses + weight * nll)


def dpo_metrics(
    output: DpoLossOutput,
    *,
    policy_chosen_logps: torch.Tensor | None = None,
    policy_rejected_logps: torch.Tensor | None = None,
) -> dict[str, float]:
    """Batch means under TRL's metric names, for the live plots and the run history.

    ``rewards/accuracies`` is the fraction of pairs whose chosen reward is strictly higher than the
    rejected one (a tie counts as wrong, as in TRL); ``rewards/margins`` is the mean of
    ``chosen − rejected``. When the policy log-probs ([B] each) are given, ``logps/chosen`` and
    ``logps/rejected`` are added as well.
    """
    chosen = output.chosen_rewards.detach().float()
    rejected = output.rejected_rewards.detach().float()
    metrics = {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
    }
    if policy_chosen_logps is not None:
        metrics["logps/chosen"] = policy_chosen_logps.detach().float().mean().item()
    if policy_rejected_logps is not None:
        metrics["logps/rejected"] = policy_rejected_logps.detach().float().mean().item()
    return metrics


def heldout_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    """The share of held-out pairs the policy ranks right: the chosen reward above the rejected one by more
    than :data:`TIE_MARGIN` (float noise is a tie, and a tie counts as wrong). Training's batch metric,
    :func:`dpo_metrics`, keeps TRL's strict ``>`` so that it matches TRL's logs."""
    margins = chosen_rewards.detach().float() - rejected_rewards.detach().float()
    return (margins > TIE_MARGIN).float().mean().item()
