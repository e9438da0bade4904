"""Configuration: frozen dataclasses with a comment per field, and the app's paths."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "desktop-dpo"
# Environment variable that moves every file the app keeps (tests and portable installs use it).
HOME_ENV = "DESKTOP_DPO_HOME"


@dataclass(frozen=True)
class AppPaths:
    """Where the app keeps its files. Nothing is written outside these folders."""

    data_dir: Path  # database, trainable copies, GGUF caches, runs, exports
    log_dir: Path  # rotating log files

    @property
    def db_path(self) -> Path:
        """The SQLite database holding every pick, run and export."""
        return self.data_dir / "desktop-dpo.sqlite"

    @property
    def models_dir(self) -> Path:
        """Trainable copies (safetensors) and GGUF copies of registered models."""
        return self.data_dir / "models"

    @property
    def runs_dir(self) -> Path:
        """Training runs: checkpoints and adapters."""
        return self.data_dir / "runs"

    @property
    def exports_dir(self) -> Path:
        """Default destination of merged models and GGUF exports."""
        return self.data_dir / "exports"

    @property
    def backups_dir(self) -> Path:
        """Copies of the database taken before each schema migration."""
        return self.data_dir / "backups"

    @property
    def window_settings(self) -> Path:
        """The window's settings: size, last view, appearance, sampling settings (Qt's INI format)."""
        return self.data_dir / "window.ini"

    @property
    def log_file(self) -> Path:
        """The current log file (rotated by size)."""
        return self.log_dir / "desktop-dpo.log"

    def ensure(self) -> AppPaths:
        """Create the folders (idempotent) and return self."""
        for folder in (self.data_dir, self.log_dir, self.models_dir, self.runs_dir, self.exports_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    @classmethod
    def in_home(cls, root: Path) -> AppPaths:
        """Everything in one folder: ``root/data`` and ``root/logs`` (``$DESKTOP_DPO_HOME``, ``--home``)."""
        return cls(data_dir=root / "data", log_dir=root / "logs")

    @classmethod
    def default(cls) -> AppPaths:
        """The per-user folders (platformdirs), or ``$DESKTOP_DPO_HOME`` when set."""
        override = os.environ.get(HOME_ENV)
        if override:
            return cls.in_home(Path(override).expanduser())
        import platformdirs

        return cls(
            data_dir=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            log_dir=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
        )


@dataclass(frozen=True)
class SamplingSettings:
    """How a response is sampled. Stored with every generation so it can be reproduced."""

    temperature: float = 0.9  # randomness; 0 = always the most likely token
    top_p: float = 0.95  # keep the smallest set of tokens whose probabilities sum to this
    top_k: int = 40  # keep only the k most likely tokens (0 = off)
    min_p: float = 0.05  # drop tokens less likely than this fraction of the best one
    repeat_penalty: float = 1.1  # >1 discourages repeating recent tokens
    max_tokens: int = 256  # stop after this many new tokens

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict, for JSON columns."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "max_tokens": self.max_tokens,
        }
