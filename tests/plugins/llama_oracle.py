"""llama-cpp-python's own ``Llama``, loaded in this process in safe mode, as an oracle for tests.

Some tests read a file back with llama.cpp's high-level API to check what the app wrote (a round trip, an
export, a patched grid). That is a check of the file, not of how the app loads models, so it loads the way
that works on every CPU: without llama.cpp's extra buffer types, whose AMX repacking crashes the whole
process on AVX-512 + AMX CPUs (the app itself runs llama.cpp in a supervised child and falls back to this
mode after a crash: ``tests/core/test_supervised_engine.py`` tests that path with the normal mode first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def _safe_default_params() -> Iterator[None]:
    import llama_cpp.llama as high_level

    low_level = high_level.llama_cpp
    original = low_level.llama_model_default_params

    def safe() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = safe
    try:
        yield
    finally:
        low_level.llama_model_default_params = original


def safe_llama(*args: Any, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(*args, **kwargs)`` without the extra buffer types (AMX / CPU repacking)."""
    from llama_cpp import Llama

    with _safe_default_params():
        return Llama(*args, **kwargs)
