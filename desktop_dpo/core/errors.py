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


class DatabaseBusy(StoreError):
    """Another window or program kept the database locked for longer than the wait; nothing was changed.

    Waiting and trying again helps, so a window may offer "Try again".
    """


class DatabaseDamaged(StoreError):
    """SQLite found a damaged page; the message names the backups folder and its newest copy."""


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


class ProtectedFileError(DesktopDpoError):
    """An export would replace the app's database, a file in its data or log folder, or any SQLite file.

    Nothing was written; the message names the file and asks for another name.
    """


class DuplicatePairsFound(DesktopDpoError):
    """Some pairs of a preference file are already stored; nothing was imported, so the person can choose.

    ``duplicates`` of the file's ``total`` pairs are exact repeats (same prompt, chosen and rejected) of
    stored pairs or of earlier lines of the same file.
    """

    def __init__(self, path: str, duplicates: int, total: int):
        self.path = path
        self.duplicates = duplicates
        self.total = total
        super().__init__(
            f"{duplicates} of {total} pairs in {path} are already in your data; nothing was imported. "
            "Import again to skip them, or import them anyway."
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


class ModelCodeRefused(ModelError, ExportError):
    """A model folder names code of its own to run (an ``auto_map``, a ``.py`` file a config points to), and
    desktop-dpo never runs code from model folders. Raised at registration and, for a folder changed since,
    before or during its conversion to GGUF; nothing of the model's code ran and nothing was written."""


class EngineCrashed(ModelError):
    """The process running a model ended (a native crash, killed for memory) or stopped responding.

    Only that child process ended: the window, the database and every pick are untouched. ``how`` says
    what happened in a few words ("a segmentation fault (signal 11)", "it stopped responding").
    """

    def __init__(self, message: str, how: str = "it crashed"):
        super().__init__(message)
        self.how = how
