"""What the training job yields: plain frozen dataclasses, safe to send through a Qt signal or a pipe.

In the order a run sees them: :class:`Loading` (setup), :class:`Started`, :class:`ReferenceReady`, then per
optimizer step :class:`StepMetrics`, now and then :class:`EvalMetrics` (held-out pairs), :class:`TrainWarning`
and :class:`Checkpointed`, and last :class:`Finished`. :class:`TrainingWatch` turns the step metrics into
the warnings about known failure shapes. The driver records them (``train.persist_event``). A run with an
SFT start yields its steps first, between setup and :class:`Started`: :class:`SftStepMetrics` per step,
now and then :class:`SftEvalMetrics` (the held-out prompts' demonstrations).

Light on purpose: the GUI imports it at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from desktop_dpo.core.dpo.config import TrainConfig


@dataclass(frozen=True)
class Loading:
    """Setup is under way: ``stage`` says what, ``done`` of ``total`` where countable."""

    stage: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class Started:
    """Setup finished; training starts (or resumes) at ``start_step`` of ``total_steps``."""

    run_dir: str  # the run's folder (checkpoints, adapter)
    start_step: int
    total_steps: int
    train_pairs: int
    heldout_pairs: int
    device: str  # e.g. "cpu", "cuda"
    quantization: str  # "nf4" or "none" (resolved from "auto")


@dataclass(frozen=True)
class ReferenceReady:
    """Reference log-probabilities are known for every pair: ``cached`` read, ``computed`` now."""

    cached: int
    computed: int
    seconds: float  # spent computing (and caching) the missing ones, model loading excluded


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step, with TRL's metric names in :meth:`as_metrics`."""

    step: int  # optimizer steps done, 1-based
    total_steps: int
    epoch: float  # fractional epochs done
    loss: float
    rewards_chosen: float  # mean β·log-ratio of the chosen responses
    rewards_rejected: float
    rewards_accuracies: float  # share of pairs with chosen reward > rejected reward
    rewards_margins: float  # mean chosen − rejected reward
    logps_chosen: float  # mean policy log-probability of the chosen responses
    logps_rejected: float
    lr: float  # learning rate used for this step
    grad_norm: float  # total gradient norm before clipping
    tokens_per_s: float  # non-padding tokens through the model per second of this step
    eta_s: float  # estimated seconds to the end of the run
    kl: float | None = None  # KTO: the KL reference point z0 (≥ 0, TRL's "kl"); None for the other losses

    def as_metrics(self) -> dict[str, float]:
        """TRL-named dict for the run history and the plots (``kl`` only for a KTO run)."""
        metrics = {
            "epoch": self.epoch,
            "loss": self.loss,
            "rewards/chosen": self.rewards_chosen,
            "rewards/rejected": self.rewards_rejected,
            "rewards/accuracies": self.rewards_accuracies,
            "rewards/margins": self.rewards_margins,
            "logps/chosen": self.logps_chosen,
            "logps/rejected": self.logps_rejected,
            "learning_rate": self.lr,
            "grad_norm": self.grad_norm,
            "tokens_per_s": self.tokens_per_s,
            "eta_s": self.eta_s,
        }
        if self.kl is not None:
            metrics["kl"] = self.kl
        return metrics


@dataclass(frozen=True)
class SftStepMetrics:
    """One optimizer step of a run's supervised phase (``sft_phase.py``), before the preference steps.

    Stored under the metrics split ``"sft"`` with its own step numbers (1 to ``total_steps``), so the
    preference phase's steps keep theirs; :meth:`as_metrics` says the phase too.
    """

    step: int  # supervised steps done, 1-based
    total_steps: int  # supervised steps of the run
    epoch: float  # fractional passes over the demonstrations
    loss: float  # mean token NLL of the step's demonstrations (TRL's SFTTrainer loss)
    lr: float
    grad_norm: float
    tokens_per_s: float
    eta_s: float  # estimated seconds to the end of the supervised phase

    def as_metrics(self) -> dict[str, float | str]:
        """TRL-named dict for the run history and the plots, with ``phase`` = ``"sft"``."""
        return {
            "phase": "sft",
            "epoch": self.epoch,
            "loss": self.loss,
            "learning_rate": self.lr,
            "grad_norm": self.grad_norm,
            "tokens_per_s": self.tokens_per_s,
            "eta_s": self.eta_s,
        }


@dataclass(frozen=True)
class SftEvalMetrics:
    """The supervised phase's model on the held-out prompts' demonstrations after ``step`` supervised steps.

    The same measure as :class:`SftStepMetrics`' loss (``sft_phase.sft_nll``: Σ answer-token NLL ÷ answer
    tokens), on demonstrations the phase never trains on: at step 0, every ``eval_every`` steps and at the end.
    Stored under the metrics split ``"sft_heldout"`` (step 0 included, as the held-out pairs' ``"heldout"``).
    """

    step: int  # supervised steps done (0: before the first)
    loss: float  # mean token NLL of the held-out demonstrations' answers
    demonstrations: int
    tokens: int  # answer tokens scored

    def as_metrics(self) -> dict[str, float | str]:
        """The run history's row, with ``phase`` = ``"sft"``."""
        return {
            "phase": "sft",
            "loss": self.loss,
            "demonstrations": float(self.demonstrations),
            "tokens": float(self.tokens),
        }


