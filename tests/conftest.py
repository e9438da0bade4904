"""Shared fixtures. Plugins in tests/plugins/ provide the network guard and the tiny model."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports Qt or an ML library.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from desktop_dpo.config import HOME_ENV, AppPaths
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store

# The network guard for the whole session (a non-root conftest may not use pytest_plugins, so its hook
# lives in this namespace). If this file needs its own pytest_configure, call this one from it.
from tests.plugins.network_guard import pytest_configure  # noqa: F401
from tests.plugins.tiny_model import tiny_gguf, tiny_model_dir  # noqa: F401


@pytest.fixture
def app_home(tmp_path, monkeypatch) -> AppPaths:
    """A private app home: every file the app writes goes under tmp_path."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    return AppPaths.default().ensure()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private home for the command line (``--home``); monkeypatch restores DESKTOP_DPO_HOME, which --home
    sets for the whole process."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "unused-default"))
    return (tmp_path / "home").resolve()


@pytest.fixture
def lock_down_calls(monkeypatch) -> list[str]:
    """Record lock_down() instead of running it: the real one changes this process's environment for good
    (tests/core/test_offline.py covers it). Records which command ran by then (none should have)."""
    calls: list[str] = []
    monkeypatch.setattr("desktop_dpo.core.offline.lock_down", lambda: calls.append("lock_down"))
    return calls


@pytest.fixture
def store(tmp_path):
    """A fresh on-disk store (WAL needs a file) for the calling thread."""
    s = Store.open(tmp_path / "test.sqlite")
    yield s
    s.close()


@pytest.fixture
def memory_store():
    """A fresh in-memory store."""
    s = Store.open(":memory:")
    yield s
    s.close()


def pytest_sessionfinish(session, exitstatus):
    """A run that executed no test is a failure, not a pass (e.g. everything deselected or skipped)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or session.config.option.collectonly:
        return
    passed = len(reporter.stats.get("passed", []))
    failed = len(reporter.stats.get("failed", [])) + len(reporter.stats.get("error", []))
    if passed == 0 and failed == 0 and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


def record_topic_pairs(store: Store, topics: list[str]) -> None:
    """One pick per topic: a warm answer chosen over a curt one, the chosen one on side A and B in turn."""
    for i, topic in enumerate(topics):
        chosen, rejected = f" Yes, gladly! {topic} are lovely.", f" No. {topic} bore me."
        store.record_pair(
            messages=[{"role": "user", "content": f"Tell me about {topic}."}],
            text_a=chosen if i % 2 == 0 else rejected,
            text_b=rejected if i % 2 == 0 else chosen,
            verdict="a" if i % 2 == 0 else "b",
        )


def train_to_the_end(store: Store, base_model_id: int, config: dict, checkpoint_dir: Path, name: str) -> int:
    """A run over every comparison in ``store``, trained to the end (real steps on the tiny model); its id."""
    from desktop_dpo.core.dpo.train import drive_training
    from desktop_dpo.core.jobs import CancelToken

    run_id = store.create_run(
        name=name,
        base_model_id=base_model_id,
        config=config,
        comparison_ids=[v.comparison.id for v in store.comparison_views()],
        checkpoint_dir=str(checkpoint_dir),
    )
    drive_training(store, run_id, cancel=CancelToken())
    assert store.get_run(run_id).status == "completed"
    return run_id


@pytest.fixture
def home_with_pairs(monkeypatch, tmp_path, tiny_model_dir) -> Path:  # noqa: F811 - the fixture above
    """A data folder (``DESKTOP_DPO_HOME``) with 8 usable pairs and the tiny model registered as "tiny": what
    the CLI's train and export commands start from."""
    monkeypatch.setattr("desktop_dpo.core.offline.lock_down", lambda: None)  # tests/core/test_offline.py
    home = tmp_path / "home"
    monkeypatch.setenv(HOME_ENV, str(home))
    with Store.open(AppPaths.default().ensure().db_path) as store:
        for topic in ["owls", "tea", "snow", "maps", "bells", "kites", "ferns", "dunes"]:
            store.record_pair(
                messages=[{"role": "user", "content": f"Tell me about {topic}."}],
                text_a=f" Gladly! {topic} are lovely.",
                text_b=f" No. {topic} bore me.",
                verdict="a",
            )
        register_model(store, tiny_model_dir, name="tiny")
    return home
