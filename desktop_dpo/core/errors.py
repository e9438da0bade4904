"""Small exception classes. Each message is written for the person using the app: what went wrong
and what they can do about it. Workers catch these at the thread boundary and show the message."""

from __future__ import annotations


class DesktopDpoError(Exception):
    """Base class: ``str(error)`` is a sentence a person can act on."""


class StoreError(DesktopDpoError):
    """The database cannot be opened or written."""


class NotADatabaseError(StoreError):
    """The chosen file is not a SQLite database (it was not modified)."""


class NewerSchemaError(StoreError):
    """The database was made by a newer version of desktop-dpo."""


class ImportFormatError(DesktopDpoError):
    """A preference file has bad lines; nothing was imported.

    ``problems`` lists ``(line_number, reason)`` for every bad line, 1-based.
    """

    def __init__(self, path: str, problems: list[tuple[int, str]]):
        self.path = path
        self.problems = problems
        shown = "\n".join(f"  line {n}: {reason}" for n, reason in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(
            f"Nothing was imported from {path}: {len(problems)} bad line(s). Fix them and import again.\n"
            f"{shown}{more}"
        )


class NetworkBlockedError(DesktopDpoError, ConnectionRefusedError):
    """desktop-dpo never uses the network; a connection beyond this machine was refused."""


class ModelError(DesktopDpoError):
    """A model cannot be registered or loaded."""


class JobCancelled(DesktopDpoError):
    """A long job stopped because the person asked it to."""


class ExportError(DesktopDpoError):
    """A model cannot be converted, merged or written as GGUF."""


class ConverterRefused(ExportError):
    """llama.cpp's converter cannot read this model (its tokenizer or architecture): no retry will help."""
