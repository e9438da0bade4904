"""The form for a run's :class:`TrainConfig`: basic fields in view, advanced ones folded, one line of help each.

The help lines say in words what each setting does to the run (they follow the comments on
``TrainConfig``'s fields). The form holds a base config (the device's preset) and changes only the
fields it shows, so settings without a field keep the preset's value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PySide6.QtCore import QEvent, Qt, Signal, Slot
from PySide6.QtGui import QShowEvent, QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.gui.widgets import STRETCH, FoldToggle, styled_label, vbox


@dataclass(frozen=True)
class FieldSpec:
    """One setting on the form."""

    name: str  # the TrainConfig field
    label: str
    help: str  # one line, in words
    advanced: bool = False
    choices: tuple[str, ...] = ()  # a str field with fixed values
    minimum: float = 0
    maximum: float = 1_000_000
    step: float = 1
    decimals: int = 2  # float fields
    scientific: bool = False  # float fields shown as 1e-04 (learning rates)


def _advanced(*specs: FieldSpec) -> tuple[FieldSpec, ...]:
    """``specs``, folded under "Advanced settings"."""
    return tuple(dataclasses.replace(spec, advanced=True) for spec in specs)


FIELDS = (
    FieldSpec("beta", "β (beta)", "β — how tightly the model is held to where it started: higher = smaller, "
              "safer changes", minimum=0.01, maximum=10, step=0.05, decimals=3),
    FieldSpec("lr", "Learning rate", "How big each update is: too high and the model forgets how to write, "
              "too low and nothing changes", minimum=1e-7, maximum=1e-1, scientific=True),
    FieldSpec("epochs", "Epochs", "How many times training reads every pair", minimum=1, maximum=100),
    FieldSpec("batch_size", "Batch size", "Pairs per forward pass: larger is faster but needs more memory",
              minimum=1, maximum=256),
    # folded under "Advanced settings"
    *_advanced(
        FieldSpec("loss_type", "Loss", "sigmoid is standard DPO; ipo and hinge are variants that push less hard "
                  "on pairs already learned", choices=("sigmoid", "ipo", "hinge")),
        FieldSpec("label_smoothing", "Label smoothing", "The share of your picks you think may be wrong "
                  "(conservative DPO; sigmoid loss only)", maximum=0.49, step=0.05),
        FieldSpec("sft_weight", "SFT weight", "Also trains the model to write the answers you chose, not only to "
                  "prefer them (RPO; 0 = off, 1 = as much)", maximum=10, step=0.1),
        FieldSpec("grad_accum", "Gradient accumulation", "Passes added up before each update: pairs per update "
                  "= batch size × this", minimum=1, maximum=1024),
        FieldSpec("warmup_ratio", "Warm-up", "Share of the run during which the learning rate climbs from 0 to "
                  "its peak", maximum=0.99, step=0.05),
        FieldSpec("scheduler", "Schedule", "How the learning rate falls after warm-up (both end at 0)",
                  choices=("cosine", "linear")),
        FieldSpec("max_grad_norm", "Gradient clip", "Updates are clipped to this size, so one odd batch cannot "
                  "wreck the model", minimum=0.01, maximum=100, step=0.1),
        FieldSpec("weight_decay", "Weight decay", "Pulls the adapter's weights towards zero (0 = off)",
                  maximum=1, step=0.01, decimals=3),
        FieldSpec("lora_r", "LoRA rank", "How much change the adapter can hold (and its size on disk)",
                  minimum=1, maximum=1024),
        FieldSpec("lora_alpha", "LoRA alpha", "Scale of the adapter: its change is multiplied by alpha ÷ rank",
                  minimum=1, maximum=4096),
        FieldSpec("lora_dropout", "LoRA dropout", "Randomly drops adapter inputs while training, against "
                  "memorising", maximum=0.9, step=0.05),
        FieldSpec("target_modules", "Target layers", "Layers that get an adapter: all-linear, or layer names "
                  "separated by commas"),
        FieldSpec("max_length", "Maximum length", "Tokens per example (prompt + answer); longer answers are cut, "
                  "and you are told", minimum=16, maximum=131072, step=64),
        FieldSpec("max_prompt_length", "Maximum prompt length", "Prompt tokens kept (older turns are dropped "
                  "first)", minimum=8, maximum=131072, step=64),
        FieldSpec("quantization", "Quantization", "nf4 = 4-bit base (QLoRA, far less GPU memory); none = full "
                  "precision (faster on a CPU); auto = nf4 on a GPU only",
                  choices=("auto", "nf4", "none")),
        FieldSpec("gradient_checkpointing", "Gradient checkpointing", "Recompute activations instead of keeping "
                  "them: much less memory, about 30% slower"),
        FieldSpec("device", "Device", "Where training runs: auto takes the GPU when there is one",
                  choices=("auto", "cuda", "mps", "cpu")),
        FieldSpec("threads", "CPU threads", "Threads torch may use on the CPU (0 = its default)",
                  maximum=512),
        FieldSpec("checkpoint_every", "Checkpoint every", "Steps between saved checkpoints (a stop always saves "
                  "one too)", minimum=1, maximum=100000),
        FieldSpec("eval_every", "Held-out check every", "Steps between measurements on the held-out prompts "
                  "(also at the start and the end)", minimum=1, maximum=100000),
        FieldSpec("heldout_fraction", "Held-out share", "Share of prompts kept out of training, to see whether "
                  "the model generalises rather than memorises", maximum=0.9, step=0.05),
        FieldSpec("seed", "Seed", "Same seed, settings and pairs give the same run",
                  maximum=2**31 - 1),
    ),
)  # fmt: skip

_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


class ScientificSpinBox(QDoubleSpinBox):
    """A spin box for small positive numbers shown as ``1e-04``; the arrows multiply or divide by 2."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setDecimals(12)

    def textFromValue(self, value: float) -> str:  # Qt override
        return f"{value:.3g}"

    def valueFromText(self, text: str) -> float:  # Qt override
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:  # Qt override
        try:
            value = float(text)
        except ValueError:
            return QValidator.State.Intermediate, text, pos
        ok = self.minimum() <= value <= self.maximum()
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # Qt override
        self.setValue(self.value() * (2.0**steps))


