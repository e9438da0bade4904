"""The Models view's details panel: the selected model's name, path, fingerprint, training status, lineage and
chat template, with the buttons that act on it. The plain functions above it turn a model row into the words the
view shows (also used by the table of registered models)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSizePolicy,
    QWidget,
)

from desktop_dpo.core.lineage import model_lineage
from desktop_dpo.core.llm.template_choice import TemplateStatus, template_status
from desktop_dpo.core.llm.templates import uses_default_template
from desktop_dpo.core.model_files import (
    CAN_MAKE_TRAINABLE_COPY_KEY,
    find_training_folder,
)
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.core.wording import human_size
from desktop_dpo.gui.template_editor import (
    TemplateNotice,
    describe_template,
    shown_template,
    template_column_text,
)
from desktop_dpo.gui.widgets import button, field_label, hbox, scroll_area, styled_label, vbox

KIND_LABELS = {"hf": "Hugging Face", "gguf": "GGUF"}
SOURCE_LABELS = {
    "user": "yours",
    "hf_cache": "HF cache",
    "lmstudio": "LM Studio",
    "ollama": "Ollama",
    "aligned": "aligned",
    "demo": "demo",
    "imported": "imported",
}
OWN_TEMPLATE_LABEL = "own template"
DEFAULT_TEMPLATE_LABEL = "default User:/Assistant: template (base model)"
TRAINABLE_AS_IS = "trainable as is"
NEEDS_COPY = "needs a trainable copy"
COPY_READY = "trainable copy ready"
CHAT_ONLY = "chat only (cannot be trained)"

# What the default template makes of a conversation, shown above its Jinja text.
DEFAULT_LAYOUT_EXAMPLE = (
    'A conversation is laid out like this (the model writes its answer after the last "Assistant:"):\n\n'
    "User: Tell me about tea.\nAssistant: Tea is a drink made from leaves.\nUser: Is it healthy?\n"
    "Assistant:\n\nThe template:\n"
)


# --------------------------------------------------------------------------------------------------------
# What the view shows, as plain functions of a model row
# --------------------------------------------------------------------------------------------------------


def human_count(count: int | None) -> str:
    """A parameter count as model cards write it: "270M", "1.5B", "6.2K"."""
    if not count:
        return "—"
    for divisor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= divisor:
            value = count / divisor
            return f"{value:.0f}{suffix}" if value >= 100 else f"{value:.1f}{suffix}".replace(".0", "")
    return str(count)


def template_label(model: ModelRow, status: TemplateStatus | None = None) -> str:
    """The model's own chat template, the app's default layout, the person's choice, or "needs a choice"."""
    return template_column_text(model, OWN_TEMPLATE_LABEL, DEFAULT_TEMPLATE_LABEL, status)


def trainable_copy_of(model: ModelRow) -> Path | None:
    """The folder training loads for a GGUF model (an exported model's merged folder, or a finished trainable
    copy); None when it has none ready."""
    return find_training_folder(model) if model.kind == "gguf" else None


def training_status(model: ModelRow) -> str:
    """Whether training can load the model as it is, needs a trainable copy first, has one, or cannot."""
    if model.kind == "hf":
        return TRAINABLE_AS_IS
    if trainable_copy_of(model) is not None:
        return COPY_READY
    return NEEDS_COPY if model.info.get(CAN_MAKE_TRAINABLE_COPY_KEY) else CHAT_ONLY


def format_label(model: ModelRow) -> str:
    """Kind and weight storage: "GGUF · Q4_K_M", "Hugging Face · BF16", "… · F16 · pickle"."""
    parts = [KIND_LABELS.get(model.kind, model.kind)]
    if model.info.get("dtype"):
        parts.append(str(model.info["dtype"]))
    if model.info.get("weights_format") == "pickle":
        parts.append("pickle")
    return " · ".join(parts)


def size_label(model: ModelRow) -> str:
    """Parameters and bytes on disk, on two lines: "270M parameters" / "253 MB"."""
    count = model.info.get("parameter_count")
    size = human_size(model.info.get("size_bytes"))
    return f"{human_count(count)} parameters\n{size}" if count else size


