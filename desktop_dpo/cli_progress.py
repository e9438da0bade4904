"""What ``desktop-dpo`` shows on the terminal while a job runs: one renderer per kind of job.

Each renderer is an ``on_event`` for :func:`desktop_dpo.core.jobs.drive`: it gets every event the job
yields and writes to stderr (stdout keeps the results a script may read). Events it does not know are
ignored, so a recorded job's own events (``ExportRecorded``) pass silently.

- :class:`TrainProgress`: ``desktop-dpo train``: a one-line bar with loss, accuracy and ETA; setup stages,
  held-out evaluations, warnings and checkpoints as lines. A run with an SFT start shows that phase first, on a
  bar of its own that says so ("SFT step 3/10 · NLL 2.3100"), its held-out NLL as lines.
- :class:`StageProgress`: jobs that yield ``Progress`` and ``Log`` (``desktop-dpo export``).
- :class:`DemoProgress`: ``desktop-dpo demo``: a header per stage, a bar per stage, the two above inside.
"""

from __future__ import annotations

import sys
from typing import TextIO

BAR_WIDTH = 24  # characters of a progress bar
TEXT_WIDTH = 70  # characters of the message beside a bar (padded, so a shorter one overwrites a longer)


def format_seconds(seconds: float) -> str:
    """``4m05s``, or ``1h02m`` from an hour up (an ETA: seconds no longer matter there)."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _bar(done: float, total: float, width: int) -> str:
    filled = int(width * done / max(1, total))
    return f"[{'#' * filled}{'.' * (width - filled)}]"


class TrainProgress:
    """A one-line progress bar with ETA on stderr; setup stages, evaluations and warnings as lines."""

    def __init__(self, stream: TextIO | None = None, width: int = BAR_WIDTH):
        self.stream = stream or sys.stderr
        self.width = width
        self.bar_shown = False

    def _line(self, text: str) -> None:
        if self.bar_shown:
            self.stream.write("\n")
            self.bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: object) -> None:
        from desktop_dpo.core.dpo import events as t

        if isinstance(event, t.Loading):
            count = f" ({event.done}/{event.total})" if event.total else ""
            if not event.total or event.done in (0, event.total):
                self._line(f"{event.stage}{count}")
        elif isinstance(event, t.Started):
            self._line(
                f"Training on {event.device} ({event.quantization}): {event.train_pairs} pairs, "
                f"{event.heldout_pairs} held out, step {event.start_step} of {event.total_steps}"
            )
        elif isinstance(event, t.ReferenceReady):
            self._line(f"Reference log-probabilities: {event.cached} cached, {event.computed} computed")
        elif isinstance(event, t.StepMetrics):
            self.stream.write(
                f"\r{_bar(event.step, event.total_steps, self.width)} step {event.step}/{event.total_steps} "
                f"loss {event.loss:.4f} acc {event.rewards_accuracies:.2f} margin {event.rewards_margins:.3f} "
                f"ETA {format_seconds(event.eta_s)}  "
            )
            self.stream.flush()
            self.bar_shown = True
        elif isinstance(event, t.SftStepMetrics):  # the SFT start, before the preference phase
            self.stream.write(
                f"\r{_bar(event.step, event.total_steps, self.width)} SFT step {event.step}/{event.total_steps} "
                f"· NLL {event.loss:.4f} · ETA {format_seconds(event.eta_s)}  "
            )
            self.stream.flush()
            self.bar_shown = True
        elif isinstance(event, t.SftEvalMetrics):
            when = f"after SFT step {event.step}" if event.step else "before the first SFT step"
            self._line(
                f"SFT held-out NLL {when}: {event.loss:.4f} ({event.demonstrations} written answers to held-out "
                "prompts)"
            )
        elif isinstance(event, t.EvalMetrics):
            self._line(
                f"held-out after step {event.step}: accuracy {event.accuracy:.2f}, margin {event.margins:.3f}, "
                f"loss {event.loss:.4f} ({event.pairs} pairs)"
            )
        elif isinstance(event, t.TrainWarning):
            self._line(f"warning: {event.message}")
        elif isinstance(event, t.Checkpointed):
            self._line(f"checkpoint at step {event.step}: {event.path}")
        elif isinstance(event, t.Finished):
            self._line(f"Finished: adapter in {event.adapter_path}")


class StageProgress:
    """Progress lines for jobs that yield ``Progress`` and ``Log`` events (export, conversion)."""

    def __init__(self, stream: TextIO | None = None, width: int = BAR_WIDTH):
        self.stream = stream or sys.stderr
        self.width = width
        self.message = ""

    def __call__(self, event: object) -> None:
        from desktop_dpo.core.jobs import Log, Progress

        if isinstance(event, Log):
            self.stream.write(("\n" if self.message else "") + event.message + "\n")
            self.message = ""
        elif isinstance(event, Progress):
            bar = ""
            if event.fraction is not None:
                bar = _bar(event.fraction, 1, self.width) + " "
            self.stream.write(f"\r{bar}{event.message[:TEXT_WIDTH]:<{TEXT_WIDTH}}")
            self.message = event.message
        self.stream.flush()


class DemoProgress:
    """Stage headers, a bar per stage and the training progress of ``desktop-dpo train``."""

    def __init__(self, stream: TextIO | None = None, width: int = BAR_WIDTH):
        self.stream = stream or sys.stderr
        self.width = width
        self.train = TrainProgress(self.stream, width)
        self.stages = StageProgress(self.stream, width)
        self.stage = ""
        self.votes: dict[str, int] = {}
        self.votes_total = 0

    def _bar(self, done: int, total: int, text: str) -> None:
        self.stream.write(f"\r{_bar(done, total, self.width)} {text[:TEXT_WIDTH]:<{TEXT_WIDTH}}")
        self.stream.flush()

    def __call__(self, event: object) -> None:
        from desktop_dpo.core.demo_loop import DemoStage, PairPicked
        from desktop_dpo.core.dpo import events as t
        from desktop_dpo.core.evaluate import EvaluationVoted
        from desktop_dpo.core.jobs import Log, Progress

        if isinstance(event, DemoStage):
            self.stage = event.stage
            self.stream.write(f"\n== {event.number}/{event.total} {event.title}\n")
            self.stages.message = ""
            self.train.bar_shown = False
        elif isinstance(event, PairPicked):
            self._bar(
                event.done, event.total, f"{event.done}/{event.total} prompts, {event.kept_so_far} pairs kept"
            )
        elif isinstance(event, EvaluationVoted):
            self.votes[event.vote] = self.votes.get(event.vote, 0) + 1
            tally = ", ".join(f"{vote} {count}" for vote, count in sorted(self.votes.items()))
            self._bar(sum(self.votes.values()), self.votes_total, tally)
        elif isinstance(event, Progress) and self.stage in ("pairs", "evaluate"):
            self.votes_total = int(event.total)  # the bars above say more than "prompt i of n"
        elif isinstance(event, (Progress, Log)):
            self.stages(event)
        elif isinstance(event, (t.Loading, t.Started, t.ReferenceReady, t.StepMetrics, t.EvalMetrics,
                                t.SftStepMetrics, t.SftEvalMetrics, t.TrainWarning, t.Checkpointed,
                                t.Finished)):  # fmt: skip
            self.train(event)
