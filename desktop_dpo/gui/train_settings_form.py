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

from desktop_dpo.core.dpo.config import REFERENCE_FREE_LOSS_TYPES, SFT_PHASES, TrainConfig
from desktop_dpo.core.dpo.labels import KTO_EXPLAINED
from desktop_dpo.gui.widgets import STRETCH, FoldToggle, button, styled_label, vbox


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
    choice_labels: tuple[str, ...] = ()  # what the person reads for each of ``choices`` (default: the value)


LOSS_CHOICES = ("sigmoid", "ipo", "hinge", *REFERENCE_FREE_LOSS_TYPES, "kto")
# Under the loss choice: what the chosen one does, in a sentence.
LOSS_HELP = {
    "sigmoid": "DPO, the standard: learns to prefer your chosen answers while held near where it started",
    "ipo": "IPO: like DPO, but pushes less hard on pairs it has already learned",
    "hinge": "Hinge: like DPO, but stops pushing once a pair is clearly learned",
    "orpo": "ORPO: no copy of the starting model to hold it near, so less memory and time; also learns to "
    "write your chosen answers",
    "simpo": "SimPO: no copy of the starting model, so less memory and time; compares the answers' average "
    "word by word, so a longer answer gets no head start",
    "kto": "KTO: learns from each answer on its own, good or bad, so “both bad” picks and rewrites teach too",
}
# The settings that only some losses use, shown only when the chosen loss uses them.
LOSS_SETTINGS = {
    "beta": ("sigmoid", "ipo", "hinge", "kto"),
    "label_smoothing": ("sigmoid",),
    "sft_weight": ("sigmoid", "ipo", "hinge"),
    "orpo_lambda": ("orpo",),
    "simpo_beta": ("simpo",),
    "simpo_gamma": ("simpo",),
}


def _advanced(*specs: FieldSpec) -> tuple[FieldSpec, ...]:
    """``specs``, folded under "Advanced settings"."""
    return tuple(dataclasses.replace(spec, advanced=True) for spec in specs)


