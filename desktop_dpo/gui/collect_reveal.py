"""A re-asked pair written out as a new pair is: the stored answers appear token by token, not at once.

A repeat (:mod:`desktop_dpo.gui.collect_reask`) must look like any new pair, or the person knows it is one and
answers from memory. New answers stream from the model: both panes say "Waiting…", then "Writing… N tokens"
as the text grows, and the verdict buttons come on once both are finished. A repeat's answers are already
stored, so :class:`Reveal` plays them back on a timer, as the events a sampling job sends
(:class:`~desktop_dpo.core.llm.generation.TokenEvent`, then
:class:`~desktop_dpo.core.llm.generation.ResponseFinished` for each answer), which the view handles with the
code that shows a generated pair. Both answers grow together, as a pair decoded together does. With
``rounds`` (Collect's pair selection writes 4 answers, two pairs one after the other) the stored pair is played
``rounds`` times in a row, answer ``seq`` ``2·round + i``, taking as long as those pairs would to write.

The pace (:class:`Pace`) is the one the person last saw: the decoding speed and the time to the first token
of the last pair sampled in the view; before any, :data:`DEFAULT_TOKENS_PER_S`. An answer's length in tokens
is the one stored with it (about 4 characters a token when unknown), so it takes as long as it would to write.

Timer-driven: the GUI thread never waits. Stop ends it as Stop ends a generation (the text so far stays on
screen, and cannot be judged).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent

DEFAULT_TOKENS_PER_S = 20.0  # a small model on a laptop CPU
DEFAULT_FIRST_TOKEN_S = 0.4  # reading the prompt before the first token
TOKENS_PER_S_RANGE = (4.0, 200.0)  # a measured pace outside this is a fluke (a one-token answer)
FIRST_TOKEN_S_RANGE = (0.1, 3.0)
CHARS_PER_TOKEN = 4  # when an answer's token count is unknown (an imported pair)
TICK_MS = 40  # how often the text grows: ~25 times a second, as tokens arrive


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


@dataclasses.dataclass
class Pace:
    """How fast answers were last written in the view."""

    tokens_per_s: float = DEFAULT_TOKENS_PER_S
    first_token_s: float = DEFAULT_FIRST_TOKEN_S

    def observe(self, result: GenerationResult) -> None:
        """Learn the pace from an answer just sampled (a stopped or empty one says little, and is ignored)."""
        if result.finish_reason == "cancelled" or result.completion_tokens < 2:
            return
        if result.tokens_per_second > 0:
            self.tokens_per_s = _clamp(result.tokens_per_second, TOKENS_PER_S_RANGE)
        if result.prompt_seconds > 0:
            self.first_token_s = _clamp(result.prompt_seconds, FIRST_TOKEN_S_RANGE)


def token_count(result: GenerationResult) -> int:
    """An answer's length in tokens: as stored, else estimated from its characters."""
    if result.completion_tokens > 0:
        return result.completion_tokens
    return max(1, round(len(result.text) / CHARS_PER_TOKEN)) if result.text else 0


class Reveal(QObject):
    """Plays stored answers back as a sampling job's events, at a :class:`Pace`.

    Signals:
        event(object): a ``TokenEvent`` or ``ResponseFinished``, as a sampling job sends them.
        finished(): both answers are out (sent after their ``ResponseFinished``; :attr:`active` is False).
        stopped(): :meth:`stop` ended it early.
    """

    event = Signal(object)
    finished = Signal()
    stopped = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.pace = Pace()
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)
        self._results: list[GenerationResult] = []
        self._shown: list[int] = []  # characters of each answer sent so far
        self._done: list[bool] = []
        self._started = 0.0
        self._starts: list[float] = []  # when each answer's pair starts, seconds after start()
        self._pace = Pace()  # the pace of the answers being revealed, fixed when they start

    @property
    def active(self) -> bool:
        """Answers are being revealed."""
        return self._timer.isActive()

    def start(self, results: Sequence[GenerationResult], rounds: int = 1) -> None:
        """Reveal ``results`` (generation A, then B) from nothing, at the current :attr:`pace`; ``rounds``
        times, one after the other (a round ends when its longest answer is out)."""
        self._pace = dataclasses.replace(self.pace)
        self._results = list(results) * rounds
        lasting = (
            self._pace.first_token_s
            + max((token_count(r) for r in results), default=0) / self._pace.tokens_per_s
        )
        self._starts = [lasting * (seq // max(1, len(results))) for seq in range(len(self._results))]
        self._shown = [0] * len(self._results)
        self._done = [False] * len(self._results)
        self._started = time.monotonic()
        self._timer.start()

    def stop(self) -> None:
        """End it now: what is out stays out, nothing more comes (:attr:`stopped` follows)."""
        if self.active:
            self._timer.stop()
            self.stopped.emit()

    @Slot()
    def _tick(self) -> None:
        elapsed = time.monotonic() - self._started - self._pace.first_token_s
        for seq, result in enumerate(self._results):
            writing = elapsed - self._starts[seq]
            if self._done[seq] or writing < 0:
                continue
            tokens = token_count(result)
            share = min(1.0, writing * self._pace.tokens_per_s / tokens) if tokens else 1.0
            cut = round(share * len(result.text))
            if cut > self._shown[seq]:
                text, self._shown[seq] = result.text[self._shown[seq] : cut], cut
                self.event.emit(TokenEvent(seq, text, max(1, round(share * tokens))))
            if share >= 1.0:
                self._done[seq] = True
                seconds = self._pace.first_token_s + tokens / self._pace.tokens_per_s
                finished = dataclasses.replace(
                    result, seconds=seconds, prompt_seconds=self._pace.first_token_s
                )
                self.event.emit(ResponseFinished(seq, finished))
            if not self.active:
                return  # a slot stopped it
        if all(self._done):
            self._timer.stop()
            self.finished.emit()
