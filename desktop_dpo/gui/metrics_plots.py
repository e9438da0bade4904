"""Three live plots of a training run: DPO loss, reward accuracy and reward margin, train and held-out.

Built on pyqtgraph, which is imported here and nowhere at start-up (the Train view, the only user, is built
the first time it is shown). Each curve keeps its points in plain lists and gets one ``setData`` per new
point: the plot items, axes and legends are made once, never rebuilt while a run trains.

What a person reads stays readable however few the points: before any point the plots make way for a line
saying what will appear there; the step axis has whole steps only and spans a few steps at least; a value
axis spans at least its plot's ``min_span``, so a first step or a flat stretch (the loss sits at ln 2 at
first) reads "0.68 … 0.70" rather than float noise such as "0.6931477 … 0.6931481". The titles are Qt
labels above the plots (they wrap rather than being clipped when a window is narrow).

A run with an SFT start (``core/dpo/sft_phase.py``) shows its two phases on one step axis: the supervised steps
first (1 … S, the loss plot's teal "SFT" curve: the mean token NLL of the person's written answers), then the
preference steps after them (S + 1 …), every plot shifted alike so the steps line up. A dashed line marks where
the preference phase starts. The same NLL on the written answers to held-out prompts (``SftEvalMetrics``, before
the first step, now and then, and at the end) is a dashed teal line with large dots there.

A KTO run stores its KL reference point z0 every step (``StepMetrics.kl``, ``core/dpo/kto.py``): a fourth plot,
"KL reference point z0", appears beside the three once a point of it is drawn, so a run of any other loss (which
stores none) never shows it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

from desktop_dpo.gui.theme import fill_colour, follow_scheme, text_colour
from desktop_dpo.gui.widgets import hbox, styled_label, vbox

TRAIN_COLOUR = "#4f46e5"  # indigo: training pairs, every step
HELDOUT_COLOUR = "#ea580c"  # orange: held-out prompts, every evaluation
SFT_COLOUR = "#0d9488"  # teal: the supervised phase (SFT start), before the preference phase
MIN_STEPS = 5  # the step axis spans at least this many steps, from step 0
EMPTY_BEFORE_RUN = (
    "Loss, reward accuracy and reward margin are drawn here step by step once a run trains. "
    "Select a past run below to see its curves."
)
EMPTY_RUN = "No steps yet: this run's curves appear here after its first step."


@dataclass(frozen=True)
class PlotSpec:
    """One of the plots: which metric, and what a person reads from it."""

    key: str  # the TRL-style metric name in the run history (see StepMetrics.as_metrics)
    title: str
    tooltip: str
    y_range: tuple[float, float] | None = None  # fixed range, or None to follow the data
    min_span: float = 0.1  # the least the value axis spans when it follows the data


PLOTS = (
    PlotSpec(
        "loss",
        "Loss",
        "DPO loss: starts at ln 2 ≈ 0.69 and falls as the model learns to prefer your chosen answers",
    ),
    PlotSpec(
        "rewards/accuracies",
        "Reward accuracy",
        "Share of pairs where the model now favours your chosen answer (0.5 = a coin toss)",
        (0.0, 1.0),
    ),
    PlotSpec(
        "rewards/margins",
        "Reward margin",
        "How much more the model favours chosen over rejected answers (grows as it learns; "
        "very large = memorising)",
    ),
)


# KTO only: shown once a run's metrics hold "kl" (no other loss stores it).
KL_PLOT = PlotSpec(
    "kl",
    "KL reference point z0",
    "KTO's reference point z0: how far the model has moved from where it started (a KL divergence, estimated "
    "each step from answers put after other prompts). An answer counts as good or bad against it; it starts "
    "at 0 and grows as the model moves",
)


class _Curve:
    """A line whose points grow one at a time."""

    def __init__(self, item: Any, style: Qt.PenStyle = Qt.PenStyle.SolidLine):
        self.item = item
        self.style = style
        self.x: list[float] = []
        self.y: list[float] = []

    @classmethod
    def on(cls, plot: Any, colour: str, *, dot_size: int, dashed: bool = False) -> _Curve:
        """A new, empty curve in ``plot`` (a pyqtgraph ``PlotItem``): a line of ``colour`` (``dashed``) with dots."""
        style = Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine
        return cls(
            plot.plot(
                [],
                [],
                pen=pg.mkPen(colour, width=2, style=style),
                symbol="o",
                symbolSize=dot_size,
                symbolBrush=colour,
                symbolPen=None,
            ),
            style,
        )

    def clear(self) -> None:
        self.x.clear()
        self.y.clear()
        self.item.setData([], [])

    def paint(self, colour: str) -> None:
        """Draw the line and its dots in ``colour``."""
        self.item.setPen(pg.mkPen(colour, width=2, style=self.style))
        self.item.setSymbolBrush(colour)

    def extend(self, points: Iterable[tuple[float, float]]) -> bool:
        """Add the points after the last one; True when one was added."""
        added = False
        for x, y in points:
            # Steps only grow: a point at or before the last one is already drawn (a live event that
            # arrives after the stored history was read, which already held it).
            if self.x and x <= self.x[-1]:
                continue
            if math.isfinite(y):  # a skipped step (NaN loss) leaves a gap in the data, not a broken plot
                self.x.append(x)
                self.y.append(y)
                added = True
        if added:
            self.item.setData(self.x, self.y)
        return added


class _StepAxis(pg.AxisItem):
    """The step axis: ticks at whole steps only (a run has no step 0.5)."""

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:
        """pyqtgraph's tick levels, less those finer than one step."""
        levels = [
            (spacing, offset) for spacing, offset in super().tickSpacing(minVal, maxVal, size) if spacing >= 1
        ]
        return levels or [(1.0, 0.0)]


