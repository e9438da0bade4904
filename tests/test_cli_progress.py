"""What ``desktop-dpo train`` writes on the terminal while a run trains (``cli_progress.py``): a run with an SFT
start shows that phase's steps on a bar that says "SFT", then the preference phase's steps on one that does not."""

from __future__ import annotations

import io
import re

from desktop_dpo.cli_progress import DemoProgress, TrainProgress
from desktop_dpo.core.dpo.events import (
    Finished,
    Loading,
    SftEvalMetrics,
    SftStepMetrics,
    Started,
    StepMetrics,
)


def sft_step(step: int, loss: float) -> SftStepMetrics:
    return SftStepMetrics(
        step=step, total_steps=3, epoch=step / 3, loss=loss, lr=1e-4, grad_norm=1.0, tokens_per_s=100.0, eta_s=3 - step
    )  # fmt: skip


def preference_step(step: int) -> StepMetrics:
    return StepMetrics(
        step=step, total_steps=2, epoch=step / 2, loss=0.69 - 0.1 * step, rewards_chosen=0.1, rewards_rejected=-0.1,
        rewards_accuracies=0.75, rewards_margins=0.2, logps_chosen=-5.0, logps_rejected=-6.0, lr=1e-4, grad_norm=1.0,
        tokens_per_s=100.0, eta_s=2 - step,
    )  # fmt: skip


TWO_PHASE_RUN = [
    Loading("Reading the demonstrations"),
    SftEvalMetrics(step=0, loss=3.5, demonstrations=2, tokens=40),
    sft_step(1, 3.2),
    sft_step(2, 2.8),
    sft_step(3, 2.31),
    SftEvalMetrics(step=3, loss=2.9, demonstrations=2, tokens=40),
    Loading("Supervised start done; keeping its adapter"),
    Started(
        run_dir="/runs/run-0001",
        start_step=0,
        total_steps=2,
        train_pairs=6,
        heldout_pairs=2,
        device="cpu",
        quantization="none",
    ),
    preference_step(1),
    preference_step(2),
    Finished(adapter_path="/runs/run-0001/adapter"),
]


def screen(text: str) -> list[str]:
    """The lines a terminal ends up showing: a carriage return redraws its line."""
    return [
        line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n") if line.rsplit("\r", 1)[-1].strip()
    ]


def test_the_sft_phase_shows_its_own_steps_then_the_preference_phase_its_own():
    out = io.StringIO()
    progress = TrainProgress(out, width=10)
    for event in TWO_PHASE_RUN:
        progress(event)
    text = out.getvalue()
    # Each SFT step redraws the bar with its step of the phase's steps and its NLL.
    for step, loss in ((1, "3.2000"), (2, "2.8000"), (3, "2.3100")):
        assert f"SFT step {step}/3 · NLL {loss}" in text
    lines = screen(text)
    assert lines == [
        "Reading the demonstrations",
        "SFT held-out NLL before the first SFT step: 3.5000 (2 written answers to held-out prompts)",
        "[##########] SFT step 3/3 · NLL 2.3100 · ETA 0m00s",  # the phase's bar, left at its last step
        "SFT held-out NLL after SFT step 3: 2.9000 (2 written answers to held-out prompts)",
        "Supervised start done; keeping its adapter",
        "Training on cpu (none): 6 pairs, 2 held out, step 0 of 2",
        "[##########] step 2/2 loss 0.4900 acc 0.75 margin 0.200 ETA 0m00s",
        "Finished: adapter in /runs/run-0001/adapter",
    ]
    # The preference phase's bar never says SFT, nor counts the supervised steps.
    preference = text[text.index("Training on cpu") :]
    assert "SFT" not in preference and re.search(r"step 1/2 loss 0\.5900", preference)


def test_the_demo_shows_the_sft_phase_too():
    out = io.StringIO()
    progress = DemoProgress(out, width=10)
    for event in TWO_PHASE_RUN:
        progress(event)
    assert "SFT step 3/3 · NLL 2.3100" in out.getvalue()
    assert "SFT held-out NLL after SFT step 3: 2.9000" in out.getvalue()
