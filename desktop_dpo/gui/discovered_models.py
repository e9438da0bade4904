"""The Models view's "On this computer" panel: the models the Hugging Face hub, LM Studio and Ollama already
downloaded, each with an Add button.

The scan (:func:`~desktop_dpo.core.models.discover_local_models`, resource ``scan-models``) runs as a job so
that a slow or network disk never freezes the window. It is a quiet job: it lists folders in milliseconds and
holds no model, so it is not shown as running nor asked about at quit (the view waits for it instead, see
:meth:`DiscoveredModels.wait_for_scan`). A model already in the list reads "Added"; while another model is
being added, no Add button can be clicked.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.jobs import Job, Progress
from desktop_dpo.core.models import DiscoveredModel, ModelSearchDirs, discover_local_models
from desktop_dpo.core.wording import human_size
from desktop_dpo.gui import widgets
from desktop_dpo.gui.model_details_panel import KIND_LABELS, SOURCE_LABELS
from desktop_dpo.gui.model_registration import REGISTER_RESOURCE
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

SCAN_RESOURCE = "scan-models"
DISCOVERED_COLUMNS = ("Model", "Found in", "Size", "")
ADD_COLUMN = 3


def scan_for_models(search_dirs: ModelSearchDirs | None) -> Job:
    """List the models already on this computer (a job returning ``list[DiscoveredModel]``)."""
    yield Progress(0, 0, "Looking for models on this computer")
    return discover_local_models(search_dirs)


def read_only_item(text: str, tooltip: str = "") -> QTableWidgetItem:
    """A table cell that can be selected but not edited."""
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    if tooltip:
        item.setToolTip(tooltip)
    return item


class DiscoveredModels(QFrame):
    """The models found on this computer by the last scan, with Rescan and an Add button each.

    Args:
        registry: the job registry (the scan's resource ``scan-models``; ``register-model`` busy disables
            the Add buttons).
        search_dirs: where to look (default: the standard folders).

    Signals:
        add_requested(object): the person clicked Add on a model (a :class:`DiscoveredModel`).
    """

    add_requested = Signal(object)

    def __init__(
        self, registry: JobRegistry, search_dirs: ModelSearchDirs | None, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.registry = registry
        self.search_dirs = search_dirs
        self._discovered: list[DiscoveredModel] = []
        self._registered: set[Path] = set()
        self._scanned = False  # the first show of the view starts a scan
        self._scan: JobOp | None = None
        self._build()

    def _build(self) -> None:
        self.setObjectName("card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.setSpacing(6)
        self.rescan_button = widgets.button(
            "Rescan",
            self.rescan,
            tooltip="Look again in the Hugging Face cache, LM Studio and Ollama folders",
        )
        top = QHBoxLayout()
        top.addWidget(widgets.styled_label("On this computer", "cardHeading"), 1)
        top.addWidget(self.rescan_button)
        layout.addLayout(top)
        self.note = widgets.styled_label(
            "Models in the Hugging Face cache, LM Studio and Ollama.", "cardNote", wrap=True
        )
        # Room for two lines: a wrapped label inside a splitter otherwise gets the height of one.
        self.note.setMinimumHeight(2 * self.note.fontMetrics().lineSpacing() + 4)
        layout.addWidget(self.note)
        self.table = QTableWidget(0, len(DISCOVERED_COLUMNS))
        self.table.setObjectName("discoveredTable")
        self.table.setHorizontalHeaderLabels(DISCOVERED_COLUMNS)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.verticalHeader().setVisible(False)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        head = self.table.horizontalHeader()
        head.setHighlightSections(False)
        head.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.table, 1)
        layout.addStretch(0)  # takes the room while the table is hidden (nothing found)

    # ---------------------------------------------------------------- scanning

    def scan_once(self) -> None:
        """Start the first scan (the view is shown); later ones follow "Rescan"."""
        if not self._scanned:
            self.rescan()

    @Slot()
    def rescan(self) -> bool:
        """Look for models on this computer again (in a worker thread). False when a scan is running."""
        self._scanned = True
        if self.is_scanning():
            return False
        search_dirs = self.search_dirs
        # Quiet: a scan lists folders in milliseconds and holds no model, so it is neither shown as a running
        # job nor asked about at quit (the window waits for it instead, see the view's eventFilter).
        try:
            self._scan = (
                JobOp(self.registry, lambda _token: scan_for_models(search_dirs), owner=self)
                .resource(SCAN_RESOURCE)
                .quiet()
                .slots("scan")
                .on_cancelled(self.update_buttons)
                .start()
            )
        except DesktopDpoError as exc:  # a scan of another Models view (a second window) still runs
            self.note.setText(str(exc))
            return False
        self.note.setText("Looking in the Hugging Face cache, LM Studio and Ollama folders…")
        self.update_buttons()
        return True

    def is_scanning(self) -> bool:
        """True while the scan for models on this computer runs."""
        return self._scan is not None and self._scan.active

    def wait_for_scan(self, timeout_ms: int) -> None:
        """Stop a scan still running and wait up to ``timeout_ms`` for its thread to end (the window closes)."""
        if self._scan is not None:
            self._scan.cancel()
            self._scan.wait(timeout_ms)

    def _on_scan_succeeded(self, found: object) -> None:
        self._discovered = list(found) if isinstance(found, list) else []
        count = len(self._discovered)
        if count:
            self.note.setText(
                f"{count} model{'s' if count != 1 else ''} in the Hugging Face cache, LM Studio and Ollama."
            )
        else:
            self.note.setText(
                "No models in the Hugging Face cache, LM Studio or Ollama folders. Add a folder or a GGUF file "
                "above."
            )
        self._fill()
        self.update_buttons()

    def _on_scan_failed(self, message: str) -> None:
        self.note.setText(f"Could not look for models: {message}")
        self.update_buttons()

    # ---------------------------------------------------------------- the list

    def discovered(self) -> list[DiscoveredModel]:
        """The models found on this computer by the last scan."""
        return list(self._discovered)

    def show_registered(self, paths: Iterable[Path]) -> None:
        """Mark the models at ``paths`` (those already in the list) as added."""
        self._registered = set(paths)
        self._fill()

    def _fill(self) -> None:
        table = self.table
        table.setRowCount(len(self._discovered))
        table.setVisible(bool(self._discovered))
        busy = self.registry.is_busy(REGISTER_RESOURCE)
        for row, found in enumerate(self._discovered):
            kind = KIND_LABELS.get(found.kind, found.kind)
            table.setItem(row, 0, read_only_item(found.label, f"{kind}: {found.path}"))
            table.setItem(row, 1, read_only_item(SOURCE_LABELS.get(found.source, found.source)))
            table.setItem(row, 2, read_only_item(human_size(found.size_bytes)))
            added = found.path.absolute() in self._registered or found.path in self._registered
            add = widgets.button(
                "Added" if added else "Add",
                lambda _checked=False, model=found: self.add_requested.emit(model),
                tooltip=f"Add {found.label} to your models" if not added else "Already in your models",
                name="addButton",
            )
            add.setEnabled(not added and not busy)
            table.setCellWidget(row, ADD_COLUMN, add)

    def add_button_for(self, label: str) -> QPushButton:
        """The Add button of a model found on this computer (by its label)."""
        for row, found in enumerate(self._discovered):
            if found.label == label:
                widget = self.table.cellWidget(row, ADD_COLUMN)
                assert isinstance(widget, QPushButton)
                return widget
        raise KeyError(label)

    @Slot()
    def update_buttons(self) -> None:
        """Add only while no other model is being added; Rescan only while no scan runs."""
        registering = self.registry.is_busy(REGISTER_RESOURCE)
        for row in range(self.table.rowCount()):
            widget = self.table.cellWidget(row, ADD_COLUMN)
            if isinstance(widget, QPushButton):
                widget.setEnabled(widget.text() == "Add" and not registering)
        self.rescan_button.setEnabled(not self.is_scanning())
