"""What a finished run did, in the person's terms: how far the model moved, and how often it now agrees with
the person's picks on prompts it never saw (issue: "the person sees progress in those terms").

Both come from the held-out pairs' last evaluation, stored with the run (``heldout/…`` in
``RunRow.final_metrics``, :class:`~desktop_dpo.core.dpo.events.EvalMetrics`):

- **Agreement**: ``heldout/rewards/accuracies`` of ``heldout/pairs`` pairs, the share whose preferred answer
  the trained model now gives the higher implicit reward, with its 95% Wilson interval (few held-out pairs
  prove little, and the interval says how little).
- **How far it moved**: with a reference model (DPO, IPO, KTO), a reward is β times the answer's
  log-likelihood ratio, so ``exp(reward / β)`` is how many times as likely the trained model makes the answer
  as the model it started from (the geometric mean over the held-out answers). The size of the mean
  absolute log ratio names it in a word (:data:`MOVE_WORDS`). ORPO and SimPO have no reference, so their
  rewards say nothing of where the model started, and only the agreement is said.
- **After each round**: the run that made this run's starting model (an earlier round) gives "up from 64%
  after Run 2".

No Qt, no torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from desktop_dpo.core.dpo.runs import run_label

if TYPE_CHECKING:
    from desktop_dpo.core.store import RunRow, Store

REFERENCE_LOSSES = frozenset({"sigmoid", "ipo", "kto"})  # losses whose rewards are β·log(π_θ / π_ref)
# Mean |log(π_θ / π_ref)| per held-out answer (nats) under which each word applies; above the last: "a lot".
MOVE_WORDS = ((0.25, "barely"), (1.5, "a little"), (4.0, "clearly"))


def heldout_agreement(run: RunRow) -> tuple[float, int] | None:
    """``(share, pairs)`` of the run's last held-out evaluation, or None when it had no held-out pairs."""
    metrics = run.final_metrics or {}
    share, pairs = metrics.get("heldout/rewards/accuracies"), int(metrics.get("heldout/pairs", 0) or 0)
    if share is None or pairs <= 0:
        return None
    return float(share), pairs


def _times(log_ratio: float) -> str:
    factor = math.exp(log_ratio)
    return f"{factor:.1f}×" if factor >= 0.95 else f"{factor:.2f}×"


def moved_sentence(run: RunRow) -> str | None:
    """How far the run moved the model from where it started, on the held-out answers; None when it cannot be
    said (no held-out evaluation, no reference model, no β)."""
    metrics = run.final_metrics or {}
    beta = run.config.get("beta")
    loss = run.config.get("loss_type", "sigmoid")
    chosen, rejected = metrics.get("heldout/rewards/chosen"), metrics.get("heldout/rewards/rejected")
    if loss not in REFERENCE_LOSSES or not beta or chosen is None or rejected is None:
        return None
    up, down = chosen / beta, rejected / beta
    moved = (abs(up) + abs(down)) / 2
    word = next((w for limit, w in MOVE_WORDS if moved < limit), "a lot")
    preferred = "preferred" if loss != "kto" else "marked good"
    turned_down = "turned down" if loss != "kto" else "marked bad"
    return (
        f"This run moved the model {word} from where it started: on prompts it never saw, "
        f"the answers you {preferred} became {_times(up)} as likely and the ones you {turned_down} {_times(down)}."
    )


def agreement_sentence(run: RunRow, previous: RunRow | None = None) -> str | None:
    """ "The new model agrees with your picks on 78% of prompts it never saw (…)", with the change since
    ``previous`` (the run before it, in rounds) when that one was measured too; None without held-out pairs."""
    from desktop_dpo.core.evaluate import wilson_interval

    measured = heldout_agreement(run)
    if measured is None:
        return None
    share, pairs = measured
    agreed = round(share * pairs)
    low, high = wilson_interval(agreed, pairs)
    text = (
        f"The new model agrees with your picks on {share:.0%} of prompts it never saw ({agreed} of "
        f"{pairs} held-out {'pair' if pairs == 1 else 'pairs'}; 95% interval {low * 100:.0f}–{high:.0%})"
    )
    before = heldout_agreement(previous) if previous is not None else None
    if previous is not None and before is not None:
        change = "up from" if round(share * 100) > round(before[0] * 100) else "down from"
        if round(share * 100) == round(before[0] * 100):
            change = "the same as"
        text += f", {change} {before[0]:.0%} after {run_label(previous.id, previous.name)}"
    return text + "."


def previous_round(store: Store, run: RunRow) -> RunRow | None:
    """The run that made ``run``'s starting model (the round before it), or None when it started from a model
    no run made."""
    base = store.get_model(run.base_model_id) if run.base_model_id is not None else None
    if base is None or base.run_id is None:
        return None
    return store.get_run(base.run_id)


def progress_text(store: Store, run: RunRow) -> str | None:
    """Both sentences for a completed run (None for a run that has not completed or was never measured)."""
    if run.status != "completed":
        return None
    parts = [moved_sentence(run), agreement_sentence(run, previous_round(store, run))]
    said = [p for p in parts if p]
    return " ".join(said) if said else None
