"""JobOp, the one way the GUI runs a job: connected before it starts, outcomes in order on the GUI thread,
stale jobs dropped, the worker's store opened and closed in its thread, held in the registry while it runs."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QApplication

from desktop_dpo.core.errors import DesktopDpoError, JobCancelled, ModelError
from desktop_dpo.core.jobs import CancelToken, Log, Progress
from desktop_dpo.core.store import Store
from desktop_dpo.workers.job_op import JobOp
from desktop_dpo.workers.job_worker import UNKNOWN_JOB, JobRegistry, describe_resource

WAIT_MS = 10_000


@pytest.fixture
def registry():
    jobs = JobRegistry()
    yield jobs
    assert jobs.cancel_all_and_wait(WAIT_MS), "a test left a job that would not stop"
    QApplication.processEvents()


class Heard:
    """What an op's callbacks were told, in the order they were told it, and on which thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.threads: set[int] = set()

    def op(self, registry: JobRegistry, factory, key: str = "test", **kwargs) -> JobOp:
        return (
            JobOp(registry, factory, **kwargs)
            .resource(key)
            .on_event(lambda event: self._heard("event", event))
            .on_success(lambda result: self._heard("success", result))
            .on_failure(lambda message: self._heard("failure", message))
            .on_cancelled(lambda: self._heard("cancelled", None))
        )

    def _heard(self, kind: str, value: object) -> None:
        self.calls.append((kind, value))
        self.threads.add(threading.get_ident())

    def ended(self) -> bool:
        return any(kind != "event" for kind, _ in self.calls)


def test_a_job_that_fails_at_once_is_heard_in_order_on_the_gui_thread(qtbot, registry):
    def fails_at_once(_token: CancelToken):
        yield Progress(0, 2, "reading")
        yield Log("the file is damaged")
        raise ModelError("The file is not a GGUF.")

    heard = Heard()
    op = heard.op(registry, fails_at_once).start()
    assert op.active
    qtbot.waitUntil(heard.ended, timeout=WAIT_MS)
    assert heard.calls == [
        ("event", Progress(0, 2, "reading")),
        ("event", Log("the file is damaged")),
        ("failure", "The file is not a GGUF."),
    ]
    assert heard.threads == {threading.get_ident()}
    assert not op.active


def test_a_job_that_fails_before_its_first_event_is_not_lost(qtbot, registry):
    def refuses(_token: CancelToken):
        raise ModelError("No such file.")
        yield  # a generator

    heard = Heard()
    heard.op(registry, refuses).start()
    qtbot.waitUntil(heard.ended, timeout=WAIT_MS)
    assert heard.calls == [("failure", "No such file.")]


def test_the_registry_holds_the_job_while_it_runs_and_frees_it_after(qtbot, registry):
    release = threading.Event()

    def waits(_token: CancelToken):
        yield Progress(0, 1)
        release.wait(WAIT_MS / 1000)
        return "done"

    heard = Heard()
    heard.op(registry, waits, "train").start()
    assert registry.is_busy("train") and registry.running() == ["train"]
    with pytest.raises(DesktopDpoError, match="already running"):
        Heard().op(registry, waits, "train").start()
    release.set()
    qtbot.waitUntil(lambda: not registry.is_busy("train"), timeout=WAIT_MS)
    assert registry.running() == []
    assert heard.calls[-1] == ("success", "done")


def test_a_quiet_job_is_held_but_not_named(qtbot, registry):
    release = threading.Event()

    def scans(_token: CancelToken):
        release.wait(WAIT_MS / 1000)
        return []
        yield  # a generator

    heard = Heard()
    heard.op(registry, scans, "scan-models").quiet().start()
    assert registry.is_busy("scan-models") and registry.running() == []
    release.set()
    qtbot.waitUntil(heard.ended, timeout=WAIT_MS)
    assert heard.calls == [("success", [])]


def test_a_job_that_reported_lets_the_next_one_on_its_resource_start(qtbot, registry):
    release = threading.Event()

    def first_job(_token: CancelToken):
        release.wait(WAIT_MS / 1000)
        return "first"
        yield  # a generator

    def second_job(_token: CancelToken):
        return "second"
        yield  # a generator

    second = Heard()
    op = Heard().op(registry, first_job, "storage")
    # From the first job's own outcome, while its thread is still leaving (as the Storage view rescans
    # after a clean-up): the registry lets that thread end instead of refusing the next job.
    op.on_success(lambda _result: second.op(registry, second_job, "storage").start())
    op.start()
    # In the worker thread, after the outcome was posted to the GUI thread: the thread lingers a moment.
    op.thread.succeeded.connect(lambda _result: time.sleep(0.5), Qt.ConnectionType.DirectConnection)
    release.set()
    qtbot.waitUntil(second.ended, timeout=WAIT_MS)
    assert second.calls == [("success", "second")]


