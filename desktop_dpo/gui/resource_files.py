"""Finding the files in ``resources/`` (icons, style sheet) from a checkout or an installed package.

The folder lives at the repository root; an installed package may carry a copy inside
``desktop_dpo/resources``. A missing file is not an error: the app falls back to the platform look.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QIcon

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
# First match wins: a copy shipped inside the package, then the checkout's resources/ folder.
_CANDIDATES = (_PACKAGE_DIR / "resources", _PACKAGE_DIR.parent / "resources")


def resources_dir() -> Path | None:
    """The folder holding icons and the style sheet, or None when neither location has it."""
    for folder in _CANDIDATES:
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
