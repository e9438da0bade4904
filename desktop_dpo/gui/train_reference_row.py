"""The Train view's reference choice for a next round: what the preference loss holds the model near.

A model made by an earlier run can be held near itself as it is now (the usual choice) or near an earlier
model of its lineage (e.g. the original base). The row shows only for such a model, and only for a loss that
has a reference: ORPO and SimPO hold the model near nothing.
"""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QWidget

from desktop_dpo.core.dpo.config import REFERENCE_FREE_LOSS_TYPES
from desktop_dpo.core.lineage import model_lineage
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.gui.widgets import field_label, hbox

REFERENCE_TIP = (
    "What training holds the model near while it learns your picks: the model itself as it is now "
    "(the usual choice for a next round), or an earlier model of its lineage (e.g. the original base)"
)


class ReferenceChoice(QWidget):
    """The label and the choices of a model's reference (``reference()``: "adapter_off" or "model:<id>")."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = field_label("Reference")
        self.combo = QComboBox()
        self.combo.setObjectName("referenceCombo")
        self.combo.setToolTip(REFERENCE_TIP)
        hbox(self.label, (self.combo, 1), parent=self, margins=(0, 0, 0, 0))
        self._earlier = False  # the model has an earlier model in its lineage
        self._loss = "sigmoid"
        self.setVisible(False)

    def fill(self, store: Store, model: ModelRow | None) -> None:
        """The choices for ``model``: itself (adapter off), or an earlier model of its lineage."""
        self.combo.clear()
        steps = model_lineage(store, model.id) if model is not None else []
        if model is not None:
            self.combo.addItem(f"{model.name} as it is now (adapter off)", "adapter_off")
        for step in reversed(steps[:-1]):  # nearest ancestor first
            made_by = "the original model" if step.run_id is None else f"made by run {step.run_id}"
            self.combo.addItem(f"{step.name} ({made_by})", f"model:{step.model_id}")
        self._earlier = len(steps) > 1
        self._show()

    def set_loss(self, loss_type: str) -> None:
        """The loss the next run trains with: a reference-free one needs no choice here."""
        self._loss = loss_type
        self._show()

    def _show(self) -> None:
        self.setVisible(self._earlier and self._loss not in REFERENCE_FREE_LOSS_TYPES)

    def reference(self) -> str:
        """The reference of a new run: "adapter_off" or "model:<id>" (see core/dpo/config.py)."""
        return self.combo.currentData() or "adapter_off"

    def set_reference(self, reference: str) -> bool:
        """Choose the reference of the next run; False when the model offers no such choice."""
        index = self.combo.findData(reference)
        if index >= 0:
            self.combo.setCurrentIndex(index)
        return index >= 0