@pytest.mark.parametrize("checks_token", [True, False], ids=["job-checks-token", "job-ignores-token"])
def test_cancel_runs_the_clean_up_once_and_reports_cancelled(qtbot, registry, checks_token):
    record: list[str] = []
    working = threading.Event()

    def works(token: CancelToken):
        try:
            while True:
                working.set()
                if checks_token:
                    token.raise_if_cancelled()
                yield Progress(0, 0, "working")
                threading.Event().wait(0.01)
        except JobCancelled:
            record.append("clean-up")
            yield Log("checkpointed")
            raise
        finally:
            record.append("finally")

    heard = Heard()
    op = heard.op(registry, works).start()
    assert working.wait(WAIT_MS / 1000)
    op.cancel()
    qtbot.waitUntil(heard.ended, timeout=WAIT_MS)
    assert heard.calls[-2:] == [("event", Log("checkpointed")), ("cancelled", None)]
    assert record == ["clean-up", "finally"]
    qtbot.waitUntil(lambda: not registry.is_busy("test"), timeout=WAIT_MS)
    assert record == ["clean-up", "finally"]  # once: nothing closes the job afterwards


def test_a_stale_job_is_not_heard_once_its_owner_started_another(qtbot, registry):
    owner = QObject()
    release = threading.Event()

    def slow(_token: CancelToken):
        yield Progress(0, 2, "first")
        release.wait(WAIT_MS / 1000)
        yield Progress(1, 2, "late")
        return "old answer"

    def quick(_token: CancelToken):
        yield Progress(0, 1, "new")
        return "new answer"

    old_heard, new_heard = Heard(), Heard()
    old = old_heard.op(registry, slow, "generate:7", owner=owner).start()
    qtbot.waitUntil(lambda: bool(old_heard.calls), timeout=WAIT_MS)
    # The owner moves on to another model while the old job is still running: its job is now this one.
    new = new_heard.op(registry, quick, "generate:3", owner=owner).start()
    assert not old.active and new.active
    release.set()
    qtbot.waitUntil(lambda: not registry.is_busy("generate:7"), timeout=WAIT_MS)
    qtbot.waitUntil(new_heard.ended, timeout=WAIT_MS)
    QApplication.processEvents()
    assert old_heard.calls == [("event", Progress(0, 2, "first"))]  # nothing late, no outcome
    assert new_heard.calls == [("event", Progress(0, 1, "new")), ("success", "new answer")]


def test_a_dropped_job_or_one_whose_owner_is_gone_is_not_heard(qtbot, registry):
    release = threading.Event()

    def slow(_token: CancelToken):
        release.wait(WAIT_MS / 1000)
        yield Progress(1, 1, "late")
        return "answer"

    dropped_heard, orphan_heard = Heard(), Heard()
    dropped = dropped_heard.op(registry, slow, "hardware").start()
    owner = QObject()
    orphan_heard.op(registry, slow, "demo-model", owner=owner).start()
    dropped.drop()
    owner.deleteLater()
    QApplication.processEvents()
    release.set()
    qtbot.waitUntil(lambda: registry.running() == [], timeout=WAIT_MS)
    QApplication.processEvents()
    assert dropped_heard.calls == [] and orphan_heard.calls == []


@pytest.mark.parametrize("fails", [False, True], ids=["succeeds", "fails"])
def test_the_workers_store_is_opened_in_its_thread_and_closed_after_the_job(
    qtbot, registry, tmp_path, monkeypatch, fails
):
    db_path = tmp_path / "app.sqlite"
    Store.open(db_path).close()  # the app's database, migrated
    closed: list[int] = []
    real_close = Store.close

    def recording_close(store: Store) -> None:
        closed.append(threading.get_ident())
        real_close(store)

    monkeypatch.setattr(Store, "close", recording_close)
    used: list[int] = []

    def counts(store: Store, _token: CancelToken):
        used.append(threading.get_ident())
        yield Progress(0, 1)
        if fails:
            raise ModelError("Broken on purpose.")
        return store.count_comparisons()

    heard = Heard()
    heard.op(registry, counts, store=db_path).start()
    qtbot.waitUntil(heard.ended, timeout=WAIT_MS)
    assert heard.calls[-1] == (("failure", "Broken on purpose.") if fails else ("success", 0))
    gui_thread = threading.get_ident()
    assert len(used) == 1 and used[0] != gui_thread  # opened for the job, in the worker thread
    assert closed == used  # closed once, in that same thread, before the outcome was reported


