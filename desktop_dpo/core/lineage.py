"""Where a model came from: its base, then each round of alignment that produced it.

An aligned model is registered with ``parent_model_id`` (the model its run trained) and ``run_id`` (the
run). Following parents back gives the rounds of iterative DPO, oldest first::

    Gemma 3 270M (demo)  →  round 1: run 3, 79 pairs, β 0.1 …  →  round 2: run 5, 64 pairs …

Each step carries what a person needs to trust or retrace it: the run's data snapshot size, settings,
reference and final metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from desktop_dpo.core.store import Store

# Settings named in a step's one-line summary (the rest are in ``settings``).
_SUMMARY_SETTINGS = ("beta", "lr", "epochs", "lora_r", "loss_type")


@dataclass(frozen=True)
class LineageStep:
    """One model in a lineage, with the run that made it (None for the original base)."""

    model_id: int
    name: str
    source: str  # user | demo | aligned | imported ...
    run_id: int | None
    run_name: str | None = None
    pairs: int | None = None  # comparisons in the run's fixed data snapshot
    reference: str | None = None  # "adapter_off" or "model:<id>"
    settings: dict[str, Any] = field(default_factory=dict)
    final_metrics: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: the model, and for an aligned one how it was made."""
        if self.run_id is None:
            return f"{self.name} ({self.source})"
        bits = [f"run {self.run_id}" + (f" “{self.run_name}”" if self.run_name else "")]
        if self.pairs is not None:
            bits.append(f"{self.pairs} pairs")
        for key in _SUMMARY_SETTINGS:
            if key in self.settings:
                bits.append(f"{'β' if key == 'beta' else key.replace('_', ' ')} {self.settings[key]}")
        accuracy = self.final_metrics.get("rewards/accuracies")
        if accuracy is not None:
            bits.append(f"train accuracy {accuracy:.0%}")
        if self.reference and self.reference.startswith("model:"):
            bits.append(f"reference: model {self.reference.split(':', 1)[1]}")
        return f"{self.name}: " + ", ".join(bits)


def model_lineage(store: Store, model_id: int) -> list[LineageStep]:
    """The chain from the original base to ``model_id``, oldest first (empty if the model is unknown).

    Stops at a parent that is no longer registered, and never loops on a damaged chain.
    """
    chain: list[LineageStep] = []
    seen: set[int] = set()
    current = store.get_model(model_id)
    while current is not None and current.id not in seen:
        seen.add(current.id)
        run = store.get_run(current.run_id) if current.run_id is not None else None
        chain.append(
            LineageStep(
                model_id=current.id,
                name=current.name,
                source=current.source,
                run_id=run.id if run is not None else None,
                run_name=run.name if run is not None else None,
                pairs=len(run.comparison_ids) if run is not None else None,
                reference=run.reference if run is not None else None,
                settings=dict(run.config) if run is not None else {},
                final_metrics=dict(run.final_metrics) if run is not None else {},
            )
        )
        current = store.get_model(current.parent_model_id) if current.parent_model_id is not None else None
    chain.reverse()
    return chain


def round_number(store: Store, model_id: int) -> int:
    """How many rounds of alignment made this model (0 for a base model)."""
    return sum(1 for step in model_lineage(store, model_id) if step.run_id is not None)