FIELDS = (
    FieldSpec("beta", "β (beta)", "How far the model may move from where it started: higher keeps it "
              "closer (safer, learns less), lower lets it change more. 0.1 is the usual start; Find β "
              "measures a few on your pairs", minimum=0.01, maximum=10, step=0.05, decimals=3),
    FieldSpec("lr", "Learning rate", "How big each update is: too high and the model forgets how to write, "
              "too low and nothing changes", minimum=1e-7, maximum=1e-1, scientific=True),
    FieldSpec("epochs", "Epochs", "How many times training reads every pair", minimum=1, maximum=100),
    FieldSpec("batch_size", "Batch size", "Pairs per forward pass: larger is faster but needs more memory",
              minimum=1, maximum=256),
    # folded under "Advanced settings"
    *_advanced(
        FieldSpec("loss_type", "Loss", LOSS_HELP["sigmoid"], choices=LOSS_CHOICES,
                  choice_labels=("DPO", "IPO", "Hinge", "ORPO", "SimPO", "KTO")),
        FieldSpec("orpo_lambda", "ORPO weight (λ)", "How much the preference counts next to learning to write "
                  "the chosen answers (0.1 is the paper's start; higher = the preference counts more)",
                  minimum=0.001, maximum=10, step=0.05, decimals=3),
        FieldSpec("simpo_beta", "SimPO β", "How sharply SimPO separates the two answers (2 to 2.5 is the "
                  "paper's start)", minimum=0.01, maximum=50, step=0.1),
        FieldSpec("simpo_gamma", "SimPO margin (γ)", "How far ahead the chosen answer must be before a pair "
                  "counts as learned (about half of SimPO β is the paper's start)", maximum=50, step=0.1),
        FieldSpec("label_smoothing", "Label smoothing", "The share of your picks you think may be wrong "
                  "(conservative DPO; sigmoid loss only)", maximum=0.49, step=0.05),
        FieldSpec("sft_weight", "SFT weight", "Also trains the model to write the answers you chose, not only to "
                  "prefer them (RPO; 0 = off, 1 = as much)", maximum=10, step=0.1),
        FieldSpec("sft_phase", "Learn by example first", "Before learning from your choices, the model first "
                  "learns to write the answers you wrote or rewrote yourself (and, if you like, the ones you "
                  "chose). Helps a base model most", choices=SFT_PHASES,
                  choice_labels=("Off", "Written answers", "Written + chosen")),
        FieldSpec("sft_epochs", "Example passes", "How many times that first stage reads your written answers",
                  minimum=1, maximum=100),
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
    find_beta_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._base = TrainConfig()
        self._loading = False
        self.touched = False
        self.editors: dict[str, QWidget] = {}
        self.help_labels: dict[str, QLabel] = {}
        self._row_widgets: dict[str, list[QWidget]] = {}  # a field's label, editor and help line
        self._box: QVBoxLayout | None = None

        basic = QWidget()
        self.advanced = QWidget()
        self.advanced.setObjectName("advancedSettings")
        self._grids = (self._grid(basic), self._grid(self.advanced))
        rows = dict.fromkeys(self._grids, 0)
        for spec in FIELDS:
            grid = self._grids[spec.advanced]
            self._add_field(grid, rows[grid], spec)
            rows[grid] += 3 if spec.name == "loss_type" else 2  # the loss: KTO's single-labels line too

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
            for value, text in zip(spec.choices, spec.choice_labels or spec.choices, strict=True):
                editor.addItem(text, value)

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
        grid.addWidget(help_label, row + 1, 0, 1, 1 if spec.name == "beta" else 2)  # β: Find β beside it
        grid.setRowMinimumHeight(row + 1, 0)
        self.editors[spec.name] = editor
        self.help_labels[spec.name] = help_label
        self._row_widgets[spec.name] = [label, editor, help_label]
        if spec.name == "loss_type":  # what KTO's single labels add (set_single_labels), under the choice
            self.single_labels_note = styled_label("", "settingHelp", wrap=True, tooltip=KTO_EXPLAINED)
            grid.addWidget(self.single_labels_note, row + 2, 0, 1, 2)
        if spec.name == "beta":  # measured on the person's pairs (gui/beta_search_dialog.py), under β's field
            self.find_beta_button = button("Find β…", self.find_beta_requested.emit, name="linkButton")
            self.find_beta_button.setToolTip("Short trainings at a few β, measured on your held-out pairs")
            grid.addWidget(self.find_beta_button, row + 1, 1, Qt.AlignmentFlag.AlignTop)
            self._row_widgets[spec.name].append(self.find_beta_button)

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
                    editor.setCurrentIndex(max(0, editor.findData(str(value))))
                elif isinstance(editor, QLineEdit):
                    editor.setText(str(value))
                elif isinstance(editor, QSpinBox):
                    editor.setValue(int(value))
                elif isinstance(editor, QDoubleSpinBox):
                    editor.setValue(float(value))
        finally:
            self._loading = False
        self._show_loss_settings()
        self.changed.emit()

    def _show_loss_settings(self) -> None:
        """Only the settings the chosen loss uses are on the form (ORPO has no β, DPO no SimPO margin)."""
        loss = self.editors["loss_type"].currentData()
        self.help_labels["loss_type"].setText(LOSS_HELP.get(loss, ""))
        for name, losses in LOSS_SETTINGS.items():
            for widget in self._row_widgets[name]:
                widget.setHidden(loss not in losses)
        self.single_labels_note.setHidden(loss != "kto" or not self.single_labels_note.text())

    def set_single_labels(self, text: str) -> None:
        """The line shown under the loss choice while KTO is chosen: what single labels add to the chosen
        model's pairs (``labels.single_labels_text``)."""
        self.single_labels_note.setText(text)
        self._show_loss_settings()

    def values(self) -> dict[str, object]:
        """What the editors show, by field name (not validated)."""
        values: dict[str, object] = {}
        for name, editor in self.editors.items():
            if isinstance(editor, QCheckBox):
                values[name] = editor.isChecked()
            elif isinstance(editor, QComboBox):
                values[name] = editor.currentData()
            elif isinstance(editor, QLineEdit):
                values[name] = editor.text().strip()
            elif isinstance(editor, QSpinBox | QDoubleSpinBox):
                values[name] = editor.value()
        return values

    def set_beta(self, beta: float) -> None:
        """Put ``beta`` on the form, as the person's own edit (what "Use β" in Find β does)."""
        self.editors["beta"].setValue(beta)

    def settings(self) -> TrainConfig:
        """The config on the form. Raises ``TrainingError`` naming what cannot work. A setting the chosen loss
        does not use (hidden on the form) is off: label smoothing and the SFT weight belong to DPO."""
        values = self.values()
        for name in ("label_smoothing", "sft_weight"):
            if values["loss_type"] not in LOSS_SETTINGS[name]:
                values[name] = 0.0
        return self._base.replace(**values)

    @Slot()
    def _on_field_edited(self, *_args: object) -> None:
        if self._loading:
            return
        self.touched = True
        self._show_loss_settings()
        self.changed.emit()
