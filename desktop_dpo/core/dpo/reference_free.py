"""Preference losses without a reference model: ORPO and SimPO, as pure tensor functions.

Both score a response by its *length-normalised* log-probability under the policy alone,

    s(y|x) = (1/|y|) · Σ_t log π_θ(y_t | x, y_<t),

so a run with these losses never computes (or caches) reference log-probs: no reference pass, no
second copy of the model's outputs, less time and memory than DPO (``bench/train_vs_trl.py`` measures
how much). The oracle is TRL 1.16: ORPO is ``trl/experimental/orpo`` (``ORPOTrainer.odds_ratio_loss``
and ``concatenated_forward``), SimPO is ``trl/experimental/cpo`` with ``loss_type="simpo"`` and
``cpo_alpha=0`` (``CPOTrainer.cpo_loss``); ``tests/core/test_reference_free_oracle.py`` checks loss,
logged rewards and LoRA gradients within 1e-4. Where TRL departs from a paper, the docstring says so.

Nothing here touches a model or the disk. :func:`with_prompt_scoring` only rearranges a batch of
:mod:`~desktop_dpo.core.dpo.batches` so that :func:`~desktop_dpo.core.dpo.logps.sequence_logps` also
scores the prompt tokens, which ORPO's NLL term needs as TRL computes it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from desktop_dpo.core.dpo.batches import response_lengths
from desktop_dpo.core.dpo.config import REFERENCE_FREE_LOSS_TYPES


class OrpoLossOutput(NamedTuple):
    """What :func:`orpo_loss` returns. Every field has shape [B], one value per pair."""

    losses: torch.Tensor  # per-pair loss; the batch loss is their mean (see orpo_loss for the NLL share)
    chosen_rewards: torch.Tensor  # λ·s(y_w|x), detached (what TRL logs as rewards/chosen)
    rejected_rewards: torch.Tensor  # λ·s(y_l|x), detached
    log_odds: torch.Tensor  # log [odds(y_w|x) / odds(y_l|x)], detached (TRL's log_odds_chosen)
    nll: torch.Tensor  # each pair's share of the batch's NLL term, detached (mean = TRL's nll_loss)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, stable on both sides of −ln 2 (Mächler 2012; TRL's ``log1mexp``)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    prompt_logps: torch.Tensor,
    prompt_lengths: torch.Tensor,
    *,
    lam: float,
) -> OrpoLossOutput:
    """ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model").

    Eq. 6: ``L_ORPO = L_SFT + λ·L_OR`` with the odds-ratio term (Eqs. 4, 7)

        odds_θ(y|x) = P_θ(y|x) / (1 − P_θ(y|x)),   log P_θ(y|x) = s(y|x)  (Eq. 1's length normalisation)
        L_OR = −log σ( log odds_θ(y_w|x) − log odds_θ(y_l|x) )
             = −log σ( (s_w − s_l) − [log(1 − e^{s_w}) − log(1 − e^{s_l})] ).

    ``L_SFT`` is the chosen answer's negative log-likelihood. The paper (Eq. 2) averages it over the
    answer's tokens for each pair; TRL 1.16 (``concatenated_forward``: "orpo chosen nll loss is computed over
    the full prompt and response") takes one cross-entropy over every non-padding token of the chosen rows
    of the batch, the prompt's included (all but each row's first token), averaged over those tokens of
    the whole batch. This follows TRL: pair i's share is ``B · NLL_i / Σ_j n_j`` (``NLL_i`` summed over its
    ``n_i`` prompt and answer tokens), so the mean of the per-pair losses is TRL's batch loss exactly.
    With one pair per batch the two definitions differ only by the prompt tokens.

    Args:
        chosen_logps: [B] log π_θ(y_w|x) summed over the answer tokens, with gradient.
        rejected_logps: [B] log π_θ(y_l|x) summed likewise.
        chosen_lengths: [B] answer token counts of y_w (what s divides by).
        rejected_lengths: [B] likewise for y_l.
        prompt_logps: [B] summed log-probs of the prompt's tokens after its first (see
            :func:`with_prompt_scoring`), with gradient.
        prompt_lengths: [B] how many tokens ``prompt_logps`` sums.
        lam: λ, the weight of the odds-ratio term (TRL's ``ORPOConfig.beta``; the paper uses 0.1–0.25).

    Returns:
        :class:`OrpoLossOutput`; the rewards are ``λ·s`` as TRL logs them.
    """
    if lam <= 0:
        raise ValueError(f"ORPO's λ must be positive, got {lam}.")
    chosen_avg = chosen_logps.float() / chosen_lengths.to(torch.float32).clamp(min=1.0)  # s_w, [B]
    rejected_avg = rejected_logps.float() / rejected_lengths.to(torch.float32).clamp(min=1.0)  # s_l, [B]
    # Eqs. 4 and 7 through log identities, as TRL's odds_ratio_loss writes them.
    log_odds = (chosen_avg - rejected_avg) - (_log1mexp(chosen_avg) - _log1mexp(rejected_avg))  # [B]
    odds_ratio_term = -F.logsigmoid(log_odds)  # L_OR, [B]
    nll_sums = -(prompt_logps.float() + chosen_logps.float())  # [B]
    tokens = (prompt_lengths + chosen_lengths).to(torch.float32).sum().clamp(min=1.0)
    nll = nll_sums * (nll_sums.shape[0] / tokens)  # [B]; mean over the batch = Σ NLL / Σ tokens
    return OrpoLossOutput(
        losses=nll + lam * odds_ratio_term,
        chosen_rewards=lam * chosen_avg.detach(),
        rejected_rewards=lam * rejected_avg.detach(),
        log_odds=log_odds.detach(),
        nll=nll.detach(),
    )


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    *,
    beta: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"), Eq. 6:

        L = −log σ( (β/|y_w|)·log π_θ(y_w|x) − (β/|y_l|)·log π_θ(y_l|x) − γ ).

    The reward (Eq. 4) is ``β·s(y|x)``, the length-normalised log-probability scaled by β; γ is the target
    margin between the two rewards. TRL's ``CPOTrainer`` (``loss_type="simpo"``) writes it as
    ``−log σ(β·(s_w − s_l − simpo_gamma/β))``, the same thing: its ``simpo_gamma`` is this γ (the paper's
    tables often quote the ratio γ/β; β = 2–2.5 with γ/β ≈ 0.5 is its usual start). No NLL term
    (``cpo_alpha = 0``, as the paper has none).

    Args:
        chosen_logps: [B] log π_θ(y_w|x) summed over the answer tokens, with gradient.
        rejected_logps: [B] summed likewise.
        chosen_lengths: [B] |y_w|.
        rejected_lengths: [B] |y_l|.
        beta: β > 0.
        gamma: γ ≥ 0, the target reward margin.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each [B]; the rewards are ``β·s``, detached, as TRL
        logs them.
    """
    if beta <= 0:
        raise ValueError(f"SimPO's β must be positive, got {beta}.")
    if gamma < 0:
        raise ValueError(f"SimPO's γ must not be negative, got {gamma}.")
    chosen_avg = chosen_logps.float() / chosen_lengths.to(torch.float32).clamp(min=1.0)  # [B]
    rejected_avg = rejected_logps.float() / rejected_lengths.to(torch.float32).clamp(min=1.0)  # [B]
    losses = -F.logsigmoid(beta * (chosen_avg - rejected_avg) - gamma)  # Eq. 6, [B]
    return losses, beta * chosen_avg.detach(), beta * rejected_avg.detach()


def orpo_metrics(output: OrpoLossOutput) -> dict[str, float]:
    """ORPO's extra batch metrics under TRL's names: ``log_odds_ratio`` (mean log σ(log-odds)),
    ``log_odds_chosen`` (mean log-odds) and ``nll_loss`` (the NLL term)."""
    log_odds = output.log_odds.float()
    return {
        "log_odds_ratio": F.logsigmoid(log_odds).mean().item(),
        "log_odds_chosen": log_odds.mean().item(),
        "nll_loss": output.nll.float().mean().item(),
    }


def with_prompt_scoring(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` (from ``collate`` or ``collate_shared``, B pairs) laid out so that ``sequence_logps`` returns
    ``(cat[chosen, prompt], cat[rejected, nothing])``: each [2B], the first B of each as before, and the
    next B of the first the summed log-probs of each pair's prompt tokens after its first one (what
    ORPO's NLL term adds to the chosen answer, as TRL computes it). No extra model work in the shared
    layout (the prompt is already in the forward pass; its positions just reach the LM head too); the
    padded layout scores the prompts in B more rows (and B empty ones, to keep the halves equal).

    Also returns ``prompt_lengths`` [B] (tokens scored per prompt) and keeps ``response_lengths`` as
    ``[2B]`` chosen and rejected answer lengths under ``answer_lengths``.
    """
    if "label_seq" in batch:
        return _shared_with_prompt(batch)
    loss_mask, attention = batch["loss_mask"], batch["attention_mask"]
    n_pairs = loss_mask.shape[0] // 2
    chosen_mask = loss_mask[:n_pairs]  # [B, T]
    prompt_mask = attention[:n_pairs] * (1 - chosen_mask)  # prompt tokens (right padding: they come first)
    prompt_mask[:, 0] = 0  # the first token is never predicted
    chosen_rows, rejected_rows = batch["input_ids"][:n_pairs], batch["input_ids"][n_pairs:]
    return {
        "input_ids": torch.cat([chosen_rows, chosen_rows, rejected_rows, chosen_rows]),
        "attention_mask": torch.cat(
            [attention[:n_pairs], attention[:n_pairs], attention[n_pairs:], attention[:n_pairs]]
        ),
        "loss_mask": torch.cat(
            [chosen_mask, prompt_mask, loss_mask[n_pairs:], torch.zeros_like(chosen_mask)]
        ),
        "prompt_lengths": prompt_mask.sum(dim=1),
        "answer_lengths": loss_mask.sum(dim=1),
    }


def scored_batch(batch: dict[str, torch.Tensor], loss_type: str) -> dict[str, torch.Tensor]:
    """What a training loop scores for ``loss_type``: :func:`with_prompt_scoring` for ORPO (its NLL term covers
    the prompt, as TRL's does), the batch itself for every other loss."""
    return with_prompt_scoring(batch) if loss_type == "orpo" else batch


def _shared_with_prompt(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`with_prompt_scoring` of a ``collate_shared`` batch: the prompt's predicting positions join
    ``keep``, their tokens become sequences B…2B−1, and the rejected answers move to 2B…3B−1."""
    n_pairs = batch["response_lengths"].shape[0] // 2
    keep, input_ids, positions = batch["keep"], batch["input_ids"], batch["position_ids"]
    kept = keep.nonzero()  # [K, 2] (row, column), row-major like label_rows
    where = kept[batch["label_rows"]]  # [N, 2] predicting position of each scored token
    seq = batch["label_seq"].clone()
    seq[seq >= n_pairs] += n_pairs  # rejected i: B + i -> 2B + i
    extra_where, extra_labels, extra_seq = [], [], []
    for i in range(n_pairs):
        # The last prompt token predicts the first token of both answers; the prompt starts where the
        # position ids say it does (they count from 0 at each segment's start).
        first = ((batch["label_seq"] == i) | (batch["label_seq"] == n_pairs + i)).nonzero()
        if not len(first):
            continue  # two empty answers (cannot happen with a turn end): no prompt tokens either
        row, last = where[first[0, 0]].tolist()
        start = last - int(positions[row, last])
        columns = torch.arange(start, last, dtype=torch.long)  # predict tokens start + 1 … last
        extra_where.append(torch.stack([torch.full_like(columns, row), columns], dim=1))
        extra_labels.append(input_ids[row, start + 1 : last + 1])
        extra_seq.append(torch.full_like(columns, n_pairs + i))
    all_where = torch.cat([where, *extra_where])
    new_keep = torch.zeros_like(keep)
    new_keep[all_where[:, 0], all_where[:, 1]] = True
    kept_index = (new_keep.flatten().cumsum(0) - 1).view(keep.shape)
    label_seq = torch.cat([seq, *extra_seq])
    prompt_lengths = torch.bincount(label_seq, minlength=4 * n_pairs)[n_pairs : 2 * n_pairs]
    return {
        **batch,
        "keep": new_keep,
        "label_rows": kept_index[all_where[:, 0], all_where[:, 1]],
        "labels": torch.cat([batch["labels"], *extra_labels]),
        "label_seq": label_seq,
        "scored_lengths": torch.bincount(label_seq, minlength=4 * n_pairs),
        "response_lengths": torch.zeros(4 * n_pairs, dtype=torch.long),  # 4B sequences; see answer_lengths
        "prompt_lengths": prompt_lengths,
        "answer_lengths": batch["response_lengths"],
    }


def reference_free_outputs(
    loss_type: str,
    logps: tuple[torch.Tensor, torch.Tensor],
    batch: dict[str, torch.Tensor],
    *,
    beta: float,
    gamma: float = 0.0,
) -> OrpoLossOutput:
    """The loss of a batch for ``loss_type`` ("orpo" or "simpo") from ``sequence_logps`` of
    :func:`with_prompt_scoring` (ORPO) or of the plain batch (SimPO, which needs no prompt scores).

    Returns an :class:`OrpoLossOutput` for both, so a training loop handles them alike (SimPO's
    ``log_odds`` is its reward margin β·(s_w − s_l) and its ``nll`` is zero). ``beta`` is ORPO's λ or
    SimPO's β.
    """
    if loss_type == "orpo":
        n_pairs = batch["prompt_lengths"].shape[0]
        first, second = logps
        chosen_lengths, rejected_lengths = batch["answer_lengths"].chunk(2)
        return orpo_loss(
            first[:n_pairs], second[:n_pairs], chosen_lengths, rejected_lengths,
            first[n_pairs:], batch["prompt_lengths"], lam=beta,
        )  # fmt: skip
    if loss_type == "simpo":
        chosen, rejected = logps
        chosen_lengths, rejected_lengths = response_lengths(batch)
        losses, chosen_rewards, rejected_rewards = simpo_loss(
            chosen, rejected, chosen_lengths, rejected_lengths, beta=beta, gamma=gamma
        )
        return OrpoLossOutput(
            losses,
            chosen_rewards,
            rejected_rewards,
            chosen_rewards - rejected_rewards,
            torch.zeros_like(losses),
        )
    raise ValueError(f"{loss_type!r} is not a reference-free loss ({', '.join(REFERENCE_FREE_LOSS_TYPES)}).")
