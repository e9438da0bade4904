"""Check a safetensors file by reading every tensor in it, before anything is recorded as made of it.

A header can be intact while the data behind it is cut short (a copy that stopped, a full disk): only
reading each tensor finds that. Adapters are a few MB, so reading them whole costs next to nothing.
"""

from __future__ import annotations

from pathlib import Path

from desktop_dpo.core.errors import DesktopDpoError


class DamagedTensorFileError(DesktopDpoError):
    """A safetensors file is missing, cut short or not a safetensors file; nothing was recorded."""


def check_tensor_file(path: str | Path, what: str) -> int:
    """Read every tensor of the safetensors file ``path``; return how many it holds.

    ``what`` names the file for the person ("the adapter in /x"). Raises :class:`DamagedTensorFileError`
    with a message that says what to do.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DamagedTensorFileError(f"{what} has no weights file ({path} is missing).")
    size = path.stat().st_size
    count = 0
    try:
        # "pt": numpy has no bfloat16, in which adapters are often saved.
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                handle.get_tensor(key)
                count += 1
    except Exception as exc:  # safetensors raises its own errors, OSError, ValueError ...
        raise DamagedTensorFileError(
            f"{what} is damaged: {path} ({size} bytes) cannot be read whole "
            f"({exc}). It was probably cut short while being written or copied; copy or train it again."
        ) from exc
    return count
