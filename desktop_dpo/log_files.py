"""The app's log file: one rotating file for the window and every command (Qt-free, so the CLI uses it too).

Everything from INFO goes to the file (the details a message points to: a converter's output, a child
process's last words); stderr shows warnings and errors only.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_FILE_BYTES = 5 * 1024 * 1024
LOG_FILE_COUNT = 5
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"
# Marks the handlers this module adds, so a second call replaces them instead of doubling every line.
_HANDLER_TAG = "_desktop_dpo_handler"


def configure_logging(
    log_file: Path, *, stderr_level: int = logging.WARNING, stderr_format: str = LOG_FORMAT
) -> None:
    """Log to a rotating file (5 MB × 5, everything from INFO) and to stderr (``stderr_level`` and up).

    Raises:
        OSError: the log folder cannot be created or the file opened (the caller decides what then).
    """
    root = logging.getLogger()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = RotatingLogFile(log_file, max_bytes=LOG_FILE_BYTES, backup_count=LOG_FILE_COUNT)
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_TAG, False)]:
        root.removeHandler(handler)
        handler.close()
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setLevel(stderr_level)
    stderr_handler.setFormatter(logging.Formatter(stderr_format))
    for handler in (file_handler, stderr_handler):
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))


class RotatingLogFile(logging.FileHandler):
    """A log file set aside before it grows past ``max_bytes``: ``app.log`` becomes ``app.log.1``, the older
    ``app.log.1`` becomes ``app.log.2`` and so on, and the one past ``backup_count`` is deleted.

    The standard library's ``logging.handlers.RotatingFileHandler`` does the same, but that module imports
    pickle, queue and socket support for its other handlers: about 3 ms of every start of the window
    (bench/startup.py), for this one class.
    """

    def __init__(self, path: Path, *, max_bytes: int, backup_count: int):
        if backup_count < 1:
            raise ValueError("backup_count must be at least 1")
        super().__init__(path, encoding="utf-8")
        self.maxBytes = max_bytes
        self.backupCount = backup_count

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._would_overflow(self.format(record)):
                self._rotate()
        except Exception:
            self.handleError(record)
            return
        super().emit(record)

    def _would_overflow(self, line: str) -> bool:
        if self.stream is None:
            self.stream = self._open()
        self.stream.seek(0, os.SEEK_END)
        written = self.stream.tell()
        return written > 0 and written + len(line) + len(self.terminator) > self.maxBytes

    def _rotate(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        base = self.baseFilename
        for index in range(self.backupCount - 1, 0, -1):
            if os.path.exists(f"{base}.{index}"):
                os.replace(f"{base}.{index}", f"{base}.{index + 1}")
        if os.path.exists(base):
            os.replace(base, f"{base}.1")
        self.stream = self._open()
