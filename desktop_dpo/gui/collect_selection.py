"""Collect shows the most informative pair: 4 answers written, the two a pick teaches the most from shown.

A person makes one pick per pair, and many random pairs teach little (issue 17). With the setting "Show the
most informative pair" on (the default; :data:`OPTION_KEY` in the window's settings file), Collect's job
writes :data:`CANDIDATES` answers (``sampling.sample_answers``: two pairs decoded together, one after the
other), then, still in the worker thread, picks two of them with :func:`~desktop_dpo.core.pair_selection.
choose_pair`, the rule the headless loop uses (``person_loop.show_pair``):

- after a training run of the model (``implicit_reward.latest_scoring_run``): the pair whose implicit-reward
  margin under that run's adapter is largest, the two the run is surest which is better (the person's pick
  confirms it, or corrects it where it is most wrong: the rule that beat random pairs in
  ``bench/efficacy.py --workflow person``, see docs/ARCHITECTURE.md). The pick records how its pair was
  chosen (``comparisons.chosen_by``);
- before the first run there is nothing to choose by, and after a run that learnt mostly from chosen pairs
  the rounds alternate (``pair_selection.keeps_choosing``): :meth:`PairSelection.applies` says no, two
  answers are written as they come (as with the setting off), and gives the line that says why;
- the run cannot be loaded (its adapter deleted, out of memory) or a run is training (its memory is
  training's): the first two of the answers, and the line says why. Collecting never waits on the run.

The person sees the two as any pair (sides random, verdict buttons once they are there); while the answers
are written both panes say how far it got, and a muted line between the answers and the verdicts says why
this pair (:attr:`ShownPair.why`). Off: two answers streamed as they are written, no line (Collect as before).

The run's model (torch, its base with the adapter) takes seconds to load and memory to hold, so it is loaded
in the worker the first time it is needed and kept (:class:`ScorerCache`) for the next pairs, until the Train
view starts a run, the Collect model changes or the app quits (then closed; while a pair is being scored,
once it is done).

A repeat (``collect_reask.py``) must look the same: its stored answers are played back as the
:data:`CANDIDATES` answers would be written (``Reveal.start(..., rounds=2)``), then a job compares the two
with the same run (loading it the same way) and words the line as for a chosen pair of :data:`CANDIDATES`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from PySide6.QtCore import QCoreApplication, QObject, Slot
from PySide6.QtWidgets import QCheckBox, QSizePolicy

from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.jobs import CancelToken
from desktop_dpo.core.llm.generation import GenerationResult, ResponseFinished, TokenEvent
from desktop_dpo.core.pair_selection import choose_pair, keeps_choosing, reason_for
from desktop_dpo.core.wording import plural
from desktop_dpo.gui.widgets import styled_label
from desktop_dpo.workers.job_op import JobOp

if TYPE_CHECKING:
    from desktop_dpo.config import SamplingSettings
    from desktop_dpo.core.store import ModelRow, Store
    from desktop_dpo.gui.collect_pair import ShownPair
    from desktop_dpo.gui.collect_view import CollectView

log = logging.getLogger(__name__)

CANDIDATES = 4  # answers written per pair shown
OPTION_KEY = "collect/most_informative_pair"
OPTION_TEXT = "Show the most informative pair"
OPTION_TIP = (
    "After a training run, writes 4 answers and shows the two that run is surest about: your pick confirms it "
    "or corrects it where it is most wrong. Before the first run, after a run that learnt from such chosen "
    "pairs (so the rounds alternate), and off: 2 answers, shown as they are written."
)
TRAIN_RESOURCE = "train"  # training_worker.TRAIN_RESOURCE (not imported: Collect is on the first screen)
WRITING = f"Writing {CANDIDATES} answers to find the pair that teaches the most…"


# ---------------------------------------------------------------------------------------------------------
# The jobs (worker thread; no widgets)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choosing:
    """The answers are written; the job is comparing them (``message`` says with what)."""

    message: str


@dataclass(frozen=True)
class Chosen:
    """What a selection job returns: the two answers to show (A, B; none for a repeat, whose are stored), why
    (the line), and what went wrong with the run, if anything (for the line's tooltip)."""

    results: tuple[GenerationResult, ...]
    reason: str
    problem: str = ""
    chosen_by: str | None = None  # PairChoice.chosen_by of the pair shown; None when it fell back


def load_scorer(store: Store, run_id: int) -> Any:
    """Run ``run_id``'s adapter on its base, ready to score answers (slow: torch loads the model)."""
    from desktop_dpo.core.dpo.implicit_reward import ImplicitRewardScorer

    return ImplicitRewardScorer.for_run(store, run_id)


class ScorerCache:
    """The last run's scorer, kept between pairs (one at a time). Used in the worker (:meth:`use`); closed
    from the GUI thread (:meth:`close`), which never waits: a scorer in use is closed once its job is done."""

    def __init__(self, load: Callable[[Store, int], Any] | None = None):
        self.load = load or (lambda store, run_id: load_scorer(store, run_id))
        self.training = False  # a run trains: no scorer is loaded (the GUI thread sets it)
        self._lock = threading.Lock()
        self._scorer: Any = None
        self._run_id: int | None = None
        self._in_use = False
        self._close_after_use = False

    def holds(self, run_id: int) -> bool:
        """Run ``run_id``'s scorer is loaded."""
        with self._lock:
            return self._scorer is not None and self._run_id == run_id

    @contextlib.contextmanager
    def use(self, store: Store, run_id: int) -> Iterator[Any]:
        """Run ``run_id``'s scorer, loaded here (worker thread) unless kept; raises what loading raises."""
        with self._lock:
            stale = self._take() if self._run_id != run_id else None
            scorer, self._in_use, self._close_after_use = self._scorer, True, False
        try:
            if stale is not None:
                stale.close()
            if scorer is None:
                scorer = self.load(store, run_id)
                with self._lock:
                    self._scorer, self._run_id = scorer, run_id
            yield scorer
        finally:
            with self._lock:
                self._in_use = False
                done = self._take() if self._close_after_use else None
            if done is not None:
                done.close()

    def close(self) -> None:
        """Free the scorer's memory now, or once the job using it is done."""
        with self._lock:
            if self._in_use:
                self._close_after_use = True
                return
            scorer = self._take()
        if scorer is not None:
            scorer.close()

    def _take(self) -> Any:
        scorer, self._scorer, self._run_id = self._scorer, None, None
        return scorer


class Picked(NamedTuple):
    """What :func:`choose` decided: the two answers to show (indices), the line, what went wrong with the
    run if anything, and how the two were chosen (``PairChoice.chosen_by``; None when it fell back)."""

    first: int
    second: int
    reason: str
    problem: str = ""
    chosen_by: str | None = None


def _fell_back(reason: str, problem: str = "") -> Picked:
    """The first two answers, as they came (a repeat's two as they are), with ``reason``."""
    return Picked(0, 1, reason, problem)


def _scored(texts: Sequence[str], rewards: Sequence[float], considered: int, label: str) -> Picked:
    if len(texts) == considered:
        choice = choose_pair(texts, rewards, label)
        return Picked(choice.first, choice.second, choice.reason, chosen_by=choice.chosen_by)
    # A repeat's two answers: the line a chosen pair of `considered` would have, with their own gap.
    return Picked(0, 1, reason_for("surest", considered, abs(rewards[0] - rewards[1]), label))


def choose(
    store: Store,
    cache: ScorerCache,
    model_id: int,
    messages: list[dict[str, str]],
    texts: Sequence[str],
    cancel: CancelToken,
    considered: int = CANDIDATES,
) -> Generator[Any, None, Picked]:
    """Which two of ``texts`` to show, and why (a job step).

    ``texts``: the ``considered`` answers written, or a repeat's two (shown as they are, with the line a
    pair chosen from ``considered`` would have). Yields :class:`Choosing` while the run loads and compares.
    """
    from desktop_dpo.core.dpo.implicit_reward import latest_scoring_run
    from desktop_dpo.core.dpo.runs import run_label

    run_id = latest_scoring_run(store, model_id)
    run = store.get_run(run_id) if run_id is not None else None
    if run is None:  # deleted since the pair started
        return _fell_back(reason_for("as_they_come", considered))
    label = run_label(run.id, run.name)
    unchosen = f"so these are two of the {considered} answers as they came."
    if cache.training:
        return _fell_back(f"{label} is not loaded while a run trains, {unchosen}")
    if not cache.holds(run.id):
        yield Choosing(f"Loading {label} to compare the answers…")
    failed = f"{label} could not be loaded to compare the answers"
    try:
        with cache.use(store, run.id) as scorer:
            cancel.raise_if_cancelled()
            failed = f"{label} could not compare the answers"
            yield Choosing(f"Comparing the answers with {label}…")
            rewards = scorer.rewards(messages, list(texts))
    except JobCancelled:
        raise
    except Exception as exc:  # a deleted adapter, no memory left, a broken model: collect on without it
        log.warning("%s: %s", failed, exc, exc_info=not isinstance(exc, (OSError, MemoryError)))
        from desktop_dpo.workers.job_worker import describe_error

        return _fell_back(f"{failed}, {unchosen}", describe_error(exc))
    cancel.raise_if_cancelled()
    return _scored(texts, rewards, considered, label)


def informative_pair(
    store: Store,
    cancel: CancelToken,
    *,
    pool: Any,
    model: ModelRow,
    paths: Any,
    messages: list[dict[str, str]],
    settings: SamplingSettings,
    cache: ScorerCache,
) -> Generator[Any, None, Chosen]:
    """Collect's job with selection on: :data:`CANDIDATES` answers (events ``seq`` = answer), then the two
    to show (:func:`choose`)."""
    from desktop_dpo.core.sampling import record_model_info, sample_answers

    job = sample_answers(pool, model, paths, messages, settings, CANDIDATES, random.Random(), cancel)
    results = yield from record_model_info(store, job)
    picked = yield from choose(store, cache, model.id, messages, [r.text for r in results], cancel)
    return Chosen(
        (results[picked.first], results[picked.second]), picked.reason, picked.problem, picked.chosen_by
    )


def repeat_choice(
    store: Store,
    cancel: CancelToken,
    *,
    cache: ScorerCache,
    model_id: int,
    messages: list[dict[str, str]],
    texts: list[str],
) -> Generator[Any, None, Chosen]:
    """The job after a repeat's answers are played back: compared as a real pair's are, worded alike."""
    picked = yield from choose(store, cache, model_id, messages, texts, cancel)
    return Chosen((), picked.reason, picked.problem)


# ---------------------------------------------------------------------------------------------------------
# On screen (GUI thread)
# ---------------------------------------------------------------------------------------------------------


class PairSelection(QObject):
    """The setting, the "why this pair" line, and the selected pair's job, for a :class:`CollectView`.

    The view asks :meth:`applies` when a pair starts; when it does, :meth:`sample` (or :meth:`show_repeat`)
    writes it and the chosen two reach the view's own code that shows a finished answer.
    """

    def __init__(self, view: CollectView):
        super().__init__(view)
        self.view = view
        self.cache = ScorerCache()
        self.active = False  # a selected pair is being written or chosen
        self._tokens: dict[int, int] = {}  # tokens of each answer so far
        self._written: dict[int, GenerationResult] = {}  # a repeat's answers as played back
        saved = view._settings.value(OPTION_KEY)
        self.option = QCheckBox(OPTION_TEXT)
        self.option.setToolTip(OPTION_TIP)
        self.option.setChecked(saved is None or str(saved).lower() in ("true", "1"))
        self.option.toggled.connect(lambda on: view._settings.setValue(OPTION_KEY, on))
        self.line = styled_label("", "cardNote", wrap=True)  # muted, as the cards' notes
        self.line.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.line.setVisible(False)
        view.registry.changed.connect(self._on_registry_changed)
        view.reveal.stopped.connect(self.stopped)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.release)

    def applies(self, model: ModelRow, model_b: ModelRow | None) -> tuple[bool, str]:
        """Whether the next pair is selected, and if not, the line that says why its two answers come as they
        are ("" with the setting off or for two models).

        Selected: the setting is on, both answers come from ``model``, it has a finished run to compare them
        with, and that run did not learn mostly from chosen pairs (``pair_selection.keeps_choosing``; quick
        queries of the store). Otherwise the line says which: before the model's first run, or after a run
        that learnt from chosen pairs."""
        if not (self.option.isChecked() and model_b is None):
            return False, ""
        from desktop_dpo.core.dpo.implicit_reward import latest_scoring_run  # no torch at import
        from desktop_dpo.core.dpo.runs import run_label

        store = self.view.store
        run_id = latest_scoring_run(store, model.id)
        run = store.get_run(run_id) if run_id is not None else None
        if run is None:
            return False, reason_for("as_they_come", 2)
        if not keeps_choosing(store.chosen_share(run.comparison_ids)):
            return False, reason_for("after_chosen", 2, run_label=run_label(run.id, run.name))
        return True, ""

    @staticmethod
    def writing_line(model: ModelRow) -> str:
        """The activity line while a selected pair is written (a repeat's too)."""
        return f"Writing {CANDIDATES} answers with {model.name} to find the pair that teaches the most… Esc stops."

    @Slot()
    def release(self) -> None:
        """Free the run's model (the Collect model changed, a run trains, the app quits)."""
        self.cache.close()

    @Slot()
    def _on_registry_changed(self) -> None:
        self.cache.training = self.view.registry.is_busy(TRAIN_RESOURCE)
        if self.cache.training:
            self.release()  # training needs the memory

    # ---------------------------------------------------------------- a pair

    def begin(self, pair: ShownPair, selected: bool) -> None:
        """``pair`` starts: chosen from several (``selected``) or not (no line)."""
        self.active, self._tokens, self._written = selected, {}, {}
        self.show(pair, "The answers are being written; the two that teach the model the most will be shown.")

    def show(self, pair: ShownPair | None, writing: str = "") -> None:
        """The line for ``pair`` (hidden for a pair not chosen, or none)."""
        text = pair.why if pair is not None and pair.why else (writing if self.active else "")
        self.line.setText(text)
        self.line.setToolTip("")
        self.line.setVisible(bool(text))

    def sample(self, model: ModelRow, messages: list[dict[str, str]], settings: SamplingSettings) -> bool:
        """Start the job that writes the answers and chooses two (False: it could not start; the banner says
        why)."""
        cache, pool, paths = self.cache, self.view.pool, self.view.paths

        def factory(store: Store, cancel: CancelToken) -> Any:
            return informative_pair(
                store,
                cancel,
                pool=pool,
                model=model,
                paths=paths,
                messages=messages,
                settings=settings,
                cache=cache,
            )

        return self._start(factory, model)

    def show_repeat(self, stored: list[GenerationResult]) -> None:
        """Play a repeat's answers back as :data:`CANDIDATES` answers being written."""
        self.view.reveal.start(stored, rounds=CANDIDATES // 2)

    def repeat_written(self) -> bool:
        """A repeat's answers are out: compare them as a chosen pair is (False: not a selected repeat)."""
        pair = self.view.pair
        if not self.active or pair is None:
            return False
        texts = [self._written[seq].text for seq in (0, 1)]
        cache, messages = self.cache, pair.messages
        model_id = pair.model_ids[0]

        def factory(store: Store, cancel: CancelToken) -> Any:
            return repeat_choice(
                store, cancel, cache=cache, model_id=model_id, messages=messages, texts=texts
            )

        model = self.view.current_model()
        if model is None or not self._start(factory, model):
            self.active = False
            self.view._on_sample_failed("The answers could not be compared; sample again.")
        return True

    def _start(self, factory: Any, model: ModelRow) -> bool:
        view = self.view
        op = (
            JobOp(view.registry, factory, store=view.paths.db_path, owner=view)
            .resource(f"generate:{model.id}", describe=f"Writing answers with {model.name}")
            .on_event(self.on_event)
            .on_success(self._on_succeeded)
            .on_failure(self._on_failed)
            .on_cancelled(self._on_cancelled)
        )
        view._generating = view.start_job(op)
        return view._generating is not None

    # ---------------------------------------------------------------- the job's news

    def on_event(self, event: object) -> None:
        """An event of the job or of a repeat's playback: progress in both panes, nothing of the text."""
        view = self.view
        if isinstance(event, TokenEvent):
            if not self._tokens and view._sampling_text:
                view._set_activity(view._sampling_text)  # past "Loading …": the answers are coming
            self._tokens[event.seq] = event.n_tokens
        elif isinstance(event, ResponseFinished):
            self._tokens[event.seq] = event.result.completion_tokens
            self._written[event.seq] = event.result
        elif isinstance(event, Choosing):
            view._set_activity(event.message)
            for pane in view.panes:
                pane.status.setText(event.message)
            return
        else:
            view.show_job_progress(event)
            return
        for pane in view.panes:
            pane.status.setText(f"{WRITING} {plural(sum(self._tokens.values()), 'token')}")

    def _on_succeeded(self, chosen: object) -> None:
        view, pair = self.view, self.view.pair
        self.active = False
        if pair is None or not isinstance(chosen, Chosen):
            return
        results = chosen.results or tuple(self._written[seq] for seq in (0, 1))
        for generation, result in enumerate(results):
            view._finish_generation(generation, result)
        pair.why = chosen.reason
        pair.chosen_by = chosen.chosen_by
        self.show(pair)
        self.line.setToolTip(chosen.problem)
        view._on_sample_succeeded(None)

    def _on_failed(self, message: str) -> None:
        self.active = False
        self.show(None)
        self.view._on_sample_failed(message)

    def _on_cancelled(self) -> None:
        self.active = False
        self.show(None)
        pair = self.view.pair
        if pair is not None and pair.repeat_of is not None:
            self.view._on_repeat_stopped()
        else:
            self.view._on_sample_cancelled()

    @Slot()
    def stopped(self) -> None:
        """A repeat's playback was stopped."""
        self.active = False
        self.show(None)
