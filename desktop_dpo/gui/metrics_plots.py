"""Three live plots of a training run: DPO loss, reward accuracy and reward margin, train and held-out.

Built on pyqtgraph, which is imported here and nowhere at start-up (the Train view, the only user, is built
the first time it is shown). Each curve keeps its points in plain lists and gets one ``setData`` per new
point: the plot items, axes and legends are made once, never rebuilt while a run trains.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

from desktop_dpo.gui.widgets import hbox, vbox

TRAIN_COLOUR = "#4f46e5"  # indigo: training pairs, every step
HELDOUT_COLOUR = "#ea580c"  # orange: held-out prompts, every evaluation


@dataclass(frozen=True)
class PlotSpec:
    """One of the plots: which metric, and what a person reads from it."""

    key: str  # the TRL-style metric name in the run history (see StepMetrics.as_metrics)
    title: str
    tooltip: str
    y_range: tuple[float, float] | None = None  # fixed range, or None to follow the data


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


class _Curve:
    """A line whose points grow one at a time."""

    def __init__(self, item: Any):
        self.item = item
        self.x: list[float] = []
        self.y: list[float] = []

    @classmethod
    def on(cls, plot: Any, colour: str, *, dot_size: int) -> _Curve:
        """A new, empty curve in ``plot`` (a pyqtgraph ``PlotItem``): a line of ``colour`` with dots."""
        return cls(
            plot.plot(
                [],
                [],
                pen=pg.mkPen(colour, width=2),
                symbol="o",
                symbolSize=dot_size,
                symbolBrush=colour,
                symbolPen=None,
            )
        )

    def clear(self) -> None:
        self.x.clear()
        self.y.clear()
        self.item.setData([], [])

    def extend(self, points: Iterable[tuple[float, float]]) -> None:
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


def _plot_widget(spec: PlotSpec) -> Any:
    """An empty plot for ``spec``: its title, grid, axes and range, and no menu or buttons."""
    widget = pg.PlotWidget(background="#ffffff")
    widget.setObjectName("metricsPlot")
    widget.setToolTip(spec.tooltip)
    widget.setMinimumSize(180, 150)
    widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    item = widget.getPlotItem()
    item.setTitle(f"<span style='color:#0f172a;font-size:10pt;font-weight:600'>{spec.title}</span>")
    item.showGrid(x=True, y=True, alpha=0.15)
    item.setContentsMargins(0, 0, 10, 0)  # room for the last tick label and the newest point
    item.setMenuEnabled(False)
    item.hideButtons()
    for side in ("left", "bottom"):
        axis = item.getAxis(side)
        axis.setPen(pg.mkPen("#cbd5e1"))
        axis.setTextPen(pg.mkPen("#475569"))
    item.setLabel("bottom", "step", color="#64748b")
    if spec.y_range is not None:
        item.setYRange(*spec.y_range, padding=0.05)
        item.getViewBox().setMouseEnabled(x=True, y=False)
    return widget


class MetricsPlots(QWidget):
    """Loss, reward accuracy and reward margin of one run, side by side; train and held-out curves in each."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        # One legend for the three plots, above them: a legend inside a plot covers the newest points.
        self.legend = QLabel(
            f"<span style='color:{TRAIN_COLOUR}'>━━</span> training pairs, every step"
            f"&nbsp;&nbsp;&nbsp;<span style='color:{HELDOUT_COLOUR}'>━●━</span> held-out prompts, "
            "every check"
        )
        self.legend.setObjectName("plotLegend")
        row = hbox(margins=(0, 0, 0, 0), spacing=8)
        vbox(
            (self.legend, 0, Qt.AlignmentFlag.AlignRight),
            (row, 1),
            parent=self,
            margins=(0, 0, 0, 0),
            spacing=2,
        )
        self.widgets: dict[str, Any] = {}
        self.train: dict[str, _Curve] = {}
        self.heldout: dict[str, _Curve] = {}
        for spec in PLOTS:
            widget = _plot_widget(spec)
            item = widget.getPlotItem()
            # Small dots too: the first step of a run is a single point, which a line alone never shows.
            self.train[spec.key] = _Curve.on(item, TRAIN_COLOUR, dot_size=3)
            self.heldout[spec.key] = _Curve.on(item, HELDOUT_COLOUR, dot_size=6)
            self.widgets[spec.key] = widget
            row.addWidget(widget, 1)

    def clear(self) -> None:
        """No run shown."""
        for curve in (*self.train.values(), *self.heldout.values()):
            curve.clear()

    def show_history(
        self,
        train: Sequence[tuple[int, dict[str, Any]]],
        heldout: Sequence[tuple[int, dict[str, Any]]],
    ) -> None:
        """Replace the curves with a stored run history (``Store.run_metrics``: ``(step, metrics)`` rows)."""
        self.clear()
        self._add(self.train, train)
        self._add(self.heldout, heldout)

    def add_train_point(self, step: int, metrics: dict[str, Any]) -> None:
        """One optimizer step (``StepMetrics.as_metrics()``)."""
        self._add(self.train, [(step, metrics)])

    def add_heldout_point(self, step: int, metrics: dict[str, Any]) -> None:
        """One held-out evaluation (``EvalMetrics.as_metrics()``)."""
        self._add(self.heldout, [(step, metrics)])

    @staticmethod
    def _add(curves: dict[str, _Curve], rows: Sequence[tuple[int, dict[str, Any]]]) -> None:
        for key, curve in curves.items():
            curve.extend((float(step), float(m[key])) for step, m in rows if key in m)

    def points(self, key: str, split: str = "train") -> list[tuple[float, float]]:
        """The points of one curve (what is drawn), for tests and the details panel."""
        curve = (self.train if split == "train" else self.heldout)[key]
        return list(zip(curve.x, curve.y, strict=True))
