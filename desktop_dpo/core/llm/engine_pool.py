"""Loaded inference engines, kept between jobs and shared safely between threads.

Loading a model takes from under a second (270M GGUF) to many seconds (7B), so an engine stays
loaded after a generation. A llama.cpp context runs one generation at a time: ``acquire`` holds the
engine's lock for the whole generation, so a second job on the same model waits for the first
(the GUI prevents that by disabling the button; the lock is the guarantee).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Protocol


class Closable(Protocol):
    def close(self) -> None: ...


EngineLoader = Callable[[], Any]
"""Builds an engine (runs in the thread that first acquires it)."""


class _Slot:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engine: Any = None


class EnginePool:
    """Engines keyed by a string (model path + context settings), at most ``max_loaded`` at once.

    The least recently used idle engine is closed when a new one is needed.
    """

    def __init__(self, max_loaded: int = 2):
        self._max_loaded = max_loaded
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._guard = threading.Lock()

    def _evict_idle(self) -> None:
        # Called with self._guard held.
        while len(self._slots) > self._max_loaded:
            for key, slot in self._slots.items():
                if slot.lock.acquire(blocking=False):
                    try:
                        if slot.engine is not None:
                            slot.engine.close()
                            slot.engine = None
                    finally:
                        slot.lock.release()
                    del self._slots[key]
                    break
            else:
                return  # every engine is busy; keep them all

    @contextlib.contextmanager
    def acquire(self, key: str, loader: EngineLoader) -> Iterator[Any]:
        """Hold the engine for ``key`` for the duration of the block, loading it if needed."""
        with self._guard:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            self._slots.move_to_end(key)
        with slot.lock:
            if slot.engine is None:
                slot.engine = loader()
            yield slot.engine
        with self._guard:
            self._evict_idle()

    def loaded(self) -> list[str]:
        """Keys of the engines currently loaded."""
        with self._guard:
            return [key for key, slot in self._slots.items() if slot.engine is not None]

    def unload(self, key: str) -> None:
        """Close one engine (waits for a running generation on it to finish)."""
        with self._guard:
            slot = self._slots.pop(key, None)
        if slot is not None:
            with slot.lock:
                if slot.engine is not None:
                    slot.engine.close()
                    slot.engine = None

    def close_all(self) -> None:
        """Close every engine (waits for running generations). Call at exit."""
        with self._guard:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            with slot.lock:
                if slot.engine is not None:
                    slot.engine.close()
                    slot.engine = None
