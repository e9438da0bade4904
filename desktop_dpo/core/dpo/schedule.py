"""The order a run sees its pairs in and its learning-rate schedule: pure functions of the settings.

Both are the same on every machine and after every resume (the order is seeded by the run's seed and
the epoch), which is what makes a resumed run end with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from desktop_dpo.core.dpo.config import TrainConfig


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded order of the training pairs in one epoch (the same on every machine and resume)."""
    order = list(range(n))
    random.Random(f"desktop-dpo-order:{seed}:{epoch}").shuffle(order)
    return order


def steps_remaining(n_train: int, config: TrainConfig, epoch: int, offset: int) -> int:
    """Optimizer steps left from ``offset`` pairs into ``epoch`` to the end of the run."""
    per_step = config.pairs_per_step
    if epoch >= config.epochs or n_train == 0:
        return 0
    this_epoch = math.ceil(max(0, n_train - offset) / per_step)
    return this_epoch + (config.epochs - epoch - 1) * math.ceil(n_train / per_step)


def plan_steps(
    n_train: int, config: TrainConfig, epoch: int, offset: int
) -> Iterator[tuple[int, int, list[int]]]:
    """``(epoch, offset after the step, pair indices)`` for every remaining optimizer step."""
    for e in range(epoch, config.epochs):
        order = epoch_order(n_train, config.seed, e)
        position = offset if e == epoch else 0
        while position < n_train:
            chunk = order[position : position + config.pairs_per_step]
            position += len(chunk)
            yield e, position, chunk


def lr_factor(step: int, total_steps: int, warmup_ratio: float, scheduler: str) -> float:
    """Multiplier of the peak learning rate for the step about to run (0-based): linear warm-up, then decay."""
    warmup = math.ceil(warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup)
    if scheduler == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