class ModelDetails(QFrame):
    """The selected model in full, and the buttons that act on it (the view connects them).

    Signals:
        terms_requested(): the person clicked the link to the demo model's terms.
    """

    terms_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("card")
        # The model's facts scroll when the window is short (each line keeps its height); the buttons stay.
        self.body = QWidget()
        self.body.setObjectName("detailsBody")
        layout = vbox(parent=self.body, margins=(0, 0, 6, 0), spacing=8)
        self.name = styled_label("Select a model to see its details", "detailsName", wrap=True)
        layout.addWidget(self.name)
        # Only for the bundled demo model: the terms it is used under, shown offline in a dialog.
        self.terms_note = styled_label(
            'Gemma 3 is provided under the <a href="terms">Gemma Terms of Use</a>; they also apply to '
            "models you train from it.",
            "cardNote",
            wrap=True,
        )
        self.terms_note.setOpenExternalLinks(False)
        self.terms_note.linkActivated.connect(self.terms_requested)
        self.terms_note.setVisible(False)
        layout.addWidget(self.terms_note)

        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(4)
        self.values: dict[str, QLabel | QLineEdit] = {}
        for row, (key, label) in enumerate(
            (
                ("path", "Path"),
                ("fingerprint", "Fingerprint"),
                ("training", "Training"),
                ("lineage", "Lineage"),
                ("template", "Chat template"),
            )
        ):
            name = field_label(label)
            value: QLabel | QLineEdit
            if key in ("path", "fingerprint"):
                # One line that scrolls: a long path or a hash has no spaces to wrap at; it can be copied.
                value = QLineEdit()
                value.setReadOnly(True)
                value.setFrame(False)
            else:
                value = QLabel()
                value.setWordWrap(True)
                value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setObjectName("fieldValue")
            value.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            grid.addWidget(name, row, 0, Qt.AlignmentFlag.AlignTop)
            self.values[key] = value
            if key != "template":
                grid.addWidget(value, row, 1)
                continue
            # The template's words, and beside them (not in a column of its own) the button to change it.
            self.template_button = button(
                "Chat template…",
                tooltip="See the template, pick a known one (ChatML, Llama 3, Gemma…) or edit it",
            )
            cell = hbox((value, 1), (self.template_button, 0, Qt.AlignmentFlag.AlignTop), spacing=8)
            grid.addLayout(cell, row, 1)
        grid.setColumnStretch(1, 1)
        layout.addLayout(grid)
        # A model that cannot be used until a template is chosen says so, with the way out.
        self.template_notice = TemplateNotice()
        layout.addWidget(self.template_notice)

        self.template_text = QPlainTextEdit()
        self.template_text.setObjectName("templateText")
        self.template_text.setReadOnly(True)
        self.template_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.template_text.setMinimumHeight(48)
        layout.addWidget(self.template_text, 1)
        layout.addStretch(0)  # takes the room while the template box is hidden (a model without one)
        outer = vbox(parent=self, margins=(16, 12, 10, 12), spacing=8)
        outer.addWidget(scroll_area(self.body, "detailsScroll", sideways=False), 1)

        # The Models view connects the buttons.
        self.use_button = button(
            "Use this model",
            tooltip="Collect and Chat use this model from now on (Enter in the list)",
            name="primaryButton",
        )
        self.default_button = button("Set as default", tooltip="The model the app opens with")
        self.copy_button = button("Make trainable copy")
        self.remove_button = button(
            "Remove from list", tooltip="Forget this model; its files and your comparisons stay (Delete)"
        )
        # Two rows, so the panel can share the width with "On this computer".
        buttons = QGridLayout()
        buttons.setHorizontalSpacing(8)
        buttons.setVerticalSpacing(6)
        buttons.addWidget(self.use_button, 0, 0)
        buttons.addWidget(self.default_button, 0, 1)
        buttons.addWidget(self.copy_button, 1, 0)
        buttons.addWidget(self.remove_button, 1, 1)
        buttons.setColumnStretch(2, 1)
        outer.addLayout(buttons)

    def show_model(self, model: ModelRow | None, store: Store, *, any_models: bool) -> None:
        """Show ``model`` (its lineage read from ``store``), or say that none is selected."""
        values = self.values
        self.terms_note.setVisible(model is not None and model.source == "demo")
        if model is None:
            self.name.setText("Select a model to see its details" if any_models else "No model selected")
            for value in values.values():
                value.clear()
            self.template_text.clear()
            self.template_text.setPlaceholderText("The chat template of the selected model appears here.")
            self.template_text.setVisible(True)
            self.template_notice.show_status(None)
            return
        info = model.info
        facts = [
            KIND_LABELS.get(model.kind, model.kind),
            str(info.get("architecture") or "unknown architecture"),
        ]
        if info.get("parameter_count"):
            facts.append(f"{human_count(info['parameter_count'])} parameters")
        self.name.setText(f"{model.name}  ·  {'  ·  '.join(facts)}")
        for key, text in (("path", model.path), ("fingerprint", model.fingerprint)):
            field = values[key]
            field.setText(text)
            field.setToolTip(text)
            if isinstance(field, QLineEdit):
                field.setCursorPosition(0)  # show the beginning; the rest scrolls
        status = training_status(model)
        copy = trainable_copy_of(model)
        if copy is not None:
            status += f": {copy}"
        elif status == NEEDS_COPY:
            status += " (made once, then training uses it)"
        values["training"].setText(status)
        steps = model_lineage(store, model.id)
        if len(steps) > 1:
            values["lineage"].setText(
                "\n".join(f"{'→ ' if i else ''}{step.describe()}" for i, step in enumerate(steps))
            )
        else:
            values["lineage"].setText("An original model: no round of alignment made it.")
        template = template_status(model)
        self.template_notice.show_status(template)
        # The notice says it in full; the field then only names the problem.
        values["template"].setText(
            "None that works yet: choose one (below)."
            if template.needs_choice
            else describe_template(model, template)
        )
        text = shown_template(model, template)
        example = DEFAULT_LAYOUT_EXAMPLE if text and uses_default_template(text) else ""
        self.template_text.setPlainText(example + text)
        self.template_text.setVisible(bool(text))  # none at all: the notice takes the room

    def texts(self) -> dict[str, str]:
        """What the panel shows: its heading, each field, and the template box."""
        return {key: label.text() for key, label in self.values.items()} | {
            "name": self.name.text(),
            "template_text": self.template_text.toPlainText(),
            "template_notice": self.template_notice.message(),
        }
