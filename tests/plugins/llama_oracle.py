"""llama-cpp-python's own ``Llama``, loaded in this process in safe mode, as an oracle for tests.

Some tests read a file back with llama.cpp's high-level API to check what the app wrote (a round trip, an
export, a patched grid). That is a check of the file, not of how the app loads models, so it loads the way
that works on every CPU: without llama.cpp's extra buffer types, whose AMX repacking crashes the whole
process on AVX-512 + AMX CPUs (the app itself runs llama.cpp in a supervised child and falls back to this
mode after a crash: ``tests/core/test_supervised_engine.py`` tests that path with the normal mode first).
"""

from __future__ import annotations

from typing import Any

from desktop_dpo.core.llm.llamacpp import high_level_safe_mode


def safe_llama(*args: Any, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(*args, **kwargs)`` without the extra buffer types (AMX / CPU repacking)."""
    from llama_cpp import Llama

    with high_level_safe_mode():
        return Llama(*args, **kwargs)
