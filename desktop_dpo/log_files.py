"""The app's log file: one rotating file for the window and every command (Qt-free, so the CLI uses it too).

Everything from INFO goes to the file (the details a message points to: a converter's output, a child
process's last words); stderr shows warnings and errors only.
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import RotatingFileHandler
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
    file_handler = RotatingFileHandler(
        log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_COUNT, encoding="utf-8"
    )
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