def _plot_widget(spec: PlotSpec) -> Any:
    """An empty plot for ``spec``: grid, axes and range, and no menu, buttons or title (its label is above)."""
    widget = pg.PlotWidget(axisItems={"bottom": _StepAxis("bottom")})
    widget.setObjectName("metricsPlot")
    widget.setToolTip(spec.tooltip)
    widget.setMinimumSize(110, 110)
    widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    item = widget.getPlotItem()
    item.showGrid(x=True, y=True, alpha=0.15)
    item.setContentsMargins(0, 4, 10, 0)  # room for the last tick label and the newest point
    item.setMenuEnabled(False)
    item.hideButtons()
    _paint_plot(widget)
    if spec.y_range is not None:
        item.setYRange(*spec.y_range, padding=0.05)
        item.getViewBox().setMouseEnabled(x=True, y=False)
    return widget


def _paint_plot(widget: Any) -> None:
    """The plot's background, axes and labels in the scheme shown (gui/theme.py)."""
    widget.setBackground(fill_colour("#ffffff"))
    item = widget.getPlotItem()
    for side in ("left", "bottom"):
        axis = item.getAxis(side)
        axis.setPen(pg.mkPen(fill_colour("#cbd5e1")))
        axis.setTextPen(pg.mkPen(text_colour("#475569")))
    item.setLabel("bottom", "step", color=text_colour("#64748b"))


def _fit_ranges(item: Any, spec: PlotSpec, curves: Sequence[_Curve]) -> None:
    """Give plot ``item`` readable ranges for the points of ``curves``: the step axis from 0 over at least
    :data:`MIN_STEPS` steps; the value axis ``spec.y_range``, or the data's, at least ``spec.min_span`` wide."""
    xs = [x for curve in curves for x in curve.x]
    if not xs:
        return
    item.setXRange(0.0, max(max(xs), MIN_STEPS), padding=0.04)
    if spec.y_range is not None:
        return
    ys = [y for curve in curves for y in curve.y]
    low, high = min(ys), max(ys)
    if high - low < spec.min_span:
        middle = (low + high) / 2
        item.setYRange(middle - spec.min_span / 2, middle + spec.min_span / 2, padding=0.05)
    else:
        item.getViewBox().enableAutoRange(y=True)


def _plot_title(spec: PlotSpec) -> QLabel:
    """The label above a plot: its title, centred, on one line when it is short."""
    title = styled_label(spec.title, "plotTitle", wrap=True, tooltip=spec.tooltip)
    title.setAlignment(Qt.AlignmentFlag.AlignCenter)
    # A short title stays on one line: the plot's column is at least as wide (in the sheet's font).
    title.ensurePolished()
    title.setMinimumWidth(title.fontMetrics().horizontalAdvance(spec.title) + 6)
    return title


class _ReferencePointPlot(QWidget):
    """KTO's z0 per step (:data:`KL_PLOT`): a title and a plot of one training curve, shown only once it has
    a point (a run of another loss stores no ``kl``, so it stays hidden there)."""

    def __init__(self) -> None:
        super().__init__()
        self.widget = _plot_widget(KL_PLOT)
        self.title = _plot_title(KL_PLOT)
        self.curve = _Curve.on(self.widget.getPlotItem(), TRAIN_COLOUR, dot_size=3)
        vbox(self.title, (self.widget, 1), parent=self, margins=(0, 0, 0, 0), spacing=2)
        self.setVisible(False)

    def clear(self) -> None:
        self.curve.clear()
        self.setVisible(False)

    def extend(self, rows: Sequence[tuple[int, dict[str, Any]]], shift: int) -> None:
        """Add the ``kl`` of each ``(step, metrics)`` row, drawn at ``step + shift``."""
        if self.curve.extend((float(step + shift), float(m["kl"])) for step, m in rows if "kl" in m):
            _fit_ranges(self.widget.getPlotItem(), KL_PLOT, (self.curve,))
            self.setVisible(True)

    def paint(self, colour: str) -> None:
        _paint_plot(self.widget)
        self.curve.paint(colour)


