"""The Storage view, driven through its widgets on a fake app home holding one of everything."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt

from desktop_dpo.core.sampling import GGUF_COPY_INFO_KEY
from desktop_dpo.core.storage import scan_storage, total_size
from desktop_dpo.core.wording import human_size
from desktop_dpo.gui.storage_view import COLUMN_SIZE, RESOURCE, StorageView
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import JobRegistry
from tests.core.test_storage import home  # noqa: F401 (the fake app home fixture)

WAIT_MS = 60_000  # generous: the machine is shared; nothing here asserts on time


@pytest.fixture
def view(qtbot, home, registry) -> StorageView:  # noqa: F811
    widget = StorageView(store=home.store, registry=registry, paths=home.paths)
    qtbot.addWidget(widget)
    widget.resize(1100, 700)
    widget.show()
    wait_for_scan(qtbot, widget, registry)
    return widget


def wait_for_scan(qtbot, view: StorageView, registry: JobRegistry) -> None:
    qtbot.waitUntil(lambda: view.table.rowCount() > 0 and not registry.is_busy(RESOURCE), timeout=WAIT_MS)


class Answers:
    """Stands in for the confirmation dialog: records the question, gives the prepared answer."""

    def __init__(self, answer: bool):
        self.answer = answer
        self.asked: list[str] = []

    def __call__(self, parent, title: str, text: str) -> bool:
        self.asked.append(text)
        return self.answer


def test_the_list_shows_every_kept_thing_with_sizes_and_a_total(view, home):  # noqa: F811
    items = scan_storage(home.store, home.paths)
    assert view.table.rowCount() == len(items)
    assert human_size(total_size(items)) in view.total_label.text()
    freeable = total_size(i for i in items if i.removable)
    assert f"{human_size(freeable)} can go" == view.freeable_label.text()
    row = view.row_of(str(home.p["trainable"]))
    assert view.table.item(row, COLUMN_SIZE).text() == "2.0 KB"
    # Largest first.
    sizes = [view._row_item(r).size_bytes for r in range(view.table.rowCount())]
    assert sizes == sorted(sizes, reverse=True)
    # What must stay cannot even be ticked.
    assert not view.set_checked(str(home.p["demo"].parent))
    assert not view.set_checked(str(home.p["q4"]))
    assert not view.clean_button.isEnabled()  # nothing ticked yet


def test_clean_up_names_the_total_asks_and_removes_only_what_was_ticked(qtbot, view, home, registry):  # noqa: F811
    copy_folder = home.p["gguf_copy"].parent
    assert view.set_checked(str(copy_folder)) and view.set_checked(str(home.p["trainable"]))
    assert view.selected_label.text() == "2 ticked · 3.0 KB"
    assert view.clean_button.isEnabled()

    view.confirm = Answers(False)
    view.clean_button.click()
    assert "free 3.0 KB" in view.confirm.asked[0]
    assert copy_folder.is_dir() and not registry.is_busy(RESOURCE)  # "No" deletes nothing

    view.confirm = Answers(True)
    view.clean_button.click()
    qtbot.waitUntil(lambda: "Freed 3.0 KB" in view.activity(), timeout=WAIT_MS)
    qtbot.waitUntil(
        lambda: view.row_of(str(copy_folder)) == -1 and not registry.is_busy(RESOURCE), timeout=WAIT_MS
    )
    assert not copy_folder.exists() and not home.p["trainable"].exists()
    assert home.p["model_orphan"].is_dir()  # not ticked: still there, still listed
    assert view.row_of(str(home.p["model_orphan"])) >= 0
    assert GGUF_COPY_INFO_KEY not in home.store.get_model(home.ids["hf"]).info
    assert view.error_text() == ""


def test_checkpoints_of_a_stopped_run_need_the_person_to_give_up_resuming(qtbot, view, home, registry):  # noqa: F811
    checkpoints = home.paths.runs_dir / "run-0002" / "checkpoints"
    assert not view.set_checked(str(checkpoints))
    view.resume_check.setChecked(True)
    assert view.set_checked(str(checkpoints))
    view.confirm = Answers(True)
    view.clean_button.click()
    assert "Run(s) 2 can no longer be resumed" in view.confirm.asked[0]
    qtbot.waitUntil(lambda: not checkpoints.exists(), timeout=WAIT_MS)
    qtbot.waitUntil(
        lambda: view.row_of(str(checkpoints)) == -1 and not registry.is_busy(RESOURCE), timeout=WAIT_MS
    )
    assert "step 0" in home.store.get_run(home.ids["run_stopped"]).error


def test_buttons_wait_while_a_storage_job_runs(qtbot, view, registry):
    release = threading.Event()

    def blocking(token):
        release.wait(30)
        return None
        yield  # a generator

    view.select_all_removable()
    assert view.clean_button.isEnabled()
    JobOp(registry, blocking).resource(RESOURCE).start()
    qtbot.waitUntil(lambda: not view.clean_button.isEnabled(), timeout=WAIT_MS)
    assert not view.rescan_button.isEnabled() and not view.select_button.isEnabled()
    assert view.scan() is False
    assert "already running" in view.error_text()
    release.set()
    qtbot.waitUntil(lambda: view.clean_button.isEnabled() and view.rescan_button.isEnabled(), timeout=WAIT_MS)


def test_the_view_is_only_measured_once_shown(qtbot, home, registry):  # noqa: F811
    widget = StorageView(store=home.store, registry=registry, paths=home.paths)
    qtbot.addWidget(widget)
    assert widget.table.rowCount() == 0 and not registry.is_busy(RESOURCE)
    widget.show()
    wait_for_scan(qtbot, widget, registry)
    assert widget.table.item(0, 0).flags() & Qt.ItemFlag.ItemIsEnabled
