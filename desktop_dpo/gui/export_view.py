"""The Export view: pick a finished run, choose file types and a folder, export, read the parity report.

The export runs as a job on the resource ``"export"`` (:mod:`desktop_dpo.workers.export_worker`): the merge,
conversion, quantization and parity check happen in a worker thread with its own database connection,
which also records the result (export rows, the aligned model registered). This view only shows progress
and what came out; the window stays responsive throughout.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QGuiApplication, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.config import AppPaths
from desktop_dpo.core.dpo.runs import run_label
from desktop_dpo.core.export.gguf import (
    DEFAULT_QUANTIZATION,
    QUANTIZATIONS,
    WORKING_ORDER,
    WORKING_QUANTIZATION,
    llama_cpp_command,
    working_quantization,
)
from desktop_dpo.core.export.parity import ParityReport
from desktop_dpo.core.export.pipeline import (
    ExportFinished,
    ExportRecorded,
    ExportSettings,
    default_quantizations,
    estimated_file_sizes,
    export_folder_name,
)
from desktop_dpo.core.model_files import EXPORT_FOLDER_KEY
from desktop_dpo.core.store import ExportRow, ModelRow, RunRow, Store
from desktop_dpo.core.wording import human_size, plural
from desktop_dpo.gui.message_banner import MessageBanner
from desktop_dpo.gui.page_view import PageView
from desktop_dpo.gui.view_messages import ActivityLine
from desktop_dpo.gui.widgets import (
    STRETCH,
    FoldToggle,
    PageHeader,
    button,
    field_label,
    hbox,
    set_style_property,
    styled_label,
    text_label,
    vbox,
)
from desktop_dpo.workers.export_worker import EXPORT_RESOURCE, export_job
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry

log = logging.getLogger(__name__)

# What each file type is for, in one line (shown next to its checkbox).
QUANTIZATION_NOTES = {
    "F16": "full 16-bit weights: the reference, largest file",
    "Q8_0": "8-bit: indistinguishable from F16, half its size",
    "Q5_K_M": "5-bit: a little smaller, still very close",
    "Q4_K_M": "4-bit: the usual file to share, small and fast, slight quality cost",
}


def _report(parity: dict) -> ParityReport:
    """A stored parity dict as a report (keys an older version wrote and this one no longer knows are skipped)."""
    known = set(ParityReport.__dataclass_fields__)
    return ParityReport(**{key: value for key, value in parity.items() if key in known})


def parity_summary(parity: dict) -> str:
    """The parity report in one sentence a person without the jargon understands ({} = check skipped)."""
    if not parity:
        return (
            "The check was skipped, so nothing confirms that the files answer like the model you trained. "
            "Try them in Chat before sharing them."
        )
    report = _report(parity)
    texts = report.tokenizer_texts
    if texts and report.tokenizer_identical < texts:
        differ = texts - report.tokenizer_identical
        return (
            f"The exported files read some text differently from the model you trained ({differ} of "
            f"{plural(texts, 'test text')}), so their answers may differ from what you saw in training."
        )
    if report.top1_agreement is None or not report.logits_tokens:
        return "The exported files read text the same way as the model you trained; their answers were not compared."
    same = round(report.top1_agreement * report.logits_tokens)
    if report.passed:
        return (
            "The exported model answers like the one you trained: it picked the same next word "
            f"{same} of {report.logits_tokens} times on the test texts, and reads text the same way."
        )
    return (
        "The exported model does not always answer like the one you trained: it picked the same next word "
        f"only {same} of {report.logits_tokens} times on the test texts. Try it in Chat before sharing it."
    )


class ExportView(PageView):
    """Export a finished training run as GGUF files, with a parity check; list past exports.

    Signals:
        models_changed(): an export registered a new (aligned) model.
        model_chosen(object): the person wants to chat with an exported model (a ``ModelRow``).
        evaluate_requested(object): the person wants to compare an exported model with its base, blind.
        status_message(str): a line for the status bar.
    """

    PAGE = "export"

    status_message = Signal(str)
    models_changed = Signal()
    model_chosen = Signal(object)
    evaluate_requested = Signal(object)

    def __init__(
        self, *, store: Store, registry: JobRegistry, paths: AppPaths, parent: QWidget | None = None
    ):
        super().__init__(store=store, registry=registry, paths=paths, parent=parent)
        self._export: JobOp | None = None
        self._runs: list[RunRow] = []
        self._size_estimates: dict[str, dict[str, int | None]] = {}  # base folder -> file type -> bytes
        self._files_chosen = False  # the person ticked a file type: a run's defaults no longer replace it
        self._build()
        registry.changed.connect(self._update_actions)
        self.refresh()

    # ---------------------------------------------------------------- building

    def _build(self) -> None:
        header = PageHeader(
            "Export",
            "Merge a trained adapter into its base and write GGUF files for llama.cpp, Ollama or LM Studio.",
        )

        self.empty_label = styled_label(
            "Export needs a finished training run. Collect some pairs, train in Train, then come back here.",
            "emptyState",
            wrap=True,
        )

        self.form_card = self._build_form_card()
        self.banner = MessageBanner()
        self.report_card = self._build_report_card()
        exports_head = self._build_exports_list()
        self.exports_tree.setMinimumHeight(120)  # a few rows, even when the page scrolls

        # The column scrolls in a short window (the report and a wrapped success line need their height)
        # instead of squashing them into slivers.
        column = self._page_column(
            header, self.empty_label, self.form_card, self.banner, self.report_card, scroll=True
        )
        column.addLayout(exports_head)
        column.addWidget(self.exports_tree, 1)

    def _build_form_card(self) -> QFrame:
        """What to export: the run, the files, where, and the Export button."""
        card = QFrame()
        card.setObjectName("card")
        grid = QGridLayout(card)
        grid.setContentsMargins(16, 14, 16, 14)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(8)
        self.run_combo = QComboBox()
        self.run_combo.setToolTip("The finished training run whose adapter is exported")
        self.run_combo.currentIndexChanged.connect(self._on_run_changed)
        self.run_details = styled_label("", "runDetails", wrap=True)
        grid.addWidget(field_label("Run"), 0, 0)
        grid.addWidget(self.run_combo, 0, 1, 1, 2)
        grid.addWidget(self.run_details, 1, 1, 1, 2)

        self.quant_checks: dict[str, QCheckBox] = {}
        types = QVBoxLayout()
        types.setSpacing(2)
        for name in QUANTIZATIONS:
            check = QCheckBox(name)
            check.setChecked(name == DEFAULT_QUANTIZATION)
            check.toggled.connect(self._update_actions)
            check.toggled.connect(self._update_working_line)
            check.clicked.connect(self._on_files_chosen)
            self.quant_checks[name] = check
            types.addWidget(check)
        # Which file the app goes on with, and why (changes with the ticks).
        self.working_line = styled_label("", "settingHelp", wrap=True)
        types.addWidget(self.working_line)
        grid.addWidget(field_label("Files"), 2, 0)
        grid.addLayout(types, 2, 1, 1, 2)
        self._update_working_line()

        self.destination_edit = QLineEdit(str(self.paths.exports_dir))
        self.destination_edit.setToolTip("The export gets its own folder inside this one")
        grid.addWidget(field_label("Folder"), 3, 0)
        grid.addWidget(self.destination_edit, 3, 1)
        grid.addWidget(button("Browse…", self._on_browse_clicked), 3, 2)
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip("Name of the export folder and of its files")
        grid.addWidget(field_label("Name"), 4, 0)
        grid.addWidget(self.name_edit, 4, 1, 1, 2)
        self.parity_check = QCheckBox("Check that the files answer like the trained model (parity check)")
        self.parity_check.setChecked(True)
        grid.addWidget(self.parity_check, 5, 1, 1, 2)
        grid.setColumnStretch(1, 1)

        self.export_button = button("Export", self.start_export, name="primaryButton")
        self.stop_button = button("Stop", self.stop, tooltip="Stop the export; nothing half-written is kept")
        grid.addLayout(hbox(STRETCH, self.stop_button, self.export_button), 6, 0, 1, 3)
        # Its own row under the buttons, the card's whole width, wrapped: a long line (the folder of a
        # finished export) never runs under the buttons or off the card.
        self.activity_row = ActivityLine()
        self.activity_row.label.setWordWrap(True)
        self.activity_row.label.setTextFormat(Qt.TextFormat.PlainText)
        self.activity_row.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        grid.addWidget(self.activity_row, 7, 0, 1, 3)
        return card

    def _build_report_card(self) -> QFrame:
        """The parity report of the last export: one plain sentence, the files, the measurements folded."""
        self.report_card = QFrame()
        self.report_card.setObjectName("card")
        self.parity_badge = styled_label("", "parityBadge")
        self.report_summary = text_label("", "paritySummary", selectable=True)
        self.report_files = text_label("", "parityFiles", selectable=True)
        self.report_lines = text_label("", "parityLine", selectable=True)
        self.details_toggle = FoldToggle(
            "Technical details",
            self.report_lines,
            name="parityDetailsToggle",
            tooltip="What was measured: token ids, next-token agreement, log-probabilities, perplexity",
        )
        vbox(
            hbox(styled_label("Check of the exported files", "cardHeading"), self.parity_badge, STRETCH),
            self.report_summary,
            self.report_files,
            hbox(self.details_toggle, STRETCH),
            self.report_lines,
            parent=self.report_card,
            margins=(16, 12, 16, 12),
            spacing=6,
        )
        self.report_card.setVisible(False)
        return self.report_card

    def _build_exports_list(self) -> QHBoxLayout:
        """Past exports (``exports_tree``) and what can be done with one; returns the list's heading row."""
        self.exports_tree = QTreeWidget()
        self.exports_tree.setHeaderLabels(["File", "Type", "Size", "Run", "Exported"])
        self.exports_tree.setRootIsDecorated(False)
        self.exports_tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.exports_tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.exports_tree.itemSelectionChanged.connect(self._on_export_selected)
        self.open_button = button("Open folder", self._on_open_folder_clicked)
        self.copy_button = button("Copy llama.cpp command", self._on_copy_command_clicked)
        self.chat_button = button("Chat with it", self._on_chat_clicked)
        self.evaluate_button = button(
            "Evaluate against base",
            self._on_evaluate_clicked,
            tooltip="Blind A/B: does the aligned model answer better than its base?",
        )
        return hbox(
            styled_label("Exported files", "cardHeading"),
            STRETCH,
            self.open_button,
            self.copy_button,
            self.chat_button,
            self.evaluate_button,
        )

    # ---------------------------------------------------------------- data

    def refresh(self) -> None:
        """Re-read the finished runs and the past exports."""
        current = self.run_combo.currentData()
        self._runs = [r for r in self.store.list_runs() if r.status == "completed" and r.adapter_path]
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        for run in reversed(self._runs):  # newest first
            base = self.store.get_model(run.base_model_id) if run.base_model_id is not None else None
            metrics = run.final_metrics  # held-out accuracy says more than the pairs trained on
            accuracy = metrics.get("heldout/rewards/accuracies", metrics.get("train/rewards/accuracies"))
            measured = "held-out accuracy" if "heldout/rewards/accuracies" in metrics else "accuracy"
            label = run_label(run.id, run.name)
            # A run named by default says its model and pairs already: they are not said twice.
            said = (base.name if base else "base model gone", plural(len(run.comparison_ids), "pair"))
            parts = [label, *(part for part in said if part not in label)]
            if accuracy is not None:
                parts.append(f"{measured} {accuracy:.0%}")
            self.run_combo.addItem("  ·  ".join(parts), run.id)
        index = self.run_combo.findData(current) if current is not None else -1
        self.run_combo.setCurrentIndex(max(index, 0) if self._runs else -1)
        self.run_combo.blockSignals(False)
        has_runs = bool(self._runs)
        self.empty_label.setVisible(not has_runs)
        self.form_card.setEnabled(has_runs or self.exporting())
        self._on_run_changed()
        self._fill_exports()
        self._update_actions()

    def selected_run(self) -> RunRow | None:
        """The run the Export button exports."""
        run_id = self.run_combo.currentData()
        return next((r for r in self._runs if r.id == run_id), None)

    def select_run(self, run_id: int) -> None:
        """Choose the run to export (e.g. from the Train view's "Export" button)."""
        self.refresh()
        index = self.run_combo.findData(run_id)
        if index >= 0:
            self.run_combo.setCurrentIndex(index)

    @Slot()
    def _on_run_changed(self, _index: int = 0) -> None:
        run = self.selected_run()
        if run is None:
            self.run_details.clear()
            self.name_edit.setPlaceholderText("")
            for name, check in self.quant_checks.items():
                check.setText(f"{name} — {QUANTIZATION_NOTES[name]}")
            return
        base = self.store.get_model(run.base_model_id) if run.base_model_id is not None else None
        sizes = self._file_sizes(base)
        for name, check in self.quant_checks.items():
            size = f" (about {human_size(sizes[name])})" if sizes.get(name) else ""
            check.setText(f"{name} — {QUANTIZATION_NOTES[name]}{size}")
        if not self._files_chosen:
            ticked = default_quantizations(sizes)
            for name, check in self.quant_checks.items():
                check.setChecked(name in ticked)
        config = run.config
        metrics = run.final_metrics
        bits = [
            f"β {config.get('beta')}",
            f"learning rate {config.get('lr')}",  # the Train form's words
            plural(int(config.get("epochs") or 0), "epoch"),
            f"LoRA rank {config.get('lora_r')}",
            plural(run.step, "step"),
        ]
        if "rewards/margins" in metrics:
            bits.append(f"final margin {metrics['rewards/margins']:.2f}")
        self.run_details.setText(f"Base: {base.name if base else 'not registered'} · " + " · ".join(bits))
        if base is not None:
            self.name_edit.setPlaceholderText(export_folder_name(run, base))

    def _file_sizes(self, base: ModelRow | None) -> dict[str, int | None]:
        """About how large each file type of ``base`` comes out, from its tensors' shapes (read once per folder)."""
        if base is None:
            return {}
        if base.path not in self._size_estimates:
            self._size_estimates[base.path] = estimated_file_sizes(base)
        return self._size_estimates[base.path]

    def _fill_exports(self) -> None:
        self.exports_tree.clear()
        for export in reversed(self.store.list_exports()):
            item = QTreeWidgetItem(
                [
                    Path(export.path).name,
                    export.quantization,
                    human_size(export.size_bytes),
                    str(export.run_id or ""),
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(export.created_at)),
                ]
            )
            item.setToolTip(0, export.path)
            item.setData(0, Qt.ItemDataRole.UserRole, export.id)
            self.exports_tree.addTopLevelItem(item)

    def _selected_export(self) -> ExportRow | None:
        items = self.exports_tree.selectedItems()
        if not items:
            return None
        export_id = items[0].data(0, Qt.ItemDataRole.UserRole)
        return next((e for e in self.store.list_exports() if e.id == export_id), None)

    # ---------------------------------------------------------------- exporting

    def chosen_quantizations(self) -> tuple[str, ...]:
        """The file types ticked, the one the app works with first (it becomes the registered model)."""
        ticked = [name for name, check in self.quant_checks.items() if check.isChecked()]
        ticked.sort(key=WORKING_ORDER.index)
        return tuple(ticked)

    @Slot()
    def _on_files_chosen(self) -> None:
        self._files_chosen = True

    @Slot()
    def _update_working_line(self) -> None:
        """Say which file the app goes on with (Collect, Chat and Evaluate run it) and which are to share."""
        ticked = self.chosen_quantizations()
        if not ticked:
            self.working_line.setText("Tick at least one file type.")
            return
        working = working_quantization(ticked)
        shared = [name for name in ticked if name != working]
        line = f"The app goes on with {working}: Collect, Chat and Evaluate run it."
        if shared:
            line += f" {' and '.join(shared)} {'is' if len(shared) == 1 else 'are'} for sharing."
        if working == DEFAULT_QUANTIZATION:
            line += (
                f" At 4 bits much of a short run's change is rounded away: tick {WORKING_QUANTIZATION} to go on "
                "with what it learnt."
            )
        self.working_line.setText(line)

    @Slot()
    def start_export(self) -> bool:
        """Start exporting the selected run. Returns False (and says why) when it cannot start."""
        run = self.selected_run()
        if run is None or not self.export_button.isEnabled():
            return False
        settings = ExportSettings(
            quantizations=self.chosen_quantizations(),
            destination=self.destination_edit.text().strip() or None,
            name=self.name_edit.text().strip() or None,
            parity=self.parity_check.isChecked(),
        )
        self._export = self.start_job(
            JobOp(
                self.registry,
                export_job(run.id, settings, self.paths.exports_dir),
                store=self.paths.db_path,
                owner=self,
            )
            .resource(EXPORT_RESOURCE)
            .slots("export")
        )
        if self._export is None:
            return False
        self.clear_error()
        self.report_card.setVisible(False)
        self.activity_row.show_progress(None)
        self._set_activity(f"Exporting run {run.id}… (the window stays usable; Stop keeps nothing)")
        self._update_actions()
        return True

    def exporting(self) -> bool:
        """True while an export started here runs."""
        return self._export is not None and self._export.active

    @Slot()
    def stop(self) -> None:
        """Stop the export at the next step; nothing half-written is kept."""
        self.stop_job(self._export)

    def _on_export_event(self, event: object) -> None:
        if isinstance(event, ExportFinished):
            self.show_report(event)
        else:
            self.show_job_progress(event)

    def show_report(self, finished: ExportFinished) -> None:
        """Show the parity report of an export that just finished."""
        files = [(f.quantization, f.path, f.size_bytes) for f in finished.files]
        self._show_parity(finished.parity, list(finished.parity_lines), files)

    def _show_parity(self, parity: dict, lines: list[str], files: list[tuple[str, str, int]]) -> None:
        passed = bool(parity) and _report(parity).passed
        if parity:
            self.parity_badge.setText("Answers like the trained model" if passed else "Check the differences")
        else:
            self.parity_badge.setText("Check skipped")
        set_style_property(self.parity_badge, "passed", passed)
        self.report_summary.setText(parity_summary(parity))
        self.report_files.setText(
            "\n".join(f"{kind}: {path}  ({human_size(size)})" for kind, path, size in files)
        )
        self.report_lines.setText("\n".join(lines))
        self.details_toggle.setVisible(bool(lines))
        if not lines:
            self.details_toggle.setChecked(False)
        self.report_card.setVisible(True)

    @Slot()
    def _on_export_selected(self) -> None:
        """A past export selected: show the parity report stored with it."""
        export = self._selected_export()
        if export is not None and not self.exporting():
            report = _report(export.parity)
            folder = export.meta.get("folder")
            siblings = [
                e for e in self.store.list_exports(export.run_id) if folder and e.meta.get("folder") == folder
            ]
            files = [(e.quantization, e.path, e.size_bytes) for e in siblings or [export]]
            self._show_parity(export.parity, report.lines() if export.parity else [], files)
        self._update_actions()

    def report_text(self) -> str:
        """The whole parity report, folded details included ("" when none is shown)."""
        if self.report_card.isHidden():
            return ""
        parts = (self.report_summary.text(), self.report_lines.text(), self.report_files.text())
        return "\n".join(part for part in parts if part)

    def _on_export_succeeded(self, result: object) -> None:
        self.activity_row.hide_progress()
        self.refresh()
        if isinstance(result, ExportRecorded):
            model = self.store.get_model(result.model_id)
            files = plural(len(result.finished.files), "file")
            registered = (
                model.path if model else (result.finished.files[0].path if result.finished.files else "")
            )
            named = f"Registered as “{model.name}”" if model else "Registered in Models"
            self._set_activity(
                f"Exported {files} to {result.finished.folder}. {named} and selected below: chat with it, or "
                "evaluate it against the base."
            )
            self.notify(f"Export finished: {result.finished.folder}")
            self._select_export_file(registered)
        self.models_changed.emit()

    def _select_export_file(self, path: str) -> None:
        """Select the row of the file at ``path`` (the new export's registered file), so its actions are ready."""
        for index in range(self.exports_tree.topLevelItemCount()):
            item = self.exports_tree.topLevelItem(index)
            if item.toolTip(0) == path:
                self.exports_tree.setCurrentItem(item)
                self.exports_tree.scrollToItem(item)
                return

    def _on_export_failed(self, message: str) -> None:
        self.activity_row.hide_progress()
        self._set_activity("The export failed; nothing half-written was kept.")
        self.show_error(message)
        self._update_actions()

    def _on_export_cancelled(self) -> None:
        self.activity_row.hide_progress()
        self._set_activity("Export stopped; nothing was kept.")
        self._update_actions()

    # ---------------------------------------------------------------- actions on past exports

    @Slot()
    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into", self.destination_edit.text())
        if folder:
            self.destination_edit.setText(folder)

    @Slot()
    def _on_open_folder_clicked(self) -> None:
        export = self._selected_export()
        if export is None:
            return
        folder = Path(export.path).parent
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.banner.show_message(
                f"No file manager could be opened. The files are in:\n{folder}", tone="info"
            )

    def llama_cpp_command(self) -> str:
        """The command line that chats with the selected export in llama.cpp ("" when none)."""
        export = self._selected_export()
        if export is None:
            return ""
        default = bool(export.meta.get("desktop_dpo.uses_default_template"))
        stops = json.loads(export.meta.get("desktop_dpo.stop_strings", "[]") or "[]")
        return llama_cpp_command(shlex.quote(export.path), uses_default_template=default, stop_strings=stops)

    @Slot()
    def _on_copy_command_clicked(self) -> None:
        command = self.llama_cpp_command()
        if command:
            QGuiApplication.clipboard().setText(command)
            self.notify("Copied the llama.cpp command line.")

    def _selected_model(self) -> ModelRow | None:
        """The registered model of the selected export (None, with a note, when it is not registered)."""
        export = self._selected_export()
        if export is None:
            return None
        models = self.store.list_models()
        # The file itself, or the file of the same export that was registered (one per export).
        model = next((m for m in models if m.path == export.path), None) or next(
            (
                m
                for m in models
                if export.meta.get("folder") and m.info.get(EXPORT_FOLDER_KEY) == export.meta["folder"]
            ),
            None,
        )
        if model is None:
            self.banner.show_message(
                f"{Path(export.path).name} is not a registered model any more. Add it again in Models first.",
                tone="info",
            )
        return model

    @Slot()
    def _on_chat_clicked(self) -> None:
        model = self._selected_model()
        if model is not None:
            self.model_chosen.emit(model)

    @Slot()
    def _on_evaluate_clicked(self) -> None:
        model = self._selected_model()
        if model is not None:
            self.evaluate_requested.emit(model)

    # ---------------------------------------------------------------- state

    @Slot()
    def _update_actions(self) -> None:
        running = self.exporting()
        busy = self.registry.is_busy(EXPORT_RESOURCE)
        self.export_button.setEnabled(
            not busy and self.selected_run() is not None and bool(self.chosen_quantizations())
        )
        self.export_button.setToolTip(
            "An export is already running" if busy else "Merge, convert, quantize and check the selected run"
        )
        self.stop_button.setEnabled(running)
        for widget in (self.run_combo, self.destination_edit, self.name_edit, self.parity_check):
            widget.setEnabled(not running)
        for check in self.quant_checks.values():
            check.setEnabled(not running)
        selected = self._selected_export() is not None
        for item in (self.open_button, self.copy_button, self.chat_button, self.evaluate_button):
            item.setEnabled(selected)

    def showEvent(self, event: QShowEvent) -> None:  # Qt override
        # A run may have finished in the Train view while this one was hidden.
        if not self.exporting():
            self.refresh()
        super().showEvent(event)
