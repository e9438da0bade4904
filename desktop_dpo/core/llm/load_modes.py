"""How llama.cpp should load a model file on this machine: normally, or in safe mode after a crash.

llama.cpp can crash natively on CPUs and GPUs its authors never tested: on AVX-512 + AMX Xeons (the CPUs of
many cloud desktops and CI runners) its AMX weight repacking segfaults while *loading* a quantized GGUF, and
a repack crash is reported on an AVX2 machine too. Safe mode turns off the extra buffer types (the AMX and
CPU repack buffers: ``use_extra_bufts = False``) and, where llama.cpp offloads to a GPU, offloads half as
many layers. It is slower, so the app tries the normal mode first and falls back only after a crash.

What worked is remembered per model file, llama.cpp version and CPU, in a small JSON file in the app's data
folder, so the next load goes straight to the mode that works. A new llama.cpp version or another CPU (a
data folder on a USB disk) starts over with the normal mode.

Only the standard library is imported here: the window and ``desktop-dpo info`` read this file cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import threading
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from desktop_dpo.core.model_files import atomic_output

LoadMode = Literal["normal", "safe"]
LOAD_MODES: tuple[LoadMode, ...] = ("normal", "safe")

MEMORY_FILE_NAME = "llama-load-modes.json"


@dataclass(frozen=True)
class LoadModeRecord:
    """One remembered outcome: which mode loads ``model_path`` with this llama.cpp on this CPU, and why."""

    model_path: str  # the GGUF file, as given to the engine (resolved)
    model_size: int  # its size in bytes: a file replaced under the same name starts over
    llama_cpp_version: str  # llama-cpp-python's version ("unknown" when it is not installed)
    cpu: str  # cpu_signature(): the CPU model and a digest of its feature flags
    mode: LoadMode  # the mode to load with next time
    reason: str  # in words, for Help → Diagnostics: "crashed while loading (signal 11, SIGSEGV)"
    recorded_at: float  # time.time() when it was recorded

    @property
    def key(self) -> str:
        """What one record stands for: the file, its size, the llama.cpp version and the CPU."""
        return "|".join((self.model_path, str(self.model_size), self.llama_cpp_version, self.cpu))


def llama_cpp_version() -> str:
    """llama-cpp-python's installed version, read from its metadata (llama_cpp itself is not imported)."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "unknown"


def cpu_description() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags, as the operating system reports them.

    On Linux from ``/proc/cpuinfo`` (flags such as ``avx512f``, ``amx_int8``); elsewhere the model name from
    :mod:`platform` and no flags.
    """
    name, flags = "", frozenset[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not name:
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = frozenset(value.split())
            if name and flags:
                break
    return (name or platform.processor() or platform.machine() or "unknown CPU"), flags


def cpu_signature() -> str:
    """A short identity of this CPU: its model name and a digest of its feature flags.

    Two virtual machines may report the same model name with other features enabled; the digest tells them
    apart.
    """
    name, flags = cpu_description()
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return f"{name} [{digest}]"


class LoadModeMemory:
    """The remembered load modes, in ``<data folder>/llama-load-modes.json``.

    Safe for several threads of one process; a write replaces the file atomically, so a crash while writing
    never leaves half a file (a damaged file is read as empty: the worst case is one more crash and retry).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def in_folder(cls, data_dir: str | Path) -> LoadModeMemory:
        """The memory kept in the app's data folder."""
        return cls(Path(data_dir) / MEMORY_FILE_NAME)

    def records(self) -> list[LoadModeRecord]:
        """Every remembered outcome, newest first."""
        with self._lock:
            return sorted(self._read().values(), key=lambda r: r.recorded_at, reverse=True)

    def mode_for(
        self, model_path: str | Path, *, cpu: str | None = None, version: str | None = None
    ) -> LoadMode:
        """The mode to try first for ``model_path`` here: "safe" if it crashed before in the normal mode."""
        record = self.record_for(model_path, cpu=cpu, version=version)
        return record.mode if record is not None else "normal"

    def record_for(
        self, model_path: str | Path, *, cpu: str | None = None, version: str | None = None
    ) -> LoadModeRecord | None:
        """What is remembered for ``model_path`` with this llama.cpp on this CPU, if anything."""
        probe = self._make(model_path, "normal", "", cpu=cpu, version=version)
        if probe is None:
            return None
        with self._lock:
            return self._read().get(probe.key)

    def remember(
        self,
        model_path: str | Path,
        mode: LoadMode,
        reason: str,
        *,
        cpu: str | None = None,
        version: str | None = None,
    ) -> LoadModeRecord | None:
        """Record that ``model_path`` loads in ``mode`` here, and why. Returns the record (None when the
        file is gone). A failure to write is not an error: the memory only saves a crash next time."""
        if mode not in LOAD_MODES:
            raise ValueError(f"unknown load mode {mode!r}")
        record = self._make(model_path, mode, reason, cpu=cpu, version=version)
        if record is None:
            return None
        with self._lock:
            records = self._read()
            records[record.key] = record
            with contextlib.suppress(OSError):
                self._write(records)
        return record

    def forget(self, model_path: str | Path | None = None) -> int:
        """Forget what is remembered for one model file (every file when None); returns how many records
        were dropped. The next load tries the normal mode again."""
        resolved = None if model_path is None else str(Path(model_path).resolve())
        with self._lock:
            records = self._read()
            kept = {k: r for k, r in records.items() if resolved is not None and r.model_path != resolved}
            dropped = len(records) - len(kept)
            if dropped:
                self._write(kept)
        return dropped

    # -- internal ---------------------------------------------------------------------------------------

    @staticmethod
    def _make(
        model_path: str | Path, mode: LoadMode, reason: str, *, cpu: str | None, version: str | None
    ) -> LoadModeRecord | None:
        path = Path(model_path).resolve()
        try:
            size = path.stat().st_size
        except OSError:
            return None
        return LoadModeRecord(
            model_path=str(path),
            model_size=size,
            llama_cpp_version=version or llama_cpp_version(),
            cpu=cpu or cpu_signature(),
            mode=mode,
            reason=reason,
            recorded_at=time.time(),
        )

    def _read(self) -> dict[str, LoadModeRecord]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            entries = raw.get("records", []) if isinstance(raw, dict) else []
        except (OSError, ValueError, RecursionError):
            return {}
        records: dict[str, LoadModeRecord] = {}
        for entry in entries:
            try:
                record = LoadModeRecord(**entry)
            except TypeError:
                continue  # a record from another version of the app: ignore it
            if record.mode in LOAD_MODES:
                records[record.key] = record
        return records

    def _write(self, records: dict[str, LoadModeRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"records": [asdict(r) for r in records.values()]}, indent=1, sort_keys=True)
        with atomic_output(self.path) as temp:
            temp.write_text(text, encoding="utf-8")
