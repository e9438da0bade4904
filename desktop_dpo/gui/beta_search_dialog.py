"""The "Find β" dialog: short trainings at a few β, each measured on the held-out pairs, and a pick.

The search is :func:`desktop_dpo.core.dpo.beta_search.beta_search`, run in a child process as training is
(:func:`~desktop_dpo.core.dpo.beta_search.search_in_child`), by a :class:`JobOp` on the training resource:
one model at a time on the GPU, and the models loaded for Collect, Chat and Evaluate are released first,
as Start does. Each β that is done becomes a point on a plot of held-out accuracy against how far the model
moved from where it started (KL per token), and a row of the table; at the end, a recommendation in words
and a button that puts that β (or the row the person selects) on the form. Nothing becomes a run.

Each point's "β …" label is placed in the plot's pixels (:func:`label_rects`): under its point, above it where
there is no room under (a β that ranked 0% sits on the bottom edge), and moved in from the sides, so no label is
ever cut off; the labels are placed again whenever the plot's size or range changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHeaderView,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from desktop_dpo.core.dpo.beta_search import (
    SEARCH_BETAS,
    SEARCH_STEPS,
    BetaMeasured,
    BetaResult,
    BetaSearchResult,
    search_in_child,
)
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.events import Loading
from desktop_dpo.core.dpo.runs import RunPlan
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.core.wording import plural
from desktop_dpo.gui.theme import fill_colour, text_colour
from desktop_dpo.gui.train_copy import needs_copy
from desktop_dpo.gui.widgets import STRETCH, button, hbox, text_label, vbox
from desktop_dpo.workers.job_op import JobOp, StoreJobFactory
from desktop_dpo.workers.training_worker import RELEASING, TRAIN_RESOURCE

BETA_IN_WORDS = "β is how far the model may move from where it started: higher keeps it closer."
POINT_COLOUR = "#4f46e5"  # indigo, as the training curves
PICK_COLOUR = "#ea580c"  # orange: the recommended β
COLUMNS = ("β", "Held-out accuracy", "Moved from the start (KL per token)")
LABEL_GAP = 9.0  # pixels from a point's centre to its label: clear of the point (11 px) and the ring (17 px)


def label_rects(
    points: Sequence[QPointF], sizes: Sequence[QSizeF], area: QRectF, gap: float = LABEL_GAP
) -> list[QRectF]:
    """Where each point's label goes, in pixels (y down): centred under its point, ``gap`` from its centre;
    above it when it would cross the bottom of ``area``; then moved sideways (and, in a plot too small for
    either, up or down) to lie inside ``area`` whole. ``points`` and ``sizes`` pair up, one label each."""
    rects = []
    for point, size in zip(points, sizes, strict=True):
        top = point.y() + gap
        if top + size.height() > area.bottom():  # no room under the point: above it
            top = point.y() - gap - size.height()
        left = point.x() - size.width() / 2
        left = min(max(left, area.left()), area.right() - size.width())
        top = min(max(top, area.top()), area.bottom() - size.height())
        rects.append(QRectF(QPointF(left, top), size))
    return rects


def beta_search_job(
    request: dict[str, Any], release_engines: Callable[[], None] | None = None
) -> StoreJobFactory:
    """A factory for ``JobOp(..., store=db_path)``: release the inference engines, then search in a child."""

    def factory(store: Store, cancel: CancelToken) -> Job:
        if release_engines is not None:
            yield Loading(RELEASING)
            release_engines()
            cancel.raise_if_cancelled()
        return (yield from search_in_child(store.path, request, cancel=cancel))

    return factory


class BetaSearchDialog(QDialog):
    """Run the β search for one model's pairs and settings; offer the recommended β.

    Signals:
        beta_chosen(float): the person pressed "Use β = …".
    """

    beta_chosen = Signal(float)

    def __init__(
        self,
        registry: Any,
        db_path: Path,
        model: ModelRow,
        comparison_ids: Sequence[int],
        config: TrainConfig,
        *,
        reference: str = "adapter_off",
        release_engines: Callable[[], None] | None = None,
        betas: Sequence[float] = SEARCH_BETAS,
        steps: int = SEARCH_STEPS,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("betaSearchDialog")
        self.setWindowTitle("Find β")
        self.registry, self.db_path, self.release_engines = registry, db_path, release_engines
        self.request: dict[str, Any] = {
            "model_id": model.id, "comparison_ids": list(comparison_ids), "config": config.to_dict(),
            "reference": reference, "betas": list(betas), "steps": steps,
        }  # fmt: skip
        self.results: list[BetaResult] = []
        self.outcome: BetaSearchResult | None = None
        self.picked: float | None = None
        self._op: JobOp | None = None
        self._build(model, betas, steps)

    def _build(self, model: ModelRow, betas: Sequence[float], steps: int) -> None:
        values = ", ".join(f"{b:g}" for b in betas[:-1]) + f" and {betas[-1]:g}"
        intro = text_label(
            f"{BETA_IN_WORDS} Too low and it may drift from how it wrote before; too high and it learns "
            f"little. This trains {model.name} briefly ({steps} steps) at β = {values} on your training "
            "pairs and measures each on your held-out pairs: how often it ranks your chosen answer first "
            "(accuracy), and how far it moved from where it started (KL). Nothing is saved as a run.",
            "betaSearchIntro",
        )
        self.status = text_label("Press Start to begin. It may take a few minutes.", "betaSearchStatus")
        self.progress = QProgressBar()
        self.progress.setObjectName("betaSearchProgress")
        self.progress.setVisible(False)
        self.plot = self._build_plot()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("betaSearchTable")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.table.setMinimumHeight(130)
        self.recommendation = text_label("", "betaSearchRecommendation")
        self.recommendation.setVisible(False)
        self.start_button = button("Start", self.start, name="primaryButton")
        self.stop_button = button("Stop", self.stop)
        self.stop_button.setEnabled(False)
        self.use_button = button("Use β", self._on_use_clicked, name="primaryButton")
        self.use_button.setEnabled(False)
        self.close_button = button("Close", self.reject)
        actions = hbox(self.start_button, self.stop_button, STRETCH, self.use_button, self.close_button)
        vbox(
            intro, self.status, self.progress, (self.plot, 1), self.table, self.recommendation, actions,
            parent=self, spacing=8,
        )  # fmt: skip
        self.resize(680, 640)
        self.setMinimumSize(520, 600)  # smaller, the table would cover the plot's lower part

    def _build_plot(self) -> Any:
        pg.setConfigOptions(antialias=True)
        plot = pg.PlotWidget()
        plot.setObjectName("betaSearchPlot")
        plot.setMinimumHeight(200)
        plot.setBackground(fill_colour("#ffffff"))
        item = plot.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.15)
        item.setMenuEnabled(False)
        item.hideButtons()
        for side, words in (
            ("left", "held-out accuracy (%)"),
            ("bottom", "moved from the start (KL per token)"),
        ):
            axis = item.getAxis(side)
            axis.setPen(pg.mkPen(fill_colour("#cbd5e1")))
            axis.setTextPen(pg.mkPen(text_colour("#475569")))
            axis.enableAutoSIPrefix(False)  # "0.12", never "120 (x0.001)"
            item.setLabel(side, words, color=text_colour("#64748b"))
        item.setYRange(0, 100, padding=0.05)
        item.getViewBox().setMouseEnabled(x=False, y=False)  # a small overview: nothing to pan or zoom
        plot.setToolTip(
            "Up is better ranking of your held-out pairs; left is closer to where the model started."
        )
        self.points = pg.ScatterPlotItem(size=11, pen=pg.mkPen(None), brush=pg.mkBrush(POINT_COLOUR))
        self.pick_point = pg.ScatterPlotItem(
            size=17, pen=pg.mkPen(PICK_COLOUR, width=3), brush=pg.mkBrush(None)
        )
        item.addItem(self.points)
        item.addItem(self.pick_point)
        self.point_labels: list[Any] = []
        box = item.getViewBox()
        box.sigResized.connect(self._place_labels)
        box.sigRangeChanged.connect(self._place_labels)
        return plot

    # ---------------------------------------------------------------- the job

    @Slot()
    def start(self) -> bool:
        """Start the search (off the GUI thread); False, with why on the status line, when it cannot."""
        self.results, self.outcome, self.picked = [], None, None
        self.table.setRowCount(0)
        self._draw()
        op = (
            JobOp(
                self.registry,
                beta_search_job(self.request, self.release_engines),
                store=self.db_path,
                owner=self,
            )
            .resource(TRAIN_RESOURCE, describe="Finding β")
            .slots("search")
        )
        try:
            op.start()
        except DesktopDpoError as exc:
            self._say(str(exc), error=True)
            return False
        self._op = op
        self._say("Starting…")
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.recommendation.setVisible(False)
        self._set_running(True)
        return True

    @Slot()
    def stop(self) -> None:
        """Stop at the next step; the β measured so far stay in the table."""
        if self._op is not None and self._op.active:
            self._op.cancel()
            self._say("Stopping…")
            self.stop_button.setEnabled(False)

    def running(self) -> bool:
        return self._op is not None and self._op.active

    def _on_search_event(self, event: object) -> None:
        if isinstance(event, Progress):
            self.progress.setRange(0, int(event.total))
            self.progress.setValue(int(event.done))
            self._say(event.message)
        elif isinstance(event, Loading):
            self._say(event.stage)
        elif isinstance(event, BetaMeasured):
            self.results.append(event.result)
            self._add_row(event.result)
            self._draw()

    def _on_search_succeeded(self, result: object) -> None:
        assert isinstance(result, BetaSearchResult)
        self.outcome = result
        self._set_running(False)
        self.progress.setVisible(False)
        self._say(
            f"Done: {plural(len(result.results), 'short training')}, measured on "
            f"{plural(result.heldout_pairs, 'held-out pair')}."
        )
        self.recommendation.setText(result.recommendation())
        self.recommendation.setVisible(True)
        self._select(result.recommended.beta)
        self._draw()

    def _on_search_failed(self, message: str) -> None:
        self._set_running(False)
        self.progress.setVisible(False)
        self._say(message, error=True)

    def _on_search_cancelled(self) -> None:
        self._set_running(False)
        self.progress.setVisible(False)
        self._say("Stopped. Start again to measure every β.")

    # ---------------------------------------------------------------- showing results

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setProperty("error", error)
        self.status.style().polish(self.status)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.start_button.setText("Start again" if self.results and not running else "Start")
        self.stop_button.setEnabled(running)
        self.use_button.setEnabled(not running and self.picked is not None)

    def _add_row(self, result: BetaResult) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        texts = (f"{result.beta:g}", f"{result.accuracy:.0%}", f"{result.kl:.3f}")
        for column, text in enumerate(texts):
            cell = QTableWidgetItem(text)
            cell.setData(Qt.ItemDataRole.UserRole, result.beta)
            self.table.setItem(row, column, cell)

    def _draw(self) -> None:
        """The points (β beside each), the recommended one ringed, the β column marking it in words."""
        item = self.plot.getPlotItem()
        for label in self.point_labels:
            item.removeItem(label)
        self.point_labels = []
        self.points.setData([r.kl for r in self.results], [100 * r.accuracy for r in self.results])
        for result in self.results:
            label = pg.TextItem(f"β {result.beta:g}", color=text_colour("#334155"), anchor=(0, 0))
            item.addItem(label)
            self.point_labels.append(label)
        if self.results:  # from 0: the distance from the start reads as a distance
            right = max(r.kl for r in self.results) * 1.15 or 1.0
            # A little room left of 0, so that a β that barely moved the model shows its whole point.
            item.setXRange(-0.03 * right, right, padding=0)
        self._place_labels()
        pick = self.outcome.recommended if self.outcome is not None else None
        self.pick_point.setData([pick.kl] if pick else [], [100 * pick.accuracy] if pick else [])
        for row in range(self.table.rowCount()):
            cell = self.table.item(row, 0)
            beta = cell.data(Qt.ItemDataRole.UserRole)
            cell.setText(f"{beta:g}  (recommended)" if pick and beta == pick.beta else f"{beta:g}")

    def label_layout(self) -> tuple[QRectF, list[QRectF]]:
        """The plot's area and each point's label rectangle, in the scene's pixels (:func:`label_rects`)."""
        box = self.plot.getPlotItem().getViewBox()
        points = [box.mapViewToScene(QPointF(r.kl, 100 * r.accuracy)) for r in self.results]
        sizes = [label.boundingRect().size() for label in self.point_labels]
        area = box.sceneBoundingRect()
        return area, label_rects(points, sizes, area)

    @Slot()
    def _place_labels(self) -> None:
        """Put each label where :func:`label_rects` says (its top-left corner, in the plot's values)."""
        if len(self.point_labels) != len(self.results):
            return  # between a new result and its label
        box = self.plot.getPlotItem().getViewBox()
        for label, rect in zip(self.point_labels, self.label_layout()[1], strict=True):
            label.setPos(box.mapSceneToView(rect.topLeft()))

    def _select(self, beta: float) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == beta:
                self.table.selectRow(row)
        self._pick(beta)

    @Slot()
    def _on_row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows and not self.running():
            self._pick(self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole))

    def _pick(self, beta: float) -> None:
        self.picked = beta
        self.use_button.setText(f"Use β = {beta:g}")
        self.use_button.setEnabled(not self.running())

    @Slot()
    def _on_use_clicked(self) -> None:
        if self.picked is not None:
            self.beta_chosen.emit(self.picked)
            self.accept()

    def done(self, result: int) -> None:  # Qt override
        """Closing while the search runs stops it (at the next step, in its thread)."""
        self.stop()
        super().done(result)


def find_beta_blocker(model: ModelRow | None, plan: RunPlan | None, start_blocker: str) -> str:
    """Why the Train view's Find β is disabled ("" when it is not): what blocks Start, a trainable copy not
    made yet, or no held-out pairs to measure on."""
    if start_blocker or model is None:
        return start_blocker or "Add a model in Models first."
    if needs_copy(model):
        return "Start a run once first: this model's trainable copy is made then."
    if plan is None or plan.heldout_pairs < 1:
        return "Finding β measures on held-out pairs: raise the held-out share or collect more prompts."
    return ""


def open_find_beta(
    view: Any, model: Any, plan: Any, reference: str, release_engines: Callable[[], None] | None
) -> BetaSearchDialog:
    """Open Find β over the Train view ``view`` (its registry, database, form); "Use β" sets the form's β."""
    form = view.settings_form
    dialog = BetaSearchDialog(
        view.registry, view.paths.db_path, model, plan.comparison_ids, form.settings(),
        reference=reference, release_engines=release_engines, parent=view,
    )  # fmt: skip
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.beta_chosen.connect(form.set_beta)
    dialog.open()
    return dialog
