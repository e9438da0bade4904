"""One training process per run: an OS file lock in the run's folder, held for the whole run.

The GUI trains in a child process and the CLI in its own; both go through :func:`train`, which takes
this lock first. The operating system drops the lock when the process ends, however it ends (a crash,
``kill -9``), so a lock is never left behind and a stale file means nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

from desktop_dpo.core.errors import DesktopDpoError

LOCK_FILE = "training.lock"  # in the run's folder; stays there (removing it would race another taker)


class RunBusyError(DesktopDpoError):
    """Another process (a window, a terminal) is training this run now; nothing was changed."""

    @classmethod
    def for_run(cls, run_id: int) -> RunBusyError:
        """The error for run ``run_id``, in words."""
        return cls(
            f"Run {run_id} is training in another window (or terminal). Wait for it to finish, or stop it "
            "there, then resume it here."
        )


def _try_lock(handle: IO[bytes]) -> bool:
    """Lock ``handle`` without waiting; False when another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(handle: IO[bytes]) -> None:
    if sys.platform == "win32":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class RunLock:
    """The training lock of run ``run_id`` in ``run_dir``, taken on construction; :meth:`release` ends it.

    Raises:
        RunBusyError: another process holds it (the message names the run).
        DesktopDpoError: the run's folder cannot be written (the message says where).
    """

    def __init__(self, run_dir: Path, run_id: int):
        self.path = Path(run_dir) / LOCK_FILE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "ab")  # noqa: SIM115 - held open for the whole run
        except OSError as exc:
            raise DesktopDpoError(
                f"Cannot write to the folder of run {run_id} ({self.path.parent}): {exc.strerror or exc}. "
                "Make it writable, or free some space, and try again."
            ) from exc
        if not _try_lock(handle):
            handle.close()
            raise RunBusyError.for_run(run_id)
        self._handle: IO[bytes] | None = handle
        os.set_inheritable(handle.fileno(), False)  # a child we start must not keep the run locked

    def release(self) -> None:
        """Let another process train the run (idempotent)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                _unlock(handle)
            finally:
                handle.close()


def run_is_busy(run_dir: Path) -> bool:
    """Whether another process trains the run in ``run_dir`` now (taking and dropping the lock to ask)."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    try:
        with open(path, "ab") as handle:
            if not _try_lock(handle):
                return True
            _unlock(handle)
    except OSError:
        return False
    return False
