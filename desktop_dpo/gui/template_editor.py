"""The chat template of one model: see it, pick a known one, or edit it, checked by rendering a sample.

How a model reads a conversation is its chat template (Jinja). The choice is stored per model
(:func:`~desktop_dpo.core.llm.template_choice.set_template_choice`) and every part of the app uses it from
the next answer on: Collect, Chat and Evaluate (the engine is loaded again with the new template), training
and the export (which writes it into the GGUF's header).

- :class:`TemplateEditorDialog`: the choice ("The model's own", each known template, "Edit…"), the Jinja
  text (read-only unless editing), and a preview of
  :data:`~desktop_dpo.core.llm.template_choice.SAMPLE_CONVERSATION` as the model will read it, rendered
  again as the person types (debounced). A template that does not render says why in place, and Save
  waits until it does. Rendering is fast and bounded by the renderer's budget, so it runs on the GUI thread.
- :class:`TemplateNotice`: the amber notice the Models view shows for a model that cannot be used until a
  template is chosen (a GGUF without one, or a broken one of its own): the clear choice, never a silent fallback.
- :func:`ensure_template_chosen`: what a view calls before it starts model work; it opens the editor, with
  the reason, when the model needs a choice.
- :func:`describe_template`, :func:`template_column_text`: the words the Models view shows.
"""

from __future__ import annotations

import re

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontDatabase,
    QGuiApplication,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextOption,
)
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QFrame,
    QLabel,
    QPlainTextEdit,
    QRadioButton,
    QSizePolicy,
    QSplitter,
    QWidget,
)

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.llm.template_choice import (
    KNOWN_TEMPLATES,
    TemplateChoice,
    TemplateStatus,
    check_template,
    marker_hint,
    set_template_choice,
    template_choice,
    template_for,
    template_status,
)
from desktop_dpo.core.llm.templates import (
    DEFAULT_TEMPLATE,
    ChatTemplateError,
    stop_strings,
    uses_default_template,
)
from desktop_dpo.core.model_files import CHAT_TEMPLATE_KEY, recorded_chat_template, special_tokens
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.gui.theme import follow_scheme, text_colour
from desktop_dpo.gui.widgets import (
    STRETCH,
    BoxItem,
    button,
    hbox,
    scroll_area,
    set_style_property,
    styled_label,
    text_label,
    vbox,
)

OWN = "own"  # the option "The model's own"
EDIT = "custom"  # the option "Edit…"
CHECK_DELAY_MS = 300  # an edit is rendered again this long after the last key
# The tokens a preview shows when the model's files do not name theirs (a template that prints them).
PREVIEW_BOS, PREVIEW_EOS = "<s>", "</s>"
# The table's words for a model that cannot be used until a template is chosen.
NEEDS_CHOICE_LABEL = "⚠ needs a choice"
NEEDS_CHOICE_COLOUR = "#b45309"  # amber, as the views' other notes that ask for an action


# --------------------------------------------------------------------------------------------------------
# Words for the Models view
# --------------------------------------------------------------------------------------------------------


def _quoted(strings: list[str]) -> str:
    return ", ".join(repr(s) for s in strings)


def describe_template(model: ModelRow, status: TemplateStatus | None = None) -> str:
    """Which template ``model`` is used with, how it ends an answer and where generation stops; or why it
    needs a choice first. One paragraph for the model's details (``status``: its
    :func:`~desktop_dpo.core.llm.template_choice.template_status`, when the caller has it already)."""
    status = status or template_status(model)
    if status.needs_choice:
        return status.message
    bos, eos = special_tokens(model)
    return f"{status.message} {ending_sentence(template_for(model), bos, eos)}"


def ending_sentence(template: str | None, bos: str, eos: str) -> str:
    """How ``template`` ends an answer and where generation stops: "Ends an answer with '<|im_end|>';
    generation stops at '<|im_end|>', '</s>'." """
    hint = marker_hint(template, bos, eos)
    return f"{hint[:1].upper()}{hint[1:]}; generation stops at {_quoted(stop_strings(template, bos, eos))}."