class TrainSettingsForm(QWidget):
    """Edit a :class:`TrainConfig`. ``touched`` turns True once the person changes a field.

    Signals:
        changed(): a field changed (by the person or by ``set_settings``).
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._base = TrainConfig()
        self._loading = False
        self.touched = False
        self.editors: dict[str, QWidget] = {}
        self.help_labels: dict[str, QLabel] = {}
        self._box: QVBoxLayout | None = None

        basic = QWidget()
        self.advanced = QWidget()
        self.advanced.setObjectName("advancedSettings")
        self._grids = (self._grid(basic), self._grid(self.advanced))
        rows = dict.fromkeys(self._grids, 0)
        for spec in FIELDS:
            grid = self._grids[spec.advanced]
            self._add_field(grid, rows[grid], spec)
            rows[grid] += 2

        self.advanced_toggle = FoldToggle(
            "Advanced settings",
            self.advanced,
            name="advancedToggle",
            tooltip="Loss, schedule, LoRA shape, lengths, memory, device, bookkeeping",
        )

        self._box = vbox(
            basic,
            (self.advanced_toggle, 0, Qt.AlignmentFlag.AlignLeft),
            self.advanced,
            STRETCH,  # rows stay together at the top however tall the scroll area is
            parent=self,
            margins=(0, 0, 0, 0),
            spacing=6,
        )
        self._fit_columns()
        self.set_settings(self._base)

    @staticmethod
    def _grid(widget: QWidget) -> QGridLayout:
        """Labels on the left (they take the room that is left, and wrap), editors in a column on the right."""
        grid = QGridLayout(widget)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 0)
        return grid

    def _fit_columns(self) -> None:
        """One editor column, as wide as the widest editor needs, in line in the basic and the advanced
        settings; with scroll bars that float over the content (macOS), a margin keeps them off the fields.

        The form is then never wider than its longest label's longest word beside that column, so it fits
        the narrow new-run card: the help lines wrap within it, and nothing goes under the scroll bar.
        """
        width = max(editor.sizeHint().width() for editor in self.editors.values())
        for grid in self._grids:
            grid.setColumnMinimumWidth(1, width)
        style = self.style()
        floating = style.styleHint(QStyle.StyleHint.SH_ScrollBar_Transient, None, self)
        bar = style.pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self) if floating else 0
        if self._box is not None:
            self._box.setContentsMargins(0, 0, bar, 0)

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        """Fit the columns to the editors as the style sheet draws them."""
        self._fit_columns()
        super().showEvent(event)

    def changeEvent(self, event: QEvent) -> None:  # Qt override
        """Fit the columns again when the style or the font changes."""
        if event.type() in (QEvent.Type.StyleChange, QEvent.Type.FontChange) and self._box is not None:
            self._fit_columns()
        super().changeEvent(event)

    def _add_field(self, grid: QGridLayout, row: int, spec: FieldSpec) -> None:
        kind = _TYPES[spec.name]
        editor: QWidget
        if kind == "bool":
            editor = QCheckBox()
            editor.toggled.connect(self._on_field_edited)
        elif spec.choices:
            editor = QComboBox()
            editor.addItems(list(spec.choices))
            editor.currentIndexChanged.connect(self._on_field_edited)
        elif kind == "str":
            editor = QLineEdit()
            editor.textEdited.connect(self._on_field_edited)
        elif kind == "int":
            editor = QSpinBox()
            editor.setRange(int(spec.minimum), int(spec.maximum))
            editor.setSingleStep(int(spec.step))
            editor.valueChanged.connect(self._on_field_edited)
        else:
            editor = ScientificSpinBox() if spec.scientific else QDoubleSpinBox()
            if not spec.scientific:
                editor.setDecimals(spec.decimals)
                editor.setSingleStep(spec.step)
            editor.setRange(spec.minimum, spec.maximum)
            editor.valueChanged.connect(self._on_field_edited)
        editor.setObjectName(f"setting_{spec.name}")
        editor.setToolTip(spec.help)
        label = styled_label(spec.label, "settingLabel", wrap=True)  # a long name wraps in a narrow card
        label.setBuddy(editor)
        help_label = styled_label(spec.help, "settingHelp", wrap=True)
        help_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)  # under its field
        grid.addWidget(label, row, 0)
        grid.addWidget(editor, row, 1)
        grid.addWidget(help_label, row + 1, 0, 1, 2)
        grid.setRowMinimumHeight(row + 1, 0)
        self.editors[spec.name] = editor
        self.help_labels[spec.name] = help_label

    # ---------------------------------------------------------------- values

    def set_settings(self, config: TrainConfig) -> None:
        """Show ``config`` (fields without an editor keep its values). Does not count as the person's edit."""
        self._base = config
        self._loading = True
        try:
            for name, editor in self.editors.items():
                value = getattr(config, name)
                if isinstance(editor, QCheckBox):
                    editor.setChecked(bool(value))
                elif isinstance(editor, QComboBox):
                    editor.setCurrentIndex(max(0, editor.findText(str(value))))
                elif isinstance(editor, QLineEdit):
                    editor.setText(str(value))
                elif isinstance(editor, QSpinBox):
                    editor.setValue(int(value))
                elif isinstance(editor, QDoubleSpinBox):
                    editor.setValue(float(value))
        finally:
            self._loading = False
        self.changed.emit()

    def values(self) -> dict[str, object]:
        """What the editors show, by field name (not validated)."""
        values: dict[str, object] = {}
        for name, editor in self.editors.items():
            if isinstance(editor, QCheckBox):
                values[name] = editor.isChecked()
            elif isinstance(editor, QComboBox):
                values[name] = editor.currentText()
            elif isinstance(editor, QLineEdit):
                values[name] = editor.text().strip()
            elif isinstance(editor, QSpinBox | QDoubleSpinBox):
                values[name] = editor.value()
        return values

    def settings(self) -> TrainConfig:
        """The config on the form. Raises ``TrainingError`` naming what cannot work."""
        return self._base.replace(**self.values())

    @Slot()
    def _on_field_edited(self, *_args: object) -> None:
        if self._loading:
            return
        self.touched = True
        self.changed.emit()
