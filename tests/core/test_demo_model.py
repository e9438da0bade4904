"""The demo model is assembled once, checked, and never left half-written."""

from __future__ import annotations

import hashlib

import pytest

from desktop_dpo.core.demo_model import DemoPackage, demo_model_path, install_demo_model
from desktop_dpo.core.errors import JobCancelled, ModelError
from desktop_dpo.core.jobs import CancelToken, Progress, run_job


@pytest.fixture
def fake_package(tmp_path) -> DemoPackage:
    parts = [bytes([i]) * (3 * 1024 * 1024 + i) for i in range(3)]
    chunks = []
    for i, data in enumerate(parts):
        path = tmp_path / "pkg" / f"model.gguf.part0{i}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        chunks.append(path)
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    return DemoPackage("model.gguf", digest, tuple(chunks), None, None)


def test_assembles_checks_and_reuses(tmp_path, fake_package):
    models = tmp_path / "models"
    path, events = run_job(install_demo_model(models, fake_package))
    assert path == demo_model_path(models, fake_package)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake_package.sha256
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].fraction == 1.0
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    mtime = path.stat().st_mtime_ns
    again, _ = run_job(install_demo_model(models, fake_package))
    assert again == path and path.stat().st_mtime_ns == mtime  # not rewritten
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.gguf"]


def test_cancel_leaves_nothing_under_the_final_name(tmp_path, fake_package):
    models = tmp_path / "models"
    token = CancelToken()
    job = install_demo_model(models, fake_package, cancel=token)
    next(job)
    token.cancel()
    with pytest.raises(JobCancelled):
        run_job(job)
    folder = demo_model_path(models, fake_package).parent
    assert list(folder.iterdir()) == []


def test_damaged_package_is_refused_with_advice(tmp_path, fake_package):
    damaged = DemoPackage("model.gguf", "0" * 64, fake_package.chunks, None, None)
    with pytest.raises(ModelError, match=r"checksum.*Reinstall"):
        run_job(install_demo_model(tmp_path / "models", damaged))
    assert list((tmp_path / "models" / "demo").iterdir()) == []
