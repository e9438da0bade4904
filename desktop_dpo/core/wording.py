"""Numbers and lists in the words a person reads: sizes of files, counts of things, lists of parts.

One place for all three, so that the CLI, the views and the core's own messages write "1.4 GB" and "3 pairs"
the same way. No imports beyond the standard library: the GUI uses it on its first screen.
"""

from __future__ import annotations

from collections.abc import Sequence

NO_SIZE = "—"  # what a size that is not known reads as


def human_size(size: float | None) -> str:
    """Bytes in decimal units, as file managers show them: "0 B", "812 KB", "1.5 KB", "1.4 GB".

    Below 100 of a unit one decimal is shown ("45.3 MB"), from 100 none ("812 KB"); bytes are whole.
    ``None`` (a size nobody measured) is "—".
    """
    if size is None:
        return NO_SIZE
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" or abs(value) >= 100 else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.0f} TB" if abs(value) >= 100 else f"{value:.1f} TB"


def plural(count: int, one: str, many: str | None = None) -> str:
    """``count`` and the word for that many: "1 pair", "3 pairs", "2 replies" (``many`` when not ``one + s``)."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def listed(parts: Sequence[str]) -> str:
    """Parts as a sentence lists them: "a", "a and b", "a, b and c" ("" for none)."""
    if len(parts) <= 1:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"
