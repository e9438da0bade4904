"""The Train view's run on screen: a headline, Stop, a line of detail, a progress bar and the curves.

:class:`LiveRunPanel` shows what the training job reports (:mod:`desktop_dpo.core.dpo.events`): the setup
stage and how far it got, then each step with its ETA, speed, loss and accuracy, and the points the plots
add. The view decides the rest, which it knows and the panel does not: what the run is doing (so the
headline while it loads, trains or stops), and whether the plots show the live run or a past one selected in
the list (:class:`~desktop_dpo.gui.metrics_plots.MetricsPlots` shows either).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QProgressBar, QVBoxLayout, QWidget

from desktop_dpo.core.dpo import events
from desktop_dpo.core.dpo.pair_counts import split_text
from desktop_dpo.gui.metrics_plots import MetricsPlots
from desktop_dpo.gui.widgets import button, styled_label

LOADING_HEADLINE = "Loading torch and the model…"
STEP_FORMAT = "step %v of %m"


def format_duration(seconds: float) -> str:
    """``1h05m``, ``3m07s`` or ``42s``: an ETA a person reads at a glance."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def describe_start(event: events.Started) -> str:
    """Where a run trains and on how many pairs, as it starts."""
    precision = "4-bit NF4" if event.quantization == "nf4" else "full precision"
    resumed = f", resumed at step {event.start_step}" if event.start_step else ""
    return f"On {event.device} ({precision}), {split_text(event.train_pairs, event.heldout_pairs)}{resumed}."


def describe_step(event: events.StepMetrics) -> str:
    """A step as it ends: how far, how long to go, how fast, and how well."""
    return (
        f"Step {event.step} of {event.total_steps} · ETA {format_duration(event.eta_s)} · "
        f"{event.tokens_per_s:,.0f} tokens/s · loss {event.loss:.3f} · "
        f"accuracy {event.rewards_accuracies:.2f}"
    )


class LiveRunPanel(QFrame):
    """The top right card of the Train view: the run training (or the last one), and the curves on screen.

    Args:
        stop: called when Stop is pressed.
    """

    def __init__(self, stop: Callable[[], object], parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 14, 16, 12)
        layout.setSpacing(6)
        self.headline = styled_label("", "runHeadline", wrap=True)
        self.stop_button = button(
            "Stop", stop, tooltip="Stop at the end of the current step; it is saved and can be resumed"
        )
        top = QHBoxLayout()
        top.addWidget(self.headline, 1)
        top.addWidget(self.stop_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(top)
        self.detail = styled_label("", "runDetail", wrap=True)
        layout.addWidget(self.detail)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainProgress")
        self.progress.setTextVisible(True)
        self.progress.setFormat(STEP_FORMAT)
        self.progress.setMaximumHeight(16)
        layout.addWidget(self.progress)
        self.plots = MetricsPlots()
        layout.addWidget(self.plots, 1)

    # ---------------------------------------------------------------- what the run is doing

    def show_idle(self) -> None:
        """No run has trained since the view was made: no progress bar (there is no step to count yet)."""
        self.headline.setText("No run training")
        self.detail.setText("Choose a base model and settings, then press Start training.")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setVisible(False)

    def show_loading(self, run_name: str) -> None:
        """Run ``run_name`` was started and gets ready to train (the bar is busy until it knows its steps)."""
        self.headline.setText(LOADING_HEADLINE)
        self.detail.setText(f"{run_name}: getting ready to train.")
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)

    def show_stopping(self) -> None:
        """Stop was pressed: the run stops at the end of its step."""
        self.headline.setText("Stopping at the end of this step…")

    def show_event(self, event: object, *, plot: bool) -> None:
        """Show what an event of the training job says; ``plot``: the plots show this run, so its points go on
        them. The headline is the view's to set."""
        if isinstance(event, events.Loading):
            count = f" ({event.done} of {event.total})" if event.total else ""
            self.detail.setText(f"{event.stage}{count}…")
            if event.total:
                self._set_progress(event.done, event.total, "%v of %m")
        elif isinstance(event, events.ReferenceReady):
            self.detail.setText(
                f"Reference scores ready: {event.cached} from the cache, {event.computed} computed."
            )
        elif isinstance(event, events.Started):
            self._set_progress(event.start_step, event.total_steps)
            self.detail.setText(describe_start(event))
        elif isinstance(event, events.StepMetrics):
            self._set_progress(event.step, event.total_steps)
            self.detail.setText(describe_step(event))
            if plot:
                self.plots.add_train_point(event.step, event.as_metrics())
        elif isinstance(event, events.SftStepMetrics):  # the SFT start, before the preference steps
            self._set_progress(event.step, event.total_steps, "Learning your written answers: %v of %m")
            self.detail.setText(f"Learning your written answers: step {event.step} of {event.total_steps}, "
                                f"loss {event.loss:.3f}.")  # fmt: skip
            if plot:
                self.plots.add_sft_point(event.step, event.total_steps, event.as_metrics())
        elif isinstance(event, events.SftEvalMetrics):  # the SFT start on held-out prompts' written answers
            if plot:
                self.plots.add_sft_heldout_points([(event.step, event.as_metrics())])
        elif isinstance(event, events.EvalMetrics):
            if plot:
                self.plots.add_heldout_point(event.step, event.as_metrics())
        elif isinstance(event, events.Finished):
            self.progress.setValue(self.progress.maximum())

    def _set_progress(self, value: int, maximum: int, text: str = STEP_FORMAT) -> None:
        self.progress.setRange(0, maximum)
        self.progress.setFormat(text)
        self.progress.setValue(value)

    # ---------------------------------------------------------------- how it ended

    def show_finished(self, run_name: str, final: str, adapter: str) -> None:
        """The run completed: its ``final`` metrics in a line, and where its adapter is (on hover)."""
        self.headline.setText(f"Finished {run_name}".strip())
        self.detail.setText((f"{final}. " if final else "") + "The adapter is saved: export it in Export.")
        self.detail.setToolTip(f"Adapter: {adapter}" if adapter else "")
        self.progress.setValue(self.progress.maximum())

    def show_failed(self) -> None:
        """The run stopped on a problem (the view's banner says which)."""
        self.headline.setText("Training stopped on a problem")
        self.detail.setText("Finished steps are saved: fix the cause, then resume the run from the list.")
        self._stop_progress()

    def show_stopped(self, step: int) -> None:
        """The run stopped as asked, at ``step``."""
        self.headline.setText(f"Stopped at step {step}")
        self.detail.setText("Saved. Select the run below and press Resume to continue from there.")
        self._stop_progress()

    def _stop_progress(self) -> None:
        # A bar still busy (the run ended while loading) stops moving.
        self.progress.setRange(0, max(1, self.progress.maximum()))