def template_column_text(
    model: ModelRow, own_label: str, plain_label: str, status: TemplateStatus | None = None
) -> str:
    """What the models table says about the template: ``own_label``, ``plain_label``, the choice
    ("ChatML (chosen)", "edited by you"), or :data:`NEEDS_CHOICE_LABEL`."""
    status = status or template_status(model)
    if status.needs_choice:
        return NEEDS_CHOICE_LABEL
    if status.kind == "chosen":
        choice = template_choice(model)
        assert choice is not None
        return choice.describe() if choice.kind == "known" else "edited by you"
    return own_label if status.kind == "own" else plain_label


def shown_template(model: ModelRow, status: TemplateStatus | None = None) -> str:
    """The Jinja text the model is used with (the plain layout's when it has none); "" when it needs a choice
    because it has none at all."""
    status = status or template_status(model)
    if status.kind == "missing":
        return ""
    if status.kind == "broken":
        return str(model.info.get(CHAT_TEMPLATE_KEY) or "")
    return template_for(model) or DEFAULT_TEMPLATE


# --------------------------------------------------------------------------------------------------------
# Highlighting: Jinja tags in the editor, the template's markers in the preview
# --------------------------------------------------------------------------------------------------------


class _PatternHighlighter(QSyntaxHighlighter):
    """Colours every match of a few regular expressions (within a line) in the editor ``shown_in``, in the
    scheme shown (``rules`` name light-scheme colours)."""

    def __init__(self, shown_in: QPlainTextEdit, rules: list[tuple[str, str, bool]]):
        super().__init__(shown_in.document())
        self._light_rules = [(re.compile(pattern), colour, bold) for pattern, colour, bold in rules]
        self._rules: list[tuple[re.Pattern[str], QTextCharFormat]] = []
        self._paint_rules()
        follow_scheme(shown_in, self._on_scheme_changed)

    def _paint_rules(self) -> None:
        self._rules = []
        for pattern, colour, bold in self._light_rules:
            form = QTextCharFormat()
            form.setForeground(QColor(text_colour(colour)))
            if bold:
                form.setFontWeight(QFont.Weight.DemiBold)
            self._rules.append((pattern, form))

    def _on_scheme_changed(self) -> None:
        self._paint_rules()
        self.rehighlight()

    def highlightBlock(self, text: str) -> None:  # Qt override
        for pattern, form in self._rules:
            for match in pattern.finditer(text):
                self.setFormat(match.start(), match.end() - match.start(), form)


JINJA_RULES = [
    (r"\{%-?.*?-?%\}", "#7c3aed", False),  # statements
    (r"\{\{-?.*?-?\}\}", "#0f766e", False),  # expressions
    (r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "#b45309", False),  # string literals
    (r"\{#.*?#\}", "#94a3b8", False),  # comments
]
# Markers templates write around turns: <|im_start|>, <start_of_turn>, </s>, [INST], and the plain layout's.
PREVIEW_RULES = [
    (r"<\|?/?[A-Za-z_][\w.-]*\|?>|\[/?INST\]", "#4338ca", True),
    (r"^(?:User|Assistant):", "#4338ca", True),
]


# The renderer's advice is for a model met while sampling; in the editor the way out is right there.
_SAMPLING_ADVICE = re.compile(
    r"\s*Choose another model, or remove the template so the plain User:/Assistant: layout is\s+used\.?"
)


def editor_words(message: str) -> str:
    """A rendering error as the editor says it: about "this template", without advice for elsewhere."""
    message = _SAMPLING_ADVICE.sub("", message).replace(".).", ".)")
    for start in ("The model's chat template ", "The chat template "):
        if message.startswith(start):
            message = "This template " + message[len(start) :]
    return message


def _monospace_editor(name: str) -> QPlainTextEdit:
    editor = QPlainTextEdit()
    editor.setObjectName(name)
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setPointSizeF(max(font.pointSizeF(), 9.5))
    editor.setFont(font)
    editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
    # Templates are often one long line without spaces: wrap anywhere rather than scroll sideways.
    editor.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
    editor.setTabChangesFocus(False)
    editor.document().setDocumentMargin(6)
    return editor


def _section(heading: str, hint: QLabel, *items: BoxItem) -> QWidget:
    """A part of the editor's text card: its heading, ``hint`` at the right, and ``items`` below."""
    section = QWidget()
    top = hbox(styled_label(heading, "sectionHeading"), STRETCH, hint)
    vbox(top, *items, parent=section, margins=(0, 0, 0, 0), spacing=4)
    return section