class Owner(QObject):
    """A view in miniature: slots named as the style guide names them."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[tuple[str, object]] = []

    def _on_count_event(self, event: object) -> None:
        self.heard.append(("event", event))

    def _on_count_succeeded(self, result: object) -> None:
        self.heard.append(("succeeded", result))

    def _on_count_failed(self, message: str) -> None:
        self.heard.append(("failed", message))


def test_slots_finds_the_owners_slots_by_their_names(qtbot, registry):
    def counts(_token: CancelToken):
        yield Progress(1, 2)
        return 2

    owner = Owner()
    JobOp(registry, counts, owner=owner).resource("count").slots("count").start()
    qtbot.waitUntil(lambda: len(owner.heard) == 2, timeout=WAIT_MS)
    assert owner.heard == [("event", Progress(1, 2)), ("succeeded", 2)]
    with pytest.raises(ValueError, match="_on_cuont_"):  # a misspelt thing would never be heard
        JobOp(registry, counts, owner=owner).resource("count").slots("cuont")


# ------------------------------------------------------------------------------------------- in words

REPO = Path(__file__).resolve().parents[2]


def _resources_in_the_source() -> set[str]:
    """Every resource the app names: its ``*RESOURCE = "..."`` constants and the ``generate:`` family."""
    found = {"generate:1"}
    for path in (REPO / "desktop_dpo").rglob("*.py"):
        found |= set(re.findall(r'^\w*RESOURCE = "([^"]+)"', path.read_text(encoding="utf-8"), re.M))
    return found


def test_every_resource_the_app_uses_has_words_for_the_person():
    resources = _resources_in_the_source()
    assert {"train", "detect-device", "export", "demo-model", "generate:1"} <= resources
    for resource in resources:
        words = describe_resource(resource)
        assert words != UNKNOWN_JOB, f"{resource!r} has no words in JOB_DESCRIPTIONS"
        assert resource.split(":")[0] not in words.lower().split(), words
    assert describe_resource("something-new") == UNKNOWN_JOB  # a forgotten one still shows no id


def test_the_registry_says_what_its_jobs_do(qtbot, registry):
    release = threading.Event()

    def waits(_token: CancelToken):
        release.wait(WAIT_MS / 1000)
        return None
        yield  # a generator

    JobOp(registry, waits).resource("train").start()
    JobOp(registry, waits).resource("generate:7", describe="Writing answers with Gemma").start()
    JobOp(registry, waits).resource("scan-models").quiet().start()
    assert registry.running_descriptions() == ["Training", "Writing answers with Gemma"]
    with pytest.raises(DesktopDpoError) as refused:
        JobOp(registry, waits).resource("generate:7").start()
    assert str(refused.value) == "Writing answers with Gemma is already running; wait for it or stop it."
    release.set()
    qtbot.waitUntil(registry.idle, timeout=WAIT_MS)
    assert registry.running_descriptions() == []


def test_cancel_all_returns_at_once_and_the_registry_says_when_all_have_ended(qtbot, registry):
    stopping = threading.Event()

    def slow_to_stop(token: CancelToken):
        try:
            while True:
                yield Progress(0, 1)
                token.wait(0.05)
        except JobCancelled:
            stopping.set()
            time.sleep(0.5)  # its clean-up takes a while
            raise

    JobOp(registry, slow_to_stop).resource("train").start()
    JobOp(registry, slow_to_stop).resource("scan-models").quiet().start()
    assert not registry.idle()
    begun = time.monotonic()
    registry.cancel_all()
    assert time.monotonic() - begun < 0.2  # the GUI thread does not wait for the clean-up
    assert not registry.idle()
    qtbot.waitUntil(registry.idle, timeout=WAIT_MS)
    assert stopping.is_set() and registry.running() == []
