"""Finding the files in ``resources/`` (icons, style sheet) from a checkout, an installed package or a bundle.

The folder lives at the repository root; an installed package may carry a copy inside
``desktop_dpo/resources``; the standalone app (PyInstaller, see packaging/) unpacks it as ``resources/``
in its bundle folder, ``sys._MEIPASS``. A missing file is not an error: the app falls back to the
platform look.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QIcon

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _candidate_dirs() -> list[Path]:
    # First match wins: the bundle's copy when frozen, a copy shipped inside the package, then the
    # checkout's resources/ folder. Read at call time: sys._MEIPASS exists only in a bundle.
    candidates = [_PACKAGE_DIR / "resources", _PACKAGE_DIR.parent / "resources"]
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        candidates.insert(0, Path(bundle) / "resources")
    return candidates


def resources_dir() -> Path | None:
    """The folder holding icons and the style sheet, or None when no location has it."""
    for folder in _candidate_dirs():
        if folder.is_dir():
            return folder
    return None


def resource_file(name: str) -> Path | None:
    """``resources/<name>`` if it exists (``name`` may contain a sub-folder), else None."""
    folder = resources_dir()
    if folder is None:
        return None
    path = folder / name
    return path if path.is_file() else None


def resource_icon(name: str) -> QIcon:
    """An icon from ``resources/`` (SVG scales crisply), or an empty icon when the file is missing."""
    path = resource_file(name)
    return QIcon(str(path)) if path is not None else QIcon()


def read_style_sheet() -> str:
    """The application style sheet, or an empty string (platform look) when there is none."""
    path = resource_file("style.qss")
    return path.read_text(encoding="utf-8") if path is not None else ""