class MetricsPlots(QWidget):
    """Loss, reward accuracy and reward margin of one run, side by side; train and held-out curves in each.

    Until a curve has a point, a line (``empty_note``) says what will be drawn instead of showing empty axes.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        self.empty_note = styled_label(EMPTY_BEFORE_RUN, "plotsEmpty", wrap=True)
        self.empty_note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.content = QWidget()  # the legend and the plots, shown once there is a point to draw
        # One legend for the three plots, above them: a legend inside a plot covers the newest points.
        self.legend = styled_label("", "plotLegend", wrap=True)
        self.legend.setAlignment(Qt.AlignmentFlag.AlignRight)
        row = hbox(margins=(0, 0, 0, 0), spacing=8)
        vbox(self.legend, (row, 1), parent=self.content, margins=(0, 0, 0, 0), spacing=2)
        vbox((self.empty_note, 1), (self.content, 1), parent=self, margins=(0, 0, 0, 0), spacing=0)
        self.specs = {spec.key: spec for spec in PLOTS}
        self.widgets: dict[str, Any] = {}
        self.titles: dict[str, QLabel] = {}
        self.train: dict[str, _Curve] = {}
        self.heldout: dict[str, _Curve] = {}
        self.sft_steps = 0  # steps of the supervised phase: the preference steps are drawn after them
        self.boundaries: dict[str, Any] = {}  # per plot, the dashed line where the preference phase starts
        for spec in PLOTS:
            widget = _plot_widget(spec)
            item = widget.getPlotItem()
            # Small dots too: the first step of a run is a single point, which a line alone never shows.
            self.train[spec.key] = _Curve.on(item, TRAIN_COLOUR, dot_size=3)
            self.heldout[spec.key] = _Curve.on(item, HELDOUT_COLOUR, dot_size=6)
            boundary = pg.InfiniteLine(
                angle=90, movable=False, pen=pg.mkPen(SFT_COLOUR, style=Qt.PenStyle.DashLine)
            )
            boundary.setVisible(False)
            item.addItem(boundary)
            self.boundaries[spec.key] = boundary
            self.widgets[spec.key] = widget
            title = self.titles[spec.key] = _plot_title(spec)
            row.addLayout(vbox(title, (widget, 1), margins=(0, 0, 0, 0), spacing=2), 1)
        self.reference_point = _ReferencePointPlot()  # KTO's z0, after the three
        row.addWidget(self.reference_point, 1)
        self.sft = _Curve.on(
            self.widgets["loss"].getPlotItem(), SFT_COLOUR, dot_size=3
        )  # the SFT phase's loss
        self.sft_heldout = _Curve.on(
            self.widgets["loss"].getPlotItem(), SFT_COLOUR, dot_size=6, dashed=True
        )  # the same NLL on the held-out prompts' written answers
        self._paint()
        follow_scheme(self, self._paint)
        self._show_empty(EMPTY_BEFORE_RUN)

    def _paint(self) -> None:
        """The curves, the legend and the plots in the scheme shown."""
        train, heldout, sft = text_colour(TRAIN_COLOUR), text_colour(HELDOUT_COLOUR), text_colour(SFT_COLOUR)
        sft_heldout = (
            f" (<span style='color:{sft}'>╌●╌</span> on held-out prompts)" if self.sft_heldout.x else ""
        )
        first = (
            f"<span style='color:{sft}'>━━</span> SFT: learning your written answers{sft_heldout}, then "
            if self.sft_steps
            else ""
        )
        self.legend.setText(
            f"{first}<span style='color:{train}'>━━</span> training pairs, every step"
            f"&nbsp;&nbsp;&nbsp;<span style='color:{heldout}'>━●━</span> held-out prompts, every check"
        )
        for key, widget in self.widgets.items():
            _paint_plot(widget)
            self.train[key].paint(train)
            self.heldout[key].paint(heldout)
        self.sft.paint(sft)
        self.sft_heldout.paint(sft)
        self.reference_point.paint(train)

    def clear(self) -> None:
        """No run shown: the note says what will appear once a run trains."""
        self._clear_curves()
        self._show_empty(EMPTY_BEFORE_RUN)

    def _clear_curves(self) -> None:
        for curve in (*self.train.values(), *self.heldout.values(), self.sft, self.sft_heldout):
            curve.clear()
        self.reference_point.clear()
        self._set_sft_steps(0)

    def has_points(self) -> bool:
        """True once a curve has a point (the plots are shown, not the note)."""
        curves = (*self.train.values(), *self.heldout.values(), self.sft, self.sft_heldout)
        return any(curve.x for curve in curves)

    def _set_sft_steps(self, steps: int) -> None:
        """The supervised phase has ``steps`` steps: the preference steps are drawn after them."""
        if steps == self.sft_steps:
            return
        self.sft_steps = steps
        for boundary in self.boundaries.values():
            boundary.setPos(steps + 0.5)
            boundary.setVisible(steps > 0)
        self._paint()

    def _show_empty(self, text: str) -> None:
        self.empty_note.setText(text)
        self._update_empty()

    def _update_empty(self) -> None:
        empty = not self.has_points()
        self.empty_note.setVisible(empty)
        self.content.setVisible(not empty)

    def show_history(
        self,
        train: Sequence[tuple[int, dict[str, Any]]],
        heldout: Sequence[tuple[int, dict[str, Any]]],
        sft: Sequence[tuple[int, dict[str, Any]]] = (),
        sft_heldout: Sequence[tuple[int, dict[str, Any]]] = (),
    ) -> None:
        """Replace the curves with a stored run history (``Store.run_metrics``: ``(step, metrics)`` rows, ``sft``
        the supervised phase's, ``sft_heldout`` its held-out NLL); a run without steps yet shows a note that its
        curves come after its first step."""
        self._clear_curves()
        self.empty_note.setText(EMPTY_RUN)
        if sft:
            self._set_sft_steps(max(step for step, _ in sft))
            self._add_sft(sft)
        self.add_sft_heldout_points(sft_heldout)
        self._add(self.train, train)
        self.reference_point.extend(train, self.sft_steps)
        self._add(self.heldout, heldout)

    def add_sft_point(self, step: int, total_steps: int, metrics: dict[str, Any]) -> None:
        """One step of the supervised phase (``SftStepMetrics.as_metrics()``), of ``total_steps``."""
        self._set_sft_steps(total_steps)
        self._add_sft([(step, metrics)])

    def add_sft_heldout_points(self, rows: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Held-out checks of the supervised phase (``SftEvalMetrics.as_metrics()`` rows), at their SFT steps."""
        first = not self.sft_heldout.x
        if self.sft_heldout.extend((float(step), float(m["loss"])) for step, m in rows if "loss" in m):
            self._fit("loss")
            if first:
                self._paint()  # the legend names the new line
        self._update_empty()

    def add_train_point(self, step: int, metrics: dict[str, Any]) -> None:
        """One optimizer step (``StepMetrics.as_metrics()``; a KTO run's ``kl`` on the z0 plot)."""
        self._add(self.train, [(step, metrics)])
        self.reference_point.extend([(step, metrics)], self.sft_steps)

    def add_heldout_point(self, step: int, metrics: dict[str, Any]) -> None:
        """One held-out evaluation (``EvalMetrics.as_metrics()``)."""
        self._add(self.heldout, [(step, metrics)])

    def _add_sft(self, rows: Sequence[tuple[int, dict[str, Any]]]) -> None:
        if self.sft.extend((float(step), float(m["loss"])) for step, m in rows if "loss" in m):
            self._fit("loss")
        self._update_empty()

    def _add(self, curves: dict[str, _Curve], rows: Sequence[tuple[int, dict[str, Any]]]) -> None:
        shift = self.sft_steps  # preference steps come after the supervised phase's
        for key, curve in curves.items():
            if curve.extend((float(step + shift), float(m[key])) for step, m in rows if key in m):
                self._fit(key)
        self._update_empty()

    def _fit(self, key: str) -> None:
        curves = (
            self.train[key],
            self.heldout[key],
            *((self.sft, self.sft_heldout) if key == "loss" else ()),
        )
        _fit_ranges(self.widgets[key].getPlotItem(), self.specs[key], curves)

    def points(self, key: str, split: str = "train") -> list[tuple[float, float]]:
        """The points of one curve (what is drawn; ``split`` "train", "heldout", or "sft" or "sft_heldout" for the
        loss only; ``key`` "kl": KTO's z0, training steps only), for tests and the details panel."""
        if key == KL_PLOT.key:
            return list(zip(self.reference_point.curve.x, self.reference_point.curve.y, strict=True))
        if split in ("sft", "sft_heldout"):
            curve = self.sft if split == "sft" else self.sft_heldout
        else:
            curve = (self.train if split == "train" else self.heldout)[key]
        return list(zip(curve.x, curve.y, strict=True))

    def legend_text(self) -> str:
        """The legend as a person reads it (no markup)."""
        return re.sub(r"<[^>]+>", "", self.legend.text()).replace("&nbsp;", " ")