# --------------------------------------------------------------------------------------------------------
# The notice in the model's details
# --------------------------------------------------------------------------------------------------------


class TemplateNotice(QFrame):
    """Amber: this model cannot be used until a template is chosen, why, and a "Choose a template…" button.

    Signals:
        choose_requested(): the person pressed "Choose a template…".
    """

    choose_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("templateNotice")
        icon = styled_label("⚠", "templateNoticeText")
        self.text = text_label("", "templateNoticeText", selectable=True)
        self.text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.choose_button = button(
            "Choose a template…",
            self.choose_requested,
            tooltip="Pick the template the model was trained with, or write one",
            name="primaryButton",
        )
        text_column = vbox(self.text, (self.choose_button, 0, Qt.AlignmentFlag.AlignLeft), spacing=6)
        hbox(
            (icon, 0, Qt.AlignmentFlag.AlignTop),
            (text_column, 1),
            parent=self,
            margins=(10, 8, 10, 8),
            spacing=8,
        )
        self.setVisible(False)

    def show_status(self, status: TemplateStatus | None) -> None:
        """Show the notice for a model that needs a choice; hide it otherwise."""
        needs = status is not None and status.needs_choice
        self.text.setText(status.message if needs and status is not None else "")
        self.setVisible(needs)

    def message(self) -> str:
        """The words shown ("" when hidden)."""
        return self.text.text() if not self.isHidden() else ""


# --------------------------------------------------------------------------------------------------------
# The editor
# --------------------------------------------------------------------------------------------------------


