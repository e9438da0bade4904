"""The Chat page: talking to a model, and the blind A/B check that an aligned model really got better.

Two tabs side by side (not one inside the other, so each keeps its own keyboard shortcuts: Esc stops a
reply in Chat and a pair of answers in Evaluate, and only the tab on screen receives it).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QTabWidget, QWidget

from desktop_dpo.core.store import ModelRow
from desktop_dpo.gui.chat_view import ChatView
from desktop_dpo.gui.evaluate_view import EvaluateView

CHAT_TAB, EVALUATE_TAB = 0, 1


class ChatPage(QTabWidget):
    """ "Chat" and "Evaluate" tabs.

    Signals:
        models_requested(): the person has no model yet and wants to add one.
        compare_requested(object, object): judge two answers to a chat message in Collect (the messages up
            to and including it, and the conversation's model or None); see ``ChatView.compare_requested``.
    """

    models_requested = Signal()
    compare_requested = Signal(object, object)

    def __init__(self, *, parent: QWidget | None = None, **services: Any):
        """``services`` are the views' own (``store``, ``registry``, ``pool``, ``paths``: see ``ModelWorkView``)."""
        super().__init__(parent)
        self.setObjectName("chatPage")
        self.setDocumentMode(True)
        self.chat = ChatView(**services)
        self.evaluate = EvaluateView(**services)
        self.addTab(self.chat, "Chat")
        self.addTab(self.evaluate, "Evaluate (blind A/B)")
        self.setTabToolTip(CHAT_TAB, "Talk to any registered model; conversations are kept")
        self.setTabToolTip(
            EVALUATE_TAB,
            "Compare an aligned model with its base on prompts it never trained on, names hidden",
        )
        self.chat.models_requested.connect(self.models_requested)
        self.chat.compare_requested.connect(self.compare_requested)

    def set_model(self, model: ModelRow | None) -> None:
        """Chat with ``model`` from now on."""
        self.chat.set_model(model)

    def refresh_models(self) -> None:
        """Re-read the registered models in both tabs."""
        self.chat.refresh_models()
        self.evaluate.refresh_models()

    def evaluate_models(self, base: ModelRow, aligned: ModelRow) -> None:
        """Open the Evaluate tab on ``aligned`` against ``base``."""
        self.evaluate.set_models(base, aligned)
        self.setCurrentIndex(EVALUATE_TAB)
