"""First run: the demo model is unpacked and registered as the default once, and its terms can be read."""

from __future__ import annotations

import hashlib

import pytest

from desktop_dpo.core.demo_model import DEMO_DISPLAY_NAME, DemoPackage, demo_installed, demo_package
from desktop_dpo.core.errors import ModelError
from desktop_dpo.core.first_run import (
    DEMO_SOURCE,
    demo_model_needed,
    demo_notice_text,
    demo_terms_html,
    prepare_demo_model,
    record_demo_model,
    registered_demo_model,
)
from desktop_dpo.core.jobs import Progress, run_job
from desktop_dpo.core.models import register_model
from tests.plugins import tiny_model as _tiny_model_plugin

tiny_model_dir = _tiny_model_plugin.tiny_model_dir
tiny_gguf = _tiny_model_plugin.tiny_gguf


def package_from(gguf, folder, *, parts: int = 3, sha256: str | None = None) -> DemoPackage:
    """A stand-in for the demo package: ``gguf`` cut into ``parts`` chunks, as the registry package ships."""
    data = gguf.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(data) // parts)
    chunks = []
    for index in range(parts):
        chunk = folder / f"demo.gguf.part{index:02d}"
        chunk.write_bytes(data[index * size : (index + 1) * size])
        chunks.append(chunk)
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return DemoPackage("demo.gguf", digest, tuple(chunks), None, None)


@pytest.fixture
def fake_package(tiny_gguf, tmp_path) -> DemoPackage:
    return package_from(tiny_gguf, tmp_path / "package")


def test_the_demo_model_is_unpacked_read_and_registered_as_the_default(
    store, tmp_path, fake_package, tiny_gguf
):
    models_dir = tmp_path / "models"
    assert demo_model_needed(store, fake_package)

    ready, events = run_job(prepare_demo_model(models_dir, fake_package))
    assert store.list_models() == []  # the job writes no rows: its driver records them
    model = record_demo_model(store, ready)

    assert (model.source, model.name, model.kind, model.is_default) == (
        DEMO_SOURCE,
        DEMO_DISPLAY_NAME,
        "gguf",
        True,
    )
    assert model.path == str(models_dir / "demo" / "demo.gguf")
    assert (models_dir / "demo" / "demo.gguf").read_bytes() == tiny_gguf.read_bytes()
    assert store.default_model() == model
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].message == "Reading the demo model"
    assert not demo_model_needed(store, fake_package)  # a second start has nothing to do


def test_a_demo_file_that_has_gone_is_needed_again(store, tmp_path, fake_package):
    ready, _ = run_job(prepare_demo_model(tmp_path / "models", fake_package))
    model = record_demo_model(store, ready)
    (tmp_path / "models" / "demo" / "demo.gguf").unlink()
    assert demo_model_needed(store, fake_package)

    again, _ = run_job(prepare_demo_model(tmp_path / "models", fake_package))
    assert record_demo_model(store, again).id == model.id  # the same entry, not a second one
    assert len(store.list_models()) == 1


def test_without_the_package_nothing_is_needed(store):
    assert not demo_model_needed(store, None)


def test_a_default_the_person_chose_is_kept(store, tmp_path, fake_package, tiny_model_dir):
    own = register_model(store, tiny_model_dir, name="my model")
    store.set_default_model(own.id)
    ready, _ = run_job(prepare_demo_model(tmp_path / "models", fake_package))
    demo = record_demo_model(store, ready)
    assert not demo.is_default
    assert store.default_model().id == own.id
    assert registered_demo_model(store).id == demo.id


def test_a_damaged_package_registers_nothing(store, tmp_path, tiny_gguf):
    damaged = package_from(tiny_gguf, tmp_path / "package", sha256="0" * 64)
    with pytest.raises(ModelError, match="checksum"):
        run_job(prepare_demo_model(tmp_path / "models", damaged))
    assert store.list_models() == []
    assert list((tmp_path / "models" / "demo").iterdir()) == []
    assert demo_model_needed(store, damaged)


def test_the_shipped_gemma_terms_are_shown_without_the_web_page_around_them():
    package = demo_package()
    assert package is not None, "the demo extra is part of the test environment"
    terms = demo_terms_html(package)
    assert terms.startswith("<h1>Gemma Terms of Use</h1>")
    assert "Section 1: DEFINITIONS" in terms
    assert "Prohibited Use Policy" in terms
    for page_furniture in ("<script", "<style", "<link", "Send feedback", "google-analytics"):
        assert page_furniture not in terms
    # Site-relative links name their whole address (they are shown, never opened).
    assert 'href="/' not in terms.replace('href="//', "")
    assert "huggingface.co" in demo_notice_text(package)


def test_a_package_without_terms_says_where_they_are(fake_package):
    with pytest.raises(ModelError, match=r"ai\.google\.dev/gemma/terms"):
        demo_terms_html(fake_package)


def test_installed_says_what_the_package_lookup_finds(monkeypatch):
    # The window asks demo_installed() at start-up (it imports nothing) and demo_package() only later.
    assert demo_installed() == (demo_package() is not None)
    monkeypatch.setattr("desktop_dpo.core.demo_model.DEMO_PACKAGE", "no_such_demo_package_here")
    assert not demo_installed() and demo_package() is None