class TemplateEditorDialog(QDialog):
    """See, pick or edit the chat template of one model; Save stores the choice for that model.

    Args:
        store: the GUI thread's database connection (the choice is written there).
        model: the model, as registered.
        reason: why the editor was opened for the person, when something needs their choice (shown amber).

    Signals:
        template_saved(object): the choice was stored (or removed); the model's row as it is now.
    """

    template_saved = Signal(object)

    def __init__(self, store: Store, model: ModelRow, *, reason: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("templateEditor")
        self.setWindowTitle(f"Chat template · {model.name}")
        self.store = store
        self.model = model
        self.saved_model: ModelRow | None = None  # the row after Save / "Use the model's own"
        self._bos, self._eos = special_tokens(model)
        self._own: str | None = recorded_chat_template(model)
        self._own_error = ""
        if self._own is not None and not uses_default_template(self._own):
            try:
                check_template(self._own, *self._preview_tokens())
            except ChatTemplateError as exc:
                self._own_error = str(exc)
        self._status = template_status(model)
        self._selection: str | None = None
        self._render_ok = False
        self._check_timer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(CHECK_DELAY_MS)
        self._check_timer.timeout.connect(self._render_preview)

        self._build(reason)
        self._select_current()
        self._fit_to_screen()

    # ---------------------------------------------------------------- building

    def _build(self, reason: str) -> None:
        title = styled_label(f"Chat template of {self.model.name}", "editorTitle", wrap=True)
        summary = styled_label(
            "How the model reads a conversation. Collect, Chat, training and the export use this template "
            "from the next answer on, and the export writes it into the GGUF file.",
            "editorSummary",
            wrap=True,
        )
        self.notice = TemplateNotice()
        self.notice.choose_button.setVisible(False)  # the choice is right below
        if reason:
            self.notice.text.setText(reason)
            self.notice.setVisible(True)
        self.now_label = styled_label(f"Used now: {self._status_words()}", "editorNow", wrap=True)
        self.now_label.setVisible(not reason)

        body = QSplitter(Qt.Orientation.Horizontal)
        body.setChildrenCollapsible(False)
        body.addWidget(self._build_options())
        body.addWidget(self._build_text())
        body.setStretchFactor(0, 0)
        body.setStretchFactor(1, 1)
        body.setSizes([290, 10_000])

        has_choice = template_choice(self.model) is not None
        self.use_own_button = button(
            "Use the model's own",
            self.use_own,
            tooltip="Forget your choice: the template in the model's files is used again (the plain "
            "User:/Assistant: layout when it has none)"
            if has_choice
            else "The model already uses its own template: you have chosen none.",
        )
        self.use_own_button.setEnabled(has_choice)
        self.cancel_button = button("Cancel", self.reject)
        self.save_button = button("Save", self.save, name="primaryButton")
        self.save_button.setDefault(True)
        buttons = hbox(self.use_own_button, STRETCH, self.cancel_button, self.save_button, spacing=8)

        vbox(
            title,
            summary,
            self.notice,
            self.now_label,
            (body, 1),
            buttons,
            parent=self,
            margins=(18, 14, 18, 14),
            spacing=8,
        )

    def _build_options(self) -> QWidget:
        card = QFrame()
        card.setObjectName("optionsCard")
        card.setMinimumWidth(230)
        heading = styled_label("Use", "sectionHeading")
        self.option_group = QButtonGroup(self)
        self.option_group.setExclusive(True)
        self.options: dict[str, QRadioButton] = {}
        self.option_notes: dict[str, QLabel] = {}
        listing = QWidget()
        listing.setObjectName("optionsList")
        rows = vbox(parent=listing, margins=(0, 0, 0, 0), spacing=2)

        def add(key: str, label: str, note: str, *, enabled: bool = True, error: bool = False) -> None:
            button = QRadioButton(label)
            button.setObjectName("templateOption")
            button.setEnabled(enabled)
            note_label = text_label(note, "optionNote")
            note_label.setProperty("tone", "error" if error else "")
            button.setToolTip(note)
            self.option_group.addButton(button)
            button.toggled.connect(lambda on, k=key: self._on_option_toggled(k, on))
            rows.addWidget(button)
            rows.addWidget(note_label)
            rows.addSpacing(4)
            self.options[key] = button
            self.option_notes[key] = note_label

        if self._own_error:
            add(OWN, "The model's own", f"Does not work: {self._own_error}", enabled=False, error=True)
        elif self._own is not None and not uses_default_template(self._own):
            add(OWN, "The model's own", "The template in the model's files.")
        elif self.model.kind == "gguf" and self._status.kind == "missing":
            add(OWN, "The model's own", "The GGUF file has none.", enabled=False)
        else:
            add(
                OWN,
                "The model's own",
                "It has none: the plain User:/Assistant: layout is used.",
                enabled=self._own is not None,  # an export of a base model carries the plain layout
            )
        for name, known in KNOWN_TEMPLATES.items():
            add(name, known.label, known.models)
        add(EDIT, "Edit…", "Start from the template shown and change it; checked as you type.")
        rows.addStretch(1)

        scroll = scroll_area(listing, "optionsScroll", sideways=False)
        vbox(heading, (scroll, 1), parent=card, margins=(12, 10, 6, 10), spacing=6)
        return card

    def _build_text(self) -> QWidget:
        card = QFrame()
        card.setObjectName("textCard")
        self.mode_hint = styled_label("", "sectionHint")
        self.editor = _monospace_editor("templateSource")
        self.editor.setReadOnly(True)
        self.editor.setPlaceholderText("Pick a template on the left, or Edit… to write one.")
        self.editor.textChanged.connect(self._on_text_changed)
        self._editor_highlighter = _PatternHighlighter(self.editor, JINJA_RULES)
        source = _section("Template (Jinja)", self.mode_hint, (self.editor, 1))

        self.preview = _monospace_editor("templatePreview")
        self.preview.setReadOnly(True)
        self._preview_highlighter = _PatternHighlighter(self.preview, PREVIEW_RULES)
        self.error_label = text_label("", "renderError", selectable=True)
        self.error_label.setVisible(False)
        self.stop_label = text_label("", "stopLine")
        preview = _section(
            "A sample conversation, as the model reads it",
            styled_label("the model writes its answer at the end", "sectionHint"),
            self.error_label,
            (self.preview, 1),
            self.stop_label,
        )

        split = QSplitter(Qt.Orientation.Vertical)
        split.setChildrenCollapsible(False)
        split.addWidget(source)
        split.addWidget(preview)
        split.setSizes([10_000, 10_000])
        vbox(split, parent=card, margins=(12, 10, 12, 10))
        return card

    def _fit_to_screen(self) -> None:
        """Whole on a 1280×800 screen, usable on 1024×640."""
        self.setMinimumSize(720, 480)
        screen = self.screen() or QGuiApplication.primaryScreen()
        width, height = 1060, 700
        if screen is not None:
            available = screen.availableGeometry()
            width = min(width, available.width() - 40)
            height = min(height, available.height() - 40)
        self.resize(max(width, 720), max(height, 480))

    # ---------------------------------------------------------------- state

    def _status_words(self) -> str:
        if self._status.needs_choice:
            return self._status.message
        return describe_template(self.model, self._status)

    def _preview_tokens(self) -> tuple[str, str]:
        return self._bos or PREVIEW_BOS, self._eos or PREVIEW_EOS

    def _select_current(self) -> None:
        """Start on what the model uses now: its choice, its own template, or nothing picked yet."""
        choice = template_choice(self.model)
        if choice is not None and choice.kind == "known":
            self.options[choice.name].setChecked(True)
        elif choice is not None:
            self._start_editing(choice.text)
        elif self._status.kind == "own":
            self.options[OWN].setChecked(True)
        else:
            # Nothing picked: show what is used now (the plain layout), or the broken template with its error.
            self._show_text(shown_template(self.model, self._status), editable=False)
        self._render_preview()

    def selection(self) -> str | None:
        """The option picked: "own", a known template's name, "custom", or None."""
        return self._selection

    def is_editing(self) -> bool:
        """True while the template text can be edited (the option "Edit…")."""
        return not self.editor.isReadOnly()

    def template_text(self) -> str:
        """The template shown in the editor."""
        return self.editor.toPlainText()

    def preview_text(self) -> str:
        """The sample conversation as rendered ("" while the template does not render)."""
        return self.preview.toPlainText() if self._render_ok else ""

    def render_error(self) -> str:
        """Why the template does not render ("" when it does)."""
        return self.error_label.text() if not self.error_label.isHidden() else ""

    def stops_text(self) -> str:
        """How answers end with the template shown, and where generation stops."""
        return self.stop_label.text()

    def can_save(self) -> bool:
        """Whether Save is enabled: an option picked, and its template renders the sample conversation."""
        return self.save_button.isEnabled()

    # ---------------------------------------------------------------- picking and editing

    def pick(self, key: str) -> None:
        """Pick an option: "own", a key of ``KNOWN_TEMPLATES`` or "custom" (as a click on it does)."""
        button = self.options[key]
        if not button.isEnabled():
            raise ValueError(f"The option {key!r} cannot be picked for {self.model.name}.")
        button.setChecked(True)

    def set_template_text(self, text: str) -> None:
        """Replace the text being edited (the option "Edit…" must be picked)."""
        if not self.is_editing():
            raise ValueError("Pick Edit… before changing the template.")
        self.editor.setPlainText(text)

    def check_now(self) -> None:
        """Render the preview at once rather than after the typing pause."""
        self._check_timer.stop()
        self._render_preview()

    def _on_option_toggled(self, key: str, on: bool) -> None:
        if not on:
            return
        self._selection = key
        if key == EDIT:
            self._start_editing(self.editor.toPlainText() or shown_template(self.model, self._status))
        elif key == OWN:
            self._show_text(self._own or DEFAULT_TEMPLATE, editable=False)
        else:
            self._show_text(KNOWN_TEMPLATES[key].text, editable=False)
        self._render_preview()

    def _start_editing(self, text: str) -> None:
        self._selection = EDIT
        if not self.options[EDIT].isChecked():
            self.options[EDIT].blockSignals(True)
            self.options[EDIT].setChecked(True)
            self.options[EDIT].blockSignals(False)
        self._show_text(text, editable=True)
        self.editor.setFocus()

    def _show_text(self, text: str, *, editable: bool) -> None:
        self.editor.blockSignals(True)
        self.editor.setPlainText(text)
        self.editor.blockSignals(False)
        self.editor.setReadOnly(not editable)
        set_style_property(self.editor, "editing", editable)
        self.mode_hint.setText(
            "editing: the preview follows as you type" if editable else "read-only: pick Edit… to change it"
        )
        set_style_property(self.mode_hint, "editing", editable)

    @Slot()
    def _on_text_changed(self) -> None:
        if self.editor.isReadOnly():
            return
        # Until the edit has been rendered, nobody knows whether it works: Save waits for the check.
        self._render_ok = False
        self.save_button.setEnabled(False)
        self._check_timer.start()

    @Slot()
    def _render_preview(self) -> None:
        """Render the sample conversation with the template shown; say why in place when it cannot."""
        self._check_timer.stop()
        text = self.editor.toPlainText()
        if not text.strip() and self._selection is None:
            self._render_ok = False
            self.preview.clear()
            self.preview.setPlaceholderText("The sample conversation appears here once a template is picked.")
            self.error_label.setVisible(False)
            self.stop_label.setText("")
            self._update_save()
            return
        bos, eos = self._preview_tokens()
        try:
            rendered = check_template(text, bos, eos)
        except ChatTemplateError as exc:
            self._render_ok = False
            self.error_label.setText(editor_words(str(exc)))
            self.error_label.setVisible(True)
            self.preview.clear()
            self.preview.setPlaceholderText(
                "Nothing to show: the sample conversation cannot be rendered with this template."
            )
            self.stop_label.setText("")
        else:
            self._render_ok = True
            self.error_label.setVisible(False)
            self.error_label.clear()
            self.preview.setPlainText(rendered)
            # With the model's own token texts, as the engines stop (the preview's stand-ins are only shown).
            self.stop_label.setText(ending_sentence(text, self._bos, self._eos))
        self._update_save()

    def _update_save(self) -> None:
        ok = self._selection is not None and self._render_ok and not self._check_timer.isActive()
        self.save_button.setEnabled(ok)
        if self._selection is None:
            reason = "Pick a template on the left first."
        elif not ok:
            reason = "The template must render the sample conversation first."
        else:
            reason = f"Use this template for {self.model.name} from the next answer on"
        self.save_button.setToolTip(reason)

    # ---------------------------------------------------------------- storing

    def _choice(self) -> TemplateChoice | None:
        if self._selection == OWN:
            return None
        if self._selection == EDIT:
            return TemplateChoice("custom", text=self.editor.toPlainText())
        assert self._selection is not None
        return TemplateChoice("known", name=self._selection)

    @Slot()
    def save(self) -> bool:
        """Store the option picked for the model (as Save does). False when nothing was stored (why is shown)."""
        self.check_now()
        if not self.can_save():
            return False
        return self._store(self._choice())

    @Slot()
    def use_own(self) -> bool:
        """Forget the person's choice: the model's own template (or the plain layout) is used again."""
        if not self.use_own_button.isEnabled():
            return False
        return self._store(None)

    def _store(self, choice: TemplateChoice | None) -> bool:
        try:
            set_template_choice(self.store, self.model.id, choice)
        except DesktopDpoError as exc:  # ChatTemplateError (an edit that does not render), StoreError
            self.error_label.setText(f"Not saved: {exc}")
            self.error_label.setVisible(True)
            return False
        self.saved_model = self.store.get_model(self.model.id)
        self.template_saved.emit(self.saved_model)
        self.accept()
        return True


# --------------------------------------------------------------------------------------------------------
# For the views
# --------------------------------------------------------------------------------------------------------


def open_template_editor(
    parent: QWidget | None, store: Store, model: ModelRow, *, reason: str = ""
) -> ModelRow | None:
    """Open the editor for ``model`` and wait for the person. Returns the model's row as stored after they
    saved (or went back to the model's own), None when they cancelled."""
    dialog = TemplateEditorDialog(store, model, reason=reason, parent=parent)
    try:
        dialog.exec()
        return dialog.saved_model
    finally:
        dialog.deleteLater()


def template_needed_message(model: ModelRow) -> str:
    """What a view says when the person closed the editor without choosing: nothing was started."""
    return f"Not started: {model.name} needs its chat template chosen first (Models → Chat template…)."


def ensure_template_chosen(parent: QWidget | None, store: Store, model: ModelRow) -> ModelRow | None:
    """Before model work starts: ``model`` as stored now when it can be used, else None.

    A model that needs a chat template chosen first (a GGUF without one, or a broken one of its own) opens
    the editor with the reason; the person picks one (then the stored row is returned, with the choice) or
    cancels (None: do not start). Pass the returned row on to the job, not ``model``, which may be stale.
    """
    current = store.get_model(model.id) or model
    status = template_status(current)
    if not status.needs_choice:
        return current
    open_template_editor(parent, store, current, reason=status.message)
    after = store.get_model(model.id)
    if after is None or template_status(after).needs_choice:
        return None
    return after