@dataclass(frozen=True)
class EvalMetrics:
    """The policy on the held-out pairs (prompts never trained on) after ``step`` steps."""

    step: int
    loss: float
    accuracy: float  # share of held-out pairs whose chosen response now gets the higher reward
    margins: float  # mean chosen − rejected reward
    rewards_chosen: float
    rewards_rejected: float
    pairs: int

    def as_metrics(self) -> dict[str, float]:
        """TRL-named dict (``eval_`` names without the prefix; the split says held-out)."""
        return {
            "loss": self.loss,
            "rewards/accuracies": self.accuracy,
            "rewards/margins": self.margins,
            "rewards/chosen": self.rewards_chosen,
            "rewards/rejected": self.rewards_rejected,
            "pairs": float(self.pairs),
        }


@dataclass(frozen=True)
class TrainWarning:
    """A known failure shape, in words a person can act on. ``kind`` names it for the GUI."""

    message: str
    kind: str = "general"  # accuracy_stuck | chosen_falling | margins_exploding | not_finite | truncated
    step: int = 0


@dataclass(frozen=True)
class Checkpointed:
    """A checkpoint of ``step`` was written (atomically) to ``path``."""

    step: int
    path: str


@dataclass(frozen=True)
class Finished:
    """The run is complete: the adapter to export and the final metrics."""

    adapter_path: str
    metrics: dict[str, float] = field(default_factory=dict)
    step: int = 0


# --------------------------------------------------------------------------------------------------
# Known failure shapes
# --------------------------------------------------------------------------------------------------


class TrainingWatch:
    """Turns the stream of step metrics into warnings about known failure shapes, each once per run.

    - accuracy stuck at chance: the model does not tell chosen from rejected;
    - chosen rewards falling together with rejected ones: "likelihood displacement", the policy
      makes everything less likely, which tends to degrade its writing;
    - margins exploding: the policy has run far from the reference (memorising the pairs);
    - a non-finite loss or gradient (the step is skipped).
    """

    def __init__(self, total_steps: int, window: int = 10, state: dict[str, Any] | None = None):
        self.total_steps = total_steps
        self.window = window
        state = state or {}
        self.history: list[tuple[float, float, float, float]] = [tuple(x) for x in state.get("history", [])]
        self.fired: set[str] = set(state.get("fired", []))

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run does not repeat a warning."""
        return {"history": [list(x) for x in self.history[-self.window :]], "fired": sorted(self.fired)}

    def _fire(self, kind: str, message: str, step: int) -> list[TrainWarning]:
        if kind in self.fired:
            return []
        self.fired.add(kind)
        return [TrainWarning(message=message, kind=kind, step=step)]

    def observe(self, metrics: StepMetrics, config: TrainConfig) -> list[TrainWarning]:
        """Warnings raised by this step (usually none)."""
        if not (math.isfinite(metrics.loss) and math.isfinite(metrics.grad_norm)):
            return self._fire(
                "not_finite",
                f"Step {metrics.step} produced a loss or gradient that is not a number, so it was skipped. "
                f"If this repeats, lower the learning rate (now {config.lr:g}).",
                metrics.step,
            )
        self.history.append(
            (
                metrics.rewards_accuracies,
                metrics.rewards_chosen,
                metrics.rewards_rejected,
                metrics.rewards_margins,
            )
        )
        del self.history[: -self.window * 2]
        if len(self.history) < self.window:
            return []
        recent = self.history[-self.window :]
        accuracy = sum(r[0] for r in recent) / len(recent)
        chosen = sum(r[1] for r in recent) / len(recent)
        rejected = sum(r[2] for r in recent) / len(recent)
        margin = sum(r[3] for r in recent) / len(recent)
        warnings: list[TrainWarning] = []
        stuck_after = max(self.window * 2, self.total_steps // 4)
        if metrics.step >= stuck_after and 0.4 <= accuracy <= 0.6:
            warnings += self._fire(
                "accuracy_stuck",
                f"After {metrics.step} steps the model still prefers the chosen response only {accuracy:.0%} of "
                "the time — no better than a coin toss. Try a higher learning rate "
                f"(now {config.lr:g}) or more epochs, and check that your pairs differ clearly: near-identical "
                "responses teach nothing.",
                metrics.step,
            )
        if chosen < -0.5 and rejected < chosen:
            warnings += self._fire(
                "chosen_falling",
                f"Your chosen responses are becoming less likely too (reward {chosen:.2f}), not only the rejected "
                f"ones ({rejected:.2f}): the model is learning to make everything less likely, which often makes "
                f"its writing worse. Lower the learning rate (now {config.lr:g}), raise beta (now {config.beta:g}) "
                "or train fewer epochs.",
                metrics.step,
            )
        if margin > 10.0:
            warnings += self._fire(
                "margins_exploding",
                f"The reward margin has grown very large ({margin:.1f}): the model has moved far from where it "
                "started and is probably memorising these pairs rather than learning your taste. Lower the "
                f"learning rate (now {config.lr:g}), raise beta (now {config.beta:g}) or train fewer epochs.",
                metrics.step,
            )
        return warnings
