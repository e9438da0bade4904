"""A collapsible panel editing :class:`SamplingSettings`: a one-line summary that opens into a small form.

Collapsed, it takes one line and still says what the answers are sampled with; expanded, each setting
has a spin box whose tooltip explains it in the words of ``config.py``.
"""

from __future__ import annotations

import json
import logging

from PySide6.QtCore import QSettings, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QSpinBox,
    QWidget,
)

from desktop_dpo.config import SamplingSettings
from desktop_dpo.gui.widgets import FoldToggle, button, hbox, styled_label, vbox

log = logging.getLogger(__name__)


def saved_sampling_settings(saved: QSettings, key: str) -> SamplingSettings | None:
    """The sampling settings saved under ``key`` (as :func:`save_sampling_settings` saves them), or None
    when there are none or they cannot be read."""
    raw = saved.value(key)
    try:
        return SamplingSettings(**json.loads(raw)) if isinstance(raw, str) else None
    except (ValueError, TypeError):
        log.info("Ignoring unreadable saved sampling settings %s: %r", key, raw)
        return None


def save_sampling_settings(saved: QSettings, key: str, settings: SamplingSettings) -> None:
    """Save ``settings`` under ``key`` (read back by :func:`saved_sampling_settings`)."""
    saved.setValue(key, json.dumps(settings.to_dict()))


class SamplingSettingsPanel(QWidget):
    """Edits one :class:`SamplingSettings`.

    Signals:
        changed(object): the new settings, whenever a value changes.
    """

    changed = Signal(object)

    def __init__(self, settings: SamplingSettings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("samplingPanel")
        self._building = True

        self.body = QFrame()
        self.body.setObjectName("samplingBody")
        self.toggle = FoldToggle(
            "Sampling",
            self.body,
            name="samplingToggle",
            tooltip="Show or hide the sampling settings (stored with every answer)",
        )
        self.summary = styled_label("", "samplingSummary")
        head = hbox(self.toggle, (self.summary, 1), margins=(0, 0, 0, 0), spacing=8)

        self.temperature = self._double(0.0, 2.0, 0.05, 2, "Randomness; 0 = always the most likely token")
        self.top_p = self._double(
            0.0, 1.0, 0.01, 2, "Keep the smallest set of tokens whose probabilities sum to this"
        )
        self.top_k = self._int(0, 1000, "Keep only the k most likely tokens (0 = off)")
        self.min_p = self._double(
            0.0, 1.0, 0.01, 2, "Drop tokens less likely than this fraction of the best one"
        )
        self.repeat_penalty = self._double(1.0, 2.0, 0.05, 2, "Above 1 discourages repeating recent tokens")
        self.max_tokens = self._int(1, 8192, "Stop each answer after this many new tokens")
        self.reset_button = button(
            "Defaults",
            lambda: self.set_settings(SamplingSettings()),
            tooltip="Back to the default sampling settings",
        )

        grid = QGridLayout(self.body)
        grid.setContentsMargins(22, 4, 0, 2)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(6)
        fields = [
            ("Temperature", self.temperature),
            ("Top-p", self.top_p),
            ("Top-k", self.top_k),
            ("Min-p", self.min_p),
            ("Repeat penalty", self.repeat_penalty),
            ("Max tokens", self.max_tokens),
        ]
        # Three columns of label + box: the whole form fits in two rows.
        for index, (text, box) in enumerate(fields):
            row, column = divmod(index, 3)
            label = styled_label(text, "samplingLabel", tooltip=box.toolTip())
            label.setBuddy(box)
            box.setMinimumWidth(88)
            grid.addWidget(
                label, row, 3 * column, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            )
            grid.addWidget(box, row, 3 * column + 1)
            grid.setColumnMinimumWidth(3 * column + 2, 14)
        grid.addWidget(self.reset_button, 0, 9, 2, 1, Qt.AlignmentFlag.AlignTop)
        grid.setColumnStretch(10, 1)
        self._grid = grid

        vbox(head, self.body, parent=self, margins=(0, 0, 0, 0), spacing=4)

        self._building = False
        self.set_settings(settings or SamplingSettings())

    def _double(self, low: float, high: float, step: float, decimals: int, tip: str) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setSingleStep(step)
        box.setDecimals(decimals)
        box.setToolTip(tip)
        box.valueChanged.connect(self._on_value_changed)
        return box

    def _int(self, low: int, high: int, tip: str) -> QSpinBox:
        box = QSpinBox()
        box.setRange(low, high)
        box.setToolTip(tip)
        box.valueChanged.connect(self._on_value_changed)
        return box

    def settings(self) -> SamplingSettings:
        """The settings shown."""
        return SamplingSettings(
            temperature=round(self.temperature.value(), 4),
            top_p=round(self.top_p.value(), 4),
            top_k=self.top_k.value(),
            min_p=round(self.min_p.value(), 4),
            repeat_penalty=round(self.repeat_penalty.value(), 4),
            max_tokens=self.max_tokens.value(),
        )

    def set_settings(self, settings: SamplingSettings) -> None:
        """Show ``settings`` (emits ``changed`` once)."""
        self._building = True
        try:
            self.temperature.setValue(settings.temperature)
            self.top_p.setValue(settings.top_p)
            self.top_k.setValue(settings.top_k)
            self.min_p.setValue(settings.min_p)
            self.repeat_penalty.setValue(settings.repeat_penalty)
            self.max_tokens.setValue(settings.max_tokens)
        finally:
            self._building = False
        self._on_value_changed()

    def remember(self, saved: QSettings, key: str) -> None:
        """Show the settings saved under ``key`` in ``saved`` (the defaults when there are none, or when they
        cannot be read), and save them there whenever they change."""
        self._saved = (saved, key)
        self.changed.connect(self._on_changed_save)
        self.set_settings(saved_sampling_settings(saved, key) or SamplingSettings())

    @Slot(object)
    def _on_changed_save(self, settings: SamplingSettings) -> None:
        save_sampling_settings(*self._saved, settings)

    def add_option(self, option: QWidget) -> None:
        """Put a view's own setting (a check box) in the form, on a row of its own below the values."""
        self._grid.addWidget(option, self._grid.rowCount(), 0, 1, 9)

    def set_expanded(self, expanded: bool) -> None:
        """Open or close the form."""
        self.toggle.setChecked(expanded)

    @Slot()
    def _on_value_changed(self) -> None:
        if self._building:
            return
        s = self.settings()
        self.summary.setText(
            f"temperature {s.temperature:g} · top-p {s.top_p:g} · top-k {s.top_k} · min-p {s.min_p:g} · "
            f"repeat {s.repeat_penalty:g} · up to {s.max_tokens} tokens"
        )
        self.changed.emit(s)
